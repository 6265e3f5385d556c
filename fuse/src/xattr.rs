//! FUSE extended attributes.
//!
//! getxattr/listxattr follow the size-probe protocol: `size == 0` asks for the length, a buffer too
//! small gets `ERANGE`, otherwise the bytes (a list is names each followed by a NUL). A missing
//! attribute is `ENODATA` (meta answers NotFound). `XATTR_CREATE` on an existing attribute is
//! `EEXIST`, `XATTR_REPLACE` on a missing one `ENODATA`.
//!
//! Names t3fs does not store ([`UNSUPPORTED_XATTRS`]) are answered here without a round trip:
//! `security.capability` is looked up by the kernel before every write(2) to a file (to drop file
//! capabilities), and POSIX ACLs would be stored but never enforced (meta checks mode bits only).
//! Setting them is `EOPNOTSUPP`, reading them `ENODATA`.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo, ReplyEmpty, ReplyXattr, Request};
use t3fs_client::SetXattrMode;
use t3fs_common::{Error, InodeId, StatusCode};

use crate::fs::{T3Fs, errno, fail};

/// Attribute names t3fs does not store (see the module note).
pub const UNSUPPORTED_XATTRS: [&[u8]; 3] =
    [b"security.capability", b"system.posix_acl_access", b"system.posix_acl_default"];

/// Largest attribute list listxattr(2) may return (Linux `XATTR_LIST_MAX`).
pub const XATTR_LIST_MAX: usize = 65536;

/// What to answer a getxattr/listxattr of `bytes` with a `size`-byte buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrAnswer {
    Size(u32),
    Data(Vec<u8>),
    Error(i32),
}

pub fn xattr_answer(bytes: Vec<u8>, size: u32) -> XattrAnswer {
    let Ok(len) = u32::try_from(bytes.len()) else { return XattrAnswer::Error(libc::E2BIG) };
    if size == 0 {
        XattrAnswer::Size(len)
    } else if len > size {
        XattrAnswer::Error(libc::ERANGE)
    } else {
        XattrAnswer::Data(bytes)
    }
}

fn send(reply: ReplyXattr, a: XattrAnswer) {
    match a {
        XattrAnswer::Size(n) => reply.size(n),
        XattrAnswer::Data(d) => reply.data(&d),
        XattrAnswer::Error(e) => reply.error(Errno::from_i32(e)),
    }
}

/// A listxattr answer: every name followed by a NUL; `E2BIG` past [`XATTR_LIST_MAX`].
pub fn list_bytes(names: &[Vec<u8>]) -> Result<Vec<u8>, i32> {
    let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
    for n in names {
        out.extend_from_slice(n);
        out.push(0);
    }
    if out.len() > XATTR_LIST_MAX { Err(libc::E2BIG) } else { Ok(out) }
}

/// The setxattr mode for the kernel's flags; `None` for `XATTR_CREATE | XATTR_REPLACE`.
pub fn set_mode(flags: i32) -> Option<SetXattrMode> {
    match (flags & libc::XATTR_CREATE != 0, flags & libc::XATTR_REPLACE != 0) {
        (false, false) => Some(SetXattrMode::Upsert),
        (true, false) => Some(SetXattrMode::CreateOnly),
        (false, true) => Some(SetXattrMode::ReplaceOnly),
        (true, true) => None,
    }
}

/// The errno of a failed xattr call: a missing attribute is `ENODATA`, not `ENOENT`.
fn xattr_errno(op: &'static str, e: &Error) -> Errno {
    if e.code == StatusCode::NotFound {
        tracing::debug!(error = %e, "{op}: no such attribute");
        return Errno::from_i32(libc::ENODATA);
    }
    fail(op, e)
}

