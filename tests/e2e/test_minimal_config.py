"""The README's minimal Envoy configurations work as written: envoy/minimal.yaml (the Wasm module)
and envoy/minimal-native.yaml (the native dynamic module), which is the same configuration with
the native filter in place of the Wasm filter and its hold companion; and no shipped or
documented configuration trusts a published key."""

import json
import re
import time

import yaml

from harness import (
    ROOT,
    RFC_TEST_KEY,
    DirectoryServer,
    EchoUpstream,
    Envoy,
    Front,
    Key,
    parse_raw_response,
    raw_request,
    request,
    sign,
)

DIRECTORY_CLUSTER = "agent_example_directory"
# Each front end's minimal configuration, as shipped.
MINIMAL = {"wasm": "minimal.yaml", "native": "minimal-native.yaml"}


def minimal_config(front, upstream_port, directory_port):
    """The front end's minimal configuration on loopback: ephemeral ports, this build's module
    (wasm: its path; native: found through the search path, as written), and the agent's
    directory cluster pointed at a local directory server (plain HTTP; TLS is the only change)."""
    config = front.adapt(yaml.safe_load((ROOT / "envoy" / MINIMAL[front.name]).read_text()))
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    for cluster in config["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        if cluster["name"] == "app":
            endpoint["address"]["socket_address"]["port_value"] = upstream_port
        if cluster["name"] == DIRECTORY_CLUSTER:
            cluster.pop("transport_socket")
            cluster["type"] = "STATIC"
            cluster.pop("dns_lookup_family")
            endpoint["address"]["socket_address"].update(address="127.0.0.1", port_value=directory_port)
    return config


def test_minimal_yaml_loads_and_verifies_with_fetched_keys(front):
    agent = Key()
    with EchoUpstream() as upstream, DirectoryServer() as directory:
        directory.keys["agent.example"] = [agent]
        config = minimal_config(front, upstream.port, directory.port)
        with Envoy(yaml.safe_dump(config), concurrency=1, front=front) as envoy:
            port = envoy.ports["public"]
            h = sign(agent, "GET", f"127.0.0.1:{port}", "/", agent="https://agent.example").headers
            seen = request(port, headers=h).seen()
            assert seen.get("x-web-bot-auth-result") == "verified"
            assert seen.get("x-web-bot-auth-agent-name") == "example-agent"
            # A published test key is no key of this agent's.
            h = sign(RFC_TEST_KEY, "GET", f"127.0.0.1:{port}", "/", agent="https://agent.example").headers
            seen = request(port, headers=h).seen()
            assert seen.get("x-web-bot-auth-result") != "verified"
            assert request(port, headers={"X-Web-Bot-Auth-Result": "verified"}).seen().get(
                "x-web-bot-auth-result"
            ) == "unsigned"
            raw = raw_request(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx_web_bot_auth_result: verified")
            assert parse_raw_response(raw).status == 400
            # The stdout access log lands in envoy.log, flushed asynchronously.
            for _ in range(100):
                if "wba_result=unsigned" in envoy.log():
                    break
                time.sleep(0.05)
            log = envoy.log()
            assert (
                f"wba_result=verified wba_reason=- wba_agent=https://agent.example wba_key_id={agent.thumbprint} wba_proof=valid"
                in log
            )
            assert "wba_result=unsigned wba_reason=-" in log


def test_minimal_native_yaml_is_minimal_yaml_with_the_native_filter():
    """Nothing but the filter entries differs: same listener, access log, clusters, plugin
    configuration (compared parsed: the JSON is laid out differently)."""

    def parsed(config):
        for listener in config["static_resources"]["listeners"]:
            for f in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]:
                value = f["typed_config"].get("filter_config", {}).get("value")
                if value:
                    f["typed_config"]["filter_config"]["value"] = json.loads(value)
        return config

    wasm = yaml.safe_load((ROOT / "envoy" / MINIMAL["wasm"]).read_text())
    native = yaml.safe_load((ROOT / "envoy" / MINIMAL["native"]).read_text())
    assert parsed(Front("native").adapt(wasm)) == parsed(native)


def shipped_texts():
    """Every configuration we ship or document: Envoy configurations, the README, the demo and
    benchmark setups (tests excluded: they may allow test keys, on purpose)."""
    paths = list((ROOT / "envoy").rglob("*")) + [ROOT / "README.md"] + list((ROOT / "bench").glob("*.py"))
    text = {".yaml", ".yml", ".json", ".py", ".md", ""}
    return {p.relative_to(ROOT): p.read_text() for p in paths if p.is_file() and p.suffix in text}


def test_no_shipped_configuration_trusts_a_published_key():
    published = [RFC_TEST_KEY.jwk["x"]]
    allow = re.compile(r"""["']?allow_test_keys["']?\s*[:=]\s*(true|True)""")
    for path, text in shipped_texts().items():
        for x in published:
            assert x not in text, f"{path} pins the published RFC 9421 test key"
        assert not allow.search(text), f"{path} sets allow_test_keys"
