-- Sliding log (crates/floodgate/src/algorithm/sliding_log.rs). ARGV[9] = limit, ARGV[10] = window (µs).
-- KEYS[5] = the log, a sorted set of runs: score = the run's time in whole ms (a hit at `now` µs is logged at
-- ceil(now / 1000)), member = "<ms>" for a run of one unit or "<ms>:<units>". Hits of one ms merge into one run.
-- A run at ms counts while now < ms * 1000 + window.
-- Bucket fields: a = units in the log, b = the latest time seen (µs: a clock that steps back stands still there),
-- c = the newest run's member, d = the oldest run's member (both meaningless when a = 0).
-- The units in one log stay far below 2^53 (at most limit + 2^20 per forced call).
local limit, window = tonumber(ARGV[9]), tonumber(ARGV[10])
local log = KEYS[5]
do
  local lt = redis.call('TYPE', log)['ok']
  if lt ~= 'zset' and lt ~= 'none' then wrongtype(log, lt, 'sorted set') end
end
local RUN = 1048575 -- sliding_log::MAX_RUN_UNITS: a forced cost counts as at most this many units

local function parse(m) -- a run's member: its ms and units
  local i = string.find(m, ':', 1, true)
  if i then return tonumber(string.sub(m, 1, i - 1)), tonumber(string.sub(m, i + 1)) end
  return tonumber(m), 1
end
local function member(ms, units)
  if units == 1 then return fmt(ms) end
  return fmt(ms) .. ':' .. fmt(units)
end

local total, last = 0, 0
local newest, oldest
local new_ms, new_units, old_ms, old_units = 0, 0, 0, 0
if same then
  total, last = sa, sb
  if total > 0 then
    newest, oldest = h[4], h[8]
    new_ms, new_units = parse(newest)
    old_ms, old_units = parse(oldest)
  end
end
local n = math.max(t, last)
-- Runs at ms <= cut have left the window at n.
local cut = -1
if n >= window then cut = muldiv(n - window, 1, 1000) end
local function leaves(ms) return ms * 1000 + window - n end -- µs from n until a counted run leaves

-- Calls f(ms, units) on the runs, oldest first, until it returns true; returns that run's member and rank.
local function walk(f)
  local pos, batch = 0, 16
  while true do
    local runs = redis.call('ZRANGE', log, pos, pos + batch - 1)
    for i, m in ipairs(runs) do
      local at, u = parse(m)
      if f(at, u) then return m, pos + i - 1 end
    end
    if #runs < batch then return nil, pos + #runs end
    pos = pos + batch
    if batch < 1024 then batch = batch * 2 end
  end
end

if op == 'i' then
  if total == 0 or new_ms <= cut then return false end
  local used, first = total, old_ms
  if old_ms <= cut then
    walk(function(at, u)
      if at > cut then first = at; return true end
      used = used - u
      return false
    end)
  end
  return inspected(used, math.max(limit - used, 0), leaves(new_ms), leaves(first))
end

-- Drop the runs that have left.
local pruned = false
if total > 0 and old_ms <= cut then
  pruned = true
  if new_ms <= cut then
    redis.call('DEL', log)
    total = 0
  else
    local m, rank = walk(function(at, u)
      if at > cut then return true end
      total = total - u
      return false
    end)
    redis.call('ZREMRANGEBYRANK', log, 0, rank - 1)
    oldest = m
    old_ms, old_units = parse(m)
  end
end

-- Logs `units` at n, rounded up to the ms; merges with the newest run if it is of the same ms. At `limit` runs
-- (only forced units get there) the newest run takes the units and moves to this ms, as in memory.
local function push(units)
  units = math.min(units, RUN)
  local ms = muldiv_ceil(n, 1, 1000)
  if total > 0 and new_ms ~= ms and redis.call('ZCARD', log) >= limit then
    local single = oldest == newest
    redis.call('ZREM', log, newest)
    local merged = math.min(new_units + units, RUN)
    total = total + merged - new_units
    new_ms, new_units = ms, merged
    newest = member(new_ms, new_units)
    redis.call('ZADD', log, fmt(new_ms), newest)
    if single then oldest, old_ms, old_units = newest, new_ms, new_units end
    return
  end
  if total > 0 and new_ms == ms then
    redis.call('ZREM', log, newest)
    new_units = new_units + units
  else
    if total == 0 then redis.call('DEL', log) end -- a new log: nothing stale may stay in it
    new_ms, new_units = ms, units
  end
  newest = member(new_ms, new_units)
  redis.call('ZADD', log, fmt(new_ms), newest)
  if total == 0 or old_ms == new_ms then oldest, old_ms, old_units = newest, new_ms, new_units end
  total = total + units
end

-- A call that logs nothing still moves the clock and the pruning forward (as the in-memory state does),
-- without changing the bucket's expiry. Another algorithm's live state, or a dead bucket, becomes an empty log
-- that stands still at n, as in memory (a dead one is created again now).
local function keep_state()
  if same then
    if total > 0 then
      if pruned or n > last then put({a = total, b = n, d = oldest}) end
    elseif pruned or n > last then
      put({a = 0, b = n})
    end
  elseif h[7] then
    put({k = KIND, a = 0, b = n, cr = created})
  end
end

local function reset_after()
  if total > 0 then return leaves(new_ms) end
  return 0
end

if op == 'h' and cost > limit then
  keep_state()
  return {0, limit, math.max(limit - total, 0), reset_after(), -1}
end
local check = math.max(cost, 1)
local fits = total + check <= limit
if op == 'h' then
  if fits and cost > 0 then push(cost) end
elseif op == 'f' then
  if cost > 0 then push(cost) end
else
  total = 0
  if cost > 0 then push(cost) end
end

if op ~= 'h' or (fits and cost > 0) then
  if total == 0 then
    redis.call('DEL', log)
    -- Empty. A bucket that exists is kept, as in memory, until `keep` has passed: a call from before now (a clock
    -- that stepped back) still stands still at n. A new one is not written.
    if h[7] then
      local exp, ttl = expiry(t)
      put({k = KIND, a = 0, b = n, cr = created, up = t, e = exp}, ttl)
    end
  else
    local exp, ttl = expiry(new_ms * 1000 + window)
    put({k = KIND, a = total, b = n, c = newest, d = oldest, cr = created, up = t, e = exp}, ttl)
    redis.call('PEXPIRE', log, ttl)
  end
else
  keep_state()
end

local allowed = op == 's' or fits
local retry = -1
if not allowed then
  -- Until the oldest runs holding the excess have left: the units left must drop to limit - c.
  local room = limit - math.min(check, limit)
  if total - old_units <= room then
    retry = leaves(old_ms)
  elseif room == 0 then
    retry = leaves(new_ms)
  else
    local left = total
    walk(function(at, u)
      left = left - u
      if left <= room then retry = leaves(at); return true end
      return false
    end)
  end
end
return {allowed and 1 or 0, limit, math.max(limit - total, 0), reset_after(), retry}
