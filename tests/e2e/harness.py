"""Real parts for the end-to-end tests and the demo: an Envoy process, an echo upstream, a
Web Bot Auth signer (built on `cryptography` only, so it can also produce the broken
signatures the tests need), and a small HTTP client that keeps repeated and odd-case headers.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives import hashes, serialization

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy"))
import bootstrap  # noqa: E402  (envoy/bootstrap.py)


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------------------- keys


class Key:
    """An Ed25519 key with its public JWK and RFC 7638 thumbprint."""

    def __init__(self, private=None):
        self.private = private or Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
        canonical = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self.jwk["x"]}, separators=(",", ":")
        )
        self.thumbprint = b64u(hashlib.sha256(canonical.encode()).digest())

    @classmethod
    def from_seed(cls, seed):
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def private_jwk(self):
        seed = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return dict(self.jwk, d=b64u(seed), kid=self.thumbprint)

    def sign(self, data):
        return self.private.sign(data)


def jwk_thumbprint(jwk):
    """RFC 7638 SHA-256 thumbprint of an OKP, EC or RSA JWK."""
    members = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
    canonical = json.dumps({m: jwk[m] for m in members[jwk["kty"]]}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canonical.encode()).digest())


def _uint(i, length=None):
    return b64u(i.to_bytes(length or (i.bit_length() + 7) // 8, "big"))


class EcKey:
    """A P-256 key signing ecdsa-p256-sha256: `r || s` (RFC 9421 section 3.3.4), or DER with
    `der=True` (what the verifier must refuse)."""

    def __init__(self, private=None, der=False):
        self.private = private or ec.generate_private_key(ec.SECP256R1())
        self.der = der
        n = self.private.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": _uint(n.x, 32), "y": _uint(n.y, 32), "alg": "ES256"}
        self.thumbprint = jwk_thumbprint(self.jwk)

    def as_der(self):
        """The same key, signing in DER."""
        return EcKey(self.private, der=True)

    def private_jwk(self):
        d = self.private.private_numbers().private_value
        return dict(self.jwk, d=_uint(d, 32), kid=self.thumbprint)

    def sign(self, data):
        der = self.private.sign(data, ec.ECDSA(hashes.SHA256()))
        if self.der:
            return der
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class RsaKey:
    """An RSA key signing rsa-pss-sha512 (section 3.3.1: SHA-512, MGF1-SHA-512, 64-byte salt)."""

    def __init__(self, bits=2048, private=None):
        self.private = private or rsa.generate_private_key(public_exponent=65537, key_size=bits)
        n = self.private.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "n": _uint(n.n), "e": _uint(n.e), "alg": "PS512"}
        self.thumbprint = jwk_thumbprint(self.jwk)

    def private_jwk(self):
        p = self.private.private_numbers()
        return dict(self.jwk, d=_uint(p.d), p=_uint(p.p), q=_uint(p.q), dp=_uint(p.dmp1),
                    dq=_uint(p.dmq1), qi=_uint(p.iqmp), kid=self.thumbprint)

    def sign(self, data):
        # A 1024-bit key has no room for a 64-byte salt next to a SHA-512 digest: it signs with
        # the longest salt it can (such keys are refused by the verifier anyway).
        salt = 64 if self.private.key_size >= 2048 else padding.PSS.MAX_LENGTH
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=salt)
        return self.private.sign(data, pss, hashes.SHA512())


# RFC 9421 Appendix B.1.4 test key: must be refused unless allow_test_keys.
RFC_TEST_KEY = Key.from_seed(
    base64.b64decode("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU=".replace("-", "+").replace("_", "/"))
)

# ---------------------------------------------------------------------------- signer


def sf_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Signed:
    """Headers of one signed request (dict), plus what was signed."""

    def __init__(self, headers, base):
        self.headers = headers
        self.base = base


def sign(
    key,
    method,
    authority,
    path,
    agent="https://agent.test",
    headers=None,
    components=("@authority", "signature-agent"),
    created=None,
    expires=None,
    validity=300,
    keyid=None,
    tag="web-bot-auth",
    label="sig1",
    nonce=None,
    alg=None,
    legacy_agent=False,
    scheme="http",
    agent_type=None,
    plain_agent=False,
    member_key=None,
    agent_params="",
):
    """Signs a request the Web Bot Auth way and returns a `Signed`.

    `components` are component identifiers: derived (`@authority`, `@method`, `@path`,
    `@target-uri`, `@query`) or field names; `signature-agent` becomes
    `"signature-agent";key="<label>"` with the dictionary form of `Signature-Agent`, or plain
    `"signature-agent"` (the whole field) with `plain_agent=True`. `member_key` keys the member
    (default: the label); `agent_params` are appended to it as serialized (`;type=cimd`), and
    `agent_type` adds the previous draft's `;type="<type>"`.
    """
    now = int(time.time())
    created = now if created is None else created
    expires = created + validity if expires is None else expires
    keyid = key.thumbprint if keyid is None else keyid
    fields = {k.lower(): v for k, v in (headers or {}).items()}
    out = {}
    member = sf_string(agent) if agent is not None else ""
    if agent_type is not None:
        member += f';type="{agent_type}"'
    member += agent_params
    member_key = member_key or label
    if agent is not None:
        fields["signature-agent"] = member if legacy_agent else f"{member_key}={member}"
        out["Signature-Agent"] = fields["signature-agent"]
    target_path, _, query = path.partition("?")
    lines, idents = [], []
    for c in components:
        if c == "signature-agent" and not legacy_agent and not plain_agent:
            ident = f'"signature-agent";key="{member_key}"'
            value = member
        elif c == "@authority":
            ident, value = '"@authority"', authority.lower()
        elif c == "@method":
            ident, value = '"@method"', method.upper()
        elif c == "@path":
            ident, value = '"@path"', target_path
        elif c == "@query":
            ident, value = '"@query"', "?" + query
        elif c == "@target-uri":
            ident, value = '"@target-uri"', f"{scheme}://{authority.lower()}{path}"
        elif c == "@scheme":
            ident, value = '"@scheme"', scheme
        else:
            ident, value = sf_string(c.lower()), fields[c.lower()].strip()
        idents.append(ident)
        lines.append(f"{ident}: {value}")
    params = ""
    if created is not False:
        params += f";created={created}"
    if expires is not False:
        params += f";expires={expires}"
    if nonce is not None:
        params += f";nonce={sf_string(nonce)}"
    if alg is not None:
        params += f";alg={sf_string(alg)}"
    if keyid is not False:
        params += f";keyid={sf_string(keyid)}"
    if tag is not None:
        params += f";tag={sf_string(tag)}"
    sig_params = "(" + " ".join(idents) + ")" + params
    lines.append(f'"@signature-params": {sig_params}')
    base = "\n".join(lines)
    signature = key.sign(base.encode())
    out["Signature-Input"] = f"{label}={sig_params}"
    out["Signature"] = f"{label}=:{base64.b64encode(signature).decode()}:"
    return Signed(out, base)


# ---------------------------------------------------------------------------- HTTP


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value), as received
        self.body = body

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def seen(self):
        """For a request answered by the echo upstream: what the upstream saw."""
        return Seen(self.json())


class Seen:
    """The request as the echo upstream received it."""

    def __init__(self, data):
        self.method = data["method"]
        self.path = data["path"]
        self.headers = [(n.lower(), v) for n, v in data["headers"]]

    def all(self, name):
        return [v for n, v in self.headers if n == name.lower()]

    def get(self, name):
        values = self.all(name)
        assert len(values) <= 1, f"{name} seen {len(values)} times: {values}"
        return values[0] if values else None

    def with_prefix(self, prefix):
        return [(n, v) for n, v in self.headers if n.startswith(prefix)]


def request(port, method="GET", path="/", headers=(), host=None, body=None, conn=None):
    """Sends one request. `headers` is a dict or a list of pairs (repeats and case kept)."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    c.putheader("Host", host or f"127.0.0.1:{port}")
    for n, v in items:
        c.putheader(n, v)
    if body is not None:
        c.putheader("Content-Length", str(len(body)))
    c.endheaders(body.encode() if isinstance(body, str) else body)
    r = c.getresponse()
    data = r.read()
    resp = Response(r.status, r.getheaders(), data.decode("utf-8", "replace"))
    if own:
        c.close()
    return resp


