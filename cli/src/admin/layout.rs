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

/// Parses a byte size: plain bytes, or a number with `K`/`M` (`KiB`/`MiB`, powers of 1024).
pub fn parse_size(s: &str) -> anyhow::Result<u32> {
    let bad = || anyhow::anyhow!("bad size {s:?}: expected bytes or a number with K or M (e.g. 1048576, 512K, 1M)");
    let t = s.trim();
    let (num, mul) = match t.find(|c: char| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some(i) => {
            let mul = match &t[i..] {
                "K" | "k" | "KiB" => 1 << 10,
                "M" | "m" | "MiB" => 1 << 20,
                _ => return Err(bad()),
            };
            (&t[..i], mul)
        }
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    u32::try_from(n.checked_mul(mul).ok_or_else(bad)?).map_err(|_| bad())
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
        for bad in ["", "M", "1G", "1.5M", "-1", "4096M", "1 M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
