"""Every Signature-Agent dialect through a real Envoy, with keys from a real directory server.

One identity model: an agent is the JWK Set its keys come from; an origin means its
well-known directory. Signed by independent signers where one exists (npm `web-bot-auth` for the
legacy string, PyPI `http-message-signatures` for the dictionary forms, whose headers the test
builds), by our harness for the forms those signers cannot make, and by `wba sign`.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import http_sf
import pytest

from harness import (
    CRASH_PATTERNS,
    ROOT,
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

sys.path.insert(0, str(ROOT / "tests" / "interop" / "python"))
import wba_sign  # noqa: E402  (PyPI http-message-signatures)

PREFIX = "x-web-bot-auth-"
WELL_KNOWN = "/.well-known/http-message-signatures-directory"

ORIGIN = "https://agent.test"  # configured as an origin
WK = "https://wk.test"  # configured by its well-known directory URL
JWKS = "https://jwks.test/keys/jwks.json"  # a -01 direct JWK Set URL
BARE = "https://bare.test"  # serves a bare JWK
MIXED = "https://mixed.test"  # a directory mixing key types

ORIGIN_KEY, WK_KEY, JWKS_KEY, BARE_KEY, MIXED_KEY = Key(), Key(), Key(), Key(), Key()


def thumbprint(jwk):
    """RFC 7638: the required members in lexicographic order, no whitespace."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    canonical = json.dumps({m: jwk[m] for m in members[jwk["kty"]]}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canonical.encode()).digest())


# RFC 7517 Appendix A.1's public keys: an EC P-256 key and an RSA key.
EC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
    "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
    "alg": "ES256",
    "use": "sig",
}
RSA_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "PS512",
}
# Entries served next to the Ed25519 keys: at the well-known location kids are thumbprints,
# with the members real directories carry (`alg` spellings, `use`, `nbf`, `exp`, unknown ones).
MIXED_EXTRA = [
    dict(EC_JWK, kid=thumbprint(EC_JWK)),
    dict(RSA_JWK, kid=thumbprint(RSA_JWK), nbf=1, exp=4102444800, x5u="https://mixed.test/x"),
    {"kty": "oct-ish", "kid": "mystery"},
]


@pytest.fixture(scope="module")
def upstream():
    with EchoUpstream() as u:
        yield u


@pytest.fixture(scope="module")
def directory():
    with DirectoryServer(max_age=300, jwks_path="/keys/jwks.json") as d:
        d.keys["agent.test"] = [ORIGIN_KEY]
        d.keys["wk.test"] = [WK_KEY]
        d.keys["jwks.test"] = [JWKS_KEY]
        d.jwks_media["jwks.test"] = "application/jwk-set+json"
        d.extra["jwks.test"] = [dict(EC_JWK, kid="ec-label")]
        d.keys["bare.test"] = [BARE_KEY]
        d.behaviour["bare.test"] = "bare_jwk"
        d.keys["mixed.test"] = [MIXED_KEY]
        d.extra["mixed.test"] = MIXED_EXTRA
        yield d


@pytest.fixture(scope="module")
def envoy(front, upstream, directory):
    cfg = {
        "replay_protection": False,
        "agents": [
            {"name": "origin-agent", "url": ORIGIN, "cluster": "dir"},
            {"name": "wk-agent", "url": WK + WELL_KNOWN, "cluster": "dir"},
            {"name": "jwks-agent", "url": JWKS, "cluster": "dir"},
            {"name": "bare-agent", "url": BARE, "cluster": "dir"},
            {"name": "mixed-agent", "url": MIXED, "cluster": "dir"},
        ],
        "directory": {"timeout_ms": 2000, "min_refresh_seconds": 1, "negative_cache_seconds": 1},
    }
    listeners = [
        bootstrap.listener(mode, "upstream", [front.filter(dict(cfg, mode=mode), name=f"wba_{mode}")])
        for mode in ("observe", "require")
    ]
    clusters = [bootstrap.cluster("upstream", upstream.port), bootstrap.cluster("dir", directory.port)]
    with Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=2, front=front) as e:
        # Every agent's keys fetched (the first request of each waits for its fetch).
        for agent, key in [(ORIGIN, ORIGIN_KEY), (WK, WK_KEY), (JWKS, JWKS_KEY), (BARE, BARE_KEY), (MIXED, MIXED_KEY)]:
            wait_for(lambda: ours(e, key, agent)[0] == "verified", what=f"{agent} verified")
        yield e
        assert not CRASH_PATTERNS.search(e.log()), CRASH_PATTERNS.search(e.log())


