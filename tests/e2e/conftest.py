"""Fixtures: one echo upstream and one Envoy (two workers) with a listener per filter setup."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import RFC_TEST_KEY, EchoUpstream, Envoy, Key, bootstrap, wasm_path  # noqa: E402

AGENT_URL = "https://agent.test"
TEST_KEY_AGENT_URL = "https://rfc-test-key.agent.test"


def plugin_config(agent_key, mode, **overrides):
    cfg = {
        "mode": mode,
        # Replay protection comes with the key directory issue; these tests resend requests.
        "replay_protection": False,
        "agents": [
            {"name": "test-agent", "url": AGENT_URL, "keys": [agent_key.jwk]},
            {"name": "rfc-test-key", "url": TEST_KEY_AGENT_URL, "keys": [RFC_TEST_KEY.jwk]},
        ],
    }
    cfg.update(overrides)
    return cfg


# Listener name -> plugin configuration overrides.
SETUPS = {
    "observe": {"mode": "observe"},
    "enforce": {"mode": "enforce"},
    "require": {"mode": "require"},
    "strict": {"mode": "enforce", "required_components": ["@method", "@path"], "require_nonce": True},
    "test_keys": {"mode": "enforce", "allow_test_keys": True},
    "prefix": {"mode": "enforce", "header_prefix": "X-Bot-"},
    # Envoy's default: headers with underscores reach the filter (and, unstripped, upstreams).
    "underscores_allowed": {"mode": "enforce"},
}

def filters(wasm, cfg, name):
    """The filter pair; the filter alone with WBA_NO_HOLD=1, to run these tests against a build
    from before the hold role (how the fixes were shown to fail on the old build)."""
    if os.environ.get("WBA_NO_HOLD"):
        return [bootstrap.wasm_filter(wasm, cfg, name=name)]
    return bootstrap.wasm_filters(wasm, cfg, name=name)


# Listener name -> bootstrap.listener() options, where they differ from our shipped defaults.
LISTENER_OPTIONS = {"underscores_allowed": {"underscores": "ALLOW"}}


@pytest.fixture(scope="session")
def agent_key():
    return Key()


@pytest.fixture(scope="session")
def upstream():
    with EchoUpstream() as u:
        yield u


@pytest.fixture(scope="session")
def envoy(agent_key, upstream, tmp_path_factory):
    wasm = wasm_path()
    assert Path(wasm).exists(), f"{wasm} missing: run `make build` first"
    work = tmp_path_factory.mktemp("envoy")
    listeners = []
    for name, overrides in SETUPS.items():
        cfg = plugin_config(agent_key, **{"mode": "enforce", **overrides})
        listeners.append(
            bootstrap.listener(
                name,
                "upstream",
                filters(wasm, cfg, name=f"web_bot_auth_{name}"),
                access_log_path=str(work / f"access-{name}.log"),
                **LISTENER_OPTIONS.get(name, {}),
            )
        )
    config = bootstrap.bootstrap(listeners, [bootstrap.cluster("upstream", upstream.port)])
    e = Envoy(config, concurrency=2, workdir=str(work))
    e.start()
    yield e
    e.stop()
