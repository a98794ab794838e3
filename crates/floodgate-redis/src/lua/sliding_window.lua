-- Sliding window (crates/floodgate/src/algorithm/sliding_window.rs). ARGV[9] = limit, ARGV[10] = window (µs).
-- State: a = current window start, b = current count, c = previous count.
-- With P = prev * (window - e), the Rust test `P + (cur + cost) * window <= limit * window` is exactly
-- `cur + cost + ceil(P / window) <= limit`, which keeps every number below 2^53.
local limit, window = tonumber(ARGV[9]), tonumber(ARGV[10])

local function counts(start)
  if sa == start then return sb, sc end
  if sa + window == start then return 0, sb end
  return 0, 0
end
local function faded(prev, e) -- ceil(prev * (window - e) / window)
  if prev == 0 then return 0 end
  return muldiv_ceil(prev, window - e, window)
end
local function room(cur, prev, e)
  if cur >= limit then return 0 end
  return math.max(limit - cur - faded(prev, e), 0)
end
local function reset_after(cur, prev, e)
  if cur > 0 then return 2 * window - e end
  if prev > 0 then return window - e end
  return 0
end
local function earliest(weight, rm) -- window - min(floor(rm * window / weight), window)
  if weight == 0 or rm >= weight then return 0 end
  local q = muldiv(rm, window, weight)
  return window - q
end

if op == 'i' then
  if not same then return false end
  local e = t % window
  local cur, prev = counts(t - e)
  if cur == 0 and prev == 0 then return false end
  return inspected(cur + faded(prev, e), room(cur, prev, e), reset_after(cur, prev, e), window - e)
end
local n = math.max(t, sa)
local e = n % window
local start = n - e
local cur, prev = counts(start)
if op == 'h' and cost > limit then
  if not same then discard() end
  return {0, limit, room(cur, prev, e), reset_after(cur, prev, e), -1}
end
local check = math.max(cost, 1)
local fits = cur < limit and cur + check + faded(prev, e) <= limit
local before_cur, before_prev = cur, prev
if op == 'h' then
  if fits then cur = cur + cost end
elseif op == 'f' then
  cur = math.min(cur + cost, MAX)
else
  cur, prev = math.min(cost, MAX), 0
end
local allowed = op == 's' or fits
if cur ~= before_cur or prev ~= before_prev or op ~= 'h' then
  local reset = 0
  if cur > 0 then reset = start + 2 * window elseif prev > 0 then reset = start + window end
  save(start, cur, prev, reset)
elseif not same then
  discard()
end
local retry = -1
if not allowed then
  local c = math.min(check, limit)
  if cur + c <= limit then
    retry = earliest(prev, limit - cur - c) - e
  else
    retry = (window - e) + earliest(cur, limit - c)
  end
end
return {allowed and 1 or 0, limit, room(cur, prev, e), reset_after(cur, prev, e), retry}
