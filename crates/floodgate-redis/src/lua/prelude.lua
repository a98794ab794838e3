-- floodgate: shared prelude of the algorithm scripts.
-- KEYS[1] = the id's shard: a hash shared by the ids of one cluster slot, one field per counter (ARGV[7], see
-- key.rs; value = the packed state, see the codec). The key's TTL covers its longest-lived field; a field past its
-- own expiry is absent to the scripts, and such fields are pruned when the shard grows (see prune).
-- KEYS[2] = the id hash of the previous release (field = the policy key), KEYS[3], KEYS[4] = the per-bucket layout
-- before it: the bucket hash `<prefix>:{<id>}:<policy key>` and the id's index set `<prefix>:{<id>}`. Read when
-- the shard has no field for the counter, then retired. All share one cluster slot.
-- ARGV[1] = op: 'h' hit, 'f' force (inc), 's' set, 'i' inspect
-- ARGV[2] = cost, ARGV[3] = now in microseconds since the epoch, or -1 to use Redis TIME
-- ARGV[4] = keep: microseconds to keep a written bucket after its last write (at least)
-- ARGV[5] = milliseconds added to every TTL (slack for an injected clock that real time outruns)
-- ARGV[6] = the deadline: Redis TIME (µs) past which the caller has given up, or -1 for none. Past it the script
-- changes nothing and answers {'expired', Redis time, how late}, so a call answered as failed never counts later.
-- ARGV[7] = the counter's field in the shard, ARGV[8] = the policy key, ARGV[9..] = the policy
-- Every other reply gets Redis TIME (µs) appended (the store learns its clock's offset from it).
-- State: k = kind ('w' fixed, 's' sliding, 'm' meter, 'l' sliding log), a b c (d) = state,
-- cr = created, up = updated, e = when the state is empty again (the logical expiry, in the decision clock's
-- microseconds).
-- Every number stays an integer below 2^53, so doubles compute exactly what the Rust core computes in u64.
if redis.replicate_commands then pcall(redis.replicate_commands) end
local MAX = 9007199254740992 -- 2^53
local floor = math.floor

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

local key, id_hash, old_bucket, old_index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local field, policy_key = ARGV[7], ARGV[8]
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
-- A key of this id holding another Redis type (someone SET a string where the shard belongs): a clear
-- WRONGTYPE error naming the key. A log key of the wrong type gets a marker field in the shard (when that is a
-- hash, or absent), so delete_buckets of the id (which deletes the log of every field of the id, whatever its
-- type) clears it.
local function wrongtype(k, ty, want)
  if k ~= key then
    local it = redis.call('TYPE', key)['ok']
    if it == 'hash' or it == 'none' then
      if not redis.call('HGET', key, field) then redis.call('HSET', key, field, 'x') end
      if it == 'none' then redis.call('PEXPIRE', key, 86400000) end
    end
  end
  error({err = 'WRONGTYPE floodgate key ' .. k .. ' holds a ' .. ty .. ', not a ' .. want ..
    ' (delete_buckets of its id clears it)'})
end
local raw = redis.pcall('HGET', key, field)
if type(raw) == 'table' and raw.err then wrongtype(key, redis.call('TYPE', key)['ok'], 'hash') end
local s = unpack_state(raw)
-- h: k, a, b, c, created, updated, expiry, d (nil when absent).
local h = {}
-- Where the state was read from when not from the shard: 'id' (the id hash), 'bucket' (the per-bucket layout).
local legacy = false
if s == nil and not raw then
  -- The layouts of earlier releases (a rolling upgrade keeps their counts): the id hash, then the bucket hash.
  -- A key of another type there is ignored (delete_buckets of the id deletes it).
  local o = redis.pcall('HGET', id_hash, policy_key)
  if type(o) == 'string' then
    s = unpack_state(o)
    if s then legacy = 'id' end
  end
  if not s then
    o = redis.pcall('HMGET', old_bucket, 'k', 'a', 'b', 'c', 'cr', 'up', 'e', 'd')
    if not o.err and o[7] then
      h = o
      legacy = 'bucket'
    end
  end
end
if s then h = {s.k, s.a, s.b, s.c, s.cr, s.up, s.e, s.d} end
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
-- The state as written (a live or dead bucket's, or nothing).
local cur = {}
if h[7] then cur = {k = h[1], a = h[2], b = h[3], c = h[4], cr = h[5], up = h[6], e = h[7], d = h[8]} end

-- The state of an earlier layout, once it is in the shard (or dropped): deleted there.
local function retire()
  if legacy == 'id' then
    redis.call('HDEL', id_hash, policy_key)
  elseif legacy == 'bucket' then
    redis.call('DEL', old_bucket)
    redis.call('SREM', old_index, old_bucket)
  end
  legacy = false
end
-- Deletes the shard's fields whose state expired (before now less the TTL slack, as a key's TTL would), when the
-- shard has grown to its watermark (field ' ', at least 16), then sets the watermark to twice the fields kept: a
-- field costs O(1) to prune, amortized, and expired fields at most double a shard. Below 384 fields kept the
-- watermark stays at most 512, Redis's default listpack limit (hash-max-listpack-entries), so a shard of fewer
-- live fields stays compact.
local function prune()
  local n = redis.call('HLEN', key)
  if n < 16 then return end
  local w = tonumber(redis.call('HGET', key, ' ')) or 16
  if n < w then return end
  local all = redis.call('HGETALL', key)
  local cut = t - slack * 1000
  local kept = 0
  for i = 1, #all, 2 do
    local f = all[i]
    if f ~= ' ' then
      local st = unpack_state(all[i + 1])
      if st and st.e <= cut then
        redis.call('HDEL', key, f)
      else
        kept = kept + 1
      end
    end
  end
  w = math.max(16, 2 * kept)
  if kept < 384 and w > 512 then w = 512 end
  redis.call('HSET', key, ' ', w)
end
-- Writes the state with the changes in `f` (field name -> value); the key's TTL then covers `ttl` ms, or, if not
-- given, the state's expiry (a state moved from an earlier layout may be the first field of a new shard).
local function put(f, ttl)
  for n, v in pairs(f) do cur[n] = v end
  if redis.call('HSET', key, field, pack(cur)) == 1 then prune() end
  if not ttl and not legacy then return end
  retire()
  if not ttl then ttl = muldiv_ceil(math.max(tonumber(cur.e) - t, 1), 1, 1000) + slack end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
-- Drops the policy's state.
local function drop()
  if h[7] then
    redis.call('HDEL', key, field)
    retire()
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
    drop()
    return
  end
  local exp, ttl = expiry(reset)
  put({k = KIND, a = a, b = b, c = c, cr = created, up = t, e = exp}, ttl)
end

-- Another algorithm's live state under this key (a named policy whose algorithm changed) becomes this
-- algorithm's empty state, keeping the bucket's times and expiry, as in memory; a dead bucket is dropped.
local function discard()
  if live then
    put({k = KIND, a = 0, b = 0, c = 0})
  else
    drop()
  end
end

local function inspected(used, remaining, reset_after, next_window_after)
  -- The time of the inspection last: Rust adds reset_after to it (the sum can pass 2^53, where doubles round).
  return {used, remaining, reset_after, next_window_after, created, updated, t}
end
