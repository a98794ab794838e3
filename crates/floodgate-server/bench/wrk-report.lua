-- wrk: print one JSON line of results at the end (read by run.sh).
function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    '{"tool":"wrk","answered":%d,"errors":%d,"non_2xx":%d,"elapsed_s":%.4f,"rps":%.1f,' ..
    '"latency_us":{"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f,"mean":%.1f}}\n',
    summary.requests - errors, errors, e.status, secs, (summary.requests - errors) / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
