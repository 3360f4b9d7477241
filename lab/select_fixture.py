#!/usr/bin/env python3
"""Select datagrams from a udp_capture.py capture into a fixture file.

Usage: lab/select_fixture.py CAPTURE OUT RULE [RULE...]
Writes the union of the selected datagrams, in capture order, one per line
as lowercase hex (no source address). Rules:
  head:N          the first N datagrams
  dict:N          the first N extended records with a dictionary ("\\n KEY=")
  gap:N           around the first N gaps in extended sequence numbers
                  (the datagram before and after each gap)
  level:L:N       the first N extended records of level L (e.g. 7 = debug)
  cont:N          the first N extended continuation records ('c' flag),
                  with the datagram before the first one
  lastcont:N      the last N continuation records and the datagram after
  from:TEXT       from the first datagram containing TEXT to the end
  span:TEXT:N     N datagrams starting at the first one containing TEXT
  boots:H:T       for each boot (extended seq falls back): its first H and
                  last T datagrams
"""
import re
import sys

EXT = re.compile(rb"(\d+),(\d+),(\d+),([^;,]*)([^;]*);")


def ext(d):
    m = EXT.match(d)
    if not m:
        return None
    return {"level": int(m.group(1)) & 7, "seq": int(m.group(2)),
            "cont": m.group(4).startswith(b"c"), "body": d[m.end():]}


def first_index(dgrams, text):
    for i, d in enumerate(dgrams):
        if text in d:
            return i
    raise SystemExit(f"select_fixture: no datagram contains {text!r}")


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    src, out, rules = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(src, encoding="ascii") as f:
        dgrams = [bytes.fromhex(line.split()[-1]) for line in f if line.strip()]
    recs = [ext(d) for d in dgrams]
    pick = set()
    for rule in rules:
        kind, _, arg = rule.partition(":")
        if kind == "head":
            pick.update(range(min(int(arg), len(dgrams))))
        elif kind == "dict":
            hits = [i for i, r in enumerate(recs) if r and re.search(rb"\n [A-Z_]+=", r["body"])]
            pick.update(hits[: int(arg)])
        elif kind == "gap":
            n = 0
            for i in range(1, len(recs)):
                a, b = recs[i - 1], recs[i]
                if a and b and b["seq"] > a["seq"] + 1:
                    pick.update((i - 1, i))
                    n += 1
                    if n >= int(arg):
                        break
        elif kind == "level":
            lvl, n = (int(x) for x in arg.split(":"))
            hits = [i for i, r in enumerate(recs) if r and r["level"] == lvl]
            pick.update(hits[:n])
        elif kind == "cont":
            hits = [i for i, r in enumerate(recs) if r and r["cont"]][: int(arg)]
            if hits:
                pick.update(hits)
                pick.add(max(hits[0] - 1, 0))
        elif kind == "lastcont":
            hits = [i for i, r in enumerate(recs) if r and r["cont"]][-int(arg):]
            if hits:
                pick.update(hits)
                pick.add(min(hits[-1] + 1, len(dgrams) - 1))
        elif kind == "from":
            pick.update(range(first_index(dgrams, arg.encode()), len(dgrams)))
        elif kind == "span":
            text, _, n = arg.rpartition(":")
            i = first_index(dgrams, text.encode())
            pick.update(range(i, min(i + int(n), len(dgrams))))
        elif kind == "boots":
            h, t = (int(x) for x in arg.split(":"))
            starts = [0] + [i for i in range(1, len(recs))
                            if recs[i] and recs[i - 1] and recs[i]["seq"] < recs[i - 1]["seq"]]
            ends = starts[1:] + [len(dgrams)]
            for s, e in zip(starts, ends):
                pick.update(range(s, min(s + h, e)))
                pick.update(range(max(e - t, s), e))
        else:
            raise SystemExit(f"select_fixture: unknown rule {rule}")
    with open(out, "w", encoding="ascii") as f:
        for i in sorted(pick):
            f.write(dgrams[i].hex() + "\n")
    print(f"select_fixture: {len(pick)} of {len(dgrams)} datagrams to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
