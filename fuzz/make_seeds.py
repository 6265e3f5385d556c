#!/usr/bin/env python3
"""Writes seed frames for the bulk_frame fuzz target into seeds/bulk_frame/ (hand-encoded protobuf)."""
import os, struct

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload

def read_chunk(target, off, length):
    return field(1, 0, target) + field(2, 2, bytes(range(16))) + field(3, 0, off) + field(4, 0, length)

def frame(header, payload=b"", flags=0):
    return struct.pack("<HBBII", 0x3354, 1, flags, len(header), len(payload)) + header + payload

req_read = field(1, 2, b"req") + field(2, 2, b"token") + field(3, 2, read_chunk(101, 0, 4096))
upd = field(1, 0, 1) + field(2, 0, 1) + field(3, 0, 101) + field(4, 2, bytes(16)) + field(5, 0, 1) \
    + field(6, 0, 0) + field(8, 0, 0x1234) + field(11, 2, b"client") + field(12, 0, 3) + field(13, 0, 7)
req_upd = field(1, 2, b"req") + field(4, 2, upd)
batch = b"".join(field(1, 2, read_chunk(101, i * 100, 100)) for i in range(4))
req_batch = field(1, 2, b"req") + field(5, 2, batch)
rdma_call = field(1, 2, req_read) + field(2, 2, field(1, 0, 4096) + field(2, 0, 7) + field(3, 0, 0)) \
    + field(3, 2, field(1, 0, 8192) + field(2, 0, 8) + field(3, 0, 4096))
endpoint = field(1, 0, 1) + field(2, 0, 77) + field(3, 0, 5) + field(4, 2, bytes(16))
seeds = {
    "read": frame(req_read),
    "update": frame(req_upd, b"hello world"),
    "batch": frame(req_batch),
    "rdma_call": frame(rdma_call, flags=2),
    "rdma_connect": frame(endpoint, flags=1),
}
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "bulk_frame")
os.makedirs(d, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
