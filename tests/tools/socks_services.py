#!/usr/bin/env python3
"""Services behind the SOCKS exit of tests/socks_mesh.rs: UDP echo, TCP echo, drain-then-answer.

- UDP echo on --udp-echo: every datagram goes back to its sender.
- TCP echo on --tcp-echo: whatever a connection sends comes back; one thread serves every
  connection (selectors), so thousands may be open at once.
- Drain on --drain: a connection is read to its end (the client's FIN), then answered
  with --answer bytes: the line `received=N sha256=HEX` of what arrived, padded with
  `.` to the full length, and the connection is closed. A client that half-closes and
  reads the whole answer has seen both directions of a half-closed connection work.

Prints "ready" once every socket listens, then serves until killed. Raises its soft limit
of open files to the hard one. Standard library only.
"""

import argparse
import hashlib
import resource
import selectors
import socket
import threading


def udp_echo(sock):
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def tcp_echo(server):
    sel = selectors.DefaultSelector()
    server.setblocking(False)
    sel.register(server, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is server:
                while True:
                    try:
                        conn, _ = server.accept()
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                continue
            # Echoed pieces are small (the test sends 16 bytes); a full send buffer only
            # delays this one connection.
            sock.setblocking(True)
            try:
                sock.sendall(data)
            except OSError:
                pass
            sock.setblocking(False)


def drain_one(conn, answer_len):
    with conn:
        digest = hashlib.sha256()
        total = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            digest.update(data)
            total += len(data)
        head = f"received={total} sha256={digest.hexdigest()}\n".encode()
        conn.sendall(head + b"." * max(0, answer_len - len(head)))


def drain(server, answer_len):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=drain_one, args=(conn, answer_len), daemon=True).start()


def listener(kind, address, port, backlog=4096):
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(backlog)
    return sock


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", required=True, help="IPv4 address of every service")
    ap.add_argument("--udp-echo", type=int, required=True, help="UDP echo port")
    ap.add_argument("--tcp-echo", type=int, required=True, help="TCP echo port")
    ap.add_argument("--drain", type=int, required=True, help="drain-then-answer port")
    ap.add_argument("--answer", type=int, default=1 << 20, help="bytes of the drain's answer")
    args = ap.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    threads = [
        (udp_echo, (listener(socket.SOCK_DGRAM, args.bind, args.udp_echo),)),
        (tcp_echo, (listener(socket.SOCK_STREAM, args.bind, args.tcp_echo),)),
        (drain, (listener(socket.SOCK_STREAM, args.bind, args.drain), args.answer)),
    ]
    for target, targs in threads:
        threading.Thread(target=target, args=targs, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
