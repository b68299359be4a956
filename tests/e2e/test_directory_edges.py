"""Key directory edge cases through a real Envoy and a real directory server: unusable keys
skipped, possession proofs per key, `directory.require_proof`, a key-set URL's query, and
plugins with different bounds sharing one Envoy (and its shared data)."""

import base64
import re
import uuid

import pytest

from harness import (
    CRASH_PATTERNS,
    DirectoryServer,
    EchoUpstream,
    Envoy,
    Key,
    b64u,
    bootstrap,
    request,
    sign,
    wait_for,
)

PREFIX = "x-web-bot-auth-"
SETTINGS = {
    "timeout_ms": 1000,
    "min_refresh_seconds": 1,
    "max_cache_seconds": 600,
    "negative_cache_seconds": 1,
}

SKIP = "https://skip.test"
PROOF = "https://proof.test"
BOUNDS = "https://bounds.test"
JWKS_Q = "https://jwksq.test/jwks.json?v=2"
JWKS_ID = "https://jwksq.test/jwks.json"

GOOD = Key()
WRONG_ALG = Key()
ENC = Key()
VALID = Key()
INVALID = Key()
FUTURE = Key()
ABSENT = Key()
JWKS_KEY = Key()
BOUND_KEYS = [Key(), Key(), Key()]

# Entries a verifier cannot use, listed next to GOOD.
UNUSABLE = [
    {"kty": "XYZ", "kid": "mystery"},
    dict(ENC.jwk, use="enc", kid=ENC.thumbprint),
    {"kty": "OKP", "crv": "Ed25519", "x": b64u(b"\x01" * 31)},
    dict(WRONG_ALG.jwk, alg="RS256", kid=WRONG_ALG.thumbprint),
]

LOG_LINE = re.compile(
    r'"GET (?P<path>\S+)" (?P<status>\d+) wba_result=(?P<result>\S+) wba_reason=(?P<reason>\S+) '
    r"wba_agent=(?P<agent>\S+) wba_key_id=(?P<key_id>\S+) wba_proof=(?P<proof>\S+)"
)


def agent(name, url, **kw):
    return dict({"name": name, "url": url, "cluster": "dir"}, **kw)


def plugin(agents, **overrides):
    cfg = {"mode": "observe", "replay_protection": False, "agents": agents, "directory": dict(SETTINGS)}
    cfg.update(overrides)
    return cfg


def edges_envoy(front, upstream, server, workdir, plugins):
    """An Envoy with one listener (and access log) per entry of `plugins`: name -> config."""
    listeners = [
        bootstrap.listener(
            name,
            "upstream",
            [front.filter(cfg, name=f"wba_{name}")],
            access_log_path=str(workdir / f"access-{name}.log"),
        )
        for name, cfg in plugins.items()
    ]
    clusters = [bootstrap.cluster("upstream", upstream.port), bootstrap.cluster("dir", server.port)]
    return Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=2, workdir=str(workdir), front=front)


def call(envoy, listener, key, agent_url, **kw):
    """One signed request on `listener`: (result, reason, key id, path)."""
    port = envoy.ports[listener]
    path = f"/edge/{uuid.uuid4().hex}"
    h = sign(key, "GET", f"127.0.0.1:{port}", path, agent=agent_url, nonce=uuid.uuid4().hex, **kw).headers
    seen = request(port, path=path, headers=h).seen()
    return seen.get(PREFIX + "result"), seen.get(PREFIX + "reason"), seen.get(PREFIX + "key-id"), path


def verdict(envoy, listener, key, agent_url, **kw):
    return call(envoy, listener, key, agent_url, **kw)[:2]


def settled(envoy, listener, key, agent_url, expected, runs=12, **kw):
    """`runs` requests in a row (fresh connections, so over both workers) get `expected`."""
    return all(verdict(envoy, listener, key, agent_url, **kw) == expected for _ in range(runs))


def access_log(envoy, listener, path):
    """The access-log entry of the request to `path` (waits for the file to be flushed)."""

    def find():
        text = (envoy.dir / f"access-{listener}.log").read_text(errors="replace") if (
            envoy.dir / f"access-{listener}.log"
        ).exists() else ""
        for line in text.splitlines():
            m = LOG_LINE.search(line)
            if m and m["path"] == path:
                return m.groupdict()
        return None

    return wait_for(find, timeout=30, what=f"access log line for {path}")


