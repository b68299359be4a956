"""Parts for tests/e2e/test_attacks.py that the harness lacks: an upstream that records request
trailers (and when each request's head arrived), HTTP/2 requests with trailers or a body left
unfinished, many copies of one request sent at once over several connections, and a signer that
writes any signature parameters and covered components (so an attacker's odd but well-signed
requests can be built)."""

import base64
import json
import socket
import threading

from harness import Response, parse_raw_response, read_raw

# ---------------------------------------------------------------------------- upstream


class TrailerUpstream:
    """An HTTP/1.1 upstream on an ephemeral loopback port that reads bodies by Content-Length or
    chunked (with trailers, which Python's http.server never parses) and answers each request
    with what it saw, as JSON: method, path, headers, trailers, body (the shape `Seen` reads).

    `arrived` lists each request's path as soon as its head was read, before its body; `seen`
    the complete requests. Keep-alive, one thread per connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.arrived = []
        self.seen = []
        self._closed = False

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._closed = True
        self.sock.close()

    def saw(self, path):
        """Whether any request for `path` reached the upstream (its head at least)."""
        with self.lock:
            return path in self.arrived

    def count(self, path):
        with self.lock:
            return self.arrived.count(path)

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _fields(f):
        out = []
        while True:
            line = f.readline()
            if line in (b"\r\n", b"\n", b""):
                return out
            name, _, value = line.decode("latin-1").partition(":")
            out.append((name, value.strip()))

    def _serve(self, conn):
        f = conn.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = self._fields(f)
                with self.lock:
                    self.arrived.append(path)
                lower = {n.lower(): v for n, v in headers}
                body, trailers = b"", []
                if "chunked" in lower.get("transfer-encoding", "").lower():
                    while True:
                        size = int(f.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            trailers = self._fields(f)
                            break
                        body += f.read(size)
                        f.readline()
                elif lower.get("content-length"):
                    body = f.read(int(lower["content-length"]))
                seen = {"method": method, "path": path, "headers": headers, "trailers": trailers,
                        "body": body.decode("latin-1")}
                with self.lock:
                    self.seen.append(seen)
                payload = json.dumps(seen).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + b"Content-Length: %d\r\n\r\n" % len(payload)
                    + payload
                )
        except (OSError, ValueError):
            return
        finally:
            conn.close()


def trailers_of(response):
    """The trailers the TrailerUpstream saw for an answered request, names lowercased."""
    return [(n.lower(), v) for n, v in response.json()["trailers"]]


# ---------------------------------------------------------------------------- HTTP/1.1


def h1_bytes(method, path, headers, host, body=b"", length=True):
    """A raw HTTP/1.1 request: the header pairs exactly as given (case, repeats), a
    Content-Length for a body unless `length` is false."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] + [f"{n}: {v}" for n, v in headers]
    if body and length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_h1_response(sock):
    """One HTTP/1.1 response from a socket, as a `Response`; `None` when the connection closed
    first."""
    data = read_raw(sock)
    return parse_raw_response(data) if data else None


def h1_request(port, method, path, headers, host, body=b"", timeout=10):
    """One raw HTTP/1.1 request on a fresh connection; returns a `Response` (None if closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(h1_bytes(method, path, headers, host, body))
        return read_h1_response(s)


def h1_chunked_with_trailers(port, method, path, headers, host, chunks, trailers, timeout=10):
    """A raw HTTP/1.1 request with a chunked body and trailer fields (as given: case kept)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        data = h1_bytes(method, path, list(headers) + [("Transfer-Encoding", "chunked")], host)
        for c in chunks:
            data += b"%x\r\n" % len(c) + c + b"\r\n"
        data += b"0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in trailers).encode("latin-1") + b"\r\n"
        s.sendall(data)
        return read_h1_response(s)


# ---------------------------------------------------------------------------- HTTP/2


