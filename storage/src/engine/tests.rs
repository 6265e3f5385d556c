use super::*;

#[test]
fn classes_and_slot_codes() {
    assert_eq!(class_for(0), 16);
    assert_eq!(class_for(1), 16);
    assert_eq!(class_for(64 << 10), 16);
    assert_eq!(class_for((64 << 10) + 1), 17);
    assert_eq!(class_for(1 << 20), 20);
    assert_eq!(class_for(64 << 20), 26);
    assert_eq!((slots_per_group(16), slots_per_group(20), slots_per_group(26)), (256, 64, 1));
    assert_eq!((class_dir_name(16), class_dir_name(20), class_dir_name(26)), ("64K".into(), "1M".into(), "64M".into()));
    let s = Slot { class: 20, group: 0xABCD, index: 63 };
    assert_eq!(Slot::decode(s.encode()), Some(s));
    assert_eq!(Slot::decode(0), None);
    assert_eq!(Slot::decode(Slot { index: 64, ..s }.encode()), None, "index beyond the group");
    assert_eq!(Slot::decode(Slot { class: 27, ..s }.encode()), None);
    assert_eq!(s.offset(), 63 << 20);
}

#[test]
fn slots_that_stay_free_give_their_blocks_back_unless_preallocated() {
    use std::os::unix::fs::MetadataExt;
    for preallocate in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let options = EngineOptions { preallocate, ..EngineOptions::default() };
        let (e, _) = Engine::open_single(d.path(), options, 1, &[]).unwrap();
        let slots: Vec<Slot> = (0..3).map(|_| e.allocate(1 << 20).unwrap()).collect();
        for (i, &slot) in slots.iter().enumerate() {
            e.write(slot, &vec![i as u8 + 1; 1 << 20]).unwrap();
        }
        let path = e.group_path(slots[0].class, slots[0].group);
        let allocated = || std::fs::metadata(&path).unwrap().blocks() * 512;
        let before = allocated();
        // Slot 0 is freed while a reader pins it, slot 1 freed and reused before it ages.
        let pin = e.pin(slots[0]);
        e.free(slots[0]);
        e.free(slots[1]);
        assert_eq!(e.trim(usize::MAX), 0, "a first pass only ages the free slots");
        assert_eq!(e.allocate(1 << 20).unwrap(), slots[1]);
        assert_eq!(e.trim(usize::MAX), 0, "pinned or reused: nothing to give back");
        drop(pin);
        assert_eq!(e.trim(usize::MAX), 0, "slot 0 became free only now");
        let released = e.trim(usize::MAX);
        assert_eq!(allocated(), before - released, "preallocate {preallocate}");
        if preallocate {
            assert_eq!(released, 0, "preallocated blocks stay reserved");
        } else {
            assert_eq!(released, 1 << 20, "slot 0's MiB went back to the file system");
        }
        assert_eq!(e.trim(usize::MAX), 0, "each slot is punched once");
        // The reused slot and the neighbour are intact; slot 0 is reused and holds what is
        // written next.
        let mut buf = [0u8; 4];
        e.read(slots[1], 0, &mut buf).unwrap();
        assert_eq!(buf, [2; 4]);
        e.read(slots[2], (1 << 20) - 4, &mut buf).unwrap();
        assert_eq!(buf, [3; 4]);
        assert_eq!(e.allocate(1 << 20).unwrap(), slots[0]);
        e.write(slots[0], b"next").unwrap();
        e.read(slots[0], 0, &mut buf).unwrap();
        assert_eq!(&buf, b"next");
        drop(e);
        // Reopened with only slot 2 referenced: the free slots of the existing file are given
        // back by the second pass, at most `max` per pass.
        let (e, _) = Engine::open_single(d.path(), options, 1, &[slots[2]]).unwrap();
        assert_eq!(e.trim(1), 0);
        let released = e.trim(1) + e.trim(1);
        assert_eq!(released, if preallocate { 0 } else { 2 << 20 });
        assert_eq!(allocated(), if preallocate { before } else { 1 << 20 });
        assert_eq!(e.trim(usize::MAX) + e.trim(usize::MAX), 0, "slots never written are not counted");
    }
}