@pytest.fixture(scope="module")
def upstream():
    with EchoUpstream() as u:
        yield u


@pytest.fixture(scope="module")
def directory():
    with DirectoryServer(max_age=300) as d:
        d.keys["skip.test"] = [GOOD]
        d.extra["skip.test"] = UNUSABLE
        d.keys["proof.test"] = [VALID, INVALID, FUTURE, ABSENT]
        d.proofs["proof.test"] = {
            INVALID.thumbprint: "bad",
            FUTURE.thumbprint: "future",
            ABSENT.thumbprint: "none",
        }
        d.keys["jwksq.test"] = [JWKS_KEY]
        d.keys["bounds.test"] = BOUND_KEYS
        yield d


@pytest.fixture(scope="module")
def envoy(front, upstream, directory, tmp_path_factory):
    """Plugins that old builds also accept (no require_proof)."""
    agents = [
        agent("skip-agent", SKIP),
        agent("proof-agent", PROOF),
        agent("jwks-agent", JWKS_Q),
    ]
    with edges_envoy(front, upstream, directory, tmp_path_factory.mktemp("edges"), {"main": plugin(agents)}) as e:
        yield e
        assert not CRASH_PATTERNS.search(e.log()), CRASH_PATTERNS.search(e.log())


def test_an_unusable_key_is_skipped_not_the_set(envoy):
    wait_for(lambda: verdict(envoy, "main", GOOD, SKIP) == ("verified", None), what="good key verified")
    assert settled(envoy, "main", GOOD, SKIP, ("verified", None))
    # The unusable entries are not used (their keys are unknown), and they are counted.
    assert verdict(envoy, "main", WRONG_ALG, SKIP) == ("unverified", "unknown_key")
    assert verdict(envoy, "main", ENC, SKIP) == ("unverified", "unknown_key")
    stats = envoy.counters()
    assert stats.get("directory.key_skipped", 0) >= len(UNUSABLE), stats
    assert stats.get("directory.fetch_failed.malformed", 0) == 0, stats


def test_proof_status_is_per_key_and_logged(envoy):
    # Every key is used, whatever its proof; the access log says which proof the key that
    # verified had.
    expected = {VALID: "valid", INVALID: "invalid", FUTURE: "invalid", ABSENT: "absent"}
    wait_for(lambda: verdict(envoy, "main", VALID, PROOF) == ("verified", None), what="proof.test fetched")
    for key, proof in expected.items():
        result, reason, key_id, path = call(envoy, "main", key, PROOF)
        assert (result, reason, key_id) == ("verified", None, key.thumbprint)
        entry = access_log(envoy, "main", path)
        assert (entry["result"], entry["key_id"], entry["proof"]) == ("verified", key.thumbprint, proof), entry
    stats = envoy.counters()
    # Counted per key of each accepted fetch.
    assert stats.get("directory.proof.invalid", 0) >= 2, stats
    assert stats.get("directory.proof.valid", 0) >= 1, stats
    assert stats.get("directory.proof.absent", 0) >= 1, stats
    assert stats.get("directory.fetch_failed.bad_proof", 0) == 0, stats


def test_a_key_set_url_keeps_its_query_when_fetched(envoy, directory):
    def check(agent_url):
        result, reason, key_id, _ = call(envoy, "main", JWKS_KEY, agent_url)
        return result, key_id

    wait_for(lambda: check(JWKS_ID) == ("verified", JWKS_KEY.thumbprint), what="JWK Set URL verified")
    paths = directory.seen_paths("jwksq.test")
    assert paths and all(p == "/jwks.json?v=2" for p in paths), paths
    # The identity drops the query: named with or without it, it is the same agent (and the
    # previous draft's `type="jwks_uri"` member names it too).
    port = envoy.ports["main"]
    h = sign(JWKS_KEY, "GET", f"127.0.0.1:{port}", "/", agent=JWKS_Q, agent_type="jwks_uri",
             nonce=uuid.uuid4().hex).headers
    seen = request(port, headers=h).seen()
    assert seen.get(PREFIX + "result") == "verified"
    assert seen.get(PREFIX + "agent") == JWKS_ID