impl T3Fs {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setxattr_op(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name.as_bytes().to_vec();
        let Some(mode) = set_mode(flags) else { return reply.error(Errno::from_i32(libc::EINVAL)) };
        if position != 0 {
            return reply.error(Errno::from_i32(libc::EINVAL));
        }
        if UNSUPPORTED_XATTRS.contains(&name.as_slice()) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        if let Err(e) = t3fs_client::xattr::validate_xattr_name(&name) {
            return reply.error(errno(&e));
        }
        let value = value.to_vec();
        let user = self.user(req);
        let span = tracing::debug_span!("setxattr", ino = ino.0, name = %String::from_utf8_lossy(&name), ?mode);
        self.spawn("setxattr", span, |fs| async move {
            let res = fs.client.set_xattr(&user, InodeId(ino.0), &name, &value, mode).await;
            fs.dir_attrs.clear();
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(xattr_errno("setxattr", &e)),
            }
        });
    }

    pub(crate) fn getxattr_op(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.as_bytes().to_vec();
        if UNSUPPORTED_XATTRS.contains(&name.as_slice()) {
            return reply.error(Errno::from_i32(libc::ENODATA));
        }
        if let Err(e) = t3fs_client::xattr::validate_xattr_name(&name) {
            return reply.error(errno(&e));
        }
        let user = self.user(req);
        let span = tracing::debug_span!("getxattr", ino = ino.0, name = %String::from_utf8_lossy(&name), size);
        self.spawn("getxattr", span, |fs| async move {
            match fs.client.get_xattr(&user, InodeId(ino.0), &name).await {
                Ok(v) => send(reply, xattr_answer(v, size)),
                Err(e) => reply.error(xattr_errno("getxattr", &e)),
            }
        });
    }

    pub(crate) fn listxattr_op(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let user = self.user(req);
        self.spawn("listxattr", tracing::debug_span!("listxattr", ino = ino.0, size), |fs| async move {
            match fs.client.list_xattr(&user, InodeId(ino.0)).await {
                Ok(names) => match list_bytes(&names) {
                    Ok(b) => send(reply, xattr_answer(b, size)),
                    Err(e) => reply.error(Errno::from_i32(e)),
                },
                Err(e) => reply.error(fail("listxattr", &e)),
            }
        });
    }

    pub(crate) fn removexattr_op(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        if UNSUPPORTED_XATTRS.contains(&name.as_slice()) {
            return reply.error(Errno::from_i32(libc::ENODATA));
        }
        if let Err(e) = t3fs_client::xattr::validate_xattr_name(&name) {
            return reply.error(errno(&e));
        }
        let user = self.user(req);
        let span = tracing::debug_span!("removexattr", ino = ino.0, name = %String::from_utf8_lossy(&name));
        self.spawn("removexattr", span, |fs| async move {
            let res = fs.client.remove_xattr(&user, InodeId(ino.0), &name).await;
            fs.dir_attrs.clear();
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(xattr_errno("removexattr", &e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_probe_protocol() {
        assert_eq!(xattr_answer(b"abc".to_vec(), 0), XattrAnswer::Size(3));
        assert_eq!(xattr_answer(b"abc".to_vec(), 2), XattrAnswer::Error(libc::ERANGE));
        assert_eq!(xattr_answer(b"abc".to_vec(), 3), XattrAnswer::Data(b"abc".to_vec()));
        assert_eq!(xattr_answer(b"abc".to_vec(), 100), XattrAnswer::Data(b"abc".to_vec()));
        assert_eq!(xattr_answer(Vec::new(), 0), XattrAnswer::Size(0));
        assert_eq!(xattr_answer(Vec::new(), 10), XattrAnswer::Data(Vec::new()));
    }

    #[test]
    fn list_is_nul_terminated_names() {
        assert_eq!(list_bytes(&[]).unwrap(), b"");
        assert_eq!(list_bytes(&[b"user.a".to_vec(), b"user.bc".to_vec()]).unwrap(), b"user.a\0user.bc\0");
        let many: Vec<Vec<u8>> = (0..300).map(|i| format!("user.{i:0>250}").into_bytes()).collect();
        assert_eq!(list_bytes(&many), Err(libc::E2BIG));
    }

    #[test]
    fn setxattr_flags() {
        assert_eq!(set_mode(0), Some(SetXattrMode::Upsert));
        assert_eq!(set_mode(libc::XATTR_CREATE), Some(SetXattrMode::CreateOnly));
        assert_eq!(set_mode(libc::XATTR_REPLACE), Some(SetXattrMode::ReplaceOnly));
        assert_eq!(set_mode(libc::XATTR_CREATE | libc::XATTR_REPLACE), None);
    }
}
