#!/usr/bin/env bash
# Redis CPU per call of the store's GCRA script at two commits, side by side on one redis-server (loopback).
#
#   crates/floodgate-redis/benches/script_cpu.sh OLD_REV [NEW_REV] [ROUNDS]
#
# Each script is assembled from its commit's Lua files as scripts.rs does and sent with the arguments the store
# sends (an id-hash layout commit takes 3 keys, a shard layout commit 4: told apart by the prelude). A third case
# runs the new script on a shard already holding 100 other fields. Per round and case: `usec_per_call` from
# INFO commandstats over `redis-benchmark -c 1 -n 20000` (after CONFIG RESETSTAT), and req/s at `-c 50 -P 16`.
# Needs redis-server, redis-cli, redis-benchmark and python3. Bounded: ROUNDS (default 5) × 3 × 220 000 calls.
set -euo pipefail
old=${1:?usage: script_cpu.sh OLD_REV [NEW_REV] [ROUNDS]}
new=${2:-HEAD}
rounds=${3:-5}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

assemble() { # rev -> the meter script's source on stdout
    local rev=$1 lua=crates/floodgate-redis/src/lua
    printf "local KIND = 'm'\n%s\n%s\nlocal function body()\n%s\nend\nlocal r = body()\nif type(r) == 'table' then r[#r + 1] = rt end\nreturn r\n" \
        "$(git -C "$repo" show "$rev:$lua/codec.lua")" "$(git -C "$repo" show "$rev:$lua/prelude.lua")" \
        "$(git -C "$repo" show "$rev:$lua/meter.lua")"
}
assemble "$old" >"$dir/old.lua"
assemble "$new" >"$dir/new.lua"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$dir" \
    --logfile "$dir/redis.log"
c() { redis-cli -p "$port" "$@"; }
for _ in $(seq 50); do c ping >/dev/null 2>&1 && break; sleep 0.1; done

policy='gcra:1000000000/1000000us:b1000000000'
field=$'user:42 \x01g1000000000/1000000:b1000000000'
tail=(h 1 -1 0 1 -1)
params=(1 1000 1000000000)
args_for() { # script file, shard key -> the EVALSHA arguments in the array `args`
    local sha
    sha=$(c SCRIPT LOAD "$(cat "$1")")
    if grep -q "local key, id_hash" "$1"; then
        args=(evalsha "$sha" 4 "$2" 'bench{user:42}' "bench:{user:42}:gcra" 'bench:{user:42}' "${tail[@]}" "$field" "$policy" "${params[@]}")
    else
        args=(evalsha "$sha" 3 'bench{user:42}' "bench:{user:42}:gcra" 'bench:{user:42}' "${tail[@]}" "$policy" "${params[@]}")
    fi
}
args_for "$dir/old.lua" 'bench#{one}'; old_args=("${args[@]}")
args_for "$dir/new.lua" 'bench#{one}'; new_args=("${args[@]}")
args_for "$dir/new.lua" 'bench#{full}'; full_args=("${args[@]}")
for a in old new full; do declare -n x=${a}_args; c "${x[@]}" >/dev/null; done
if grep -q "local key, id_hash" "$dir/new.lua"; then
    value=$(c --raw HGET 'bench#{full}' "$field" | head -c -1)
    for i in $(seq 100); do c HSET 'bench#{full}' "other:$i ${field#* }" "$value" >/dev/null; done
    c HSET 'bench#{full}' ' ' 256 >/dev/null
    echo "full shard: $(c HLEN 'bench#{full}') fields, $(c OBJECT ENCODING 'bench#{full}')"
fi
echo "| round | case | usec_per_call (-c 1) | req/s (-c 50 -P 16) |"
echo "|---|---|---|---|"
for r in $(seq "$rounds"); do
    for a in old new full; do
        declare -n x=${a}_args
        c CONFIG RESETSTAT >/dev/null
        redis-benchmark -p "$port" -c 1 -n 20000 -q "${x[@]}" >/dev/null
        us=$(c INFO commandstats | grep cmdstat_evalsha | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/')
        rps=$(redis-benchmark -p "$port" -c 50 -P 16 -n 200000 -q "${x[@]}" | tr '\r' '\n' |
            grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
        echo "| $r | $a | $us | $rps |"
    done
done
