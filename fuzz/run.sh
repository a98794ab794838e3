#!/usr/bin/env bash
# Runs fuzz targets for a bounded time each (default 60 s) with cargo fuzz (libFuzzer):
#   `config`            the YAML config reader                          (fuzz/)
#   `rls_request`       protobuf bytes through the RLS request path     (fuzz/)
#   `rls_json`          the proto3-JSON mapping of POST /json           (fuzz/)
#   `http_json`         the HTTP API's JSON bodies (first byte: route)  (fuzz/)
#   `cluster_frame`     the cluster's peer frames                       (fuzz/)
#   `upstream_headers`  the upstream rate-limit header parsers          (crates/floodgate-upstream/fuzz/)
# The same properties run on stable in the normal test suite (crates/floodgate-server/tests/fuzz.rs,
# crates/floodgate-upstream/src/headers/tests.rs, crates/floodgate-cluster/src/frame.rs).
#
# It uses the nightly toolchain when there is one, and otherwise the stable one with RUSTC_BOOTSTRAP=1 (the
# sanitizer flags cargo fuzz passes are unstable options; stable ships the sanitizer runtimes). A crash stops the
# run with a non-zero exit and leaves the input under the fuzz crate's `artifacts/`.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(config rls_request rls_json http_json cluster_frame upstream_headers)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz() { cargo +nightly fuzz "$@"; }
else
    fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi
for t in "${targets[@]}"; do
    case "$t" in
        upstream_headers) dir="$root/crates/floodgate-upstream/fuzz" ;;
        config | rls_request | rls_json | http_json | cluster_frame) dir="$root/fuzz" ;;
        *) echo "fuzz/run.sh: unknown target $t" >&2; exit 2 ;;
    esac
    mkdir -p "$dir/corpus/$t"
    if [ "$t" = config ]; then
        cp -n "$root"/crates/floodgate-server/examples/*.yaml "$root"/crates/floodgate-server/bench/*.yaml \
            "$dir/corpus/config/" 2>/dev/null || true
    fi
    echo "==> fuzzing $t for $secs s"
    (cd "$dir" && fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048)
done
