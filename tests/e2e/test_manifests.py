"""The Kubernetes examples in envoy/kubernetes/: schema-valid, consistent with each other and with
envoy/minimal.yaml, failing closed, and accepted by the module itself.

What checks what:
- Schema-validated, unknown fields refused: the core kinds (Namespace, Deployment, Service,
  PodDisruptionBudget, NetworkPolicy), by kubernetes-validate (PyPI, strict mode) against
  Kubernetes 1.25 and the newest version it ships.
- Schema-validated (types, enums, patterns, required fields; unknown fields NOT refused, as the
  API server's own structural schemas do not refuse them, and no CEL rules): the custom
  resources, by the validators kubernetes-models compiles from the CRDs' OpenAPI schemas (npm,
  tests/e2e/k8s-schemas, installed by `make k8s-deps`): Istio's WasmPlugin, ServiceEntry and
  DestinationRule; Envoy Gateway's EnvoyExtensionPolicy, EnvoyPatchPolicy and
  ClientTrafficPolicy. The fields that matter (failStrategy, failOpen, phase, priority, the
  clusters, the TLS settings) are asserted one by one below, so a misspelt one fails here.
- The filter configurations inside them (pluginConfig, config): loaded by this build's module in
  a real Envoy, which refuses unknown fields and wrong types.
- Only parsed: nothing else; the Dockerfile is not checked (no image is built here).
"""

import copy
import json
import shutil
import subprocess
import warnings

import kubernetes_validate
import pytest
import yaml

from harness import (
    CRASH_PATTERNS,
    ROOT,
    RFC_TEST_KEY,
    EchoUpstream,
    Envoy,
    EnvoyFailed,
    Key,
    bootstrap,
    request,
    run_envoy_expecting_failure,
    sign,
)

