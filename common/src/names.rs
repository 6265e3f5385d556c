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

/// Longest symlink target in bytes (PATH_MAX 4096 less the terminating NUL).
pub const SYMLINK_MAX: usize = 4095;
/// Longest extended-attribute name in bytes (Linux XATTR_NAME_MAX).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended-attribute value in bytes (Linux XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 64 * 1024;

/// A symlink target: 1..=[`SYMLINK_MAX`] bytes, no NUL.
pub fn validate_symlink_target(target: &[u8]) -> Result<(), Error> {
    bounded_bytes("symlink target", target, SYMLINK_MAX)
}

/// An extended-attribute name: 1..=[`XATTR_NAME_MAX`] bytes, no NUL (namespace rules are meta's).
pub fn validate_xattr_name(name: &[u8]) -> Result<(), Error> {
    bounded_bytes("xattr name", name, XATTR_NAME_MAX)
}

/// An extended-attribute value: at most [`XATTR_VALUE_MAX`] bytes.
pub fn validate_xattr_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > XATTR_VALUE_MAX {
        return Err(Error::invalid(format!("xattr value is {} bytes, the limit is {XATTR_VALUE_MAX}", value.len())));
    }
    Ok(())
}

fn bounded_bytes(what: &str, b: &[u8], max: usize) -> Result<(), Error> {
    if b.is_empty() {
        return Err(Error::invalid(format!("empty {what}")));
    }
    if b.len() > max {
        return Err(Error::new(StatusCode::NameTooLong, format!("{what} is {} bytes, the limit is {max}", b.len())));
    }
    if b.contains(&0) {
        return Err(Error::invalid(format!("{what} contains NUL")));
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

    #[test]
    fn symlink_targets_and_xattrs() {
        assert!(validate_symlink_target(&[b'a'; SYMLINK_MAX]).is_ok());
        assert_eq!(validate_symlink_target(&[b'a'; SYMLINK_MAX + 1]).unwrap_err().code, StatusCode::NameTooLong);
        assert_eq!(validate_symlink_target(b"").unwrap_err().code, StatusCode::InvalidArgument);
        assert_eq!(validate_symlink_target(b"a\0b").unwrap_err().code, StatusCode::InvalidArgument);
        assert!(validate_xattr_name(b"user.x").is_ok());
        assert_eq!(validate_xattr_name(&[b'x'; 256]).unwrap_err().code, StatusCode::NameTooLong);
        assert!(validate_xattr_value(&[0; XATTR_VALUE_MAX]).is_ok());
        assert!(validate_xattr_value(&[0; XATTR_VALUE_MAX + 1]).is_err());
    }
}
