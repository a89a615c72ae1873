#!/usr/bin/env python3
"""A complete client of a skywire node's app socket (docs/APPS.md), Python 3.8 or later,
standard library only: reliable byte streams to (public key, port) on other nodes, and
listeners for theirs.

As a library:

    stream = dial(KEY, 7)                       # a Stream, once the peer accepted
    stream.send(b"hello")                       # DATA frames
    stream.shutdown_write()                     # FIN
    while data := stream.recv(): ...            # b"" after the peer's FIN; StreamReset on RESET
    stream.wait_closed(); stream.close()        # the node closes after both FINs

    with listen(7) as listener:
        for incoming in listener:               # {"stream": ID, "peer": KEY, "port": P}
            stream = accept(incoming["stream"])

As a command, like netcat (progress and errors on standard error):

    app_client.py [--socket PATH] dial KEY PORT [--timeout S]   stdin to the stream, it to stdout
    app_client.py [--socket PATH] listen PORT [--echo] [--allow KEY]...
                                    take one stream: echo it back, or stdin to it and it to stdout

Exit status: 0 when both sides finished cleanly; 69 when no node serves the socket (or it is
shutting down); 77 when this user may not use it; 1 for any other failure (the node's error
kind is in the message)."""
import argparse, collections, json, socket, sys, threading

DEFAULT_SOCKET = "/run/skywire-apps/node.sock"  # the node's default (node.apps.socket)
DATA, FIN, RESET = 0, 1, 2                     # frame kinds
MAX_PAYLOAD = (1 << 24) - 1                    # the most a frame's 24-bit length announces
MAX_REASON = 1024                              # the longest RESET reason, in bytes
MAX_LINE = 64 * 1024                           # the longest reply line we read
REPLY_TIMEOUT = 10.0                           # seconds to wait for an answer (beyond a dial's own)
CHUNK = 64 * 1024                              # stream bytes per DATA frame we send


class AppError(Exception):
    """The node answered with an error line (kind: "refused", "no_route", ...)."""

    def __init__(self, kind, message):
        super().__init__("%s (%s)" % (message, kind))
        self.kind, self.message = kind, message


class StreamReset(Exception):
    """A RESET frame: the node's reason is "<kind>: <message>" (kind "reset" otherwise)."""

    def __init__(self, reason):
        kind, sep, message = reason.partition(": ")
        if not (sep and kind and all(c in "abcdefghijklmnopqrstuvwxyz_" for c in kind)):
            kind, message = "reset", reason
        super().__init__("stream reset: %s: %s" % (kind, message))
        self.kind, self.message = kind, message


class ProtocolError(Exception):
    """The node's bytes were not the protocol's (or it closed without FIN or RESET)."""