def seen(envoy, headers, path, listener="observe"):
    """What the upstream saw: (result, reason, agent, key id)."""
    s = request(envoy.ports[listener], path=path, headers=headers).seen()
    return s.get(PREFIX + "result"), s.get(PREFIX + "reason"), s.get(PREFIX + "agent"), s.get(PREFIX + "key-id")


def ours(envoy, key, agent, listener="observe", **kw):
    """Signed by the harness (the forms no independent signer makes)."""
    port = envoy.ports[listener]
    path = f"/d/{uuid.uuid4().hex}"
    h = sign(key, "GET", f"127.0.0.1:{port}", path, agent=agent, nonce=uuid.uuid4().hex, **kw).headers
    return seen(envoy, h, path, listener)


def pypi(envoy, key, agent, **kw):
    """Signed by PyPI http-message-signatures; `member`, `member_params` shape the member."""
    port = envoy.ports["observe"]
    path = f"/p/{uuid.uuid4().hex}"
    h = wba_sign.sign("GET", f"http://127.0.0.1:{port}{path}", {}, key.private_jwk(), agent,
                      nonce=uuid.uuid4().hex, **kw)
    return seen(envoy, h, path)


def node_binary():
    node = os.environ.get("WBA_NODE") or shutil.which("node")
    assert node, "node is missing (npm web-bot-auth signs the legacy form)"
    assert (ROOT / "tests" / "interop" / "node" / "node_modules").is_dir(), "run npm ci in tests/interop/node"
    return node


def test_legacy_string_from_npm_web_bot_auth(envoy):
    """`Signature-Agent: "https://agent.test"`, as the biggest deployed signers send it."""
    port = envoy.ports["observe"]
    path = f"/npm/{uuid.uuid4().hex}"
    now = int(time.time())
    job = {
        "method": "GET",
        "url": f"http://127.0.0.1:{port}{path}",
        "headers": {},
        "jwk": ORIGIN_KEY.private_jwk(),
        "created": now,
        "expires": now + 300,
        "signature_agent": json.dumps(ORIGIN),
        "label": "sig1",
    }
    out = subprocess.run(
        [node_binary(), str(ROOT / "tests" / "interop" / "node" / "sign.mjs")],
        input=json.dumps(job), capture_output=True, text=True, check=True,
    ).stdout
    headers = json.loads(out)
    assert headers["Signature-Agent"] == '"https://agent.test"'
    assert '"signature-agent"' in headers["Signature-Input"]
    assert seen(envoy, headers, path) == ("verified", None, ORIGIN, ORIGIN_KEY.thumbprint)


def test_dictionary_origin_under_any_label(envoy):
    """`g="https://agent.test"` (Google's form): the member need not be named after the label."""
    assert pypi(envoy, ORIGIN_KEY, ORIGIN, member="g") == ("verified", None, ORIGIN, ORIGIN_KEY.thumbprint)


def test_draft01_direct_jwk_set_url(envoy, directory):
    """-01: the member is the JWK Set URL, fetched as is (application/jwk-set+json, kids are
    labels, not thumbprints); the agent shows as that URL."""
    assert pypi(envoy, JWKS_KEY, JWKS) == ("verified", None, JWKS, JWKS_KEY.thumbprint)
    paths = directory.seen_paths("jwks.test")
    assert paths and all(p == "/keys/jwks.json" for p in paths), paths
    # The origin of that URL is another agent (its well-known directory), not trusted here.
    assert pypi(envoy, JWKS_KEY, "https://jwks.test")[:2] == ("unverified", "unknown_agent")


def test_previous_draft_typed_members(envoy):
    """The previous draft's `type=jwks_uri` on a URL and `type=directory` on an origin name the
    same JWK Set: read as such."""
    typed = {"type": http_sf.Token("jwks_uri")}
    assert pypi(envoy, JWKS_KEY, JWKS, member_params=typed) == ("verified", None, JWKS, JWKS_KEY.thumbprint)
    typed = {"type": http_sf.Token("directory")}
    assert pypi(envoy, ORIGIN_KEY, ORIGIN, member_params=typed) == ("verified", None, ORIGIN, ORIGIN_KEY.thumbprint)
    # As a string too.
    assert ours(envoy, JWKS_KEY, JWKS, agent_type="jwks_uri")[0] == "verified"


