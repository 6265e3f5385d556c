"""Python client for t3fs, a distributed parallel file system for AI clusters.

The classes and functions come from the Rust extension (``t3fs.t3fs``, built from the
``t3fs-python`` crate over the native client); this file adds :class:`RecordDataset`, a
map-style dataset in the PyTorch protocol.

    import t3fs
    client = t3fs.Client("10.0.0.1:8000", token="...")   # or t3fs.Client.from_data_dir(dir)
    client.write_file("/data/a.bin", b"...")
    data = client.read_file("/data/a.bin")
    parts = client.batch_read([("/data/a.bin", 0, 4096), ("/data/a.bin", 8192, 4096)])

Every call blocks with the GIL released. Failures raise ``OSError`` subclasses by errno
(``FileNotFoundError`` for a missing path, ...); bad arguments raise ``ValueError``/``TypeError``.
"""

import bisect
import os

from .t3fs import (  # noqa: F401  (re-exported API)
    Client,
    Epoch,
    File,
    RecordFile,
    SampleLoader,
    __version__,
    loader,
    write_records,
)

__all__ = [
    "Client",
    "Epoch",
    "File",
    "RecordDataset",
    "RecordFile",
    "SampleLoader",
    "loader",
    "write_records",
]


class RecordDataset:
    """Samples of several record files as one map-style dataset (PyTorch protocol).

    ``len(ds)`` is the total number of samples; ``ds[i]`` is sample ``i`` of the concatenation
    of the files, in the order of ``paths`` (CRC-checked ``bytes``); ``ds.__getitems__(indices)``
    reads several samples concurrently (PyTorch's ``DataLoader`` uses it for batches).

    It works with ``torch.utils.data.DataLoader(ds, num_workers=N)``: a worker (a forked or
    spawned process) cannot use the parent's connection, so the dataset reconnects with the same
    mgmtd address, token and identity the first time it is used in a new process, and pickling
    it carries only those settings and the paths. torch itself is not needed.
    """

    def __init__(self, client, paths):
        self._settings = (client.mgmtd, client.token, client.uid, client.gid, client.retry_timeout_ms)
        self._paths = [os.fspath(p) for p in paths]
        self._attach(client)

    def _attach(self, client):
        self._pid = os.getpid()
        self._client = client
        self._files = [RecordFile(client, p) for p in self._paths]
        self._starts = [0]
        for f in self._files:
            self._starts.append(self._starts[-1] + len(f))

    def _ready(self):
        if self._client is None or self._pid != os.getpid():
            mgmtd, token, uid, gid, retry = self._settings
            self._attach(Client(mgmtd, token, uid=uid, gid=gid, retry_timeout_ms=retry))

    def __getstate__(self):
        return {"settings": self._settings, "paths": self._paths, "starts": self._starts}

    def __setstate__(self, state):
        self._settings = state["settings"]
        self._paths = state["paths"]
        self._starts = state["starts"]
        self._client = None
        self._files = None
        self._pid = None

    def __len__(self):
        return self._starts[-1]

    def _locate(self, i):
        n = len(self)
        if not isinstance(i, int):
            i = i.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index out of range ({n} samples)")
        f = bisect.bisect_right(self._starts, i) - 1
        return f, i - self._starts[f]

    def __getitem__(self, i):
        self._ready()
        f, j = self._locate(i)
        return self._files[f][j]

    def __getitems__(self, indices):
        self._ready()
        where = [self._locate(i) for i in indices]
        by_file = {}
        for pos, (f, j) in enumerate(where):
            by_file.setdefault(f, []).append((pos, j))
        out = [None] * len(where)
        for f, items in by_file.items():
            data = self._files[f].get_many([j for _, j in items])
            for (pos, _), d in zip(items, data):
                out[pos] = d
        return out

    @property
    def paths(self):
        return list(self._paths)

    def __repr__(self):
        return f"<t3fs.RecordDataset files={len(self._paths)} samples={len(self)}>"
