#!/usr/bin/env bash
# `make bench` (after `make build` and `make py-deps`): measures, in one run on this machine,
#   1. verification natively: our core, the crates.io web-bot-auth crate, bare ed25519-dalek
#      (criterion, filter/core/benches/verify.rs);
#   2-5. the filter in Envoy, end to end with wrk: the Wasm filter (V8) and the native front end
#      (the dynamic module, dist/libweb_bot_auth.so), against Envoy alone and the ext_authz
#      deployment (bench/e2e.py), memory and size; the sizing of `wba replay-server`
#      (bench/replay_server.sh);
# and writes bench/results/: results.md (table, machine, targets, native targets), results.svg,
# results.json. Never part of `make test`; asserts nothing about timings. About 25 minutes on 2
# cores, of which the native/ scenarios (6 × 3 runs, about 13 s each) are about 4.
# WBA_BENCH_E2E_ARGS adds arguments to bench/e2e.py (e.g. "--repeats 1 --duration 3" to try it;
# "--old-wasm FILE" adds an earlier build, measured in the same run, to check a change for
# regressions).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
OUT=$ROOT/bench/results
WASM=$ROOT/dist/web_bot_auth.wasm
NATIVE=$ROOT/dist/libweb_bot_auth.so   # without it, e2e.py leaves the native/ scenarios out
TMP=$(mktemp -d /tmp/wba-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# ---- tools
if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq wrk >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk; }
fi
if ! $PY -c 'import matplotlib' 2>/dev/null; then
  $PY -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
fi
[ -f "$WASM" ] && [ -f "$NATIVE" ] || make build
cargo build --quiet -p wba-authz --release
cargo build --quiet -p wba-keys --release   # wba replay-server, for the store/ scenario
command -v redis-server >/dev/null || make redis-deps

# ---- the machine
load() { cut -d' ' -f1 /proc/loadavg; }
wait_quiet() {  # up to a minute for the 1-minute load to fall below 1 (other builds)
  for _ in $(seq 12); do
    awk '{exit !($1 < 1.0)}' /proc/loadavg && return
    sleep 5
  done
  echo "note: load average $(load): measuring anyway (CPU-time figures are not inflated by it)"
}
# ---- 5. module size, and what each algorithm adds (before the measurements: it builds)
bench/module_sizes.sh > "$TMP/sizes.json" || echo "note: bench/module_sizes.sh failed"

wait_quiet
LOAD_CRITERION=$(load)

# ---- 1. native (criterion)
cargo bench --quiet -p wba-filter --bench verify 2>&1 | grep -E '^verify/|time:' || true

wait_quiet
LOAD_E2E=$(load)

# ---- 2-5. end to end
$PY bench/e2e.py --wasm "$WASM" --native "$NATIVE" --authz "$ROOT/target/release/wba-authz" --out "$TMP/e2e.json" \
  ${WBA_BENCH_E2E_ARGS:-} || echo "note: some end-to-end runs reported problems (see results.json)"

# ---- 4e. sizing of wba replay-server (Redis memory per live record, req/s of one server)
wait_quiet
bench/replay_server.sh 10 > "$TMP/replay_server.txt" 2>&1 || echo "note: bench/replay_server.sh failed (see results.md)"

$PY - "$TMP/machine.json" "$LOAD_CRITERION" "$LOAD_E2E" <<'PYEOF'
import json, subprocess, sys, datetime, re
def sh(*cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return p.stdout.strip()
    except OSError:
        return "n/a"
lscpu = sh("lscpu")
field = lambda name: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith(name + ":")), "n/a")
mem = next((l.split()[1] for l in sh("free", "-h").splitlines() if l.startswith("Mem:")), "n/a")
envoy = re.search(r"/(\d+\.\d+\.\d+)/", sh(".venv/bin/envoy", "--version"))
json.dump({
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "commit": sh("git", "rev-parse", "--short", "HEAD"),
    "cpu": field("Model name"), "cores": field("CPU(s)"), "memory": mem,
    "kernel": sh("uname", "-r"), "rustc": sh("rustc", "--version"),
    "envoy": envoy.group(1) if envoy else "n/a", "wrk": (sh("wrk", "-v").splitlines() or ["wrk"])[0].split(" Copyright")[0],
    "load_before_criterion": sys.argv[2], "load_before_e2e": sys.argv[3],
    "lscpu": lscpu, "free": sh("free", "-h"),
}, open(sys.argv[1], "w"), indent=1)
PYEOF

mkdir -p "$OUT"
$PY bench/report.py --criterion "$ROOT/target/criterion" --e2e "$TMP/e2e.json" \
  --machine "$TMP/machine.json" --replay-server "$TMP/replay_server.txt" \
  --sizes "$TMP/sizes.json" --out "$OUT"
echo "wrote $OUT/results.md, results.svg, results.json"
