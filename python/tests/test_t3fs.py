"""Tests of the t3fs Python binding against a real local cluster.

A session fixture starts `t3fs local up --data-dir <tmp>` (the binary from $T3FS_BIN, else `t3fs` on
PATH; python/ci.sh builds it), waits until the supervisor reports the cluster up, and stops it with
SIGTERM at the end. Every test works in its own directory of that one cluster.
"""

import errno
import io
import os
import pickle
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

import t3fs

MiB = 1 << 20
START_TIMEOUT = 240  # debug binaries on a loaded 2-core machine


def t3fs_bin():
    b = os.environ.get("T3FS_BIN") or shutil.which("t3fs")
    if not b:
        raise RuntimeError("no t3fs binary: set T3FS_BIN or put t3fs on PATH (cargo build -p t3fs)")
    return b


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    data = tmp_path_factory.mktemp("t3fs") / "data"
    proc = subprocess.Popen(
        [t3fs_bin(), "local", "up", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, up = [], threading.Event()

    def drain():  # keeps the pipe empty for the whole session
        for line in proc.stdout:
            out.append(line)
            if "cluster is up" in line:
                up.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not (up.is_set() or (data / "run" / "ready").exists()):
        if proc.poll() is not None:
            pytest.fail(f"t3fs local up exited with {proc.returncode}:\n{''.join(out)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"t3fs local up not ready after {START_TIMEOUT} s:\n{''.join(out)}")
        time.sleep(0.1)
    yield data
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=90) == 0, "".join(out)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="session")
def client(cluster):
    c = t3fs.Client.from_data_dir(cluster)
    yield c
    c.close()


@pytest.fixture
def d(client, request):
    """A fresh directory for one test."""
    path = "/" + request.node.name.replace("[", "-").replace("]", "")
    client.mkdir(path)
    return path


def blob(n, seed):
    return random.Random(seed).randbytes(n)


def test_paths_write_read_stat_listdir_rename_remove(client, d):
    assert client.write_file(f"{d}/a.bin", b"hello t3fs") == 10
    assert client.read_file(f"{d}/a.bin") == b"hello t3fs"
    client.mkdir(f"{d}/sub/deeper", mode=0o700, parents=True)
    client.mkdir(f"{d}/sub", exist_ok=True)
    st = client.stat(f"{d}/a.bin")
    assert (st["size"], st["is_dir"], st["type"], st["mode"]) == (10, False, "file", 0o644)
    assert (st["uid"], st["gid"]) == (0, 0)
    assert abs(st["mtime"] - time.time()) < 120
    sd = client.stat(f"{d}/sub/deeper")
    assert sd["is_dir"] and sd["mode"] == 0o700
    assert sorted(client.listdir(d)) == ["a.bin", "sub"]
    assert client.exists(f"{d}/a.bin") and not client.exists(f"{d}/nope")

    # Replace, then rename over another file.
    big = blob(3 * MiB + 17, 1)
    client.write_file(f"{d}/b.bin", bytearray(big))  # any bytes-like object
    assert client.read_file(f"{d}/b.bin") == big
    client.write_file(f"{d}/b.bin", b"short")
    assert client.read_file(f"{d}/b.bin") == b"short"
    client.rename(f"{d}/a.bin", f"{d}/sub/b.bin")
    client.rename(f"{d}/sub/b.bin", f"{d}/b.bin")
    assert client.read_file(f"{d}/b.bin") == b"hello t3fs"
    assert sorted(client.listdir(d)) == ["b.bin", "sub"]
    client.remove(f"{d}/b.bin")
    client.remove(f"{d}/sub/deeper")
    assert client.listdir(f"{d}/sub") == []
    assert client.write_file(f"{d}/empty", b"") == 0
    assert client.read_file(f"{d}/empty") == b""


def test_file_objects(client, d):
    data = blob(2 * MiB + 999, 2)
    with client.open(f"{d}/f.bin", "wb") as f:
        assert f.writable() and not f.readable() and f.mode == "wb"
        assert f.write(data[:1000]) == 1000
        f.write(memoryview(data)[1000 : MiB + 5])
        f.write(data[MiB + 5 :])
        assert f.tell() == len(data) == f.size
        # Overwrite a range in place (seek back), the length stays.
        f.seek(10)
        f.write(b"XYZ")
        with pytest.raises(io.UnsupportedOperation):
            f.read()
    assert f.closed
    want = data[:10] + b"XYZ" + data[13:]
    assert client.stat(f"{d}/f.bin")["size"] == len(data)

    with client.open(f"{d}/f.bin") as f:
        assert f.size == len(data) and f.name == f"{d}/f.bin"
        assert f.read(5) == want[:5]
        assert f.read(10) == want[5:15]
        assert f.tell() == 15
        assert f.seek(-7, 2) == len(data) - 7
        assert f.read() == want[-7:]
        assert f.read() == b""
        f.seek(MiB - 3)
        assert f.read(6) == want[MiB - 3 : MiB + 3]  # across a chunk boundary
        f.seek(0)
        assert f.read() == want
        assert f.read_at(MiB - 100, 300) == want[MiB - 100 : MiB + 200]
        assert f.read_at(len(data) - 4, 100) == want[-4:]
        assert f.read_at(len(data) + 5, 100) == b""
        f.seek(100)
        buf = bytearray(50)
        assert f.readinto(buf) == 50 and bytes(buf) == want[100:150] and f.tell() == 150
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")
    with pytest.raises(ValueError):
        f.read()


def test_reads_a_file_written_by_the_cli_and_the_cli_reads_ours(client, d, cluster, tmp_path):
    local = tmp_path / "cli.bin"
    data = blob(3 * MiB + 12345, 3)
    local.write_bytes(data)
    admin = [t3fs_bin(), "admin", "--data-dir", str(cluster)]
    subprocess.run(admin + ["put", str(local), f"{d}/cli.bin"], check=True, capture_output=True)
    assert client.read_file(f"{d}/cli.bin") == data
    assert client.batch_read([(f"{d}/cli.bin", 3 * MiB, 20000)]) == [data[3 * MiB :]]

    ours = blob(MiB + 7, 4)
    client.write_file(f"{d}/py.bin", ours)
    back = tmp_path / "back.bin"
    subprocess.run(admin + ["get", f"{d}/py.bin", str(back)], check=True, capture_output=True)
    assert back.read_bytes() == ours
    ls = subprocess.run(admin + ["ls", d], check=True, capture_output=True, text=True).stdout
    assert "cli.bin" in ls and "py.bin" in ls


def random_ranges(rng, size, n):
    """n (offset, length) pairs: small and large reads, chunk-straddling, some past the end."""
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            off, ln = rng.randrange(size), rng.randrange(1, 64 << 10)
        elif kind < 0.8:  # straddle a 1 MiB chunk boundary
            b = rng.randrange(1, size // MiB + 1) * MiB
            off, ln = max(0, b - rng.randrange(1, 4096)), rng.randrange(1, 8192)
        elif kind < 0.95:
            off, ln = rng.randrange(size), rng.randrange(1, 3 * MiB)
        else:  # at or past the end, or empty
            off, ln = size + rng.randrange(-100, 100), rng.randrange(0, 1000)
        out.append((max(off, 0), ln))
    return out


def test_batch_read_1000_random_ranges(client, d):
    size = 6 * MiB + 4321
    src = [blob(size, 5), blob(size // 2, 6)]
    paths = [f"{d}/s0.bin", f"{d}/s1.bin"]
    for p, s in zip(paths, src):
        client.write_file(p, s)
    rng = random.Random(7)
    ranges = [(rng.randrange(2),) + r for r in random_ranges(rng, size, 1000)]

    # Into bytes, addressing files by path.
    got = client.batch_read([(paths[f], off, ln) for f, off, ln in ranges], depth=64)
    assert len(got) == 1000
    for (f, off, ln), g in zip(ranges, got):
        assert g == src[f][off : off + ln], (f, off, ln)

    # In place into disjoint slices of one arena with guard bytes between them, through File objects.
    files = [client.open(p) for p in paths]
    guard = 16
    total = sum(ln + guard for _, _, ln in ranges) + guard
    arena = bytearray(b"\xa5" * total)
    view, bufs, at = memoryview(arena), [], guard
    for _, _, ln in ranges:
        bufs.append(view[at : at + ln])
        at += ln + guard
    counts = client.batch_read([(files[f], off, ln) for f, off, ln in ranges], bufs)
    at = guard
    for (f, off, ln), n in zip(ranges, counts):
        want = src[f][off : off + ln]
        assert n == len(want)
        assert arena[at : at + n] == want
        assert arena[at - guard : at] == b"\xa5" * guard
        at += ln + guard
    assert arena[-guard:] == b"\xa5" * guard
    del view, bufs
    for f in files:
        f.close()


def test_readinto_buffers(client, d):
    data = blob(2 * MiB + 500, 8)
    client.write_file(f"{d}/r.bin", data)
    with client.open(f"{d}/r.bin") as f:
        ba = bytearray(1000)
        assert f.readinto_at(MiB - 10, ba) == 1000 and ba == data[MiB - 10 : MiB + 990]
        big = bytearray(b"\x01" * 3000)
        mv = memoryview(big)[1000:2000]
        assert f.readinto_at(5, mv) == 1000
        assert big[1000:2000] == data[5:1005]
        assert big[:1000] == b"\x01" * 1000 and big[2000:] == b"\x01" * 1000
        tail = bytearray(b"\x02" * 800)
        assert f.readinto_at(len(data) - 300, tail) == 300
        assert tail[:300] == data[-300:] and tail[300:] == b"\x02" * 500
        assert f.readinto_at(0, bytearray()) == 0
        import array

        arr = array.array("I", [0] * 100)  # 400 bytes of a non-byte buffer
        assert f.readinto_at(4, arr) == 400 and arr.tobytes() == data[4:404]
        with pytest.raises(TypeError):
            f.readinto_at(0, b"read-only bytes")
        ba.append(0)  # the buffer export ended with the call: the bytearray can resize again
        ba.pop()
    try:
        import numpy as np
    except ImportError:
        return
    a = np.zeros(4096, dtype=np.uint8)
    (n,) = client.batch_read([(f"{d}/r.bin", 100, 4096)], [a])
    assert n == 4096 and a.tobytes() == data[100:4196]


def test_errors(client, d):
    with pytest.raises(FileNotFoundError) as e:
        client.stat(f"{d}/missing")
    assert e.value.errno == errno.ENOENT and e.value.filename == f"{d}/missing"
    assert "NotFound" in str(e.value)
    for call in (
        lambda: client.read_file(f"{d}/missing"),
        lambda: client.open(f"{d}/missing"),
        lambda: client.remove(f"{d}/missing"),
        lambda: client.batch_read([(f"{d}/missing", 0, 10)]),
        lambda: t3fs.RecordFile(client, f"{d}/missing"),
        lambda: client.write_file(f"{d}/no/such/dir/f", b"x"),
    ):
        with pytest.raises(FileNotFoundError):
            call()
    client.write_file(f"{d}/f", b"0123456789")
    client.mkdir(f"{d}/sub")
    client.write_file(f"{d}/sub/x", b"")
    with pytest.raises(FileExistsError):
        client.mkdir(f"{d}/sub")
    with pytest.raises(FileExistsError):
        client.mkdir(f"{d}/f", exist_ok=True)  # exists, but not as a directory
    with pytest.raises(NotADirectoryError):
        client.listdir(f"{d}/f")
    with pytest.raises(IsADirectoryError):
        client.read_file(f"{d}/sub")
    with pytest.raises(IsADirectoryError):
        client.batch_read([(f"{d}/sub", 0, 1)])
    with pytest.raises(OSError) as e:
        client.remove(f"{d}/sub")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(ValueError):
        client.stat("relative/path")
    with pytest.raises(ValueError):
        client.remove("/")
    with pytest.raises(ValueError):
        client.open(f"{d}/f", "r")

    # Bad ranges and buffers: rejected before any read.
    for bad in [(f"{d}/f", -1, 5), (f"{d}/f", 0, -5), (f"{d}/f", 0, 1 << 32), (f"{d}/f", (1 << 64) - 2, 5)]:
        with pytest.raises(ValueError):
            client.batch_read([bad])
    with pytest.raises(ValueError):
        client.batch_read([(f"{d}/f", 0)])
    with pytest.raises(ValueError):
        client.batch_read([(f"{d}/f", 0, 10)], [bytearray(9)])  # buffer too small
    with pytest.raises(ValueError):
        client.batch_read([(f"{d}/f", 0, 1)], [bytearray(1), bytearray(1)])  # one buffer per read
    shared = bytearray(10)
    with pytest.raises(ValueError, match="share memory"):
        client.batch_read([(f"{d}/f", 0, 6), (f"{d}/f", 2, 6)], [shared, memoryview(shared)[4:]])
    with pytest.raises(TypeError):
        client.batch_read([(f"{d}/f", 0, 3)], [b"abc"])
    # Reads at or past the end are short, not errors (as pread).
    assert client.batch_read([(f"{d}/f", 8, 10), (f"{d}/f", 10, 5), (f"{d}/f", 99, 5)]) == [b"89", b"", b""]
    with client.open(f"{d}/f") as f:
        with pytest.raises(ValueError):
            f.read_at(-1, 5)
        with pytest.raises(ValueError):
            f.readinto_at(-1, bytearray(5))
        with pytest.raises(ValueError):
            f.seek(-1)
    with pytest.raises(ValueError):
        client.batch_read([(f, 0, 1)])  # a closed File

    # A client that cannot reach a cluster fails with an OSError, and a closed one refuses work.
    with pytest.raises(OSError):
        t3fs.Client("127.0.0.1:1", retry_timeout_ms=500)
    with pytest.raises(PermissionError):
        t3fs.Client(client.mgmtd, token="wrong-token", retry_timeout_ms=2000)
    other = t3fs.Client(client.mgmtd, client.token)
    other.close()
    other.close()
    with pytest.raises(ValueError):
        other.stat("/")


def test_records_and_loader(client, d):
    rng = random.Random(9)
    files, samples = [], []
    for k, count in enumerate([37, 0, 64, 1]):
        s = [b"%d:%d:" % (k, i) + rng.randbytes(rng.choice([0, 5, 100, 3000, 70000])) for i in range(count)]
        p = f"{d}/part-{k}.rec"
        assert t3fs.write_records(client, p, s) == count
        files.append(p)
        samples.extend(s)

    rf = t3fs.RecordFile(client, files[2])
    assert len(rf) == 64 and rf.path == files[2]
    part2 = samples[37 : 37 + 64]
    assert rf[0] == part2[0] and rf[63] == part2[63] and rf[-1] == part2[-1]
    assert rf.lengths == [len(s) for s in part2]
    assert rf.get_many([5, 0, 5, -2]) == [part2[5], part2[0], part2[5], part2[62]]
    with pytest.raises(IndexError):
        rf[64]
    assert len(t3fs.RecordFile(client, files[1])) == 0

    ds = t3fs.RecordDataset(client, files)
    assert len(ds) == len(samples) == 102
    assert [ds[i] for i in range(len(ds))] == samples
    assert ds[-1] == samples[-1]
    assert ds.__getitems__([101, 0, 40]) == [samples[101], samples[0], samples[40]]
    with pytest.raises(IndexError):
        ds[102]
    again = pickle.loads(pickle.dumps(ds))  # carries settings and paths, reconnects on first use
    assert len(again) == 102 and again[37] == samples[37]

    # One epoch covers every sample exactly once, in batches of batch_size (the last shorter).
    ep = t3fs.loader(client, files, batch_size=10, seed=3, epoch=0)
    assert len(ep) == 11
    batches = list(ep)
    assert [len(b) for b in batches] == [10] * 10 + [2]
    flat = [s for b in batches for s in b]
    assert sorted(flat) == sorted(samples)
    assert flat != samples  # shuffled

    sl = t3fs.SampleLoader(client, files, batch_size=10, seed=3)
    assert sl.num_samples == 102 and len(sl) == 11
    assert [s for b in sl.epoch(0) for s in b] == flat  # same (seed, epoch), same order
    other_epoch = [s for b in sl.epoch(1) for s in b]
    assert sorted(other_epoch) == sorted(samples) and other_epoch != flat
    in_order = [s for b in t3fs.loader(client, files, 32, shuffle=False) for s in b]
    assert in_order == samples
    dropped = list(t3fs.loader(client, files, 32, drop_last=True, epoch=4))
    assert [len(b) for b in dropped] == [32, 32, 32]
    assert len({s for b in dropped for s in b}) == 96


def test_corrupt_record_raises_eio(client, d):
    s = [bytes([i]) * (100 + i) for i in range(8)]
    t3fs.write_records(client, f"{d}/good.rec", s)
    image = bytearray(client.read_file(f"{d}/good.rec"))
    at = 32 + sum(len(x) for x in s[:3]) + 7  # inside sample 3 (32-byte header first)
    image[at] ^= 0xFF
    client.write_file(f"{d}/bad.rec", image)
    bad = t3fs.RecordFile(client, f"{d}/bad.rec")
    assert bad[2] == s[2] and bad[4] == s[4]
    with pytest.raises(OSError) as e:
        bad[3]
    assert e.value.errno == errno.EIO and "crc" in str(e.value)
    with pytest.raises(OSError) as e:
        bad.get_many([0, 3])
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        for _ in t3fs.loader(client, [f"{d}/bad.rec"], batch_size=4, shuffle=False):
            pass
    assert e.value.errno == errno.EIO
    # A file that is not a record file at all.
    client.write_file(f"{d}/plain", b"not a record file" * 10)
    with pytest.raises(OSError) as e:
        t3fs.RecordFile(client, f"{d}/plain")
    assert e.value.errno == errno.EIO


def test_threads_run_in_parallel_with_the_gil_released(client, d):
    data = blob(4 * MiB, 10)
    client.write_file(f"{d}/t.bin", data)
    rng = random.Random(11)
    reqs = [(f"{d}/t.bin", rng.randrange(4 * MiB), 256 << 10) for _ in range(300)]
    span = {}

    def reader():
        span["start"] = time.monotonic()
        for _ in range(3):
            got = client.batch_read(reqs)
            assert all(g == data[o : o + n] for (_, o, n), g in zip(reqs, got))
        span["end"] = time.monotonic()

    t = threading.Thread(target=reader)
    t.start()
    ticks = []
    while t.is_alive():
        ticks.append(time.monotonic())
        time.sleep(0.001)
    t.join()
    assert "end" in span, "the reader thread failed"
    inside = [x for x in ticks if span["start"] + 0.05 < x < span["end"] - 0.05]
    if span["end"] - span["start"] > 0.3:
        # Had the call held the GIL, this thread could not have run while it waited.
        assert len(inside) > 10, (len(inside), span)

    results = []
    threads = [threading.Thread(target=lambda: results.append(client.read_file(f"{d}/t.bin"))) for _ in range(6)]
    for x in threads:
        x.start()
    for x in threads:
        x.join()
    assert len(results) == 6 and all(r == data for r in results)


def test_ctrl_c_interrupts_a_waiting_call():
    # Python's own handler, even where SIGINT came ignored (a job started with `&` by a script).
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            t3fs.Client("127.0.0.1:1", retry_timeout_ms=60000)  # would wait a minute for mgmtd
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert time.monotonic() - start < 5


def test_fork_child_connects_its_own_client(client, d, cluster):
    client.write_file(f"{d}/x", b"from the parent")
    t3fs.write_records(client, f"{d}/r.rec", [b"a", b"bc"])
    ds = t3fs.RecordDataset(client, [f"{d}/r.rec"])
    pid = os.fork()
    if pid == 0:  # child: report through the exit code, never return into pytest
        code = 1
        try:
            try:
                client.stat("/")
                code = 2
            except RuntimeError:
                c = t3fs.Client.from_data_dir(cluster)
                ok = c.read_file(f"{d}/x") == b"from the parent" and ds[1] == b"bc"
                code = 0 if ok else 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120  # never hang CI on a stuck child
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish within 120 s")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0, "child: 2 = parent's client usable, 3 = wrong data"
    assert client.read_file(f"{d}/x") == b"from the parent"  # the parent's client still works
