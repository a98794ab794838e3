-- Token bucket, leaky bucket and GCRA: one meter (crates/floodgate/src/algorithm/meter.rs).
-- ARGV[9] = unit, ARGV[10] = drain, ARGV[11] = burst. State: a = level, b = last, c = the unit it was written in.
local unit, drain, burst = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local cap = burst * unit

local function level_at(at)
  local level = sa
  if sc ~= unit and sc ~= 0 then
    if sa / sc * unit >= MAX / 2 then level = MAX else level = muldiv_ceil(sa, unit, sc) end
  end
  local elapsed = math.max(at - sb, 0)
  if elapsed * drain >= level then return 0 end
  return level - elapsed * drain
end
local function drain_time(excess)
  if excess <= 0 then return 0 end
  return muldiv_ceil(excess, 1, drain)
end
local function remaining(level)
  if level >= cap then return 0 end
  return muldiv(cap - level, 1, unit)
end

if op == 'i' then
  if not same then return false end
  local level = level_at(t)
  if level == 0 then return false end
  return inspected(muldiv_ceil(level, 1, unit), remaining(level), drain_time(level),
    drain_time(level + unit - cap))
end
local n = math.max(t, sb)
local level = level_at(n)
if op == 'h' and cost > burst then
  if not same then discard() end
  return {0, burst, remaining(level), drain_time(level), -1}
end
local need = math.max(cost, 1) * unit
local fits = level + need <= cap
local write = true
if op == 'h' then
  if fits and cost > 0 then level = level + need else write = false end
elseif op == 'f' then
  level = math.min(level + cost * unit, MAX)
else
  level = math.min(cost * unit, MAX)
end
local allowed = op == 's' or fits
if write then
  save(level, n, unit, n + drain_time(level))
elseif not same then
  discard()
end
local retry = -1
if not allowed then retry = drain_time(level + math.min(need, cap) - cap) end
return {allowed and 1 or 0, burst, remaining(level), drain_time(level), retry}
