"""`make bench`, parts 2-5: the filter inside Envoy (V8 and native), end to end, against ext_authz.

Envoy runs with one worker (`--concurrency 1`) on loopback and answers every request itself
(a `direct_response` route), so what is measured is Envoy plus what sits in front of the
router, never an upstream application. `wrk` (one thread, keep-alive connections) replays a
pre-generated corpus; every signed request carries its own fresh signature (distinct nonce and
path), and the warm-up and the measured run use disjoint slices of the corpus, so replay
protection (on, as by default) never sees a signature twice.

Scenarios, each with a fresh Envoy (and service) and run `--repeats` times, interleaved:

  envoy/unsigned, envoy/signed     Envoy without the filter (the baselines)
  wasm/unsigned, wasm/signed       the filter (dist/web_bot_auth.wasm)
  wasm/signed-ecdsa, wasm/signed-rsa
                                   the filter, the requests signed with a P-256 key
                                   (ecdsa-p256-sha256) or a 2048-bit RSA key (rsa-pss-sha512)
                                   instead of Ed25519; their corpora are smaller
                                   (--alg-corpus: signing them takes longer)
  hold/unsigned, hold/signed       the hold companion followed by the filter (as shipped)
  hold/body                        that pair, POST with a 1 KiB body, the signature covering
                                   Content-Digest (held, hashed, checked, then forwarded)
  old/unsigned, old/signed         with --old-wasm: an earlier build of the filter, alone (the
                                   regression check of a change, measured in the same run)
  oldnative/unsigned, oldnative/signed
                                   with --old-native: an earlier build of the native module
  store/signed                     the filter with the fleet's replay store: `wba replay-server`
                                   (one instance, 2 threads) and a local redis-server, on loopback
  native/unsigned, native/signed, native/signed-ecdsa, native/signed-rsa
                                   the native front end: the same core as an Envoy dynamic
                                   module (dist/libweb_bot_auth.so, `--native`), alone
  native/body                      the native module, the signed-body traffic of hold/body (it
                                   buffers the body itself: no hold companion)
  native/store                     the native module with the replay store of store/signed
                                   (signed traffic, the same replay server and Redis)
  authz/unsigned, authz/signed     envoy.filters.http.ext_authz + the wba-authz HTTP service

Signed runs use `mode: require`, so a request the verifier did not verify is a 403 and shows in
wrk's status errors; unsigned runs use `enforce` (unsigned requests pass). For each run: requests
per second, wrk's latency percentiles, and CPU time per request of the Envoy worker thread, the
whole Envoy process and the ext_authz service (from /proc, so the figures do not depend on how
the two cores were shared with wrk). After each run: the resident memory of the Envoy process
and of each Wasm VM's linear memory (V8 reserves each one as a multi-GiB mapping, so its RSS is
what that VM's module uses; with one worker there are two VMs, the main thread's and the
worker's; the native module has none).

Without the native module (`--native` missing, e.g. before `make build` makes it), the native/
scenarios are left out with a note, and the output says so (`native_missing`).

Writes JSON (all runs, medians) to `--out`.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import harness  # noqa: E402  (tests/e2e/harness.py; puts envoy/ on the path too)
import bootstrap  # noqa: E402  (envoy/bootstrap.py)

AGENT = "https://agent.bench.example"
AUTHORITY = "shop.bench.example"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LUA = ROOT / "bench" / "wrk" / "corpus.lua"

# Where each front end's outcome counters are (Envoy's prefix for it, then the filter's own
# `web_bot_auth.outcome.<outcome>`).
OUTCOME_STATS = {front: f"{prefix}web_bot_auth.outcome" for front, prefix in bootstrap.STATS_PREFIX.items()}
# The file name Envoy looks for in $ENVOY_DYNAMIC_MODULES_SEARCH_PATH (dynamic_module_config.name).
NATIVE_FILE = f"lib{bootstrap.NATIVE_MODULE}.so"


# ---------------------------------------------------------------------------- corpus


BODY = json.dumps({"order": {"items": [{"sku": f"sku-{i}", "qty": 1} for i in range(28)]}})


# The alg parameter each signed traffic sends.
ALGS = {"signed": "ed25519", "body": "ed25519", "signed-ecdsa": "ecdsa-p256-sha256",
        "signed-rsa": "rsa-pss-sha512"}


def corpus_of(traffic):
    """The corpus (and key) a traffic sends: "store" (native/store) is the signed traffic, sent
    to a filter with the replay store."""
    return "signed" if traffic == "store" else traffic


def write_corpus(path, key, n, signed, body=False, alg="ed25519"):
    """`n` requests, one a line: path, then headers, tab-separated; with `body`, a POST whose
    signature covers the body's Content-Digest, the body last (`body:<text>`)."""
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(BODY.encode()).digest()).decode() + ":"
    with open(path, "w") as f:
        for i in range(n):
            p = f"/items/{i}?ref=bench"
            line = [p, "User-Agent: ExampleBot/1.0 (+https://agent.bench.example/bot)",
                    "Accept: text/html"]
            components = ("@authority", "@method", "@path", "signature-agent")
            if body:
                line[0] = "POST " + p
                line += ["Content-Type: application/json", f"Content-Digest: {digest}"]
                components += ("content-digest",)
            if signed:
                s = harness.sign(
                    key, "POST" if body else "GET", AUTHORITY, p, agent=AGENT,
                    headers={"Content-Digest": digest}, components=components,
                    validity=3600, nonce=secrets.token_urlsafe(16), alg=alg,
                )
                line += [f"{k}: {v}" for k, v in s.headers.items()]
            if body:
                line.append("body:" + BODY)
            f.write("\t".join(line) + "\n")


