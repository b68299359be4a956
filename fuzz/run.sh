#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in turn for FUZZ_SECONDS (default 60) each, then prints each
# target's libFuzzer execution count. Run from the repository root (`make fuzz` does).
#
#   FUZZ_SECONDS=300 fuzz/run.sh                  # longer runs
#   FUZZ_TARGETS="signature verify_request" fuzz/run.sh
#   FUZZ_SANITIZER=address fuzz/run.sh            # default: none (the core is safe Rust)
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
        echo "== $t: ${SECS}s (log: ${log#"$ROOT"/})"
        status=0
        artifacts="$ROOT/fuzz/artifacts/$t/"
        mkdir -p "$artifacts"
        "$BIN/$t" -max_total_time="$SECS" -max_len=4096 -timeout=10 -print_final_stats=1 \
            -dict="$ROOT/fuzz/structured-fields.dict" -artifact_prefix="$artifacts" \
            "$corpus" "$ROOT/fuzz/seeds/$t" >"$log" 2>&1 || status=$?
        runs="$(grep -a '^stat::number_of_executed_units:' "$log" | sed 's/^.*: *//' | tail -n 1 || true)"
        done_line="$(grep -a -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs)' "$log" | tail -n 1 || true)"
        if [ "$status" -ne 0 ]; then
            failed+=("$t")
            grep -a -E -A2 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 12 || true
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
