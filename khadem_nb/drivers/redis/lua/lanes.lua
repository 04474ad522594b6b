-- ARGV: what, then its arguments. What the queue's lanes hold (see _common.lua):
-- 'waiting': the ids of every job waiting in a lane, lane by lane;
-- 'count': how many jobs wait in lanes;
-- 'use', then per lane: lane, window_ms (-1 without a rate): per lane, its held jobs and its
-- starts within the window.
local what = ARGV[1]
if what == 'use' then
  local now, out = now_ms(), {}
  for i = 2, #ARGV, 2 do
    local lane, window = ARGV[i], tonumber(ARGV[i + 1])
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[K_LANE_HELD], lane) or 0)
    out[#out + 1] = window < 0 and 0 or redis.call('ZCOUNT', starts_key(lane), '(' .. (now - window), '+inf')
  end
  return out
end
local out, n = {}, 0
for _, lane in ipairs(redis.call('ZRANGE', KEYS[K_LANE_WAIT], 0, -1)) do
  if what == 'count' then
    n = n + redis.call('ZCARD', lane_key(lane))
  else
    for _, id in ipairs(redis.call('ZRANGE', lane_key(lane), 0, -1)) do out[#out + 1] = id end
  end
end
if what == 'count' then return n end
return out
