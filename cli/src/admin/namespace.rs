//! Namespace commands: ls, stat, mkdir, rm, mv, ln, chmod, chown, du.
//!
//! Paths are absolute paths inside t3fs, resolved component by component through meta as the
//! caller's identity (root unless `--uid/--gid`). Every error names the path it is about.
use anyhow::{Context, bail};
use serde_json::{Value, json};
use t3fs_client::{Client, InodeId, RenameFlags, SetAttr};
use t3fs_common::proto::{self, InodeType};

use super::Ctx;
use super::output::{Table, inode_json, inode_kind, mode_string, print_json, time_string};

/// Splits an absolute path into (parent path, last name). The root and `.`/`..` as the last
/// component have no (parent, name) and are rejected.
pub fn split_path(path: &str) -> anyhow::Result<(String, String)> {
    if !path.starts_with('/') {
        bail!("{path}: not an absolute t3fs path");
    }
    let trimmed = path.trim_end_matches('/');
    let Some(pos) = trimmed.rfind('/') else { bail!("{path}: the root has no parent") };
    let name = &trimmed[pos + 1..];
    if name.is_empty() || name == "." || name == ".." {
        bail!("{path}: needs a final name component");
    }
    let parent = if pos == 0 { "/".to_string() } else { trimmed[..pos].to_string() };
    Ok((parent, name.to_string()))
}

/// An absolute path with `.`, `..` and empty components folded away, relative to the root
/// (`/a/./b/../c` -> `a/c`; `..` at the root stays at the root).
pub fn normalize(path: &str) -> anyhow::Result<String> {
    if !path.starts_with('/') {
        bail!("{path}: not an absolute t3fs path");
    }
    let mut out: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => out.push(name),
        }
    }
    Ok(out.join("/"))
}

/// Parses an octal mode (`644`, `0755`, `1777`); at most 0o7777.
pub fn parse_mode(s: &str) -> anyhow::Result<u32> {
    let m = u32::from_str_radix(s, 8).map_err(|_| anyhow::anyhow!("bad mode {s:?}: expected octal digits like 644"))?;
    if s.is_empty() || m > 0o7777 {
        bail!("bad mode {s:?}: expected an octal value up to 7777");
    }
    Ok(m)
}

/// Parses `UID` or `UID:GID`.
pub fn parse_owner(s: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let bad = || anyhow::anyhow!("bad owner {s:?}: expected UID or UID:GID (numbers)");
    match s.split_once(':') {
        None => Ok((s.parse().map_err(|_| bad())?, None)),
        Some((u, g)) => Ok((u.parse().map_err(|_| bad())?, Some(g.parse().map_err(|_| bad())?))),
    }
}

/// The inode at `path`.
pub async fn resolve(ctx: &Ctx, c: &Client, path: &str) -> anyhow::Result<proto::Inode> {
    c.resolve_path(&ctx.user, path).await.with_context(|| path.to_string())
}

/// One entry of a tree walk.
pub struct Entry {
    pub path: String,
    /// Parent directory and name (the walk's root has parent 0 and an empty name).
    pub parent: u64,
    pub name: Vec<u8>,
    pub inode: proto::Inode,
}

