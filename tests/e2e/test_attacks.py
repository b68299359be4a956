"""An attacker's suite (issue 17, item 6): the README's Security model and "What the upstream
sees", walked as an attacker would, against a real Envoy, over raw HTTP/1.1 and HTTP/2 where the
transport matters. Every signature here is signed for one authority (HOST), so one captured
request fits every listener.

A. Work bounds: hostile counts and sizes in the three signature fields are `malformed` (400)
   before any per-item work, never reach the upstream, and leave Envoy serving; a request exactly
   at each bound is not refused for it.
B. Replay identity is what was signed: an ECDSA signature with s replaced by n - s, and an
   RSA-PSS signature made again over the same base, are replays, at one Envoy and across a fleet.
C. Several Web Bot Auth signatures on one request (replay protection on) need a nonce each, and
   every one of them is recorded.
D. No Signature-Agent at all: `unverified` / `unknown_agent`, never `invalid`.
E. Trailers named with the header prefix (any spelling) never reach the upstream.
F. A recorded body-covering signature is refused when its headers arrive, before its body.
G. Regressions of earlier rounds: forged identity headers, label structure, replay races, a full
   replay table, key confusion, HMAC, the RFC 9421 test keys, an `http://` agent.
"""

import base64
import hashlib
import itertools
import os
import socket
import string
import time
import uuid

import pytest

from attack_clients import (
    H2,
    TrailerUpstream,
    h1_bytes,
    h1_chunked_with_trailers,
    h1_request,
    h1_sender,
    h2_send,
    h2_sender,
    malleate_p256,
    read_h1_response,
    sf_string,
    sign_member,
    simultaneous,
    trailers_of,
)
from harness import (
    CRASH_PATTERNS,
    RFC_TEST_KEY,
    EcKey,
    Envoy,
    Key,
    RedisServer,
    ReplayServer,
    RsaKey,
    bootstrap,
    parse_raw_response,
    sign,
)
from test_fleet_replay import wba_binary

PREFIX = "x-web-bot-auth-"
HOST = "shop.test"
AGENT = "https://agent.test"
OTHER = "https://other.test"
RFC_AGENT = "https://rfc-test-key.agent.test"
EVIL = "https://evil.example"
COVERED = ("@authority", "@method", "@path", "signature-agent")
TRANSPORTS = ["http1", "h2"]

# The agent signs with any of its three pinned keys; another trusted agent has a key of its own.
ED, EC, RSA, OTHER_KEY = Key(), EcKey(), RsaKey(2048), Key()

# Listener -> plugin configuration overrides. All but `noreplay` have replay protection.
LISTENERS = {
    "enforce": {"mode": "enforce"},
    "require": {"mode": "require"},
    "noreplay": {"mode": "enforce", "replay_protection": False},
    "test_keys": {"mode": "enforce", "allow_test_keys": True},
    "tiny": {"mode": "enforce", "replay_capacity": 16},
    # Envoy's default for header names with underscores: they reach the filter.
    "open": {"mode": "enforce"},
}


def plugin_config(**overrides):
    cfg = {
        "replay_protection": True,
        "agents": [
            {"name": "agent", "url": AGENT, "keys": [ED.jwk, EC.jwk, RSA.jwk]},
            {"name": "other", "url": OTHER, "keys": [OTHER_KEY.jwk]},
            {"name": "rfc-test-key", "url": RFC_AGENT, "keys": [RFC_TEST_KEY.jwk]},
        ],
    }
    cfg.update(overrides)
    return cfg


def with_trailers(listener):
    """The listener's connection manager passes HTTP/1.1 trailers on (Envoy drops them unless
    told otherwise; HTTP/2 trailers pass anyway)."""
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_protocol_options"] = {"enable_trailers": True}
    return listener


def trailer_cluster(name, port):
    """A cluster whose HTTP/1.1 upstream connections carry trailers."""
    c = bootstrap.cluster(name, port)
    c["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
        }
    }
    return c


@pytest.fixture(scope="module")
def upstream():
    with TrailerUpstream() as u:
        yield u


def attack_envoy(front, upstream):
    """An Envoy (two workers, not started) with a listener per LISTENERS entry, in front of
    `upstream`, trailers passed on both ways."""
    listeners = [
        with_trailers(
            bootstrap.listener(
                name,
                "upstream",
                front.filters(plugin_config(**overrides), name=f"wba_{name}"),
                underscores="ALLOW" if name == "open" else "REJECT_REQUEST",
            )
        )
        for name, overrides in LISTENERS.items()
    ]
    config = bootstrap.bootstrap(listeners, [trailer_cluster("upstream", upstream.port)])
    return Envoy(config, concurrency=2, front=front)


@pytest.fixture(scope="module")
def envoy(front, upstream):
    with attack_envoy(front, upstream) as e:
        yield e
        assert not CRASH_PATTERNS.search(e.log()), CRASH_PATTERNS.search(e.log())


# ---------------------------------------------------------------------------- helpers