DIR = ROOT / "envoy" / "kubernetes"
SCHEMAS = ROOT / "tests" / "e2e" / "k8s-schemas"
CORE_KINDS = {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
CRD_KINDS = {
    "WasmPlugin",
    "ServiceEntry",
    "DestinationRule",
    "EnvoyExtensionPolicy",
    "EnvoyPatchPolicy",
    "ClientTrafficPolicy",
}
KUBERNETES_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
REPLAY_STORE = {"timeout_ms": 250, "on_error": "reject"}
ISTIO_DIRECTORY_CLUSTER = "outbound|443||agent.example"
ISTIO_REPLAY_CLUSTER = "outbound|8080||wba-replay.web-bot-auth.svc.cluster.local"
PINNED_PLACEHOLDER = "REPLACE_WITH_THE_AGENTS_BASE64URL_PUBLIC_KEY"

# What Istio's WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy deploy is the Wasm module (an
# OCI image, with its hold companion): the Envoy runs here load that, never the native module.
pytestmark = pytest.mark.wasm_only("the manifests deploy the Wasm module (Istio WasmPlugin, Envoy Gateway)")


def documents(name=None):
    """(file name, object) for every document of every manifest (or of one)."""
    files = [DIR / name] if name else sorted(DIR.glob("*.yaml"))
    return [(f.name, d) for f in files for d in yaml.safe_load_all(f.read_text()) if d is not None]


def objects(name, kind):
    return [d for _, d in documents(name) if d["kind"] == kind]


def one(name, kind, metadata_name=None):
    found = [d for d in objects(name, kind) if metadata_name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{name}: {len(found)} {kind} {metadata_name or ''}"
    return found[0]


def minimal_config():
    """The filter's configuration in envoy/minimal.yaml, which the manifests must repeat."""
    config = yaml.safe_load((ROOT / "envoy" / "minimal.yaml").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for f in hcm["http_filters"]:
        c = f["typed_config"].get("config", {})
        if c.get("name") == "web_bot_auth":
            return json.loads(c["configuration"]["value"])
    raise AssertionError("no web_bot_auth filter in envoy/minimal.yaml")


def with_clusters(directory, replay):
    cfg = copy.deepcopy(minimal_config())
    for agent in cfg["agents"]:
        agent["cluster"] = directory
    if replay:
        cfg["replay_store"] = {"cluster": replay, **REPLAY_STORE}
    return cfg


def crd_validation(docs):
    node = shutil.which("node")
    assert node, "node is missing"
    assert (SCHEMAS / "node_modules").is_dir(), "the schema validators are missing: run `make k8s-deps`"
    r = subprocess.run(
        [node, str(SCHEMAS / "validate.mjs")], input=json.dumps(docs), capture_output=True, text=True,
        cwd=SCHEMAS, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ------------------------------------------------------------------------------------ schemas


def test_every_kind_is_schema_validated():
    kinds = {d["kind"] for _, d in documents()}
    assert kinds <= CORE_KINDS | CRD_KINDS, f"not validated by anything: {kinds - CORE_KINDS - CRD_KINDS}"
    assert {"WasmPlugin", "EnvoyExtensionPolicy", "Deployment", "Service"} <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_kinds_against_kubernetes_schemas_strictly(version):
    checked = 0
    for name, d in documents():
        if d["kind"] in CORE_KINDS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {d['kind']} {d['metadata']['name']}: {list(e.path)}: {e.message}")
            checked += 1
    assert checked >= 7


def test_custom_resources_against_the_crds_schemas():
    docs = [(n, d) for n, d in documents() if d["kind"] in CRD_KINDS]
    results = crd_validation([d for _, d in docs])
    assert len(results) == len(docs)
    for (name, d), r in zip(docs, results):
        assert r["schema"], f"{name}: {r['error']}"
        assert r["error"] is None, f"{name}: {d['kind']} {d['metadata']['name']}: {r['error']}"


def test_the_crd_validators_do_refuse_a_bad_value():
    """The validators are live: wrong enum values and types are caught."""
    wasm_plugin = copy.deepcopy(one("istio.yaml", "WasmPlugin", "web-bot-auth"))
    wasm_plugin["spec"]["failStrategy"] = "FAIL_CLOSED"
    eep = copy.deepcopy(one("envoy-gateway.yaml", "EnvoyExtensionPolicy"))
    eep["spec"]["wasm"][0]["failOpen"] = "false"
    dr = copy.deepcopy(one("istio.yaml", "DestinationRule"))
    dr["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"] = "TLS"
    unknown = {"apiVersion": "example.com/v1", "kind": "Nothing", "metadata": {"name": "x"}}
    results = crd_validation([wasm_plugin, eep, dr, unknown])
    assert "failStrategy" in results[0]["error"]
    assert "failOpen" in results[1]["error"]
    assert "mode" in results[2]["error"]
    assert results[3]["schema"] is None and "no schema" in results[3]["error"]


# ------------------------------------------------------------------------------------ Istio


def test_istio_filter_and_hold_companion():
    plugins = objects("istio.yaml", "WasmPlugin")
    assert [p["metadata"]["name"] for p in plugins] == ["web-bot-auth-hold", "web-bot-auth"]
    hold, verify = (p["spec"] for p in plugins)
    for spec in (verify, hold):
        assert spec["phase"] == "AUTHN"
        assert spec["failStrategy"] == "FAIL_CLOSE"
        assert spec["url"].startswith("oci://REGISTRY/")
        # One VM for both: same code, no vm_id or VM configuration of their own.
        assert "vmConfig" not in spec
    assert hold["url"] == verify["url"]
    assert hold["selector"] == verify["selector"]
    assert hold.get("match") == verify.get("match")
    assert hold["pluginName"] == verify["pluginName"]
    # Istio applies a phase's plugins by descending priority: the hold companion right before.
    assert hold["priority"] == verify["priority"] + 1
    assert hold["pluginConfig"] == {"role": "hold"}
    assert verify["pluginConfig"] == with_clusters(ISTIO_DIRECTORY_CLUSTER, ISTIO_REPLAY_CLUSTER)


def test_istio_directory_cluster_is_tls_checked_for_the_agent():
    se = one("istio.yaml", "ServiceEntry")["spec"]
    dr = one("istio.yaml", "DestinationRule")["spec"]
    # outbound|443||agent.example is the cluster Istio makes for this host and port.
    assert se["hosts"] == ["agent.example"] and [p["number"] for p in se["ports"]] == [443]
    assert se["location"] == "MESH_EXTERNAL" and se["resolution"] == "DNS"
    assert se["exportTo"] == ["."] and dr["exportTo"] == ["."]
    assert dr["host"] == "agent.example"
    (setting,) = dr["trafficPolicy"]["portLevelSettings"]
    assert setting["port"] == {"number": 443}
    tls = setting["tls"]
    assert tls["mode"] == "SIMPLE" and tls["sni"] == "agent.example"
    assert tls["subjectAltNames"] == ["agent.example"]
    assert tls.get("insecureSkipVerify") in (None, False)
    assert tls["caCertificates"]


def test_istio_replay_cluster_is_the_replay_service():
    svc = one("replay-store.yaml", "Service", "wba-replay")
    host = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    (port,) = svc["spec"]["ports"]
    assert ISTIO_REPLAY_CLUSTER == f"outbound|{port['port']}||{host}"


# ------------------------------------------------------------------------------ Envoy Gateway


def eg_entries(name):
    eep = one(name, "EnvoyExtensionPolicy")
    assert eep["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}
    ], "the whole Gateway: every route's inbound identity headers must be stripped"
    # Envoy Gateway chains the entries in this order: the hold companion before the filter.
    hold, verify = eep["spec"]["wasm"]
    for entry in (verify, hold):
        assert entry["failOpen"] is False
        assert entry["code"]["type"] == "Image"
        assert entry["code"]["image"]["url"].startswith("REGISTRY/")
        assert entry["rootID"] == "web_bot_auth"
    assert hold["code"] == verify["code"]
    assert hold["config"] == {"role": "hold"}
    return eep["metadata"]["namespace"], verify["config"]


def test_envoy_gateway_filter_and_hold_companion():
    namespace, config = eg_entries("envoy-gateway.yaml")
    assert config == with_clusters("agent_example_directory", "wba_replay")


def test_envoy_gateway_clusters_are_added_under_the_configured_names():
    namespace, config = eg_entries("envoy-gateway.yaml")
    epp = one("envoy-gateway.yaml", "EnvoyPatchPolicy")
    assert epp["metadata"]["namespace"] == namespace
    assert epp["spec"]["type"] == "JSONPatch"
    added = {}
    for patch in epp["spec"]["jsonPatches"]:
        assert patch["type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        assert patch["operation"]["op"] == "add" and patch["operation"]["path"] == ""
        cluster = patch["operation"]["value"]
        assert cluster["name"] == patch["name"] == cluster["load_assignment"]["cluster_name"]
        added[cluster["name"]] = cluster
    named = {a["cluster"] for a in config["agents"]} | {config["replay_store"]["cluster"]}
    assert set(added) == named

    def address(cluster):
        ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        return ep["address"]["socket_address"]

    directory = added["agent_example_directory"]
    assert address(directory) == {"address": "agent.example", "port_value": 443}
    tls = directory["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext") and tls["sni"] == "agent.example"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"]
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": "agent.example"}}]

    svc = one("replay-store.yaml", "Service", "wba-replay")
    assert address(added["wba_replay"]) == {
        "address": f"wba-replay.{svc['metadata']['namespace']}.svc.cluster.local",
        "port_value": svc["spec"]["ports"][0]["port"],
    }
    ctp = one("envoy-gateway.yaml", "ClientTrafficPolicy")
    assert ctp["spec"]["headers"]["withUnderscoresAction"] == "RejectRequest"


def test_envoy_gateway_pinned_keys_variant():
    _, config = eg_entries("envoy-gateway-pinned-keys.yaml")
    expected = copy.deepcopy(minimal_config())
    for agent in expected["agents"]:
        del agent["cluster"]
        agent["keys"] = [{"kty": "OKP", "crv": "Ed25519", "x": PINNED_PLACEHOLDER}]
    assert config == expected
    assert not objects("envoy-gateway-pinned-keys.yaml", "EnvoyPatchPolicy")


# ------------------------------------------------------------------------------- replay store


def test_replay_server_deployment():
    d = one("replay-store.yaml", "Deployment", "wba-replay")
    spec = d["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["args"] == ["replay-server", "--listen", "0.0.0.0:8080", "--redis", "redis://redis:6379"]
    assert c["image"].startswith("REGISTRY/")
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    svc = one("replay-store.yaml", "Service", "wba-replay")
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]
    assert c["ports"][0]["containerPort"] == 8080


def test_redis_keeps_nothing_on_disk_and_never_evicts():
    d = one("replay-store.yaml", "Deployment", "redis")
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    args = c["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    svc = one("replay-store.yaml", "Service", "redis")
    assert svc["spec"]["ports"][0]["port"] == 6379  # redis://redis:6379


def test_no_manifest_trusts_a_published_key():
    """As test_minimal_config does for envoy/ (whose scan does not descend into kubernetes/)."""
    for path in DIR.iterdir():
        text = path.read_text()
        assert RFC_TEST_KEY.jwk["x"] not in text, f"{path.name} pins the published RFC 9421 test key"
        assert "allow_test_keys" not in text, f"{path.name} mentions allow_test_keys"


# ------------------------------------------------------------------- the module takes them all


def filter_source_knows_replay_store():
    return "replay_store" in (ROOT / "filter" / "core" / "src" / "config.rs").read_text()


def start_envoy(front, configs, upstream_port):
    """One Envoy with a listener per configuration (the hold companion and the filter) and every
    cluster the configurations name (pointing nowhere: fetches fail, which is not tested here)."""
    listeners, named = [], set()
    for name, cfg in configs.items():
        listeners.append(bootstrap.listener(name, "upstream", front.filters(cfg, name=f"wba_{name}")))
        named |= {a["cluster"] for a in cfg["agents"] if "cluster" in a}
        if "replay_store" in cfg:
            named.add(cfg["replay_store"]["cluster"])
    clusters = [bootstrap.cluster("upstream", upstream_port)] + [bootstrap.cluster(c, 9) for c in sorted(named)]
    envoy = Envoy(bootstrap.bootstrap(listeners, clusters), concurrency=1, front=front)
    try:
        return envoy.start()
    except EnvoyFailed:
        envoy.__exit__(None, None, None)  # stops it and removes its directory
        raise


def test_the_module_accepts_the_manifests_configurations(front):
    agent_key = Key()
    configs = {
        "istio": one("istio.yaml", "WasmPlugin", "web-bot-auth")["spec"]["pluginConfig"],
        "envoy_gateway": eg_entries("envoy-gateway.yaml")[1],
        "envoy_gateway_pinned": json.loads(
            json.dumps(eg_entries("envoy-gateway-pinned-keys.yaml")[1]).replace(PINNED_PLACEHOLDER, agent_key.jwk["x"])
        ),
    }
    with EchoUpstream() as upstream:
        try:
            envoy = start_envoy(front, configs, upstream.port)
        except EnvoyFailed as e:
            # replay_store is being added to the filter; until this build has it, check the rest.
            if filter_source_knows_replay_store() or "unknown field `replay_store`" not in e.log:
                raise
            warnings.warn("this build's filter has no replay_store yet: loaded the manifests' configurations without it")
            for cfg in configs.values():
                cfg.pop("replay_store", None)
            envoy = start_envoy(front, configs, upstream.port)
        try:
            for name in configs:
                r = request(envoy.ports[name], headers={"X-Web-Bot-Auth-Result": "verified"})
                assert r.status == 200, (name, r.status, r.body)
                assert r.seen().get("x-web-bot-auth-result") == "unsigned", name
            # The pinned key, once replaced by the agent's, verifies the agent's requests.
            port = envoy.ports["envoy_gateway_pinned"]
            signed = sign(agent_key, "GET", f"127.0.0.1:{port}", "/", agent="https://agent.example")
            seen = request(port, headers=signed.headers).seen()
            assert seen.get("x-web-bot-auth-result") == "verified"
            assert seen.get("x-web-bot-auth-agent-name") == "example-agent"
            assert not CRASH_PATTERNS.search(envoy.log()), envoy.log()[-3000:]
        finally:
            envoy.__exit__(None, None, None)


def test_the_pinned_key_placeholder_keeps_the_gateway_closed(front):
    """Applied without replacing the placeholder, the module refuses the configuration at start
    (and with failOpen false the gateway answers 5xx): nothing passes unchecked."""
    cfg = eg_entries("envoy-gateway-pinned-keys.yaml")[1]
    config = bootstrap.bootstrap(
        [bootstrap.listener("main", "upstream", front.filters(cfg))],
        [bootstrap.cluster("upstream", 9)],
    )
    code, log = run_envoy_expecting_failure(config, front=front)
    assert code != 0
    assert "invalid web-bot-auth configuration" in log and "agents[0].keys[0]" in log, log[-3000:]
