"""Key directories through Envoy: discovery, cold start, rotation, failures, replay."""

import json
import os
import socket
import subprocess
import sys
import threading
import uuid

import pytest

from harness import (
    ROOT,
    CRASH_PATTERNS,
    DirectoryServer,
    EchoUpstream,
    Envoy,
    Key,
    bootstrap,
    request,
    sign,
    wait_for,
)

PREFIX = "x-web-bot-auth-"
AGENT = "https://agent.test"
OTHER = "https://other.test"
DOWN = "https://down.test"
JWKS = "https://jwks.test/jwks.json"


def wba_binary():
    return os.environ.get("WBA_BIN") or str(ROOT / "target" / "release" / "wba")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def directory_envoy(front, upstream, server, **overrides):
    cfg = {
        "replay_protection": True,
        "agents": [
            {"name": "dir-agent", "url": AGENT, "cluster": "dir"},
            {"name": "other-agent", "url": OTHER, "cluster": "dir"},
            {"name": "down-agent", "url": DOWN, "cluster": "nowhere"},
            {"name": "jwks-agent", "url": JWKS, "cluster": "dir"},
        ],
        "directory": {
            "timeout_ms": 500,
            "min_refresh_seconds": 1,
            "max_cache_seconds": 600,
            "negative_cache_seconds": 1,
        },
    }
    cfg.update(overrides)
    listeners = [
        bootstrap.listener(mode, "upstream", [front.filter(dict(cfg, mode=mode), name=f"wba_{mode}")])
        for mode in ("observe", "enforce")
    ]
    clusters = [
        bootstrap.cluster("upstream", upstream.port),
        bootstrap.cluster("dir", server.port),
        bootstrap.cluster("nowhere", closed_port()),
    ]
    return Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=2, front=front)


def signed(key, port, agent=AGENT, path="/", nonce=True, **kw):
    return sign(key, "GET", f"127.0.0.1:{port}", path, agent=agent,
                nonce=uuid.uuid4().hex if nonce else None, **kw).headers


def verdict(envoy, key, agent=AGENT):
    port = envoy.ports["observe"]
    seen = request(port, headers=signed(key, port, agent=agent)).seen()
    return seen.get(PREFIX + "result"), seen.get(PREFIX + "reason")


def settled(envoy, key, expected, agent=AGENT, runs=12):
    """True when `runs` requests in a row (spread over both workers) get `expected`.

    Each worker adopts a key set another worker fetched within a second (its idle tick), so
    a single answer may still come from a worker that has not caught up.
    """
    return all(verdict(envoy, key, agent) == expected for _ in range(runs))


@pytest.fixture(scope="module")
def upstream():
    with EchoUpstream() as u:
        yield u


def test_cold_start_waits_for_one_fetch(front, upstream):
    k = Key()
    with DirectoryServer(max_age=300) as d:
        d.keys["agent.test"] = [k]
        d.behaviour["agent.test"] = "slow:0.3"  # the first requests arrive while it is fetched
        # A generous timeout: the point is that requests wait for the slow fetch, not its speed.
        settings = {"timeout_ms": 10000, "min_refresh_seconds": 1, "negative_cache_seconds": 1}
        with directory_envoy(front, upstream, d, directory=settings) as envoy:
            port = envoy.ports["enforce"]
            results = [None] * 24

            def one(i):
                results[i] = request(port, headers=signed(k, port, path=f"/cold/{i}"))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for r in results:
                assert r.status == 200, r.body
                assert r.seen().get(PREFIX + "result") == "verified"
            assert 1 <= d.count("agent.test") <= 2, d.fetches
            stats = envoy.counters()
            assert stats["directory.fetch_ok"] >= 1
            assert stats["directory.request_waited"] >= 1
            assert stats["directory.proof.valid"] >= 1
            assert not CRASH_PATTERNS.search(envoy.log())


@pytest.fixture(scope="module")
def directory():
    with DirectoryServer(max_age=2) as d:
        yield d


