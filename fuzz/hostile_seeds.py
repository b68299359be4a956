"""Writes the hostile seeds of fuzz/run.sh: inputs at and past the bounds on work per request.

libFuzzer rarely builds these by mutation: what makes a list costly is many *distinct* items
(issue 17: 8,000 distinct component names), and copying or repeating parts of an input makes
duplicates, which the parsers refuse at the first one. So they are generated here (too large to
keep in fuzz/seeds) and given to each target as a second, read-only corpus: every run checks
that they are refused cheaply (under the slow-unit limit) and mutates from them.

    python3 fuzz/hostile_seeds.py <dir>      # writes <dir>/<target>/<seed>
"""

import sys
from pathlib import Path

NOW = 1735689600
# The RFC 9421 test key that verify_request pins for https://signature-agent.test (its keyid).
TEST_KEYID = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"
AGENT = "https://signature-agent.test"
PARAMS = f';created={NOW};expires={NOW + 300};keyid="{TEST_KEYID}";alg="ed25519";tag="web-bot-auth"'
BOGUS = "sig1=:" + "A" * 86 + "==:"


def name(i):
    """The i-th distinct lowercase name: "aaa", "aab", ... (issue 17's)."""
    s = ""
    for _ in range(3):
        s = chr(ord("a") + i % 26) + s
        i //= 26
    return s


def components(n):
    return " ".join(f'"{name(i)}"' for i in range(n))


def labels_input(n):
    return ", ".join(f'l{i:04}=("@authority");tag="web-bot-auth"' for i in range(n))


def labels_signature(n):
    return ", ".join(f"l{i:04}=:AA==:" for i in range(n))


def members(n):
    return ", ".join(f'm{i:04}="https://m{i:04}.example"' for i in range(n))


def key_members(n):
    covered = " ".join(f'"x-dict";key="k{i:04}"' for i in range(n))
    dictionary = ", ".join(f"k{i:04}={i}" for i in range(n))
    return covered, dictionary


def query_params(n):
    covered = " ".join(f'"@query-param";name="p{i:04}"' for i in range(n))
    query = "&".join(f"p{i:04}={i}" for i in range(n))
    return covered, query


def request(path, headers):
    """verify_request's text form: settings, request line, header lines."""
    lines = [f"@now {NOW}", f"GET https example.com {path}", "host: example.com"]
    lines += [f"{k}: {v}" for k, v in headers]
    return "\n".join(lines)


def signed_shape(covered, path="/", extra=()):
    """A request whose signature passes the cheap checks (the base is built) but not the last."""
    return request(path, list(extra) + [
        ("signature-agent", f'sig1="{AGENT}"'),
        ("signature-input", f'sig1=("@authority" "signature-agent";key="sig1" {covered}){PARAMS}'),
        ("signature", BOGUS),
    ])


def seeds():
    out = {}
    si = out["signature_input"] = {}
    for n in (64, 65, 8000):
        si[f"components-{n}"] = f'sig1=({components(n)});tag="web-bot-auth"'
    for n in (64, 65, 1000):
        si[f"labels-{n}"] = labels_input(n)
    si["member-params-17"] = 'sig1=("@authority")' + "".join(f";p{i:02}={i}" for i in range(17))
    si["keyid-4096-bytes"] = f'sig1=("@authority");keyid="{"k" * 4096}";tag="web-bot-auth"'

    sig = out["signature"] = {}
    sig["labels-1000"] = labels_signature(1000)
    sig["bytes-9000"] = "sig1=:" + "pa5" * 4000 + ":"

    out["signature_agent"] = {"members-64": members(64), "members-1000": members(1000)}

    base = out["signature_base"] = {}
    for n in (64, 1500):
        covered, dictionary = key_members(n)
        base[f"key-members-{n}"] = f"sig1=({covered})\nGET https example.com /\nx-dict: {dictionary}"
    for n in (64, 1200):
        covered, query = query_params(n)
        base[f"query-params-{n}"] = f"sig1=({covered})\nGET https example.com /search?{query}"

    vr = out["verify_request"] = {}
    vr["issue17-components-8000"] = request("/", [
        ("signature-input", f'sig1=({components(8000)});tag="web-bot-auth"'),
        ("signature", "sig1=:AA==:"),
    ])
    vr["labels-1000"] = request("/", [
        ("signature-input", labels_input(1000)), ("signature", labels_signature(1000))])
    vr["agent-members-1000"] = request("/", [
        ("signature-agent", members(1000) + f', sig1="{AGENT}"'),
        ("signature-input", f'sig1=("@authority" "signature-agent";key="sig1"){PARAMS}'),
        ("signature", BOGUS),
    ])
    for n in (60, 1500):
        covered, dictionary = key_members(n)
        vr[f"key-members-{n}"] = signed_shape(covered, extra=[("x-dict", dictionary)])
    for n in (60, 1200):
        covered, query = query_params(n)
        vr[f"query-params-{n}"] = signed_shape(covered, path=f"/search?{query}")
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    for target, files in seeds().items():
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for name_, text in files.items():
            data = text.encode()
            assert len(data) <= 65536, (target, name_, len(data))
            (d / name_).write_bytes(data)


if __name__ == "__main__":
    main()
