#!/usr/bin/env bash
# Runs the config-parser fuzz target for a bounded time (default 60 s) with cargo fuzz (nightly + libFuzzer).
# The same property runs on stable in the normal test suite: crates/floodgate-server/tests/fuzz.rs.
#
#   fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/config
cp -n ../crates/floodgate-server/examples/*.yaml ../crates/floodgate-server/bench/*.yaml corpus/config/ 2>/dev/null || true
exec cargo +nightly fuzz run config corpus/config -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048
