"""The three algorithms through a real Envoy with a real key directory: Ed25519, ECDSA P-256
(ecdsa-p256-sha256) and RSA-PSS (rsa-pss-sha512), from independent signers (the PyPI
`http-message-signatures` package for ECDSA and RSA-PSS, the npm `web-bot-auth` package for
RSA-PSS), from our `wba sign`, and from this harness; one directory mixing the key types, with
a possession proof by each key; and the refusals: a DER-encoded ECDSA signature, an `alg` that
contradicts the key, a 1024-bit RSA key, HMAC."""

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from harness import (
    CRASH_PATTERNS,
    ROOT,
    DirectoryServer,
    EchoUpstream,
    EcKey,
    Envoy,
    Key,
    RsaKey,
    bootstrap,
    request,
    sign,
    wait_for,
)
from test_directory import closed_port, wba_binary

sys.path.insert(0, str(ROOT / "tests" / "interop" / "python"))
import wba_sign  # noqa: E402  (PyPI http-message-signatures)

PREFIX = "x-web-bot-auth-"
AGENT = "https://agent.test"
HOST = "agent.test"
NODE_DIR = ROOT / "tests" / "interop" / "node"

ED = Key()
EC = EcKey()
RSA = RsaKey(2048)
# Listed in the directory next to the others; a verifier skips it (too short).
RSA_1024 = RsaKey(1024)


@pytest.fixture(scope="module")
def upstream():
    with EchoUpstream() as u:
        yield u


@pytest.fixture(scope="module")
def directory():
    with DirectoryServer(max_age=300) as d:
        d.keys[HOST] = [ED, EC, RSA]
        d.extra[HOST] = [dict(RSA_1024.jwk, kid=RSA_1024.thumbprint)]
        yield d


@pytest.fixture(scope="module")
def envoy(front, upstream, directory):
    cfg = {
        "replay_protection": True,
        "agents": [{"name": "mixed-agent", "url": AGENT, "cluster": "dir"}],
        "directory": {"timeout_ms": 2000, "min_refresh_seconds": 1, "negative_cache_seconds": 1},
    }
    listeners = [
        bootstrap.listener(mode, "upstream", [front.filter(dict(cfg, mode=mode), name=f"wba_{mode}")])
        for mode in ("observe", "enforce")
    ]
    clusters = [
        bootstrap.cluster("upstream", upstream.port),
        bootstrap.cluster("dir", directory.port),
        bootstrap.cluster("nowhere", closed_port()),
    ]
    with Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=2, front=front) as e:
        # Both workers have the key set before the tests look at verdicts.
        wait_for(lambda: all(result(e, harness_signed(e, ED)) == ("verified", None) for _ in range(8)),
                 what="directory fetched")
        yield e
        assert not CRASH_PATTERNS.search(e.log()), CRASH_PATTERNS.search(e.log())


def port_of(envoy):
    return envoy.ports["observe"]


def harness_signed(envoy, key, path="/", **kw):
    port = port_of(envoy)
    return sign(key, "GET", f"127.0.0.1:{port}", path, agent=AGENT, nonce=uuid.uuid4().hex,
                components=("@authority", "@method", "@path", "signature-agent"), **kw).headers


def result(envoy, headers, path="/"):
    seen = request(port_of(envoy), path=path, headers=headers).seen()
    return seen.get(PREFIX + "result"), seen.get(PREFIX + "reason")


def seen_with(envoy, headers, path="/"):
    return request(port_of(envoy), path=path, headers=headers).seen()


@pytest.mark.parametrize("key,alg", [(ED, "ed25519"), (EC, "ecdsa-p256-sha256"), (RSA, "rsa-pss-sha512")],
                         ids=["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"])
def test_each_algorithm_verifies_from_a_mixed_directory(envoy, key, alg):
    for with_alg in (alg, None):
        seen = seen_with(envoy, harness_signed(envoy, key, alg=with_alg))
        assert seen.get(PREFIX + "result") == "verified", seen.headers
        assert seen.get(PREFIX + "key-id") == key.thumbprint
        assert seen.get(PREFIX + "agent") == AGENT


def test_each_key_proved_possession_and_the_short_key_was_skipped(envoy):
    stats = envoy.counters()
    # One valid proof per usable key (Ed25519, P-256, RSA), per fetch; the 1024-bit key is
    # skipped, the rest of the set kept.
    assert stats.get("directory.proof.valid", 0) >= 3, stats
    assert stats.get("directory.proof.invalid", 0) == 0, stats
    assert stats.get("directory.key_skipped", 0) >= 1, stats


@pytest.mark.parametrize("key", [EC, RSA], ids=["ecdsa-p256-sha256", "rsa-pss-sha512"])
def test_python_package_signatures_verify(envoy, key):
    port = port_of(envoy)
    path = f"/py/{uuid.uuid4().hex}?q=1"
    h = wba_sign.sign("GET", f"http://127.0.0.1:{port}{path}", {}, key.private_jwk(), AGENT,
                      nonce=uuid.uuid4().hex)
    assert f'alg="{"ecdsa-p256-sha256" if key is EC else "rsa-pss-sha512"}"' in h["Signature-Input"]
    seen = seen_with(envoy, h, path=path)
    assert seen.get(PREFIX + "result") == "verified", (h, seen.headers)
    assert seen.get(PREFIX + "key-id") == key.thumbprint


