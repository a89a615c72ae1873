#!/usr/bin/env python3
"""A complete skywire signal client (docs/SIGNAL.md): prove the secret, register, check the
server's proof, then answer Top, Ping, Shutdown.

Run by viscript, it finds the server in SIGNAL_SERVER_ADDRESS, its id in SIGNAL_CLIENT_ID
and its secret in SIGNAL_CLIENT_SECRET. Optional argument: MiB of memory to hold (for
testing `ru`)."""
import hmac, json, os, socket, struct, sys

def send(sock, op, req, body=None):
    data = b"" if body is None else json.dumps(body).encode()
    sock.sendall(struct.pack(">IBBQ", 10 + len(data), 1, op, req) + data)

def recv(f):
    length, version, op, req = struct.unpack(">IBBQ", recv_exact(f, 14))
    body = recv_exact(f, length - 10)
    return op, req, json.loads(body) if body else None

def recv_exact(f, n):
    data = f.read(n)
    if len(data) < n: sys.exit(0)  # server gone: a real client would reconnect with backoff
    return data

def proof(label, server_nonce, nonce):  # HMAC-SHA256(secret, label || id || nonces), hex
    message = label + struct.pack(">Q", ident) + server_nonce + nonce
    return hmac.new(secret, message, "sha256").hexdigest()

ballast = b"\x01" * (int(sys.argv[1]) << 20) if len(sys.argv) > 1 else b""
secret = bytes.fromhex(os.environ["SIGNAL_CLIENT_SECRET"])  # never print or log it
ident = int(os.environ.get("SIGNAL_CLIENT_ID", "1"))
host, port = os.environ.get("SIGNAL_SERVER_ADDRESS", "127.0.0.1:7999").rsplit(":", 1)
sock = socket.create_connection((host.strip("[]"), int(port)))
f = sock.makefile("rb")
op, _, hello = recv(f)                                          # Hello (op 3): its nonce
server_nonce, nonce = bytes.fromhex(hello["Nonce"]), os.urandom(32)
send(sock, 0, 1, {"Id": ident, "Pid": os.getpid(), "Nonce": nonce.hex(),
                  "Proof": proof(b"skywire signal v1 client proof", server_nonce, nonce)})
print("signal client registering", flush=True)
op, _, echo = recv(f)                                           # the echo: the server's proof
if not hmac.compare_digest(str(echo.get("Proof")),
                           proof(b"skywire signal v1 server proof", server_nonce, nonce)):
    sys.exit("signal: not obeying this server: %r" % echo.get("Error", "wrong proof"))
while True:
    op, req, body = recv(f)
    if op == 0:                                                 # Top: our own figures
        rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        send(sock, op | 0x80, req, {"Pid": os.getpid(), "RssBytes": rss, "Ballast": len(ballast)})
    elif op == 1: send(sock, op | 0x80, req)                    # Ping: empty reply
    elif op == 2:                                               # Shutdown: reply, then exit
        send(sock, op | 0x80, req, {"Pid": os.getpid()})
        print("signal client shutting down", flush=True); sys.exit(0)
    else: send(sock, op | 0x80, req, {"Error": "unknown op"})
