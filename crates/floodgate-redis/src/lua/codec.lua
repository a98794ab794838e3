-- floodgate: the packed state of one policy, one field of the id's hash (field = the policy key).
-- Value: <kind><updated> <updated - created> <expiry - updated> <a> <b> <c> <d>, decimal integers separated by
-- spaces, trailing absent values left out ('_' stands for an absent one in the middle). The state number that is a
-- time (a for 'w' and 's', b for 'm' and 'l') is written as updated minus it, so a fixed window's state is about
-- 40 bytes and the id's hash stays listpack-encoded (values up to 64 bytes). A sliding log's c and d are run
-- members ("<ms>" or "<ms>:<units>"), kept as they are.
local function fmt(x) return string.format('%.0f', x) end
local function time_slot(kind)
  if kind == 'm' or kind == 'l' then return 'b' end
  return 'a'
end
local SLOTS = {'a', 'b', 'c', 'd'}
local function pack(s)
  local up = tonumber(s.up)
  local tf = time_slot(s.k)
  local out = {s.k .. fmt(up), fmt(up - tonumber(s.cr)), fmt(tonumber(s.e) - up)}
  local n = #out
  for _, f in ipairs(SLOTS) do
    local x = s[f]
    if not x then
      out[#out + 1] = '_'
    else
      if f == tf then x = fmt(up - tonumber(x)) elseif type(x) == 'number' then x = fmt(x) end
      out[#out + 1] = x
      n = #out
    end
  end
  return table.concat(out, ' ', 1, n)
end
-- The state, or nil for a value that is not one (a marker written beside a log key of the wrong type).
local function unpack_state(v)
  if not v then return nil end
  local p = {}
  for x in string.gmatch(v, '[^ ]+') do p[#p + 1] = x end
  if #p < 3 then return nil end
  local k = string.sub(p[1], 1, 1)
  local up = tonumber(string.sub(p[1], 2))
  if not up then return nil end
  local s = {k = k, up = up, cr = up - tonumber(p[2]), e = up + tonumber(p[3])}
  local tf = time_slot(k)
  for i, f in ipairs(SLOTS) do
    local x = p[3 + i]
    if x ~= nil and x ~= '_' then
      if f == tf then
        s[f] = up - tonumber(x)
      elseif k == 'l' and (f == 'c' or f == 'd') then
        s[f] = x
      else
        s[f] = tonumber(x)
      end
    end
  end
  return s
end
-- Holds something (a bucket that another algorithm's call emptied, or whose log's runs have all left, holds
-- nothing).
local function holds(kind, a, b, c)
  a, b, c = tonumber(a), tonumber(b), tonumber(c)
  if kind == 'w' then return b ~= 0 end
  if kind == 's' then return b ~= 0 or c ~= 0 end
  return a ~= 0
end