def h2_request(port, method="GET", path="/", headers=(), authority=None, body=None, timeout=10):
    """One request over HTTP/2 with prior knowledge (cleartext h2), as a raw `h2` client: header
    names are sent exactly as given (lowercase, as HTTP/2 requires), repeats kept. Returns a
    `Response`, or `None` when the server reset the stream."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        items = list(headers.items()) if isinstance(headers, dict) else list(headers)
        request_headers = [
            (":method", method),
            (":scheme", "http"),
            (":authority", authority or f"127.0.0.1:{port}"),
            (":path", path),
        ] + [(n.lower(), v) for n, v in items]
        conn.send_headers(1, request_headers, end_stream=body is None)
        if body is not None:
            conn.send_data(1, body.encode() if isinstance(body, str) else body, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, response_headers, data = None, [], b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    for n, v in event.headers:
                        n, v = n.decode(), v.decode()
                        if n == ":status":
                            status = int(v)
                        else:
                            response_headers.append((n, v))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    return None
                elif isinstance(event, h2.events.StreamEnded):
                    return Response(status, response_headers, data.decode("utf-8", "replace"))
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()


def raw_request(port, head, body=b"", timeout=10):
    """Sends `head` (the request line and header lines, without the blank line) and `body` as
    bytes on a fresh HTTP/1.1 connection, exactly as given; returns the raw response bytes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        return read_raw(sock)


