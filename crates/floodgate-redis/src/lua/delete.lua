-- floodgate: delete every bucket of one id. KEYS[1] = the id's hash (one field per policy, see the codec),
-- KEYS[2] = the id's index set of the per-bucket layout of earlier releases (its members are that layout's bucket hashes).
-- ARGV[1] = now (µs) or -1 for Redis TIME.
-- Returns how many of the deleted buckets were live. Every key shares the hash tag (one slot). A sliding log's run
-- set is `<KEYS[2]>#<policy key>`, in both layouts: the log of every field of the hash and every old bucket is
-- deleted (a missing one costs nothing), O(the id's buckets).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = tonumber(ARGV[1])
if t < 0 then
  local tm = redis.call('TIME')
  t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
end
local deleted = 0
local live = {}
-- A key that holds another Redis type (see the prelude's wrongtype) is deleted like any other.
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local f, s = all[i], unpack_state(all[i + 1])
    if s and s.e > t and holds(s.k, s.a, s.b, s.c) then
      deleted = deleted + 1
      live[f] = true
    end
    redis.call('DEL', KEYS[2] .. '#' .. f)
  end
end
redis.call('DEL', KEYS[1])
-- The old layout (written by a server not yet upgraded): a policy live in both counts once.
local members = {}
if redis.call('TYPE', KEYS[2])['ok'] == 'set' then members = redis.call('SMEMBERS', KEYS[2]) end
local tag = #KEYS[2] + 2 -- where the policy key starts in `<KEYS[2]>:<policy key>`
for _, k in ipairs(members) do
  local h = redis.pcall('HMGET', k, 'e', 'k', 'a', 'b', 'c')
  if h.err then h = {} end
  local policy = string.sub(k, tag)
  if h[1] and tonumber(h[1]) > t and holds(h[2], h[3], h[4], h[5]) and not live[policy] then
    deleted = deleted + 1
  end
  redis.call('DEL', k, KEYS[2] .. '#' .. policy)
end
redis.call('DEL', KEYS[2])
return deleted
