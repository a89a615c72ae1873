#!/usr/bin/env python3
"""A complete skywire signal client (docs/SIGNAL.md): register, answer Top, Ping, Shutdown.

Run by viscript, it finds the server in SIGNAL_SERVER_ADDRESS and its id in
SIGNAL_CLIENT_ID. Optional argument: MiB of memory to hold (for testing `ru`)."""
import json, os, socket, struct, sys

def send(sock, op, req, body=None):
    data = b"" if body is None else json.dumps(body).encode()
    sock.sendall(struct.pack(">IBBQ", 10 + len(data), 1, op, req) + data)

def recv_exact(f, n):
    data = f.read(n)
    if len(data) < n: sys.exit(0)  # server gone: a real client would reconnect with backoff
    return data

ballast = b"\x01" * (int(sys.argv[1]) << 20) if len(sys.argv) > 1 else b""
host, port = os.environ.get("SIGNAL_SERVER_ADDRESS", "127.0.0.1:7999").rsplit(":", 1)
sock = socket.create_connection((host.strip("[]"), int(port)))
f = sock.makefile("rb")
send(sock, 0, 1, {"Id": int(os.environ.get("SIGNAL_CLIENT_ID", "1")), "Pid": os.getpid()})
print("signal client registering", flush=True)
while True:
    length, version, op, req = struct.unpack(">IBBQ", recv_exact(f, 14))
    body = recv_exact(f, length - 10)
    if op & 0x80: continue                                      # the echo of our Reg
    if op == 0:                                                 # Top: our own figures
        rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        send(sock, op | 0x80, req, {"Pid": os.getpid(), "RssBytes": rss, "Ballast": len(ballast)})
    elif op == 1: send(sock, op | 0x80, req)                    # Ping: empty reply
    elif op == 2:                                               # Shutdown: reply, then exit
        send(sock, op | 0x80, req, {"Pid": os.getpid()})
        print("signal client shutting down", flush=True); sys.exit(0)
    else: send(sock, op | 0x80, req, {"Error": "unknown op"})