def digest(body):
    """A Content-Digest value (sha-256) for `body`."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def unique(name):
    """A path no other request of the run uses (so the upstream's record of it is this one's)."""
    return f"/{name}/{uuid.uuid4().hex}"


def send(transport, port, path, headers, method="GET", body=None, host=HOST):
    """One request over `transport` (raw HTTP/1.1 or HTTP/2) on a fresh connection; `None` when
    an HTTP/2 stream was reset."""
    if transport == "http1":
        return h1_request(port, method, path, list(headers), host, body or b"")
    return h2_send(port, method, path, list(headers), host, body)


def signed(path, key=ED, agent=AGENT, nonce=True, method="GET", components=COVERED, **kw):
    """The header pairs of a request for `path` at HOST, signed by `key` for `agent`, with a
    fresh nonce unless `nonce` is None."""
    nonce = uuid.uuid4().hex if nonce is True else nonce
    return list(sign(key, method, HOST, path, agent=agent, nonce=nonce, components=components, **kw)
                .headers.items())


def verdict(r):
    """(result, reason) the upstream was told."""
    seen = r.seen()
    return seen.get(PREFIX + "result"), seen.get(PREFIX + "reason")


def problem_reason(r):
    assert r.header("content-type") == "application/problem+json", (r.status, r.body)
    return r.json()["reason"]


def assert_verified(r, agent=AGENT, key=ED):
    assert r is not None and r.status == 200, r and (r.status, r.body)
    seen = r.seen()
    assert seen.get(PREFIX + "result") == "verified", seen.headers
    assert seen.get(PREFIX + "agent") == agent
    assert seen.get(PREFIX + "key-id") == key.thumbprint


def assert_refused(r, status, reason, upstream=None, path=None):
    """Answered by the filter itself with `status` and `reason`; the upstream never saw it."""
    assert r is not None, "the stream was reset instead of answered"
    assert r.status == status, (r.status, r.body)
    assert problem_reason(r) == reason, r.body
    if upstream is not None:
        assert not upstream.saw(path), f"{path} reached the upstream"


def assert_still_serves(envoy, transport, listener="enforce"):
    """Envoy answers a normal signed request as before."""
    path = unique("normal")
    assert_verified(send(transport, envoy.ports[listener], path, signed(path)))


# ---------------------------------------------------------------------------- A. work bounds

# The fixed bounds (constants, not configurable).
MAX_LABELS = 64
MAX_COMPONENTS = 64
MAX_PARAMS = 16
MAX_AGENT_MEMBERS = 64
MAX_STRING = 2048
MAX_KEY = 128
MAX_BYTES = 8192


def sig_params(key=ED, nonce=None, keyid=None, extra="", tag="web-bot-auth"):
    """Serialized signature parameters: created, expires, nonce (when given), keyid, tag, then
    `extra` (already serialized: `;p0=1`). Five before `extra`."""
    now = int(time.time())
    p = f";created={now};expires={now + 300}"
    if nonce is not None:
        p += f";nonce={sf_string(nonce)}"
    return p + f";keyid={sf_string(keyid or key.thumbprint)};tag={sf_string(tag)}" + extra


def valid(path, label="sig1", extra_covered=(), extra_params="", nonce=None, keyid=None,
          member_params="", agent=AGENT, key=ED):
    """A signature an attacker holding a trusted key makes as it likes: covering @authority,
    @path and its Signature-Agent member (with `member_params` appended to the member, and so
    covered), then `extra_covered`; with a fresh nonce. Returns the header pairs."""
    nonce = uuid.uuid4().hex if nonce is None else nonce
    member = sf_string(agent) + member_params
    covered = [('"@authority"', HOST), ('"@path"', path), (f'"signature-agent";key="{label}"', member)]
    covered += list(extra_covered)
    inp, sig, _ = sign_member(key, label, covered, sig_params(key, nonce, keyid, extra_params))
    return [("Signature-Agent", f"{label}={member}"), ("Signature-Input", inp), ("Signature", sig)]


def field(headers, name):
    return next(v for n, v in headers if n == name)


def replaced(headers, name, value):
    return [(n, value if n == name else v) for n, v in headers]


def appended(headers, name, extra):
    """`extra` added to the field `name`, on the same line."""
    return [(n, f"{v}, {extra}" if n == name else v) for n, v in headers]


def names(count):
    """`count` distinct short lowercase names: aaa, aab, ..."""
    return ["".join(t) for t in itertools.islice(itertools.product(string.ascii_lowercase, repeat=3), count)]


def long_nonce(size):
    """A nonce of `size` bytes that no other request uses."""
    return uuid.uuid4().hex + "n" * (size - 32)


def random_bytes_member(label, size):
    return f"{label}=:{base64.b64encode(os.urandom(size)).decode()}:"


def with_header_components(path, count, **kw):
    """A valid signature covering `count` components, all present in the request: @authority,
    @path, the Signature-Agent member and count - 3 header fields."""
    extra = [(f"x-c{i}", str(i)) for i in range(count - 3)]
    h = valid(path, extra_covered=[(f'"{n}"', v) for n, v in extra], **kw)
    return h + extra


def with_params(path, count):
    """A valid signature with `count` signature parameters (five named ones, then p0, p1...)."""
    return valid(path, extra_params="".join(f";p{i}=1" for i in range(count - 5)))


def with_labels(path, count):
    """A valid signature and count - 1 labels of another profile: `count` labels in each field."""
    h = valid(path)
    others = [f"o{i}" for i in range(count - 1)]
    h = appended(h, "Signature-Input", ", ".join(f'{o}=("@authority");tag="other"' for o in others))
    return appended(h, "Signature", ", ".join(f"{o}=:AAAA:" for o in others))


def with_members(path, count):
    """A valid signature whose Signature-Agent field has `count` members."""
    return appended(valid(path), "Signature-Agent", ", ".join(f'a{i}="{AGENT}"' for i in range(count - 1)))


def with_member_params(path, count):
    """A valid signature whose (covered) Signature-Agent member carries `count` parameters."""
    return valid(path, member_params="".join(f";p{i}" for i in range(count)))


def with_signature_bytes(path, size):
    """Every check would pass but the signature: `size` bytes that no key signed."""
    return replaced(valid(path), "Signature", random_bytes_member("sig1", size))


def components_8000(path):
    """The issue's own example: 8,000 distinct components and a one-byte signature."""
    covered = " ".join(f'"{n}"' for n in names(8000))
    return [("Signature-Input", f'sig1=({covered});tag="web-bot-auth"'), ("Signature", "sig1=:AA==:")]


def components_8000_another_tag(path):
    """The same 8,000 components under another profile's tag, next to a valid signature: the
    bound holds for every member, or the tag would be a way around it."""
    covered = " ".join(f'"{n}"' for n in names(8000))
    h = appended(valid(path), "Signature-Input", f'x=({covered});tag="other"')
    return appended(h, "Signature", "x=:AA==:")


