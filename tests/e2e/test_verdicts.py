"""Each kind of bad request gets the right outcome, reason, status and body in every mode."""

import json
import time

import pytest

from conftest import TEST_KEY_AGENT_URL
from harness import RFC_TEST_KEY, Key, request, sign

PREFIX = "x-web-bot-auth-"
PATH = "/api/items?page=2"
OTHER_KEY = Key()


def case(agent_key, port, **kw):
    """(path, headers, host) of a request signed for authority 127.0.0.1:port."""
    return PATH, sign(agent_key, "GET", f"127.0.0.1:{port}", PATH, **kw).headers, None


def tampered_authority(k, port):
    path, h, _ = case(k, port)
    return path, h, "evil.example"


def tampered_path(k, port):
    _, h, _ = case(k, port, components=("@authority", "@path", "signature-agent"))
    return "/api/admin?page=2", h, None


def tampered_header(k, port):
    _, h, _ = case(k, port, headers={"X-Task": "read"}, components=("@authority", "x-task", "signature-agent"))
    return PATH, dict(h, **{"X-Task": "delete"}), None


def expired(k, port):
    now = int(time.time())
    return case(k, port, created=now - 1000, expires=now - 500)


def created_in_future(k, port):
    now = int(time.time())
    return case(k, port, created=now + 3600, expires=now + 3900)


def validity_too_long(k, port):
    now = int(time.time())
    return case(k, port, created=now, expires=now + 3 * 86400)


def wrong_tag(k, port):
    return case(k, port, tag="not-web-bot-auth")


def no_agent_coverage(k, port):
    return case(k, port, components=("@authority",))


def no_authority_coverage(k, port):
    return case(k, port, components=("@method", "@path", "signature-agent"))


def missing_expires(k, port):
    return case(k, port, expires=False)


def unsupported_alg(k, port):
    # HMAC is never accepted (rsa-pss-sha512 and ecdsa-p256-sha256 are supported: with this
    # Ed25519 key they contradict the key, tests/e2e/test_algorithms.py).
    return case(k, port, alg="hmac-sha256")


def unknown_key(k, port):
    return case(OTHER_KEY, port)


def unknown_agent(k, port):
    return case(k, port, agent="https://stranger.example")


def rfc_test_key(k, port):
    return case(RFC_TEST_KEY, port, agent=TEST_KEY_AGENT_URL)


def bad_signature_bytes(k, port):
    path, h, host = case(k, port)
    sig = h["Signature"]
    h["Signature"] = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    return path, h, host


def garbage(header):
    def build(k, port):
        path, h, host = case(k, port)
        # Valid HTTP, invalid structured field.
        h[header] = 'sig1=((( ;;"'
        return path, h, host

    build.__name__ = "garbage_" + header.lower().replace("-", "_")
    return build


def unsigned(k, port):
    return PATH, {}, None


CASES = [
    # builder, outcome, reason
    (tampered_authority, "invalid", "bad_signature"),
    (tampered_path, "invalid", "bad_signature"),
    (tampered_header, "invalid", "bad_signature"),
    (bad_signature_bytes, "invalid", "bad_signature"),
    (expired, "invalid", "expired"),
    (created_in_future, "invalid", "created_in_future"),
    (validity_too_long, "invalid", "validity_too_long"),
    (no_agent_coverage, "invalid", "missing_component"),
    (no_authority_coverage, "invalid", "missing_component"),
    (missing_expires, "invalid", "missing_parameter"),
    (unsupported_alg, "invalid", "unsupported_algorithm"),
    (rfc_test_key, "invalid", "test_key"),
    (garbage("Signature-Input"), "invalid", "malformed"),
    (garbage("Signature"), "invalid", "malformed"),
    (garbage("Signature-Agent"), "invalid", "malformed"),
    (unknown_key, "unverified", "unknown_key"),
    (unknown_agent, "unverified", "unknown_agent"),
    (wrong_tag, "unsigned", None),
    (unsigned, "unsigned", None),
]


