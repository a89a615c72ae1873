#!/usr/bin/env python3
"""Accept one TCP connection, read it to the end, and print what arrived.

Prints "listening" once the socket listens, then, after the peer closes, one line:
`bytes=N sha256=HEX`. Used with tcp_source.py to check a transfer end to end.
Standard library only.
"""

import argparse
import hashlib
import socket


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="address to listen on (IPv4 or IPv6)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds without data before giving up")
    args = ap.parse_args()

    family = socket.AF_INET6 if ":" in args.listen else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.listen, args.port))
    server.listen(1)
    server.settimeout(args.timeout)
    print("listening", flush=True)
    conn, _ = server.accept()
    conn.settimeout(args.timeout)
    digest = hashlib.sha256()
    total = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        digest.update(view[:n])
        total += n
    conn.close()
    print(f"bytes={total} sha256={digest.hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
