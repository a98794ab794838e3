-- floodgate: delete every bucket of one id. KEYS[1] = the id's index; ARGV[1] = now (µs) or -1 for Redis TIME.
-- Returns how many of the deleted buckets were live. Every bucket shares the index's hash tag (one slot), and so
-- does a sliding log's run set: the bucket's key with the `}:` after the hash tag replaced by `}#`.
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = tonumber(ARGV[1])
if t < 0 then
  local tm = redis.call('TIME')
  t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
end
local deleted = 0
-- An index or bucket that holds another Redis type (see the prelude's wrongtype) is deleted like any other.
local members = {}
if redis.call('TYPE', KEYS[1])['ok'] == 'set' then members = redis.call('SMEMBERS', KEYS[1]) end
for _, k in ipairs(members) do
  local h = redis.pcall('HMGET', k, 'e', 'k', 'a', 'b', 'c')
  if h.err then h = {} end
  -- Live, and holding something (a bucket that another algorithm's call emptied, or whose log's runs have all
  -- left, holds nothing).
  local kind, a, b, c = h[2], h[3], h[4], h[5]
  local empty = (kind == 'w' and b == '0') or (kind == 's' and b == '0' and c == '0')
    or ((kind == 'm' or kind == 'l') and a == '0')
  if h[1] and tonumber(h[1]) > t and not empty then deleted = deleted + 1 end
  redis.call('DEL', k, (string.gsub(k, '}:', '}#', 1)))
end
redis.call('DEL', KEYS[1])
return deleted
