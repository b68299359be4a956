#!/usr/bin/env bash
# Sizing figures for `wba replay-server` (never part of `make test`; asserts nothing):
#   1. Redis memory per live record: INFO memory used_memory before and after 100,000
#      `SET wba:replay:<id> 1 NX EXAT <until>` (the server's own command), divided;
#   2. requests per second one replay server handles: wrk, 1 thread / 32 connections, 10 s,
#      distinct ids (bench/replay_server.lua), the server with 1 and then 2 tokio worker threads,
#      plus the CPU time per request of the server and of Redis (from /proc).
# Everything runs on this machine on loopback: wrk, the server and Redis share its cores.
# Usage: bench/replay_server.sh [DURATION_SECONDS] (default 10). Prints a summary; writes
# nothing but a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
RECORDS=100000
TMP=$(mktemp -d /tmp/wba-replay-bench.XXXXXX)
REDIS_PID=
SERVER_PID=
cleanup() {
  [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
  [ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

for tool in redis-server redis-cli wrk; do
  command -v $tool >/dev/null || { echo "$tool is missing: make redis-deps; apt-get install wrk" >&2; exit 1; }
done
cargo build --quiet -p wba-keys --release
WBA=$PWD/target/release/wba

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks
HZ=$(getconf CLK_TCK)

# ---- Redis (no persistence, default settings)
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
  --logfile "$TMP/redis.log" &
REDIS_PID=$!
R() { redis-cli -p "$RPORT" "$@"; }
for _ in $(seq 100); do R PING >/dev/null 2>&1 && break; sleep 0.05; done
info() { R INFO memory | tr -d '\r' | awk -F: -v k="$1" '$1==k {print $2}'; }

# ---- 1. memory per live record
UNTIL=$(( $(date +%s) + 3600 ))
python3 - "$RECORDS" "$UNTIL" > "$TMP/records.resp" <<'PY'
import hashlib, sys
n, until = int(sys.argv[1]), sys.argv[2]
out = sys.stdout
for i in range(n):
    key = "wba:replay:" + hashlib.sha256(b"memory%d" % i).hexdigest()[:32]
    args = ["SET", key, "1", "NX", "EXAT", until]
    out.write("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args))
PY
BEFORE=$(info used_memory)
R --pipe < "$TMP/records.resp" >/dev/null
AFTER=$(info used_memory)
KEYS=$(R DBSIZE)
PER=$(( (AFTER - BEFORE) / KEYS ))
REDIS_VERSION=$(R INFO server | tr -d '\r' | awk -F: '$1=="redis_version"{print $2}')
R FLUSHALL >/dev/null

# ---- 2. requests per second
declare -A RPS LAT50 LAT99 NON2XX SERVER_US REDIS_US
for threads in 1 2; do
  "$WBA" replay-server --listen 127.0.0.1:0 --redis "redis://127.0.0.1:$RPORT" \
    --threads "$threads" > "$TMP/server.out" 2> "$TMP/server.err" &
  SERVER_PID=$!
  for _ in $(seq 200); do [ -s "$TMP/server.out" ] && break; sleep 0.05; done
  ADDR=$(sed -n 's/^listening on //p' "$TMP/server.out" | head -1)
  # Warm-up (connections, allocator), then the measured run with ids of its own.
  wrk -t1 -c32 -d2s -s bench/replay_server.lua "http://$ADDR" -- $((threads * 10)) >/dev/null
  S0=$(cpu_ticks "$SERVER_PID"); R0=$(cpu_ticks "$REDIS_PID")
  wrk -t1 -c32 -d"${DURATION}s" --latency -s bench/replay_server.lua "http://$ADDR" \
    -- $((threads * 10 + 1)) > "$TMP/wrk.txt"
  S1=$(cpu_ticks "$SERVER_PID"); R1=$(cpu_ticks "$REDIS_PID")
  echo "---- server with $threads worker thread(s)"; cat "$TMP/wrk.txt"
  REQS=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
  RPS[$threads]=$(awk '/^Requests\/sec/ {printf "%d", $2}' "$TMP/wrk.txt")
  LAT50[$threads]=$(awk '$1=="50%" {print $2}' "$TMP/wrk.txt")
  LAT99[$threads]=$(awk '$1=="99%" {print $2}' "$TMP/wrk.txt")
  NON2XX[$threads]=$(awk '/Non-2xx/ {print $NF}' "$TMP/wrk.txt"); NON2XX[$threads]=${NON2XX[$threads]:-0}
  SERVER_US[$threads]=$(awk -v t=$((S1 - S0)) -v n="$REQS" -v hz="$HZ" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  REDIS_US[$threads]=$(awk -v t=$((R1 - R0)) -v n="$REQS" -v hz="$HZ" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
done
LIVE=$(R DBSIZE)
USED=$(info used_memory_human)

echo
echo "==== wba replay-server sizing ($(date -u +%Y-%m-%d), $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Redis $REDIS_VERSION)"
echo "Redis memory per live record: $PER bytes (used_memory $BEFORE -> $AFTER for $KEYS records)"
echo "wrk 1 thread / 32 connections, ${DURATION} s, distinct ids, loopback; wrk, server and Redis share the cores"
printf '%-22s %10s %10s %10s %14s %16s %14s\n' "server threads" "req/s" "p50" "p99" "non-2xx" "server CPU/req" "Redis CPU/req"
for t in 1 2; do
  printf '%-22s %10s %10s %10s %14s %13s us %11s us\n' "$t" "${RPS[$t]}" "${LAT50[$t]}" "${LAT99[$t]}" \
    "${NON2XX[$t]}" "${SERVER_US[$t]}" "${REDIS_US[$t]}"
done
echo "live records after the runs: $LIVE (used_memory $USED)"
