#!/usr/bin/env python3
"""Call a rate-limited API through `floodgate serve`'s upstream buckets, with Python's standard library only.

Each call: POST /v1/upstream/acquire (the server waits until the bucket allows one, up to max_wait_ms), then the
upstream call, then POST /v1/upstream/update with the status and the rate-limit headers the upstream answered.
Every process (in any language) using the same floodgate server, or floodgate servers sharing one Redis, shares
one budget, so together they take no 429.

    python3 upstream.py --floodgate http://127.0.0.1:8080 --url https://api.example.com/items \
        --bucket "GET /items" --provider discord --callers 8 --seconds 5

Prints one JSON line: {"ok": N, "rate_limited": N, "gave_up": N, "errors": N, "seconds": S}.
"""

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request


def post(base, path, body, token=None):
    """POSTs JSON to the floodgate server; returns the decoded answer."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=70) as res:
        return json.load(res)


def call_once(args, counts, lock):
    """acquire -> call -> update, once. Returns False when the bucket would not allow a call within max_wait_ms."""
    got = post(args.floodgate, "/v1/upstream/acquire",
               {"bucket": args.bucket, "provider": args.provider, "max_wait_ms": args.max_wait_ms}, args.token)
    if not got["go"]:
        with lock:
            counts["gave_up"] += 1
        time.sleep(min(got["wait_ms"], 1000) / 1000)
        return False
    sent = time.monotonic()
    try:
        with urllib.request.urlopen(args.url, timeout=30) as res:
            status, headers = res.status, dict(res.headers.items())
    except urllib.error.HTTPError as e:  # 4xx and 5xx still carry the headers the bucket needs
        status, headers = e.code, dict(e.headers.items())
    except OSError:
        # No answer, so nothing to report: the place is held only until the server's lease timeout.
        with lock:
            counts["errors"] += 1
        return True
    latency_ms = int((time.monotonic() - sent) * 1000)
    post(args.floodgate, "/v1/upstream/update",
         {"bucket": args.bucket, "provider": args.provider, "status": status, "headers": headers,
          "lease": got["lease"], "latency_ms": latency_ms}, args.token)
    with lock:
        counts["rate_limited" if status == 429 else "ok"] += 1
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--floodgate", default="http://127.0.0.1:8080", help="the floodgate server's HTTP base URL")
    p.add_argument("--token", default=None, help="bearer token, if the server has one")
    p.add_argument("--url", required=True, help="the upstream URL to GET")
    p.add_argument("--bucket", required=True, help='the route or bucket, e.g. "GET /items"')
    p.add_argument("--provider", default="discord", choices=["discord", "github", "ietf", "retry-after"])
    p.add_argument("--max-wait-ms", type=int, default=5000)
    p.add_argument("--callers", type=int, default=1, help="concurrent threads")
    p.add_argument("--seconds", type=float, default=0, help="keep calling this long (0: one call per caller)")
    args = p.parse_args()

    counts = {"ok": 0, "rate_limited": 0, "gave_up": 0, "errors": 0}
    lock = threading.Lock()
    start = time.monotonic()

    def caller():
        while True:
            call_once(args, counts, lock)
            if time.monotonic() - start >= args.seconds:
                return

    threads = [threading.Thread(target=caller) for _ in range(args.callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts["seconds"] = round(time.monotonic() - start, 3)
    print(json.dumps(counts))
    return 0 if counts["rate_limited"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