def expected_status(mode, outcome, reason):
    if mode == "observe" or outcome == "verified":
        return 200
    if reason == "malformed":
        return 400
    if outcome == "invalid":
        return 403
    return 403 if mode == "require" else 200


@pytest.mark.parametrize("mode", ["observe", "enforce", "require"])
@pytest.mark.parametrize("build,outcome,reason", CASES, ids=[c[0].__name__ for c in CASES])
def test_outcome_status_and_body(envoy, agent_key, mode, build, outcome, reason):
    port = envoy.ports[mode]
    path, headers, host = build(agent_key, port)
    r = request(port, path=path, headers=headers, host=host)
    status = expected_status(mode, outcome, reason)
    assert r.status == status, r.body
    if status == 200:
        seen = r.seen()
        assert seen.get(PREFIX + "result") == outcome
        assert seen.get(PREFIX + "reason") == reason
        assert seen.get(PREFIX + "agent") is None
        for name in ("Signature", "Signature-Input", "Signature-Agent"):
            assert seen.get(name) == headers.get(name)
        return
    assert r.header("content-type") == "application/problem+json"
    problem = json.loads(r.body)
    assert problem["status"] == status
    assert problem["reason"] == (reason or outcome)
    assert problem["title"] and problem["detail"] and problem["type"]
    accept = r.header("accept-signature")
    if status == 403:
        assert accept is not None
        assert 'tag="web-bot-auth"' in accept and '"@authority"' in accept
        assert '"signature-agent"' in accept
    else:
        assert accept is None


def test_test_key_allowed_when_configured(envoy):
    port = envoy.ports["test_keys"]
    path, h, _ = rfc_test_key(None, port)
    r = request(port, path=path, headers=h)
    assert r.status == 200
    assert r.seen().get(PREFIX + "result") == "verified"
    assert r.seen().get(PREFIX + "key-id") == RFC_TEST_KEY.thumbprint


def test_required_components_and_nonce(envoy, agent_key):
    port = envoy.ports["strict"]
    # Covers the protocol's components but not the operator's @method/@path.
    path, h, _ = case(agent_key, port, nonce="n-1")
    r = request(port, path=path, headers=h)
    assert r.status == 403
    assert json.loads(r.body)["reason"] == "missing_component"
    accept = r.header("accept-signature")
    assert '"@method"' in accept and '"@path"' in accept and ";nonce" in accept
    full = ("@authority", "@method", "@path", "signature-agent")
    path, h, _ = case(agent_key, port, components=full)
    r = request(port, path=path, headers=h)
    assert r.status == 403
    assert json.loads(r.body)["reason"] == "nonce_required"
    path, h, _ = case(agent_key, port, components=full, nonce="n-2")
    r = request(port, path=path, headers=h)
    assert r.status == 200
    assert r.seen().get(PREFIX + "result") == "verified"


def test_one_valid_signature_among_several(envoy, agent_key):
    port = envoy.ports["require"]
    good = sign(agent_key, "GET", f"127.0.0.1:{port}", PATH, label="good").headers
    other = sign(OTHER_KEY, "GET", f"127.0.0.1:{port}", PATH, label="other", agent="https://stranger.example").headers
    headers = [
        ("Signature-Agent", other["Signature-Agent"]),
        ("Signature-Agent", good["Signature-Agent"]),
        ("Signature-Input", other["Signature-Input"] + ", " + good["Signature-Input"]),
        ("Signature", other["Signature"] + ", " + good["Signature"]),
    ]
    r = request(port, path=PATH, headers=headers)
    assert r.status == 200, r.body
    assert r.seen().get(PREFIX + "label") == "good"


def test_counters_per_outcome_and_reason(envoy, agent_key):
    before = envoy.counters()
    port = envoy.ports["observe"]
    request(port, path=PATH, headers=expired(agent_key, port)[1])
    request(port, path=PATH, headers=case(agent_key, port)[1])
    after = envoy.counters()

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    assert delta("outcome.invalid") == 1
    assert delta("reason.expired") == 1
    assert delta("outcome.verified") == 1
