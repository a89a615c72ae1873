#!/usr/bin/env python3
"""Capture every frame on some interfaces with AF_PACKET and look for a marker in them.

Used by the network-namespace tests to prove what crosses a link: run it inside a
namespace, wait for the line "ready" on standard output, make traffic, then close its
standard input; it prints a line per interface and a last line, then exits:

    iface=IFACE frames=N bytes=N marker_frames=N kernel_drops=N
    captured=N

marker_frames counts the frames holding the marker bytes anywhere; kernel_drops is what
the kernel could not queue to us (PACKET_STATISTICS), so a zero there means every frame
was inspected. With --capture FILE, the UDP payloads of the first --capture-count
skywire packets of the --capture-types (type byte; data, 3, by default; comma separated)
sent from --capture-src to --capture-dport are written to FILE, each as a 4-byte
big-endian length and the bytes (`captured` says how many).
Ethernet framing is assumed for capture (veth); a TUN device gives bare IP packets, which
only the marker count looks at. Standard library only.
"""

import argparse
import os
import select
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33


def open_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        # Root may go past rmem_max: a burst must not overflow the queue while Python catches up.
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    s.bind((iface, 0))
    s.setblocking(False)
    return s


def kernel_drops(s):
    # struct tpacket_stats { unsigned int tp_packets, tp_drops; }; reading resets it.
    raw = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return struct.unpack("II", raw)[1]


def route_packet(frame, src, dport, types):
    """The UDP payload of a skywire packet of one of types from src to dport in an
    Ethernet frame."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 17 or ip[12:16] != src:
        return None
    udp = ip[ihl:]
    if len(udp) < 8 or struct.unpack("!H", udp[2:4])[0] != dport:
        return None
    length = struct.unpack("!H", udp[4:6])[0]
    payload = udp[8:length]
    if len(payload) < 2 or payload[1] not in types:
        return None
    return payload


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iface", action="append", required=True)
    ap.add_argument("--marker", required=True)
    ap.add_argument("--capture")
    ap.add_argument("--capture-src", default="198.18.1.1")
    ap.add_argument("--capture-dport", type=int, default=6000)
    ap.add_argument("--capture-count", type=int, default=1)
    ap.add_argument("--capture-types", default="3")
    args = ap.parse_args()

    marker = args.marker.encode()
    socks = {open_socket(i): i for i in args.iface}
    stats = {i: {"frames": 0, "bytes": 0, "marker_frames": 0, "kernel_drops": 0}
             for i in args.iface}
    capture_src = socket.inet_aton(args.capture_src)
    capture_types = {int(t) for t in args.capture_types.split(",")}
    captured = []
    stdin = sys.stdin.buffer
    print("ready", flush=True)

    def drain(sock):
        """Inspect every frame queued on sock."""
        st = stats[socks[sock]]
        while True:
            try:
                frame = sock.recv(1 << 17)
            except BlockingIOError:
                return
            st["frames"] += 1
            st["bytes"] += len(frame)
            if marker in frame:
                st["marker_frames"] += 1
            if args.capture and len(captured) < args.capture_count:
                p = route_packet(frame, capture_src, args.capture_dport, capture_types)
                if p is not None:
                    captured.append(p)

    done = False
    while not done:
        readable, _, _ = select.select(list(socks) + [stdin], [], [], 1.0)
        for r in readable:
            if r is stdin:
                done = not os.read(stdin.fileno(), 4096)
            else:
                drain(r)
    # Frames queued before stdin closed still count.
    for s in socks:
        drain(s)
        stats[socks[s]]["kernel_drops"] = kernel_drops(s)
    if args.capture:
        with open(args.capture, "wb") as f:
            for p in captured:
                f.write(struct.pack("!I", len(p)) + p)
    for iface, st in stats.items():
        print(f"iface={iface} " + " ".join(f"{k}={v}" for k, v in st.items()))
    print(f"captured={len(captured)}", flush=True)


if __name__ == "__main__":
    main()
