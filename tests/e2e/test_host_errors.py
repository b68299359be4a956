"""When the host cannot hand over a request's headers, the filter can neither strip forged
identity headers nor check a signature: it must refuse the request, never pass it on as
`unsigned`. Proved with a build of the filter whose host adapter can never read the request
headers (`--features fault-unreadable-headers`, built by `make e2e`), in a real Envoy."""

import os

import pytest

from harness import ROOT, EchoUpstream, Envoy, Key, bootstrap, request, sign


def fault_wasm():
    return os.environ.get("WBA_FAULT_WASM") or str(ROOT / "target" / "e2e" / "web_bot_auth_unreadable_headers.wasm")


@pytest.mark.wasm_only("the fault-unreadable-headers build is a Wasm build (its proxy-wasm host adapter)")
@pytest.mark.parametrize("mode", ["observe", "enforce", "require"])
def test_unreadable_headers_are_refused_in_every_mode(front, mode):
    key = Key()
    cfg = {"mode": mode, "agents": [{"name": "a", "url": "https://agent.test", "keys": [key.jwk]}]}
    with EchoUpstream() as upstream:
        listener = bootstrap.listener("faulty", "upstream", front.filters(cfg, artifact=fault_wasm()))
        config = bootstrap.bootstrap([listener], [bootstrap.cluster("upstream", upstream.port)])
        with Envoy(config, concurrency=1, front=front) as envoy:
            port = envoy.ports["faulty"]
            forged = {"X-Web-Bot-Auth-Result": "verified", "X-Web-Bot-Auth-Agent": "https://evil.example"}
            signed = sign(key, "GET", f"127.0.0.1:{port}", "/").headers
            for headers in (forged, {**signed, **forged}, {}):
                r = request(port, headers=headers)
                assert r.status == 500, f"passed on: {r.status} {r.body[:200]}"
                assert r.json()["title"] == "Request could not be checked"
            assert envoy.counter("host_error") == 3
