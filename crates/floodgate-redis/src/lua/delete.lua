-- floodgate: delete every bucket of one id. KEYS[1] = the id's shard (a hash shared by the ids of one cluster
-- slot; the id's fields start with ARGV[2], its field id and a space), KEYS[2] = the id hash of the previous
-- release (field = the policy key), KEYS[3] = the id's index set of the per-bucket layout before it (its members
-- are that layout's bucket hashes). ARGV[1] = now (µs) or -1 for Redis TIME.
-- Returns how many of the deleted buckets were live. Every key shares one slot. A sliding log's run set is
-- `<KEYS[3]>#<policy key>`, in every layout: the log of every deleted field and old bucket is deleted (a missing
-- one costs nothing). O(the shard's fields) to find the id's, then O(the id's buckets).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = tonumber(ARGV[1])
if t < 0 then
  local tm = redis.call('TIME')
  t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
end
local deleted = 0
local live = {}
-- The policy key of a field's policy part (key.rs `field`): byte 1, an algorithm's letter and the key after
-- `<algorithm>:` without its `us`; byte 2 and a name; or a name.
local ALGORITHM = {w = 'fixed_window', s = 'sliding_window', t = 'token_bucket', k = 'leaky_bucket', g = 'gcra',
  l = 'sliding_log'}
local function policy_of(part)
  local b = string.byte(part, 1)
  if b == 1 then
    local letter, lw, tail = string.match(part, '^\1(%a)(%d+/%d+)(.*)$')
    if letter and ALGORITHM[letter] then return ALGORITHM[letter] .. ':' .. lw .. 'us' .. tail end
    return part
  end
  if b == 2 then return string.sub(part, 2) end
  return part
end
local function count(policy, s)
  if s and s.e > t and holds(s.k, s.a, s.b, s.c) and not live[policy] then
    deleted = deleted + 1
    live[policy] = true
  end
end
-- A key that holds another Redis type (see the prelude's wrongtype) is deleted like any other.
local ty = redis.call('TYPE', KEYS[1])['ok']
if ty == 'hash' then
  local pre = ARGV[2]
  local n = #pre
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, n) == pre then
      local policy = policy_of(string.sub(f, n + 1))
      count(policy, unpack_state(all[i + 1]))
      redis.call('HDEL', KEYS[1], f)
      redis.call('DEL', KEYS[3] .. '#' .. policy)
    end
  end
elseif ty ~= 'none' then
  redis.call('DEL', KEYS[1])
end
-- The layouts of earlier releases (written by a server not yet upgraded): a policy live in two counts once.
if redis.call('TYPE', KEYS[2])['ok'] == 'hash' then
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local f = all[i]
    count(f, unpack_state(all[i + 1]))
    redis.call('DEL', KEYS[3] .. '#' .. f)
  end
end
redis.call('DEL', KEYS[2])
local members = {}
if redis.call('TYPE', KEYS[3])['ok'] == 'set' then members = redis.call('SMEMBERS', KEYS[3]) end
local tag = #KEYS[3] + 2 -- where the policy key starts in `<KEYS[3]>:<policy key>`
for _, k in ipairs(members) do
  local h = redis.pcall('HMGET', k, 'e', 'k', 'a', 'b', 'c')
  if h.err then h = {} end
  local policy = string.sub(k, tag)
  if h[1] then count(policy, {e = tonumber(h[1]), k = h[2], a = h[3], b = h[4], c = h[5]}) end
  redis.call('DEL', k, KEYS[3] .. '#' .. policy)
end
redis.call('DEL', KEYS[3])
return deleted
