"""The hold requirement per chain (wasm): a request whose signature covers its body is forwarded
only once the hold companion of its own filter chain, placed before the filter in the same VM,
has hashed the body and the body matched. One vm_id serves every listener here, as the README
recommends: listeners with the companion before the filter, without it, with it after the
filter (the order of earlier versions) and with a filter between the two. Where the chain cannot
hold the body, the request is refused at once (500 `body_not_held`, counted, one error log line
per VM) and the upstream receives nothing of it, not even its headers; every other request still
passes there. Also: a body that arrives while the request waits for its agent's keys, the
fleet's replay store asked after the body, request trailers named like the filter's headers
removed (held requests' too), and streams that end early."""

import base64
import hashlib
import json
import socket
import threading
import time

import pytest
import yaml

from harness import (
    CRASH_PATTERNS,
    DirectoryServer,
    Envoy,
    Key,
    LoopbackServer,
    QuietHandler,
    bootstrap,
    read_response,
    sign,
    wait_for,
)

pytestmark = pytest.mark.wasm_only("the hold companion is the Wasm module's (the native module buffers a body itself)")

AGENT = "https://agent.test"
COVERED = ("@authority", "@method", "@path", "signature-agent", "content-digest")
NOT_COVERED = ("@authority", "@method", "@path", "signature-agent")
# The error line the filter logs once per VM when a chain cannot hold a signed body.
UNHELD_LINE = "Put the hold entry BEFORE the filter"
# Agents whose keys the directory serves slowly: a request signed by one waits for the fetch.
SLOW = {name: f"https://{name}.test" for name in ("slow-match", "slow-tamper", "slow-bare")}


class RecordingUpstream(LoopbackServer):
    """Records every request it receives as soon as its headers arrive (before reading any of
    its body), whatever the method; then reads the body (by length, or chunked with its
    trailers) and answers with what it saw."""

    def __init__(self):
        self.arrived = []
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def _answer(self):
                with outer.lock:
                    outer.arrived.append(self.path)
                trailers = []
                try:
                    if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                        body = b""
                        while True:
                            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                            if size == 0:
                                break
                            body += self.rfile.read(size)
                            self.rfile.readline()
                        while True:
                            line = self.rfile.readline().rstrip(b"\r\n")
                            if not line:
                                break
                            name, _, value = line.decode("latin-1").partition(":")
                            trailers.append((name, value.strip()))
                    else:
                        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                except (OSError, ValueError):
                    return  # Envoy gave up on this request
                seen = {
                    "path": self.path,
                    "headers": list(self.headers.items()),
                    "body": body.decode("latin-1"),
                    "trailers": trailers,
                }
                self._send(200, json.dumps(seen).encode(), "application/json")

            do_GET = do_POST = do_PUT = _answer

        self._listen(Handler)

    def saw(self, path):
        with self.lock:
            return path in self.arrived


class FakeReplayStore(LoopbackServer):
    """The fleet's replay store as the filter asks it (POST /v1/replay/<id>): answers `answer`
    (201 fresh, 409 used before) and records each question's path."""

    def __init__(self):
        self.answer = 201
        self.calls = []
        outer = self

        class Handler(QuietHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls.append(self.path)
                self._send(outer.answer, b"", "text/plain")

        self._listen(Handler)


def digest(body):
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def head(key, port, path, body_digest=None, agent=AGENT, components=COVERED, length=None, extra=(),
         signed=True, nonce=None):
    """A POST request's head: signed by `key` over `components` (Content-Digest `body_digest`
    among the fields), with Content-Length `length` or, when None, chunked."""
    authority = f"127.0.0.1:{port}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {authority}"]
    fields = {}
    if body_digest is not None:
        fields["Content-Digest"] = body_digest
        lines.append(f"Content-Digest: {body_digest}")
    if signed:
        h = sign(key, "POST", authority, path, agent=agent, headers=fields, components=components, nonce=nonce)
        lines += [f"{n}: {v}" for n, v in h.headers.items()]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    lines += [f"{n}: {v}" for n, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body, trailers=()):
    out = b"%x\r\n" % len(body) + body + b"\r\n" if body else b""
    return out + b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"


