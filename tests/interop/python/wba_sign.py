#!/usr/bin/env python3
"""Sign an HTTP request the Web Bot Auth way with the PyPI ``http-message-signatures`` package.

An independent signer (it shares no code with the Rust core) for interop and end-to-end tests:

* Ed25519, ECDSA P-256 (``ecdsa-p256-sha256``, the package's raw ``r || s``) or RSA
  (``rsa-pss-sha512``, the package's PSS with SHA-512 and a 64-byte salt), as the key's type says;
  ``keyid`` = the RFC 7638 SHA-256 JWK thumbprint (base64url, no padding),
* ``tag="web-bot-auth"``, ``created``/``expires`` (default: now, now + 300 s), ``alg`` = the key's
  algorithm (``alg=None`` leaves it out),
* a ``Signature-Agent`` header, by default the dictionary form ``sig1="https://agent.example"``
  covered as ``"signature-agent";key="sig1"`` (RFC 9421 section 2.1.2, which the package
  implements); ``legacy=True`` sends the bare string ``"https://agent.example"`` covered as plain
  ``"signature-agent"``,
* covered components ``@authority``, ``@method``, ``@path`` (changeable) then the agent member.

Library use::

    from wba_sign import sign
    extra = sign("GET", "https://shop.example/x", {}, jwk, "https://agent.example")
    # -> {"Signature-Agent": ..., "Signature-Input": ..., "Signature": ...}

CLI::

    python wba_sign.py --method GET --url https://shop.example/x --jwk key.jwk \\
        --agent https://agent.example [--label sig1] [--legacy] [--created N] [--expires N]
        [--components @authority,@method,@path] [--header "Name: value" ...] [--nonce N]

prints the three headers as a JSON object. ``--jwk`` names a file holding a private JWK (Ed25519
``{"kty":"OKP","crv":"Ed25519","x":...,"d":...}``, P-256 ``{"kty":"EC","crv":"P-256",...,"d":...}``
or RSA ``{"kty":"RSA","n":...,"e":...,"d":...,"p":...,"q":...}``) or an Ed25519 32-byte seed as 64
hex digits; ``--no-alg`` leaves the ``alg`` parameter out.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import http_sf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

WEB_BOT_AUTH_TAG = "web-bot-auth"
DEFAULT_COMPONENTS = ("@authority", "@method", "@path")
DEFAULT_VALIDITY = 300


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _int(s: str) -> int:
    return int.from_bytes(_b64url_decode(s), "big")


def load_private_key(private_jwk_or_seed: Any):
    """A private JWK (dict or JSON text; OKP Ed25519, EC P-256 or RSA), an Ed25519 32-byte seed
    (bytes or 64 hex digits), or a key object."""
    k = private_jwk_or_seed
    if isinstance(k, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return k
    if isinstance(k, (bytes, bytearray)):
        return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(k))
    if isinstance(k, str):
        s = k.strip()
        if s.startswith("{"):
            k = json.loads(s)
        else:
            return ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(s))
    if isinstance(k, Mapping):
        if "d" not in k:
            raise ValueError("expected a private JWK (with d)")
        if k.get("kty") == "OKP" and k.get("crv") == "Ed25519":
            key = ed25519.Ed25519PrivateKey.from_private_bytes(_b64url_decode(k["d"]))
        elif k.get("kty") == "EC" and k.get("crv") == "P-256":
            key = ec.derive_private_key(_int(k["d"]), ec.SECP256R1())
        elif k.get("kty") == "RSA":
            p, q, d = _int(k["p"]), _int(k["q"]), _int(k["d"])
            public = rsa.RSAPublicNumbers(_int(k["e"]), _int(k["n"]))
            key = rsa.RSAPrivateNumbers(
                p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
            ).private_key()
        else:
            raise ValueError("expected a private Ed25519 (OKP), P-256 (EC) or RSA JWK")
        mine = public_jwk(key)
        if any(m in k and k[m] != mine[m] for m in ("x", "y", "n", "e")):
            raise ValueError("the JWK's public members do not match its private ones")
        return key
    raise TypeError(f"cannot load a key from {type(k).__name__}")


def public_jwk(key) -> dict:
    """The public JWK; EC and RSA keys carry the JOSE ``alg`` of their RFC 9421 algorithm."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _b64url(n.x.to_bytes(32, "big")),
                "y": _b64url(n.y.to_bytes(32, "big")), "alg": "ES256"}
    n = key.public_key().public_numbers()
    return {"kty": "RSA", "n": _b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")), "alg": "PS512"}


def algorithm_for(key):
    """The package's algorithm class for the key's type."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return algorithms.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return algorithms.ECDSA_P256_SHA256
    return algorithms.RSA_PSS_SHA512


def jwk_thumbprint(jwk: Mapping) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members of the key type, sorted, no whitespace
    (OKP: crv, kty, x; EC: crv, kty, x, y; RSA: e, kty, n)."""
    members = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


class _Request:
    """The message interface the package reads: method, absolute URL, headers."""

    def __init__(self, method: str, url: str, headers: dict):
        self.method = method
        self.url = url
        self.headers = headers


def _to_datetime(t: Any) -> datetime.datetime:
    if isinstance(t, datetime.datetime):
        return t
    return datetime.datetime.fromtimestamp(int(t), tz=datetime.timezone.utc)


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    private_jwk_or_seed: Any,
    agent_url: str,
    created: Any = None,
    expires: Any = None,
    label: str = "sig1",
    *,
    components: Iterable[str] = DEFAULT_COMPONENTS,
    legacy: bool = False,
    nonce: str | None = None,
    member: str | None = None,
    member_params: Mapping[str, Any] | None = None,
    alg: bool | None = True,
) -> dict:
    """Sign a request; return the headers to add: Signature-Agent, Signature-Input, Signature.

    ``created``/``expires`` are unix seconds or datetimes (default now and now + 300 s).
    ``components`` are covered before the agent member (``"@authority"``, ``"@path"``,
    ``'"@query-param";name="q"'``, field names...). ``headers`` is not modified.
    ``member`` keys the dictionary member (default: the label, as signers do; the draft's own
    vector uses another name); ``member_params`` are its parameters (values: ``http_sf.Token``,
    str, int, bool), e.g. the previous draft's ``{"type": http_sf.Token("jwks_uri")}``.
    ``alg``: ``True`` sends the key's algorithm name, ``None`` leaves the parameter out.
    """
    key = load_private_key(private_jwk_or_seed)
    keyid = jwk_thumbprint(public_jwk(key))
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    created_dt = _to_datetime(now if created is None else created)
    expires_dt = _to_datetime(int(created_dt.timestamp()) + DEFAULT_VALIDITY if expires is None else expires)

    value = (agent_url, dict(member_params)) if member_params else agent_url
    if legacy:
        agent_header = http_sf.ser(value)
        agent_component = '"signature-agent"'
    else:
        agent_header = http_sf.ser({member or label: value})
        agent_component = http_sf.ser(("signature-agent", {"key": member or label}))

    msg_headers = {k: v for k, v in (headers or {}).items() if k.lower() not in ("signature-agent", "signature-input", "signature")}
    msg_headers["Signature-Agent"] = agent_header
    message = _Request(method.upper(), url, msg_headers)

    algorithm = algorithm_for(key)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={keyid: key}),
    )
    signer.sign(
        message,
        key_id=keyid,
        created=created_dt,
        expires=expires_dt,
        nonce=nonce,
        label=label,
        tag=WEB_BOT_AUTH_TAG,
        include_alg=alg is True,
        covered_component_ids=[*components, agent_component],
    )
    return {
        "Signature-Agent": agent_header,
        "Signature-Input": message.headers["Signature-Input"],
        "Signature": message.headers["Signature"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Sign a request for Web Bot Auth; print the headers as JSON.")
    p.add_argument("--method", default="GET")
    p.add_argument("--url", required=True, help="absolute request URL")
    p.add_argument("--jwk", required=True, help="file with a private JWK (OKP, EC P-256, RSA), or an Ed25519 seed in hex")
    p.add_argument("--agent", required=True, help="the agent URL sent in Signature-Agent")
    p.add_argument("--label", default="sig1")
    p.add_argument("--legacy", action="store_true", help="send Signature-Agent as a bare string")
    p.add_argument("--created", type=int)
    p.add_argument("--expires", type=int)
    p.add_argument("--nonce")
    p.add_argument("--no-alg", action="store_true", help="leave the alg parameter out")
    p.add_argument(
        "--components",
        default=",".join(DEFAULT_COMPONENTS),
        help="comma-separated components covered before the agent member",
    )
    p.add_argument("--header", action="append", default=[], help='"Name: value", repeatable')
    a = p.parse_args(argv)

    with open(a.jwk, encoding="utf-8") as f:
        key_material = f.read()
    headers: dict[str, str] = {}
    for h in a.header:
        name, sep, value = h.partition(":")
        if not sep:
            p.error(f"--header {h!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    components = [c for c in (s.strip() for s in a.components.split(",")) if c]
    out = sign(
        a.method,
        a.url,
        headers,
        key_material,
        a.agent,
        created=a.created,
        expires=a.expires,
        label=a.label,
        components=components,
        legacy=a.legacy,
        nonce=a.nonce,
        alg=None if a.no_alg else True,
    )
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
