#!/usr/bin/env python3
"""Services of the VPN tests' "internet" and the exit's own networks (tests/netns/vpn.rs).

    vpn_services.py internet --web IP [--web IP] --dns IP [--dns IP] --dns-log FILE
    vpn_services.py named --name NAME --listen IP:PORT [--listen [IPV6]:PORT ...]

`internet` (one process, in namespace inet):
- HTTP on port 80 of every --web address:
    GET /ip                   the caller's address, as text (no newline)
    POST /sha256              the hex SHA-256 of the request body
    GET /blob?size=N&seed=S   N bytes (N may end in K, M or G: 1024-based), the same for
                              the same N and S: 1 MiB chunk i is Python's
                              random.Random(f"{S}:{i}").randbytes(1 MiB), cut to N
    GET /blob-sha256?size=N&seed=S   the hex SHA-256 of those bytes, computed here
- UDP echo on port 7 of every --web address: a datagram P comes back as
  "<source ip> " + P.
- A DNS stub on port 53 (UDP) of every --dns address: A and AAAA queries for names under
  `.test` are answered with the first IPv4 and the first IPv6 --web address (TTL 60);
  other types under `.test` get no answer (NOERROR), other names NXDOMAIN. Every query
  is logged to --dns-log as the line "<source ip> <name> <type number>".

`named`: HTTP on every --listen address answering every GET with NAME (no newline): the
exit's own service ("exit-own"), a host on its LAN ("lan"), a cloud metadata address
("metadata").

Prints "ready" once every socket is bound, then serves until killed. Standard library
only.
"""

import argparse
import hashlib
import http.server
import ipaddress
import random
import socket
import struct
import sys
import threading
import urllib.parse

CHUNK = 1 << 20


def size_value(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def blob_chunks(size, seed):
    i = 0
    while size > 0:
        chunk = random.Random(f"{seed}:{i}").randbytes(CHUNK)
        yield chunk[:size]
        size -= len(chunk)
        i += 1


def family(ip):
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def plain_ip(text):
    """The address of a client address as the socket gives it (no v4-mapped prefix)."""
    addr = ipaddress.ip_address(text.split("%")[0])
    if addr.version == 6 and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body, status=200, kind="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Internet(Quiet):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/ip":
            return self.answer(plain_ip(self.client_address[0]).encode())
        if url.path in ("/blob", "/blob-sha256"):
            try:
                size = size_value(query["size"][0])
                seed = query.get("seed", ["0"])[0]
            except (KeyError, ValueError):
                return self.answer(b"size=N&seed=S\n", 400)
            if url.path == "/blob-sha256":
                digest = hashlib.sha256()
                for chunk in blob_chunks(size, seed):
                    digest.update(chunk)
                return self.answer(digest.hexdigest().encode())
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for chunk in blob_chunks(size, seed):
                self.wfile.write(chunk)
            return None
        return self.answer(b"not found\n", 404)

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/sha256":
            return self.answer(b"not found\n", 404)
        left = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        while left > 0:
            data = self.rfile.read(min(left, CHUNK))
            if not data:
                break
            digest.update(data)
            left -= len(data)
        return self.answer(digest.hexdigest().encode())


def named_handler(name):
    class Named(Quiet):
        def do_GET(self):
            self.answer(name.encode())

    return Named


def http_server(ip, port, handler):
    class Server(http.server.ThreadingHTTPServer):
        address_family = family(ip)
        daemon_threads = True

    return Server((ip, port), handler)


def udp_socket(ip, port):
    sock = socket.socket(family(ip), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    return sock


def udp_echo(sock):
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(plain_ip(peer[0]).encode() + b" " + data, peer)


def dns_name(packet, offset):
    """The question's name (no compression in questions) and the offset after it."""
    labels = []
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length


def dns_answer(query, v4, v6):
    """The response to `query`, and (name, type) for the log."""
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        raise ValueError("one question per query")
    name, end = dns_name(query, 12)
    qtype, qclass = struct.unpack("!HH", query[end:end + 4])
    question = query[12:end + 4]
    answers = []
    rcode = 0
    if name.lower() == "test" or name.lower().endswith(".test"):
        if qtype == 1 and v4 is not None:
            answers.append((1, ipaddress.IPv4Address(v4).packed))
        elif qtype == 28 and v6 is not None:
            answers.append((28, ipaddress.IPv6Address(v6).packed))
    else:
        rcode = 3
    # QR, opcode copied, AA, RD copied, RA.
    out_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    out = struct.pack("!HHHHHH", ident, out_flags, 1, len(answers), 0, 0) + question
    for rtype, rdata in answers:
        out += struct.pack("!HHHIH", 0xC00C, rtype, 1, 60, len(rdata)) + rdata
    return out, name, qtype


def dns_stub(sock, v4, v6, log, lock):
    while True:
        query, peer = sock.recvfrom(4096)
        try:
            reply, name, qtype = dns_answer(query, v4, v6)
        except (ValueError, IndexError, struct.error):
            continue
        with lock:
            log.write(f"{plain_ip(peer[0])} {name} {qtype}\n")
            log.flush()
        sock.sendto(reply, peer)


def host_port(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    inet = sub.add_parser("internet")
    inet.add_argument("--web", action="append", required=True)
    inet.add_argument("--dns", action="append", required=True)
    inet.add_argument("--dns-log", required=True)
    named = sub.add_parser("named")
    named.add_argument("--name", required=True)
    named.add_argument("--listen", action="append", required=True)
    args = ap.parse_args()

    if args.mode == "internet":
        for ip in args.web:
            serve(http_server(ip, 80, Internet))
            threading.Thread(target=udp_echo, args=(udp_socket(ip, 7),), daemon=True).start()
        v4 = next((ip for ip in args.web if family(ip) == socket.AF_INET), None)
        v6 = next((ip for ip in args.web if family(ip) == socket.AF_INET6), None)
        log = open(args.dns_log, "a", encoding="utf-8")
        lock = threading.Lock()
        for ip in args.dns:
            sock = udp_socket(ip, 53)
            threading.Thread(target=dns_stub, args=(sock, v4, v6, log, lock), daemon=True).start()
    else:
        handler = named_handler(args.name)
        for listen in args.listen:
            ip, port = host_port(listen)
            serve(http_server(ip, port, handler))
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