def exchange(port, *parts, pause=0.0):
    """Sends `parts` on one connection (`pause` seconds apart) and reads the response."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            s.sendall(part)
        return read_response(s)


def seen(response):
    assert response.status == 200, (response.status, response.body)
    data = json.loads(response.body)
    data["headers"] = {n.lower(): v for n, v in data["headers"]}
    return data


def with_trailers(listener):
    """Lets `listener`'s connection manager accept request trailers over HTTP/1.1."""
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_protocol_options"] = {"enable_trailers": True}
    return listener


@pytest.fixture(scope="module")
def key():
    return Key()


@pytest.fixture(scope="module")
def chains(front, key):
    """One Envoy (one worker: one VM, so the one-line-per-VM log is exactly one line) with one
    vm_id for every listener."""
    wasm = front.artifact
    with RecordingUpstream() as upstream, FakeReplayStore() as store:
        pinned = {"name": "agent", "url": AGENT, "keys": [key.jwk]}
        base = {"mode": "enforce", "replay_protection": False, "agents": [pinned]}
        store_config = dict(base, replay_protection=True,
                            replay_store={"cluster": "store", "timeout_ms": 2000, "on_error": "reject"})

        def hold(name):
            return bootstrap.wasm_filter(wasm, {"role": "hold"}, name=f"{name}_hold")

        def verify(name, cfg=base):
            return bootstrap.wasm_filter(wasm, cfg, name=name)

        buffer_filter = {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 65536,
            },
        }
        chains = {
            "held": [hold("held"), verify("held")],
            "bare": [verify("bare")],
            "after": [verify("after"), hold("after")],
            "bare_observe": [verify("bare_observe", dict(base, mode="observe"))],
            "between": [hold("between"), buffer_filter, verify("between")],
            "store": [hold("store"), verify("store", store_config)],
            "trailers": [hold("trailers"), verify("trailers")],
        }
        listeners = []
        for name, chain in chains.items():
            options = {"underscores": "ALLOW"} if name == "trailers" else {}
            listener = bootstrap.listener(name, "upstream", chain, **options)
            listeners.append(with_trailers(listener) if name == "trailers" else listener)
        up = bootstrap.cluster("upstream", upstream.port)
        up["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
            }
        }
        clusters = [up, bootstrap.cluster("store", store.port)]
        with Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=1, front=front) as envoy:
            yield envoy, upstream, store


def test_a_chain_with_the_companion_before_the_filter_checks_the_body(chains, key):
    envoy, upstream, _ = chains
    port = envoy.ports["held"]
    body = b'{"order": 42, "qty": 1}'
    r = exchange(port, head(key, port, "/held/ok", digest(body), length=len(body)) + body[:5], body[5:], pause=0.3)
    got = seen(r)
    assert got["body"] == body.decode()
    assert got["headers"]["x-web-bot-auth-result"] == "verified"
    assert "content-digest" in got["headers"]["x-web-bot-auth-covered"]
    # Tampered: refused, and nothing of it ever reached the upstream.
    tampered = b'{"order": 42, "qty": 9}'
    r = exchange(port, head(key, port, "/held/tampered", digest(body), length=len(tampered)) + tampered[:5],
                 tampered[5:], pause=0.3)
    assert r.status == 403, r.body
    assert r.json()["reason"] == "digest_mismatch"
    assert not upstream.saw("/held/tampered")


