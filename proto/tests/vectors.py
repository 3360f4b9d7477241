#!/usr/bin/env python3
"""Independent encoder for PROTOCOL.md's test vectors (stdlib only).

Prints each vector as hex; proto/src/wire.rs asserts the same bytes. Having two
implementations of the layout (this one written from PROTOCOL.md) catches a spec
and code that drift apart.
"""
import struct
import zlib

SESSION = 0x0123456789ABCDEF
T = 1_700_000_000_000_000


def datagram(kind, flags, seq, counter, payload, session=SESSION, sent_at=T):
    head = b"NCU" + bytes([1, kind, flags]) + struct.pack(">HQQQI", len(payload), session, seq, sent_at, counter)
    crc = zlib.crc32(head + payload) & 0xFFFFFFFF
    return head + struct.pack(">I", crc) + payload


def name(s):
    return bytes([len(s)]) + s.encode()


# One /dev/kmsg record as ncu-send --kmsg sends it: records 1100-1199 were
# overwritten in the ring before it read them, 3 were left out by --kmsg-level.
KMSG_RECORD = (
    b"6,1204,5140900,-,ncu_overwritten=1100-1199,ncu_filtered=3;"
    b"usb 1-1: new device\n SUBSYSTEM=usb\n"
)

VECTORS = {
    "DATA_TWO_LINES": datagram(2, 0, 1, 1, b"\x00\x00\x02hi" + b"\x01\x00\x03ok!"),
    "HELLO": datagram(1, 0, 1, 0, struct.pack(">IQ", 1337, T) + name("web") + struct.pack(">H", 5) + b"stdin"),
    "FRAGMENT": datagram(2, 2, 7, 9, struct.pack(">IIB", 4, 10, 0) + b"abc"),
    "HEARTBEAT": datagram(3, 0, 42, 11, name("web")),
    "END": datagram(4, 0, 42, 12, name("web") + bytes([2]) + struct.pack(">i", 3)),
    "COMPANION": datagram(7, 0, 42, 13, bytes([4, 10, 0, 0, 7]) + struct.pack(">H", 6665)),
    "KMSG": datagram(2, 0, 5, 3, b"\x04" + struct.pack(">H", len(KMSG_RECORD)) + KMSG_RECORD),
}

if __name__ == "__main__":
    for key, value in VECTORS.items():
        print(f"{key} {value.hex()}")