def labels_1000(path):
    labels = [f"l{i}" for i in range(1000)]
    return [
        ("Signature-Input", ", ".join(f'{l}=();tag="web-bot-auth"' for l in labels)),
        ("Signature", ", ".join(f"{l}=:AA==:" for l in labels)),
    ]


def component_params_100(path):
    # Unknown component parameters are refused anyway; this one has 100 of them.
    params = "".join(f";p{i}" for i in range(100))
    return valid(path, extra_covered=[(f'"x-c0"{params}', "0")]) + [("x-c0", "0")]


def signature_bytes_another_tag(path, size=20 * 1024):
    h = appended(valid(path), "Signature-Input", 'x=("@authority");tag="other"')
    return appended(h, "Signature", random_bytes_member("x", size))


# name -> a function of the path giving the headers of a request past one bound.
OVER = {
    "8000-components": components_8000,
    "8000-components-another-tag": components_8000_another_tag,
    "65-components": lambda p: with_header_components(p, MAX_COMPONENTS + 1),
    "1000-labels": labels_1000,
    "65-labels": lambda p: with_labels(p, MAX_LABELS + 1),
    "100-signature-parameters": lambda p: with_params(p, 100),
    "17-signature-parameters": lambda p: with_params(p, MAX_PARAMS + 1),
    "100-component-parameters": component_params_100,
    "1000-agent-members": lambda p: with_members(p, 1000),
    "65-agent-members": lambda p: with_members(p, MAX_AGENT_MEMBERS + 1),
    "100-agent-member-parameters": lambda p: with_member_params(p, 100),
    "17-agent-member-parameters": lambda p: with_member_params(p, MAX_PARAMS + 1),
    "20KiB-signature": lambda p: with_signature_bytes(p, 20 * 1024),
    "8193-byte-signature": lambda p: with_signature_bytes(p, MAX_BYTES + 1),
    "20KiB-signature-another-tag": signature_bytes_another_tag,
    "5KiB-keyid": lambda p: valid(p, keyid="k" * 5 * 1024),
    "5KiB-nonce": lambda p: valid(p, nonce=long_nonce(5 * 1024)),
    "2049-byte-nonce": lambda p: valid(p, nonce=long_nonce(MAX_STRING + 1)),
    "2049-byte-token": lambda p: valid(p, extra_params=";t=" + "t" * (MAX_STRING + 1)),
    "5KiB-agent-url": lambda p: valid(p, agent=AGENT + "/" + "a" * 5 * 1024),
    "129-byte-label": lambda p: valid(p, label="l" * (MAX_KEY + 1)),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(OVER))
def test_past_a_work_bound_is_malformed(envoy, upstream, case, transport):
    """Each bound exceeded, as in the issue or by one: 400 `malformed` in enforce, counted once,
    the upstream never sees the request, and Envoy serves the next one as before."""
    path = unique(case)
    headers = OVER[case](path)
    assert sum(len(n) + len(v) for n, v in headers) < 60 * 1024  # Envoy's default header limit
    before = envoy.counters("reason.malformed").get("reason.malformed", 0)
    r = send(transport, envoy.ports["enforce"], path, headers)
    assert_refused(r, 400, "malformed", upstream, path)
    assert envoy.counter("reason.malformed") == before + 1
    assert_still_serves(envoy, transport)


