#!/usr/bin/env python3
"""Send crafted UDP datagrams at a skywire node, for the drop-counting tests.

Subcommands:

  raw      send one datagram whose payload is a packet read from a capture file (the
           first record: 4-byte big-endian length, then the bytes; see sniff.py), or
           with --all every record in turn, optionally with its counter (bytes 12..20)
           or route id (bytes 4..8) replaced, through a raw IPv4 socket (IP_HDRINCL)
           with the given source address and port, so the receiving relay's
           previous-hop check sees the real previous hop; --repeat times, at most
           --rate datagrams a second. Says how many of each packet type it sent.
  garbage  send --count datagrams of seeded random bytes and lengths from an ordinary UDP
           socket, paced so the receiver's socket buffer never overflows: random bytes,
           empty datagrams, and well-formed route headers with unknown and with known ids
           (--known-ids; from the wrong previous hop), --per-10ms at a time. Prints how many of each drop reason
           the relay must count.

Prints one line of key=value pairs saying what was sent. Standard library only.
"""

import argparse
import random
import socket
import struct
import time


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def records(path):
    """Every packet in a capture file."""
    out = []
    with open(path, "rb") as f:
        while head := f.read(4):
            (length,) = struct.unpack("!I", head)
            packet = bytearray(f.read(length))
            assert len(packet) == length, "truncated capture"
            out.append(packet)
    return out


def raw(args):
    packets = records(args.capture)
    assert packets and len(packets[0]) >= 8, "no captured packet"
    if not args.all:
        packets = packets[:1]
    for packet in packets:
        if args.counter is not None:
            packet[12:20] = struct.pack("!Q", args.counter)
        if args.route_id is not None:
            packet[4:8] = struct.pack("!I", args.route_id)
    src, sport = addr(args.src)
    dst, dport = addr(args.dst)
    datagrams = []
    for packet in packets:
        udp = struct.pack("!HHHH", sport, dport, 8 + len(packet), 0) + bytes(packet)
        # Checksum 0 (kernel fills it), identification 0 (kernel fills it), no fragments.
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
            socket.inet_aton(src), socket.inet_aton(dst),
        )
        datagrams.append(ip + udp)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    types = {}
    sent = 0
    started = time.monotonic()
    for _ in range(args.repeat):
        for datagram, packet in zip(datagrams, packets):
            s.sendto(datagram, (dst, 0))
            types[packet[1]] = types.get(packet[1], 0) + 1
            sent += 1
            if args.rate and sent % 100 == 0:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    route_id = struct.unpack("!I", packets[0][4:8])[0]
    counter = struct.unpack("!Q", packets[0][12:20])[0] if len(packets[0]) >= 20 else 0
    kinds = " ".join(f"type{t}={n}" for t, n in sorted(types.items()))
    print(f"sent={sent} bytes={len(packets[0])} route_id={route_id} counter={counter} {kinds}",
          flush=True)


def classify(datagram, known_ids):
    """What a relay must count this datagram as (dataplane/src/route/forward.rs; link probes,
    types 8 and 9, are handled before it: docs/PROTOCOL.md section 3.1)."""
    if len(datagram) >= 2 and datagram[1] in (8, 9):
        if (len(datagram) == 16 and datagram[0] == 1
                and datagram[2:8] == b"\0\0\0\0\0\0"):
            return "probe"  # well-formed: answered, not dropped
        return "bad_probe"
    if (len(datagram) < 8 or datagram[0] != 1 or datagram[1] not in range(1, 8)
            or datagram[2:4] != b"\0\0" or datagram[4:8] == b"\0\0\0\0"):
        return "malformed"
    if struct.unpack("!I", datagram[4:8])[0] in known_ids:
        # From this socket's port, never the rule's previous hop.
        return "wrong_previous_hop"
    return "unknown_route"


def garbage(args):
    """Four kinds, in turn: random bytes (sometimes none at all), random bytes again, a
    well-formed route header with a random id, one with an id the relay knows."""
    rng = random.Random(args.seed)
    known_ids = [int(i) for i in args.known_ids.split(",") if i]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = addr(args.dst)
    counts = {"malformed": 0, "unknown_route": 0, "wrong_previous_hop": 0, "bad_probe": 0,
              "probe": 0}
    for i in range(args.count):
        kind = i % 4
        if kind == 0 and i % 100 == 0:
            datagram = b""
        elif kind in (0, 1):
            datagram = rng.randbytes(rng.randint(1, args.max_len))
        else:
            if kind == 3 and known_ids:
                route_id = rng.choice(known_ids)
            else:
                route_id = rng.randint(1, 2**32 - 1)
            header = struct.pack("!BBHI", 1, rng.randint(1, 5), 0, route_id)
            datagram = header + rng.randbytes(rng.randint(0, args.max_len - 8))
        counts[classify(datagram, known_ids)] += 1
        s.sendto(datagram, dst)
        if i % args.per_10ms == args.per_10ms - 1:
            time.sleep(0.01)
    print(f"sent={args.count} " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("raw")
    r.add_argument("--capture", required=True)
    r.add_argument("--src", required=True, help="IPv4:PORT to send from (spoofed)")
    r.add_argument("--dst", required=True, help="IPv4:PORT")
    r.add_argument("--counter", type=int)
    r.add_argument("--route-id", type=int)
    r.add_argument("--repeat", type=int, default=1)
    r.add_argument("--all", action="store_true", help="every packet of the capture")
    r.add_argument("--rate", type=int, default=0, help="datagrams a second at most")
    g = sub.add_parser("garbage")
    g.add_argument("--dst", required=True)
    g.add_argument("--count", type=int, default=1000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--max-len", type=int, default=1400)
    g.add_argument("--per-10ms", type=int, default=50,
                   help="datagrams sent before each 10 ms pause")
    g.add_argument("--known-ids", default="",
                   help="route ids the relay has rules for, comma separated")
    args = ap.parse_args()
    raw(args) if args.cmd == "raw" else garbage(args)


if __name__ == "__main__":
    main()
