//! Damaging stored chunk bytes on disk, for corruption tests (storage's own and cli's, which includes
//! this file by path): no assumption about the chunk engine's file layout, only that data is stored as is.
use std::path::Path;

/// Flips one byte of every copy of `needle` in every file under `dir`: the chunk's bytes wherever the
/// engine keeps them, including a freed slot of an older version that may still hold the same bytes as
/// the live one. Returns the number of copies changed.
pub fn corrupt_on_disk(dir: &Path, needle: &[u8]) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let mut data = std::fs::read(&p).unwrap();
            let hits: Vec<usize> =
                data.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
            for at in &hits {
                data[at + needle.len() / 2] ^= 0x5a;
            }
            if !hits.is_empty() {
                std::fs::write(&p, &data).unwrap();
            }
            n += hits.len();
        }
    }
    n
}
