"""Floodgate's RLS v3 server driven by a client we did not write: envoy-data-plane (betterproto2-generated
Envoy protos) over grpclib.

Starts the given `floodgate` binary on free loopback ports with a directory of test configs, then checks a table
of request/answer cases drawn from envoyproxy/ratelimit's own tests (test/config/basic_config.yaml and friends,
test/service, test/integration), and a table of invalid configs that `floodgate check DIR` must refuse, naming
file, line and field. Prints one line per case and a closing `N passed, N failed`; exits 1 on any failure.

    python test_rls.py /path/to/floodgate
"""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
    RateLimitDescriptor,
    RateLimitDescriptorEntry,
    RateLimitDescriptorRateLimitOverride,
)
from envoy_data_plane.envoy.service.ratelimit.v3 import (
    RateLimitRequest,
    RateLimitResponseCode as Code,
    RateLimitResponseRateLimitUnit as Unit,
    RateLimitServiceAsyncStub,
)
from envoy_data_plane.envoy.type.v3 import RateLimitUnit

OK, OVER = Code.OK, Code.OVER_LIMIT
MAX = 2**32 - 1

# --- configs: one file per domain ------------------------------------------------------------------------------

CONFIGS = {
    # test/config/basic_config.yaml of the reference, as is.
    "basic.yaml": """
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit: {unit: second, requests_per_unit: 5}
      - key: subkey1
        value: subvalue1
        rate_limit: {unit: second, requests_per_unit: 10}
  - key: key2
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: key2
    value: value2
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: key2
    value: value3
  - key: key3
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: key4
    rate_limit: {unit: day, requests_per_unit: 1}
  - key: key5
    value: value5
    rate_limit: {unit: day, requests_per_unit: 15}
    descriptors:
      - key: subkey5
        value: subvalue5
        rate_limit: {unit: day, requests_per_unit: 25}
""",
    # wildcards and share_threshold (test/config/wildcard.yaml, share_threshold.yaml).
    "wildcard.yaml": """
domain: wildcard
descriptors:
  - key: wild
    value: foo*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: wild
    value: foo2
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: wild
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: shared
    value: files*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: nested
    value: a*
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 4}
""",
    # the rest: unlimited, 0, replaces, shadow_mode, quota_mode, metadata, detailed_metric, window.
    "special.yaml": """
domain: special
descriptors:
  - key: open
    rate_limit: {unlimited: true}
  - key: closed
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1, name: per_user}
  - key: plan
    value: premium
    rate_limit: {unit: hour, requests_per_unit: 3, name: premium, replaces: [{name: per_user}]}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: backend
    value: a
    quota_mode: true
    metadata: {backend: a}
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: backend
    value: b
    quota_mode: true
    metadata: {backend: b}
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: cost
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: client
    detailed_metric: true
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: half_minute
    rate_limit: {window: 30s, requests_per_unit: 2}
""",
}


def d(*entries, addend=None, limit=None):
    """A descriptor of (key, value) entries."""
    return RateLimitDescriptor(
        entries=[RateLimitDescriptorEntry(key=k, value=v) for k, v in entries], hits_addend=addend, limit=limit
    )


def req(domain, *descs, addend=0):
    return RateLimitRequest(domain=domain, descriptors=list(descs), hits_addend=addend)


def status(r, i=0):
    s = r.statuses[i]
    lim = s.current_limit
    return (s.code, lim.requests_per_unit if lim else None, lim.unit if lim else None, s.limit_remaining)


def struct_to_py(v):
    """A google.protobuf Struct/Value/ListValue as plain Python."""
    if v is None:
        return None
    if hasattr(v, "fields"):
        return {k: struct_to_py(x) for k, x in v.fields.items()}
    if hasattr(v, "values") and not callable(getattr(v, "values")):
        return [struct_to_py(x) for x in v.values]
    for kind in ("struct_value", "list_value", "string_value", "number_value", "bool_value"):
        x = getattr(v, kind, None)
        if x is not None:
            return struct_to_py(x) if kind in ("struct_value", "list_value") else x
    return None


def statuses(r):
    return [s.code for s in r.statuses]


