//! [`File`]: an open file of the native client, for programs that read and write like with
//! `std::fs::File` (positional I/O) rather than through [`crate::Client`]'s inode calls.
//!
//! - Opening for write records a write session at meta ([`crate::Client::create_for_write`],
//!   [`crate::Client::open`]), so the file is not garbage-collected while open, even if another
//!   client unlinks it; [`File::close`] ends it.
//! - Writes are buffered: contiguous `write_at`s gather in one buffer of up to [`WRITE_BUFFER`]
//!   bytes, written out when full, when a write is not contiguous, and before every read, `set_len`,
//!   `sync` and `close`. A failed write-out is reported by the call that triggered it.
//! - Length: meta learns it at `sync` and `close` (meta takes the exact end of the data from
//!   storage, lazy length), and every [`HINT_INTERVAL`] while writing (a periodic length hint), so
//!   other clients see a growing file. Reads through this handle see everything it wrote.
//!
//! A `File` is `Send + Sync`; calls on one handle are serialised by an internal lock.
use std::sync::Arc;
use std::time::Duration;

use t3fs_common::proto::{self, InodeType};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{Client, Error, InodeId, Result, StatusCode, UserInfo};

/// Most bytes a handle buffers before writing them out.
pub const WRITE_BUFFER: usize = 4 << 20;
/// How often a writing handle reports its length to meta.
pub const HINT_INTERVAL: Duration = Duration::from_secs(1);

/// How to open a file ([`Client::open_path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    pub write: bool,
    /// Create the file if missing (needs `write`).
    pub create: bool,
    /// With `create`: fail with AlreadyExists if it exists.
    pub exclusive: bool,
    /// Cut the file to 0 bytes (needs `write`).
    pub truncate: bool,
    /// Permission bits of a created file.
    pub mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { write: false, create: false, exclusive: false, truncate: false, mode: 0o644 }
    }
}

impl OpenOptions {
    /// Read only.
    pub fn read() -> Self {
        Self::default()
    }

    /// Create or truncate, for writing (`std::fs::File::create`).
    pub fn create() -> Self {
        Self { write: true, create: true, truncate: true, ..Self::default() }
    }
}

struct State {
    inode: proto::Inode,
    /// Buffered bytes and the offset of the first.
    buf: Vec<u8>,
    buf_at: u64,
    /// End of the highest byte written through this handle (buffered or not).
    written_end: u64,
    /// Written since meta was last told the length.
    dirty: bool,
    last_hint: Instant,
    closed: bool,
}

/// An open file. See the module note.
pub struct File {
    client: Arc<Client>,
    user: UserInfo,
    writable: bool,
    session: u64,
    state: Mutex<State>,
}

/// Splits an absolute path into its parent directory path and last name.
fn split_path(path: &str) -> Result<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) =
        trimmed.rsplit_once('/').ok_or_else(|| Error::invalid(format!("path {path:?} is not absolute")))?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::invalid(format!("path {path:?} does not name a file")));
    }
    Ok((if parent.is_empty() { "/" } else { parent }, name))
}

impl Client {
    /// Opens (or with `opts.create` creates) the file at absolute `path` as `user`.
    pub async fn open_path(self: &Arc<Self>, user: &UserInfo, path: &str, opts: OpenOptions) -> Result<File> {
        if (opts.create || opts.truncate) && !opts.write {
            return Err(Error::invalid("create and truncate need write access"));
        }
        let (mut inode, session) = if opts.create {
            let (parent, name) = split_path(path)?;
            let dir = self.resolve_path(user, parent).await?;
            self.create_for_write(user, InodeId(dir.id), name.as_bytes(), opts.mode, opts.exclusive).await?
        } else {
            let found = self.resolve_path(user, path).await?;
            self.open(user, InodeId(found.id), opts.write, false).await?
        };
        if inode.inode_type != InodeType::File as i32 {
            return Err(Error::new(StatusCode::IsDirectory, format!("{path} is not a regular file")));
        }
        let file = File {
            client: self.clone(),
            user: user.clone(),
            writable: opts.write,
            session,
            state: Mutex::new(State {
                inode: inode.clone(),
                buf: Vec::new(),
                buf_at: 0,
                written_end: 0,
                dirty: false,
                last_hint: Instant::now(),
                closed: false,
            }),
        };
        if opts.truncate && inode.length > 0 {
            inode = self.truncate(user, InodeId(inode.id), 0).await?;
            file.state.lock().await.inode = inode;
        }
        Ok(file)
    }
}

