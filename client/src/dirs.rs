//! Directory operations: default layouts, recursive mkdir, real paths.
//!
//! Same conventions as [`crate::meta`]: input is checked locally where that is cheap, one request id
//! covers every try, retryable errors are retried on any meta node. `mkdirs` is idempotent (existing
//! directories are fine), so a retry after a lost answer returns the same directory.
use t3fs_common::proto;
use t3fs_common::{InodeId, Result};

use crate::meta::inode_of;
use crate::{Client, UserInfo};

/// A directory's default layout for [`Client::set_layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirLayout {
    /// Chain table new files use (its newest version at create time).
    pub chain_table: u32,
    /// Chunk size in bytes (a power of two, 4 KiB ..= 64 MiB).
    pub chunk_size: u32,
    /// Chains each new file is striped over (1 ..= chains in the table).
    pub stripe: u32,
}

impl Client {
    /// Sets directory `dir`'s default layout (owner or root): files created in it afterwards and
    /// subdirectories made afterwards use it. Returns the directory.
    #[tracing::instrument(level = "debug", skip_all, fields(inode = dir.0))]
    pub async fn set_layout(&self, user: &UserInfo, dir: InodeId, layout: DirLayout) -> Result<proto::Inode> {
        let probe = proto::Layout { chunk_size: layout.chunk_size, stripe: layout.stripe, ..Default::default() };
        t3fs_common::layout::validate(&probe)?;
        let req = proto::SetLayoutReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: dir.0,
            layout: Some(proto::Layout {
                table_id: layout.chain_table,
                chunk_size: layout.chunk_size,
                stripe: layout.stripe,
                ..Default::default()
            }),
        };
        inode_of(
            self.meta_call("set_layout", |mut c| {
                let r = req.clone();
                async move { c.set_layout(r).await }
            })
            .await?,
        )
    }

    /// `mkdir -p` below `parent` in one meta transaction: creates the missing directories of the
    /// relative `path` (`a/b/c`) and returns the last. Existing directories are fine; an existing
    /// non-directory on the way is NotDirectory. The last directory gets `mode`, the ones made on
    /// the way `mode | 0o300`.
    #[tracing::instrument(level = "debug", skip_all, fields(parent = parent.0, path))]
    pub async fn mkdirs(&self, user: &UserInfo, parent: InodeId, path: &str, mode: u32) -> Result<proto::Inode> {
        let req = proto::MkdirsReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            parent: parent.0,
            path: path.as_bytes().to_vec().into(),
            mode: mode & 0o7777,
        };
        inode_of(
            self.meta_call("mkdirs", |mut c| {
                let r = req.clone();
                async move { c.mkdirs(r).await }
            })
            .await?,
        )
    }

    /// The absolute path (raw bytes, as names are) of directory `dir` (`name` empty) or of entry
    /// `name` in `dir`. Files have
    /// no parent link: ask with their directory and name (a file alone is NotDirectory).
    #[tracing::instrument(level = "debug", skip_all, fields(inode = dir.0))]
    pub async fn real_path(&self, user: &UserInfo, dir: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        let req = proto::RealPathReq {
            header: Some(self.header(user, &t3fs_common::new_request_id())),
            inode: dir.0,
            name: name.to_vec().into(),
        };
        let rsp = self
            .meta_call("real_path", |mut c| {
                let r = req.clone();
                async move { c.real_path(r).await }
            })
            .await?;
        Ok(rsp.path.to_vec())
    }
}
