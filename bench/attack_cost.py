"""What one hostile request costs Envoy: CPU time per request of a real Envoy (one worker) with
the Web Bot Auth filter, for the request shapes of issue 17, against an unsigned request.

A bench, not a test: it asserts nothing and prints a table (and writes JSON with `--out`).

Each front end (`envoy`: Envoy without the filter, the floor; `wasm`: the proxy-wasm module
alone, without its hold companion, as bench/e2e.py's wasm/ scenarios; `native`: the dynamic
module) gets a fresh Envoy (`--concurrency 1`, a loopback listener whose route answers 200
itself, configuration from envoy/bootstrap.py as bench/e2e.py builds it, `mode: enforce`, one
agent with a pinned Ed25519 key). Then, for each shape, a few warm-up requests, and batches of
`--requests` identical requests on one keep-alive connection until the Envoy worker has spent
`--min-cpu` seconds on them (or `--max-seconds` have passed). CPU time is read from /proc, as
bench/e2e.py does: utime + stime of the worker thread (`wrk:worker_0`) and of the whole
process, before and after; divided by the requests sent. /proc counts in clock ticks (10 ms),
hence the minimum CPU time per shape.

Shapes (every one fits in Envoy's default 60 KiB of request headers):

  unsigned        a plain GET (the reference: most traffic)
  components      issue 17: Signature-Input `sig1=("aaa" "aab" ... 8,000 names);tag="web-bot-auth"`,
                  Signature `sig1=:AA==:`
  labels          1,000 labels, each `("@authority");tag="web-bot-auth"`, each with a Signature
  agent_members   a Signature-Agent of 1,000 members; the one signature covers the last one
  key_members     1,500 components `"x-dict";key="kNNNN"` over a 1,500-member x-dict field, the
                  other parameters right (the agent's URL and key thumbprint are public), so that
                  the signature base is built before the signature fails
  query_params    1,200 `"@query-param";name="pNNNN"` over a query of 1,200 parameters, likewise

Usage (what `make attack-cost` runs, on dist/):

  .venv/bin/python bench/attack_cost.py --wasm dist/web_bot_auth.wasm \\
      --native dist/libweb_bot_auth.so [--fronts envoy,wasm,native] [--shapes components,labels]
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "envoy"))
import bootstrap  # noqa: E402  (envoy/bootstrap.py)

CLK_TCK = os.sysconf("SC_CLK_TCK")
AGENT = "https://agent.bench.example"
AUTHORITY = "shop.bench.example"
# A public Ed25519 key (RFC 8032 section 7.1, test 1): the filter needs a key to look up, never a
# signature that verifies.
JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
NOW = int(time.time())
# Envoy's default limit on a request's headers (max_request_headers_kb).
HEADER_LIMIT = 60 * 1024


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk):
    """RFC 7638: the keyid a signer of this key sends."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"))
    return b64u(hashlib.sha256(canonical.encode()).digest())


def name(i):
    """The i-th of issue 17's distinct names: "aaa", "aab", ..."""
    s = ""
    for _ in range(3):
        s = chr(ord("a") + i % 26) + s
        i //= 26
    return s


def params():
    """The parameters of a signature a signer of JWK would send: right in every cheap check."""
    return (f';created={NOW};expires={NOW + 300};keyid="{thumbprint(JWK)}";'
            f'alg="ed25519";tag="web-bot-auth"')


def bogus_signature(label="sig1"):
    return f"{label}=:{base64.b64encode(bytes(64)).decode()}:"