#[test]
fn allocate_write_read_free_and_pins() {
    let d = tempfile::tempdir().unwrap();
    let (e, bad) = Engine::open_single(d.path(), EngineOptions::default(), 1, &[]).unwrap();
    assert!(bad.is_empty());
    let slots: Vec<Slot> = (0..300).map(|_| e.allocate(100).unwrap()).collect();
    // 256 in group 0, the rest in group 1; all distinct.
    assert_eq!(slots[255], Slot { class: 16, group: 0, index: 255 });
    assert_eq!(slots[256], Slot { class: 16, group: 1, index: 0 });
    assert_eq!(e.allocated().len(), 300);
    e.write(slots[7], b"seven").unwrap();
    let mut buf = [0u8; 4];
    e.read(slots[7], 1, &mut buf).unwrap();
    assert_eq!(&buf, b"even");
    // A pinned slot's free is deferred to the last unpin; until then it is not reallocated.
    let (p1, p2) = (e.pin(slots[3]), e.pin(slots[3]));
    e.free(slots[3]);
    assert_eq!(e.allocate(1).unwrap(), Slot { class: 16, group: 1, index: 44 });
    drop(p1);
    assert!(e.allocated().contains(&slots[3]));
    drop(p2);
    assert!(!e.allocated().contains(&slots[3]));
    assert_eq!(e.allocate(1).unwrap(), slots[3], "the lowest free slot is taken first");
    let big = e.allocate(3 << 20).unwrap();
    assert_eq!((big.class, big.index), (22, 0));
    assert!(e.group_path(22, 0).exists());
    assert_eq!(e.space().0, 301 * (64 << 10) + (4 << 20));
    drop(e);
    // Reopen with a subset referenced: the rest is free; an unknown group is reported.
    let ghost = Slot { class: 18, group: 9, index: 0 };
    let (e, bad) = Engine::open_single(d.path(), EngineOptions::default(), 1, &[slots[7], slots[7], ghost]).unwrap();
    assert_eq!(bad, vec![slots[7], ghost]);
    assert_eq!(e.allocated(), vec![slots[7]]);
    e.read(slots[7], 0, &mut buf).unwrap();
    assert_eq!(&buf, b"seve");
    // The doubly referenced slot is never freed (neither referrer can hand it to someone else).
    e.free(slots[7]);
    assert_eq!(e.allocated(), vec![slots[7]]);
}

#[test]
fn a_shared_engine_allocates_only_after_every_owner_attached() {
    let d = tempfile::tempdir().unwrap();
    let (e, _) = Engine::open_single(d.path(), EngineOptions::default(), 1, &[]).unwrap();
    let (a, b) = (e.allocate(10).unwrap(), e.allocate(10).unwrap());
    drop(e);
    let e = Engine::open(d.path(), EngineOptions::default()).unwrap();
    assert_eq!(e.attach(1, &[a]).unwrap(), vec![]);
    assert_eq!(e.allocate(10).unwrap_err().code, StatusCode::Unavailable, "not sealed");
    assert!(e.attach(1, &[]).is_err(), "attached twice");
    // Target 2 references `a` too (a conflict) and `b`.
    assert_eq!(e.attach(2, &[a, b]).unwrap(), vec![a]);
    e.seal();
    assert!(e.attach(3, &[]).is_err(), "attached after the seal");
    assert_eq!(e.owners(), 2);
    let c = e.allocate(10).unwrap();
    assert!(c != a && c != b);
    // A free through either referrer of the conflicted slot leaves it allocated.
    e.free(a);
    assert!(e.allocated().contains(&a));
    e.free(b);
    assert_eq!(e.allocate(10).unwrap(), b);
}

#[test]
fn a_file_system_refusing_o_direct_falls_back_to_buffered_io() {
    let d = tempfile::tempdir().unwrap();
    aligned::REFUSE_DIRECT.with(|r| r.set(true));
    let opened = Engine::open_single(d.path(), EngineOptions::default(), 1, &[]);
    aligned::REFUSE_DIRECT.with(|r| r.set(false));
    let (e, _) = opened.unwrap();
    assert!(!e.direct_io(), "fell back");
    let s = e.allocate(5000).unwrap();
    e.write(s, &[7; 5000]).unwrap();
    assert_eq!(&e.read_bytes(s, 4990, 10).unwrap()[..], &[7; 10]);
    // Where it is accepted (ext4, xfs, tmpfs since Linux 6.6), the option is in force.
    let d = tempfile::tempdir().unwrap();
    let (e, _) = Engine::open_single(d.path(), EngineOptions::default(), 1, &[]).unwrap();
    assert_eq!(e.direct_io(), aligned::probe_direct(d.path()).unwrap());
}

#[test]
fn direct_and_buffered_io_read_back_any_range() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for direct_io in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let opts = EngineOptions { direct_io, ..Default::default() };
        let (e, _) = Engine::open_single(d.path(), opts, 1, &[]).unwrap();
        assert!(!e.direct_io() || direct_io);
        let s = e.allocate(data.len() as u32).unwrap();
        e.write(s, &data).unwrap();
        for (off, len) in [(0usize, data.len()), (1, 10), (4095, 2), (65536, 65536), (199_999, 1), (5, 0)] {
            let got = e.read_bytes(s, off as u64, len).unwrap();
            assert_eq!(&got[..], &data[off..off + len], "direct {direct_io} at {off}+{len}");
        }
        // The padding past the data is zero.
        assert!(e.read_bytes(s, data.len() as u64, 100).unwrap().iter().all(|b| *b == 0));
    }
}