fn join(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

/// Every inode under (and including) `root`, parents before children. Symlinks are not followed.
pub async fn walk(ctx: &Ctx, c: &Client, path: &str, root: proto::Inode) -> anyhow::Result<Vec<Entry>> {
    let mut out = vec![Entry { path: path.to_string(), parent: 0, name: Vec::new(), inode: root }];
    let mut i = 0;
    while i < out.len() {
        if out[i].inode.inode_type == InodeType::Directory as i32 {
            let (dir, dir_path) = (out[i].inode.id, out[i].path.clone());
            let entries = c.readdir(&ctx.user, InodeId(dir)).await.with_context(|| dir_path.clone())?;
            let ids: Vec<InodeId> = entries.iter().map(|e| InodeId(e.inode)).collect();
            let inodes = c.batch_stat(&ctx.user, &ids).await.with_context(|| dir_path.clone())?;
            for (e, inode) in entries.into_iter().zip(inodes) {
                // An entry whose inode vanished meanwhile (concurrent remove) is skipped.
                if let Some(inode) = inode {
                    let path = join(&dir_path, &e.name);
                    out.push(Entry { path, parent: dir, name: e.name.to_vec(), inode });
                }
            }
        }
        i += 1;
    }
    Ok(out)
}

/// `t3fs admin ls [-l] PATH`.
pub async fn ls(ctx: &Ctx, path: &str, long: bool) -> anyhow::Result<()> {
    let c = ctx.client().await?;
    let inode = resolve(ctx, &c, path).await?;
    let rows: Vec<(String, proto::Inode)> = if inode.inode_type == InodeType::Directory as i32 {
        let entries = c.readdir(&ctx.user, InodeId(inode.id)).await.with_context(|| path.to_string())?;
        let ids: Vec<InodeId> = entries.iter().map(|e| InodeId(e.inode)).collect();
        let inodes = c.batch_stat(&ctx.user, &ids).await.with_context(|| path.to_string())?;
        entries
            .into_iter()
            .zip(inodes)
            .filter_map(|(e, i)| i.map(|i| (String::from_utf8_lossy(&e.name).into_owned(), i)))
            .collect()
    } else {
        vec![(path.to_string(), inode)]
    };
    if ctx.json {
        let entries: Vec<Value> = rows
            .iter()
            .map(|(name, i)| {
                let mut v = inode_json(i);
                v["name"] = json!(name);
                v
            })
            .collect();
        print_json(&json!({ "path": path, "entries": entries }));
    } else if long {
        let mut t = Table::new(&["MODE", "NLINK", "UID", "GID", "SIZE", "MTIME", "INODE", "NAME"]);
        for (name, i) in &rows {
            let mut shown = name.clone();
            if i.inode_type == InodeType::Symlink as i32 {
                shown = format!("{shown} -> {}", String::from_utf8_lossy(&i.symlink_target));
            }
            t.row(vec![
                mode_string(i.inode_type, i.mode),
                i.nlink.to_string(),
                i.uid.to_string(),
                i.gid.to_string(),
                i.length.to_string(),
                time_string(i.mtime_ns),
                i.id.to_string(),
                shown,
            ]);
        }
        print!("{}", t.render());
    } else {
        for (name, i) in &rows {
            let slash = if i.inode_type == InodeType::Directory as i32 { "/" } else { "" };
            println!("{name}{slash}");
        }
    }
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin stat PATH`.
pub async fn stat(ctx: &Ctx, path: &str) -> anyhow::Result<()> {
    let c = ctx.client().await?;
    let i = resolve(ctx, &c, path).await?;
    // The meta node a directory's creates and removes go to (meta.md, directory owners).
    let owner = (i.inode_type == InodeType::Directory as i32).then(|| c.dir_owner(InodeId(i.id))).flatten();
    if ctx.json {
        let mut v = inode_json(&i);
        v["path"] = json!(path);
        if let Some(o) = owner {
            v["owner_meta_node"] = json!(o);
        }
        print_json(&v);
    } else {
        println!("  path: {path}");
        println!(" inode: {}   type: {}   links: {}", i.id, inode_kind(i.inode_type), i.nlink);
        println!("  mode: {:04o} ({})   uid: {}   gid: {}", i.mode, mode_string(i.inode_type, i.mode), i.uid, i.gid);
        println!("  size: {}", i.length);
        if i.inode_type == InodeType::Directory as i32 {
            match &i.layout {
                Some(l) => println!(
                    "default layout: chain table {}, chunk size {}, stripe {}",
                    l.table_id, l.chunk_size, l.stripe
                ),
                None => println!("default layout: none set (the meta config's)"),
            }
            if let Some(o) = owner {
                println!("owner meta node: {o} (creates and removes in it go there)");
            }
        } else if let Some(l) = &i.layout {
            println!(
                "layout: table {} v{}, chunk size {}, stripe {}, base {}, seed {}",
                l.table_id, l.table_version, l.chunk_size, l.stripe, l.base_index, l.seed
            );
        }
        if i.inode_type == InodeType::Symlink as i32 {
            println!("target: {}", String::from_utf8_lossy(&i.symlink_target));
        }
        println!("access: {}", time_string(i.atime_ns));
        println!("modify: {}", time_string(i.mtime_ns));
        println!("change: {}", time_string(i.ctime_ns));
    }
    c.shutdown().await;
    Ok(())
}

/// Prints the result of a command that made or changed one inode.
fn report(ctx: &Ctx, what: &str, path: &str, i: &proto::Inode) {
    if ctx.json {
        print_json(&json!({ "op": what, "path": path, "inode": inode_json(i) }));
    } else {
        println!("{what} {path} (inode {})", i.id);
    }
}

/// `t3fs admin mkdir [-p] [--mode M] PATH`.
pub async fn mkdir(ctx: &Ctx, path: &str, parents: bool, mode: &str) -> anyhow::Result<()> {
    let mode = parse_mode(mode)?;
    let (parent, name) = split_path(path)?;
    let c = ctx.client().await?;
    let made = if parents {
        // One meta transaction creates every missing component (`..` is resolved here, lexically).
        let rel = normalize(path).with_context(|| path.to_string())?;
        c.mkdirs(&ctx.user, InodeId::ROOT, &rel, mode).await.with_context(|| path.to_string())?
    } else {
        let p = resolve(ctx, &c, &parent).await?;
        c.mkdir(&ctx.user, InodeId(p.id), name.as_bytes(), mode).await.with_context(|| path.to_string())?
    };
    report(ctx, "mkdir", path, &made);
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin rm [-r] PATH`.
pub async fn rm(ctx: &Ctx, path: &str, recursive: bool) -> anyhow::Result<()> {
    let (parent, name) = split_path(path)?;
    let c = ctx.client().await?;
    let p = resolve(ctx, &c, &parent).await?;
    let target = c.lookup(&ctx.user, InodeId(p.id), name.as_bytes()).await.with_context(|| path.to_string())?;
    let is_dir = target.inode_type == InodeType::Directory as i32;
    let mut removed = 0u64;
    if is_dir && recursive {
        let tree = walk(ctx, &c, path, target).await?;
        // Reverse pre-order: children before their parents. The root entry (index 0) goes last.
        for e in tree.iter().skip(1).rev() {
            let dir = e.inode.inode_type == InodeType::Directory as i32;
            c.remove(&ctx.user, InodeId(e.parent), &e.name, dir).await.with_context(|| e.path.clone())?;
            removed += 1;
        }
    }
    c.remove(&ctx.user, InodeId(p.id), name.as_bytes(), is_dir).await.with_context(|| path.to_string())?;
    removed += 1;
    if ctx.json {
        print_json(&json!({ "op": "rm", "path": path, "removed": removed }));
    } else {
        println!("removed {path} ({removed} entries)");
    }
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin mv SRC DST` (into DST when DST is an existing directory).
pub async fn mv(ctx: &Ctx, src: &str, dst: &str) -> anyhow::Result<()> {
    let (sp, sn) = split_path(src)?;
    let c = ctx.client().await?;
    let src_parent = resolve(ctx, &c, &sp).await?;
    let (dst_parent, dst_name, dst_path) = match c.resolve_path(&ctx.user, dst).await {
        Ok(d) if d.inode_type == InodeType::Directory as i32 => {
            let path = format!("{}/{sn}", dst.trim_end_matches('/'));
            (d, sn.clone(), path)
        }
        _ => {
            let (dp, dn) = split_path(dst)?;
            (resolve(ctx, &c, &dp).await?, dn, dst.to_string())
        }
    };
    c.rename(
        &ctx.user,
        InodeId(src_parent.id),
        sn.as_bytes(),
        InodeId(dst_parent.id),
        dst_name.as_bytes(),
        RenameFlags::default(),
    )
    .await
    .with_context(|| format!("mv {src} {dst_path}"))?;
    let moved = resolve(ctx, &c, &dst_path).await?;
    if ctx.json {
        print_json(&json!({ "op": "mv", "src": src, "dst": dst_path, "inode": inode_json(&moved) }));
    } else {
        println!("renamed {src} -> {dst_path} (inode {})", moved.id);
    }
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin ln [-s] TARGET LINK`.
pub async fn ln(ctx: &Ctx, target: &str, link: &str, symbolic: bool) -> anyhow::Result<()> {
    let (lp, ln) = split_path(link)?;
    let c = ctx.client().await?;
    let parent = resolve(ctx, &c, &lp).await?;
    let made = if symbolic {
        c.symlink(&ctx.user, InodeId(parent.id), ln.as_bytes(), target.as_bytes()).await
    } else {
        let t = resolve(ctx, &c, target).await?;
        c.link(&ctx.user, InodeId(t.id), InodeId(parent.id), ln.as_bytes()).await
    }
    .with_context(|| link.to_string())?;
    report(ctx, if symbolic { "symlink" } else { "link" }, link, &made);
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin chmod MODE PATH`.
pub async fn chmod(ctx: &Ctx, mode: &str, path: &str) -> anyhow::Result<()> {
    let mode = parse_mode(mode)?;
    let c = ctx.client().await?;
    let i = resolve(ctx, &c, path).await?;
    let attr = SetAttr { mode: Some(mode), ..Default::default() };
    let i = c.setattr(&ctx.user, InodeId(i.id), attr).await.with_context(|| path.to_string())?;
    report(ctx, "chmod", path, &i);
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin chown UID[:GID] PATH`.
pub async fn chown(ctx: &Ctx, owner: &str, path: &str) -> anyhow::Result<()> {
    let (uid, gid) = parse_owner(owner)?;
    let c = ctx.client().await?;
    let i = resolve(ctx, &c, path).await?;
    let attr = SetAttr { uid: Some(uid), gid, ..Default::default() };
    let i = c.setattr(&ctx.user, InodeId(i.id), attr).await.with_context(|| path.to_string())?;
    report(ctx, "chown", path, &i);
    c.shutdown().await;
    Ok(())
}

/// `t3fs admin du PATH`.
pub async fn du(ctx: &Ctx, path: &str) -> anyhow::Result<()> {
    let c = ctx.client().await?;
    let root = resolve(ctx, &c, path).await?;
    let tree = walk(ctx, &c, path, root).await?;
    let (mut bytes, mut files, mut dirs) = (0u64, 0u64, 0u64);
    // A file with several names (hard links) counts once, as du(1) does.
    let mut seen = std::collections::HashSet::new();
    for e in &tree {
        match InodeType::try_from(e.inode.inode_type) {
            Ok(InodeType::File) if !seen.insert(e.inode.id) => {}
            Ok(InodeType::File) => {
                files += 1;
                bytes += e.inode.length;
            }
            Ok(InodeType::Directory) => dirs += 1,
            _ => {}
        }
    }
    if ctx.json {
        print_json(&json!({ "path": path, "bytes": bytes, "files": files, "dirs": dirs }));
    } else {
        println!("{bytes}\t{path}\t({files} files, {dirs} directories)");
    }
    c.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split() {
        assert_eq!(split_path("/a").unwrap(), ("/".into(), "a".into()));
        assert_eq!(split_path("/a/b/").unwrap(), ("/a".into(), "b".into()));
        assert!(split_path("/").is_err());
        assert!(split_path("a/b").is_err());
        assert!(split_path("/a/..").is_err());
        assert_eq!(normalize("/a/./b/../c/").unwrap(), "a/c");
        assert_eq!(normalize("/../a").unwrap(), "a");
        assert_eq!(normalize("/").unwrap(), "");
        assert!(normalize("a").is_err());
    }

    #[test]
    fn modes_and_owners() {
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("01777").unwrap(), 0o1777);
        assert!(parse_mode("9z9").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("").is_err());
        assert_eq!(parse_owner("5").unwrap(), (5, None));
        assert_eq!(parse_owner("5:6").unwrap(), (5, Some(6)));
        assert!(parse_owner("a:6").is_err());
        assert!(parse_owner("5:").is_err());
    }
}
