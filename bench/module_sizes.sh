#!/usr/bin/env bash
# What each signature algorithm adds to the module: builds the filter for wasm32 (release,
# `-p wba-filter-wasm`, then wasm-opt as `make build` does) with the algorithms besides Ed25519
# compiled out, one at a time and together, and prints the sizes in bytes as JSON:
#   {"ed25519": N, "ecdsa": N, "rsa": N, "all": N}
# (ed25519: neither ECDSA nor RSA; ecdsa: Ed25519 + ECDSA; rsa: Ed25519 + RSA; all: the
# default build, dist/web_bot_auth.wasm). The builds share target/ (dependencies are compiled
# once); each module is copied to target/sizes, and the default build comes last, so the
# regular build's output is left as `make build` made it. Run from the repository root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WASM_OPT="$ROOT/target/tools/binaryen/node_modules/.bin/wasm-opt"
FLAGS=(-Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int)
out="{"
sep=""
for variant in ed25519: ecdsa:ecdsa rsa:rsa all:ecdsa,rsa; do
  name="${variant%%:*}"
  features="${variant#*:}"
  mkdir -p "$ROOT/target/sizes"
  cargo build --quiet -p wba-filter-wasm --target wasm32-unknown-unknown --release \
    --no-default-features --features "$features" >&2
  "$WASM_OPT" "${FLAGS[@]}" target/wasm32-unknown-unknown/release/wba_filter_wasm.wasm \
    -o "$ROOT/target/sizes/$name.wasm"
  out+="$sep\"$name\": $(stat -c %s "$ROOT/target/sizes/$name.wasm")"
  sep=", "
done
echo "$out}"