def read_raw(sock):
    """The bytes of one HTTP/1.1 response on `sock`: its head, and its body up to its
    Content-Length (Envoy's and our upstreams' responses have one); what came when the
    connection closed first. A timeout set on `sock` raises `socket.timeout`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head_end = data.index(b"\r\n\r\n") + 4
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", data[:head_end])
    want = head_end + (int(length.group(1)) if length else 0)
    while len(data) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data[:want]


def read_response(sock, timeout=15):
    """The response on `sock` as a `Response`, or one with status 0 when none came within
    `timeout` seconds."""
    import socket

    sock.settimeout(timeout)
    try:
        data = read_raw(sock)
    except socket.timeout:
        data = b""
    if not data:
        return parse_raw_response(b"HTTP/1.1 000 No Response\r\ncontent-length: 0\r\n\r\n")
    return parse_raw_response(data)


def parse_raw_response(data):
    """A `Response` from raw HTTP/1.1 response bytes."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(p.strip() for p in l.split(":", 1)) for l in lines[1:] if ":" in l]
    return Response(status, headers, body.decode("utf-8", "replace"))


class QuietHandler(BaseHTTPRequestHandler):
    """An HTTP/1.1 request handler that logs nothing and answers with `_send`."""

    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out as two writes; with Nagle the body waits for
    # Envoy's delayed ACK of the headers (tens of ms per response on keep-alive connections).
    disable_nagle_algorithm = True

    def _send(self, status, body, media, extra=()):
        """A complete response: status, Content-Type `media`, `extra` headers, `body` (bytes)."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            for n, v in extra:
                self.send_header(n, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a fetch timeout): that is the point of some tests

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    # A deep accept queue: some tests open a thousand connections at once.
    request_queue_size = 4096


class LoopbackServer:
    """A threaded HTTP server on an ephemeral loopback port; a context manager that serves
    while entered. Subclasses call `_listen(handler_class)` in `__init__`."""

    def _listen(self, handler):
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class EchoUpstream(LoopbackServer):
    """An HTTP server on an ephemeral loopback port that answers with the request it saw."""

    def __init__(self):
        class Handler(QuietHandler):
            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                body = json.dumps(
                    {"method": self.command, "path": self.path, "headers": list(self.headers.items())}
                ).encode()
                self._send(200, body, "application/json")

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        self._listen(Handler)


# ---------------------------------------------------------------------------- Envoy


def envoy_binary():
    return os.environ.get("WBA_ENVOY") or str(ROOT / ".venv" / "bin" / "envoy")


def wasm_path():
    return os.environ.get("WBA_WASM") or str(ROOT / "dist" / "web_bot_auth.wasm")


def native_path():
    return os.environ.get("WBA_NATIVE") or str(ROOT / "dist" / "libweb_bot_auth.so")


class Front:
    """One front end of the filter, what differs between them in one place: the artifact, the
    filter entries (`filters`, `filter`), the Envoy process environment (`env`), the prefix
    Envoy gives the filter's counters (`stats_prefix`), and how Envoy says a plugin
    configuration was refused (`load_failure`).

    - wasm: dist/web_bot_auth.wasm (WBA_WASM) in `envoy.filters.http.wasm`, after its `hold`
      companion; counters under `wasmcustom.`.
    - native: dist/libweb_bot_auth.so (WBA_NATIVE), an Envoy dynamic module found through
      ENVOY_DYNAMIC_MODULES_SEARCH_PATH; one filter; counters under `dynamicmodulescustom.`.
    """

    STATS_PREFIX = bootstrap.STATS_PREFIX
    LOAD_FAILURE = {
        "wasm": r"Plugin web_bot_auth failed to load|Unable to create Wasm plugin",
        "native": r"Failed to initialize dynamic module",
    }

    def __init__(self, name, artifact=None):
        if name not in bootstrap.FRONTS:
            raise ValueError(f"unknown front end {name!r}: one of {', '.join(bootstrap.FRONTS)}")
        self.name = name
        self.artifact = artifact or (wasm_path() if name == "wasm" else native_path())
        self.stats_prefix = self.STATS_PREFIX[name]
        self.load_failure = re.compile(self.LOAD_FAILURE[name])
        self._search_dir = None

    def __repr__(self):
        return self.name

    @property
    def counters(self):
        """The full name prefix of the filter's counters (`<stats_prefix>web_bot_auth.`)."""
        return self.stats_prefix + "web_bot_auth."

    def available(self):
        return Path(self.artifact).is_file()

    def filters(self, plugin_config, name="web_bot_auth", artifact=None):
        """The filter entries for one listener (wasm: the hold companion, then the filter)."""
        return bootstrap.filters(self.name, plugin_config, name=name, wasm_path=artifact or self.artifact)

    def filter(self, plugin_config, name="web_bot_auth", artifact=None):
        """The filter alone, for listeners that never check a body (wasm: no hold companion;
        native: the same single entry as `filters`)."""
        return bootstrap.filters(self.name, plugin_config, name=name, wasm_path=artifact or self.artifact,
                                 hold=False)[-1]

    def search_dir(self):
        """A directory holding the module as lib<name>.so (a symlink when the file is named
        otherwise, say a colleague's target/debug/libwba_filter_native.so)."""
        if self._search_dir is None:
            wanted = f"lib{bootstrap.NATIVE_MODULE}.so"
            artifact = Path(self.artifact).resolve()
            if artifact.name == wanted:
                self._search_dir = str(artifact.parent)
            else:
                import atexit
                import shutil

                self._search_dir = tempfile.mkdtemp(prefix="wba-native-")
                os.symlink(artifact, Path(self._search_dir) / wanted)
                atexit.register(shutil.rmtree, self._search_dir, ignore_errors=True)
        return self._search_dir

    def env(self):
        """What the Envoy process needs in its environment for this front end."""
        if self.name == "native":
            return {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": self.search_dir()}
        return {}

    def adapt(self, config):
        """A written configuration (minimal.yaml, a recipe: Wasm filter entries pointing at some
        module path) made to load this build: wasm entries point at this module; for native,
        each Web Bot Auth filter becomes the dynamic module with the same plugin configuration
        and its hold companion goes. Changes `config` in place and returns it."""
        for listener in config["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for nf in chain["filters"]:
                    hcm = nf.get("typed_config", {})
                    if "http_filters" not in hcm:
                        continue
                    out = []
                    for f in hcm["http_filters"]:
                        vm = f.get("typed_config", {}).get("config", {}).get("vm_config")
                        if not vm:
                            out.append(f)
                            continue
                        if self.name == "wasm":
                            vm["code"]["local"]["filename"] = self.artifact
                            out.append(f)
                            continue
                        value = f["typed_config"]["config"]["configuration"]["value"]
                        if json.loads(value) == {"role": "hold"}:
                            continue  # the native module holds a body itself
                        out.append(bootstrap.native_filter(value))
                    hcm["http_filters"] = out
        return config


WASM = Front("wasm")


class EnvoyFailed(Exception):
    def __init__(self, message, log):
        super().__init__(f"{message}\n--- envoy log ---\n{log[-6000:]}")
        self.log = log


class Envoy:
    """An Envoy process on loopback with ephemeral ports; a context manager."""

    def __init__(self, config, concurrency=2, log_level="info", workdir=None, front=None):
        self.config = config
        # The front end whose filter `config` loads: its environment, its counters' prefix.
        self.front = front or WASM
        self.concurrency = concurrency
        self.log_level = log_level
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="wba-envoy-")
        self.dir = Path(workdir or self._tmp.name)
        self.proc = None
        self.ports = {}
        self.admin_port = None
        self.log_path = self.dir / "envoy.log"

    def start(self, timeout=60):
        # A second start would leave the first process running, unstopped, after the tests.
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this Envoy is already running: use either start() or `with`, not both")
        if isinstance(self.config, str):  # YAML text, as an operator writes it
            cfg = self.dir / "envoy.yaml"
            cfg.write_text(self.config)
        else:
            cfg = self.dir / "envoy.json"
            cfg.write_text(json.dumps(self.config))
        admin_file = self.dir / "admin.address"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                envoy_binary(),
                "-c", str(cfg),
                "--concurrency", str(self.concurrency),
                "--log-level", self.log_level,
                "--admin-address-path", str(admin_file),
                "--base-id", str(os.getpid() % 60000 + int(time.time() * 1000) % 5000),
                "--disable-hot-restart",
                # Access logs reach the file quickly, so tests need not wait long for them.
                "--file-flush-interval-msec", "50",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.front.env()},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyFailed(f"envoy exited with {self.proc.returncode}", self.log())
            if admin_file.exists() and admin_file.read_text().strip():
                self.admin_port = int(admin_file.read_text().strip().rsplit(":", 1)[1])
                try:
                    if self.admin("/ready").strip() == "LIVE":
                        self._read_listeners()
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise EnvoyFailed("envoy did not become ready", self.log())

    def _read_listeners(self):
        data = json.loads(self.admin("/listeners?format=json"))
        for l in data["listener_statuses"]:
            self.ports[l["name"]] = l["local_address"]["socket_address"]["port_value"]

    def admin(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
            return r.read().decode()

    def stats(self, prefix=None):
        """Counter values whose names start with `prefix`, by full name; by default the filter's
        own (`wasmcustom.web_bot_auth.*` or `dynamicmodulescustom.web_bot_auth.*`)."""
        if prefix is None:
            prefix = self.front.counters
        out = {}
        for line in self.admin(f"/stats?filter=^{re.escape(prefix)}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def counters(self, prefix=""):
        """The filter's counters whose names start with `prefix`, by name without the front
        end's prefix: {"outcome.verified": 3, "directory.fetch_ok": 1, ...}."""
        full = self.front.counters
        return {name[len(full):]: v for name, v in self.stats(full + prefix).items()}

    def counter(self, name):
        """One counter of the filter's (`outcome.verified`), 0 while Envoy has none by that name."""
        return self.counters(name).get(name, 0)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self._tmp:
            self._tmp.cleanup()


def run_envoy_expecting_failure(config, timeout=60, front=None):
    """Starts Envoy with a configuration it must refuse; returns (exit code, log)."""
    with tempfile.TemporaryDirectory(prefix="wba-envoy-bad-") as d:
        cfg = Path(d) / "envoy.json"
        cfg.write_text(json.dumps(config))
        p = subprocess.run(
            [envoy_binary(), "-c", str(cfg), "--concurrency", "1", "--log-level", "info",
             "--disable-hot-restart", "--base-id", str(os.getpid() % 60000 + 7)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(front or WASM).env()},
        )
        return p.returncode, p.stdout + p.stderr


# Lines in the Envoy log that mean the filter crashed or its VM died.
CRASH_PATTERNS = re.compile(
    r"panicked|wasm trap|Function: proxy_on_\w+ failed|Plugin .* failed|VM failed|"
    r"RuntimeError|\]\[critical\]",
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------- key directory

DIRECTORY_PATH = "/.well-known/http-message-signatures-directory"
DIRECTORY_MEDIA_TYPE = "application/http-message-signatures-directory+json"


class DirectoryServer(LoopbackServer):
    """A key directory on an ephemeral loopback port, misbehaving on demand, per Host.

    `behaviour[host]` is one of: ok, status:<code>, redirect, slow:<seconds>, oversized,
    wrong_type, malformed, too_many, kid_mismatch, odd_header (ok, plus a header whose value
    has bytes 0x80-0xFF, as HTTP/1.1 allows), bare_jwk (the first key's JWK alone, where a JWK
    Set belongs). `keys[host]` lists the `Key`s served, and
    `extra[host]` raw JWK entries listed after them (say, unusable ones). Every fetch is counted
    in `fetches[host]` and its request target (path and query) kept in `paths[host]`.
    With `sign=True`, responses carry a possession proof per key
    (tag="http-message-signatures-directory"); `proofs[host][thumbprint]` changes one key's:
    `valid` (the default), `none` (no proof), `bad` (signed for another authority),
    `future` (created an hour from now), `expired`.
    The JWK Set at `jwks_path` (a JWK Set URL other than the well-known directory; `kid`s are
    labels there) is served whatever the query, as `jwks_media[host]` (`application/json` by
    default), or as a bare JWK when `behaviour[host]` is bare_jwk.
    """

    def __init__(self, sign=True, max_age=300, jwks_path="/jwks.json"):
        self.jwks_path = jwks_path
        self.keys = {}
        self.extra = {}
        self.proofs = {}
        self.behaviour = {}
        self.jwks_media = {}
        self.fetches = {}
        self.paths = {}
        self.sign = sign
        self.max_age = max_age
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").lower()
                with outer.lock:
                    outer.fetches[host] = outer.fetches.get(host, 0) + 1
                    outer.paths.setdefault(host, []).append(self.path)
                    mode = outer.behaviour.get(host, "ok")
                    keys = list(outer.keys.get(host, []))
                    extra = [dict(e) for e in outer.extra.get(host, [])]
                    proofs = dict(outer.proofs.get(host, {}))
                    jwks_media = outer.jwks_media.get(host, "application/json")
                path = self.path.split("?", 1)[0]
                if path == outer.jwks_path:  # a JWK Set URL: kids are labels there
                    jwks = [dict(k.jwk, kid=f"label-{i}") for i, k in enumerate(keys)] + extra
                    doc = jwks[0] if mode == "bare_jwk" else {"keys": jwks}
                    return self._send(200, json.dumps(doc).encode(), jwks_media,
                                      [("Cache-Control", f"max-age={outer.max_age}")])
                if path != DIRECTORY_PATH:
                    return self._send(404, b"not found", "text/plain")
                if mode.startswith("slow:"):
                    time.sleep(float(mode.split(":")[1]))
                    mode = "ok"
                if mode.startswith("status:"):
                    return self._send(int(mode.split(":")[1]), b"{}", "application/json")
                if mode == "redirect":
                    return self._send(301, b"", "text/plain", [("Location", "https://elsewhere.example/")])
                jwks = [dict(k.jwk, kid=k.thumbprint) for k in keys] + extra
                if mode == "too_many":
                    jwks = [dict(Key().jwk) for _ in range(40)]
                if mode == "kid_mismatch":
                    jwks = [dict(k.jwk, kid="not-the-thumbprint") for k in keys]
                body = json.dumps({"keys": jwks}).encode()
                if mode == "bare_jwk":
                    body = json.dumps(jwks[0]).encode()
                    keys = keys[:1]
                if mode == "malformed":
                    body = b'{"keys": [ {"kty": "OKP", '
                if mode == "oversized":
                    body = json.dumps({"keys": jwks, "padding": "x" * 100_000}).encode()
                media = "application/json" if mode == "wrong_type" else DIRECTORY_MEDIA_TYPE
                extra_headers = [("Cache-Control", f"max-age={outer.max_age}")]
                if mode == "odd_header":
                    extra_headers.append(("X-Note", "caf\xe9 \xff"))  # sent as those bytes (latin-1)
                if outer.sign and mode in ("ok", "odd_header", "bare_jwk"):
                    extra_headers += directory_proof(keys, host, body, proofs)
                self._send(200, body, media, extra_headers)

        self._listen(Handler)

    def count(self, host):
        with self.lock:
            return self.fetches.get(host, 0)

    def seen_paths(self, host):
        with self.lock:
            return list(self.paths.get(host, []))


def directory_proof(keys, authority, body, modes=None):
    """Response signatures proving possession of each key (Web Bot Auth directory, section 5).

    `modes` maps a thumbprint to how its proof goes wrong (see `DirectoryServer`)."""
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    now = int(time.time())
    inputs, sigs = [], []
    for k in keys:
        mode = (modes or {}).get(k.thumbprint, "valid")
        if mode == "none":
            continue
        created, expires, signed_for = now, now + 300, authority
        if mode == "future":
            created, expires = now + 3600, now + 3900
        elif mode == "expired":
            created, expires = now - 3600, now - 3300
        elif mode == "bad":
            signed_for = "evil.example"
        label = f"sig{len(inputs) + 1}"
        params = (
            f'("@authority";req "content-digest");created={created};expires={expires};'
            f'keyid="{k.thumbprint}";tag="http-message-signatures-directory"'
        )
        base = f'"@authority";req: {signed_for}\n"content-digest": {digest}\n"@signature-params": {params}'
        inputs.append(f"{label}={params}")
        sigs.append(f"{label}=:{base64.b64encode(k.sign(base.encode())).decode()}:")
    if not inputs:
        return [("Content-Digest", digest)]
    return [("Content-Digest", digest), ("Signature-Input", ", ".join(inputs)), ("Signature", ", ".join(sigs))]


def wait_for(predicate, timeout=60, interval=0.05, what="condition"):
    """Polls `predicate` until it is true (a deadline, not a timing assertion)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def free_port():
    """A loopback TCP port that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway redis-server (Debian's, `make redis-deps`) on a loopback port that stays the
    same across stop() and start(), with no persistence."""

    def __init__(self, workdir):
        self.port = free_port()
        self.dir = str(workdir)
        self.proc = None

    def start(self):
        import shutil

        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self.ready, timeout=20, what="redis-server up")
        return self

    def ready(self):
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class ReplayServer:
    """`wba replay-server` in front of a RedisServer. With a fixed `port` it keeps it across
    stop() and start(); with port 0 the server picks one (read from its first line)."""

    def __init__(self, wba, redis_port, port=None, threads=None):
        self.wba = wba
        self.port = free_port() if port is None else port
        self.redis_port = redis_port
        self.threads = threads
        self.proc = None

    def start(self):
        argv = [self.wba, "replay-server", "--listen", f"127.0.0.1:{self.port}",
                "--redis", f"redis://127.0.0.1:{self.redis_port}"]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (?:http://)?127\.0\.0\.1:(\d+)", line)
        if not m or (self.port and int(m.group(1)) != self.port):
            self.stop()
            raise RuntimeError(f"wba replay-server did not start: {line}")
        self.port = int(m.group(1))
        # Drain its output (one line per Redis state change) so it never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