def test_require_proof_uses_only_proven_keys(front, upstream, directory, tmp_path):
    agents = [agent("proof-agent", PROOF), agent("skip-agent", SKIP)]
    plugins = {"require": plugin(agents, directory=dict(SETTINGS, require_proof=True))}
    with edges_envoy(front, upstream, directory, tmp_path, plugins) as envoy:
        wait_for(lambda: verdict(envoy, "require", VALID, PROOF) == ("verified", None), what="valid key verified")
        result, _, _, path = call(envoy, "require", VALID, PROOF)
        assert result == "verified"
        assert access_log(envoy, "require", path)["proof"] == "valid"
        # Invalid (another authority, created in the future) and absent proofs: not used.
        for key in (INVALID, FUTURE, ABSENT):
            assert settled(envoy, "require", key, PROOF, ("unverified", "unknown_key"), runs=4)
        # skip.test signs GOOD's proof; its unusable entries are skipped either way.
        assert verdict(envoy, "require", GOOD, SKIP) == ("verified", None)
        stats = envoy.counters()
        assert stats.get("directory.key_skipped", 0) >= 3 + len(UNUSABLE), stats
        assert stats.get("directory.proof.invalid", 0) == 0, stats
        assert stats.get("directory.proof.absent", 0) == 0, stats
        assert not CRASH_PATTERNS.search(envoy.log())


def test_require_proof_without_any_valid_proof_is_a_failed_fetch(front, upstream, tmp_path):
    k = Key()
    with DirectoryServer(max_age=300) as d:
        d.keys["unproven.test"] = [k]
        d.proofs["unproven.test"] = {k.thumbprint: "future"}
        plugins = {
            "require": plugin([agent("u", "https://unproven.test")], directory=dict(SETTINGS, require_proof=True)),
            "lenient": plugin([agent("u", "https://unproven.test")]),
        }
        with edges_envoy(front, upstream, d, tmp_path, plugins) as envoy:
            wait_for(lambda: envoy.counters().get("directory.fetch_failed.bad_proof", 0) >= 1,
                     what="bad_proof counted")
            assert settled(envoy, "require", k, "https://unproven.test",
                           ("unverified", "directory_unavailable"), runs=4)
            # The same agent without require_proof: the key is used, its proof logged invalid.
            wait_for(lambda: verdict(envoy, "lenient", k, "https://unproven.test") == ("verified", None),
                     what="lenient verified")
            result, _, _, path = call(envoy, "lenient", k, "https://unproven.test")
            assert result == "verified"
            assert access_log(envoy, "lenient", path)["proof"] == "invalid"


def test_plugins_with_different_max_keys_decide_with_their_own_bounds(front, upstream, directory, tmp_path):
    plugins = {
        "loose": plugin([agent("b", BOUNDS)]),
        "strict": plugin([agent("b", BOUNDS)], directory=dict(SETTINGS, max_keys=2)),
    }
    with edges_envoy(front, upstream, directory, tmp_path, plugins) as envoy:
        key = BOUND_KEYS[0]
        wait_for(lambda: settled(envoy, "loose", key, BOUNDS, ("verified", None)), what="loose verified")
        # The strict plugin never adopts the set the loose one accepted, on any worker...
        results = [verdict(envoy, "strict", key, BOUNDS) for _ in range(16)]
        assert set(results) == {("unverified", "directory_unavailable")}, results
        # ...it fetches for itself, and refuses the set each time.
        wait_for(lambda: envoy.counters().get("directory.fetch_failed.too_many_keys", 0) >= 2,
                 what="strict refused the set twice")
        assert settled(envoy, "strict", key, BOUNDS, ("unverified", "directory_unavailable"))
        assert settled(envoy, "loose", key, BOUNDS, ("verified", None))


def test_plugins_with_different_require_proof_decide_with_their_own_bounds(front, upstream, directory, tmp_path):
    plugins = {
        "lenient": plugin([agent("p", PROOF)]),
        "require": plugin([agent("p", PROOF)], directory=dict(SETTINGS, require_proof=True)),
    }
    with edges_envoy(front, upstream, directory, tmp_path, plugins) as envoy:
        for listener in ("lenient", "require"):
            wait_for(lambda: verdict(envoy, listener, VALID, PROOF) == ("verified", None),
                     what=f"{listener} verified")
        assert settled(envoy, "lenient", INVALID, PROOF, ("verified", None))
        results = [verdict(envoy, "require", INVALID, PROOF) for _ in range(16)]
        assert set(results) == {("unverified", "unknown_key")}, results
