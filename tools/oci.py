#!/usr/bin/env python3
"""Writes the Wasm module as an OCI image layout that Istio's WasmPlugin and Envoy Gateway's
EnvoyExtensionPolicy (code type Image) pull, and prints the manifest digest.

    python3 tools/oci.py dist/web_bot_auth.wasm dist/oci --tag 0.1.0

Format: the "compat" variant of the Wasm image spec (solo-io/wasm, spec-compat.md): a plain OCI
image whose single layer (application/vnd.oci.image.layer.v1.tar+gzip) is a tar holding
`plugin.wasm`, annotated `module.wasm.image/variant: compat`. Both Istio (pkg/wasm/imagefetcher.go)
and Envoy Gateway (internal/wasm/imagefetcher.go, the same code) try this variant first and also
accept the "oci" variant (application/vnd.module.wasm.content.layer.v1+wasm); the compat variant
is the one every registry and standard tool (skopeo, crane, oras, docker) handles as an ordinary
image, with no custom config or layer media types.

Reproducible: the digest depends on the module's bytes only. No timestamps (tar mtime 0, gzip
mtime 0, no `created` in the image config), no owner names or ids, no host paths; the tar header
is written here byte by byte, and the gzip stream with stored (uncompressed) deflate blocks, so
that neither the Python version nor the machine's zlib (zlib and zlib-ng compress the same input
to different bytes) changes a byte.
The cost is a layer of the module's size instead of about 40 % of it: the module is pulled once
per node and cached.

Standard library only.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import zlib

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
VARIANT = {"module.wasm.image/variant": "compat"}
REF_NAME = "org.opencontainers.image.ref.name"
PLUGIN_FILE = "plugin.wasm"


def canonical_json(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type, data, annotations=None):
    d = {"mediaType": media_type, "digest": digest(data), "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d


def octal(value, width):
    """A tar numeric field: zero-padded octal, NUL-terminated."""
    return b"%0*o\0" % (width - 1, value)


def plugin_tar(module):
    """A POSIX (ustar) tar holding one regular file, plugin.wasm (mode 0444, owner 0:0, mtime 0),
    written here byte by byte so that no host or Python version detail gets in."""
    header = bytearray(512)

    def put(offset, data):
        header[offset : offset + len(data)] = data

    put(0, PLUGIN_FILE.encode())  # name
    put(100, octal(0o444, 8))  # mode
    put(108, octal(0, 8))  # uid
    put(116, octal(0, 8))  # gid
    put(124, octal(len(module), 12))  # size
    put(136, octal(0, 12))  # mtime
    put(148, b" " * 8)  # chksum, counted as spaces
    put(156, b"0")  # typeflag: regular file
    put(257, b"ustar\0" + b"00")  # magic, version
    put(329, octal(0, 8))  # devmajor
    put(337, octal(0, 8))  # devminor
    put(148, b"%06o\0 " % sum(header))
    padding = b"\0" * (-len(module) % 512)
    return bytes(header) + module + padding + b"\0" * 1024


def stored_gzip(data):
    """A gzip member (RFC 1952) whose deflate stream (RFC 1951) is stored blocks only: the same
    bytes on every machine. Header: no name, mtime 0, OS unknown (255)."""
    out = bytearray(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
    block = 0xFFFF
    pos = 0
    while True:
        chunk = data[pos : pos + block]
        pos += len(chunk)
        final = pos >= len(data)
        out += bytes([1 if final else 0]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF)
        out += chunk
        if final:
            break
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return bytes(out)


def image(module):
    """(manifest, {digest: blob}) for the module."""
    if module[:4] != b"\0asm":
        raise ValueError("not a WebAssembly module (no \\0asm magic)")
    tar = plugin_tar(module)
    layer = stored_gzip(tar)
    # The OCI image config's required fields; a Wasm module has no OS or CPU of its own, and
    # these are the values the Wasm OCI artifact guidance uses.
    config = canonical_json(
        {
            "architecture": "wasm",
            "os": "wasip1",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(CONFIG, config),
            "layers": [descriptor(LAYER, layer)],
            "annotations": VARIANT,
        }
    )
    blobs = {digest(b): b for b in (config, layer, manifest)}
    return manifest, blobs


def write_layout(module, out_dir, tag):
    """Writes the layout to out_dir (replacing it whole) and returns the manifest digest."""
    manifest, blobs = image(module)
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [descriptor(MANIFEST, manifest, {REF_NAME: tag})],
        }
    )
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".oci-", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        files = {"oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}), "index.json": index}
        for d, blob in blobs.items():
            files[os.path.join("blobs", "sha256", d.split(":", 1)[1])] = blob
        for name, data in files.items():
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o644)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return digest(manifest)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module", help="the .wasm file")
    p.add_argument("out", help="the OCI image layout directory to write (replaced whole)")
    p.add_argument("--tag", required=True, help="the tag (index.json org.opencontainers.image.ref.name)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", args.tag):
        p.error(f"bad tag {args.tag!r}")
    with open(args.module, "rb") as f:
        module = f.read()
    try:
        d = write_layout(module, args.out, args.tag)
    except ValueError as e:
        p.error(f"{args.module}: {e}")
    print(f"{args.out}: tag {args.tag}, manifest {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
