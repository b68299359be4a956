"""A signature that covers Content-Digest vouches for the body only once the body is checked
(RFC 9530): the request is held, none of its body reaches the upstream before the verdict, a
body that does not match is refused, one over `max_body_bytes` too. A request whose signature
does not cover the body streams as before; a request paused for its agent's keys holds its
body until it is decided. For wasm, every listener here is the hold companion then the filter
(`front.filters`); chains that cannot hold a body are tests/e2e/test_hold_chain.py's."""

import base64
import hashlib
import json
import socket
import threading
import time

import pytest

from harness import (
    DirectoryServer,
    Envoy,
    Key,
    LoopbackServer,
    QuietHandler,
    bootstrap,
    read_response,
    request,
    sign,
    wait_for,
)

AGENT = "https://agent.test"
SLOW = "https://slow.test"
COVERED = ("@authority", "@method", "@path", "signature-agent", "content-digest")


class RecordingUpstream(LoopbackServer):
    """Records each request as soon as its headers arrive (before reading the body), then
    answers with what it saw, body included."""

    def __init__(self):
        self.arrived = []
        outer = self

        class Handler(QuietHandler):
            def do_POST(self):
                outer.arrived.append(self.path)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = {"path": self.path, "headers": list(self.headers.items()), "body": body.decode()}
                self._send(200, json.dumps(seen).encode(), "application/json")

        self._listen(Handler)

    def saw(self, path):
        return path in self.arrived


def digest(body):
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


@pytest.fixture(scope="module")
def key():
    return Key()


@pytest.fixture(scope="module")
def parts(front, key):
    with RecordingUpstream() as upstream, DirectoryServer(sign=False) as directory:
        directory.behaviour["slow.test"] = "slow:2"
        directory.keys["slow.test"] = [Key()]  # not the signing key: the request ends unverified
        base = {"replay_protection": False, "agents": [{"name": "agent", "url": AGENT, "keys": [key.jwk]}]}
        listeners = {
            "digest": dict(base, mode="enforce"),
            "observe": dict(base, mode="observe"),
            "bounded": dict(base, mode="enforce", max_body_bytes=1024),
            "paused": {
                "mode": "require",
                "replay_protection": False,
                "agents": [{"name": "slow", "url": SLOW, "cluster": "dir"}],
                "directory": {"timeout_ms": 5000},
            },
        }
        built = [
            bootstrap.listener(n, "upstream", front.filters(c)) for n, c in listeners.items()
        ]
        clusters = [bootstrap.cluster("upstream", upstream.port), bootstrap.cluster("dir", directory.port)]
        with Envoy(bootstrap.bootstrap(built, clusters), concurrency=2, front=front) as envoy:
            yield envoy, upstream