def shapes(sizes):
    """Each shape: (path, headers)."""
    n = sizes
    out = {"unsigned": ("/items/1?ref=bench", {})}
    names = " ".join(f'"{name(i)}"' for i in range(n["components"]))
    out["components"] = ("/items/1", {
        "Signature-Input": f'sig1=({names});tag="web-bot-auth"',
        "Signature": "sig1=:AA==:",
    })
    labels = range(n["labels"])
    out["labels"] = ("/items/1", {
        "Signature-Input": ", ".join(f'l{i:04}=("@authority");tag="web-bot-auth"' for i in labels),
        "Signature": ", ".join(f"l{i:04}=:AA==:" for i in labels),
    })
    members = n["agent_members"]
    last = f"m{members - 1:04}"
    out["agent_members"] = ("/items/1", {
        "Signature-Agent": ", ".join(f'm{i:04}="{AGENT}"' for i in range(members)),
        "Signature-Input": f'sig1=("@authority" "signature-agent";key="{last}"){params()}',
        "Signature": bogus_signature(),
    })
    k = n["key_members"]
    covered = " ".join(f'"x-dict";key="k{i:04}"' for i in range(k))
    out["key_members"] = ("/items/1", {
        "X-Dict": ", ".join(f"k{i:04}={i}" for i in range(k)),
        "Signature-Agent": f'sig1="{AGENT}"',
        "Signature-Input": f'sig1=("@authority" "signature-agent";key="sig1" {covered}){params()}',
        "Signature": bogus_signature(),
    })
    q = n["query_params"]
    covered = " ".join(f'"@query-param";name="p{i:04}"' for i in range(q))
    out["query_params"] = ("/search?" + "&".join(f"p{i:04}={i}" for i in range(q)), {
        "Signature-Agent": f'sig1="{AGENT}"',
        "Signature-Input": f'sig1=("@authority" "signature-agent";key="sig1" {covered}){params()}',
        "Signature": bogus_signature(),
    })
    for s, (path, headers) in out.items():
        headers.update({"User-Agent": "ExampleBot/1.0", "Accept": "text/html"})
        size = len(path) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        if size > HEADER_LIMIT - 1024:
            print(f"note: shape {s} has {size} bytes of headers: Envoy refuses over {HEADER_LIMIT}",
                  flush=True)
    return out


# ---------------------------------------------------------------------------- Envoy


def plugin_config():
    return {"mode": "enforce", "agents": [{"name": "bench-agent", "url": AGENT, "keys": [JWK]}]}


def envoy_config(front, wasm):
    filters = [] if front == "envoy" else bootstrap.filters(
        front, plugin_config(), wasm_path=wasm, hold=False)
    listener = bootstrap.listener("bench", "unused", filters)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"},
         "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    ]
    return bootstrap.bootstrap([listener], [])