# ---------------------------------------------------------------------------- Envoy configs


def direct_listener(filters):
    """A loopback listener whose only route answers 200 itself."""
    l = bootstrap.listener("bench", "unused", filters)
    hcm = l["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"},
         "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    ]
    return l


def plugin_config(key, mode):
    # Room for every signature of a run (hour-long signatures, all live): a replay bucket that
    # fills refuses new signatures (README, "Replay protection"). Every build compared here
    # (--old-wasm, --old-native) knows `replay_capacity`: the same configuration for all.
    return {"mode": mode, "replay_capacity": 1 << 20,
            "agents": [{"name": "bench-agent", "url": AGENT, "keys": [key.jwk]}]}


def store_config(key, mode):
    """The filter's configuration with the fleet's replay store (cluster wba_replay)."""
    return dict(plugin_config(key, mode),
                replay_store={"cluster": "wba_replay", "timeout_ms": 250, "on_error": "reject"})


def ext_authz_filter():
    patterns = [{"exact": h} for h in ("signature", "signature-input", "signature-agent")]
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "http_service": {
                "server_uri": {"uri": "http://127.0.0.1", "cluster": "wba_authz", "timeout": "2s"},
                "authorization_request": {
                    "allowed_headers": {"patterns": patterns + [{"prefix": "x-web-bot-auth-"}]}
                },
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"prefix": "x-web-bot-auth-"}]}
                },
            },
        },
    }


class ReplayStack:
    """redis-server and `wba replay-server` (2 threads) on loopback, for the store/ scenarios."""

    def __init__(self, wba, workdir):
        self.redis = harness.RedisServer(workdir).start()
        try:
            self.server = harness.ReplayServer(wba, self.redis.port, port=0, threads=2).start()
        except Exception:
            self.redis.stop()
            raise
        self.port = self.server.port

    def cpu_seconds(self):
        return cpu_seconds(self.server.proc.pid) + cpu_seconds(self.redis.proc.pid)

    def stop(self):
        self.server.stop()
        self.redis.stop()