@pytest.mark.parametrize("chain", ["bare", "after", "bare_observe"])
def test_a_chain_that_cannot_hold_refuses_a_signed_body_before_anything_leaves(chains, key, chain):
    """No companion, or the companion after the filter: 500 body_not_held at once, in every mode,
    and the upstream never receives the request, not even its headers."""
    envoy, upstream, _ = chains
    port = envoy.ports[chain]
    before = envoy.counters()
    body = b"a" * 3000
    path = f"/{chain}/signed-body"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head(key, port, path, digest(body), length=len(body)) + body[:1000])
        # Answered before the rest of the body is sent: nothing waits for it.
        r = read_response(s, timeout=10)
    assert r.status == 500, r.body
    problem = r.json()
    assert problem["reason"] == "body_not_held", problem
    after = envoy.counters()
    for name in ("reason.body_not_held", "host_error", "rejected", "outcome.unverified"):
        assert after.get(name, 0) == before.get(name, 0) + 1, name
    time.sleep(0.3)
    assert not upstream.saw(path), "the request reached the upstream"


def test_the_refusal_is_logged_once_per_vm_with_what_to_change(chains, key):
    envoy, _, _ = chains
    for chain in ("bare", "after"):
        port = envoy.ports[chain]
        body = b"xyz"
        r = exchange(port, head(key, port, f"/{chain}/logged", digest(body), length=3) + body)
        assert r.status == 500 and r.json()["reason"] == "body_not_held"
    wait_for(lambda: UNHELD_LINE in envoy.log(), timeout=5, what="the error log line")
    lines = [line for line in envoy.log().splitlines() if UNHELD_LINE in line]
    assert len(lines) == 1, lines  # one worker: one VM
    assert "[error]" in lines[0] and '{"role": "hold"}' in lines[0]


@pytest.mark.parametrize("chain", ["bare", "after", "between"])
def test_other_requests_pass_where_no_body_can_be_held(chains, key, chain):
    """Unsigned requests, signatures that do not cover the body and signed requests without a
    body are decided as ever on a chain that cannot hold a body."""
    envoy, upstream, _ = chains
    port = envoy.ports[chain]
    body = b"y" * 2000
    r = exchange(port, head(key, port, f"/{chain}/unsigned", length=len(body), signed=False) + body)
    assert seen(r)["headers"]["x-web-bot-auth-result"] == "unsigned"
    r = exchange(port, head(key, port, f"/{chain}/not-covered", digest(body), components=NOT_COVERED,
                            length=len(body)) + body)
    got = seen(r)
    assert got["headers"]["x-web-bot-auth-result"] == "verified" and got["body"] == body.decode()
    # Covered, but no body: nothing to hold, checked against the empty body.
    r = exchange(port, head(key, port, f"/{chain}/empty", digest(b""), length=0))
    assert seen(r)["headers"]["x-web-bot-auth-result"] == "verified"


def test_a_companion_of_another_stream_is_never_taken_for_this_ones(chains, key):
    """A request on the companion's chain is in flight (its companion ran and waits for a body no
    filter asked for) while a signed body arrives on chains that cannot hold: they must not link
    that companion (another stream's), and refuse."""
    envoy, upstream, _ = chains
    held = envoy.ports["held"]
    other_body = b"o" * 100
    with socket.create_connection(("127.0.0.1", held)) as other:
        other.sendall(head(key, held, "/held/in-flight", length=len(other_body), signed=False))
        wait_for(lambda: upstream.saw("/held/in-flight"), timeout=10, what="the unsigned request forwarded")
        for chain in ("bare", "after"):
            port = envoy.ports[chain]
            body = b"z" * 50
            path = f"/{chain}/while-another-is-in-flight"
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(head(key, port, path, digest(body), length=len(body)))
                r = read_response(s, timeout=10)
            assert r.status == 500 and r.json()["reason"] == "body_not_held", r.body
            assert not upstream.saw(path)
        other.sendall(other_body)
        assert seen(read_response(other))["body"] == other_body.decode()


def test_a_filter_between_that_lets_the_body_pass_first_means_refusal(chains, key):
    """A filter between the companion and the filter that holds the headers until it has the body
    (Envoy's buffer filter) makes the body pass the companion before the filter can ask for it:
    refused, never forwarded unchecked."""
    envoy, upstream, _ = chains
    port = envoy.ports["between"]
    body = b"b" * 500
    r = exchange(port, head(key, port, "/between/signed-body", digest(body), length=len(body)) + body)
    assert r.status == 500 and r.json()["reason"] == "body_not_held", r.body
    assert not upstream.saw("/between/signed-body")
    wait_for(lambda: "Put the hold entry right before the filter" in envoy.log(), timeout=5,
             what="the error log line about a filter between")


