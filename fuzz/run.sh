#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each (default 60 s) with cargo fuzz (nightly + libFuzzer):
# `config` (the YAML config reader) and `upstream_headers` (the upstream rate-limit header parsers).
# The same properties run on stable in the normal test suite (crates/floodgate-server/tests/fuzz.rs and
# crates/floodgate-upstream/src/headers/tests.rs).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(config upstream_headers)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/config corpus/upstream_headers
cp -n ../crates/floodgate-server/examples/*.yaml ../crates/floodgate-server/bench/*.yaml corpus/config/ 2>/dev/null || true
for t in "${targets[@]}"; do
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048
done
