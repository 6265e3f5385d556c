//! Extended attributes: `XATR` + inode (8 B LE) + name -> raw value.
//!
//! Limits: names 1..=[`XATTR_NAME_MAX`] bytes without NUL (NameTooLong / InvalidArgument), values up
//! to [`XATTR_VALUE_MAX`] (InvalidArgument), and at most [`XATTR_TOTAL_MAX`] bytes of names + values
//! per inode (NoSpace, as ENOSPC). A set reads the inode's whole xattr range with a conflicting read
//! so two concurrent sets cannot together pass the total limit.
//!
//! Permissions: get needs read permission on the inode, set/remove need write permission, list
//! needs none (as Linux for `user.*`); `trusted.*` names are root-only; `system.*` (POSIX ACLs) is
//! Unsupported. A missing attribute is NotFound: the FUSE layer must return ENODATA for it.
use t3fs_common::proto::Inode;
use t3fs_common::{Error, InodeId, Result, StatusCode, now_ns};
use t3fs_kv::{KvError, RangeOpts};

use super::perm;
use super::{Caller, MetaStore, must_inode, put_inode, show};
use crate::keys;

/// Longest xattr name (Linux XATTR_NAME_MAX).
pub use t3fs_common::names::XATTR_NAME_MAX;
/// Largest xattr value.
pub use t3fs_common::names::XATTR_VALUE_MAX;
/// Most bytes of names + values one inode may carry.
pub const XATTR_TOTAL_MAX: usize = 256 * 1024;

fn validate_xattr_name(caller: &Caller, name: &[u8]) -> Result<()> {
    t3fs_common::names::validate_xattr_name(name)?;
    if name.starts_with(b"system.") {
        return Err(Error::new(StatusCode::Unsupported, format!("xattr {} (POSIX ACLs) is not supported", show(name))));
    }
    if name.starts_with(b"trusted.") && !caller.is_root() {
        return Err(perm::not_permitted(format!("uid {} may not use trusted.* xattrs", caller.uid)));
    }
    Ok(())
}

fn no_xattr(id: InodeId, name: &[u8]) -> KvError {
    Error::not_found(format!("inode {id} has no xattr {}", show(name))).into()
}

/// How an xattr set treats an existing attribute (XATTR_CREATE / XATTR_REPLACE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrFlags {
    pub create_only: bool,
    pub replace_only: bool,
}

