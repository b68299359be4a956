"""The README's minimal Envoy configuration (envoy/minimal.yaml) works as written, and no shipped
or documented configuration trusts a published key."""

import re
import time

import yaml

from harness import (
    ROOT,
    RFC_TEST_KEY,
    DirectoryServer,
    EchoUpstream,
    Envoy,
    Key,
    parse_raw_response,
    raw_request,
    request,
    sign,
)

DIRECTORY_CLUSTER = "agent_example_directory"


def minimal_config(front, upstream_port, directory_port):
    """envoy/minimal.yaml on loopback: ephemeral ports, this build's module (for native: the
    dynamic module in place of the Wasm filter and its hold companion, same plugin
    configuration), and the agent's directory cluster pointed at a local directory server
    (plain HTTP; TLS is the only change)."""
    config = front.adapt(yaml.safe_load((ROOT / "envoy" / "minimal.yaml").read_text()))
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
