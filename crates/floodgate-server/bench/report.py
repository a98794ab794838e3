#!/usr/bin/env python3
"""Markdown tables from bench/run.sh's JSON lines, with limitador's anchor figures beside ours.

    bench/report.py RESULTS.jsonl [LIMITADOR.jsonl]

LIMITADOR.jsonl defaults to /work/shared/tools/rls-load/results-limitador-20261123.jsonl. Medians over repeats
(with two runs, their mean). "vs limitador" is limitador's server CPU us/req over ours; "normalised" divides
each by the null_server's CPU us/req measured in the same session as it (theirs from their calibration runs,
2 server threads and 1 generator thread; ours from `bench/run.sh null`), which removes most of the
difference between the two sessions' machine states.
"""
import json
import statistics
import sys
from collections import defaultdict

ours_path = sys.argv[1]
theirs_path = sys.argv[2] if len(sys.argv) > 2 else "/work/shared/tools/rls-load/results-limitador-20261123.jsonl"


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cpu_us(r):
    return r["server_cpu_s"] * 1e6 / r["answered"] if r.get("answered") else None


ours = load(ours_path)
theirs = load(theirs_path)

# limitador: label like memory/big/hot/c16/r1; calibration labels start with "null".
lim = defaultdict(list)
lim_null = defaultdict(list)
for r in theirs:
    label = r.get("label", "")
    if label.startswith("memory/") or label.startswith("redis/"):
        storage, limits, keys, c, _ = label.split("/")
        keys = "100k" if keys != "hot" else "hot"
        lim[(storage, limits, keys, int(c[1:]))].append(cpu_us(r))
    elif "null" in label or r.get("server") == "null_server":
        # keep the 2-server-thread, 1-generator-thread calibration
        if r.get("null_threads", r.get("server_threads")) in (2, "2") and r.get("threads") == 1:
            lim_null[r["concurrency"]].append(cpu_us(r))

our_null = defaultdict(list)
groups = defaultdict(list)
for r in ours:
    if r.get("server") == "null_server":
        our_null[r["concurrency"]].append(cpu_us(r))
    elif r.get("tool") == "rls-load":
        key = (r.get("storage", "memory"), r.get("server_args", "").strip(), r.get("limits", "big"), r["keys"], r["concurrency"])
        groups[key].append(r)


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:.{nd}f}"


print("| storage | server args | limit | values | c | req/s median (runs) | p50 µs | p90 µs | p99 µs | p99.9 µs | server cores | server CPU µs/req | null_server CPU µs/req (same session) | limitador CPU µs/req | vs limitador | normalised |")
print("|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3] != "hot", k[4])):
    storage, args, limits, keys, c = key
    rs = groups[key]
    rps = [r["rps"] for r in rs]
    lat = lambda p: med([r["latency_us"][p] for r in rs])
    ours_cpu = med([cpu_us(r) for r in rs])
    cores = med([r["server_cores"] for r in rs])
    theirs_cpu = med(lim.get((storage, limits, keys, c), []))
    n_ours = med(our_null.get(c, []))
    n_theirs = med(lim_null.get(c, []))
    ratio = theirs_cpu / ours_cpu if theirs_cpu and ours_cpu else None
    norm = (theirs_cpu / n_theirs) / (ours_cpu / n_ours) if theirs_cpu and n_theirs and n_ours and ours_cpu else None
    runs = " / ".join(f"{x:.0f}" for x in rps)
    values = "1 (hot)" if keys == "hot" else "100 000 random"
    limit = "10⁹/min" if limits == "big" else "100/min"
    ok = ""
    if limits == "small":
        ok = " OK " + "/".join(str(r["ok"]) for r in rs)
    print(
        f"| {storage} | {args or 'default'} | {limit}{ok} | {values} | {c} | **{med(rps):.0f}** ({runs}) | {fmt(lat('p50'))} | {fmt(lat('p90'))} | {fmt(lat('p99'))} | {fmt(lat('p999'))} | {fmt(cores, 2)} | {fmt(ours_cpu, 1)} | {fmt(n_ours, 1)} | {fmt(theirs_cpu, 1)} | {fmt(ratio, 2)}× | {fmt(norm, 2)}× |"
    )

http = defaultdict(list)
for r in ours:
    if r.get("tool") == "wrk":
        http[(r["target"], r["concurrency"])].append(r)
if http:
    print()
    print("| HTTP target | c | req/s median | p50 µs | p90 µs | p99 µs | p99.9 µs | non-2xx | server cores | server CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(http, key=lambda k: (k[0], k[1])):
        rs = http[key]
        lat = lambda p: med([r["latency_us"][p] for r in rs])
        print(
            f"| {key[0]} | {key[1]} | **{med([r['rps'] for r in rs]):.0f}** | {fmt(lat('p50'))} | {fmt(lat('p90'))} | {fmt(lat('p99'))} | {fmt(lat('p999'))} | {sum(r['non_2xx'] for r in rs)} | {fmt(med([r['server_cores'] for r in rs]), 2)} | {fmt(med([cpu_us(r) for r in rs]), 1)} |"
        )