def test_a_body_that_arrives_while_the_keys_are_fetched_is_checked(front, key):
    """The filter pauses for the agent's keys (its directory answers in 2 s) while the body
    passes the companion: the companion hashes it meanwhile, and the verdict covers it once the
    keys are there. Without a companion, the request that waited is refused once its signature
    is known to cover the body. Requests sent as Envoy starts, while its first fetches run."""
    wasm = front.artifact
    with RecordingUpstream() as upstream, DirectoryServer(sign=False) as directory:
        for url in SLOW.values():
            host = url.removeprefix("https://")
            directory.behaviour[host] = "slow:2"
            directory.keys[host] = [key]
        cfg = {
            "mode": "enforce",
            "replay_protection": False,
            "agents": [{"name": n, "url": u, "cluster": "dir"} for n, u in SLOW.items()],
            "directory": {"timeout_ms": 10000},
        }
        listeners = [
            bootstrap.listener("held", "upstream", bootstrap.wasm_filters(wasm, cfg, name="held")),
            bootstrap.listener("bare", "upstream", [bootstrap.wasm_filter(wasm, cfg, name="bare")]),
        ]
        clusters = [bootstrap.cluster("upstream", upstream.port), bootstrap.cluster("dir", directory.port)]
        with Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=1, front=front) as envoy:
            held, bare = envoy.ports["held"], envoy.ports["bare"]
            body, tampered = b"w" * 4000, b"v" * 4000
            sends = {
                "match": (held, head(key, held, "/held/waited", digest(body), agent=SLOW["slow-match"],
                                     length=len(body)) + body[:1000], body[1000:]),
                "tamper": (held, head(key, held, "/held/waited-tampered", digest(body), agent=SLOW["slow-tamper"],
                                      length=len(tampered)) + tampered, b""),
                "bare": (bare, head(key, bare, "/bare/waited", digest(body), agent=SLOW["slow-bare"],
                                    length=len(body)) + body, b""),
            }
            results = {}

            def run(name, port, first, rest):
                results[name] = exchange(port, first, rest, pause=0.5)

            def gone():
                # A client that goes away mid-body while its request waits (its companion linked).
                with socket.create_connection(("127.0.0.1", held)) as s:
                    s.sendall(head(key, held, "/held/waited-gone", digest(body), agent=SLOW["slow-match"],
                                   length=len(body)) + body[:1000])
                    time.sleep(0.5)

            threads = [threading.Thread(target=run, args=(n, *a)) for n, a in sends.items()]
            threads.append(threading.Thread(target=gone))
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert envoy.counter("directory.request_waited") == 4, "the requests did not wait for keys"
            got = seen(results["match"])
            assert got["headers"]["x-web-bot-auth-result"] == "verified" and got["body"] == body.decode()
            r = results["tamper"]
            assert r.status == 403 and r.json()["reason"] == "digest_mismatch", r.body
            r = results["bare"]
            assert r.status == 500 and r.json()["reason"] == "body_not_held", r.body
            assert not upstream.saw("/held/waited-tampered") and not upstream.saw("/bare/waited")
            assert not upstream.saw("/held/waited-gone")
            # The companion and the filter forgot the request that went away: Envoy serves on.
            got = seen(exchange(held, head(key, held, "/held/after", digest(body), agent=SLOW["slow-match"],
                                           length=len(body)) + body))
            assert got["headers"]["x-web-bot-auth-result"] == "verified"
            assert not CRASH_PATTERNS.search(envoy.log()), envoy.log()[-3000:]


