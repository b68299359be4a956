"""Replay protection across two workers in a real Envoy: no trusted agent can make another's
captured request verify again (the bucket is secret, a live record is never evicted), and one
signature sent to both workers at once is never accepted twice. The key-cache fetch lease has
the same race and is proved the same way: 2,000 agents fetched at start by two workers, each
directory fetched once."""

import hashlib
import re
import socket
import threading

import pytest

from harness import DirectoryServer, EchoUpstream, Envoy, Key, bootstrap, request, sign, wait_for

VICTIM = "https://victim.test"
ATTACKER = "https://attacker.test"
DAY = 86_000


def replay_config(victim, attacker, **overrides):
    cfg = {
        "mode": "enforce",
        "replay_protection": True,
        "agents": [
            {"name": "victim", "url": VICTIM, "keys": [victim.jwk]},
            {"name": "attacker", "url": ATTACKER, "keys": [attacker.jwk]},
        ],
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def keys():
    return Key(), Key()


@pytest.fixture(scope="module")
def upstream():
    with EchoUpstream() as u:
        yield u


def start_envoy(front, upstream, listeners):
    """An Envoy (two workers) with one listener per (name, plugin config, listener options);
    started by `with`."""
    built = []
    for name, cfg, options in listeners:
        built.append(
            {
                **bootstrap.listener(name, "upstream", [front.filter(cfg)]),
                **options,
            }
        )
    return Envoy(bootstrap.bootstrap(built, [bootstrap.cluster("upstream", upstream.port)]), concurrency=2,
                 front=front)


def old_bucket(agent, nonce):
    """The replay bucket of a nonce as the table before this fix chose it: a public function."""
    digest = hashlib.sha256(agent.encode() + b"\0" + b"n" + nonce.encode()).digest()
    return int.from_bytes(digest[:2], "big") % 4096


def ground_nonces(target_bucket, count):
    """Attacker nonces that the old table put in `target_bucket`."""
    out, i = [], 0
    while len(out) < count:
        n = f"grind-{i}"
        if old_bucket(ATTACKER, n) == target_bucket:
            out.append(n)
        i += 1
    return out


def send(port, key, agent, path, nonce, validity):
    authority = f"127.0.0.1:{port}"
    h = sign(key, "GET", authority, path, agent=agent, nonce=nonce, validity=validity).headers
    return h, request(port, path=path, headers=h)


def test_another_agent_cannot_evict_a_captured_request(front, upstream, keys):
    victim, attacker = keys
    with start_envoy(front, upstream, [("main", replay_config(victim, attacker), {})]) as envoy:
        port = envoy.ports["main"]
        captured, first = send(port, victim, VICTIM, "/pay", "victim-1", 300)
        assert first.status == 200 and first.seen().get("x-web-bot-auth-result") == "verified"
        assert request(port, path="/pay", headers=captured).status == 429
        # The attacker holds a trusted key of its own and aims 20 long-lived signatures at the
        # bucket of the victim's record, as the bucket function was public.
        for nonce in ground_nonces(old_bucket(VICTIM, "victim-1"), 20):
            _, r = send(port, attacker, ATTACKER, "/x", nonce, DAY)
            assert r.status in (200, 429), r.body
        replay = request(port, path="/pay", headers=captured)
        assert replay.status == 429, f"the captured request verified again: {replay.status}"
        assert '"reason":"replayed"' in replay.body


def test_a_full_table_refuses_new_signatures_and_keeps_every_record(front, upstream, keys):
    victim, attacker = keys
    # One bucket of 16: every signature lands in it, so the attacker can fill it for sure.
    cfg = replay_config(victim, attacker, replay_capacity=16)
    with start_envoy(front, upstream, [("tiny", cfg, {})]) as envoy:
        port = envoy.ports["tiny"]
        captured, first = send(port, victim, VICTIM, "/pay", "victim-1", 300)
        assert first.status == 200
        statuses = [send(port, attacker, ATTACKER, "/x", f"fill-{i}", DAY)[1].status for i in range(20)]
        assert statuses.count(200) == 15 and statuses.count(429) == 5, statuses
        assert request(port, path="/pay", headers=captured).status == 429
        # Fails closed: a fresh signature of the victim is refused too, and counted.
        _, fresh = send(port, victim, VICTIM, "/pay", "victim-2", 300)
        assert fresh.status == 429
        assert "no room" in fresh.json()["detail"]
        assert envoy.counter("replay.full") == 6


class Connection:
    """A persistent HTTP/1.1 connection that sends prepared bytes and reads one response."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def exchange(self, data):
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head_end = self.buf.index(b"\r\n\r\n") + 4
        head = self.buf[:head_end]
        length = int(re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head).group(1))
        while len(self.buf) < head_end + length:
            self.buf += self._recv()
        self.buf = self.buf[head_end + length:]
        return int(head.split(b" ", 2)[1])

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        return chunk

    def close(self):
        self.sock.close()


def worker_connections(envoy, listener):
    """Active downstream connections per worker of a listener (Envoy's per-worker stats)."""
    out = {}
    for line in envoy.admin(f"/stats?filter=^listener\\.{listener}\\.worker_").splitlines():
        name, _, value = line.partition(": ")
        if name.endswith("downstream_cx_active"):
            out[name.split(".")[-2]] = int(value)
    return out


PAIRS = 2000


def test_one_signature_on_both_workers_at_once_is_accepted_once(front, upstream, keys):
    victim, attacker = keys
    # Connections balanced exactly across the two workers (one socket, no SO_REUSEPORT).
    options = {"connection_balance_config": {"exact_balance": {}}, "enable_reuse_port": False}
    with start_envoy(front, upstream, [("race", replay_config(victim, attacker), options)]) as envoy:
        port = envoy.ports["race"]
        conns = [Connection(port), Connection(port)]
        wait_for(
            lambda: worker_connections(envoy, "race") == {"worker_0": 1, "worker_1": 1},
            what="one connection on each worker",
        )
        authority = f"127.0.0.1:{port}"
        payloads = []
        for i in range(PAIRS):
            h = sign(victim, "GET", authority, f"/race/{i}", agent=VICTIM, nonce=f"race-{i}").headers
            lines = [f"GET /race/{i} HTTP/1.1", f"Host: {authority}"] + [f"{n}: {v}" for n, v in h.items()]
            payloads.append(("\r\n".join(lines) + "\r\n\r\n").encode())
        barrier = threading.Barrier(2)
        results = [[None] * PAIRS, [None] * PAIRS]

        def run(side):
            for i, data in enumerate(payloads):
                barrier.wait()
                results[side][i] = conns[side].exchange(data)

        threads = [threading.Thread(target=run, args=(s,)) for s in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in conns:
            c.close()
        pairs = list(zip(*results))
        double = [i for i, p in enumerate(pairs) if p == (200, 200)]
        assert not double, f"{len(double)} of {PAIRS} signatures accepted twice, e.g. pair {double[0]}"
        assert all(sorted(p) == [200, 429] for p in pairs), [p for p in pairs if sorted(p) != [200, 429]][:5]
        # Both workers really took part.
        assert {results[0].count(200) > 0, results[1].count(200) > 0} == {True}


AGENTS = 2000


def test_each_directory_is_fetched_once_by_two_workers(front, upstream):
    key = Key()
    with DirectoryServer(max_age=600) as server:
        for i in range(AGENTS):
            server.keys[f"a{i}.test"] = [key]
        cfg = {
            "mode": "enforce",
            "replay_protection": False,
            "agents": [{"name": f"a{i}", "url": f"https://a{i}.test", "cluster": "dir"} for i in range(AGENTS)],
            "directory": {"timeout_ms": 20000, "min_refresh_seconds": 300},
        }
        cluster = bootstrap.cluster("dir", server.port, timeout="10s")
        # Room for every fetch at once: no circuit-breaker overflow (a failure, then a retry).
        limit = {"max_connections": 10000, "max_pending_requests": 10000, "max_requests": 10000}
        cluster["circuit_breakers"] = {"thresholds": [limit]}
        listener = bootstrap.listener("lease", "upstream", [front.filter(cfg)])
        config = bootstrap.bootstrap([listener], [bootstrap.cluster("upstream", upstream.port), cluster])
        # Both workers start, and each claims every agent's fetch lease in its first tick.
        with Envoy(config, concurrency=2, front=front) as envoy:
            def served():
                with server.lock:
                    return dict(server.fetches)

            def settled():
                done = envoy.counter("directory.fetch_ok")
                total = sum(served().values())
                return len(served()) == AGENTS and done == total

            wait_for(settled, timeout=120, interval=0.2, what="every directory fetched, none in flight")
            twice = {h: n for h, n in served().items() if n != 1}
            assert not twice, f"{len(twice)} directories fetched more than once: {list(twice.items())[:5]}"
            port = envoy.ports["lease"]
            h = sign(key, "GET", f"127.0.0.1:{port}", "/", agent="https://a1234.test").headers
            assert request(port, headers=h).seen().get("x-web-bot-auth-result") == "verified"
