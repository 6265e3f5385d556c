//! `put` and `get`: copying whole files between the local file system and t3fs, [`PIECE`] bytes at
//! a time (so memory stays bounded whatever the file size).
//!
//! `put` creates PATH or reuses the existing file (cut to length 0 first), writes every piece, then
//! reports the final length to meta with `close`. `get` reads up to the length meta had when it
//! started, so a file growing meanwhile is copied as of that moment.
//!
//! Both draw a progress bar (bytes, rate, ETA) on stderr, only when stderr is a terminal and
//! `--json` is off, so scripts and tests see exactly the same output as without it.
use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use t3fs_client::InodeId;
use t3fs_common::proto::InodeType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Ctx;
use super::namespace::{resolve, split_path};
use super::output::{inode_json, print_json};

/// Bytes moved per client call.
pub const PIECE: usize = 4 << 20;

/// Reads until `buf` is full or EOF; returns how many bytes were read.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A byte progress bar for copying `total` bytes, drawn on stderr; hidden unless `visible`.
pub(crate) fn progress_bar(total: u64, label: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("the template is a valid constant")
    .progress_chars("=> ");
    ProgressBar::new(total).with_style(style).with_message(label.to_string())
}

/// A count progress bar (`what`: e.g. "chunks") on stderr; hidden unless `visible`.
pub(super) fn count_bar(total: u64, label: &str, what: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let template = format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {what} {{per_sec}} ETA {{eta}}");
    let style = ProgressStyle::with_template(&template)
        .expect("the template is a valid constant with a plain word")
        .progress_chars("=> ");
    ProgressBar::new(total).with_style(style).with_message(label.to_string())
}

/// Whether to draw a progress bar: a person is watching stderr and the output is not JSON.
pub(crate) fn show_progress(ctx: &Ctx) -> bool {
    !ctx.json && std::io::stderr().is_terminal()
}

/// `t3fs admin put LOCAL PATH`.
pub async fn put(ctx: &Ctx, local: &Path, path: &str) -> anyhow::Result<()> {
    let (parent, name) = split_path(path)?;
    let mut f = tokio::fs::File::open(local).await.with_context(|| format!("opening {}", local.display()))?;
    let meta = f.metadata().await.with_context(|| local.display().to_string())?;
    if meta.is_dir() {
        bail!("{} is a directory", local.display());
    }
    let c = ctx.client().await?;
    let p = resolve(ctx, &c, &parent).await?;
    let mut inode =
        c.create(&ctx.user, InodeId(p.id), name.as_bytes(), 0o644, false).await.with_context(|| path.to_string())?;
    if inode.inode_type != InodeType::File as i32 {
        bail!("{path}: exists and is not a regular file");
    }
    if inode.length > 0 {
        inode = c.truncate(&ctx.user, InodeId(inode.id), 0).await.with_context(|| format!("{path}: truncating"))?;
    }
    let bar = progress_bar(meta.len(), &format!("put {path}"), show_progress(ctx));
    let mut buf = vec![0u8; PIECE];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf).await.with_context(|| format!("reading {}", local.display()))?;
        if n == 0 {
            break;
        }
        c.write(&inode, off, &buf[..n]).await.with_context(|| format!("{path}: writing at offset {off}"))?;
        off += n as u64;
        bar.set_position(off);
    }
    bar.finish_and_clear();
    let done = c.close(&ctx.user, InodeId(inode.id), off, true).await.with_context(|| path.to_string())?;
    if ctx.json {
        print_json(&json!({ "op": "put", "local": local, "path": path, "bytes": off, "inode": inode_json(&done) }));
    } else {
        println!("put {} -> {path}: {off} bytes (inode {})", local.display(), done.id);
    }
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin get PATH LOCAL`.
pub async fn get(ctx: &Ctx, path: &str, local: &Path) -> anyhow::Result<()> {
    let c = ctx.client().await?;
    let inode = resolve(ctx, &c, path).await?;
    if inode.inode_type != InodeType::File as i32 {
        bail!("{path}: not a regular file");
    }
    let mut f = tokio::fs::File::create(local).await.with_context(|| format!("creating {}", local.display()))?;
    let bar = progress_bar(inode.length, &format!("get {path}"), show_progress(ctx));
    let mut off = 0u64;
    while off < inode.length {
        let want = (inode.length - off).min(PIECE as u64) as u32;
        let data = c.read(&inode, off, want).await.with_context(|| format!("{path}: reading at offset {off}"))?;
        if data.is_empty() {
            bail!("{path}: read at offset {off} returned nothing before the file's length {}", inode.length);
        }
        f.write_all(&data).await.with_context(|| format!("writing {}", local.display()))?;
        off += data.len() as u64;
        bar.set_position(off);
    }
    bar.finish_and_clear();
    f.flush().await.with_context(|| format!("writing {}", local.display()))?;
    f.sync_all().await.with_context(|| format!("syncing {}", local.display()))?;
    if ctx.json {
        print_json(&json!({ "op": "get", "path": path, "local": local, "bytes": off }));
    } else {
        println!("get {path} -> {}: {off} bytes", local.display());
    }
    c.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_is_hidden_unless_visible() {
        let hidden = progress_bar(100, "put /a", false);
        assert!(hidden.is_hidden());
        assert!(count_bar(10, "fsck /", "chunks", false).is_hidden());
        let counted = count_bar(10, "fsck /", "chunks", true);
        counted.inc(3);
        assert_eq!((counted.position(), counted.length()), (3, Some(10)));
        let shown = progress_bar(100, "put /a", true);
        assert_eq!(shown.length(), Some(100));
        assert_eq!(shown.message(), "put /a");
        shown.set_position(40);
        assert_eq!(shown.position(), 40);
    }
}