impl File {
    /// The inode as this handle knows it (its length includes what it wrote).
    pub async fn inode(&self) -> proto::Inode {
        let s = self.state.lock().await;
        let mut i = s.inode.clone();
        i.length = i.length.max(s.written_end);
        i
    }

    fn check_open(s: &State) -> Result<()> {
        if s.closed {
            return Err(Error::invalid("the file is closed"));
        }
        Ok(())
    }

    /// Writes out the buffer.
    async fn flush(&self, s: &mut State) -> Result<()> {
        if s.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut s.buf);
        self.client.write(&s.inode, s.buf_at, &data).await
    }

    /// Tells meta the length (a Close that keeps the session).
    async fn report(&self, s: &mut State) -> Result<()> {
        let inode = self.client.close(&self.user, InodeId(s.inode.id), s.written_end, s.dirty).await?;
        s.inode = inode;
        s.dirty = false;
        s.last_hint = Instant::now();
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the file; holes read as zeros).
    pub async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let mut s = self.state.lock().await;
        Self::check_open(&s)?;
        self.flush(&mut s).await?;
        let mut view = s.inode.clone();
        view.length = view.length.max(s.written_end);
        self.client.read(&view, offset, len).await
    }

    /// Writes `data` at `offset` (buffered; see the module note).
    pub async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::new(StatusCode::PermissionDenied, "the file is not open for writing"));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or_else(|| Error::invalid("write past the largest file size"))?;
        let mut s = self.state.lock().await;
        Self::check_open(&s)?;
        let contiguous = !s.buf.is_empty() && s.buf_at + s.buf.len() as u64 == offset;
        if !contiguous || s.buf.len() + data.len() > WRITE_BUFFER {
            self.flush(&mut s).await?;
        }
        if data.len() >= WRITE_BUFFER {
            self.client.write(&s.inode, offset, data).await?;
        } else {
            if s.buf.is_empty() {
                s.buf_at = offset;
            }
            s.buf.extend_from_slice(data);
        }
        s.written_end = s.written_end.max(end);
        s.dirty = true;
        if s.last_hint.elapsed() >= HINT_INTERVAL {
            self.flush(&mut s).await?;
            self.report(&mut s).await?;
        }
        Ok(())
    }

    /// Sets the file's length (cutting or extending it with zeros).
    pub async fn set_len(&self, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::new(StatusCode::PermissionDenied, "the file is not open for writing"));
        }
        let mut s = self.state.lock().await;
        Self::check_open(&s)?;
        self.flush(&mut s).await?;
        let inode = self.client.truncate_from(&self.user, InodeId(s.inode.id), len, s.written_end).await?;
        s.inode = inode;
        s.written_end = s.written_end.min(len);
        Ok(())
    }

    /// Writes out buffered data and tells meta the length (fsync).
    pub async fn sync(&self) -> Result<()> {
        let mut s = self.state.lock().await;
        Self::check_open(&s)?;
        self.flush(&mut s).await?;
        if s.dirty { self.report(&mut s).await } else { Ok(()) }
    }

    /// Writes out buffered data, tells meta the length and ends the write session. Returns the
    /// inode as meta has it. Closing twice is an error; dropping a `File` without closing loses
    /// buffered data (meta prunes its session once the client's session at mgmtd expires).
    pub async fn close(&self) -> Result<proto::Inode> {
        let mut s = self.state.lock().await;
        Self::check_open(&s)?;
        self.flush(&mut s).await?;
        let inode = if self.session != 0 || s.dirty {
            self.client.close_session(&self.user, InodeId(s.inode.id), self.session, s.written_end, s.dirty).await?
        } else {
            s.inode.clone()
        };
        s.closed = true;
        s.inode = inode.clone();
        Ok(inode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split_path("/a/b").unwrap(), ("/a", "b"));
        assert_eq!(split_path("/f").unwrap(), ("/", "f"));
        assert_eq!(split_path("/d/f/").unwrap(), ("/d", "f"));
        assert!(split_path("f").is_err());
        assert!(split_path("/").is_err());
        assert!(split_path("/a/..").is_err());
    }
}