#[test]
fn group_files_are_sparse_unless_preallocated() {
    use std::os::unix::fs::MetadataExt;
    for preallocate in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let opts = EngineOptions { preallocate, ..Default::default() };
        let (e, _) = Engine::open_single(d.path(), opts, 1, &[]).unwrap();
        let s = e.allocate(1 << 20).unwrap();
        let m = fs::metadata(e.group_path(s.class, s.group)).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert_eq!(m.blocks() * 512 >= 64 << 20, preallocate, "allocated {} bytes", m.blocks() * 512);
    }
}

#[test]
fn client_writes_stop_at_the_reserve_and_everything_else_goes_on() {
    use std::sync::atomic::AtomicU64;
    const MIB: u64 = 1 << 20;
    let d = tempfile::tempdir().unwrap();
    let opts = EngineOptions { reserved_bytes: Some(100 * MIB), ..EngineOptions::default() };
    let (e, _) = Engine::open_single(d.path(), opts, 1, &[]).unwrap();
    let free = Arc::new(AtomicU64::new(110 * MIB));
    let f = free.clone();
    e.set_space_probe(move || Some((f.load(Ordering::Relaxed), 1000 * MIB)));
    let mib = MIB as u32;

    // 110 MiB free, 100 reserved: 10 MiB for clients, counting what unsynced writes were promised.
    let a = e.allocate_for(mib, Claim::Client).unwrap();
    let b = e.allocate_for(8 * mib, Claim::Client).unwrap();
    assert_eq!(e.client_space(), Some((MIB, 1000 * MIB)));
    let c = e.allocate_for(mib, Claim::Client).unwrap();
    let full = e.allocate_for(mib, Claim::Client).unwrap_err();
    assert_eq!(full.code, StatusCode::NoSpace, "{full}");
    assert!(full.message.contains("reserve"), "{full}");
    assert_eq!(e.allocated().len(), 3, "a refused allocation takes no slot");
    // A removal's or a resync's slot may use the reserve.
    let r = e.allocate_for(4 * mib, Claim::Reserve).unwrap();
    e.free(r);

    // Synced writes move from the promise to the file system's own count.
    e.write(a, b"a").unwrap();
    assert_eq!(e.client_space(), Some((MIB, 1000 * MIB)), "still promised until the probe sees it");
    free.fetch_sub(MIB, Ordering::Relaxed);
    assert_eq!(e.client_space(), Some((0, 1000 * MIB)));
    // Freed slots return their promise; slots that still hold blocks take a client write under the
    // reserve (a's slot was written and freed: dirty), clean ones do not.
    e.free(c);
    e.free(b);
    assert_eq!(e.client_space(), Some((9 * MIB, 1000 * MIB)));
    free.store(100 * MIB, Ordering::Relaxed);
    e.free(a);
    assert_eq!(e.allocate_for(mib, Claim::Client).unwrap(), a, "the freed slot still holds blocks");
    // c was freed unwritten; the engine counts any freed slot as holding blocks until trim.
    assert_eq!(e.allocate_for(mib, Claim::Client).unwrap(), c);
    assert_eq!(e.allocate_for(mib, Claim::Client).unwrap_err().code, StatusCode::NoSpace);
    assert_eq!(e.allocate_for(64 << 10, Claim::Client).unwrap_err().code, StatusCode::NoSpace, "other classes too");
    // Space given back (files deleted and trimmed elsewhere): writes go on.
    free.store(200 * MIB, Ordering::Relaxed);
    e.allocate_for(mib, Claim::Client).unwrap();
}

#[test]
fn preallocated_groups_need_space_only_when_a_group_is_created() {
    let d = tempfile::tempdir().unwrap();
    let opts = EngineOptions { reserved_bytes: Some(u64::MAX / 2), preallocate: true, ..EngineOptions::default() };
    let (e, _) = Engine::open_single(d.path(), opts, 1, &[]).unwrap();
    // The first slot of a class needs a new (fully allocated) group file: refused under the reserve.
    assert_eq!(e.allocate_for(1 << 20, Claim::Client).unwrap_err().code, StatusCode::NoSpace);
    let first = e.allocate_for(1 << 20, Claim::Reserve).unwrap();
    // Every other slot of that group already holds its blocks.
    let second = e.allocate_for(1 << 20, Claim::Client).unwrap();
    assert_eq!((first.group, second.group, second.index), (0, 0, 1));
}
