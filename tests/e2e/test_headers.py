"""What the upstream sees: forged identity headers never reach it, the filter's own do."""

import time

from conftest import AGENT_URL
from harness import CRASH_PATTERNS, request, sign

PREFIX = "x-web-bot-auth-"


def signed_headers(agent_key, port, **kw):
    return sign(agent_key, "GET", f"127.0.0.1:{port}", "/hello", **kw).headers


def test_fresh_signature_is_verified_with_identity(envoy, agent_key):
    port = envoy.ports["enforce"]
    before = int(time.time())
    h = signed_headers(agent_key, port, validity=120)
    r = request(port, path="/hello", headers=h)
    assert r.status == 200
    seen = r.seen()
    assert seen.get(PREFIX + "result") == "verified"
    assert seen.get(PREFIX + "agent") == AGENT_URL
    assert seen.get(PREFIX + "agent-name") == "test-agent"
    assert seen.get(PREFIX + "key-id") == agent_key.thumbprint
    assert seen.get(PREFIX + "label") == "sig1"
    assert seen.get(PREFIX + "covered") == '("@authority" "signature-agent";key="sig1")'
    assert before + 120 <= int(seen.get(PREFIX + "expires")) <= int(time.time()) + 120
    assert seen.get(PREFIX + "reason") is None
    # The signature headers go upstream unchanged.
    for name in ("Signature", "Signature-Input", "Signature-Agent"):
        assert seen.get(name) == h[name]


FORGED = [
    ("x-web-bot-auth-result", "verified"),
    ("X-Web-Bot-Auth-Agent", "https://forged.example"),
    ("X-WEB-BOT-AUTH-RESULT", "verified"),
    ("x-web-bot-auth-result", "verified, verified"),
    ("x-Web-bot-AUTH-key-id", "forged-key"),
    ("x-web-bot-auth-agent-name", "forged"),
    ("x-web-bot-auth-label", "sig9"),
    ("x-web-bot-auth-covered", '"@authority"'),
    ("x-web-bot-auth-expires", "99999999999"),
    ("x-web-bot-auth-reason", "none"),
    ("x-web-bot-auth-anything-else", "forged"),
    ("x-web-bot-auth-", "empty-suffix"),
]


# HTTP/1.1 allows bytes 0x80-0xFF in field values (obs-text); http.client sends these
# strings as latin-1, one byte per character.
OBS_TEXT = [("X-Note", "caf\xe9 \xff\xfe"), ("x-web-bot-auth-result", "verified\xff")]


def test_header_values_with_non_utf8_bytes(envoy, agent_key):
    port = envoy.ports["enforce"]
    for _ in range(3):  # the VM lives on
        r = request(port, headers=OBS_TEXT)
        assert r.status == 200, r.body
        assert r.seen().with_prefix(PREFIX) == [(PREFIX + "result", "unsigned")]
        h = signed_headers(agent_key, port)
        r = request(port, path="/hello", headers=list(h.items()) + OBS_TEXT)
        assert r.status == 200, r.body
        assert r.seen().get(PREFIX + "result") == "verified"
    assert not CRASH_PATTERNS.search(envoy.log()), CRASH_PATTERNS.search(envoy.log())


def test_unsigned_request_with_forged_identity_headers(envoy):
    for listener in ("enforce", "observe"):
        r = request(envoy.ports[listener], headers=FORGED)
        assert r.status == 200, r.body
        seen = r.seen()
        assert seen.with_prefix(PREFIX) == [(PREFIX + "result", "unsigned")], listener


def test_valid_signature_with_forged_identity_headers(envoy, agent_key):
    port = envoy.ports["enforce"]
    h = signed_headers(agent_key, port)
    r = request(port, path="/hello", headers=list(h.items()) + FORGED)
    assert r.status == 200
    seen = r.seen()
    ours = dict(seen.with_prefix(PREFIX))
    assert len(seen.with_prefix(PREFIX)) == len(ours) == 7, seen.with_prefix(PREFIX)
    assert ours[PREFIX + "result"] == "verified"
    assert ours[PREFIX + "agent"] == AGENT_URL
    assert ours[PREFIX + "key-id"] == agent_key.thumbprint
    assert "forged" not in repr(ours) and "99999999999" not in repr(ours)


def test_invalid_signature_with_forged_headers_in_observe(envoy, agent_key):
    port = envoy.ports["observe"]
    h = signed_headers(agent_key, port)
    r = request(port, path="/hello", host="evil.example", headers=list(h.items()) + FORGED)
    assert r.status == 200
    assert r.seen().with_prefix(PREFIX) == [
        (PREFIX + "result", "invalid"),
        (PREFIX + "reason", "bad_signature"),
    ]


def test_configured_prefix_is_stripped_and_used(envoy, agent_key):
    port = envoy.ports["prefix"]
    forged = [("x-bot-result", "verified"), ("X-BOT-Agent", "x"), ("x-web-bot-auth-result", "kept")]
    r = request(port, headers=forged)
    seen = r.seen()
    assert seen.with_prefix("x-bot-") == [("x-bot-result", "unsigned")]
    # Another prefix is not ours to strip.
    assert seen.get("x-web-bot-auth-result") == "kept"
    h = signed_headers(agent_key, port)
    seen = request(port, path="/hello", headers=h).seen()
    assert seen.get("x-bot-result") == "verified"
    assert seen.get("x-bot-key-id") == agent_key.thumbprint


def test_access_log_has_the_verdict(envoy, agent_key):
    port = envoy.ports["enforce"]
    request(port, path="/access-log-check-unsigned")
    request(port, path="/access-log-check-signed", headers=sign(agent_key, "GET", f"127.0.0.1:{port}", "/access-log-check-signed").headers)
    request(port, path="/access-log-check-bad", headers={"Signature-Input": "(((", "Signature": "x"})
    log = ""
    for _ in range(100):  # the access log is flushed asynchronously
        log = (envoy.dir / "access-enforce.log").read_text()
        if "access-log-check-bad" in log:
            break
        time.sleep(0.1)
    lines = {l.split('"')[1].split()[1]: l for l in log.splitlines() if "access-log-check" in l}
    assert "wba_result=unsigned wba_reason=- wba_agent=- wba_key_id=-" in lines["/access-log-check-unsigned"]
    assert (
        f"wba_result=verified wba_reason=- wba_agent={AGENT_URL} wba_key_id={agent_key.thumbprint}"
        in lines["/access-log-check-signed"]
    )
    assert " 400 wba_result=invalid wba_reason=malformed" in lines["/access-log-check-bad"]
