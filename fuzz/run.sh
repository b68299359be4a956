#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in turn for FUZZ_SECONDS (default 60) each, then prints each
# target's libFuzzer execution count. Run from the repository root (`make fuzz` does).
#
#   FUZZ_SECONDS=300 fuzz/run.sh                  # longer runs
#   FUZZ_TARGETS="signature verify_request" fuzz/run.sh
#   FUZZ_SANITIZER=address fuzz/run.sh            # default: none (the core is safe Rust)
#   FUZZ_SLOW_UNIT_MS=5 fuzz/run.sh               # a stricter slow-unit limit (default 10)
#
# Inputs go up to FUZZ_MAX_LEN bytes (default 65536, libFuzzer's -max_len): as large as the
# request headers Envoy accepts (60 KiB by default), since the costly inputs are the large ones
# (issue 17: 8,000 components in 48 KiB). libFuzzer grows its inputs towards that length
# gradually (-len_control, default 100; FUZZ_LEN_CONTROL=0 tries every length at once).
#
# A slow unit is a finding, like a crash. One input may cost at most FUZZ_SLOW_UNIT_MS
# milliseconds (default 10) of CPU time in a target: each target times its own work on each
# input (`bounded` in fuzz/src/lib.rs, with the thread's CPU clock, so time spent waiting for
# the CPU on this shared machine is not counted; an input over the limit is run twice more and
# judged by its fastest run) and panics when it is over, which makes libFuzzer save the input
# under fuzz/artifacts/<target>/ as a crash. libFuzzer cannot do this itself: -timeout takes
# whole seconds (it stays, at 10 s, for hangs), and -report_slow_units (seconds too) only
# prints, saving nothing.
#
# Besides fuzz/seeds/<target>, each target also starts from hostile seeds written by
# fuzz/hostile_seeds.py into target/fuzz-seeds/<target> (inputs at and past the bounds on work per
# request, such as issue 17's 8,000 distinct components: mutation rarely builds many distinct
# items, and they are too large to keep in the repository). A build in which one of them is a
# slow unit fails at once. FUZZ_HOSTILE_SEEDS=0 leaves them out.
#
# Nightly is not required: the stable toolchain is run with RUSTC_BOOTSTRAP=1 for the
# -Z flags cargo-fuzz passes. Build output goes to target/fuzz, corpora to
# target/fuzz-corpus/<target> (seeded from fuzz/seeds/<target>, with the dictionary
# fuzz/structured-fields.dict), logs to target/fuzz-logs,
# crashes to fuzz/artifacts/<target>; reproduce one with
#   RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/fuzz target/tools/bin/cargo-fuzz run \
#       --sanitizer none <target> fuzz/artifacts/<target>/<crash-file>
# Exits non-zero when a target finds a crash.
set -euo pipefail

# All in a function: bash reads it whole before running, so editing this file during a run is
# harmless.
main() {
    ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cd "$ROOT"

    SECS="${FUZZ_SECONDS:-60}"
    SANITIZER="${FUZZ_SANITIZER:-none}"
    MAX_LEN="${FUZZ_MAX_LEN:-65536}"
    LEN_CONTROL="${FUZZ_LEN_CONTROL:-100}"
    export FUZZ_SLOW_UNIT_MS="${FUZZ_SLOW_UNIT_MS:-10}"
    read -r -a TARGETS <<<"${FUZZ_TARGETS:-signature_input signature signature_agent signature_base verify_request header_map key_directory}"
    TOOLS="$ROOT/target/tools"

    if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
        cargo install cargo-fuzz --locked --root "$TOOLS"
    fi
    export PATH="$TOOLS/bin:$PATH"
    export RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_DIR="$ROOT/target/fuzz"

    LOGS="$ROOT/target/fuzz-logs"
    mkdir -p "$LOGS"

    SEEDS="$ROOT/target/fuzz-seeds"
    rm -rf "$SEEDS"
    if [ "${FUZZ_HOSTILE_SEEDS:-1}" != 0 ]; then
        python3 "$ROOT/fuzz/hostile_seeds.py" "$SEEDS"
    fi

    # Build every target once, up front: a build error stops here, and the runs below use these
    # binaries even if the sources change meanwhile.
    cargo fuzz build --sanitizer "$SANITIZER"
    BIN="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"

    failed=()
    summary=()
    for t in "${TARGETS[@]}"; do
        corpus="$ROOT/target/fuzz-corpus/$t"
        mkdir -p "$corpus"
        log="$LOGS/$t.log"
        echo "== $t: ${SECS}s, inputs up to $MAX_LEN bytes, slow unit over ${FUZZ_SLOW_UNIT_MS} ms (log: ${log#"$ROOT"/})"
        status=0
        hostile=()
        if [ -d "$SEEDS/$t" ]; then hostile=("$SEEDS/$t"); fi
        artifacts="$ROOT/fuzz/artifacts/$t/"
        mkdir -p "$artifacts"
        "$BIN/$t" -max_total_time="$SECS" -max_len="$MAX_LEN" \
            -len_control="$LEN_CONTROL" -timeout=10 -print_final_stats=1 \
            -dict="$ROOT/fuzz/structured-fields.dict" -artifact_prefix="$artifacts" \
            "$corpus" "$ROOT/fuzz/seeds/$t" ${hostile[@]+"${hostile[@]}"} >"$log" 2>&1 || status=$?
        runs="$(grep -a '^stat::number_of_executed_units:' "$log" | sed 's/^.*: *//' | tail -n 1 || true)"
        done_line="$(grep -a -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs)' "$log" | tail -n 1 || true)"
        if [ "$status" -ne 0 ]; then
            failed+=("$t")
            grep -a -E -A2 'panicked at|slow unit|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 12 || true
            summary+=("$(printf '%-16s FAILED (exit %s) after %s executions' "$t" "$status" "${runs:-?}")")
        else
            summary+=("$(printf '%-16s %12s executions in %ss  [%s]' "$t" "${runs:-?}" "$SECS" "$done_line")")
        fi
    done

    echo
    echo "== fuzz summary"
    printf '%s\n' "${summary[@]}"
    if [ "${#failed[@]}" -ne 0 ]; then
        echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
        exit 1
    fi
}

main "$@"
