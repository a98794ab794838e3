-- ARGV: prefix, route, lease_id, lease_key, remaining, limit, reset_after_us, retry_after_us, global,
--       bucket_key, latency_us, mapping_ttl_ms, tolerance_us, idle_ms   ('' where absent)
local route, lease_id, lease_key = ARGV[2], ARGV[3], ARGV[4]
local remaining, limit, reset_after, retry_after = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local global, bucket_key = ARGV[9] == '1', ARGV[10]
local lat, mapping_ttl, tol, idle = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
if lease_id ~= '' then
  redis.call('ZREM', P .. ':l:' .. lease_key, lease_id)
  if redis.call('GET', P .. ':p:' .. lease_key) == lease_id then redis.call('DEL', P .. ':p:' .. lease_key) end
end
local key
if bucket_key ~= '' then
  key = bucket_key
  redis.call('SET', P .. ':map:' .. route, key, 'PX', mapping_ttl)
elseif lease_id ~= '' then
  key = lease_key
else
  key = resolve(route)
end
local b = P .. ':b:' .. key
redis.call('SET', P .. ':g:lat', lat, 'PX', 3600000)
local function block(k, us)
  local m = ms(us)
  if redis.call('PTTL', k) < m then redis.call('SET', k, 1, 'PX', m) end
end
if retry_after ~= '' then
  if global then block(P .. ':g:ra', tonumber(retry_after) + lat) else block(P .. ':ra:' .. key, tonumber(retry_after) + lat) end
end
local inflight, known = settle(key)
if limit ~= '' then redis.call('HSET', b, 'limit', limit) end
-- An answer to a request granted before the current window was recorded is late: the window it counts in (if
-- not an earlier one) already counted that request in flight, so its remaining must not refill.
local late = known and lease_id ~= '' and tonumber(lease_id) <= tonumber(redis.call('HGET', b, 'wseq') or '0')
if remaining ~= '' and late then
  -- Nothing to record: the lease is handed back above.
elseif remaining ~= '' then
  local rem = tonumber(remaining)
  local wk = P .. ':w:' .. key
  local old = redis.call('PTTL', wk)
  local new = nil
  if reset_after ~= '' then new = ms(tonumber(reset_after) + lat) end
  local same = false
  if old > 0 then
    if new then same = math.abs(old - new) * 1000 <= tol else same = true end
  end
  if known and same and redis.call('HGET', b, 'unlimited') ~= '1' then
    local cur = tonumber(redis.call('HGET', b, 'remaining') or '0')
    redis.call('HSET', b, 'remaining', math.min(cur, rem))
    if new and new > old then redis.call('PEXPIRE', wk, new) end
  else
    redis.call('HSET', b, 'remaining', math.max(0, rem - inflight), 'wseq', redis.call('GET', P .. ':seq') or 0)
    if new then
      redis.call('SET', wk, 1, 'PX', new)
      redis.call('HSET', b, 'windowed', 1)
    else
      redis.call('DEL', wk)
      redis.call('HSET', b, 'windowed', 0)
    end
  end
  redis.call('HSET', b, 'known', 1, 'unlimited', 0)
  known = true
elseif retry_after == '' and not known then
  redis.call('HSET', b, 'known', 1, 'unlimited', 1, 'windowed', 0)
  known = true
end
redis.call('HSET', b, 'latency', lat)
touch(key, idle)
return info(key, inflight, known)
