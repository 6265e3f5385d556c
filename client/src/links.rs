//! Namespace operations beyond create/remove: rename, hard and symbolic links, batch stat.
//!
//! Same conventions as [`crate::meta`]: names are validated locally before anything is sent, one
//! request id covers every try of one logical operation (meta deduplicates rename by request id, so
//! a try whose answer was lost is not applied twice), and storage side effects are the client's:
//! a rename that replaces a file's last link deletes that file's chunks (best effort), as `remove`
//! does.
use t3fs_common::names::validate_name;
use t3fs_common::proto::{self, InodeType};
use t3fs_common::{Error, InodeId, Result};

use crate::meta::inode_of;
use crate::{Client, UserInfo};

pub use t3fs_common::names::{SYMLINK_MAX, validate_symlink_target};

/// Most inodes asked for in one BatchStat request; longer lists are split.
pub const BATCH_STAT_MAX: usize = 1024;

/// `renameat2(2)` flags for [`Client::rename`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// `RENAME_NOREPLACE`: fail with `AlreadyExists` if the destination exists.
    pub no_replace: bool,
    /// `RENAME_EXCHANGE`: atomically swap source and destination (both must exist).
    pub exchange: bool,
}

impl Client {
    /// Renames `src_parent/src_name` to `dst_parent/dst_name` (see [`RenameFlags`]). Returns the inode
    /// the rename unlinked from the destination, if any; when that was a file's last link meta
    /// garbage-collects it.
    pub async fn rename(
        &self,
        user: &UserInfo,
        src_parent: InodeId,
        src_name: &[u8],
        dst_parent: InodeId,
        dst_name: &[u8],
        flags: RenameFlags,
    ) -> Result<Option<proto::Inode>> {
        let request_id = t3fs_common::new_request_id();
        self.rename_entry(user, &request_id, src_parent, src_name, dst_parent, dst_name, flags).await
    }

    /// [`rename`](Self::rename) itself (nothing else happens client-side: meta garbage-collects a
    /// replaced file whose last link went). Retries reuse
    /// `request_id`, and so may a caller retrying the whole call: meta answers a repeated request id
    /// with the first outcome.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(level = "debug", skip_all, fields(
        req = request_id,
        src_parent = src_parent.0,
        src_name = %String::from_utf8_lossy(src_name),
        dst_parent = dst_parent.0,
        dst_name = %String::from_utf8_lossy(dst_name),
    ))]
    pub async fn rename_entry(
        &self,
        user: &UserInfo,
        request_id: &str,
        src_parent: InodeId,
        src_name: &[u8],
        dst_parent: InodeId,
        dst_name: &[u8],
        flags: RenameFlags,
    ) -> Result<Option<proto::Inode>> {
        validate_name(src_name)?;
        validate_name(dst_name)?;
        if flags.no_replace && flags.exchange {
            return Err(Error::invalid("rename: RENAME_NOREPLACE and RENAME_EXCHANGE together"));
        }
        let req = proto::RenameReq {
            header: Some(self.header(user, request_id)),
            src_parent: src_parent.0,
            src_name: src_name.to_vec().into(),
            dst_parent: dst_parent.0,
            dst_name: dst_name.to_vec().into(),
            no_replace: flags.no_replace,
            exchange: flags.exchange,
        };
        let rsp = self
            .meta_call("rename", |mut c| {
                let r = req.clone();
                async move { c.rename(r).await }
            })
            .await?;
        Ok(rsp.replaced)
    }

    /// Adds the name `new_parent/new_name` for the file `inode` (a hard link). Returns the inode with
    /// its new link count.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = inode.0, new_parent = new_parent.0, new_name = %String::from_utf8_lossy(new_name)))]
    pub async fn link(
        &self,
        user: &UserInfo,
        inode: InodeId,
        new_parent: InodeId,
        new_name: &[u8],
    ) -> Result<proto::Inode> {
        validate_name(new_name)?;
        let req = proto::LinkReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: inode.0,
            new_parent: new_parent.0,
            new_name: new_name.to_vec().into(),
        };
        inode_of(
            self.meta_call("link", |mut c| {
                let r = req.clone();
                async move { c.link(r).await }
            })
            .await?,
        )
    }

    /// Creates the symbolic link `parent/name` pointing at `target` (stored as given, never resolved
    /// by t3fs).
    #[tracing::instrument(level = "debug", skip_all, fields(parent = parent.0, name = %String::from_utf8_lossy(name)))]
    pub async fn symlink(&self, user: &UserInfo, parent: InodeId, name: &[u8], target: &[u8]) -> Result<proto::Inode> {
        validate_name(name)?;
        validate_symlink_target(target)?;
        let req = proto::SymlinkReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            parent: parent.0,
            name: name.to_vec().into(),
            target: target.to_vec().into(),
        };
        inode_of(
            self.meta_call("symlink", |mut c| {
                let r = req.clone();
                async move { c.symlink(r).await }
            })
            .await?,
        )
    }

    /// The target of the symbolic link `inode`; `InvalidArgument` if it is not a symlink.
    pub async fn readlink(&self, user: &UserInfo, inode: InodeId) -> Result<Vec<u8>> {
        let i = self.getattr(user, inode).await?;
        symlink_target(&i)
    }

    /// The inodes `ids`, in order; `None` where an inode does not exist. Asks meta
    /// [`BATCH_STAT_MAX`] inodes at a time.
    #[tracing::instrument(level = "debug", skip_all, fields(count = ids.len()))]
    pub async fn batch_stat(&self, user: &UserInfo, ids: &[InodeId]) -> Result<Vec<Option<proto::Inode>>> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(BATCH_STAT_MAX) {
            let req = proto::BatchStatReq {
                header: Some(self.header(user, &t3fs_common::new_request_id())),
                inodes: part.iter().map(|i| i.0).collect(),
            };
            let rsp = self
                .meta_call("batch_stat", |mut c| {
                    let r = req.clone();
                    async move { c.batch_stat(r).await }
                })
                .await?;
            out.extend(batch_entries(part, rsp)?);
        }
        Ok(out)
    }
}