class H2:
    """One cleartext HTTP/2 connection with prior knowledge, driven stream by stream: headers,
    data, trailers, each sent when asked, so a test can leave a body unfinished. Header names
    are sent lowercased, as HTTP/2 requires; repeats are kept."""

    def __init__(self, port, timeout=10):
        import h2.config
        import h2.connection

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.port = port
        self._flush()
        self.streams = {}

    def _flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, method, path, headers, authority, end_stream=False):
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
        fields += [(n.lower(), v) for n, v in headers]
        self.conn.send_headers(sid, fields, end_stream=end_stream)
        self._flush()
        self.streams[sid] = {"status": None, "headers": [], "data": b"", "done": False, "reset": False}
        return sid

    def data(self, sid, data, end_stream=False):
        self.conn.send_data(sid, data, end_stream=end_stream)
        self._flush()

    def trailers(self, sid, trailers):
        self.conn.send_headers(sid, [(n.lower(), v) for n, v in trailers], end_stream=True)
        self._flush()

    def response(self, sid):
        """The stream's response once it ended, as a `Response`; `None` if it was reset."""
        import h2.events

        st = self.streams[sid]
        while not st["done"]:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            for event in self.conn.receive_data(chunk):
                s = self.streams.get(getattr(event, "stream_id", None))
                if s is None:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    for n, v in event.headers:
                        n, v = n.decode(), v.decode()
                        if n == ":status":
                            s["status"] = int(v)
                        else:
                            s["headers"].append((n, v))
                elif isinstance(event, h2.events.DataReceived):
                    s["data"] += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    # A server may answer before the request is complete and then ask the
                    # client to stop sending it with RST_STREAM NO_ERROR (RFC 9113 section
                    # 8.1): after a complete response, that reset is not a failure.
                    if not (s["done"] and event.error_code == 0):
                        s["reset"] = True
                    s["done"] = True
                elif isinstance(event, h2.events.StreamEnded):
                    s["done"] = True
            self._flush()
        if st["reset"]:
            return None
        return Response(st["status"], st["headers"], st["data"].decode("utf-8", "replace"))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def h2_send(port, method, path, headers, authority, body=None, trailers=None, timeout=10):
    """One HTTP/2 request, optionally with a body and trailers; a `Response`, or `None` when the
    stream was reset."""
    with H2(port, timeout=timeout) as c:
        sid = c.headers(method, path, headers, authority, end_stream=body is None and not trailers)
        if body is not None:
            c.data(sid, body, end_stream=not trailers)
        if trailers:
            c.trailers(sid, trailers)
        return c.response(sid)


# ---------------------------------------------------------------------------- races


def simultaneous(connect, copies):
    """Opens `copies` connections with `connect()` (each returns a function that sends the
    request on its own connection and returns its status), then fires them all at once behind a
    barrier; returns the statuses (None for a reset stream or a closed connection)."""
    senders = [connect() for _ in range(copies)]
    barrier = threading.Barrier(copies)
    statuses = [None] * copies

    def run(i):
        barrier.wait()
        statuses[i] = senders[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def h1_sender(port, payload):
    """A connection opened now that sends `payload` (bytes) when called, and returns the status."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)

    def send():
        try:
            s.sendall(payload)
            r = read_h1_response(s)
            return r and r.status
        finally:
            s.close()

    return send


def h2_sender(port, method, path, headers, authority):
    """An HTTP/2 connection opened (and its preface exchanged) now, that sends the request when
    called and returns the status."""
    c = H2(port, timeout=30)

    def send():
        try:
            sid = c.headers(method, path, headers, authority, end_stream=True)
            r = c.response(sid)
            return r and r.status
        finally:
            c.close()

    return send


# ---------------------------------------------------------------------------- signing


def sf_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sign_member(key, label, covered, params):
    """One signature, as an attacker with a trusted key may shape it: `covered` is a list of
    (component identifier as serialized, value), `params` the serialized signature parameters
    (`;created=...;keyid="..."`). Returns (Signature-Input member, Signature member, base)."""
    sig_params = "(" + " ".join(ident for ident, _ in covered) + ")" + params
    lines = [f"{ident}: {value}" for ident, value in covered]
    lines.append(f'"@signature-params": {sig_params}')
    base = "\n".join(lines)
    signature = base64.b64encode(key.sign(base.encode())).decode()
    return f"{label}={sig_params}", f"{label}=:{signature}:", base


# P-256's group order: for an ECDSA signature (r, s), (r, n - s) verifies the same message.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def malleate_p256(signature_member):
    """The `Signature` member `label=:r||s:` with s replaced by n - s: other bytes, the same
    signed message."""
    label, _, value = signature_member.partition("=")
    raw = base64.b64decode(value.strip(":"))
    assert len(raw) == 64, len(raw)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    other = r + (P256_N - s).to_bytes(32, "big")
    assert other != raw
    return f"{label}=:{base64.b64encode(other).decode()}:"