impl MetaStore {
    /// Sets xattr `name` of inode `id` to `value`; the inode's ctime becomes now.
    pub async fn set_xattr(
        &self,
        caller: &Caller,
        id: InodeId,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<()> {
        validate_xattr_name(caller, name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(Error::invalid(format!(
                "xattr value is {} bytes, the limit is {XATTR_VALUE_MAX}",
                value.len()
            )));
        }
        if flags.create_only && flags.replace_only {
            return Err(Error::invalid("XATTR_CREATE and XATTR_REPLACE exclude each other"));
        }
        self.check_space("setting an xattr")?;
        let (caller, name, value) = (caller.clone(), name.to_vec(), value.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, name, value) = (caller.clone(), name.clone(), value.clone());
            Box::pin(async move {
                let mut inode: Inode = must_inode(txn, id, false).await?;
                perm::check(&caller, &inode, perm::W)?;
                let (b, e) = keys::xattr_range(id);
                let all = txn.get_range(&b, &e, RangeOpts { limit: 0, reverse: false, snapshot: false }).await?;
                let key = keys::xattr_key(id, &name);
                let mut present = false;
                let mut others = 0usize;
                for kv in &all {
                    if kv.key == key {
                        present = true;
                    } else {
                        others += kv.key.len() - b.len() + kv.value.len();
                    }
                }
                if flags.create_only && present {
                    return Err(Error::new(
                        StatusCode::AlreadyExists,
                        format!("inode {id} already has xattr {}", show(&name)),
                    )
                    .into());
                }
                if flags.replace_only && !present {
                    return Err(no_xattr(id, &name));
                }
                if others + name.len() + value.len() > XATTR_TOTAL_MAX {
                    return Err(Error::new(
                        StatusCode::NoSpace,
                        format!("xattrs of inode {id} would exceed {XATTR_TOTAL_MAX} bytes"),
                    )
                    .into());
                }
                txn.set(&key, &value);
                inode.ctime_ns = now_ns();
                put_inode(txn, &inode);
                Ok(())
            })
        })
        .await?)
    }

    /// The value of xattr `name` of inode `id` (NotFound if absent).
    pub async fn get_xattr(&self, caller: &Caller, id: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        validate_xattr_name(caller, name)?;
        let (caller, name) = (caller.clone(), name.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, name) = (caller.clone(), name.clone());
            Box::pin(async move {
                let inode = must_inode(txn, id, true).await?;
                perm::check(&caller, &inode, perm::R)?;
                txn.get(&keys::xattr_key(id, &name), true).await?.ok_or_else(|| no_xattr(id, &name))
            })
        })
        .await?)
    }

    /// The names of every xattr of inode `id`, in byte order.
    pub async fn list_xattr(&self, id: InodeId) -> Result<Vec<Vec<u8>>> {
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            Box::pin(async move {
                must_inode(txn, id, true).await?;
                let (b, e) = keys::xattr_range(id);
                let all = txn.get_range(&b, &e, RangeOpts { limit: 0, reverse: false, snapshot: true }).await?;
                Ok(all.into_iter().map(|kv| kv.key[b.len()..].to_vec()).collect())
            })
        })
        .await?)
    }

    /// Removes xattr `name` of inode `id` (NotFound if absent); the inode's ctime becomes now.
    pub async fn remove_xattr(&self, caller: &Caller, id: InodeId, name: &[u8]) -> Result<()> {
        validate_xattr_name(caller, name)?;
        let (caller, name) = (caller.clone(), name.to_vec());
        Ok(t3fs_kv::run(&*self.db, move |txn| {
            let (caller, name) = (caller.clone(), name.clone());
            Box::pin(async move {
                let mut inode = must_inode(txn, id, false).await?;
                perm::check(&caller, &inode, perm::W)?;
                let key = keys::xattr_key(id, &name);
                if txn.get(&key, false).await?.is_none() {
                    return Err(no_xattr(id, &name));
                }
                txn.clear(&key);
                inode.ctime_ns = now_ns();
                put_inode(txn, &inode);
                Ok(())
            })
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::store;
    use super::*;

    fn user(uid: u32) -> Caller {
        Caller { uid, gid: uid, gids: vec![] }
    }

    #[tokio::test]
    async fn xattrs_set_get_list_remove_with_flags_and_limits() {
        let s = store().await;
        let u = user(1000);
        let root = InodeId::ROOT;
        let f = InodeId(s.create(&Caller::default(), root, b"f", 0o644, true).await.unwrap().id);
        s.setattr(&Caller::default(), f, super::super::SetAttr { uid: Some(1000), ..Default::default() })
            .await
            .unwrap();
        let none = XattrFlags::default();
        let create = XattrFlags { create_only: true, replace_only: false };
        let replace = XattrFlags { create_only: false, replace_only: true };
        assert_eq!(s.get_xattr(&u, f, b"user.a").await.unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.set_xattr(&u, f, b"user.a", b"1", replace).await.unwrap_err().code, StatusCode::NotFound);
        s.set_xattr(&u, f, b"user.b", b"2", create).await.unwrap();
        s.set_xattr(&u, f, b"user.a", b"", none).await.unwrap();
        assert_eq!(s.set_xattr(&u, f, b"user.b", b"3", create).await.unwrap_err().code, StatusCode::AlreadyExists);
        s.set_xattr(&u, f, b"user.b", b"3", replace).await.unwrap();
        assert_eq!(s.get_xattr(&u, f, b"user.b").await.unwrap(), b"3");
        assert_eq!(s.get_xattr(&u, f, b"user.a").await.unwrap(), b"");
        assert_eq!(s.list_xattr(f).await.unwrap(), vec![b"user.a".to_vec(), b"user.b".to_vec()]);
        let both = XattrFlags { create_only: true, replace_only: true };
        assert_eq!(s.set_xattr(&u, f, b"user.c", b"", both).await.unwrap_err().code, StatusCode::InvalidArgument);

        // Bad names and sizes change nothing.
        let cases: [(&[u8], StatusCode); 4] = [
            (b"", StatusCode::InvalidArgument),
            (&[b'n'; XATTR_NAME_MAX + 1], StatusCode::NameTooLong),
            (b"user.\0x", StatusCode::InvalidArgument),
            (b"system.posix_acl_access", StatusCode::Unsupported),
        ];
        for (name, code) in cases {
            assert_eq!(s.set_xattr(&u, f, name, b"v", none).await.unwrap_err().code, code);
            assert_eq!(s.get_xattr(&u, f, name).await.unwrap_err().code, code);
        }
        let big = vec![7u8; XATTR_VALUE_MAX + 1];
        assert_eq!(s.set_xattr(&u, f, b"user.big", &big, none).await.unwrap_err().code, StatusCode::InvalidArgument);
        // Values of the largest size fit until the per-inode total is reached.
        let max = vec![7u8; XATTR_VALUE_MAX];
        for name in [&b"user.h1"[..], b"user.h2", b"user.h3"] {
            s.set_xattr(&u, f, name, &max, none).await.unwrap();
        }
        assert_eq!(s.set_xattr(&u, f, b"user.h4", &max, none).await.unwrap_err().code, StatusCode::NoSpace);
        // Replacing a value counts the old one out.
        s.set_xattr(&u, f, b"user.h1", &max, none).await.unwrap();
        s.set_xattr(&u, f, &[b'n'; XATTR_NAME_MAX], b"x", none).await.unwrap();
        assert_eq!(s.list_xattr(f).await.unwrap().len(), 6);

        // Permissions: another user may list but not read a 0600 file's xattrs or write them.
        s.setattr(&u, f, super::super::SetAttr { mode: Some(0o600), ..Default::default() }).await.unwrap();
        let other = user(2000);
        assert_eq!(s.list_xattr(f).await.unwrap().len(), 6);
        assert_eq!(s.get_xattr(&other, f, b"user.a").await.unwrap_err().code, StatusCode::PermissionDenied);
        assert_eq!(s.set_xattr(&other, f, b"user.z", b"", none).await.unwrap_err().code, StatusCode::PermissionDenied);
        assert_eq!(s.remove_xattr(&other, f, b"user.a").await.unwrap_err().code, StatusCode::PermissionDenied);
        assert_eq!(
            s.set_xattr(&u, f, b"trusted.x", b"", none).await.unwrap_err().code,
            StatusCode::OperationNotPermitted
        );
        s.set_xattr(&Caller::default(), f, b"trusted.x", b"r", none).await.unwrap();

        s.remove_xattr(&u, f, b"user.a").await.unwrap();
        assert_eq!(s.remove_xattr(&u, f, b"user.a").await.unwrap_err().code, StatusCode::NotFound);
        let ghost = InodeId(0xdead);
        assert_eq!(s.list_xattr(ghost).await.unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.set_xattr(&u, ghost, b"user.a", b"", none).await.unwrap_err().code, StatusCode::NotFound);
        assert_eq!(s.list_xattr(InodeId(0)).await.unwrap_err().code, StatusCode::NotFound);

        // Unlinking the last link queues the file; collecting it deletes the xattrs with the inode.
        s.remove(&Caller::default(), root, b"f", false, "").await.unwrap();
        let (t, id) = s.gc_due(u64::MAX, 1).await.unwrap()[0];
        assert_eq!(s.gc_finish(t, id).await.unwrap(), crate::namespace::Finish::Collected);
        let (b, e) = keys::xattr_range(f);
        let left = t3fs_kv::run(&**s.db(), move |txn| {
            let (b, e) = (b.clone(), e.clone());
            Box::pin(async move { txn.get_range(&b, &e, RangeOpts::default()).await })
        })
        .await
        .unwrap();
        assert!(left.is_empty());
    }
}
