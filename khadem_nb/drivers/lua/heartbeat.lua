-- ARGV: lease_ms, then pairs id, token. Extends each lease held under its token; 0 where lost.
local now = now_ms()
local lease = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[K_TOKEN], id) == ARGV[i + 1] and redis.call('ZSCORE', KEYS[K_ACTIVE], id) then
    redis.call('ZADD', KEYS[K_ACTIVE], 'XX', now + lease, id)
    local t = get_times(id)
    set_times(id, {t[1], t[2], t[3], now + lease})
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
