-- ARGV: job ids. Returns, per id, its columns in the order of COLUMNS in redis.py (state
-- with data, token, result, error, reclaims, meta): one call and one reply instead of a
-- pipeline of six HMGETs.
local columns = {K_STATE, K_TOKEN, K_RESULT, K_ERROR, K_RECLAIMS, K_META}
local values = {}
for c, k in ipairs(columns) do values[c] = hmget(KEYS[k], ARGV) end
local out = {}
for j = 1, #ARGV do
  for c = 1, #columns do out[#out + 1] = values[c][j] end
end
return out