def test_npm_package_rsa_pss_signature_verifies(envoy):
    if not (NODE_DIR / "node_modules" / "web-bot-auth").is_dir() or not shutil.which("node"):
        pytest.skip("tests/interop/node has no node_modules (npm ci --prefix tests/interop/node)")
    port = port_of(envoy)
    path = f"/npm/{uuid.uuid4().hex}"
    now = int(time.time())
    job = {
        "method": "GET",
        "url": f"http://127.0.0.1:{port}{path}",
        "headers": {},
        "jwk": RSA.private_jwk(),  # alg PS512: the package's RSA-PSS signer
        "created": now,
        "expires": now + 300,
        # The legacy bare string, covered as plain "signature-agent" (the package's default
        # components): the package signs a dictionary member's whole field (filter/core/tests/interop_node.rs).
        "signature_agent": f'"{AGENT}"',
    }
    out = subprocess.run(["node", "sign.mjs"], cwd=NODE_DIR, input=json.dumps(job),
                         capture_output=True, text=True, check=True).stdout
    h = json.loads(out)
    assert 'alg="rsa-pss-sha512"' in h["Signature-Input"], h
    seen = seen_with(envoy, h, path=path)
    assert seen.get(PREFIX + "result") == "verified", (h, seen.headers)
    assert seen.get(PREFIX + "key-id") == RSA.thumbprint


@pytest.mark.parametrize("key", [ED, EC, RSA], ids=["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"])
def test_wba_sign_with_each_key_type(envoy, key, tmp_path):
    key_file = tmp_path / "agent.jwk"
    key_file.write_text(json.dumps(key.private_jwk()))
    port = port_of(envoy)
    out = subprocess.run(
        [wba_binary(), "sign", "--key", str(key_file), "--agent", AGENT, "--method", "GET",
         "--url", f"http://127.0.0.1:{port}/ours", "--random-nonce"],
        capture_output=True, text=True, check=True,
    ).stdout
    h = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    seen = seen_with(envoy, h, path="/ours")
    assert seen.get(PREFIX + "result") == "verified", (out, seen.headers)
    assert seen.get(PREFIX + "key-id") == key.thumbprint


def test_der_ecdsa_signature_is_refused(envoy):
    h = harness_signed(envoy, EC.as_der(), alg="ecdsa-p256-sha256")
    assert result(envoy, h) == ("invalid", "bad_signature")
    # In enforce mode the request is refused.
    port = envoy.ports["enforce"]
    h = sign(EC.as_der(), "GET", f"127.0.0.1:{port}", "/", agent=AGENT, nonce=uuid.uuid4().hex).headers
    assert request(port, headers=h).status == 403


@pytest.mark.parametrize("key,alg", [
    (EC, "ed25519"), (EC, "rsa-pss-sha512"), (RSA, "ecdsa-p256-sha256"), (ED, "rsa-pss-sha512"),
], ids=["ec-as-ed25519", "ec-as-rsa", "rsa-as-ecdsa", "ed25519-as-rsa"])
def test_alg_contradicting_the_key_is_refused(envoy, key, alg):
    assert result(envoy, harness_signed(envoy, key, alg=alg)) == ("invalid", "bad_signature")


def test_signature_by_a_short_rsa_key_finds_no_key(envoy):
    # The directory lists it, but a verifier skips keys under 2048 bits: unknown to the filter.
    h = harness_signed(envoy, RSA_1024, alg="rsa-pss-sha512")
    assert result(envoy, h) == ("unverified", "unknown_key")


def test_hmac_is_an_unsupported_algorithm(envoy):
    assert result(envoy, harness_signed(envoy, ED, alg="hmac-sha256")) == ("invalid", "unsupported_algorithm")


def test_wba_serve_publishes_a_mixed_directory_the_filter_uses(front, upstream, tmp_path):
    """`wba serve` with an Ed25519, a P-256 and an RSA key: one directory, a possession proof
    signed by each key in its own algorithm, all valid in the filter; each key verifies."""
    keys = [Key(), EcKey(), RsaKey(2048)]
    args = [wba_binary(), "serve", "--bind", "127.0.0.1", "--port", "0"]
    for i, k in enumerate(keys):
        f = tmp_path / f"k{i}.jwk"
        f.write_text(json.dumps(k.private_jwk()))
        args += ["--key", str(f)]
    served = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = served.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), (line, served.stderr.read())
        port = int(line.strip().rsplit(":", 1)[1])
        agent = "https://served.test"
        cfg = {"mode": "observe", "replay_protection": False,
               "agents": [{"name": "served", "url": agent, "cluster": "served"}],
               "directory": {"timeout_ms": 2000}}
        listeners = [bootstrap.listener("observe", "upstream",
                                        [front.filter(cfg, name="wba_observe")])]
        clusters = [bootstrap.cluster("upstream", upstream.port), bootstrap.cluster("served", port)]
        with Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=1, front=front) as e:
            p = e.ports["observe"]
            for k in keys:
                def verified():
                    h = sign(k, "GET", f"127.0.0.1:{p}", "/", agent=agent,
                             components=("@authority", "signature-agent")).headers
                    return request(p, headers=h).seen().get(PREFIX + "result") == "verified"
                wait_for(verified, what=f"{k.jwk['kty']} key verified")
            stats = e.counters()
            assert stats.get("directory.proof.valid", 0) >= 3, stats
            assert stats.get("directory.proof.invalid", 0) == 0, stats
            assert not CRASH_PATTERNS.search(e.log())
    finally:
        served.terminate()
        served.wait(timeout=10)
