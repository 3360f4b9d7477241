#!/usr/bin/env python3
"""Check a netconsole capture of the netconsole-markers scenario.

Usage: lab/check_capture.py CAPTURE MARKERS [extended|plain]
Checks that every "ncu-marker NNNN of MMMM" line and the
"Kernel panic - not syncing" line arrived; for extended captures also reports
sequence gaps, ncfrag fragments and continuation ('c') records.
Exit status 0 when complete.
"""
import re
import sys


def load(path):
    out = []
    with open(path, encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if parts:
                out.append(bytes.fromhex(parts[-1]))
    return out


def main() -> int:
    path, markers = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "extended"
    dgrams = load(path)
    blob = b"\n".join(dgrams)
    ok = True
    missing = [i for i in range(1, markers + 1)
               if f"ncu-marker {i:04d} of {markers:04d}".encode() not in blob]
    if missing:
        ok = False
        print(f"missing markers: {missing}")
    if b"Kernel panic - not syncing" not in blob:
        ok = False
        print("missing: Kernel panic - not syncing")
    info = [f"{len(dgrams)} datagrams", f"{sum(map(len, dgrams))} bytes",
            f"max {max(map(len, dgrams), default=0)} bytes"]
    if mode == "extended":
        seqs, frags, conts = [], 0, 0
        for d in dgrams:
            m = re.match(rb"(\d+),(\d+),(\d+),([^;,]*)([^;]*);", d)
            if not m:
                ok = False
                print(f"not an extended record: {d[:60]!r}")
                continue
            seqs.append(int(m.group(2)))
            if b"ncfrag=" in m.group(5):
                frags += 1
            if m.group(4).startswith(b"c"):
                conts += 1
        uniq = sorted(set(seqs))
        gaps = [s for s in range(uniq[0], uniq[-1] + 1) if s not in set(uniq)] if uniq else []
        info += [f"seq {uniq[0] if uniq else '-'}..{uniq[-1] if uniq else '-'}",
                 f"{len(gaps)} seq gaps", f"{frags} ncfrag datagrams", f"{conts} cont records"]
    print(("OK: " if ok else "INCOMPLETE: ") + ", ".join(info))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
