//! prefix_end / key_after.
use t3fs_kv::{key_after, prefix_end};

#[test]
fn prefix_end_increments_the_last_byte_below_ff() {
    assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"a\xfe\xff\xff"), Some(b"a\xff".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
}

#[test]
fn prefix_end_bounds_exactly_the_prefixed_keys() {
    let p = b"INOD\x01\xff".as_slice();
    let end = prefix_end(p).unwrap();
    for k in [p.to_vec(), [p, b"\x00"].concat(), [p, b"\xff\xff\xff"].concat()] {
        assert!(k.as_slice() >= p && k < end, "{k:?} is inside");
    }
    assert!(b"INOD\x02".as_slice() >= end.as_slice(), "the next prefix is outside");
}

#[test]
fn key_after_is_the_immediate_successor() {
    assert_eq!(key_after(b"k"), b"k\0".to_vec());
    assert_eq!(key_after(b""), b"\0".to_vec());
    let k = b"abc".as_slice();
    let next = key_after(k);
    assert!(next.as_slice() > k);
    // Nothing lies strictly between k and key_after(k): the only candidates would be longer
    // keys starting with k, and the smallest of those is k + [0] itself.
    assert!(b"abc\x00\x00".as_slice() > next.as_slice() && b"abd".as_slice() > next.as_slice());
}
