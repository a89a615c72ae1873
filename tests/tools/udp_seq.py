#!/usr/bin/env python3
"""Numbered UDP datagrams, to count what a tunnel delivers once, twice or never.

Subcommands:

  send  send --count datagrams, each an 8-byte big-endian sequence number padded to
        --size bytes, from --bind to --to:--port, paced (--per-ms per millisecond);
        prints `sent=N`.
  recv  print "listening", then receive until --idle seconds pass without a datagram
        (or --timeout in all) and print one line: `received=N unique=U duplicates=D
        highest=H out_of_order=O` (H is -1 when nothing came; out_of_order: datagrams whose number is below one
        received before them).

Standard library only.
"""

import argparse
import socket
import struct
import time


def family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def send(args):
    s = socket.socket(family(args.to), socket.SOCK_DGRAM)
    s.bind((args.bind, 0))
    pad = b"\0" * max(0, args.size - 8)
    for n in range(args.count):
        s.sendto(struct.pack("!Q", n) + pad, (args.to, args.port))
        if n % args.per_ms == args.per_ms - 1:
            time.sleep(0.001)
    print(f"sent={args.count}", flush=True)


def recv(args):
    s = socket.socket(family(args.listen), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((args.listen, args.port))
    print("listening", flush=True)
    seen = set()
    received = duplicates = out_of_order = 0
    highest = -1
    start = time.monotonic()
    s.settimeout(args.idle_first)
    while time.monotonic() - start < args.timeout:
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        s.settimeout(args.idle)
        if len(data) < 8:
            continue
        (n,) = struct.unpack("!Q", data[:8])
        received += 1
        if n in seen:
            duplicates += 1
        seen.add(n)
        if n < highest:
            out_of_order += 1
        highest = max(highest, n)
    print(f"received={received} unique={len(seen)} duplicates={duplicates} "
          f"highest={highest} out_of_order={out_of_order}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bind", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--per-ms", type=int, default=5)
    r = sub.add_parser("recv")
    r.add_argument("--listen", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--idle", type=float, default=1.0)
    r.add_argument("--idle-first", type=float, default=10.0)
    r.add_argument("--timeout", type=float, default=40.0)
    args = ap.parse_args()
    send(args) if args.cmd == "send" else recv(args)


if __name__ == "__main__":
    main()