class Envoy:
    """An Envoy process with one worker, its listener and admin on ephemeral loopback ports."""

    def __init__(self, binary, config, workdir, env=None):
        self.dir = Path(workdir)
        cfg = self.dir / "envoy.json"
        cfg.write_text(json.dumps(config))
        admin_file = self.dir / "admin.address"
        self.log_path = self.dir / "envoy.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "-c", str(cfg), "--concurrency", "1", "--log-level", "warning",
             "--admin-address-path", str(admin_file), "--disable-hot-restart",
             "--base-id", str(os.getpid() % 60000 + int(time.time() * 1000) % 5000)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log()}")
            text = admin_file.read_text().strip() if admin_file.exists() else ""
            if text:
                self.admin_port = int(text.rsplit(":", 1)[1])
                try:
                    if self.admin("/ready").strip() == "LIVE":
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"envoy did not become ready:\n{self.log()}")
        listeners = json.loads(self.admin("/listeners?format=json"))["listener_statuses"]
        self.port = next(l["local_address"]["socket_address"]["port_value"]
                         for l in listeners if l["name"] == "bench")
        self.worker = next((t for t in os.listdir(f"/proc/{self.proc.pid}/task")
                            if comm(self.proc.pid, t).startswith("wrk:worker")), None)

    def admin(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
            return r.read().decode()

    def counters(self, prefix):
        out = {}
        for line in self.admin(f"/stats?filter=^{prefix}").splitlines():
            k, _, v = line.partition(": ")
            if v.strip().isdigit() and int(v):
                out[k[len(prefix):]] = int(v)
        return out

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def comm(pid, tid):
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cpu_seconds(pid, tid=None):
    """utime + stime of a process (or one of its threads), seconds."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ---------------------------------------------------------------------------- one shape


def send(conn, path, headers, count, statuses):
    for _ in range(count):
        conn.request("GET", path, headers={"Host": AUTHORITY, **headers})
        r = conn.getresponse()
        r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1


def measure(envoy, shape, path, headers, args):
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=60)
    try:
        send(conn, path, headers, args.warmup, {})
        prefix = "" if args.front == "envoy" else bootstrap.STATS_PREFIX[args.front] + "web_bot_auth."
        before = envoy.counters(prefix) if prefix else {}
        statuses = {}
        pid, tid = envoy.proc.pid, envoy.worker
        w0, p0, t0 = cpu_seconds(pid, tid), cpu_seconds(pid), time.monotonic()
        sent = 0
        while True:
            send(conn, path, headers, args.requests, statuses)
            sent += args.requests
            worker = cpu_seconds(pid, tid) - w0
            if worker >= args.min_cpu or time.monotonic() - t0 >= args.max_seconds:
                break
        process, wall = cpu_seconds(pid) - p0, time.monotonic() - t0
    finally:
        conn.close()
    after = envoy.counters(prefix) if prefix else {}
    reasons = {k.split(".", 1)[1]: v - before.get(k, 0) for k, v in after.items()
               if k.startswith(("outcome.", "reason.")) and v - before.get(k, 0)}
    return {
        "front": args.front, "shape": shape, "requests": sent,
        "header_bytes": len(path) + sum(len(k) + len(v) + 4 for k, v in headers.items()),
        "worker_cpu_us_per_req": worker * 1e6 / sent,
        "envoy_cpu_us_per_req": process * 1e6 / sent,
        "wall_us_per_req": wall * 1e6 / sent,
        "worker_cpu_s": worker, "statuses": statuses, "filter": reasons,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envoy", default=str(ROOT / ".venv" / "bin" / "envoy"))
    ap.add_argument("--wasm", default=str(ROOT / "dist" / "web_bot_auth.wasm"))
    ap.add_argument("--native", default=str(ROOT / "dist" / "libweb_bot_auth.so"))
    ap.add_argument("--fronts", default="envoy,wasm,native")
    ap.add_argument("--shapes", default="unsigned,components,labels,agent_members,key_members,query_params")
    ap.add_argument("--requests", type=int, default=20, help="requests per batch")
    ap.add_argument("--warmup", type=int, default=5, help="requests before measuring, per shape")
    ap.add_argument("--min-cpu", type=float, default=2.0,
                    help="batches until the worker has spent this many CPU seconds")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="per shape, at most")
    ap.add_argument("--components", type=int, default=8000)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--agent-members", type=int, default=1000)
    ap.add_argument("--key-members", type=int, default=1500)
    ap.add_argument("--query-params", type=int, default=1200)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    all_shapes = shapes({"components": args.components, "labels": args.labels,
                         "agent_members": args.agent_members, "key_members": args.key_members,
                         "query_params": args.query_params})
    wanted = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in wanted if s not in all_shapes]
    if unknown:
        ap.error(f"unknown shapes {unknown}: {', '.join(all_shapes)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="wba-attack-") as tmp:
        tmp = Path(tmp)
        for front in [f for f in args.fronts.split(",") if f]:
            env = {}
            if front == "native":
                if not Path(args.native).is_file():
                    print(f"note: {args.native} does not exist: native left out", flush=True)
                    continue
                # A copy under the name Envoy looks for, so a rebuild meanwhile changes nothing.
                mod = tmp / "native-module"
                mod.mkdir(exist_ok=True)
                shutil.copy(args.native, mod / f"lib{bootstrap.NATIVE_MODULE}.so")
                env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(mod)
            if front == "wasm" and not Path(args.wasm).is_file():
                print(f"note: {args.wasm} does not exist: wasm left out", flush=True)
                continue
            workdir = tmp / front
            workdir.mkdir()
            envoy = Envoy(args.envoy, envoy_config(front, args.wasm), workdir, env)
            try:
                args.front = front
                for shape in wanted:
                    path, headers = all_shapes[shape]
                    r = measure(envoy, shape, path, headers, args)
                    results.append(r)
                    print(f"{front:>6} {shape:<14} {r['requests']:>7} requests  "
                          f"worker {r['worker_cpu_us_per_req']:>10.1f} us/req  "
                          f"envoy {r['envoy_cpu_us_per_req']:>10.1f} us/req  "
                          f"statuses {r['statuses']}  {r['filter']}", flush=True)
            finally:
                envoy.stop()
    print()
    print("Envoy worker CPU time per request (us), and per hostile request in unsigned requests:")
    fronts = list(dict.fromkeys(r["front"] for r in results))
    print(f"{'shape':<14} {'bytes':>6} " + " ".join(f"{f:>20}" for f in fronts))
    for shape in wanted:
        row = []
        for f in fronts:
            r = next((r for r in results if r["front"] == f and r["shape"] == shape), None)
            ref = next((r for r in results if r["front"] == f and r["shape"] == "unsigned"), None)
            if r is None:
                row.append(f"{'-':>20}")
                continue
            cell = f"{r['worker_cpu_us_per_req']:.1f}"
            if ref and shape != "unsigned" and ref["worker_cpu_us_per_req"] > 0:
                cell += f" ({r['worker_cpu_us_per_req'] / ref['worker_cpu_us_per_req']:.0f}x)"
            row.append(f"{cell:>20}")
        size = next(r["header_bytes"] for r in results if r["shape"] == shape)
        print(f"{shape:<14} {size:>6} " + " ".join(row))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "envoy": args.envoy, "wasm": args.wasm, "native": args.native,
            "settings": {k: v for k, v in vars(args).items() if k != "front"},
            "results": results}, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
