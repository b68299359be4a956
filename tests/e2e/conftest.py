"""Fixtures: one echo upstream and one Envoy (two workers) with a listener per filter setup, per
front end of the filter.

Front ends: every test that runs an Envoy takes the session fixture `front` (directly, or
through `envoy` and the test modules' own Envoy fixtures), so runs once per front end, with ids
`wasm` and `native` (`pytest -k native`). WBA_FRONTS=wasm (or native; comma-separated) selects
front ends. When the native module is missing (WBA_NATIVE unset and no dist/libweb_bot_auth.so)
its runs are skipped, or fail with WBA_REQUIRE_NATIVE=1 (`make e2e`, CI) or when WBA_FRONTS names it.
Tests about one front end's artifact itself carry `@pytest.mark.wasm_only("why")` or
`@pytest.mark.native_only("why")`: their runs for the other front end are skipped with that reason.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import RFC_TEST_KEY, EchoUpstream, Envoy, Front, Key, bootstrap  # noqa: E402

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


def filters(front, cfg, name):
    """The front end's filter entries; for wasm, the filter alone with WBA_NO_HOLD=1, to run these
    tests against a build from before the hold role (how the fixes were shown to fail on the old
    build)."""
    if front.name == "wasm" and os.environ.get("WBA_NO_HOLD"):
        return [front.filter(cfg, name=name)]
    return front.filters(cfg, name=name)


# Listener name -> bootstrap.listener() options, where they differ from our shipped defaults.
LISTENER_OPTIONS = {"underscores_allowed": {"underscores": "ALLOW"}}


def selected_fronts():
    """The front ends to run: WBA_FRONTS (comma-separated), or both."""
    names = [n.strip() for n in os.environ.get("WBA_FRONTS", ",".join(bootstrap.FRONTS)).split(",") if n.strip()]
    unknown = set(names) - set(bootstrap.FRONTS)
    if unknown or not names:
        raise pytest.UsageError(f"WBA_FRONTS={os.environ.get('WBA_FRONTS')!r}: one or more of {bootstrap.FRONTS}")
    return names


# Marker -> the one front end its tests are about.
ONLY = {"wasm_only": "wasm", "native_only": "native"}


def pytest_configure(config):
    for marker, name in ONLY.items():
        config.addinivalue_line(
            "markers", f"{marker}(reason): about the {name} artifact itself; the other front end's runs are skipped"
        )


def pytest_collection_modifyitems(config, items):
    fronts = selected_fronts()
    for item in items:
        for marker_name, only in ONLY.items():
            marker = item.get_closest_marker(marker_name)
            if marker is None:
                continue
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", f"about the {only} module")
            callspec = getattr(item, "callspec", None)
            front = callspec.params.get("front") if callspec else None
            # Parametrized by front end: the other front end's run skips. Not (no Envoy: the .wasm
            # file, a manifest): runs unless its front end is deselected.
            if (front is not None and front != only) or (front is None and only not in fronts):
                item.add_marker(pytest.mark.skip(reason=f"{only} only: {reason}"))


@pytest.fixture(scope="session", params=selected_fronts())
def front(request):
    """The front end under test (its id is its name: `wasm`, `native`)."""
    f = Front(request.param)
    if not f.available():
        build = "run `make build`" if f.name == "wasm" else "run `make build` or set WBA_NATIVE"
        message = f"{f.name} front end: {f.artifact} missing ({build})"
        # Wasm is always required; native when CI says so, or when it was asked for by name.
        if f.name == "wasm" or os.environ.get("WBA_REQUIRE_NATIVE") == "1" or os.environ.get("WBA_FRONTS"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return f


@pytest.fixture(scope="session")
def agent_key():
    return Key()


@pytest.fixture(scope="session")
def upstream():
    with EchoUpstream() as u:
        yield u


@pytest.fixture(scope="session")
def envoy(front, agent_key, upstream, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"envoy-{front.name}")
    listeners = []
    for name, overrides in SETUPS.items():
        cfg = plugin_config(agent_key, **{"mode": "enforce", **overrides})
        listeners.append(
            bootstrap.listener(
                name,
                "upstream",
                filters(front, cfg, name=f"web_bot_auth_{name}"),
                access_log_path=str(work / f"access-{name}.log"),
                **LISTENER_OPTIONS.get(name, {}),
            )
        )
    config = bootstrap.bootstrap(listeners, [bootstrap.cluster("upstream", upstream.port)])
    e = Envoy(config, concurrency=2, workdir=str(work), front=front)
    e.start()
    yield e
    e.stop()
