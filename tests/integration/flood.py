"""A handshake flood: TCP connections that never finish their Noise handshake.

Usage: python flood.py HOST PORT [--rate N] [--drip-every K] [--seconds S]. Opens
``rate`` connections a second and keeps them open; every ``drip-every``-th one sends
one byte a second (never a whole Noise message), the others send nothing. Prints
"flooding" once the first connection is open and a summary line at the end. A
separate process, so the flood does not share the test's interpreter and GIL.
"""

from __future__ import annotations

import argparse
import socket
import time

MAX_QUIET = 400


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--drip-every", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    quiet: list[socket.socket] = []
    drips: list[socket.socket] = []
    opened = failed = 0
    start = time.monotonic()
    next_drip = start + 1.0
    while (now := time.monotonic()) < start + args.seconds:
        due = int((now - start) * args.rate) + 1
        while opened < due:
            opened += 1
            try:
                sock = socket.create_connection((args.host, args.port), timeout=1.0)
            except OSError:
                failed += 1
                continue
            (drips if opened % args.drip_every == 0 else quiet).append(sock)
            if len(quiet) > MAX_QUIET:  # bound our file descriptors; the server let go long ago
                quiet.pop(0).close()
            if opened == 1:
                print("flooding", flush=True)
        if now >= next_drip:
            next_drip += 1.0
            for sock in list(drips):
                try:
                    sock.send(b"\x01")  # a length prefix of 257 (0x0101), one byte at a time
                except OSError:  # the server closed it: forget it
                    drips.remove(sock)
                    sock.close()
        time.sleep(max(0.0, min(start + (opened / args.rate), next_drip) - time.monotonic()))
    for sock in quiet + drips:
        sock.close()
    print(f"opened {opened} connections, {failed} failed", flush=True)


if __name__ == "__main__":
    main()