@pytest.fixture(scope="module")
def envoy(front, upstream, directory):
    directory.keys["agent.test"] = [ORIGINAL]
    directory.keys["other.test"] = [OTHER_KEY]
    directory.keys["jwks.test"] = [JWKS_KEY]
    directory.behaviour["other.test"] = "status:503"
    with directory_envoy(front, upstream, directory) as e:
        yield e
        assert not CRASH_PATTERNS.search(e.log()), CRASH_PATTERNS.search(e.log())


ORIGINAL = Key()
ROTATED = Key()
OTHER_KEY = Key()
JWKS_KEY = Key()


def test_discovered_keys_verify(envoy):
    assert wait_for(lambda: verdict(envoy, ORIGINAL) == ("verified", None), what="verified")
    port = envoy.ports["observe"]
    seen = request(port, headers=signed(ORIGINAL, port)).seen()
    assert seen.get(PREFIX + "agent") == AGENT
    assert seen.get(PREFIX + "agent-name") == "dir-agent"
    assert seen.get(PREFIX + "key-id") == ORIGINAL.thumbprint


def test_rotation_without_restart(envoy, directory):
    directory.keys["agent.test"] = [ORIGINAL, ROTATED]
    # An unknown key id makes the filter refetch (at most once per min_refresh_seconds).
    wait_for(lambda: verdict(envoy, ROTATED) == ("verified", None), what="rotated key verified")
    assert settled(envoy, ROTATED, ("verified", None))
    assert verdict(envoy, ORIGINAL) == ("verified", None)
    directory.keys["agent.test"] = [ROTATED]
    # After the next refresh the dropped key no longer verifies, on any worker.
    wait_for(lambda: settled(envoy, ORIGINAL, ("unverified", "unknown_key")), what="old key dropped")
    assert settled(envoy, ROTATED, ("verified", None))
    directory.keys["agent.test"] = [ORIGINAL, ROTATED]
    wait_for(lambda: settled(envoy, ORIGINAL, ("verified", None)), what="original key back")


FAILURES = [
    ("status:500", "status"),
    ("status:404", "status"),
    ("redirect", "status"),
    ("slow:2", "timeout"),
    ("oversized", "too_large"),
    ("wrong_type", "media_type"),
    ("malformed", "malformed"),
    ("too_many", "too_many_keys"),
    ("kid_mismatch", "kid_mismatch"),
]


@pytest.mark.parametrize("behaviour,kind", FAILURES, ids=[f[0] for f in FAILURES])
def test_directory_failures(envoy, directory, behaviour, kind):
    # A cached agent keeps working through a failing refresh...
    wait_for(lambda: settled(envoy, ORIGINAL, ("verified", None)), what="cached agent verified")
    before = envoy.counters().get(f"directory.fetch_failed.{kind}", 0)
    fetched = directory.count("agent.test")
    directory.behaviour["agent.test"] = behaviour
    directory.behaviour["other.test"] = behaviour
    try:
        # Both agents' fetches fail: the cached one's refresh too (waited for, not raced: the
        # two failures can come from the never-fetched agent alone, retried with backoff,
        # before the cached agent's refresh is due).
        wait_for(lambda: envoy.counters().get(f"directory.fetch_failed.{kind}", 0) >= before + 2
                 and directory.count("agent.test") > fetched,
                 what=f"fetch_failed.{kind} counted, the cached agent refetched")
        assert settled(envoy, ORIGINAL, ("verified", None))
        # ...and an agent whose keys were never fetched is unverified.
        assert settled(envoy, OTHER_KEY, ("unverified", "directory_unavailable"), agent=OTHER)
    finally:
        directory.behaviour["agent.test"] = "ok"
        directory.behaviour["other.test"] = "status:503"