# --- request/answer cases ---------------------------------------------------------------------------------------
# Each: (name, async fn(stub) -> None raising AssertionError). Counters are fresh per case (distinct values).


def eq(got, want, what=""):
    assert got == want, f"{what} got {got!r}, want {want!r}"


async def basic_levels(rls):
    # 2nd level key only: 5/second; its own value: 10/second (reference: TestBasicConfig).
    r = await rls.should_rate_limit(req("test-domain", d(("key1", "value1"), ("subkey1", "x1"))))
    eq(status(r), (OK, 5, Unit.SECOND, 4))
    r = await rls.should_rate_limit(req("test-domain", d(("key1", "value1"), ("subkey1", "subvalue1"))))
    eq(status(r), (OK, 10, Unit.SECOND, 9))
    # key2: default 20/minute, value2 30/minute, value3 exempt.
    r = await rls.should_rate_limit(req("test-domain", d(("key2", "k2a")), d(("key2", "value2")), d(("key2", "value3"))))
    eq([status(r, i) for i in range(3)], [(OK, 20, Unit.MINUTE, 19), (OK, 30, Unit.MINUTE, 29), (OK, None, None, 0)])
    eq(r.overall_code, OK)
    # key5/subkey5: nested key+value at both levels.
    r = await rls.should_rate_limit(req("test-domain", d(("key5", "value5"), ("subkey5", "subvalue5"))))
    eq(status(r), (OK, 25, Unit.DAY, 24))
    r = await rls.should_rate_limit(req("test-domain", d(("key5", "value5"))))
    eq(status(r), (OK, 15, Unit.DAY, 14))


async def no_limit_when_depth_differs(rls):
    # key1=value1 has no limit of its own; a deeper request than the config matches nothing.
    r = await rls.should_rate_limit(req("test-domain", d(("key1", "value1"))))
    eq(status(r), (OK, None, None, 0))
    r = await rls.should_rate_limit(req("test-domain", d(("key1", "value1"), ("subkey1", "x"), ("extra", "y"))))
    eq(status(r), (OK, None, None, 0))
    r = await rls.should_rate_limit(req("test-domain", d(("nokey", "x"))))
    eq(status(r), (OK, None, None, 0))


async def key_only_counts_each_value(rls):
    for value in ("v-a", "v-b"):
        r = await rls.should_rate_limit(req("test-domain", d(("key2", value))))
        eq(status(r), (OK, 20, Unit.MINUTE, 19), value)
    r = await rls.should_rate_limit(req("test-domain", d(("key2", "v-a"))))
    eq(status(r)[3], 18)


async def over_limit_then_stays(rls):
    # key3: 1 per hour (reference: TestOverLimit in the service tests).
    r = await rls.should_rate_limit(req("test-domain", d(("key3", "once"))))
    eq(status(r), (OK, 1, Unit.HOUR, 0))
    r = await rls.should_rate_limit(req("test-domain", d(("key3", "once"))))
    eq((r.overall_code, status(r)), (OVER, (OVER, 1, Unit.HOUR, 0)))
    assert r.statuses[0].duration_until_reset.total_seconds() <= 3600


async def several_descriptors_over_if_any(rls):
    r = await rls.should_rate_limit(req("test-domain", d(("key4", "x")), d(("key2", "x"))))
    eq((r.overall_code, statuses(r)), (OK, [OK, OK]))
    r = await rls.should_rate_limit(req("test-domain", d(("key4", "x")), d(("key2", "x"))))
    eq((r.overall_code, statuses(r)), (OVER, [OVER, OK]))
    eq(status(r, 1)[3], 19, "the request is denied as a whole: the other descriptor is not counted (the reference counts it: --reference-counting)")


