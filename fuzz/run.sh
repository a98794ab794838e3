#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each (default 60 s) with cargo fuzz (nightly + libFuzzer):
# `config` (the YAML config reader), `upstream_headers` (the upstream rate-limit header parsers), `rls_request`
# (protobuf bytes through the RLS request path), `rls_json` (the proto3-JSON mapping of POST /json) and
# `http_json` (the HTTP API's JSON bodies; the first byte picks the route).
# The same properties run on stable in the normal test suite (crates/floodgate-server/tests/fuzz.rs and
# crates/floodgate-upstream/src/headers/tests.rs).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(config upstream_headers rls_request rls_json http_json)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do mkdir -p "corpus/$t"; done
cp -n ../crates/floodgate-server/examples/*.yaml ../crates/floodgate-server/bench/*.yaml corpus/config/ 2>/dev/null || true
for t in "${targets[@]}"; do
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048
done
