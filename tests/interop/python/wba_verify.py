#!/usr/bin/env python3
"""Verify a request's Web Bot Auth signature with the PyPI ``http-message-signatures`` package.

A plain RFC 9421 check by an independent implementation (no key discovery, no Signature-Agent
policy): the signature tagged ``web-bot-auth`` must verify with the given public Ed25519 JWK,
looked up by its RFC 7638 thumbprint as ``keyid``, be fresh (the package's default clock checks),
and cover ``@authority`` (or ``@target-uri``) and a ``signature-agent`` component.

stdin: {"method", "url", "headers": {name: value}, "jwk": public JWK}
stdout: {"ok": true, "label", "covered": [...], "parameters": {...}} or {"ok": false, "error"}
(exit status 0 either way; non-zero only when the job cannot be read).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

from wba_sign import WEB_BOT_AUTH_TAG, jwk_thumbprint


class _Request:
    def __init__(self, method: str, url: str, headers: dict):
        self.method = method
        self.url = url
        self.headers = headers


def verify(method: str, url: str, headers: Mapping[str, str], public_jwk: Mapping) -> dict:
    x = public_jwk["x"]
    key = ed25519.Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={jwk_thumbprint(public_jwk): key}, private_keys={}),
    )
    try:
        results = verifier.verify(_Request(method, url, dict(headers)), expect_tag=WEB_BOT_AUTH_TAG)
        for r in results:
            covered = [c for c in r.covered_components if c != '"@signature-params"']
            if not any(c in ('"@authority"', '"@target-uri"') for c in covered):
                return {"ok": False, "error": f"{r.label}: covers neither @authority nor @target-uri"}
            if not any(c.startswith('"signature-agent"') for c in covered):
                return {"ok": False, "error": f"{r.label}: does not cover signature-agent"}
        r = results[0]
        return {
            "ok": True,
            "label": r.label,
            "covered": [c for c in r.covered_components if c != '"@signature-params"'],
            "parameters": {k: v for k, v in r.parameters.items()},
        }
    except Exception as e:  # noqa: BLE001 - every failure is a "no"
        detail = str(e) or repr(e.__cause__ or e.__context__ or "")
        return {"ok": False, "error": f"{type(e).__name__}: {detail}"}


def main() -> int:
    job = json.load(sys.stdin)
    out = verify(job.get("method", "GET"), job["url"], job.get("headers", {}), job["jwk"])
    json.dump(out, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
