"""Two worker threads, a few thousand mixed requests: no 5xx, no filter crash."""

import random
import threading
import http.client

from harness import CRASH_PATTERNS, Key, request, sign

PREFIX = "x-web-bot-auth-"
TOTAL = 3000
THREADS = 8


def corpus(agent_key, port):
    """Mixed traffic: valid, tampered, expired, unknown-key, garbage and unsigned requests."""
    rng = random.Random(9421)
    stranger = Key()
    authority = f"127.0.0.1:{port}"
    out = []
    for i in range(TOTAL):
        path = f"/item/{i}?q={rng.randint(0, 10**6)}"
        kind = rng.choice(["valid", "valid", "valid", "tampered", "unknown_key", "garbage", "unsigned", "forged"])
        comps = ("@authority", "@method", "@path", "signature-agent")
        if kind in ("valid", "tampered"):
            h = sign(agent_key, "GET", authority, path, components=comps, nonce=f"n{i}").headers
            if kind == "tampered":
                path = path.replace("/item/", "/iten/")
        elif kind == "unknown_key":
            h = sign(stranger, "GET", authority, path).headers
        elif kind == "garbage":
            h = {"Signature-Input": "sig1=" + "(" * rng.randint(1, 200), "Signature": "sig1=:" + "A" * rng.randint(0, 300)}
        elif kind == "forged":
            h = {"X-Web-Bot-Auth-Result": "verified"}
        else:
            h = {}
        expected = {"valid": "verified", "tampered": "invalid", "unknown_key": "unverified",
                    "garbage": "invalid", "unsigned": "unsigned", "forged": "unsigned"}[kind]
        out.append((path, h, expected))
    return out


def test_mixed_stream_on_two_workers(envoy, agent_key):
    port = envoy.ports["enforce"]
    work = corpus(agent_key, port)
    before = envoy.counters()
    results = [None] * len(work)

    def run(offset):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(offset, len(work), THREADS):
            path, h, _ = work[i]
            try:
                r = request(port, path=path, headers=h, conn=conn)
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                r = request(port, path=path, headers=h, conn=conn)
            results[i] = r
            if r.header("connection") == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    counts = {}
    for (path, _, expected), r in zip(work, results):
        assert r is not None
        assert r.status < 500, (path, r.status, r.body)
        if r.status == 200:
            got = r.seen().get(PREFIX + "result")
        else:
            got = "invalid"  # enforce rejects only invalid
        assert got == expected, (path, r.status, r.body)
        counts[expected] = counts.get(expected, 0) + 1
    after = envoy.counters()
    for outcome, n in counts.items():
        name = f"outcome.{outcome}"
        assert after.get(name, 0) - before.get(name, 0) == n, outcome
    # Both workers served traffic and the filter never crashed.
    workers = envoy.stats("listener.enforce.worker_")
    served = [v for k, v in workers.items() if k.endswith("downstream_cx_total")]
    assert len(served) == 2 and all(v > 0 for v in served), workers
    assert not CRASH_PATTERNS.search(envoy.log()), CRASH_PATTERNS.search(envoy.log())
    assert envoy.proc.poll() is None