def config_for(kind, key, mode, authz_port=None, wasm=None, store_port=None, store=False):
    if kind == "envoy":
        return bootstrap.bootstrap([direct_listener([])], [])
    if kind in ("wasm", "old"):
        cfg = plugin_config(key, mode)
        return bootstrap.bootstrap([direct_listener([bootstrap.wasm_filter(wasm, cfg)])], [])
    if kind == "hold":
        return bootstrap.bootstrap(
            [direct_listener(bootstrap.wasm_filters(wasm, plugin_config(key, mode)))], [])
    if kind == "store":
        return bootstrap.bootstrap(
            [direct_listener([bootstrap.wasm_filter(wasm, store_config(key, mode))])],
            [bootstrap.cluster("wba_replay", store_port, timeout="1s")])
    if kind == "native" and store:
        return bootstrap.bootstrap(
            [direct_listener([bootstrap.native_filter(store_config(key, mode))])],
            [bootstrap.cluster("wba_replay", store_port, timeout="1s")])
    if kind in ("native", "oldnative"):
        return bootstrap.bootstrap([direct_listener([bootstrap.native_filter(plugin_config(key, mode))])], [])
    if kind == "authz":
        return bootstrap.bootstrap(
            [direct_listener([ext_authz_filter()])],
            [bootstrap.cluster("wba_authz", authz_port, timeout="1s")])
    raise ValueError(kind)


# ---------------------------------------------------------------------------- processes


def cpu_seconds(pid, tid=None):
    """utime + stime of a process (or one of its threads), seconds."""
    p = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    with open(p) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_named(pid, prefix):
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip().startswith(prefix):
                    return tid
        except OSError:
            pass
    return None


def memory(pid):
    """Process RSS, and each Wasm VM's linear memory (size and RSS), KiB.

    V8 reserves each Wasm memory as a multi-GiB region: the pages the module has grown into are
    a read-write mapping right before the inaccessible rest of the reservation.
    """
    vmas = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", parts[0]):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                vmas.append({"lo": lo, "hi": hi, "perms": parts[1], "rss": 0})
            elif parts and parts[0] == "Rss:":
                vmas[-1]["rss"] = int(parts[1])
    wasm = []
    for before, v in zip(vmas, vmas[1:]):
        if (v["hi"] - v["lo"] >= 4 << 30 and v["perms"] == "---p"
                and before["hi"] == v["lo"] and before["perms"] == "rw-p"):
            wasm.append({"size_kib": (before["hi"] - before["lo"]) // 1024,
                         "rss_kib": before["rss"]})
    return {"process_rss_kib": sum(v["rss"] for v in vmas), "wasm_memories": wasm}


