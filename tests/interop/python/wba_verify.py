#!/usr/bin/env python3
"""Verify a request's Web Bot Auth signature with the PyPI ``http-message-signatures`` package.

A plain RFC 9421 check by an independent implementation (no key discovery, no Signature-Agent
policy): the signature tagged ``web-bot-auth`` must verify with the given public JWK (Ed25519,
EC P-256 or RSA: the algorithm is the key type's),
looked up by its RFC 7638 thumbprint as ``keyid``, be fresh (the package's default clock checks),
and cover ``@authority`` (or ``@target-uri``) and a ``signature-agent`` component.

stdin: {"method", "url", "headers": {name: value}, "jwk": public JWK (OKP, EC or RSA)}
stdout: {"ok": true, "label", "covered": [...], "parameters": {...}} or {"ok": false, "error"}
(exit status 0 either way; non-zero only when the job cannot be read).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

from wba_sign import WEB_BOT_AUTH_TAG, jwk_thumbprint


def _b64u(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def public_key(jwk: Mapping):
    """The public key of a JWK and the package's algorithm for its type."""
    if jwk["kty"] == "OKP":
        return ed25519.Ed25519PublicKey.from_public_bytes(_b64u(jwk["x"])), algorithms.ED25519
    if jwk["kty"] == "EC":
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(_b64u(jwk["x"]), "big"), int.from_bytes(_b64u(jwk["y"]), "big"), ec.SECP256R1()
        )
        return numbers.public_key(), algorithms.ECDSA_P256_SHA256
    numbers = rsa.RSAPublicNumbers(int.from_bytes(_b64u(jwk["e"]), "big"), int.from_bytes(_b64u(jwk["n"]), "big"))
    return numbers.public_key(), algorithms.RSA_PSS_SHA512


class _Request:
    def __init__(self, method: str, url: str, headers: dict):
        self.method = method
        self.url = url
        self.headers = headers


def verify(method: str, url: str, headers: Mapping[str, str], public_jwk: Mapping) -> dict:
    key, algorithm = public_key(public_jwk)
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithm,
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
