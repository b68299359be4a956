"""A bad configuration stops Envoy at start with one clear line naming the problem."""

import pytest

from harness import bootstrap, run_envoy_expecting_failure

BAD = [
    ({"mode": "enforce", "bogus": 1}, "unknown field `bogus`"),
    ({"mode": "block"}, "unknown variant `block`"),
    ({"clock_skew_seconds": "60"}, "invalid type: string \"60\", expected u64"),
    ({"agents": [{"name": "a", "url": "https://a.example"}]}, "agents[0] needs a cluster or pinned keys"),
    (
        {"agents": [{"name": "a", "url": "https://a.example", "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "short"}]}]},
        "agents[0].keys[0]",
    ),
    ({"header_prefix": "sig"}, "header_prefix \"sig\" would remove the signature header"),
    (
        {"agents": [{"name": "a", "url": "https://a.example/keys.json", "type": "jwks_uri", "cluster": "c"}]},
        "agents[0].type is no longer supported: write the JWK Set URL in \"url\" (an https origin means its "
        "/.well-known/http-message-signatures-directory)",
    ),
    (
        {"agents": [
            {"name": "a", "url": "https://a.example", "cluster": "c"},
            {"name": "b", "url": "https://a.example/.well-known/http-message-signatures-directory", "cluster": "c"},
        ]},
        "agents[1].url",
    ),
    ("{not json", "invalid web-bot-auth configuration"),
]


@pytest.mark.parametrize("config,message", BAD, ids=[m for _, m in BAD])
def test_bad_configuration_fails_at_start(front, config, message):
    plugin = front.filter(config)  # a string goes in as written
    cfg = bootstrap.bootstrap(
        [bootstrap.listener("main", "upstream", [plugin])], [bootstrap.cluster("upstream", 9)]
    )
    code, log = run_envoy_expecting_failure(cfg, front=front)
    assert code != 0
    lines = [l for l in log.splitlines() if "invalid web-bot-auth configuration" in l]
    assert len(lines) == 1, log[-3000:]
    assert message in lines[0], lines[0]
    assert front.load_failure.search(log), log[-3000:]
