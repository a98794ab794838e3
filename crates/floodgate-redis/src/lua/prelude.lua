-- floodgate: shared prelude of the algorithm scripts.
-- KEYS[1] = the bucket (a hash), KEYS[2] = the id's index (a set of its bucket keys, same hash tag).
-- ARGV[1] = op: 'h' hit, 'f' force (inc), 's' set, 'i' inspect
-- ARGV[2] = cost, ARGV[3] = now in microseconds since the epoch, or -1 to use Redis TIME
-- ARGV[4] = keep: microseconds to keep a written bucket after its last write (at least)
-- ARGV[5] = milliseconds added to every TTL (slack for an injected clock that real time outruns)
-- ARGV[6] = the deadline: Redis TIME (µs) past which the caller has given up, or -1 for none. Past it the script
-- changes nothing and answers {'expired', Redis time, how late}, so a call answered as failed never counts later.
-- ARGV[7..] = the policy
-- Every other reply gets Redis TIME (µs) appended (the store learns its clock's offset from it).
-- Bucket fields: k = kind ('w' fixed, 's' sliding, 'm' meter, 'l' sliding log), a b c (d) = state,
-- cr = created, up = updated, e = when the state is empty again (the logical expiry, in the decision clock's
-- microseconds).
-- Every number stays an integer below 2^53, so doubles compute exactly what the Rust core computes in u64.
if redis.replicate_commands then pcall(redis.replicate_commands) end
local MAX = 9007199254740992 -- 2^53
local floor = math.floor
local function fmt(x) return string.format('%.0f', x) end

-- muldiv:begin
-- floor(a * b / c) and the remainder, exactly, for integers a, b >= 0, 0 < c <= 2^53, result < 2^53.
local function muldiv(a, b, c)
  local p = a * b
  if p < MAX then
    local q = floor(p / c)
    local r = p - q * c
    while r < 0 do q = q - 1; r = r + c end
    while r >= c do q = q + 1; r = r - c end
    return q, r
  end
  -- Slow path, exact: long multiplication over the bits of b, every intermediate below 2^53.
  local qa = floor(a / c)
  local ra = a - qa * c
  while ra < 0 do qa = qa - 1; ra = ra + c end
  while ra >= c do qa = qa + 1; ra = ra - c end
  local bits, x = {}, b
  while x > 0 do
    local bit = x % 2
    bits[#bits + 1] = bit
    x = (x - bit) / 2
  end
  local q, r = 0, 0
  for i = #bits, 1, -1 do
    q = q * 2
    if r >= c - r then r = r - (c - r); q = q + 1 else r = r + r end
    if bits[i] == 1 then
      q = q + qa
      if r >= c - ra then r = r - (c - ra); q = q + 1 else r = r + ra end
    end
  end
  return q, r
end

-- muldiv:end
local function muldiv_ceil(a, b, c)
  local q, r = muldiv(a, b, c)
  if r > 0 then q = q + 1 end
  return q
end

local key, idx = KEYS[1], KEYS[2]
local op = ARGV[1]
local cost = tonumber(ARGV[2])
local rt
do
  local tm = redis.call('TIME')
  rt = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
end
local deadline = tonumber(ARGV[6])
if deadline >= 0 and rt > deadline then return {'expired', rt, rt - deadline} end
local t = tonumber(ARGV[3])
if t < 0 then t = rt end
local keep = tonumber(ARGV[4])
local slack = tonumber(ARGV[5])
-- A key of this id holding another Redis type (someone SET a string where a hash belongs): a clear WRONGTYPE
-- error naming the key, and nothing written but this: the bucket key joins the id's index (when the index is a
-- set, or absent), so delete_buckets of the id (which deletes every indexed key and its log, whatever their
-- types, and the index itself) clears it.
local function wrongtype(k, ty, want)
  local it = redis.call('TYPE', idx)['ok']
  if k ~= idx and (it == 'set' or it == 'none') then
    redis.call('SADD', idx, key)
    if it == 'none' then redis.call('PEXPIRE', idx, 86400000) end
  end
  error({err = 'WRONGTYPE floodgate key ' .. k .. ' holds a ' .. ty .. ', not a ' .. want ..
    ' (delete_buckets of its id clears it)'})
end
local h = redis.pcall('HMGET', key, 'k', 'a', 'b', 'c', 'cr', 'up', 'e', 'd')
if h.err then wrongtype(key, redis.call('TYPE', key)['ok'], 'hash') end
if not h[7] then
  -- A new bucket will be added to the index: the index must be a set (checked before anything is written).
  local it = redis.call('TYPE', idx)['ok']
  if it ~= 'set' and it ~= 'none' then wrongtype(idx, it, 'set') end
end
local live = h[7] and tonumber(h[7]) > t
local created, updated = t, t
local sa, sb, sc = 0, 0, 0
local same = false
if live then
  created, updated = tonumber(h[5]), tonumber(h[6])
  if h[1] == KIND then
    same = true
    sa, sb, sc = tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
  end
end

-- The logical expiry (µs) and the TTL (ms) of a bucket written now whose state empties at `reset` (> t).
local function expiry(reset)
  local exp = reset
  if t + keep > exp then exp = t + keep end
  return exp, muldiv_ceil(exp - t, 1, 1000) + slack
end

-- Writes the state (a, b, c) that empties at `reset`, or drops the bucket when it is already empty. Written
-- even when the state is unchanged (an inc of 0, a set to the same count): the bucket was updated, as in memory.
local function save(a, b, c, reset)
  if reset <= t then
    if h[7] then
      redis.call('DEL', key)
      redis.call('SREM', idx, key)
    end
    return
  end
  local exp, ttl = expiry(reset)
  redis.call('HSET', key, 'k', KIND, 'a', fmt(a), 'b', fmt(b), 'c', fmt(c), 'cr', fmt(created), 'up', fmt(t),
    'e', fmt(exp))
  redis.call('PEXPIRE', key, ttl)
  if not h[7] then redis.call('SADD', idx, key) end
  if redis.call('PTTL', idx) < ttl then redis.call('PEXPIRE', idx, ttl) end
end

-- Another algorithm's live state under this key (a named policy whose algorithm changed) becomes this
-- algorithm's empty state, keeping the bucket's times and expiry, as in memory; a dead bucket is dropped.
local function discard()
  if live then
    redis.call('HSET', key, 'k', KIND, 'a', '0', 'b', '0', 'c', '0')
  elseif h[7] then
    redis.call('DEL', key)
    redis.call('SREM', idx, key)
  end
end

local function inspected(used, remaining, reset_after, next_window_after)
  -- The time of the inspection last: Rust adds reset_after to it (the sum can pass 2^53, where doubles round).
  return {used, remaining, reset_after, next_window_after, created, updated, t}
end
