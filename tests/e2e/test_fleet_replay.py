"""Replay protection across a fleet: two Envoy processes share `wba replay-server` (a real Redis
behind it, Debian's `redis-server` on a free port). A signature used at one Envoy is refused at
the other, simultaneous double-spends across the two are never both accepted, and when Redis or
the replay server goes away every verified request gets the `on_error` behaviour (no hang,
counted) until it is back, with nothing restarted."""

import http.client
import os
import threading

import pytest

from harness import (
    ROOT,
    EchoUpstream,
    Envoy,
    Key,
    RedisServer,
    ReplayServer,
    bootstrap,
    request,
    sign,
    wait_for,
)

AGENT = "https://agent.test"


def wba_binary():
    return os.environ.get("WBA_BIN") or str(ROOT / "target" / "release" / "wba")


def fleet_config(key, on_error):
    return {
        "mode": "enforce",
        "agents": [{"name": "agent", "url": AGENT, "keys": [key.jwk]}],
        "replay_store": {"cluster": "wba_replay", "timeout_ms": 250, "on_error": on_error},
    }


@pytest.fixture(scope="module")
def fleet(front, tmp_path_factory):
    key = Key()
    tmp = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(tmp).start()
    server = ReplayServer(wba_binary(), redis.port).start()
    with EchoUpstream() as upstream:
        envoys = []
        for _ in range(2):
            listeners = [
                bootstrap.listener(name, "upstream", front.filters(fleet_config(key, name)))
                for name in ("reject", "accept")
            ]
            clusters = [bootstrap.cluster("upstream", upstream.port),
                        bootstrap.cluster("wba_replay", server.port, timeout="0.25s")]
            e = Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=2, front=front)
            e.start()
            envoys.append(e)
        try:
            yield key, envoys, redis, server
        finally:
            for e in envoys:
                e.stop()
            server.stop()
            redis.stop()


HOST = "shop.test"


def send(envoy, key, path, listener="reject", headers=None):
    """A request signed for HOST (so the same signature fits every listener of every Envoy)."""
    h = headers or sign(key, "GET", HOST, path, agent=AGENT, nonce=os.urandom(8).hex()).headers
    return h, request(envoy.ports[listener], path=path, headers=h, host=HOST)


def stat(envoy, name):
    return envoy.counter(name)


def test_a_signature_used_at_one_envoy_is_refused_at_the_other(fleet):
    key, (a, b), _, _ = fleet
    # Both listeners of both Envoys cover the same authority, so one signature fits them all.
    h, first = send(a, key, "/pay")
    assert first.status == 200 and first.seen().get("x-web-bot-auth-result") == "verified"
    _, again = send(b, key, "/pay", headers=h)
    assert again.status == 429, again.body
    assert "replay store" in again.json()["detail"]
    assert stat(b, "replay.store.replayed") >= 1
    # And at the first Envoy, its own table answers without asking the store.
    assert send(a, key, "/pay", headers=h)[1].status == 429


PAIRS = 1000


def test_simultaneous_double_spends_across_two_envoys_are_never_both_accepted(fleet):
    key, (a, b), _, _ = fleet
    signed = [sign(key, "GET", HOST, f"/race/{i}", agent=AGENT, nonce=f"race-{i}").headers
              for i in range(PAIRS)]
    barrier = threading.Barrier(2)
    results = [[None] * PAIRS, [None] * PAIRS]

    def run(side, envoy):
        port = envoy.ports["reject"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i, h in enumerate(signed):
            barrier.wait()
            results[side][i] = request(port, path=f"/race/{i}", headers=h, host=HOST, conn=conn).status

    threads = [threading.Thread(target=run, args=(0, a)), threading.Thread(target=run, args=(1, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pairs = list(zip(*results))
    double = [i for i, p in enumerate(pairs) if p == (200, 200)]
    assert not double, f"{len(double)} of {PAIRS} signatures accepted at both Envoys"
    assert all(sorted(p) == [200, 429] for p in pairs), [p for p in pairs if sorted(p) != [200, 429]][:5]


def test_redis_down_means_on_error_then_recovery_without_restarts(fleet):
    key, (a, b), redis, _ = fleet
    errors_before = stat(a, "replay.store.error")
    redis.stop()
    try:
        for i in range(5):
            _, r = send(a, key, f"/down/{i}")
            # Fails closed, promptly (the client's own timeout is 10 s; no hang).
            assert r.status == 503, r.body
            assert r.json()["reason"] == "replay_store_unavailable"
            _, ok = send(a, key, f"/down-accept/{i}", listener="accept")
            assert ok.status == 200 and ok.seen().get("x-web-bot-auth-result") == "verified"
        assert stat(a, "replay.store.error") >= errors_before + 10
        assert stat(a, "replay.store.accepted_on_error") >= 5
        assert stat(a, "reason.replay_store_unavailable") >= 5
    finally:
        redis.start()
    # Back: fresh signatures verify again at both Envoys, nothing restarted.
    wait_for(lambda: send(a, key, "/back")[1].status == 200, timeout=30, what="verification with Redis back")
    assert send(b, key, "/back-b")[1].status == 200


def test_a_restarted_replay_server_serves_again_and_remembers(fleet):
    key, (a, b), _, server = fleet
    h, first = send(a, key, "/before-restart")
    assert first.status == 200
    server.stop()
    _, down = send(b, key, "/while-down")
    assert down.status == 503, down.body
    server.start()
    wait_for(lambda: send(b, key, "/after")[1].status == 200, timeout=30, what="the replay server back")
    # Redis kept the record: the signature used before the restart is still refused elsewhere.
    _, again = send(b, key, "/before-restart", headers=h)
    assert again.status == 429, again.body