async def time_left_is_never_zero(rls):
    # A check (hits_addend 0) of a fresh counter, and a descriptor beside one that denies the request, report the
    # time left in their window, as the reference does: never 0 while the window lives.
    r = await rls.should_rate_limit(req("test-domain", d(("key3", "checked"), addend=0)))
    eq(status(r), (OK, 1, Unit.HOUR, 1))
    left = r.statuses[0].duration_until_reset.total_seconds()
    assert 0 < left <= 3600, f"a check: {left} s"
    await rls.should_rate_limit(req("test-domain", d(("key4", "t"))))
    r = await rls.should_rate_limit(req("test-domain", d(("key4", "t")), d(("key2", "t"))))
    eq((r.overall_code, statuses(r)), (OVER, [OVER, OK]))
    left = r.statuses[1].duration_until_reset.total_seconds()
    assert 0 < left <= 60, f"beside a denial: {left} s"


async def wildcard_between_exact_and_key_only(rls):
    r = await rls.should_rate_limit(req("wildcard", d(("wild", "foo2")), d(("wild", "foo1")), d(("wild", "bar"))))
    eq([status(r, i)[1] for i in range(3)], [20, 2, 100])
    # foo1 and foo9 count apart under foo*.
    r = await rls.should_rate_limit(req("wildcard", d(("wild", "foo9"))))
    eq(status(r)[3], 1)


async def share_threshold_shares_one_counter(rls):
    for left, value in zip((2, 1, 0), ("files/a", "files/b", "files/c")):
        r = await rls.should_rate_limit(req("wildcard", d(("shared", value))))
        eq(status(r), (OK, 3, Unit.HOUR, left), value)
    r = await rls.should_rate_limit(req("wildcard", d(("shared", "files/d"))))
    eq(r.overall_code, OVER)


async def nested_under_wildcard(rls):
    r = await rls.should_rate_limit(req("wildcard", d(("nested", "abc"), ("user", "u"))))
    eq(status(r), (OK, 4, Unit.HOUR, 3))
    r = await rls.should_rate_limit(req("wildcard", d(("nested", "abc"))))
    eq(status(r), (OK, None, None, 0), "the wildcard rule has no limit")


async def unlimited_and_zero(rls):
    r = await rls.should_rate_limit(req("special", d(("open", "x")), d(("closed", "x"))))
    eq(r.overall_code, OVER)
    eq((r.statuses[0].code, r.statuses[0].limit_remaining, r.statuses[0].current_limit), (OK, MAX, None))
    eq(status(r, 1), (OVER, 0, Unit.SECOND, 0))


async def replaces_named_limit(rls):
    both = lambda: req("special", d(("user", "u1")), d(("plan", "premium")))
    for left in (2, 1, 0):
        r = await rls.should_rate_limit(both())
        eq((r.overall_code, status(r, 0), status(r, 1)[3]), (OK, (OK, None, None, 0), left))
    r = await rls.should_rate_limit(req("special", d(("user", "u1"))))
    eq(status(r), (OK, 1, Unit.HOUR, 0), "per_user counted nothing while replaced")


async def shadow_mode_answers_ok(rls):
    for _ in range(2):
        r = await rls.should_rate_limit(req("special", d(("shadow", "s"))))
    eq((r.overall_code, status(r)), (OK, (OK, 1, Unit.HOUR, 0)))


async def quota_mode(rls):
    both = lambda: req("special", d(("backend", "a")), d(("backend", "b")))
    r = await rls.should_rate_limit(req("special", d(("backend", "a"))))
    eq((r.overall_code, statuses(r)), (OK, [OK]))
    r = await rls.should_rate_limit(both())
    eq((r.overall_code, statuses(r)), (OK, [OVER, OK]), "one quota descriptor left: OK overall")
    md = struct_to_py(r.dynamic_metadata)
    eq(md["quotaModeEnabled"], True)
    eq(md["quotaModeViolations"], [0.0], "indices of the quota descriptors over")
    eq(md["descriptors"], [{"entries": ["backend=a"]}, {"entries": ["backend=b"]}])
    eq(md.get("backend"), "b", "the metadata of the rule under its limit only")
    r = await rls.should_rate_limit(both())
    eq((r.overall_code, statuses(r)), (OVER, [OVER, OVER]), "every quota descriptor over")