def signed_head(key, port, path, body_digest, extra=(), agent=AGENT, components=COVERED, length=None):
    authority = f"127.0.0.1:{port}"
    fields = {"Content-Digest": body_digest}
    h = sign(key, "POST", authority, path, agent=agent, headers=fields, components=components).headers
    lines = [f"POST {path} HTTP/1.1", f"Host: {authority}", f"Content-Digest: {body_digest}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{n}: {v}" for n, v in list(h.items()) + list(extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_signed_body_that_matches_verifies_and_arrives_intact(parts, key):
    envoy, upstream = parts
    port = envoy.ports["digest"]
    body = json.dumps({"order": 42, "qty": 1}).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(signed_head(key, port, "/orders/ok", digest(body), length=len(body)) + body)
        r = read_response(s)
    assert r.status == 200, r.body
    seen = json.loads(r.body)
    assert seen["body"] == body.decode()
    headers = {n.lower(): v for n, v in seen["headers"]}
    assert headers["x-web-bot-auth-result"] == "verified"
    assert "content-digest" in headers["x-web-bot-auth-covered"]


def test_no_byte_reaches_the_upstream_before_the_verdict(parts, key):
    envoy, upstream = parts
    port = envoy.ports["digest"]
    body = b"a" * 5000 + b"b" * 5000
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(signed_head(key, port, "/orders/held", digest(body), length=len(body)) + body[:5000])
        # Whatever the wait, a held request cannot have been forwarded: half its body is missing.
        time.sleep(0.5)
        assert not upstream.saw("/orders/held"), "forwarded before its body was checked"
        s.sendall(body[5000:])
        r = read_response(s)
    assert r.status == 200 and json.loads(r.body)["body"] == body.decode()


def test_a_body_that_does_not_match_is_refused_and_never_forwarded(parts, key):
    envoy, upstream = parts
    port = envoy.ports["digest"]
    body = b'{"order": 42, "qty": 1}'
    tampered = b'{"order": 42, "qty": 9}'
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(signed_head(key, port, "/orders/bad", digest(body), length=len(tampered)) + tampered[:10])
        time.sleep(0.3)
        s.sendall(tampered[10:])
        r = read_response(s)
    assert r.status == 403, r.body
    assert r.json()["reason"] == "digest_mismatch"
    assert not upstream.saw("/orders/bad")
    before = envoy.counters("reason.digest_mismatch")
    assert sum(before.values()) >= 1


def test_a_mismatch_in_observe_mode_is_annotated_never_verified(parts, key):
    envoy, upstream = parts
    port = envoy.ports["observe"]
    body = b"original"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(signed_head(key, port, "/orders/observe", digest(body), length=8) + b"tampered")
        r = read_response(s)
    headers = {n.lower(): v for n, v in json.loads(r.body)["headers"]}
    assert headers["x-web-bot-auth-result"] == "invalid"
    assert headers["x-web-bot-auth-reason"] == "digest_mismatch"


def test_a_body_over_the_bound_is_413_announced_or_streamed(parts, key):
    envoy, upstream = parts
    port = envoy.ports["bounded"]
    body = b"x" * 2000
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(signed_head(key, port, "/big/announced", digest(body), length=len(body)))
        r = read_response(s)
    assert r.status == 413 and r.json()["reason"] == "body_too_large"
    # Chunked, no length: refused once more than 1,024 bytes arrived.
    chunked = signed_head(key, port, "/big/chunked", digest(body), extra=[("Transfer-Encoding", "chunked")])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(chunked)
        for i in range(0, len(body), 500):
            s.sendall(b"%x\r\n" % 500 + body[i : i + 500] + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        r = read_response(s)
    assert r.status == 413 and r.json()["reason"] == "body_too_large"
    assert not upstream.saw("/big/announced") and not upstream.saw("/big/chunked")


def test_a_signature_that_does_not_cover_the_body_streams_as_before(parts, key):
    envoy, upstream = parts
    port = envoy.ports["digest"]
    body = b"y" * 10000
    head = signed_head(key, port, "/stream", digest(body), length=len(body),
                       components=("@authority", "@method", "@path", "signature-agent"))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body[:5000])
        # Forwarded before the body is complete: the upstream has the request already.
        wait_for(lambda: upstream.saw("/stream"), timeout=10, what="the request streaming upstream")
        s.sendall(body[5000:])
        r = read_response(s)
    assert r.status == 200


def test_the_body_of_a_request_paused_for_keys_waits_for_the_verdict(parts, key):
    envoy, upstream = parts
    port = envoy.ports["paused"]
    body = b"z" * 4000
    # Signed for an agent whose keys are still being fetched (the directory answers in 2 s),
    # with a key the directory does not list: in `require` mode it must end as a 403.
    other = Key()
    head = signed_head(other, port, "/paused", digest(body), length=len(body), agent=SLOW,
                       components=("@authority", "@method", "@path", "signature-agent"))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body)
        r = read_response(s)
    assert r.status == 403, r.body
    assert not upstream.saw("/paused"), "the body went upstream before the request was decided"
