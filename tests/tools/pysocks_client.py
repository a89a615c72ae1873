#!/usr/bin/env python3
"""PySocks (Debian's python3-socks) as a real SOCKS5 client, for tests/socks_mesh.rs.

- `http`: CONNECT with rdns=True (the name goes to the proxy, socks5h) to --host:--port,
  `GET --path` over HTTP/1.0, read to the end. Prints `status=CODE bytes=N sha256=HEX`
  of the body.
- `udp`: UDP ASSOCIATE through the proxy (a SOCK_DGRAM socksocket), --count datagrams of
  distinct content to the echo at --host:--port, each answer read back. Prints
  `sent=N echoed=M`; an answer that differs from what was sent is an error.

Exits 0 on success, 1 with a message on stderr otherwise.
"""

import argparse
import hashlib
import socket
import sys

import socks


def proxied(kind, proxy, timeout):
    host, port = proxy.rsplit(":", 1)
    sock = socks.socksocket(socket.AF_INET, kind)
    sock.set_proxy(socks.SOCKS5, host, int(port), rdns=True)
    sock.settimeout(timeout)
    return sock


def http(args):
    sock = proxied(socket.SOCK_STREAM, args.proxy, args.timeout)
    sock.connect((args.host, args.port))
    request = f"GET {args.path} HTTP/1.0\r\nHost: {args.host}\r\n\r\n"
    sock.sendall(request.encode())
    received = bytearray()
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        received += data
    sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "none"
    print(f"status={status} bytes={len(body)} sha256={hashlib.sha256(body).hexdigest()}")


def udp(args):
    sock = proxied(socket.SOCK_DGRAM, args.proxy, args.timeout)
    echoed = 0
    for i in range(args.count):
        payload = f"datagram {i} through the mesh ".encode() * (1 + i % 8)
        sock.sendto(payload, (args.host, args.port))
        data, sender = sock.recvfrom(65535)
        if data != payload:
            sys.exit(f"datagram {i}: {len(data)} bytes came back from {sender}, "
                     f"not the {len(payload)} sent")
        echoed += 1
    sock.close()
    print(f"sent={args.count} echoed={echoed}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["http", "udp"])
    ap.add_argument("--proxy", required=True, help="IP:PORT of the SOCKS5 server")
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    try:
        {"http": http, "udp": udp}[args.mode](args)
    except (OSError, socks.ProxyError) as e:
        sys.exit(f"{args.mode}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
