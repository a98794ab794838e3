-- ARGV: prefix, route, exempt, lease_timeout_us, poll_us, global_limit (0: none), global_per_us, idle_ms
local route = ARGV[2]
local exempt = ARGV[3] == '1'
local lease_to = tonumber(ARGV[4])
local poll = tonumber(ARGV[5])
local glimit = tonumber(ARGV[6])
local gper = tonumber(ARGV[7])
local idle = tonumber(ARGV[8])
local key = resolve(route)
local b = P .. ':b:' .. key
local inflight, known = settle(key)
touch(key, idle)
local function wait(m)
  if m < 1 then m = 1 end
  return {0, m, key}
end
local ra = redis.call('PTTL', P .. ':ra:' .. key)
if ra > 0 then return wait(ra) end
local pioneer = not known
local unlimited = redis.call('HGET', b, 'unlimited') == '1'
if pioneer then
  local pt = redis.call('PTTL', P .. ':p:' .. key)
  if pt > 0 then return wait(math.min(pt, ms(poll))) end
elseif not unlimited and tonumber(redis.call('HGET', b, 'remaining') or '0') <= 0 then
  local wt = redis.call('PTTL', P .. ':w:' .. key)
  if wt <= 0 then wt = ms(poll) end
  return wait(wt)
end
local gk = P .. ':g:log'
local span = 0
if not exempt then
  local gra = redis.call('PTTL', P .. ':g:ra')
  if gra > 0 then return wait(gra) end
  if glimit > 0 then
    span = gper + tonumber(redis.call('GET', P .. ':g:lat') or '0')
    redis.call('ZREMRANGEBYSCORE', gk, '-inf', now - span)
    if redis.call('ZCARD', gk) >= glimit then
      local oldest = redis.call('ZRANGE', gk, 0, 0, 'WITHSCORES')
      return wait(ms(tonumber(oldest[2]) + span - now))
    end
  end
end
local id = redis.call('INCR', P .. ':seq')
if not exempt and glimit > 0 then
  redis.call('ZADD', gk, now, id)
  redis.call('PEXPIRE', gk, ms(span) + 1000)
end
local lk = P .. ':l:' .. key
redis.call('ZADD', lk, now + lease_to, id)
-- Kept as long as the bucket, so that an expired lease is found (and counted) by the next call.
redis.call('PEXPIRE', lk, math.max(ms(lease_to) + 1000, idle))
if pioneer then
  redis.call('SET', P .. ':p:' .. key, id, 'PX', ms(lease_to))
elseif not unlimited then
  redis.call('HINCRBY', b, 'remaining', -1)
end
return {1, id, key}
