"""Forged identity headers never reach the upstream, whatever their spelling: upper case,
repeats, and `_` for `-` (CGI-style upstreams fold `x_web_bot_auth_agent` and
`x-web-bot-auth-agent` into the same `HTTP_X_WEB_BOT_AUTH_AGENT`), over HTTP/1.1 and HTTP/2,
with Envoy letting underscores through (its default) and with our shipped REJECT_REQUEST."""

import pytest

from harness import Seen, h2_request, parse_raw_response, raw_request, sign

PREFIX_FORMS = [
    "x_web_bot_auth_agent",
    "X_WEB_BOT_AUTH_RESULT",
    "x-web_bot-auth-key-id",
    "x_web-bot_auth-agent-name",
    "X-Web-Bot-Auth_Covered",
]


def folded(name):
    """The name as a CGI-style upstream sees it."""
    return name.upper().replace("-", "_")


def assert_no_forgery(seen, forged_value):
    ours = [(n, v) for n, v in seen.headers if folded(n).startswith("X_WEB_BOT_AUTH_")]
    assert all("_" not in n for n, _ in ours), ours
    assert all(v != forged_value for _, v in ours), ours


@pytest.mark.parametrize("signed", [False, True])
def test_underscore_forms_are_stripped_over_http1(envoy, agent_key, signed):
    port = envoy.ports["underscores_allowed"]
    authority = f"127.0.0.1:{port}"
    lines = [f"GET /spoof HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: https://evil.example" for name in PREFIX_FORMS]
    if signed:
        for n, v in sign(agent_key, "GET", authority, "/spoof").headers.items():
            lines.append(f"{n}: {v}")
    response = parse_raw_response(raw_request(port, "\r\n".join(lines)))
    assert response.status == 200, response.body
    seen = response.seen()
    assert_no_forgery(seen, "https://evil.example")
    assert seen.get("x-web-bot-auth-result") == ("verified" if signed else "unsigned")
    if signed:
        assert seen.get("x-web-bot-auth-agent") == "https://agent.test"


@pytest.mark.parametrize("signed", [False, True])
def test_underscore_forms_are_stripped_over_http2(envoy, agent_key, signed):
    port = envoy.ports["underscores_allowed"]
    authority = f"127.0.0.1:{port}"
    headers = [(name.lower(), "https://evil.example") for name in PREFIX_FORMS]
    if signed:
        headers += list(sign(agent_key, "GET", authority, "/spoof2").headers.items())
    response = h2_request(port, "GET", "/spoof2", headers, authority=authority)
    assert response is not None and response.status == 200, response and response.body
    seen = response.seen()
    assert_no_forgery(seen, "https://evil.example")
    assert seen.get("x-web-bot-auth-result") == ("verified" if signed else "unsigned")


def test_shipped_listeners_reject_underscore_headers(envoy):
    # Defence in depth in our configurations: Envoy itself refuses such requests.
    port = envoy.ports["enforce"]
    response = parse_raw_response(
        raw_request(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx_web_bot_auth_agent: x")
    )
    assert response.status == 400
    assert h2_request(port, "GET", "/", [("x_web_bot_auth_agent", "x")]) is None


def test_a_prefix_with_dashes_owns_its_underscore_forms(envoy):
    port = envoy.ports["prefix"]  # header_prefix "X-Bot-", REJECT_REQUEST is Envoy's business
    response = h2_request(port, "GET", "/", [("x-bot-result", "verified"), ("x-bot-agent", "e")])
    seen = response.seen()
    assert seen.all("x-bot-result") == ["unsigned"]
    assert seen.all("x-bot-agent") == []
