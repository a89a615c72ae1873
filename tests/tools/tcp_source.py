#!/usr/bin/env python3
"""Send deterministic pseudo-random bytes over one TCP connection and print their digest.

The stream is --bytes long, drawn from Python's seeded Mersenne Twister (the same --seed
gives the same bytes), with --marker written at the start of every 64 KiB block so that a
capture can look for it. Prints one line after the connection is closed cleanly:
`bytes=N sha256=HEX`. Standard library only.
"""

import argparse
import hashlib
import random
import socket

BLOCK = 64 * 1024
CHUNK = 16 * BLOCK


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", help="source address")
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--marker", default="")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    marker = args.marker.encode()
    assert len(marker) < BLOCK
    family = socket.AF_INET6 if ":" in args.connect else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    if args.bind:
        sock.bind((args.bind, 0))
    sock.connect((args.connect, args.port))
    digest = hashlib.sha256()
    left = args.bytes
    while left > 0:
        n = min(CHUNK, left)
        chunk = bytearray(rng.randbytes(n))
        for start in range(0, n, BLOCK):
            end = min(start + len(marker), n)
            chunk[start:end] = marker[: end - start]
        digest.update(chunk)
        sock.sendall(chunk)
        left -= n
    sock.shutdown(socket.SHUT_WR)
    # Wait for the sink to close: everything was read.
    while sock.recv(4096):
        pass
    sock.close()
    print(f"bytes={args.bytes} sha256={digest.hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
