#!/usr/bin/env bash
# Load bench of `floodgate serve` (in-memory store), loopback only, bounded in time.
#
#   bench/run.sh rls        RLS v3 with rls-load: hot key and 100 000 random values, c = 1 16 64 256
#   bench/run.sh rls-small  RLS, 100/min on one hot key, a fresh server per run (counts admissions)
#   bench/run.sh http       HTTP JSON API with wrk: POST /v1/hit (hot id and 100 000 ids), GET /healthz
#   bench/run.sh redis      the rls runs on the Redis store (starts its own redis-server on 127.0.0.1:16379)
#   bench/run.sh null       calibration: rls-load's null_server (answers OK, does nothing) the same way
#   bench/run.sh all        rls, null, rls-small, http
#
# Environment: FLOODGATE (the server binary), RLS_LOAD (the rls-load binary, built from
# /work/shared/tools/rls-load, see its README), DURATION (s per run, default 10), REPEAT (default 2),
# CONCURRENCY (default "1 16 64 256"), SERVER_ARGS (extra `serve` flags, e.g. "--threads 1"), OUT (JSON lines, default bench/results-<date>.jsonl).
# Each run is one JSON line: rls-load's (or wrk's, parsed) plus server_cpu_s, server_cpu_us_per_req, loadgen_cpu_s.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
FLOODGATE=${FLOODGATE:-${CARGO_TARGET_DIR:-$here/../../../target}/release/floodgate}
RLS_LOAD=${RLS_LOAD:-/work/target-rlsload/release/rls-load}
NULL_SERVER=${NULL_SERVER:-$(dirname "$RLS_LOAD")/examples/null_server}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-2}
CONCURRENCY=${CONCURRENCY:-"1 16 64 256"}
OUT=${OUT:-$here/results-$(date -u +%Y%m%d).jsonl}
SERVER_ARGS=${SERVER_ARGS:-}
STORE=memory
HTTP_ADDR=127.0.0.1:18080
GRPC_ADDR=127.0.0.1:18081
TCK=$(getconf CLK_TCK)

(( DURATION > 0 && DURATION <= 60 )) || { echo "DURATION must be 1..60" >&2; exit 1; }

server_pid=
start_server() { # config
  [ -x "$FLOODGATE" ] || { echo "no server binary at $FLOODGATE (cargo build --release -p floodgate-server)" >&2; exit 1; }
  # shellcheck disable=SC2086
  "$FLOODGATE" serve --http "$HTTP_ADDR" --grpc "$GRPC_ADDR" --config "$1" $SERVER_ARGS 2>/dev/null &
  server_pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://$HTTP_ADDR/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start" >&2; exit 1
}
stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
trap stop_server EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# run LABEL EXTRA_JSON -- command...: runs the load, prints its JSON line enriched with CPU figures.
run() {
  local label=$1 extra=$2; shift 3
  local before after timefile line
  timefile=$(mktemp)
  before=$(cpu_ticks "$server_pid")
  line=$(/usr/bin/time -f '%U %S' -o "$timefile" "$@" | tail -1)
  after=$(cpu_ticks "$server_pid")
  python3 - "$line" "$label" "$extra" "$(( after - before ))" "$TCK" "$(cat "$timefile")" "$(rss_kb "$server_pid")" <<'EOF' | tee -a "$OUT"
import json, sys
line, label, extra, ticks, tck, loadgen, rss = sys.argv[1:]
r = json.loads(line)
r.update(json.loads(extra))
r["label"] = label
r["server_cpu_s"] = int(ticks) / int(tck)
r["server_cores"] = round(r["server_cpu_s"] / r["elapsed_s"], 2) if r.get("elapsed_s") else None
answered = r.get("answered") or 0
r["server_cpu_us_per_req"] = round(r["server_cpu_s"] * 1e6 / answered, 1) if answered else None
u, s = loadgen.split()[-2:]
r["loadgen_cpu_s"] = round(float(u) + float(s), 2)
r["server_rss_kb"] = int(rss)
print(json.dumps(r))
EOF
  rm -f "$timefile"
}

