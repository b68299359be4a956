"""`make oci` (tools/oci.py): dist/oci is an OCI image layout that a standard registry client,
skopeo (installed by `make k8s-deps`), reads, copies and checks blob by blob; the manifest digest
it reports is the one tools/oci.py printed; and the module it carries, where Istio and Envoy
Gateway look for it (the last layer, tar+gzip, file plugin.wasm), is dist/web_bot_auth.wasm byte
for byte. The same module always gives the same digest."""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from harness import ROOT, wasm_path

pytestmark = pytest.mark.wasm_only("the OCI image layout carries the .wasm file")

TOOL = ROOT / "tools" / "oci.py"
LAYOUT = ROOT / "dist" / "oci"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def module():
    with open(wasm_path(), "rb") as f:
        return f.read()


def make_layout(wasm, out, tag="0.1.0", env=None, cwd=None):
    """Runs tools/oci.py as `make oci` does; returns the digest it printed."""
    r = subprocess.run(
        [sys.executable, str(TOOL), str(wasm), str(out), "--tag", tag],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    digests = re.findall(r"sha256:[0-9a-f]{64}", r.stdout)
    assert len(digests) == 1, r.stdout
    return digests[0]


def tree(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def skopeo(*args):
    exe = shutil.which("skopeo")
    assert exe, "skopeo is missing: `make k8s-deps` installs it"
    r = subprocess.run([exe, *args], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout


def layout_tag(path):
    index = json.loads((path / "index.json").read_text())
    assert index["schemaVersion"] == 2 and len(index["manifests"]) == 1, index
    entry = index["manifests"][0]
    assert entry["mediaType"] == OCI_MANIFEST
    return entry["annotations"]["org.opencontainers.image.ref.name"], entry["digest"]


def plugin_wasm(layer_blob):
    """What Istio's and Envoy Gateway's image fetchers do with a compat layer: gunzip, untar, take
    the file whose base name is plugin.wasm."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_blob)), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["plugin.wasm"], members
        m = members[0]
        assert m.isreg() and m.mtime == 0 and (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        return tar.extractfile(m).read()


def test_dist_oci_is_this_module_as_make_oci_writes_it(tmp_path):
    assert (LAYOUT / "index.json").exists(), f"{LAYOUT} missing: run `make oci`"
    tag, indexed = layout_tag(LAYOUT)
    printed = make_layout(wasm_path(), tmp_path / "oci", tag=tag)
    assert printed == indexed
    assert tree(tmp_path / "oci") == tree(LAYOUT), "dist/oci is stale: run `make oci`"
    assert json.loads((LAYOUT / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}


def test_skopeo_reads_the_layout_and_finds_the_module(tmp_path):
    layout = tmp_path / "oci"
    printed = make_layout(wasm_path(), layout)
    ref = f"oci:{layout}:0.1.0"

    raw = skopeo("inspect", "--raw", ref)
    assert sha256(raw) == printed
    info = json.loads(skopeo("inspect", ref))
    assert info["Digest"] == printed

    # A full copy, as a push would do it: skopeo checks each blob against its digest.
    out = tmp_path / "copied"
    skopeo("--insecure-policy", "copy", "--quiet", ref, f"dir:{out}")
    manifest_bytes = (out / "manifest.json").read_bytes()
    assert sha256(manifest_bytes) == printed
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    config = json.loads((out / manifest["config"]["digest"].split(":")[1]).read_bytes())
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")
    assert "created" not in config
    # Both fetchers take the last layer; ours is the only one.
    assert len(manifest["layers"]) == 1 and manifest["layers"][-1]["mediaType"] == OCI_LAYER
    layer = (out / manifest["layers"][-1]["digest"].split(":")[1]).read_bytes()
    assert plugin_wasm(layer) == module()
    assert config["rootfs"]["diff_ids"] == [sha256(gzip.decompress(layer))]

    # Copied to another layout keeping digests (what `skopeo copy --preserve-digests ...
    # docker://REGISTRY/...` does), the manifest digest is the same.
    skopeo("--insecure-policy", "copy", "--quiet", "--preserve-digests", ref, f"oci:{tmp_path / 'again'}:v")
    assert sha256(skopeo("inspect", "--raw", f"oci:{tmp_path / 'again'}:v")) == printed


def test_same_module_same_digest(tmp_path):
    """Nothing of the host gets in: the file's name, mtime and mode, the umask, the time zone,
    the working directory, SOURCE_DATE_EPOCH, the tag."""
    first = make_layout(wasm_path(), tmp_path / "a")
    copy = tmp_path / "elsewhere" / "renamed.wasm"
    copy.parent.mkdir()
    copy.write_bytes(module())
    os.utime(copy, (1_700_000_000, 1_700_000_000))
    copy.chmod(0o600)
    env = {**os.environ, "TZ": "Asia/Kathmandu", "SOURCE_DATE_EPOCH": "1234567890"}
    old = os.umask(0o077)
    try:
        second = make_layout(copy, tmp_path / "b", tag="other-tag", env=env, cwd=copy.parent)
    finally:
        os.umask(old)
    assert second == first
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert {k: v for k, v in a.items() if k != "index.json"} == {k: v for k, v in b.items() if k != "index.json"}
    # Another module, another digest.
    copy.write_bytes(module() + b"\0\x01\0")
    assert make_layout(copy, tmp_path / "c") != first


def test_a_file_that_is_not_wasm_is_refused(tmp_path):
    bad = tmp_path / "not.wasm"
    bad.write_bytes(b"MZ\0\0")
    r = subprocess.run([sys.executable, str(TOOL), str(bad), str(tmp_path / "o"), "--tag", "t"], capture_output=True, text=True)
    assert r.returncode != 0 and "not a WebAssembly module" in r.stderr
    assert not (tmp_path / "o").exists()
