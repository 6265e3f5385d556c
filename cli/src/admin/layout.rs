//! `t3fs admin set-layout`: a directory's default layout (chain table, chunk size, stripe), taken
//! by files created in it and copied to subdirectories made afterwards. Meta checks the values
//! (table known to routing, chunk size a power of two in 4 KiB ..= 64 MiB, stripe ≤ the table's
//! chains) and the caller (the directory's owner or root).
use anyhow::{Context, bail};
use serde_json::json;
use t3fs_client::{DirLayout, InodeId};

use super::Ctx;
use super::namespace::resolve;
use super::output::{inode_json, print_json};

/// Parses a chunk size: a byte size as [`crate::bench::parse_bytes`] takes it, which must fit a u32
/// (meta checks the power of two and the range).
pub fn parse_size(s: &str) -> anyhow::Result<u32> {
    let n = crate::bench::parse_bytes(s)?;
    u32::try_from(n).map_err(|_| anyhow::anyhow!("bad size {s:?}: at most 4G - 1 bytes"))
}

/// `t3fs admin set-layout PATH --chain-table N --chunk-size S --stripe K`.
pub async fn set_layout(ctx: &Ctx, path: &str, chain_table: u32, chunk_size: &str, stripe: u32) -> anyhow::Result<()> {
    let chunk_size = parse_size(chunk_size)?;
    if stripe == 0 {
        bail!("--stripe must be at least 1");
    }
    let c = ctx.client().await?;
    let dir = resolve(ctx, &c, path).await?;
    let layout = DirLayout { chain_table, chunk_size, stripe };
    let dir = c.set_layout(&ctx.user, InodeId(dir.id), layout).await.with_context(|| path.to_string())?;
    if ctx.json {
        print_json(&json!({ "op": "set-layout", "path": path, "inode": inode_json(&dir) }));
    } else {
        println!("set-layout {path}: chain table {chain_table}, chunk size {chunk_size}, stripe {stripe}");
    }
    c.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        for bad in ["", "M", "4G", "1.5M", "-1", "4096M", "1 M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