# name -> (headers at the bound, the (result, reason) the upstream is told).
AT = {
    "64-components": (lambda p: with_header_components(p, MAX_COMPONENTS), ("verified", None)),
    "64-labels": (lambda p: with_labels(p, MAX_LABELS), ("verified", None)),
    "16-signature-parameters": (lambda p: with_params(p, MAX_PARAMS), ("verified", None)),
    "64-agent-members": (lambda p: with_members(p, MAX_AGENT_MEMBERS), ("verified", None)),
    # A member with parameters is ignored (draft -01), so names no agent: not malformed.
    "16-agent-member-parameters": (lambda p: with_member_params(p, MAX_PARAMS), ("unverified", "unknown_agent")),
    "2048-byte-nonce": (lambda p: valid(p, nonce=long_nonce(MAX_STRING)), ("verified", None)),
    "2048-byte-token": (lambda p: valid(p, extra_params=";t=" + "t" * MAX_STRING), ("verified", None)),
    "2048-byte-keyid": (lambda p: valid(p, keyid="k" * MAX_STRING), ("unverified", "unknown_key")),
    "128-byte-label": (lambda p: valid(p, label="l" * MAX_KEY), ("verified", None)),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", list(AT))
def test_at_a_work_bound_proceeds_to_verification(envoy, case, transport):
    """Exactly at each bound the request is checked as usual: a valid signature covering 64
    components verifies, and so on."""
    path = unique(case)
    build, expected = AT[case]
    r = send(transport, envoy.ports["enforce"], path, build(path))
    assert r is not None and r.status == 200, r and (r.status, r.body)
    assert verdict(r) == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_signature_of_8192_bytes_is_checked_not_malformed(envoy, upstream, transport):
    """The longest byte sequence accepted reaches the signature check (and fails it)."""
    path = unique("8192-byte-signature")
    r = send(transport, envoy.ports["enforce"], path, with_signature_bytes(path, MAX_BYTES))
    assert_refused(r, 403, "bad_signature", upstream, path)


# ---------------------------------------------------------------------------- B. replay identity


def ecdsa_pair(path):
    """A captured ECDSA request without nonce, and the same with its s replaced by n - s."""
    h = signed(path, key=EC, nonce=None, alg="ecdsa-p256-sha256")
    sig = field(h, "Signature")
    return h, replaced(h, "Signature", malleate_p256(sig))


def rsa_pair(path):
    """The same request content signed twice with RSA-PSS (randomized): the same base, other
    bytes."""
    created = int(time.time())
    a = sign(RSA, "GET", HOST, path, agent=AGENT, components=COVERED, created=created, alg="rsa-pss-sha512")
    b = sign(RSA, "GET", HOST, path, agent=AGENT, components=COVERED, created=created, alg="rsa-pss-sha512")
    assert a.base == b.base and a.headers["Signature"] != b.headers["Signature"]
    return list(a.headers.items()), list(b.headers.items())


PAIRS = {"ecdsa-n-minus-s": (ecdsa_pair, EC), "rsa-pss-signed-again": (rsa_pair, RSA)}


@pytest.mark.parametrize("case", list(PAIRS))
def test_a_second_signature_over_the_same_base_is_a_replay(envoy, upstream, case):
    """Replay identity is what was signed, never the signature's bytes: the other signature
    verifies on its own (replay protection off), yet after the first one it is 429 `replayed`.
    The first goes over HTTP/1.1, the second over HTTP/2."""
    make, key = PAIRS[case]
    path = unique(case)
    first, second = make(path)
    assert_verified(send("h2", envoy.ports["noreplay"], path, second), key=key)
    assert_verified(send("http1", envoy.ports["enforce"], path, first), key=key)
    before = upstream.count(path)
    r = send("h2", envoy.ports["enforce"], path, second)
    assert_refused(r, 429, "replayed")
    assert upstream.count(path) == before


def test_a_signature_under_another_label_is_a_replay(envoy):
    """The label is not signed: the captured signature renamed (its Signature-Agent member
    kept) is the same signature."""
    path = unique("relabel")
    h = signed(path, nonce=None)
    assert_verified(send("http1", envoy.ports["enforce"], path, h))
    renamed = [(n, v.replace("sig1=", "again=", 1)) if n in ("Signature-Input", "Signature") else (n, v)
               for n, v in h]
    assert_refused(send("h2", envoy.ports["enforce"], path, renamed), 429, "replayed")


def fleet_config(**overrides):
    return plugin_config(
        mode="enforce",
        replay_store={"cluster": "wba_replay", "timeout_ms": 1000, "on_error": "reject"},
        **overrides,
    )


@pytest.fixture(scope="module")
def fleet(front, upstream, tmp_path_factory):
    """Two Envoys sharing `wba replay-server` (Redis behind it)."""
    redis = RedisServer(tmp_path_factory.mktemp("attacks-fleet")).start()
    server = ReplayServer(wba_binary(), redis.port).start()
    envoys = []
    try:
        for _ in range(2):
            listeners = [bootstrap.listener("fleet", "upstream", front.filters(fleet_config()))]
            clusters = [bootstrap.cluster("upstream", upstream.port),
                        bootstrap.cluster("wba_replay", server.port, timeout="1s")]
            e = Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=2, front=front)
            envoys.append(e)
            e.start()
        yield envoys
    finally:
        for e in envoys:
            e.stop()
        server.stop()
        redis.stop()


@pytest.mark.parametrize("case", list(PAIRS))
def test_a_second_signature_over_the_same_base_is_a_replay_across_the_fleet(fleet, case):
    """The same through the fleet's replay store: the first at one Envoy, the other signature at
    the other Envoy, whose own table has never seen either."""
    make, key = PAIRS[case]
    a, b = fleet
    path = unique(case)
    first, second = make(path)
    assert_verified(send("http1", a.ports["fleet"], path, first), key=key)
    before = b.counter("replay.store.replayed")
    r = send("h2", b.ports["fleet"], path, second)
    assert_refused(r, 429, "replayed")
    assert b.counter("replay.store.replayed") == before + 1


# ---------------------------------------------------------------------------- C. several signatures


def two_signatures(path, nonces, lines):
    """sig1 and sig2, both valid, by the agent's key, with the given nonces (None: none); the
    three fields on one line each (`lines` 1) or each signature on its own lines (2). Returns
    (both, only sig1, only sig2) as header pairs."""
    one, two = (signed(path, label=label, nonce=n) for label, n in zip(("sig1", "sig2"), nonces))
    if lines == 2:
        both = one + two
    else:
        both = [(n, f"{v}, {field(two, n)}") for n, v in one]
    return both, one, two


