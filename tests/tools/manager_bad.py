#!/usr/bin/env python3
"""Feed a skywire manager bad input, one connection per case, and say what it did.

Cases: random garbage; a length field of 4 GiB; a frame cut short by closing; an AUTH
claiming another node's key with a made-up proof; an AUTH with a body that is not JSON;
a peer trickling one byte of a frame every 2 s (`trickle`: the verdict carries the
seconds until the manager closed it).
For each, prints `CASE=closed` when the manager closed the connection (with any error
reply it sent before: `CASE=refused:KIND`), or `CASE=open` if it was still open after
--wait seconds. Standard library only.
"""

import argparse
import json
import os
import socket
import struct
import time


def frame(kind, rid, body):
    raw = b"" if body is None else json.dumps(body).encode()
    return struct.pack(">IBBQ", 10 + len(raw), 1, kind, rid) + raw


def read_frames(sock, wait):
    """Everything the manager sends until it closes (or `wait` passes): (frames, closed)."""
    sock.settimeout(wait)
    data = b""
    closed = False
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    frames = []
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        if len(data) < 4 + n:
            break
        body = data[14 : 4 + n]
        frames.append((data[5], json.loads(body) if body else None))
        data = data[4 + n :]
    return frames, closed


def verdict(frames, closed):
    kinds = [
        b["error"]["kind"]
        for _, b in frames
        if isinstance(b, dict) and "error" in b
    ]
    if not closed:
        return "open"
    return "refused:" + kinds[-1] if kinds else "closed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--victim", required=True, help="a registered node's public key")
    ap.add_argument("--wait", type=float, default=3.0)
    args = ap.parse_args()

    def conn():
        s = socket.create_connection((args.connect, args.port), timeout=5)
        return s

    cases = {}
    s = conn()
    s.sendall(os.urandom(64))
    cases["garbage"] = verdict(*read_frames(s, args.wait))
    s.close()

    s = conn()
    s.sendall(struct.pack(">I", 0xFFFFFFFF) + b"\x01\x02" + b"x" * 100)
    cases["oversized"] = verdict(*read_frames(s, args.wait))
    s.close()

    s = conn()
    full = frame(0x02, 1, {"node": args.victim, "nonce": "00" * 32, "proof": "00" * 32})
    s.sendall(full[: len(full) // 2])
    s.shutdown(socket.SHUT_WR)
    cases["truncated"] = verdict(*read_frames(s, args.wait))
    s.close()

    s = conn()
    s.sendall(frame(0x02, 1, {"node": args.victim, "nonce": "11" * 32, "proof": "22" * 32}))
    cases["impostor"] = verdict(*read_frames(s, args.wait))
    s.close()

    s = conn()
    bad = b"{not json"
    s.sendall(struct.pack(">IBBQ", 10 + len(bad), 1, 0x02, 1) + bad)
    cases["not_json"] = verdict(*read_frames(s, args.wait))
    s.close()

    s = conn()
    started = time.monotonic()
    closed = False
    for byte in frame(0x02, 1, {"node": args.victim})[:12]:
        try:
            s.sendall(bytes([byte]))
            s.settimeout(2.0)
            if s.recv(65536) == b"":
                closed = True
                break
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
    cases["trickle"] = f"closed:{time.monotonic() - started:.0f}s" if closed else "open"
    s.close()

    print(" ".join(f"{k}={v}" for k, v in cases.items()), flush=True)


if __name__ == "__main__":
    main()
