-- wrk: POST /v1/hit {"id": "k<i>", "policy": "bench"}, i uniform in [0, VALUES) (VALUES=1: one hot id).
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "wrk-report.lua")
local values = tonumber(os.getenv("VALUES") or "1")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(42)
function request()
  local i = values > 1 and math.random(0, values - 1) or 0
  return wrk.format(nil, nil, nil, '{"id":"k' .. i .. '","policy":"bench"}')
end
