-- ARGV: lease_ms, then pairs id, token. Extends each lease held under its token; 0 where lost.
local now = now_ms()
local lease = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[K_TOKEN], id) == ARGV[i + 1] and redis.call('ZSCORE', KEYS[K_ACTIVE], id) then
    redis.call('ZADD', KEYS[K_ACTIVE], 'XX', now + lease, id)
    local s = get_state(id)
    if s then
      s.lease = now + lease
      set_state(id, s)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