def test_directory_response_header_with_non_utf8_bytes(envoy, directory):
    # HTTP/1.1 allows bytes 0x80-0xFF in field values: no reason to refuse the keys, nor to
    # crash the fetching VM (the module fixture checks the log for crashes).
    wait_for(lambda: settled(envoy, ORIGINAL, ("verified", None)), what="cached agent verified")
    fetched = directory.count("agent.test")
    ok_before = envoy.counters().get("directory.fetch_ok", 0)
    directory.behaviour["agent.test"] = "odd_header"
    try:
        # Two fetches later, at least one of them answered oddly and was accepted.
        wait_for(lambda: directory.count("agent.test") >= fetched + 2
                 and envoy.counters().get("directory.fetch_ok", 0) >= ok_before + 2,
                 what="odd responses accepted")
        assert settled(envoy, ORIGINAL, ("verified", None))
    finally:
        directory.behaviour["agent.test"] = "ok"


def test_stopped_directory_is_unreachable(envoy):
    wait_for(lambda: envoy.counters().get("directory.fetch_failed.unreachable", 0) >= 1, what="unreachable")
    assert verdict(envoy, Key(), agent=DOWN) == ("unverified", "directory_unavailable")


def test_replayed_signature_is_429_across_workers(envoy):
    wait_for(lambda: verdict(envoy, ORIGINAL) == ("verified", None), what="verified")
    port = envoy.ports["enforce"]
    for i in range(12):
        # Without a nonce the signature bytes are the identity: cover the path so they differ.
        h = signed(ORIGINAL, port, path=f"/replay/{i}", nonce=(i % 2 == 0),
                   components=("@authority", "@path", "signature-agent"))
        # Fresh connections, so the two uses land on either worker.
        first = request(port, path=f"/replay/{i}", headers=h)
        second = request(port, path=f"/replay/{i}", headers=h)
        assert first.status == 200, first.body
        assert second.status == 429, second.body
        assert second.json()["reason"] == "replayed"
    workers = envoy.stats("listener.enforce.worker_")
    assert all(v > 0 for n, v in workers.items() if n.endswith("downstream_cx_total")), workers


def test_independent_signers_against_discovered_keys(envoy, tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "interop" / "python"))
    import wba_sign  # PyPI http-message-signatures

    wait_for(lambda: verdict(envoy, ORIGINAL) == ("verified", None), what="verified")
    port = envoy.ports["observe"]
    url = f"http://127.0.0.1:{port}/independent?x=1"
    h = wba_sign.sign("GET", url, {}, ORIGINAL.private_jwk(), AGENT, nonce=uuid.uuid4().hex)
    seen = request(port, path="/independent?x=1", headers=h).seen()
    assert seen.get(PREFIX + "result") == "verified", seen.headers
    assert seen.get(PREFIX + "key-id") == ORIGINAL.thumbprint
    # And our own agent-side tool, `wba sign`, with the same key.
    key_file = tmp_path / "agent.jwk"
    key_file.write_text(json.dumps(ORIGINAL.private_jwk()))
    out = subprocess.run(
        [wba_binary(), "sign", "--key", str(key_file), "--agent", AGENT, "--method", "GET",
         "--url", f"http://127.0.0.1:{port}/ours", "--random-nonce"],
        capture_output=True, text=True, check=True,
    ).stdout
    h = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    seen = request(port, path="/ours", headers=h).seen()
    assert seen.get(PREFIX + "result") == "verified", (out, seen.headers)


def test_jwks_uri_agent(envoy):
    """A JWK Set URL agent, signed with the previous draft's `type=jwks_uri` member (still read as
    the same JWK Set): `kid` is a label there, keys match by thumbprint."""
    port = envoy.ports["observe"]

    def check():
        h = signed(JWKS_KEY, port, agent=JWKS, agent_type="jwks_uri")
        seen = request(port, headers=h).seen()
        return (seen.get(PREFIX + "result"), seen.get(PREFIX + "agent"), seen.get(PREFIX + "key-id"))

    assert wait_for(lambda: check() == ("verified", JWKS, JWKS_KEY.thumbprint), what="jwks_uri verified")
    # The same key named by the origin (its well-known directory) is another agent: not trusted.
    h = signed(JWKS_KEY, port, agent="https://jwks.test")
    assert request(port, headers=h).seen().get(PREFIX + "reason") == "unknown_agent"