def test_the_replay_store_is_asked_after_the_body(chains, key):
    envoy, upstream, store = chains
    port = envoy.ports["store"]
    body = b"s" * 3000
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head(key, port, "/store/fresh", digest(body), length=len(body), nonce="n-fresh") + body[:1000])
        time.sleep(0.3)
        assert store.calls == [], "the store was asked before the body was checked"
        s.sendall(body[1000:])
        got = seen(read_response(s))
    assert got["headers"]["x-web-bot-auth-result"] == "verified" and got["body"] == body.decode()
    assert len(store.calls) == 1
    store.answer = 409
    try:
        r = exchange(port, head(key, port, "/store/used", digest(body), length=len(body), nonce="n-used") + body)
    finally:
        store.answer = 201
    assert r.status == 429 and r.json()["reason"] == "replayed", r.body
    assert not upstream.saw("/store/used")


OWNED_TRAILERS = [("x-web-bot-auth-result", "verified"), ("X_Web_Bot_Auth_Agent", "https://forged.example"),
                  ("X-WEB-BOT-AUTH-KEY-ID", "forged")]


def assert_trailers_stripped(got):
    names = [n.lower().replace("_", "-") for n, _ in got["trailers"]]
    assert "x-other" in names, got["trailers"]
    assert not [n for n in names if n.startswith("x-web-bot-auth-")], got["trailers"]


def test_trailers_named_like_the_filters_headers_are_removed(chains, key):
    envoy, _, _ = chains
    port = envoy.ports["trailers"]
    trailers = OWNED_TRAILERS + [("x-other", "kept")]
    body = b"t" * 100
    # Unsigned: not held, the trailers pass the filter at once.
    got = seen(exchange(port, head(key, port, "/trailers/unsigned", signed=False) + chunked(body, trailers)))
    assert got["body"] == body.decode() and got["headers"]["x-web-bot-auth-result"] == "unsigned"
    assert_trailers_stripped(got)
    # A held signed body: its trailers reach the filter when it is resumed, and go then.
    r = exchange(port, head(key, port, "/trailers/held", digest(body)) + b"%x\r\n" % 40 + body[:40] + b"\r\n",
                 chunked(body[40:], trailers), pause=0.3)
    got = seen(r)
    assert got["body"] == body.decode() and got["headers"]["x-web-bot-auth-result"] == "verified"
    assert_trailers_stripped(got)


def test_streams_that_end_early_leave_nothing_held(chains, key):
    """Clients that go away mid-body while their request is held, then requests as usual."""
    envoy, upstream, _ = chains
    port = envoy.ports["held"]
    body = b"r" * 2000
    for i in range(20):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head(key, port, f"/held/reset-{i}", digest(body), length=len(body)) + body[: 100 * i])
        # Closed with the body incomplete.
    r = exchange(port, head(key, port, "/held/after-resets", digest(body), length=len(body)) + body)
    assert seen(r)["headers"]["x-web-bot-auth-result"] == "verified"
    assert not any(upstream.saw(f"/held/reset-{i}") for i in range(20))
    assert not CRASH_PATTERNS.search(envoy.log()), envoy.log()[-3000:]


def test_the_minimal_configuration_checks_a_signed_body(front):
    """envoy/minimal.yaml as shipped (companion before the filter) holds and checks a body."""
    from test_minimal_config import minimal_config

    agent = Key()
    with RecordingUpstream() as upstream, DirectoryServer() as directory:
        directory.keys["agent.example"] = [agent]
        config = minimal_config(front, upstream.port, directory.port)
        with Envoy(yaml.safe_dump(config), concurrency=1, front=front) as envoy:
            port = envoy.ports["public"]
            body = b'{"minimal": true}'
            r = exchange(port, head(agent, port, "/minimal", digest(body), agent="https://agent.example",
                                    length=len(body)) + body)
            got = seen(r)
            assert got["headers"]["x-web-bot-auth-result"] == "verified" and got["body"] == body.decode()
            r = exchange(port, head(agent, port, "/minimal/tampered", digest(body), agent="https://agent.example",
                                    length=len(body)) + body.upper())
            assert r.status == 403 and r.json()["reason"] == "digest_mismatch"
            assert not upstream.saw("/minimal/tampered")
