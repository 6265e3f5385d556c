//! Rendering for admin commands: aligned text tables, JSON values of wire types, enum names.
use serde_json::{Value, json};
use t3fs_common::proto::{self, InodeType};

/// A text table: a header row and rows, columns padded to their widest cell.
#[derive(Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = width[i])).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints a JSON value on stdout (pretty, one document).
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// `NodeType::Storage` -> "STORAGE" (an unknown value -> "?N").
pub fn enum_name<E: std::fmt::Debug>(v: i32, f: impl Fn(i32) -> Result<E, prost::UnknownEnumValue>) -> String {
    f(v).map(|e| format!("{e:?}").to_uppercase()).unwrap_or_else(|_| format!("?{v}"))
}

pub fn node_type(v: i32) -> String {
    enum_name(v, proto::NodeType::try_from)
}
pub fn node_status(v: i32) -> String {
    enum_name(v, proto::NodeStatus::try_from)
}
pub fn public_state(v: i32) -> String {
    enum_name(v, proto::PublicTargetState::try_from)
}
pub fn local_state(v: i32) -> String {
    enum_name(v, proto::LocalTargetState::try_from)
}

/// "file", "dir", "symlink" or "?".
pub fn inode_kind(t: i32) -> &'static str {
    match InodeType::try_from(t) {
        Ok(InodeType::File) => "file",
        Ok(InodeType::Directory) => "dir",
        Ok(InodeType::Symlink) => "symlink",
        _ => "?",
    }
}

/// `drwxr-xr-x`-style mode string (type letter + permission bits incl. setuid/setgid/sticky).
pub fn mode_string(t: i32, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match InodeType::try_from(t) {
        Ok(InodeType::Directory) => 'd',
        Ok(InodeType::Symlink) => 'l',
        Ok(InodeType::File) => '-',
        _ => '?',
    });
    for (shift, special, lower, upper) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => lower,
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Nanoseconds since the epoch as `YYYY-MM-DD hh:mm:ss.nnnnnnnnn` UTC.
pub fn time_string(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{nanos:09} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An inode as JSON.
pub fn inode_json(i: &proto::Inode) -> Value {
    let mut v = json!({
        "id": i.id,
        "type": inode_kind(i.inode_type),
        "mode": format!("{:04o}", i.mode),
        "uid": i.uid,
        "gid": i.gid,
        "nlink": i.nlink,
        "length": i.length,
        "atime_ns": i.atime_ns,
        "mtime_ns": i.mtime_ns,
        "ctime_ns": i.ctime_ns,
        "parent": i.parent,
    });
    if let Some(l) = i.layout.as_ref().filter(|_| i.inode_type == InodeType::Directory as i32) {
        v["default_layout"] = json!({ "table_id": l.table_id, "chunk_size": l.chunk_size, "stripe": l.stripe });
    } else if let Some(l) = &i.layout {
        v["layout"] = json!({
            "table_id": l.table_id,
            "table_version": l.table_version,
            "chunk_size": l.chunk_size,
            "stripe": l.stripe,
            "base_index": l.base_index,
            "seed": l.seed,
        });
    }
    if i.inode_type == InodeType::Symlink as i32 {
        v["symlink_target"] = json!(String::from_utf8_lossy(&i.symlink_target));
    }
    v
}

/// A chunk's metadata as JSON.
pub fn chunk_meta_json(m: &proto::ChunkMeta) -> Value {
    json!({
        "version": m.version,
        "length": m.length,
        "crc32c": format!("{:08x}", m.crc32c),
        "chain_version": m.chain_version,
        "removed": m.removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(InodeType::Directory as i32, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(InodeType::File as i32, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(InodeType::Directory as i32, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(InodeType::File as i32, 0o4644), "-rwSr--r--");
        assert_eq!(mode_string(InodeType::Symlink as i32, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn times() {
        assert_eq!(time_string(0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(time_string(951_782_400_000_000_001), "2000-02-29 00:00:00.000000001 UTC");
        assert_eq!(time_string(-1_000_000_000), "1969-12-31 23:59:59.000000000 UTC");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["id", "name"]);
        t.row(vec!["1".into(), "a".into()]);
        t.row(vec!["100".into(), "bb".into()]);
        assert_eq!(t.render(), "id   name\n1    a\n100  bb\n");
    }
}