@pytest.mark.parametrize(
    "agent,params",
    [
        (ORIGIN, ";type=cimd"),  # removed by the working group
        (ORIGIN, ";v=2"),  # unknown
        (ORIGIN, ";type=directory;v=2"),  # a tolerated type plus another parameter
        (ORIGIN, ";type=jwks_uri"),  # ambiguous on an origin
        (JWKS, ";type=directory"),  # contradicts the URL
    ],
)
def test_a_member_with_other_parameters_is_ignored(envoy, agent, params):
    """-01: a member that carries parameters MUST be ignored; the signature then names no
    usable agent: unverified, not invalid."""
    key = ORIGIN_KEY if agent == ORIGIN else JWKS_KEY
    assert ours(envoy, key, agent, agent_params=params)[:2] == ("unverified", "unknown_agent")
    port = envoy.ports["require"]
    h = sign(key, "GET", f"127.0.0.1:{port}", "/", agent=agent, agent_params=params).headers
    r = request(port, headers=h)
    assert r.status == 403, r.body
    problem = r.json()
    assert problem["reason"] == "unknown_agent"
    assert "ignored" in problem["detail"] and params in problem["detail"], problem


def test_an_origin_and_its_well_known_url_are_one_agent(envoy):
    # An agent configured as an origin, named by its well-known directory URL: shown as the
    # origin it was configured as.
    full = ORIGIN + WELL_KNOWN
    assert pypi(envoy, ORIGIN_KEY, full) == ("verified", None, ORIGIN, ORIGIN_KEY.thumbprint)
    assert pypi(envoy, ORIGIN_KEY, "https://AGENT.test:443/") == ("verified", None, ORIGIN, ORIGIN_KEY.thumbprint)
    # An agent configured by its well-known URL, named by its origin: the same agent, shown
    # as its origin.
    assert pypi(envoy, WK_KEY, WK) == ("verified", None, WK, WK_KEY.thumbprint)
    assert pypi(envoy, WK_KEY, WK + WELL_KNOWN + "?v=1") == ("verified", None, WK, WK_KEY.thumbprint)
    # Keys stay per agent: one agent's key does not vouch for the other.
    assert pypi(envoy, WK_KEY, ORIGIN)[:2] == ("unverified", "unknown_key")


def test_a_bare_jwk_is_a_one_key_set(envoy):
    assert pypi(envoy, BARE_KEY, BARE) == ("verified", None, BARE, BARE_KEY.thumbprint)
    stats = envoy.counters()
    assert stats.get("directory.bare_jwk", 0) >= 1, stats
    assert stats.get("directory.fetch_failed.malformed", 0) == 0, stats


def test_a_directory_mixing_key_types_still_verifies_its_ed25519_key(envoy):
    assert pypi(envoy, MIXED_KEY, MIXED) == ("verified", None, MIXED, MIXED_KEY.thumbprint)
    # Nothing refused a whole set (the JWK Set URL also lists an EC key with a label kid).
    stats = envoy.counters()
    for failure in ("kid_mismatch", "malformed", "no_usable_keys"):
        assert stats.get(f"directory.fetch_failed.{failure}", 0) == 0, stats
    assert stats.get("directory.key_skipped", 0) >= 1, stats


def test_wba_sign_sends_the_agent_as_given(envoy, tmp_path):
    """`wba sign --agent` with a JWK Set URL (dictionary form) and an origin (legacy string)."""
    wba = os.environ.get("WBA_BIN") or str(ROOT / "target" / "release" / "wba")
    port = envoy.ports["observe"]
    for key, agent, extra in [(JWKS_KEY, JWKS, ["--label", "g"]), (ORIGIN_KEY, ORIGIN, ["--legacy-agent"])]:
        key_file = tmp_path / "agent.jwk"
        key_file.write_text(json.dumps(key.private_jwk()))
        path = f"/wba/{uuid.uuid4().hex}"
        out = subprocess.run(
            [wba, "sign", "--key", str(key_file), "--agent", agent, "--url", f"http://127.0.0.1:{port}{path}",
             "--random-nonce", *extra],
            capture_output=True, text=True, check=True,
        ).stdout
        h = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        assert agent in h["Signature-Agent"], out
        assert seen(envoy, h, path) == ("verified", None, agent, key.thumbprint), out