@pytest.mark.parametrize("lines", [1, 2], ids=["one-line", "two-lines"])
@pytest.mark.parametrize("nonces", [(None, None), ("n1", None), ("n1", "n2")],
                         ids=["no-nonce", "one-nonce", "two-nonces"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_signature_of_an_accepted_request_is_recorded(envoy, upstream, transport, nonces,
                                                            lines):
    """Two valid signatures, with or without nonces: accepted, and both recorded (a nonce, or
    without one what each signed): the request with only the second (the one not described
    upstream), only the first, or both again, is 429."""
    path = unique("two-signatures")
    nonces = tuple(n and f"{n}-{uuid.uuid4().hex}" for n in nonces)
    both, one, two = two_signatures(path, nonces, lines)
    port = envoy.ports["enforce"]
    assert_verified(send(transport, port, path, both))
    for replay in (two, one, both):
        assert_refused(send(transport, port, path, replay), 429, "replayed")
    assert upstream.count(path) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_second_signature_that_could_verify_later_keeps_the_request_unverified(envoy, upstream,
                                                                                  transport):
    """Beside a valid signature, one naming the agent with a key this Envoy does not know yet
    (an agent rotating keys, or a forger): accepting the request would leave that signature
    unrecorded, replayable alone once the key is known. So the request is not `verified`: it is
    `unverified` / `unknown_key` (passes annotated in enforce), and nothing is recorded: the
    valid signature alone is then accepted once."""
    path = unique("later")
    one = signed(path, label="sig1")
    two = signed(path, key=Key(), label="sig2")
    both = [(n, f"{v}, {field(two, n)}") for n, v in one]
    port = envoy.ports["enforce"]
    r = send(transport, port, path, both)
    assert r.status == 200, r.body
    assert verdict(r) == ("unverified", "unknown_key")
    assert_verified(send(transport, port, path, one))


def test_a_signature_of_another_profile_is_not_ours_to_record(envoy):
    """Only Web Bot Auth signatures count: one of them and one of another tag (unverifiable
    here), no nonces: verified."""
    path = unique("other-profile")
    h = appended(signed(path, nonce=None), "Signature-Input", 'other=("@authority");tag="other"')
    h = appended(h, "Signature", "other=:AAAA:")
    assert_verified(send("http1", envoy.ports["enforce"], path, h))


def test_without_replay_protection_one_valid_signature_is_enough(envoy):
    """Without replay protection nothing is recorded: a valid signature beside one by a key not
    known yet verifies the request, as it did before."""
    path = unique("two-signatures")
    one = signed(path, label="sig1", nonce=None)
    two = signed(path, key=Key(), label="sig2", nonce=None)
    both = [(n, f"{v}, {field(two, n)}") for n, v in one]
    assert_verified(send("http1", envoy.ports["noreplay"], path, both))


# ---------------------------------------------------------------------------- D. no Signature-Agent


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_signature_agent_at_all_is_unknown_agent(envoy, transport):
    """A tagged signature with no Signature-Agent field (so covering none): nothing names an
    agent whose keys could check it, which is `unverified` / `unknown_agent`, never `invalid`:
    it passes annotated in enforce, and is 403 in require."""
    path = unique("no-agent")
    h = signed(path, agent=None, components=("@authority", "@method", "@path"))
    assert not any(n == "Signature-Agent" for n, _ in h)
    r = send(transport, envoy.ports["enforce"], path, h)
    assert r.status == 200, r.body
    assert verdict(r) == ("unverified", "unknown_agent")
    r = send(transport, envoy.ports["require"], path, h)
    assert_refused(r, 403, "unknown_agent")


# ---------------------------------------------------------------------------- E. trailers

FORGED_TRAILERS = [
    ("x-web-bot-auth-result", "verified"),
    ("X-Web-Bot-Auth-Agent", EVIL),
    ("x_web_bot_auth_agent", EVIL),
    ("X_Web-Bot_Auth-Key-Id", "forged"),
    ("X-WEB-BOT-AUTH-AGENT-NAME", "forged"),
    ("x-web-bot-auth-result", "verified"),  # twice
]


def folded(name):
    """The name as a CGI-style upstream reads it."""
    return name.upper().replace("-", "_")


def ours(pairs):
    return [(n, v) for n, v in pairs if folded(n).startswith("X_WEB_BOT_AUTH_")]


@pytest.mark.parametrize("signing", ["unsigned", "signed", "signed-body"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_prefixed_trailers_never_reach_the_upstream(envoy, transport, signing):
    """Trailers with the prefix, in any spelling, are stripped like headers; a benign trailer
    arrives (so trailers do reach the upstream here). HTTP/2 trailers, and HTTP/1.1 chunked
    trailers; on an unsigned request, a signed one, and one whose signature covers the body
    (held until the trailers end it)."""
    path = unique("trailers")
    port = envoy.ports["open"]
    body = b"hello"
    headers = []
    if signing == "signed":
        headers = signed(path, method="POST")
    elif signing == "signed-body":
        headers = signed(path, method="POST", headers={"Content-Digest": digest(body)},
                         components=COVERED + ("content-digest",))
        headers.append(("Content-Digest", digest(body)))
    trailers = [("x-benign", "1")] + FORGED_TRAILERS
    if transport == "h2":
        r = h2_send(port, "POST", path, headers, HOST, body=body, trailers=trailers)
    else:
        r = h1_chunked_with_trailers(port, "POST", path, headers, HOST, [body[:3], body[3:]], trailers)
    assert r is not None and r.status == 200, r and (r.status, r.body)
    assert r.json()["body"] == "hello"
    seen = trailers_of(r)
    assert ("x-benign", "1") in seen, seen
    assert ours(seen) == [], seen
    assert verdict(r)[0] == ("unsigned" if signing == "unsigned" else "verified")


# ---------------------------------------------------------------------------- F. signed bodies


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_recorded_body_signature_is_refused_before_its_body(envoy, upstream, transport):
    """A signature covering Content-Digest, accepted once, then sent again announcing a body of
    200,000 bytes of which only 1,000 are sent: 429 `replayed` comes back while the body is
    still unfinished (Envoy cannot answer otherwise), and the upstream never sees the copy."""
    path = unique("body")
    body = b"x" * 1000
    h = signed(path, method="POST", headers={"Content-Digest": digest(body)},
               components=COVERED + ("content-digest",))
    h.append(("Content-Digest", digest(body)))
    port = envoy.ports["enforce"]
    assert_verified(send(transport, port, path, h, method="POST", body=body))
    announced = h + [("Content-Length", "200000")]
    try:
        if transport == "h2":
            with H2(port) as c:
                sid = c.headers("POST", path, announced, HOST)
                c.data(sid, body[:1000])
                r = c.response(sid)
        else:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(h1_bytes("POST", path, announced, HOST) + body[:1000])
                r = read_h1_response(s)
    except socket.timeout:
        pytest.fail("no answer while the body was unfinished: the replay waited for the body")
    assert_refused(r, 429, "replayed")
    assert upstream.count(path) == 1


# ---------------------------------------------------------------------------- G. regressions

# Forged identity headers in every spelling: case, `_` for `-`, repeats.
FORGED_HEADERS = [
    ("x-web-bot-auth-result", "verified"),
    ("X-WEB-BOT-AUTH-RESULT", "verified"),
    ("x-web-bot-auth-result", "verified"),
    ("X-Web-Bot-Auth-Agent", EVIL),
    ("x_web_bot_auth_agent", EVIL),
    ("X_WEB_BOT_AUTH_AGENT_NAME", "forged"),
    ("x-web_bot-auth-key-id", "forged"),
    ("X-Web-Bot-Auth_Label", "forged"),
    ("x-web-bot-auth-covered", "forged"),
    ("x-web-bot-auth-expires", "99999999999"),
    ("x-web-bot-auth-reason", "forged"),
]


# What the filter tells the upstream about a verified request.
VERIFIED_HEADERS = ("result", "agent", "agent-name", "key-id", "label", "covered", "expires")


@pytest.mark.parametrize("is_signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_forged_identity_headers_never_reach_the_upstream(envoy, transport, is_signed):
    """Every forged copy goes, whatever its spelling or count, with Envoy letting underscores
    through; the upstream sees the filter's headers only, once each."""
    path = unique("spoof")
    headers = FORGED_HEADERS + (signed(path) if is_signed else [])
    r = send(transport, envoy.ports["open"], path, headers)
    assert r is not None and r.status == 200, r and (r.status, r.body)
    seen = r.seen()
    mine = ours(seen.headers)
    assert all("_" not in n for n, _ in mine), mine
    if not is_signed:
        assert mine == [(PREFIX + "result", "unsigned")], mine
        return
    assert sorted(n for n, _ in mine) == sorted(PREFIX + n for n in VERIFIED_HEADERS), mine
    assert seen.get(PREFIX + "result") == "verified"
    assert seen.get(PREFIX + "agent") == AGENT
    assert seen.get(PREFIX + "agent-name") == "agent"
    assert seen.get(PREFIX + "key-id") == ED.thumbprint
    assert seen.get(PREFIX + "label") == "sig1"
    assert seen.get(PREFIX + "covered") == '("@authority" "@method" "@path" "signature-agent";key="sig1")'
    assert int(seen.get(PREFIX + "expires")) <= time.time() + 300


def structure(path, kind):
    """A valid signature whose fields break RFC 9421 section 4 in one way."""
    h = signed(path)
    again = signed(path)  # sig1 again, another nonce
    if kind == "input-only":
        return appended(h, "Signature-Input", 'lone=("@authority");tag="other"')
    if kind == "signature-only":
        return appended(h, "Signature", "lone=:AAAA:")
    name = "Signature-Input" if kind.startswith("input") else "Signature"
    if kind.endswith("twice-in-a-line"):
        return appended(h, name, field(again, name))
    return h + [(name, field(again, name))]  # twice, on a second line


STRUCTURES = ["input-only", "signature-only", "input-twice-in-a-line", "signature-twice-in-a-line",
              "input-twice-across-lines", "signature-twice-across-lines"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", STRUCTURES)
def test_label_structure_is_strict(envoy, upstream, kind, transport):
    """A label in one field only, or defined twice (within a line or across lines, where readers
    keeping the first or the last definition would disagree): 400 `malformed`."""
    path = unique(kind)
    r = send(transport, envoy.ports["enforce"], path, structure(path, kind))
    assert_refused(r, 400, "malformed", upstream, path)


ROUNDS, COPIES = 8, 12


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_simultaneous_copies_of_one_signature_are_accepted_once(envoy, upstream, transport):
    """Copies of one signature sent at once, each on its own connection (so over both workers):
    exactly one is accepted, the others are 429, and the upstream sees one."""
    port = envoy.ports["enforce"]
    for i in range(ROUNDS):
        path = unique("race")
        h = signed(path)
        if transport == "http1":
            payload = h1_bytes("GET", path, h, HOST)
            statuses = simultaneous(lambda: h1_sender(port, payload), COPIES)
        else:
            statuses = simultaneous(lambda: h2_sender(port, "GET", path, h, HOST), COPIES)
        assert sorted(statuses) == [200] + [429] * (COPIES - 1), (i, statuses)
        assert upstream.count(path) == 1


def test_a_full_replay_table_never_evicts(envoy):
    """A table of one bucket (16 records), filled by another trusted agent's fresh signatures:
    new ones are refused (`replay.full`), and the captured first signature stays a replay."""
    port = envoy.ports["tiny"]
    path = unique("captured")
    captured = signed(path)
    assert_verified(send("http1", port, path, captured))
    full_before = envoy.counter("replay.full")
    statuses = []
    for _ in range(20):
        p = unique("fill")
        statuses.append(send("h2", port, p, signed(p, key=OTHER_KEY, agent=OTHER)).status)
    assert statuses == [200] * 15 + [429] * 5, statuses
    assert envoy.counter("replay.full") == full_before + 5
    for transport in TRANSPORTS:
        assert_refused(send(transport, port, path, captured), 429, "replayed")


# Signature-Agent values naming another agent's URL in odd spellings.
CONFUSING_AGENTS = [
    AGENT,
    "https://agent.test@other.test",
    "https://other.test@agent.test",
    "https://other.test#@agent.test",
    "https://other.test?@agent.test",
    "https://agent.test.",
    "https://AGENT.test:443/",
    AGENT + "/.well-known/http-message-signatures-directory",
]


@pytest.mark.parametrize("agent", CONFUSING_AGENTS)
def test_one_agents_key_never_vouches_for_another_agent(envoy, agent):
    """Another trusted agent's key, with its own key id, under a Signature-Agent that names
    (or seems to name) the agent: never verified as the agent. Keys are looked up by the pair
    (agent, key id)."""
    path = unique("confusion")
    r = send("http1", envoy.ports["enforce"], path, signed(path, key=OTHER_KEY, agent=agent))
    if r.status == 200:
        seen = r.seen()
        assert seen.get(PREFIX + "agent") in (None, OTHER), seen.headers
        assert seen.get(PREFIX + "agent-name") in (None, "other"), seen.headers
    else:
        assert r.status in (400, 403), r.body


def test_the_agents_key_id_signed_by_another_key_is_a_bad_signature(envoy, upstream):
    """The agent's thumbprint as keyid, under the agent's URL, signed by someone else's key."""
    path = unique("stolen-keyid")
    h = signed(path, key=Key(), keyid=ED.thumbprint)
    assert_refused(send("h2", envoy.ports["enforce"], path, h), 403, "bad_signature", upstream, path)


def test_hmac_is_an_unsupported_algorithm(envoy, upstream):
    """A shared secret never authenticates a bot: `alg="hmac-sha256"` is refused as such."""
    path = unique("hmac")
    h = signed(path, alg="hmac-sha256")
    assert_refused(send("http1", envoy.ports["enforce"], path, h), 403, "unsupported_algorithm", upstream, path)


def test_the_rfc_9421_test_key_only_with_allow_test_keys(envoy, upstream):
    """A pinned RFC 9421 Appendix B key is `test_key` unless the listener allows test keys."""
    path = unique("test-key")
    h = signed(path, key=RFC_TEST_KEY, agent=RFC_AGENT)
    assert_refused(send("http1", envoy.ports["enforce"], path, h), 403, "test_key", upstream, path)
    assert_verified(send("http1", envoy.ports["test_keys"], path, h), agent=RFC_AGENT, key=RFC_TEST_KEY)


def test_an_http_agent_url_is_bad_agent_url(envoy, upstream):
    """A Signature-Agent member that is not https is `invalid`, not unknown."""
    path = unique("http-agent")
    h = signed(path, agent="http://agent.test")
    assert_refused(send("h2", envoy.ports["enforce"], path, h), 403, "bad_agent_url", upstream, path)


# ---------------------------------------------------------------------------- guards for C and F


def test_a_signature_that_did_not_verify_records_nothing(envoy):
    """Guard for C: a request verified by one trusted agent's signature carries a second one,
    with a nonce, naming the agent but signed by no key of its. That second signature must not
    be recorded: otherwise anyone with any trusted key could burn another agent's nonces (or
    fill the replay table 64 records a request). The agent's own request with that nonce then
    verifies."""
    path = unique("burn")
    victim_nonce = uuid.uuid4().hex
    mine = signed(path, key=OTHER_KEY, agent=OTHER, label="sig1")
    forged = signed(path, key=Key(), keyid=ED.thumbprint, label="sig2", nonce=victim_nonce)
    both = [(n, f"{v}, {field(forged, n)}") for n, v in mine]
    r = send("http1", envoy.ports["enforce"], path, both)
    assert r.status == 200, r.body
    assert r.seen().get(PREFIX + "agent") == OTHER
    own = signed(path, nonce=victim_nonce)
    assert_verified(send("http1", envoy.ports["enforce"], path, own))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_body_signature_refused_for_its_body_is_not_recorded(envoy, upstream, transport):
    """Guard for F: the signature is looked up when its headers are decided, and recorded only
    once its body matched. So whoever sees a signed request and sends it first with another body
    does not burn it: the agent's request with its own body then verifies."""
    path = unique("body-first")
    body = b'{"order": 42}'
    h = signed(path, method="POST", headers={"Content-Digest": digest(body)},
               components=COVERED + ("content-digest",))
    h.append(("Content-Digest", digest(body)))
    port = envoy.ports["enforce"]
    r = send(transport, port, path, h, method="POST", body=b'{"order": 666}')
    assert_refused(r, 403, "digest_mismatch", upstream, path)
    assert_verified(send(transport, port, path, h, method="POST", body=body))


# ---------------------------------------------------------------------------- found by this suite

# Header names with other token punctuation where the prefix has `-`. Envoy's
# headers_with_underscores_action covers `_` only, and CGI-style upstreams fold more than `_`:
# lighttpd's CGI, FastCGI and SCGI environments map every byte that is not a letter or digit to
# `_` (http_cgi_encode_varname), so `x.web.bot.auth.agent` arrives as HTTP_X_WEB_BOT_AUTH_AGENT.
PUNCTUATED = [sep.join(["x", "web", "bot", "auth", "agent"]) for sep in ".+~!*^|'#$%&`"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_prefixed_names_with_other_punctuation_never_reach_the_upstream(envoy, transport):
    """With our shipped REJECT_REQUEST for underscores, a forged agent spelled with any other
    token punctuation for `-` must not reach an upstream that folds it onto ours."""
    path = unique("punctuation")
    r = send(transport, envoy.ports["enforce"], path, [(n, EVIL) for n in PUNCTUATED])
    assert r.status == 200, r.body
    cgi = [(n, v) for n, v in r.seen().headers
           if "".join(c if c.isalnum() else "_" for c in n.upper()).startswith("X_WEB_BOT_AUTH_")]
    assert cgi == [(PREFIX + "result", "unsigned")], cgi


# ---- round 2: attacks on the finished build
#
# Each successful attack is a test asserting the safe behaviour (each failed on the build it was
# found on, and passes since its fix); attacks that held are plain tests where the suite had no
# such test.

# -- R2.1 work per request: equivalent identifiers (README: "Work per request is bounded by
# construction, and grows linearly with the request's header bytes").


def equivalent_identifiers(base, flags=("sf", "bs", "req", "tr")):
    """Identifiers that all read what `base` reads: its boolean parameters set to false (`?0`,
    accepted on every component, derived ones too) in every order. 65 for four flags."""
    out = [base]
    for k in range(1, len(flags) + 1):
        for perm in itertools.permutations(flags, k):
            out.append(base + "".join(f";{f}=?0" for f in perm))
    return out


def forged_heavy(components, labels=3, key=ED):
    """What anyone can send without a key: `labels` Web Bot Auth signatures (max_signatures,
    3 by default, are checked) naming the agent and its published key id, fresh, covering
    @authority, their Signature-Agent member and `components`; 64 zero bytes as signature. Every
    cheap check passes, so each signature's base is built, hashed and verified."""
    now = int(time.time())
    agent, inputs, sigs = [], [], []
    for i in range(labels):
        label = f"s{i}"
        covered = ['"@authority"', f'"signature-agent";key="{label}"'] + list(components)
        agent.append(f"{label}={sf_string(AGENT)}")
        inputs.append(f"{label}=({' '.join(covered)});created={now};expires={now + 300};"
                      f"keyid={sf_string(key.thumbprint)};tag=\"web-bot-auth\"")
        sigs.append(f"{label}=:{base64.b64encode(bytes(64)).decode()}:")
    return [("Signature-Agent", ", ".join(agent)), ("Signature-Input", ", ".join(inputs)),
            ("Signature", ", ".join(sigs))]


def heavy_query_request(path_prefix):
    """A 40 KB query of one repeated parameter (`a&a&...`), read by 62 identifiers of it in each
    of three forged signatures: 62 x 20,000 base lines each."""
    ids = equivalent_identifiers('"@query-param";name="a"')[:61] + ['"@query-param";name="%61"']
    path = path_prefix + "?" + "a&" * 20000
    return path, forged_heavy(ids)



def test_r2_equivalent_identifiers_do_not_multiply_the_work(envoy):
    """Anyone (no key needed: the agent's key id is public) sends three signatures that pass
    every cheap check, each covering one field or query parameter 62 times under identifiers
    that differ only by false flags (`;sf=?0`, `;bs=?0;req=?0`...) or the parameter name's
    encoding (`name="a"`, `name="%61"`): the component-uniqueness check compares serializations,
    so none is a duplicate, and every one re-emits the whole value (for `@query-param`, one base
    line per value of the parameter: 62 x 20,000 lines per signature, about 70 MB). The request
    must be refused (or fail its signature) as fast as an ordinary one, not after seconds of
    base building and hashing on the worker."""
    path, h = heavy_query_request(unique("heavy"))
    assert sum(len(n) + len(v) for n, v in h) + len(path) < 50 * 1024
    r = send("http1", envoy.ports["enforce"], path, h)
    # The identifiers read one parameter: the same component covered twice, refused before any
    # base is built (the work this costs is counted by filter/core/tests/work_bound.rs and
    # attacks.rs, never timed here).
    assert_refused(r, 400, "malformed")
    assert_still_serves(envoy, "http1")


# -- R2.2 signed bodies: a copy held open (README, Replay protection: a signature is recorded only
# once its body matched, so whoever sends a captured signed request first, with a body that never
# completes or does not match, does not burn it).


def body_signed(path, body):
    """A POST for `path` whose signature (with a nonce) covers the Content-Digest of `body`."""
    h = signed(path, method="POST", headers={"Content-Digest": digest(body)},
               components=COVERED + ("content-digest",))
    return h + [("Content-Digest", digest(body))]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_r2_a_copy_holding_its_body_open_does_not_burn_the_signature(envoy, upstream, transport):
    """The captor sends the agent's signed request first, announcing its body and sending one
    byte of it, and then waits (Envoy's default stream idle timeout is 5 minutes, as long as a
    typical signature lives, and a byte now and then extends it). The copy never reaches the upstream and would be refused for its
    body; meanwhile the agent's own request, with the right body, must still be accepted."""
    path = unique("held-open")
    body = b'{"order": 42, "qty": 1}'
    h = body_signed(path, body)
    port = envoy.ports["enforce"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as captor:
        captor.sendall(h1_bytes("POST", path, h + [("Content-Length", str(len(body)))], HOST) + body[:1])
        time.sleep(0.3)
        r = send(transport, port, path, h, method="POST", body=body)
        assert r is not None and r.status == 200, r and (r.status, r.body)
        assert_verified(r)
    assert upstream.count(path) == 1


@pytest.mark.parametrize("how", ["h1-close", "h2-reset"])
def test_r2_a_copy_that_goes_away_mid_body_releases_the_signature(envoy, upstream, how):
    """Held: the captor's copy of a body signature goes away before its body is complete (the
    HTTP/1.1 connection closes, or the HTTP/2 stream is reset): nothing was recorded for it (a
    signature is recorded only once its body matched), on both front ends, and the agent's own
    request is then verified."""
    path = unique("gone-mid-body")
    body = b'{"order": 43}'
    h = body_signed(path, body)
    port = envoy.ports["enforce"]
    if how == "h1-close":
        with socket.create_connection(("127.0.0.1", port), timeout=10) as captor:
            captor.sendall(h1_bytes("POST", path, h + [("Content-Length", str(len(body)))], HOST) + body[:1])
            time.sleep(0.2)
    else:
        import h2.errors

        with H2(port) as c:
            sid = c.headers("POST", path, h + [("content-length", str(len(body)))], HOST)
            c.data(sid, body[:1])
            time.sleep(0.2)
            c.conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
            c._flush()
            time.sleep(0.2)
    assert_verified(send("http1", port, path, h, method="POST", body=body))
    assert upstream.count(path) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_r2_a_signed_body_sent_after_100_continue_is_checked(envoy, upstream, transport):
    """Held: an agent that announces its body with `Expect: 100-continue` and waits for the
    interim answer before sending it is not stalled by the hold: Envoy answers 100, the body
    comes, is checked, and the request is verified (and a wrong body is still refused)."""
    port = envoy.ports["enforce"]
    for good in (True, False):
        path = unique("continue")
        body = b'{"order": 44}'
        h = body_signed(path, body)
        sent = body if good else b'{"order": 666}'
        if transport == "http1":
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                head = h + [("Expect", "100-continue"), ("Content-Length", str(len(sent)))]
                s.sendall(h1_bytes("POST", path, head, HOST))
                interim = s.recv(65536)
                assert interim.startswith(b"HTTP/1.1 100"), interim
                rest = interim.split(b"\r\n\r\n", 1)[1]
                s.sendall(sent)
                r = read_h1_response(s) if not rest else parse_raw_response(rest)
        else:
            with H2(port) as c:
                sid = c.headers("POST", path, h + [("expect", "100-continue")], HOST)
                c.data(sid, sent, end_stream=True)
                r = c.response(sid)
        if good:
            assert_verified(r)
        else:
            assert_refused(r, 403, "digest_mismatch", upstream, path)
