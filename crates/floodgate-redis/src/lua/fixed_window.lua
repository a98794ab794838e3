-- Fixed window (crates/floodgate/src/algorithm/fixed_window.rs). ARGV[9] = limit, ARGV[10] = window (µs).
-- State: a = window start, b = count.
local limit, window = tonumber(ARGV[9]), tonumber(ARGV[10])
if op == 'i' then
  if not same then return false end
  local start = t - t % window
  local count = 0
  if sa == start then count = sb end
  if count == 0 then return false end
  local left = start + window - t
  return inspected(count, math.max(limit - count, 0), left, left)
end
local n = math.max(t, sa)
local start = n - n % window
local until_next = start + window - n
local count = 0
if sa == start then count = sb end
local check = math.max(cost, 1)
local fits = count + check <= limit
if op == 'h' then
  if cost > limit then
    local reset = 0
    if count > 0 then reset = until_next end
    if not same then discard() end
    return {0, limit, math.max(limit - count, 0), reset, -1}
  end
  if fits and cost > 0 then count = count + cost end
elseif op == 'f' then
  count = math.min(count + cost, MAX)
else
  count = math.min(cost, MAX)
end
local allowed = op == 's' or fits
if op ~= 'h' or (fits and cost > 0) then
  local reset = 0
  if count > 0 then reset = start + window end
  save(start, count, 0, reset)
elseif not same then
  discard()
end
local reset_after, retry = 0, -1
if count > 0 then reset_after = until_next end
if not allowed then retry = until_next end
return {allowed and 1 or 0, limit, math.max(limit - count, 0), reset_after, retry}
