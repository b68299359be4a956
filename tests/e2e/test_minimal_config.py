"""The README's minimal Envoy configuration (envoy/minimal.yaml) works as written."""

import time

from harness import ROOT, RFC_TEST_KEY, EchoUpstream, Envoy, request, sign, wasm_path


def test_minimal_yaml_loads_and_verifies():
    text = (ROOT / "envoy" / "minimal.yaml").read_text()
    with EchoUpstream() as upstream:
        text = (
            text.replace("/etc/envoy/web_bot_auth.wasm", wasm_path())
            .replace("port_value: 8080", "port_value: 0")
            .replace("port_value: 9901", "port_value: 0")
            .replace("port_value: 8081", f"port_value: {upstream.port}")
            .replace("0.0.0.0", "127.0.0.1")
        )
        with Envoy(text, concurrency=1) as envoy:
            port = envoy.ports["public"]
            # The example pins the RFC 9421 test key (and so allows test keys).
            h = sign(RFC_TEST_KEY, "GET", f"127.0.0.1:{port}", "/", agent="https://agent.example").headers
            seen = request(port, headers=h).seen()
            assert seen.get("x-web-bot-auth-result") == "verified"
            assert seen.get("x-web-bot-auth-agent-name") == "example-agent"
            assert request(port, headers={"X-Web-Bot-Auth-Result": "verified"}).seen().get(
                "x-web-bot-auth-result"
            ) == "unsigned"
            # The stdout access log lands in envoy.log, flushed asynchronously.
            for _ in range(100):
                if "wba_result=unsigned" in envoy.log():
                    break
                time.sleep(0.05)
            log = envoy.log()
            assert f"wba_result=verified wba_reason=- wba_agent=https://agent.example wba_key_id={RFC_TEST_KEY.thumbprint}" in log
            assert "wba_result=unsigned wba_reason=-" in log
