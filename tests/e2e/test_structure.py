"""Issue 10, items 6-8, against a real Envoy: the structure of the signature fields (RFC 9421
section 4), the bound on signatures verified per request (`max_signatures`), and the outcomes
the draft gives a missing or non-https `Signature-Agent`."""

import base64
import json
import os
import time

import pytest

from harness import request, sign

PREFIX = "x-web-bot-auth-"
PATH = "/api/items?page=2"


def signed(agent_key, port, **kw):
    """The headers (a dict) of a request to PATH signed for authority 127.0.0.1:port."""
    return sign(agent_key, "GET", f"127.0.0.1:{port}", PATH, **kw).headers


def problem(r):
    assert r.header("content-type") == "application/problem+json", r.body
    return json.loads(r.body)


def random_signature():
    """A Byte Sequence of Ed25519 length that no key signed."""
    return f":{base64.b64encode(os.urandom(64)).decode()}:"


def stat_delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


# ---------------------------------------------------------------------------- item 6: structure


@pytest.mark.parametrize("lone_in", ["Signature-Input", "Signature"])
def test_a_label_in_one_field_only_is_400(envoy, agent_key, lone_in):
    port = envoy.ports["enforce"]
    h = signed(agent_key, port)
    extra = {
        "Signature-Input": 'lone=("@authority");tag="other"',
        "Signature": "lone=:AAAA:",
    }[lone_in]
    h[lone_in] = h[lone_in] + ", " + extra
    r = request(port, path=PATH, headers=h)
    assert r.status == 400, r.body
    p = problem(r)
    assert p["reason"] == "malformed"
    assert '"lone"' in p["detail"], p["detail"]


@pytest.mark.parametrize("field", ["Signature-Input", "Signature"])
def test_a_label_defined_again_on_a_second_line_is_400(envoy, agent_key, field):
    port = envoy.ports["enforce"]
    h = signed(agent_key, port)
    # The second line defines sig1 again; a parser keeping the last definition reads that one.
    again = signed(agent_key, port, created=int(time.time()) - 5)[field]
    headers = list(h.items()) + [(field, again)]
    r = request(port, path=PATH, headers=headers)
    assert r.status == 400, r.body
    p = problem(r)
    assert p["reason"] == "malformed"
    assert "more than once" in p["detail"], p["detail"]


def test_a_signature_agent_member_defined_again_on_a_second_line_is_400(envoy, agent_key):
    port = envoy.ports["enforce"]
    h = signed(agent_key, port)
    # A reader keeping the last definition would look for the agent's keys elsewhere.
    headers = list(h.items()) + [("Signature-Agent", 'sig1="https://evil.test"')]
    r = request(port, path=PATH, headers=headers)
    assert r.status == 400, r.body
    p = problem(r)
    assert p["reason"] == "malformed"
    assert "more than once" in p["detail"], p["detail"]


def test_a_valid_signature_next_to_an_odd_member_of_another_profile_verifies(envoy, agent_key):
    port = envoy.ports["enforce"]
    h = signed(agent_key, port)
    # Another profile's signature: an unknown component parameter, a Signature value that is
    # not a byte sequence. Not a Web Bot Auth signature, so not looked into.
    headers = [
        ("Signature-Agent", h["Signature-Agent"]),
        ("Signature-Input", h["Signature-Input"]),
        ("Signature-Input", 'other=("@method" "x-thing";unknown);tag="other-profile"'),
        ("Signature", "other=(1 2), " + h["Signature"]),
    ]
    r = request(port, path=PATH, headers=headers)
    assert r.status == 200, r.body
    seen = r.seen()
    assert seen.get(PREFIX + "result") == "verified"
    assert seen.get(PREFIX + "label") == "sig1"


# ---------------------------------------------------------------------------- item 7: the bound


def test_many_bogus_signatures_are_rejected_without_verifying_them_all(envoy, agent_key):
    port = envoy.ports["enforce"]
    now = int(time.time())
    # 60: within the bound of 64 labels a field may carry (past it, the field is malformed
    # before anything is checked: test_attacks.py).
    labels = [f"s{i}" for i in range(60)]
    params = f';created={now};expires={now + 300};keyid="{agent_key.thumbprint}";tag="web-bot-auth"'
    headers = {
        "Signature-Agent": ", ".join(f'{l}="https://agent.test"' for l in labels),
        "Signature-Input": ", ".join(
            f'{l}=("@authority" "signature-agent";key="{l}"){params}' for l in labels
        ),
        "Signature": ", ".join(f"{l}={random_signature()}" for l in labels),
    }
    assert sum(len(v) for v in headers.values()) < 60 * 1024  # Envoy's default header limit
    before = envoy.counters()
    r = request(port, path=PATH, headers=headers)
    after = envoy.counters()
    assert r.status == 403, r.body
    p = problem(r)
    assert p["reason"] == "bad_signature"
    assert stat_delta(before, after, "outcome.invalid") == 1
    assert stat_delta(before, after, "reason.bad_signature") == 1
    # 3 (the default max_signatures) verified, 57 left: counted once per request.
    assert stat_delta(before, after, "signatures_over_limit") == 1


def test_a_valid_signature_past_the_bound_is_not_tried(envoy, agent_key):
    # Three labels that pass every cheap check but not the crypto use up max_signatures (3):
    # the valid fourth is not verified. Observable without stats or timing.
    port = envoy.ports["enforce"]
    sigs = [signed(agent_key, port, label=label) for label in ("b0", "b1", "b2", "good")]
    for label, s in zip(("b0", "b1", "b2"), sigs):
        s["Signature"] = f"{label}={random_signature()}"
    fields = ("Signature-Agent", "Signature-Input", "Signature")
    headers = {n: ", ".join(s[n] for s in sigs) for n in fields}
    r = request(port, path=PATH, headers=headers)
    assert r.status == 403, r.body
    assert problem(r)["reason"] == "bad_signature"
    # The valid one alone verifies.
    r = request(port, path=PATH, headers=sigs[3])
    assert r.status == 200, r.body
    assert r.seen().get(PREFIX + "result") == "verified"


# ---------------------------------------------------------------------------- item 8: outcomes


def test_no_signature_agent_header_is_unverified(envoy, agent_key):
    port = envoy.ports["enforce"]
    h = signed(agent_key, port, agent=None)
    assert "Signature-Agent" not in h
    r = request(port, path=PATH, headers=h)
    assert r.status == 200, r.body
    seen = r.seen()
    assert seen.get(PREFIX + "result") == "unverified"
    assert seen.get(PREFIX + "reason") == "unknown_agent"


def test_an_http_signature_agent_is_invalid(envoy, agent_key):
    port = envoy.ports["enforce"]
    h = signed(agent_key, port, agent="http://agent.test")
    r = request(port, path=PATH, headers=h)
    assert r.status == 403, r.body
    p = problem(r)
    assert p["reason"] == "bad_agent_url"
    assert r.header("accept-signature") is not None


def test_plain_signature_agent_over_a_dictionary_verifies(envoy, agent_key):
    port = envoy.ports["require"]
    h = signed(agent_key, port, plain_agent=True)
    assert h["Signature-Agent"] == 'sig1="https://agent.test"'
    assert '"signature-agent");' in h["Signature-Input"]  # covered without key=
    r = request(port, path=PATH, headers=h)
    assert r.status == 200, r.body
    seen = r.seen()
    assert seen.get(PREFIX + "result") == "verified"
    assert seen.get(PREFIX + "agent") == "https://agent.test"
