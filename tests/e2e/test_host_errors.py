"""When the host cannot hand over a request's headers, the filter can neither strip forged
identity headers nor check a signature: it must refuse the request, never pass it on as
`unsigned`. Proved with a build of the filter whose host adapter can never read the request
headers (`--features fault-unreadable-headers`, built by `make e2e`), in a real Envoy.

The native module's own failure modes, with its test builds (`make fault-build`): a panic in a
request's hook answers that request 500 and never passes it on, the module and Envoy serving on;
and a module built for another Envoy ABI is refused at load, Envoy failing to start."""

import os

import pytest

from harness import CRASH_PATTERNS, ROOT, EchoUpstream, Envoy, Front, Key, bootstrap, request, run_envoy_expecting_failure, sign


def fault_wasm():
    return os.environ.get("WBA_FAULT_WASM") or str(ROOT / "target" / "e2e" / "web_bot_auth_unreadable_headers.wasm")


def fault_native(env, default_dir):
    """A native test build (its folder holds libweb_bot_auth.so), as a front end."""
    folder = os.environ.get(env) or str(ROOT / "target" / "e2e" / default_dir)
    so = os.path.join(folder, "libweb_bot_auth.so")
    assert os.path.isfile(so), f"{so} missing: run `make fault-build`"
    return Front("native", so)


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


@pytest.mark.native_only("the fault-panic build is a native build (its hooks run under catch_unwind)")
@pytest.mark.parametrize("mode", ["observe", "enforce", "require"])
def test_a_panic_answers_500_and_the_module_serves_on(front, mode):
    faulty = fault_native("WBA_FAULT_NATIVE_DIR", "native-panic")
    key = Key()
    cfg = {"mode": mode, "agents": [{"name": "a", "url": "https://agent.test", "keys": [key.jwk]}]}
    with EchoUpstream() as upstream:
        listener = bootstrap.listener("faulty", "upstream", faulty.filters(cfg))
        config = bootstrap.bootstrap([listener], [bootstrap.cluster("upstream", upstream.port)])
        with Envoy(config, concurrency=1, front=faulty) as envoy:
            port = envoy.ports["faulty"]
            forged = {"X-Web-Bot-Auth-Result": "verified", "X-Web-Bot-Auth-Agent": "https://evil.example"}
            signed = sign(key, "GET", f"127.0.0.1:{port}", "/").headers
            for headers in (forged, {**signed, **forged}, {}):
                r = request(port, headers={**headers, "x-wba-test-panic": "1"})
                assert r.status == 500, f"passed on: {r.status} {r.body[:200]}"
                assert "x-web-bot-auth" not in r.body.lower(), r.body  # never the upstream's echo
            assert envoy.counter("host_error") == 3
            assert "internal error (panic)" in envoy.log()
            # The same worker, the same module: the next request is decided as ever.
            h = sign(key, "GET", f"127.0.0.1:{port}", "/").headers
            seen = request(port, headers=h).seen()
            assert seen.get("x-web-bot-auth-result") == "verified"
            r = request(port, headers=forged)
            if mode == "require":
                assert r.status == 403 and r.json()["reason"] == "unsigned", r.body
            else:
                assert r.seen().get("x-web-bot-auth-result") == "unsigned"
            assert envoy.proc.poll() is None


@pytest.mark.native_only("the abi-mismatch-test build is a native build (its load-time ABI check)")
def test_a_module_built_for_another_envoy_abi_is_refused_at_load(front):
    mismatched = fault_native("WBA_MISMATCH_NATIVE_DIR", "native-abi-mismatch")
    cfg = {"mode": "enforce", "agents": [{"name": "a", "url": "https://agent.test", "keys": [Key().jwk]}]}
    config = bootstrap.bootstrap(
        [bootstrap.listener("main", "upstream", mismatched.filters(cfg))], [bootstrap.cluster("upstream", 9)]
    )
    code, log = run_envoy_expecting_failure(config, front=mismatched)
    assert code != 0
    assert "this Envoy's ABI differs" in log and "refusing to load" in log, log[-3000:]
    assert "envoy_dynamic_module_callback_wba_abi_mismatch_test" in log, log[-3000:]
    assert mismatched.load_failure.search(log), log[-3000:]