class Authz:
    """The wba-authz service on an ephemeral port."""

    def __init__(self, binary, config, threads, workdir):
        cfg = Path(workdir) / "authz.json"
        cfg.write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            [binary, "--config", str(cfg), "--threads", str(threads)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"wba-authz did not start: {line}")
        self.port = int(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wrk(port, corpus, start, count, seconds, connections, out):
    env = dict(os.environ, WBA_CORPUS=str(corpus), WBA_START=str(start), WBA_COUNT=str(count),
               WBA_HOST=AUTHORITY, WBA_OUT=str(out), WBA_THREADS="1")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
           "-s", str(LUA), f"http://127.0.0.1:{port}/"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    return p


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# ---------------------------------------------------------------------------- one run


def run(kind, traffic, args, keys, corpora, workdir):
    signed = traffic != "unsigned"
    key = keys[corpus_of(traffic)]
    mode = "require" if signed else "enforce"
    corpus, size = corpora[corpus_of(traffic)]
    with_store = kind == "store" or (kind == "native" and traffic == "store")
    authz = None
    if kind == "authz":
        authz = Authz(args.authz, plugin_config(key, mode), args.authz_threads, workdir)
    wasm = args.old_wasm if kind == "old" else args.wasm
    stack = ReplayStack(args.wba, workdir) if with_store else None
    cfg = config_for(kind, key, mode, authz_port=authz and authz.port, wasm=wasm,
                     store_port=stack and stack.port, store=with_store)
    envoy = harness.Envoy(cfg, concurrency=1, log_level="warning", workdir=workdir)
    try:
        # The harness starts Envoy with this process's environment: Envoy finds the module
        # as $ENVOY_DYNAMIC_MODULES_SEARCH_PATH/libweb_bot_auth.so.
        saved = os.environ.get("ENVOY_DYNAMIC_MODULES_SEARCH_PATH")
        if kind in ("native", "oldnative"):
            folder = args.old_native_dir if kind == "oldnative" else args.native_dir
            os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(folder)
        try:
            envoy.start()
        finally:
            if saved is None:
                os.environ.pop("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", None)
            else:
                os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = saved
        port = envoy.ports["bench"]
        pid = envoy.proc.pid
        worker = thread_named(pid, "wrk:worker")
        warm = Path(workdir) / "warm.json"
        # Signed: the warm-up and the measured run take disjoint slices of the corpus, so that
        # no signature is sent twice to this Envoy. Unsigned: both cycle through all of it.
        warm_n = min(args.warmup_requests, size // 5) if signed else size
        measure_start, measure_n = (warm_n, size - warm_n) if signed else (0, size)
        w = wrk(port, corpus, 0, warm_n, args.warmup, args.connections, warm)
        w.communicate()
        filtered = kind in ("wasm", "hold", "old", "store", "native", "oldnative")
        prefix = OUTCOME_STATS["native" if kind in ("native", "oldnative") else "wasm"]
        # The outcome counters before the measured run, so that the check below sees only its
        # requests (not the warm-up's).
        stats0 = envoy.stats(prefix) if filtered else {}
        load_before = load_average()
        out = Path(workdir) / "wrk.json"
        c0 = (cpu_seconds(pid), cpu_seconds(pid, worker) if worker else 0.0,
              cpu_seconds(authz.proc.pid) if authz else 0.0, stack.cpu_seconds() if stack else 0.0)
        t0 = time.monotonic()
        m = wrk(port, corpus, measure_start, measure_n, args.duration, args.connections, out)
        stdout, _ = m.communicate()
        elapsed = time.monotonic() - t0
        c1 = (cpu_seconds(pid), cpu_seconds(pid, worker) if worker else 0.0,
              cpu_seconds(authz.proc.pid) if authz else 0.0, stack.cpu_seconds() if stack else 0.0)
        if m.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed: {stdout}")
        r = json.loads(out.read_text())
        n = r["requests"]
        stats = envoy.stats(prefix) if filtered else {}
        measured = {k: v - stats0.get(k, 0) for k, v in stats.items()}
        authz_stats = envoy.stats("http.bench.ext_authz") if kind == "authz" else {}
        result = {
            "kind": kind, "traffic": traffic, "mode": mode,
            "requests": n,
            "rps": n / (r["duration_us"] / 1e6),
            "latency_us": r["latency_us"],
            "errors": r["errors"],
            "wrapped": r["wrapped"],
            "envoy_cpu_us_per_req": (c1[0] - c0[0]) * 1e6 / n,
            "worker_cpu_us_per_req": (c1[1] - c0[1]) * 1e6 / n if worker else None,
            "authz_cpu_us_per_req": (c1[2] - c0[2]) * 1e6 / n if authz else 0.0,
            # wba replay-server and redis-server together, for store/ runs.
            "store_cpu_us_per_req": (c1[3] - c0[3]) * 1e6 / n if stack else 0.0,
            "elapsed_s": elapsed,
            "load_before": load_before,
            "load_after": load_average(),
            "filter_outcomes": stats,
            "measured_outcomes": measured,
            "ext_authz_stats": authz_stats,
        }
        result["total_cpu_us_per_req"] = (result["envoy_cpu_us_per_req"]
                                          + result["authz_cpu_us_per_req"]
                                          + result["store_cpu_us_per_req"])
        result["memory"] = memory(pid)
        problems = []
        if sum(r["errors"].values()):
            problems.append(f"errors {r['errors']}")
        if r["wrapped"] and signed and kind != "envoy":
            problems.append("corpus exhausted: signatures were replayed")
        if filtered:
            # Every request of the measured run had the expected outcome, and no other (Envoy
            # may count a few more than wrk completed: those in flight when wrk stopped).
            want = f"{prefix}.{'verified' if signed else 'unsigned'}"
            other = {k: v for k, v in measured.items() if k != want and v}
            if measured.get(want, 0) < n or other:
                problems.append(f"of {n} requests, {measured.get(want, 0)} were "
                                f"{want.rsplit('.', 1)[1]}; other outcomes: {other} (measured run)")
        result["problems"] = problems
        return result
    finally:
        envoy.stop()
        if authz:
            authz.stop()
        if stack:
            stack.stop()


def median(runs, field):
    values = [r[field] for r in runs if r.get(field) is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wasm", default=str(ROOT / "dist" / "web_bot_auth.wasm"))
    ap.add_argument("--authz", default=str(ROOT / "target" / "release" / "wba-authz"))
    ap.add_argument("--authz-threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "e2e.json"))
    ap.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    ap.add_argument("--warmup-requests", type=int, default=60_000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--signed-corpus", type=int, default=300_000)
    ap.add_argument("--alg-corpus", type=int, default=60_000,
                    help="requests in the signed-ecdsa and signed-rsa corpora")
    ap.add_argument("--old-wasm", help="an earlier build: adds old/unsigned and old/signed")
    ap.add_argument("--old-native",
                    help="an earlier build of the native module: adds oldnative/unsigned and "
                    "oldnative/signed")
    ap.add_argument("--wba", default=str(ROOT / "target" / "release" / "wba"))
    ap.add_argument("--native", default=str(ROOT / "dist" / NATIVE_FILE),
                    help="the native front end (an Envoy dynamic module) for the native/ scenarios")
    ap.add_argument("--scenarios", default="envoy/unsigned,envoy/signed,wasm/unsigned,"
                    "wasm/signed,wasm/signed-ecdsa,wasm/signed-rsa,hold/unsigned,hold/signed,"
                    "hold/body,store/signed,native/unsigned,native/signed,native/signed-ecdsa,"
                    "native/signed-rsa,native/body,native/store,authz/unsigned,authz/signed")
    args = ap.parse_args()
    scenarios = [tuple(s.split("/")) for s in args.scenarios.split(",")]
    if args.old_wasm:
        scenarios += [("old", "unsigned"), ("old", "signed")]
    if args.old_native:
        scenarios += [("oldnative", "unsigned"), ("oldnative", "signed")]
    native_missing = False
    if any(kind == "native" for kind, _ in scenarios) and not Path(args.native).is_file():
        print(f"note: {args.native} does not exist (`make build` makes it): the native/ "
              "scenarios are left out", flush=True)
        scenarios = [(kind, traffic) for kind, traffic in scenarios if kind != "native"]
        native_missing = True
    native_bytes = os.path.getsize(args.native) if Path(args.native).is_file() else None

    key = harness.Key()
    keys = {"unsigned": key, "signed": key, "body": key,
            "signed-ecdsa": harness.EcKey(), "signed-rsa": harness.RsaKey(2048)}
    with tempfile.TemporaryDirectory(prefix="wba-bench-") as tmp:
        tmp = Path(tmp)
        t = time.monotonic()
        if native_bytes is not None:
            # A copy under the file name Envoy looks for (whatever --native is called), so that
            # a rebuild during the run does not change what is measured.
            args.native_dir = tmp / "native"
            args.native_dir.mkdir()
            (args.native_dir / NATIVE_FILE).write_bytes(Path(args.native).read_bytes())
        if args.old_native:
            args.old_native_dir = tmp / "old-native"
            args.old_native_dir.mkdir()
            (args.old_native_dir / NATIVE_FILE).write_bytes(Path(args.old_native).read_bytes())
        corpora = {}
        for traffic, n in (("unsigned", 50_000), ("signed", args.signed_corpus),
                           ("body", args.signed_corpus), ("signed-ecdsa", args.alg_corpus),
                           ("signed-rsa", args.alg_corpus)):
            if any(corpus_of(tr) == traffic for _, tr in scenarios):
                write_corpus(tmp / f"{traffic}.txt", keys[traffic], n, traffic != "unsigned",
                             body=traffic == "body", alg=ALGS.get(traffic, "ed25519"))
                corpora[traffic] = (tmp / f"{traffic}.txt", n)
        print(f"corpus: {sum(n for _, n in corpora.values())} requests in "
              f"{time.monotonic() - t:.1f}s", flush=True)
        runs = []
        failed = []
        for rep in range(args.repeats):
            for kind, traffic in scenarios:
                d = tmp / f"{kind}-{traffic}-{rep}"
                d.mkdir()
                t_run = time.monotonic()
                try:
                    r = run(kind, traffic, args, keys, corpora, d)
                except (RuntimeError, harness.EnvoyFailed) as e:  # once more, then give up
                    print(f"{kind}/{traffic} #{rep}: {e}; again", flush=True)
                    d = tmp / f"{kind}-{traffic}-{rep}-again"
                    d.mkdir()
                    try:
                        r = run(kind, traffic, args, keys, corpora, d)
                    except (RuntimeError, harness.EnvoyFailed) as e:
                        # The native module is the newest part: one that does not load must not
                        # cost the rest of the run. Other scenarios fail the run, as before.
                        if kind != "native":
                            raise
                        print(f"{kind}/{traffic} #{rep}: failed twice, left out: "
                              f"{str(e)[-2000:]}", flush=True)
                        failed.append({"scenario": f"{kind}/{traffic}", "repeat": rep,
                                       "error": str(e)[-6000:]})
                        continue
                r["repeat"] = rep
                r["wall_s"] = time.monotonic() - t_run  # with Envoy's start and stop
                runs.append(r)
                print(f"{kind}/{traffic} #{rep}: {r['rps']:.0f} req/s, "
                      f"p50 {r['latency_us']['p50']} us, p99 {r['latency_us']['p99']} us, "
                      f"envoy {r['envoy_cpu_us_per_req']:.2f} us/req "
                      f"(worker {r['worker_cpu_us_per_req'] or 0:.2f}), "
                      f"authz {r['authz_cpu_us_per_req']:.2f} us/req, "
                      f"load {r['load_before']:.2f}"
                      + (f"  PROBLEMS: {r['problems']}" if r["problems"] else ""),
                      flush=True)

    summary = {}
    for kind, traffic in scenarios:
        rs = [r for r in runs if r["kind"] == kind and r["traffic"] == traffic]
        if not rs:  # every repeat failed (see "failed")
            continue
        summary[f"{kind}/{traffic}"] = {
            "runs": len(rs),
            "rps": median(rs, "rps"),
            "p50_us": statistics.median(r["latency_us"]["p50"] for r in rs),
            "p99_us": statistics.median(r["latency_us"]["p99"] for r in rs),
            "envoy_cpu_us_per_req": median(rs, "envoy_cpu_us_per_req"),
            "worker_cpu_us_per_req": median(rs, "worker_cpu_us_per_req"),
            "authz_cpu_us_per_req": median(rs, "authz_cpu_us_per_req"),
            "store_cpu_us_per_req": median(rs, "store_cpu_us_per_req"),
            "total_cpu_us_per_req": median(rs, "total_cpu_us_per_req"),
            "problems": [p for r in rs for p in r["problems"]],
        }
    for kind in sorted({r["kind"] for r in runs}):
        print(f"{kind}/: {sum(r['wall_s'] for r in runs if r['kind'] == kind):.0f} s of runs",
              flush=True)
    mem = [dict(r["memory"], scenario=f"{r['kind']}/{r['traffic']}") for r in runs]
    out = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wasm_bytes": os.path.getsize(args.wasm),
        "native_bytes": native_bytes,
        "native_missing": native_missing,
        "failed": failed,
        "body_bytes": len(BODY),
        "summary": summary,
        "memory_after_runs": mem,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if (native_missing or failed
                 or any(s["problems"] for s in summary.values())) else 0


if __name__ == "__main__":
    sys.exit(main())