/// The target of a symlink inode; `InvalidArgument` for any other type.
pub(crate) fn symlink_target(i: &proto::Inode) -> Result<Vec<u8>> {
    if i.inode_type != InodeType::Symlink as i32 {
        return Err(Error::invalid(format!("inode {} is not a symbolic link", i.id)));
    }
    Ok(i.symlink_target.to_vec())
}

/// Checks a BatchStat answer against the ids asked for: one entry per id, in order.
fn batch_entries(asked: &[InodeId], rsp: proto::BatchStatRsp) -> Result<Vec<Option<proto::Inode>>> {
    if rsp.entries.len() != asked.len() {
        return Err(Error::internal(format!(
            "meta batch_stat returned {} entries for {} inodes",
            rsp.entries.len(),
            asked.len()
        )));
    }
    asked
        .iter()
        .zip(rsp.entries)
        .map(|(id, e)| match (e.found, e.inode) {
            (false, _) => Ok(None),
            (true, Some(i)) if i.id == id.0 => Ok(Some(i)),
            (true, Some(i)) => Err(Error::internal(format!("meta batch_stat answered inode {} for {}", i.id, id.0))),
            (true, None) => Err(Error::internal(format!("meta batch_stat: inode {} found but not returned", id.0))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use t3fs_common::StatusCode;

    #[test]
    fn symlink_targets() {
        assert!(validate_symlink_target(b"a/b/../c").is_ok());
        assert!(validate_symlink_target(b"/abs").is_ok());
        assert!(validate_symlink_target(&[b'x'; SYMLINK_MAX]).is_ok());
        assert_eq!(validate_symlink_target(&[b'x'; SYMLINK_MAX + 1]).unwrap_err().code, StatusCode::NameTooLong);
        assert_eq!(validate_symlink_target(b"").unwrap_err().code, StatusCode::InvalidArgument);
        assert_eq!(validate_symlink_target(b"a\0b").unwrap_err().code, StatusCode::InvalidArgument);
    }

    #[test]
    fn readlink_needs_a_symlink() {
        let mut i = proto::Inode {
            id: 5,
            inode_type: InodeType::Symlink as i32,
            symlink_target: bytes::Bytes::from_static(b"t"),
            ..Default::default()
        };
        assert_eq!(symlink_target(&i).unwrap(), b"t");
        i.inode_type = InodeType::File as i32;
        assert_eq!(symlink_target(&i).unwrap_err().code, StatusCode::InvalidArgument);
    }

    #[test]
    fn batch_entries_checked() {
        let ids = [InodeId(3), InodeId(4)];
        let entry = |found, id: Option<u64>| proto::BatchStatEntry {
            found,
            inode: id.map(|id| proto::Inode { id, ..Default::default() }),
        };
        let rsp = proto::BatchStatRsp { entries: vec![entry(true, Some(3)), entry(false, None)] };
        let got = batch_entries(&ids, rsp).unwrap();
        assert_eq!(got.iter().map(|i| i.as_ref().map(|i| i.id)).collect::<Vec<_>>(), vec![Some(3), None]);
        // Wrong count, wrong id, found without an inode.
        assert!(batch_entries(&ids, proto::BatchStatRsp { entries: vec![entry(false, None)] }).is_err());
        let rsp = proto::BatchStatRsp { entries: vec![entry(true, Some(4)), entry(false, None)] };
        assert!(batch_entries(&ids, rsp).is_err());
        let rsp = proto::BatchStatRsp { entries: vec![entry(true, None), entry(false, None)] };
        assert!(batch_entries(&ids, rsp).is_err());
    }
}
