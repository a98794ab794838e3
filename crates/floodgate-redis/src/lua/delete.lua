-- floodgate: delete every bucket of one id. KEYS[1] = the id's index; ARGV[1] = now (µs) or -1 for Redis TIME.
-- Returns how many of the deleted buckets were live. Every bucket shares the index's hash tag (one slot).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = tonumber(ARGV[1])
if t < 0 then
  local tm = redis.call('TIME')
  t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
end
local deleted = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local e = redis.call('HGET', k, 'e')
  if e and tonumber(e) > t then deleted = deleted + 1 end
  redis.call('DEL', k)
end
redis.call('DEL', KEYS[1])
return deleted
