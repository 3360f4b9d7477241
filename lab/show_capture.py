#!/usr/bin/env python3
"""Print a capture file of udp_capture.py (or a fixture .hex file) readably.

Usage: lab/show_capture.py FILE [FILE...]
One line per datagram: "<index> <len> <source> <text>", where the text is
shown with Python escapes for bytes outside printable ASCII.
"""
import sys


def main() -> int:
    for path in sys.argv[1:]:
        with open(path, encoding="ascii") as f:
            for i, line in enumerate(f):
                parts = line.split()
                if not parts:
                    continue
                src, hx = (parts[0], parts[1]) if len(parts) > 1 else ("-", parts[0])
                data = bytes.fromhex(hx)
                text = data.decode("latin-1").encode("unicode_escape").decode("ascii")
                print(f"{i:4d} {len(data):4d} {src} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
