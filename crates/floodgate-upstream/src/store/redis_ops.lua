-- ARGV: prefix, op, route-or-key, a, b, c, idle_ms
-- op: lookup | update (a = remaining) | update_full (a = remaining, b = reset_after_us, c = latency_us)
--     | release (route-or-key = lease key, a = lease id) | cleanup (route-or-key = bucket key, a = age_us)
--     | expired (the count of leases found expired)
local op, name, a, bb, c, idle = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if op == 'release' then
  redis.call('ZREM', P .. ':l:' .. name, a)
  if redis.call('GET', P .. ':p:' .. name) == a then redis.call('DEL', P .. ':p:' .. name) end
  return 1
end
if op == 'expired' then
  -- Leases found expired so far (each is counted when a call next settles its bucket).
  return tonumber(redis.call('GET', P .. ':expired') or '0')
end
if op == 'cleanup' then
  local b = P .. ':b:' .. name
  local inflight = settle(name)
  local touched = tonumber(redis.call('HGET', b, 'touched') or '0')
  if inflight == 0 and now - touched >= tonumber(a) then
    redis.call('DEL', b, P .. ':w:' .. name, P .. ':ra:' .. name, P .. ':l:' .. name, P .. ':p:' .. name)
    return 1
  end
  return 0
end
local key = resolve(name)
local b = P .. ':b:' .. key
if op == 'lookup' then
  if redis.call('EXISTS', b) == 0 then return false end
  local inflight, known = settle(key)
  return info(key, inflight, known)
end
local inflight, known = settle(key)
redis.call('HSET', b, 'known', 1, 'remaining', a, 'unlimited', 0)
if op == 'update_full' then
  redis.call('SET', P .. ':w:' .. key, 1, 'PX', ms(tonumber(bb) + tonumber(c)))
  redis.call('HSET', b, 'windowed', 1, 'latency', c)
end
touch(key, idle)
return 1