async def hits_addend(rls):
    r = await rls.should_rate_limit(req("special", d(("cost", "c1")), addend=4))
    eq(status(r)[3], 6)
    r = await rls.should_rate_limit(req("special", d(("cost", "c1"), addend=5), addend=4))
    eq(status(r)[3], 1, "the descriptor's own addend wins")
    r = await rls.should_rate_limit(req("special", d(("cost", "c1"), addend=2)))
    eq(status(r), (OVER, 10, Unit.HOUR, 1), "OVER_LIMIT with 1 left: the denied addend consumed nothing")
    r = await rls.should_rate_limit(req("special", d(("cost", "c1"))))
    eq(status(r), (OK, 10, Unit.HOUR, 0), "the denied addend consumed nothing")


async def limit_override(rls):
    o = RateLimitDescriptorRateLimitOverride(requests_per_unit=2, unit=RateLimitUnit.MINUTE)
    r = await rls.should_rate_limit(req("special", d(("cost", "o1"), limit=o)))
    eq(status(r), (OK, 2, Unit.MINUTE, 1))
    r = await rls.should_rate_limit(req("special", d(("unconfigured", "o1"), limit=o)))
    eq(status(r), (OK, 2, Unit.MINUTE, 1), "applies without a matching rule")


async def window_30s_reported_per_minute(rls):
    r = await rls.should_rate_limit(req("special", d(("half_minute", "x"))))
    eq(status(r), (OK, 4, Unit.MINUTE, 1))
    assert r.statuses[0].duration_until_reset.total_seconds() <= 30


async def unknown_domain_is_ok(rls):
    r = await rls.should_rate_limit(req("nobody", d(("k", "v")), d(("k", "w"))))
    eq((r.overall_code, statuses(r)), (OK, [OK, OK]))


async def invalid_requests(rls):
    for name, request in [
        ("empty domain", req("", d(("k", "v")))),
        ("no descriptors", req("test-domain")),
        ("descriptor without entries", req("test-domain", RateLimitDescriptor(entries=[]))),
    ]:
        try:
            await rls.should_rate_limit(request)
        except GRPCError as e:
            eq(e.status, Status.INVALID_ARGUMENT, name)
        else:
            raise AssertionError(f"{name}: answered, expected INVALID_ARGUMENT")


async def detailed_metric_in_prometheus(rls, http):
    for _ in range(6):
        await rls.should_rate_limit(req("special", d(("client", "acme"))))
    text = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    want = {
        "total_hits": 6,
        "within_limit": 5,
        "over_limit": 1,
    }
    for stat, n in want.items():
        line = f'floodgate_rls_rule_{stat}_total{{domain="special",key="special.client_acme"}} {n}'
        assert line in text, f"missing {line!r}"


CASES = [
    basic_levels,
    no_limit_when_depth_differs,
    key_only_counts_each_value,
    over_limit_then_stays,
    several_descriptors_over_if_any,
    time_left_is_never_zero,
    wildcard_between_exact_and_key_only,
    share_threshold_shares_one_counter,
    nested_under_wildcard,
    unlimited_and_zero,
    replaces_named_limit,
    shadow_mode_answers_ok,
    quota_mode,
    hits_addend,
    limit_override,
    window_30s_reported_per_minute,
    unknown_domain_is_ok,
    invalid_requests,
    detailed_metric_in_prometheus,
]

# --- invalid configs: (name, files, expected substrings of `floodgate check` output) -----------------------------