rls() {
  start_server "$here/bench.yaml"
  for c in $CONCURRENCY; do
    local conns=$(( c < 4 ? c : 4 ))
    for rep in $(seq "$REPEAT"); do
      run "$STORE/big/hot/c$c/r$rep" '{"server":"floodgate","storage":"'"$STORE"'","server_args":"'"$SERVER_ARGS"'","keys":"hot","limits":"big","rep":'"$rep"'}' -- \
        "$RLS_LOAD" -t "$GRPC_ADDR" --domain bench -k k --values 1 --pick round-robin -c "$c" --connections "$conns" -d "$DURATION"
      run "$STORE/big/100k/c$c/r$rep" '{"server":"floodgate","storage":"'"$STORE"'","server_args":"'"$SERVER_ARGS"'","keys":"100k","limits":"big","rep":'"$rep"'}' -- \
        "$RLS_LOAD" -t "$GRPC_ADDR" --domain bench -k k --values 100000 --pick random -c "$c" --connections "$conns" -d "$DURATION"
    done
  done
  stop_server
}

redis() {
  command -v redis-server >/dev/null || { echo "redis-server not installed" >&2; exit 1; }
  redis-server --bind 127.0.0.1 --port 16379 --save '' --appendonly no >/dev/null &
  local redis_pid=$!
  sleep 0.5
  STORE=redis SERVER_ARGS="$SERVER_ARGS --redis redis://127.0.0.1:16379/" rls
  local before
  before=$(cpu_ticks "$redis_pid")
  echo "redis-server CPU over the whole series: $(( before / TCK )) s" >&2
  kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
}

null() {
  "$NULL_SERVER" "$GRPC_ADDR" 600 2>/dev/null &
  server_pid=$!
  sleep 0.5
  for c in $CONCURRENCY; do
    local conns=$(( c < 4 ? c : 4 ))
    for rep in $(seq "$REPEAT"); do
      run "null/hot/c$c/r$rep" '{"server":"null_server","keys":"hot","rep":'"$rep"'}' -- \
        "$RLS_LOAD" -t "$GRPC_ADDR" --domain bench -k k --values 1 -c "$c" --connections "$conns" -d "$DURATION"
    done
  done
  stop_server
}

rls_small() {
  for c in $CONCURRENCY; do
    local conns=$(( c < 4 ? c : 4 ))
    for rep in $(seq "$REPEAT"); do
      start_server "$here/bench-small.yaml"
      run "memory/small/hot/c$c/r$rep" '{"server":"floodgate","keys":"hot","limits":"small","rep":'"$rep"'}' -- \
        "$RLS_LOAD" -t "$GRPC_ADDR" --domain bench -k k --values 1 -c "$c" --connections "$conns" -d "$DURATION"
      stop_server
    done
  done
}

http() {
  command -v wrk >/dev/null || { echo "wrk not installed (apt-get install wrk)" >&2; exit 1; }
  start_server "$here/bench.yaml"
  for c in $CONCURRENCY; do
    for target in hit-hot hit-100k healthz; do
      for rep in $(seq "$REPEAT"); do
        local script="$here/wrk-hit.lua" url="http://$HTTP_ADDR/v1/hit" values=1
        [ "$target" = hit-100k ] && values=100000
        [ "$target" = healthz ] && { script="$here/wrk-report.lua"; url="http://$HTTP_ADDR/healthz"; }
        run "http/$target/c$c/r$rep" '{"server":"floodgate","target":"'"$target"'","concurrency":'"$c"',"rep":'"$rep"'}' -- \
          env VALUES=$values wrk -t1 -c"$c" -d"${DURATION}s" --timeout 2s -s "$script" "$url"
      done
    done
  done
  stop_server
}

case "${1:-}" in
  rls) rls ;;
  rls-small) rls_small ;;
  http) http ;;
  null) null ;;
  redis) redis ;;
  all) rls; null; rls_small; http ;;
  *) sed -n '2,12p' "$0"; exit 1 ;;
esac
echo "results appended to $OUT" >&2
