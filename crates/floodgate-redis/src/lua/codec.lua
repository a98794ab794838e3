-- floodgate: the packed state of one policy, one field of the id's hash (field = the policy key).
-- Value: <kind><updated - EPOCH> <updated - created> <expiry - updated> <a> <b> <c> <d>, integers in base 36 (digits
-- 0-9a-z, a '-' before a negative one) separated by spaces, trailing absent values left out ('_' stands for an
-- absent one in the middle; a trailing 0 is left out too; '=' repeats the third, as a meter's level and unit often
-- do its expiry). The state number that is a time (a for 'w' and 's', b for 'm' and 'l') is written as
-- updated minus it, so a fixed window's state is about 26 bytes and the id's hash stays listpack-encoded (values
-- up to 64 bytes). A sliding log's c and d are run members ("<ms>" or "<ms>:<units>"), kept as they are.
local function fmt(x) return string.format('%.0f', x) end -- decimal, for the prelude and the log's members
local EPOCH = 1735689600000000 -- 2025-01-01 in µs: a time now takes 9 base-36 digits, not 10
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'
local function enc(x) -- an integer, |x| < 2^53, exactly
  local neg = x < 0
  if neg then x = -x end
  if x == 0 then return '0' end
  local out = {}
  while x > 0 do
    local d = x % 36
    out[#out + 1] = string.sub(B36, d + 1, d + 1)
    x = (x - d) / 36
  end
  local s = string.reverse(table.concat(out))
  if neg then return '-' .. s end
  return s
end
local function dec(s)
  if string.sub(s, 1, 1) == '-' then return -tonumber(string.sub(s, 2), 36) end
  return tonumber(s, 36)
end
local function time_slot(kind)
  if kind == 'm' or kind == 'l' then return 'b' end
  return 'a'
end
local SLOTS = {'a', 'b', 'c', 'd'}
local function pack(s)
  local up = tonumber(s.up)
  local tf = time_slot(s.k)
  local out = {s.k .. enc(up - EPOCH), enc(up - tonumber(s.cr)), enc(tonumber(s.e) - up)}
  local n = #out
  for _, f in ipairs(SLOTS) do
    local x = s[f]
    if f == 'd' and s.k ~= 'l' then x = nil end -- only a log has d (a log's left over by a change of algorithm)
    if not x then
      out[#out + 1] = '_'
    else
      if f == tf then
        x = enc(up - tonumber(x))
      elseif type(x) == 'number' or s.k ~= 'l' or (f ~= 'c' and f ~= 'd') then
        x = enc(tonumber(x) or 0)
      end
      if x == out[3] and x ~= '0' then x = '=' end
      out[#out + 1] = x
      if x ~= '0' then n = #out end
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
  local ok, up = pcall(dec, string.sub(p[1], 2))
  if not ok or not up then return nil end
  up = up + EPOCH
  local s = {k = k, up = up, cr = up - dec(p[2]), e = up + dec(p[3])}
  local tf = time_slot(k)
  for i, f in ipairs(SLOTS) do
    local x = p[3 + i]
    if x == '=' then x = p[3] end
    if x == nil and f ~= 'd' then x = '0' end
    if x ~= nil and x ~= '_' then
      if f == tf then
        s[f] = up - dec(x)
      elseif k == 'l' and (f == 'c' or f == 'd') then
        s[f] = x
      else
        s[f] = dec(x)
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