INVALID = [
    ("unknown key (misspelled_key.yaml)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    ratelimit: {unit: second, requests_per_unit: 1}\n"},
     ["a.yaml:4:5:", "descriptors[0].ratelimit: unknown field"]),
    ("unknown key in rate_limit", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n      burst_size: 3\n"},
     ["a.yaml:7:7:", "descriptors[0].rate_limit.burst_size: unknown field"]),
    ("unlimited beside a unit (unlimited_with_unit.yaml)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      unit: day\n"},
     ["a.yaml:6:13:", "descriptors[0].rate_limit.unit: not allowed beside `unlimited: true`"]),
    ("float requests_per_unit", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 2.5}\n"},
     ["a.yaml:4:", "descriptors[0].rate_limit.requests_per_unit: expected a whole number"]),
    ("bad unit", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n"},
     ["a.yaml:4:", "descriptors[0].rate_limit.unit: unknown unit"]),
    ("duplicate rule (duplicate_key.yaml)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    value: v\n  - key: k\n    value: v\n"},
     ["a.yaml:5:", "descriptors[1]: duplicate rule"]),
    ("empty key", {"a.yaml": "domain: d\ndescriptors:\n  - key: \"\"\n"},
     ["a.yaml:3:", "descriptors[0].key: must not be empty"]),
    ("replaces itself (replaces_self.yaml)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n      name: n\n      replaces: [{name: n}]\n"},
     ["a.yaml:8:", "rate_limit.replaces[0].name: a limit cannot replace itself"]),
    ("replaces empty (replaces_empty.yaml)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: [{name: \"\"}]}\n"},
     ["a.yaml:4:", "rate_limit.replaces[0].name: must not be empty"]),
    ("list of non-maps (non_map_list.yaml)", {"a.yaml": "domain: d\ndescriptors:\n  - a\n"},
     ["a.yaml:3:", "descriptors[0]: expected a mapping"]),
    ("zero unit_multiplier (zero_unit_multiplier.yaml)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, unit_multiplier: 0, requests_per_unit: 1}\n"},
     ["a.yaml:4:", "rate_limit.unit_multiplier: must be at least 1"]),
    ("share_threshold without a wildcard", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n"},
     ["a.yaml:5:", "descriptors[0].share_threshold: only allowed on a rule whose value holds a `*`"]),
    ("quota_mode not a boolean", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    quota_mode: maybe\n"},
     ["a.yaml:4:", "descriptors[0].quota_mode: expected true or false"]),
    ("metadata not a mapping", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    metadata: [a, b]\n"},
     ["a.yaml:4:", "descriptors[0].metadata: expected a mapping"]),
    ("empty domain", {"a.yaml": "domain: \"\"\n"}, ["a.yaml:1:", "domain: must not be empty"]),
    ("two files, one domain", {"a.yaml": "domain: d\n", "b.yaml": "domain: d\n"},
     ["b.yaml:1:", "domain: domain \"d\" is already defined in"]),
    # Empty values are reported on their own line, not the next token's.
    ("empty `- name:` in replaces", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n      name: n\n      replaces:\n        - name:\n  - key: j\n"},
     ["a.yaml:9:15:", "rate_limit.replaces[0].name: expected a string, found null"]),
    ("empty value at the end of a mapping", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      requests_per_unit: 1\n      unit:\n  - key: j\n"},
     ["a.yaml:6:11:", "descriptors[0].rate_limit.unit: expected a string, found null"]),
    ("empty item at the end of a list", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n  -\n"},
     ["a.yaml:4:3:", "descriptors[1]: expected a mapping, found null"]),
    ("empty value at the end of the file", {"a.yaml": "descriptors: []\ndomain:"},
     ["a.yaml:2:7:", "domain: expected a string, found null"]),
    ("nested unknown key", {"a.yaml": "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        colour: red\n"},
     ["a.yaml:6:9:", "descriptors[0].descriptors[0].colour: unknown field"]),
]

VALID = [
    ("metadata.yaml of the reference", {"a.yaml": "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    descriptors:\n      - key: subkey1\n        rate_limit:\n          unit: second\n          requests_per_unit: 5\n        metadata:\n          name: service_1\n  - key: key2\n    rate_limit: {unit: minute, requests_per_unit: 20}\n    metadata:\n      service_with_quota:\n        name: service_2\n"}),
    ("unit_multiplier.yaml of the reference", {"a.yaml": "domain: test-domain\ndescriptors:\n  - key: key1\n    rate_limit:\n      unit: minute\n      requests_per_unit: 20\n      unit_multiplier: 5\n"}),
    ("quota_mode, detailed_metric, value_to_metric", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    quota_mode: true\n    detailed_metric: true\n    value_to_metric: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n"}),
]


# What the reference's loader accepts: loads, with a warning naming file, line and field; `check --strict` refuses.
WARNED = [
    ("rate_limit without requests_per_unit (read as 0)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"},
     ["a.yaml:5:", "descriptors[0].rate_limit.requests_per_unit: missing: read as 0"]),
    ("requests_per_unit beside unlimited (ignored)", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      requests_per_unit: 5\n"},
     ["a.yaml:6:", "descriptors[0].rate_limit.requests_per_unit: ignored beside `unlimited: true`"]),
    ("YAML 1.1 booleans", {"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: yes\n    quota_mode: off\n    rate_limit: {unit: second, requests_per_unit: 1}\n"},
     ["a.yaml:4:", "descriptors[0].shadow_mode: `yes` read as true", "a.yaml:5:", "descriptors[0].quota_mode: `off` read as false"]),
]


