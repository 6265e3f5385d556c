//! Extended attributes, stored by meta with the inode.
//!
//! Names are opaque bytes to t3fs (namespaces like `user.` are the caller's business) and values
//! are bytes; both are checked against the Linux limits before anything is sent. A missing attribute
//! is a `NotFound` error (the FUSE layer answers `ENODATA`).
use t3fs_common::{Error, InodeId, Result, StatusCode, proto};

use crate::{Client, UserInfo};

/// Longest attribute name in bytes (Linux `XATTR_NAME_MAX`).
pub use t3fs_common::names::{XATTR_NAME_MAX, validate_xattr_name};
/// Largest attribute value in bytes (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;

/// What [`Client::set_xattr`] may do (`setxattr(2)` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetXattrMode {
    /// Create the attribute or replace its value.
    #[default]
    Upsert,
    /// `XATTR_CREATE`: fail with `AlreadyExists` if it exists.
    CreateOnly,
    /// `XATTR_REPLACE`: fail with `NotFound` if it does not exist.
    ReplaceOnly,
}

impl Client {
    /// Sets attribute `name` of `inode` to `value` (see [`SetXattrMode`]).
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, name = %String::from_utf8_lossy(name), len = value.len()))]
    pub async fn set_xattr(
        &self,
        user: &UserInfo,
        inode: InodeId,
        name: &[u8],
        value: &[u8],
        mode: SetXattrMode,
    ) -> Result<()> {
        validate_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::new(
                StatusCode::InvalidArgument,
                format!("xattr value is {} bytes, the limit is {XATTR_SIZE_MAX}", value.len()),
            ));
        }
        let req = proto::SetXattrReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            name: name.to_vec().into(),
            value: value.to_vec().into(),
            create_only: mode == SetXattrMode::CreateOnly,
            replace_only: mode == SetXattrMode::ReplaceOnly,
        };
        self.meta_call("set_xattr", |mut c| {
            let r = req.clone();
            async move { c.set_xattr(r).await }
        })
        .await
        .map(|_| ())
    }

    /// The value of attribute `name` of `inode`; `NotFound` if it has none by that name.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, name = %String::from_utf8_lossy(name)))]
    pub async fn get_xattr(&self, user: &UserInfo, inode: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        validate_xattr_name(name)?;
        let req = proto::XattrReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            name: name.to_vec().into(),
        };
        let rsp = self
            .meta_call("get_xattr", |mut c| {
                let r = req.clone();
                async move { c.get_xattr(r).await }
            })
            .await?;
        Ok(rsp.value.to_vec())
    }

    /// The attribute names of `inode`.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0))]
    pub async fn list_xattr(&self, user: &UserInfo, inode: InodeId) -> Result<Vec<Vec<u8>>> {
        let req =
            proto::ListXattrReq { header: Some(self.header(user, &t3fs_common::new_request_id())), inode: inode.0 };
        let rsp = self
            .meta_call("list_xattr", |mut c| {
                let r = req.clone();
                async move { c.list_xattr(r).await }
            })
            .await?;
        Ok(rsp.names.into_iter().map(|n| n.to_vec()).collect())
    }

    /// Removes attribute `name` of `inode`; `NotFound` if it has none by that name.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, name = %String::from_utf8_lossy(name)))]
    pub async fn remove_xattr(&self, user: &UserInfo, inode: InodeId, name: &[u8]) -> Result<()> {
        validate_xattr_name(name)?;
        let req = proto::XattrReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            name: name.to_vec().into(),
        };
        self.meta_call("remove_xattr", |mut c| {
            let r = req.clone();
            async move { c.remove_xattr(r).await }
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_names() {
        assert!(validate_xattr_name(b"user.x").is_ok());
        assert!(validate_xattr_name(&[b'n'; XATTR_NAME_MAX]).is_ok());
        assert_eq!(validate_xattr_name(&[b'n'; XATTR_NAME_MAX + 1]).unwrap_err().code, StatusCode::NameTooLong);
        assert_eq!(validate_xattr_name(b"").unwrap_err().code, StatusCode::InvalidArgument);
        assert_eq!(validate_xattr_name(b"user.\0").unwrap_err().code, StatusCode::InvalidArgument);
    }
}
