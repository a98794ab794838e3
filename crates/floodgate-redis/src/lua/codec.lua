-- floodgate: the packed state of one counter, one field of its shard (see key.rs; the id hash of the previous
-- release holds the same values).
-- Value: MessagePack (Redis's C cmsgpack), a sequence of up to 8 objects: <kind> <updated - EPOCH>
-- <updated - created> <expiry - updated> <a> <b> <c> <d>. cmsgpack writes an integral number as the smallest
-- MessagePack integer (1 byte up to 127, 5 up to 2^32, 9 beyond), so a fixed window's state is 22 to 26 bytes
-- and the shard stays listpack-encoded (values up to 64 bytes). The kind is a number
-- (1 'w', 2 's', 3 'm', 4 'l': one byte). An absent value in the middle is written as false; trailing absent
-- values and a trailing 0 are left out (a, b and c read back as 0, d as absent); true repeats the third number
-- (as a meter's level and unit often do its expiry). The state number that is a time (a for 'w' and 's', b for
-- 'm' and 'l') is written as updated minus it. A sliding log's c and d are run members ("<ms>" or
-- "<ms>:<units>"), kept as MessagePack strings.
local function fmt(x) return string.format('%.0f', x) end -- decimal, for the prelude and the log's members
local EPOCH = 1735689600000000 -- 2025-01-01 in µs
local mp_pack, mp_unpack, unpack_args = cmsgpack.pack, cmsgpack.unpack, unpack
local KIND_CODE = {w = 1, s = 2, m = 3, l = 4}
local KIND_OF = {'w', 's', 'm', 'l'}
local function time_slot(kind)
  if kind == 'm' or kind == 'l' then return 'b' end
  return 'a'
end
local SLOTS = {'a', 'b', 'c', 'd'}
local function pack(s)
  local up = tonumber(s.up)
  local k = s.k
  local tf = time_slot(k)
  local de = tonumber(s.e) - up
  local v = {KIND_CODE[k], up - EPOCH, up - tonumber(s.cr), de, false, false, false, false}
  local n = 4
  for i = 1, 4 do
    local f = SLOTS[i]
    local x = s[f]
    if f == 'd' and k ~= 'l' then x = nil end -- only a log has d (a log's left over by a change of algorithm)
    if x then
      if f == tf then
        x = up - tonumber(x)
      elseif type(x) == 'number' or k ~= 'l' or i < 3 then
        x = tonumber(x) or 0
      end
      if x ~= 0 and x ~= '0' then
        n = 4 + i
        if x == de then x = true end
      end
      v[4 + i] = x
    end
  end
  return mp_pack(unpack_args(v, 1, n))
end
-- One state number read back: nil when absent (false), 0 when left out (nil; d stays absent), nil and true when
-- it is not what a state holds.
local function slot(k, up, de, f, tf, x)
  if x == false then return nil end
  if x == nil then
    if f == 'd' then return nil end
    x = 0
  elseif x == true then
    x = de
  end
  if k == 'l' and (f == 'c' or f == 'd') then
    if type(x) == 'number' then return fmt(x) end
    if type(x) == 'string' then return x end
    return nil, true
  end
  if type(x) ~= 'number' then return nil, true end
  if f == tf then return up - x end
  return x
end
-- The state, or nil for a value that is not one (a marker written beside a log key of the wrong type).
local function unpack_state(v)
  if not v then return nil end
  local ok, kc, up, dc, de, a, b, c, d = pcall(mp_unpack, v)
  local k = ok and KIND_OF[kc]
  if not k or type(up) ~= 'number' or type(dc) ~= 'number' or type(de) ~= 'number' then return nil end
  up = up + EPOCH
  local tf = time_slot(k)
  local s = {k = k, up = up, cr = up - dc, e = up + de}
  local bad
  s.a, bad = slot(k, up, de, 'a', tf, a)
  if bad then return nil end
  s.b, bad = slot(k, up, de, 'b', tf, b)
  if bad then return nil end
  s.c, bad = slot(k, up, de, 'c', tf, c)
  if bad then return nil end
  s.d, bad = slot(k, up, de, 'd', tf, d)
  if bad then return nil end
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
