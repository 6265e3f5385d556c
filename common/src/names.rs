//! Validation of names entering the namespace. Applied at every entry point (FUSE, client, meta).
use crate::status::{Error, StatusCode};

/// Longest file name in bytes (POSIX NAME_MAX).
pub const NAME_MAX: usize = 255;

/// A directory entry name: 1..=255 bytes, no `/`, no NUL, not `.` or `..`.
pub fn validate_name(name: &[u8]) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::new(StatusCode::InvalidArgument, "empty name"));
    }
    if name.len() > NAME_MAX {
        return Err(Error::new(
            StatusCode::NameTooLong,
            format!("name is {} bytes, the limit is {NAME_MAX}", name.len()),
        ));
    }
    if name.contains(&b'/') {
        return Err(Error::new(StatusCode::InvalidArgument, "name contains '/'"));
    }
    if name.contains(&0) {
        return Err(Error::new(StatusCode::InvalidArgument, "name contains NUL"));
    }
    if name == b"." || name == b".." {
        return Err(Error::new(StatusCode::InvalidArgument, "name is '.' or '..'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name(b"a.txt").is_ok());
        assert!(validate_name(&[b'x'; 255]).is_ok());
        assert_eq!(validate_name(&[b'x'; 256]).unwrap_err().code, StatusCode::NameTooLong);
        assert_eq!(validate_name(b"a/b").unwrap_err().code, StatusCode::InvalidArgument);
        assert_eq!(validate_name(b"a\0b").unwrap_err().code, StatusCode::InvalidArgument);
        assert_eq!(validate_name(b"").unwrap_err().code, StatusCode::InvalidArgument);
        assert_eq!(validate_name(b"..").unwrap_err().code, StatusCode::InvalidArgument);
    }
}
