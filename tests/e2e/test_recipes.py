"""The per-agent policy recipes (envoy/recipes/*.yaml) work as written: Envoy's own filters placed
after ours act on the verified identity, and nothing a client sends can stand in for it.

Each recipe is loaded with PyYAML and changed only where it must be to run here: ports, the
module's path, and the clusters' addresses (the key directories point at a local
`DirectoryServer`, over plain HTTP). Requests are really signed, by two or three agents with
their own keys."""

import base64
import copy
import hashlib
import itertools
import json
import time

import pytest
import yaml

from harness import ROOT, RFC_TEST_KEY, DirectoryServer, EchoUpstream, Envoy, Key, request, sign

RECIPES = ROOT / "envoy" / "recipes"

PARTNER = "https://partner.example"
CRAWLER = "https://crawler.example"
INDEXER = "https://indexer.example"
STRANGER = "https://stranger.example"  # signs correctly, but no recipe lists it

# What Envoy's RBAC filter answers with when it refuses a request.
RBAC_DENIED = "RBAC: access denied"

_nonces = itertools.count()


def nonce():
    """A fresh nonce: the recipes keep replay protection on, and every request here is new."""
    return f"recipe-{time.time_ns()}-{next(_nonces)}"


def load_recipe(front, name, upstream_port, directory_port):
    """A recipe as written, on loopback: ephemeral ports, this build's module (for native: the
    dynamic module in place of the Wasm filter and its hold companion), the `app` cluster
    at the echo upstream and every agent's key directory cluster at the local directory server
    (plain HTTP; dropping TLS is the only change to those clusters)."""
    config = front.adapt(yaml.safe_load((RECIPES / name).read_text()))
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    for cluster in config["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        address = endpoint["address"]["socket_address"]
        if cluster["name"] == "app":
            address["port_value"] = upstream_port
        elif cluster["name"].endswith("_directory"):
            cluster.pop("transport_socket")
            cluster.pop("dns_lookup_family")
            cluster["type"] = "STATIC"
            address.update(address="127.0.0.1", port_value=directory_port)
        else:
            raise AssertionError(f"unexpected cluster {cluster['name']} in {name}")
    return config


def http_filters(listener):
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def filter_names(config):
    """The HTTP filter chain, by role: wasm entries by their plugin name."""
    out = []
    for f in http_filters(config["static_resources"]["listeners"][0]):
        plugin = f["typed_config"].get("config", {}).get("name")
        out.append(plugin or f["name"])
    return out


def digest(body):
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


class Client:
    """Signed, unsigned and forged requests to one listener."""

    def __init__(self, port):
        self.port = port
        self.authority = f"127.0.0.1:{port}"

    def signed(self, key, agent, path, extra=(), method="GET"):
        h = sign(key, method, self.authority, path, agent=agent, nonce=nonce()).headers
        return request(self.port, method, path, headers=list(h.items()) + list(extra))

    def signed_body(self, key, agent, path, body):
        """A POST whose signature covers its body (Content-Digest): held until checked."""
        d = digest(body)
        h = sign(
            key,
            "POST",
            self.authority,
            path,
            agent=agent,
            headers={"Content-Digest": d},
            components=("@authority", "@method", "@path", "signature-agent", "content-digest"),
            nonce=nonce(),
        ).headers
        return request(self.port, "POST", path, headers=dict(h, **{"Content-Digest": d}), body=body)

    def unsigned(self, path, extra=()):
        return request(self.port, "GET", path, headers=list(extra))


# Every identity header a client could try to claim, for the partner.
FORGED_PARTNER = [
    ("X-Web-Bot-Auth-Result", "verified"),
    ("x-web-bot-auth-agent", PARTNER),
    ("x-web-bot-auth-agent-name", "partner"),
    ("X-WEB-BOT-AUTH-KEY-ID", "forged"),
]


def assert_rbac_denied(r):
    assert r.status == 403, (r.status, r.body)
    assert r.body == RBAC_DENIED, r.body


def assert_passed(r, result, agent_name=None):
    """The request reached the upstream, with the filter's verdict (and nothing a client sent)."""
    assert r.status == 200, (r.status, r.body)
    seen = r.seen()
    assert seen.get("x-web-bot-auth-result") == result
    assert seen.get("x-web-bot-auth-agent-name") == agent_name
    if result != "verified":
        assert seen.get("x-web-bot-auth-agent") is None
        assert seen.get("x-web-bot-auth-key-id") is None
    return seen


# ---------------------------------------------------------------------------- both recipes


# Each recipe and the Envoy filter it places after ours.
POLICY_FILTER = {
    "allow-verified.yaml": "envoy.filters.http.rbac",
    "rate-per-agent.yaml": "envoy.filters.http.local_ratelimit",
}


@pytest.mark.parametrize("name", sorted(POLICY_FILTER))
def test_recipe_shape(name):
    """Like minimal.yaml: underscores refused, fail closed, keys fetched over TLS with the name
    checked, and our hold companion then the filter before the policy filter and the router."""
    config = yaml.safe_load((RECIPES / name).read_text())
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    names = filter_names(config)
    policy = POLICY_FILTER[name]
    assert names == ["web_bot_auth_hold", "web_bot_auth", policy, "envoy.filters.http.router"]
    for f in http_filters(listener)[:2]:
        assert f["typed_config"]["config"]["fail_open"] is False
        assert f["typed_config"]["config"]["vm_config"]["vm_id"] == "web_bot_auth"
    assert json.loads(http_filters(listener)[0]["typed_config"]["config"]["configuration"]["value"]) == {
        "role": "hold"
    }
    plugin = json.loads(http_filters(listener)[1]["typed_config"]["config"]["configuration"]["value"])
    assert plugin["mode"] == "enforce"
    assert not plugin.get("allow_test_keys")
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    for agent in plugin["agents"]:
        assert "keys" not in agent, "recipes fetch keys; pin only keys an agent gave you"
        assert agent["cluster"] in clusters
    text = (RECIPES / name).read_text()
    assert RFC_TEST_KEY.jwk["x"] not in text
    assert "allow_test_keys" not in text
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"].endswith("_directory"):
            tls = cluster["transport_socket"]["typed_config"]
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            host = endpoint["address"]["socket_address"]["address"]
            assert tls["sni"] == host
            validation = tls["common_tls_context"]["validation_context"]
            assert validation["match_typed_subject_alt_names"][0]["matcher"] == {"exact": host}


# ---------------------------------------------------------------------------- RBAC


@pytest.fixture(scope="module")
def rbac(front):
    """allow-verified.yaml, with the partner's and the crawler's key directories."""
    keys = {"partner": Key(), "crawler": Key()}
    with EchoUpstream() as upstream, DirectoryServer() as directory:
        directory.keys["partner.example"] = [keys["partner"]]
        directory.keys["crawler.example"] = [keys["crawler"]]
        config = load_recipe(front, "allow-verified.yaml", upstream.port, directory.port)
        with Envoy(yaml.safe_dump(config), concurrency=2, front=front) as envoy:
            yield envoy, Client(envoy.ports["public"]), keys


def test_rbac_open_route_serves_everyone_with_trusted_headers(rbac):
    _, c, keys = rbac
    assert_passed(c.unsigned("/"), "unsigned")
    assert_passed(c.signed(keys["crawler"], CRAWLER, "/home"), "verified", "crawler")
    # A forgery on an open route reaches the upstream stripped: the verdict is the filter's.
    assert_passed(c.unsigned("/", extra=FORGED_PARTNER), "unsigned")


def test_rbac_agents_route_admits_verified_agents_only(rbac):
    _, c, keys = rbac
    seen = assert_passed(c.signed(keys["partner"], PARTNER, "/agents/feed"), "verified", "partner")
    assert seen.get("x-web-bot-auth-agent") == PARTNER
    assert_passed(c.signed(keys["crawler"], CRAWLER, "/agents/feed"), "verified", "crawler")
    assert_rbac_denied(c.unsigned("/agents/feed"))
    # Signed, but by a key the partner's directory does not list: unverified (unknown_key).
    assert_rbac_denied(c.signed(Key(), PARTNER, "/agents/feed"))
    # Signed correctly by an agent the filter does not trust: unverified (unknown_agent).
    assert_rbac_denied(c.signed(Key(), STRANGER, "/agents/feed"))


def test_rbac_partners_route_admits_the_listed_agent_only(rbac):
    _, c, keys = rbac
    assert_passed(c.signed(keys["partner"], PARTNER, "/partners/orders"), "verified", "partner")
    assert_rbac_denied(c.signed(keys["crawler"], CRAWLER, "/partners/orders"))
    assert_rbac_denied(c.unsigned("/partners/orders"))


def test_rbac_forged_identity_headers_do_not_get_through(rbac):
    """A client sending the identity headers itself is refused: the filter removed them before
    RBAC ran, and RBAC reads the filter's verdict, not the client's."""
    envoy, c, keys = rbac
    assert_rbac_denied(c.unsigned("/agents/feed", extra=FORGED_PARTNER))
    assert_rbac_denied(c.unsigned("/partners/orders", extra=FORGED_PARTNER))
    # Several copies, any case: still nothing.
    twice = FORGED_PARTNER + [("x-web-bot-auth-result", "verified")]
    assert_rbac_denied(c.unsigned("/agents/feed", extra=twice))
    # A verified crawler claiming to be the partner stays the crawler.
    assert_rbac_denied(c.signed(keys["crawler"], CRAWLER, "/partners/orders", extra=FORGED_PARTNER))
    # And an underscore form never reaches anything (headers_with_underscores_action).
    r = c.unsigned("/agents/feed", extra=[("x_web_bot_auth_result", "verified")])
    assert r.status == 400


def test_rbac_follows_the_filters_own_rejections(rbac):
    """An invalid signature is refused by the filter itself (problem+json) before RBAC."""
    _, c, keys = rbac
    h = sign(keys["partner"], "GET", "elsewhere.example", "/agents/feed", agent=PARTNER,
             nonce=nonce()).headers
    r = request(c.port, "GET", "/agents/feed", headers=h)
    assert r.status == 403
    assert r.header("content-type") == "application/problem+json"
    assert r.json()["reason"] == "bad_signature"


def test_rbac_sees_the_verdict_on_a_signed_body(rbac):
    """A signature covering the body is decided only once the body is read; RBAC, after the
    filter, sees that decision (placed before the filter it would see none)."""
    _, c, keys = rbac
    body = b'{"order": 42}'
    r = c.signed_body(keys["partner"], PARTNER, "/partners/orders", body)
    assert_passed(r, "verified", "partner")
    # A body that does not match its digest is the filter's own 403, never RBAC's pass.
    d = digest(b"something else")
    h = sign(
        keys["partner"], "POST", c.authority, "/partners/orders", agent=PARTNER,
        headers={"Content-Digest": d},
        components=("@authority", "@method", "@path", "signature-agent", "content-digest"),
        nonce=nonce(),
    ).headers
    r = request(c.port, "POST", "/partners/orders", headers=dict(h, **{"Content-Digest": d}), body=body)
    assert r.status == 403 and r.json()["reason"] == "digest_mismatch"


def test_rbac_decisions_are_counted_and_logged(rbac):
    envoy, c, keys = rbac
    before = envoy.stats("http.public.rbac.")
    assert_rbac_denied(c.unsigned("/partners/x"))
    assert_passed(c.signed(keys["partner"], PARTNER, "/partners/x"), "verified", "partner")
    after = envoy.stats("http.public.rbac.")
    assert after["http.public.rbac.denied"] == before.get("http.public.rbac.denied", 0) + 1
    assert after["http.public.rbac.allowed"] == before.get("http.public.rbac.allowed", 0) + 1
    # The stdout access log lands in envoy.log, flushed asynchronously.
    denied = '"GET /partners/x" 403 rbac_access_denied_matched_policy[none] wba_result=unsigned'
    allowed = f'"GET /partners/x" 200 via_upstream wba_result=verified wba_reason=- wba_agent={PARTNER}'
    for _ in range(100):
        if denied in envoy.log() and allowed in envoy.log():
            break
        time.sleep(0.05)
    lines = [l for l in envoy.log().splitlines() if '"GET /partners/x"' in l]
    assert any(denied in l for l in lines) and any(allowed in l for l in lines), lines


def test_rbac_placed_too_early_fails_closed(front):
    """Why the order is hold, filter, RBAC: placed before the filter (wasm: before its hold
    companion, or between the two), RBAC finds no verdict and refuses every request on the
    guarded routes, verified ones and signed bodies too. Never does it let a forgery through."""
    partner = Key()
    with EchoUpstream() as upstream, DirectoryServer() as directory:
        directory.keys["partner.example"] = [partner]
        config = load_recipe(front, "allow-verified.yaml", upstream.port, directory.port)
        listeners = config["static_resources"]["listeners"]
        recipe = listeners[0]
        # RBAC comes right after our filter entries: the filter (native), or its hold and it.
        policy_at = [f["name"] for f in http_filters(recipe)].index("envoy.filters.http.rbac")
        assert policy_at == (2 if front.name == "wasm" else 1), filter_names(config)
        variants = [("rbac_first", 0)] + ([("rbac_between", 1)] if policy_at == 2 else [])
        for name, position in variants:
            variant = copy.deepcopy(recipe)
            variant["name"] = name
            chain = http_filters(variant)
            rbac_filter = chain.pop(policy_at)
            assert rbac_filter["name"] == "envoy.filters.http.rbac"
            chain.insert(position, rbac_filter)
            listeners.append(variant)
        with Envoy(yaml.safe_dump(config), concurrency=1, front=front) as envoy:
            for name, _ in variants:
                early = Client(envoy.ports[name])
                assert_rbac_denied(early.signed(partner, PARTNER, "/agents/feed"))
                assert_rbac_denied(early.signed_body(partner, PARTNER, "/agents/feed", b"{}"))
                assert_rbac_denied(early.unsigned("/agents/feed", extra=FORGED_PARTNER))
                assert_passed(early.unsigned("/"), "unsigned")
            # The recipe as written, in the same Envoy, admits both.
            ok = Client(envoy.ports["public"])
            assert_passed(ok.signed(partner, PARTNER, "/agents/feed"), "verified", "partner")
            assert_passed(ok.signed_body(partner, PARTNER, "/agents/feed", b"{}"), "verified", "partner")


# ---------------------------------------------------------------------------- rate per agent

# The recipe's buckets (max_tokens; each refills over an hour, so none refills during a test).
PARTNER_BUDGET = 5
OTHER_AGENT_BUDGET = 3
UNSIGNED_BUDGET = 4
UNVERIFIED_BUDGET = 2
# The local rate limit's counters (its stat_prefix, at the root of Envoy's stats).
RATE_STATS = "wba_rate.http_local_rate_limit."


@pytest.fixture(scope="module")
def rate(front):
    """rate-per-agent.yaml, with three agents' key directories. Every bucket starts full."""
    keys = {"partner": Key(), "crawler": Key(), "indexer": Key()}
    with EchoUpstream() as upstream, DirectoryServer() as directory:
        for name, key in keys.items():
            directory.keys[f"{name}.example"] = [key]
        config = load_recipe(front, "rate-per-agent.yaml", upstream.port, directory.port)
        with Envoy(yaml.safe_dump(config), concurrency=2, front=front) as envoy:
            yield envoy, Client(envoy.ports["public"]), keys


def assert_rate_limited(r):
    """Envoy's local rate limit answered (not the filter's own 429 for a replayed signature)."""
    assert r.status == 429, (r.status, r.body)
    assert r.body == "local_rate_limited", (r.headers, r.body)
    assert r.header("content-type") == "text/plain"


def spend(send, budget, result, agent_name=None):
    """`budget` requests pass, each from the same bucket; the next one is refused."""
    for i in range(budget):
        r = send()
        assert_passed(r, result, agent_name)
        assert r.header("x-ratelimit-limit") == str(budget), r.headers
        assert r.header("x-ratelimit-remaining") == str(budget - 1 - i), r.headers
    r = send()
    assert_rate_limited(r)
    assert r.header("x-ratelimit-remaining") == "0"
    return r


def test_rate_limit_buckets_per_agent(rate):
    """One test, in order, because the buckets are the recipe's and never refill here."""
    envoy, c, keys = rate
    agent_url = {"partner": PARTNER, "crawler": CRAWLER, "indexer": INDEXER}

    def agent(name):
        return lambda: c.signed(keys[name], agent_url[name], f"/items/{name}")

    # The named agent has its own budget; the request after it is refused.
    spend(agent("partner"), PARTNER_BUDGET, "verified", "partner")
    # Meanwhile another agent still passes: every other verified agent gets a bucket of its own
    # (the wildcard descriptor), and two of them do not share one.
    spend(agent("crawler"), OTHER_AGENT_BUDGET, "verified", "crawler")
    spend(agent("indexer"), OTHER_AGENT_BUDGET, "verified", "indexer")
    # Unsigned traffic still passes, in its own bucket, even when it claims to be the partner
    # (whose bucket is empty): the claim was stripped before the rate limit counted it.
    spend(lambda: c.unsigned("/items/anon", extra=FORGED_PARTNER), UNSIGNED_BUDGET, "unsigned")
    # Unverified traffic (a key the partner's directory does not list) has its own bucket.
    spend(lambda: c.signed(Key(), PARTNER, "/items/unknown-key"), UNVERIFIED_BUDGET, "unverified")
    # Nothing refilled, nothing leaked between buckets.
    for send in (agent("partner"), agent("crawler"), agent("indexer"), lambda: c.unsigned("/x")):
        assert_rate_limited(send())
    passed = PARTNER_BUDGET + 2 * OTHER_AGENT_BUDGET + UNSIGNED_BUDGET + UNVERIFIED_BUDGET
    stats = envoy.stats(RATE_STATS)
    assert stats[RATE_STATS + "ok"] == passed
    assert stats[RATE_STATS + "rate_limited"] == stats[RATE_STATS + "enforced"] == 5 + 4


def test_rate_limit_counts_after_the_filters_own_rejections(rate):
    """A request the filter refuses (an invalid signature) never reaches the rate limit, and a
    replayed signature is the filter's 429 (problem+json), not the rate limit's."""
    envoy, c, keys = rate
    before = envoy.stats(RATE_STATS)
    h = sign(keys["crawler"], "GET", "elsewhere.example", "/items/x", agent=CRAWLER,
             nonce=nonce()).headers
    r = request(c.port, "GET", "/items/x", headers=h)
    assert r.status == 403 and r.json()["reason"] == "bad_signature"
    assert envoy.stats(RATE_STATS) == before
    h = sign(keys["indexer"], "GET", c.authority, "/items/y", agent=INDEXER, nonce=nonce()).headers
    request(c.port, "GET", "/items/y", headers=h)  # counted (passes, or 429 if its bucket is empty)
    counted = envoy.stats(RATE_STATS)
    r = request(c.port, "GET", "/items/y", headers=h)
    assert r.status == 429 and r.json()["reason"] == "replayed"
    assert r.header("x-ratelimit-limit") is None
    assert envoy.stats(RATE_STATS) == counted