def check_configs(binary):
    results = []
    for name, files, want in WARNED:
        with tempfile.TemporaryDirectory() as dir:
            for fname, text in files.items():
                with open(os.path.join(dir, fname), "w") as f:
                    f.write(text)
            try:
                p = subprocess.run([binary, "check", dir], capture_output=True, text=True, timeout=30)
                out = p.stdout + p.stderr
                eq(p.returncode, 0, f"exit code (output: {out!r})")
                for w in want:
                    assert w in out, f"{w!r} not in {out!r}"
                assert "warning: " in out, f"no warning in {out!r}"
                p = subprocess.run([binary, "check", "--strict", dir], capture_output=True, text=True, timeout=30)
                out = p.stdout + p.stderr
                eq(p.returncode, 1, f"--strict exit code (output: {out!r})")
                for w in want:
                    assert w in out, f"--strict: {w!r} not in {out!r}"
                results.append((f"config warns: {name}", None))
            except AssertionError as e:
                results.append((f"config warns: {name}", str(e)))
    for name, files, want in INVALID + [(n, f, None) for n, f in VALID]:
        with tempfile.TemporaryDirectory() as dir:
            for fname, text in files.items():
                with open(os.path.join(dir, fname), "w") as f:
                    f.write(text)
            p = subprocess.run([binary, "check", dir], capture_output=True, text=True, timeout=30)
            out = p.stdout + p.stderr
            try:
                if want is None:
                    eq(p.returncode, 0, f"exit code (output: {out!r})")
                else:
                    eq(p.returncode, 1, f"exit code (output: {out!r})")
                    for w in want:
                        assert w in out, f"{w!r} not in {out!r}"
                results.append((f"config: {name}", None))
            except AssertionError as e:
                results.append((f"config: {name}", str(e)))
    return results


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_cases(grpc_addr, http_addr):
    host, port = grpc_addr.split(":")
    results = []
    channel = Channel(host, int(port))
    try:
        rls = RateLimitServiceAsyncStub(channel)
        for case in CASES:
            try:
                if case is detailed_metric_in_prometheus:
                    await asyncio.wait_for(case(rls, http_addr), 10)
                else:
                    await asyncio.wait_for(case(rls), 10)
                results.append((case.__name__, None))
            except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
                results.append((case.__name__, f"{type(e).__name__}: {e}"))
    finally:
        channel.close()
    return results


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    binary = os.path.abspath(sys.argv[1])
    results = check_configs(binary)
    with tempfile.TemporaryDirectory() as dir:
        for fname, text in CONFIGS.items():
            with open(os.path.join(dir, fname), "w") as f:
                f.write(text)
        http, grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        log = open(os.path.join(dir, "serve.log"), "w")
        server = subprocess.Popen(
            [binary, "serve", "--config", dir, "--http", http, "--grpc", grpc, "--grpc-threads", "1",
             "--threads", "1", "--watch-secs", "0", "--response-dynamic-metadata"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    urllib.request.urlopen(f"http://{http}/healthz", timeout=1).read()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.flush()
                        print(open(os.path.join(dir, "serve.log")).read())
                        print("FAIL  the server did not start")
                        print("0 passed, 1 failed")
                        return 1
                    time.sleep(0.05)
            results += asyncio.run(run_cases(grpc, http))
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    failed = 0
    for name, err in results:
        if err is None:
            print(f"PASS  {name}")
        else:
            failed += 1
            print(f"FAIL  {name}: {err}")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