def frame(kind, payload=b""):
    """One frame: kind (u8), payload length (u24, big-endian), payload."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("a frame carries at most %d bytes" % MAX_PAYLOAD)
    return bytes([kind]) + len(payload).to_bytes(3, "big") + bytes(payload)


def reset_frame(reason=""):
    """A RESET frame, its reason cut to MAX_REASON bytes at a character boundary."""
    text = reason.encode()[:MAX_REASON].decode("utf-8", "ignore").encode()
    return frame(RESET, text)


class Decoder:
    """One direction's frames, fed bytes as they arrive. feed() yields ("data", bytes),
    ("fin", None) and ("reset", str), and raises ProtocolError on a frame the protocol
    forbids (what came before it is yielded first)."""

    def __init__(self):
        self.head = bytearray()   # a header's first bytes
        self.data_left = 0        # payload bytes of the current DATA frame still to come
        self.reason = None        # a RESET reason being read, and how long it is
        self.reason_len = 0
        self.fin = self.ended = False

    def at_boundary(self):
        """Whether the input so far ends between frames."""
        return not (self.head or self.data_left or self.reason is not None)

    def feed(self, data):
        i = 0
        while i < len(data):
            if self.ended:
                raise ProtocolError("nothing may follow RESET")
            if self.data_left:
                n = min(self.data_left, len(data) - i)
                self.data_left -= n
                i += n
                yield "data", bytes(data[i - n:i])
                continue
            if self.reason is not None:
                n = min(self.reason_len - len(self.reason), len(data) - i)
                self.reason += data[i:i + n]
                i += n
                if len(self.reason) == self.reason_len:
                    yield self._reset(bytes(self.reason))
                continue
            n = min(4 - len(self.head), len(data) - i)
            self.head += data[i:i + n]
            i += n
            if len(self.head) < 4:
                continue
            kind, length = self.head[0], int.from_bytes(self.head[1:], "big")
            self.head = bytearray()
            if kind in (DATA, FIN) and self.fin:
                raise ProtocolError("only RESET may follow FIN")
            if kind == DATA:
                self.data_left = length
            elif kind == FIN:
                if length:
                    raise ProtocolError("a FIN frame carries no payload (it announced %d)" % length)
                self.fin = True
                yield "fin", None
            elif kind == RESET:
                if length > MAX_REASON:
                    raise ProtocolError("a RESET reason of %d bytes (at most %d)" % (length, MAX_REASON))
                self.reason, self.reason_len = bytearray(), length
                if length == 0:
                    yield self._reset(b"")
            else:
                raise ProtocolError("unknown frame kind %d" % kind)

    def _reset(self, text):
        self.reason, self.ended = None, True
        try:
            return "reset", text.decode()
        except UnicodeDecodeError:
            raise ProtocolError("a RESET reason that is not UTF-8") from None


class Stream:
    """An open stream. info is the node's "ok" body: stream, peer, local_port, port."""

    def __init__(self, sock, reader, info):
        self.sock, self._reader, self.info = sock, reader, info
        self._decoder = Decoder()
        self._pending = collections.deque()  # DATA bytes decoded, not yet returned
        self._end = None                     # "fin", or the exception that ended reading
        self._finished = False               # FIN or RESET sent

    def recv(self, size=CHUNK):
        """Up to size bytes of the peer's; b"" after its FIN. Raises StreamReset on a RESET,
        ProtocolError when the node broke the frames or closed without FIN or RESET."""
        while not self._pending:
            if self._end == "fin":
                return b""
            if self._end is not None:
                raise self._end
            self._read()
        data = self._pending.popleft()
        if len(data) > size:
            self._pending.appendleft(data[size:])
            data = data[:size]
        return data

    def _read(self):
        data = self._reader.read1(CHUNK)
        if data:
            self._feed(data)
        else:
            self._end = ProtocolError("the node closed the stream without FIN or RESET")

    def _feed(self, data):
        try:
            for kind, value in self._decoder.feed(data):
                if kind == "data":
                    self._pending.append(value)
                elif kind == "fin":
                    self._end = "fin"
                else:
                    self._end = StreamReset(value)
        except ProtocolError as error:
            self._end = error

    def send(self, data):
        """Send all of data, in DATA frames. Blocks while the stream's window is full."""
        if self._finished:
            raise BrokenPipeError("this side of the stream is finished (FIN or RESET sent)")
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            self.sock.sendall(frame(DATA, view[start:start + CHUNK]))

    def shutdown_write(self):
        """Send FIN: no more bytes from this side; reading goes on until the peer's FIN."""
        if not self._finished:
            self._finished = True
            self.sock.sendall(frame(FIN))

    def reset(self, reason=""):
        """Abort the stream; the peer sees a reset (the reason stays on this node)."""
        self._finished = True
        self.sock.sendall(reset_frame(reason))
        self.sock.shutdown(socket.SHUT_WR)

    def wait_closed(self):
        """After the peer's FIN (recv gave b"") and ours: wait until the node closes the
        connection, which it does once the stream ended cleanly; a RESET instead raises
        StreamReset."""
        while self._end == "fin":
            data = self._reader.read1(CHUNK)
            if not data:
                return
            self._feed(data)
        if self._end is not None:
            raise self._end

    def close(self):
        self._reader.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Listener:
    """A listening connection; iterating it yields each arrived stream's "incoming" body
    ({"stream": ID, "peer": KEY, "port": P}). Close it to stop listening."""

    def __init__(self, sock, reader, info, path):
        self.sock, self._reader, self.info, self.path = sock, reader, info, path

    def __iter__(self):
        while True:
            kind, body = _read_reply(self._reader, ("incoming", "error"))
            if kind == "error":
                raise AppError(body.get("kind"), body.get("message"))
            yield body

    def accept(self):
        """Wait for the next arrived stream and take it."""
        return accept(next(iter(self))["stream"], self.path)

    def close(self):
        self._reader.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_reply(reader, kinds):
    """One line from the node: its only key (one of kinds) and the body."""
    line = reader.readline(MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise ProtocolError("the node closed the connection without an answer"
                            if len(line) <= MAX_LINE else "an answer over %d bytes" % MAX_LINE)
    try:
        (kind, body), = json.loads(line).items()
    except (ValueError, AttributeError):
        raise ProtocolError("not an answer of the protocol: %r" % line[:200]) from None
    if kind not in kinds or not isinstance(body, dict):
        raise ProtocolError("not an answer of the protocol: %r" % line[:200])
    return kind, body


def _open(request, wait, path):
    """Connect, send the request line, read the answer: (socket, reader, ok body), or
    AppError. The reader keeps whatever came after the answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.settimeout(wait)
        sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        reader = sock.makefile("rb")
        kind, body = _read_reply(reader, ("ok", "error"))
    except BaseException:
        sock.close()
        raise
    if kind == "error":
        sock.close()
        raise AppError(body.get("kind"), body.get("message"))
    sock.settimeout(None)
    return sock, reader, body


def dial(peer, port, timeout=None, path=DEFAULT_SOCKET):
    """Open a stream to port on the node whose key (64 hex digits) is peer, waiting at
    most timeout seconds (at most 120; the node's default is 10)."""
    request = {"op": "dial", "peer": peer, "port": port}
    if timeout is not None:
        request["timeout_ms"] = max(1, round(timeout * 1000))
    wait = min(timeout or 10.0, 120.0) + REPLY_TIMEOUT
    return Stream(*_open(request, wait, path))


def listen(port, backlog=None, allow=None, path=DEFAULT_SOCKET):
    """Listen on port: at most backlog streams waiting (node default 16), only from the
    keys in allow (default: any)."""
    request = {"op": "listen", "port": port}
    if backlog is not None:
        request["backlog"] = backlog
    if allow is not None:
        request["allow"] = list(allow)
    return Listener(*_open(request, REPLY_TIMEOUT, path), path)


def accept(stream, path=DEFAULT_SOCKET):
    """Take the stream with this id, from an "incoming" line of one of our listeners."""
    return Stream(*_open({"op": "accept", "stream": stream}, REPLY_TIMEOUT, path))


def join(stream, infile, outfile):
    """infile's bytes to the stream, then FIN (on a thread); the stream's bytes to outfile
    until the peer's FIN; then wait for the node to close the stream cleanly. infile is
    best unbuffered (open(fd, "rb", buffering=0)): a buffered one holds a lock while it
    blocks, which the interpreter cannot take at exit after a reset."""
    failed = []
    read = getattr(infile, "read1", infile.read)

    def send_all():
        try:
            while True:
                try:
                    data = read(CHUNK)
                except OSError as error:
                    stream.reset("the app's input failed: %s" % error)
                    raise
                if not data:
                    break
                stream.send(data)
            stream.shutdown_write()
        except OSError as error:
            failed.append(error)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    while data := stream.recv():
        outfile.write(data)
        outfile.flush()
    sender.join()
    stream.wait_closed()  # a RESET after the peer's FIN says why sending failed
    if failed:
        raise failed[0]


def echo(stream):
    """Send back what arrives, then FIN after the peer's."""
    while data := stream.recv():
        stream.send(data)
    stream.shutdown_write()
    stream.wait_closed()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Streams over a skywire node's app socket.")
    parser.add_argument("--socket", default=DEFAULT_SOCKET,
                        help="the node's app socket (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    dialing = commands.add_parser("dial", help="stdin to PORT on the node KEY, its answer to stdout")
    dialing.add_argument("key")
    dialing.add_argument("port", type=int)
    dialing.add_argument("--timeout", type=float, help="seconds to try (the node's default: 10)")
    listening = commands.add_parser("listen", help="take one stream on PORT")
    listening.add_argument("port", type=int)
    listening.add_argument("--echo", action="store_true", help="send back what arrives")
    listening.add_argument("--allow", action="append", metavar="KEY", help="only from this key")
    args = parser.parse_args(argv)
    name = "app_client.py: " + args.command

    def serve(stream):
        info = stream.info
        print("%s: stream %d, %s port %d" % (name, info["stream"], info["peer"], info["port"]),
              file=sys.stderr, flush=True)
        with stream:
            if getattr(args, "echo", False):
                echo(stream)
            else:
                stdin = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
                join(stream, stdin, sys.stdout.buffer)

    try:
        if args.command == "dial":
            serve(dial(args.key, args.port, args.timeout, args.socket))
        else:
            with listen(args.port, allow=args.allow, path=args.socket) as listener:
                print("%s: listening on port %d" % (name, listener.info["port"]),
                      file=sys.stderr, flush=True)
                # Listening until the stream is done: closing the listener resets streams
                # not yet attached, which an accepted one may still be just after its "ok"
                # (docs/APPS.md, "Known issues").
                serve(listener.accept())
    except AppError as error:
        status = {"shutdown": 69, "engine_gone": 69, "permission": 77}.get(error.kind, 1)
        sys.stderr.write("%s: %s\n" % (name, error))
        return status
    except (FileNotFoundError, ConnectionRefusedError) as error:
        sys.stderr.write("%s: is skywire node running? cannot connect to its app socket %s: %s\n"
                         % (name, args.socket, error.strerror))
        return 69
    except PermissionError as error:
        sys.stderr.write("%s: permission denied on the app socket %s: run as root, as the node's "
                         "user, or as a user node.apps.users or node.apps.group lets in (%s)\n"
                         % (name, args.socket, error.strerror))
        return 77
    except (StreamReset, ProtocolError, OSError) as error:
        sys.stderr.write("%s: %s\n" % (name, error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
