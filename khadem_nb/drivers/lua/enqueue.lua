-- ARGV: notify_cap, then per job 5 values: id, priority, delay_ms, data_json, sweep_key ('' if none)
local now = now_ms()
local n = 0
for i = 2, #ARGV, 5 do
  local id, priority, delay = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local seq = redis.call('INCR', KEYS[K_SEQ])
  redis.call('HSET', KEYS[K_DATA], id, ARGV[i + 3])
  redis.call('HSET', KEYS[K_ATTEMPT], id, 0)
  redis.call('HSET', KEYS[K_SCORE], id, -priority * 1e12 + seq)
  redis.call('ZADD', KEYS[K_ALL], seq, id)
  if ARGV[i + 4] ~= '' then redis.call('HSET', KEYS[K_KEYS], ARGV[i + 4], id) end
  wait_or_ready(id, now, delay)
  n = n + 1
end
if n > 0 then
  redis.call('LPUSH', KEYS[K_NOTIFY], unpack({1, 1, 1, 1, 1, 1, 1, 1}, 1, math.min(8, n)))
  redis.call('LTRIM', KEYS[K_NOTIFY], 0, tonumber(ARGV[1]) - 1)
end
return now
