#!/usr/bin/env python3
"""Capture UDP datagrams to a file, one per line: "<src-ip>:<src-port> <hex>".

Usage: lab/udp_capture.py PORT OUTFILE [IDLE_TIMEOUT_S [FIRST_TIMEOUT_S]]

Listens on 127.0.0.1:PORT (PORT 0: any free port) (qemu user networking delivers the guest's packets
for 10.0.2.2 there). Stops IDLE_TIMEOUT_S (default 5) seconds after the last
datagram, or FIRST_TIMEOUT_S (default 120) seconds if none arrives at all.
Prints "listening PORT" on stdout once bound, and a count on stderr at the end.
Each line is flushed as it is written.
"""
import socket
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    out = sys.argv[2]
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    first = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    bind = "127.0.0.1"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((bind, port))
    print(f"listening {s.getsockname()[1]}", flush=True)
    n = 0
    with open(out, "w", encoding="ascii") as f:
        s.settimeout(first)
        while True:
            try:
                data, addr = s.recvfrom(65535)
            except socket.timeout:
                break
            f.write(f"{addr[0]}:{addr[1]} {data.hex()}\n")
            f.flush()
            n += 1
            s.settimeout(idle)
    print(f"udp_capture: {n} datagrams to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
