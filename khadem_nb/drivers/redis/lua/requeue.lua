-- ARGV: ids of failed jobs to put back with a fresh attempt budget. Returns how many moved.
local now = now_ms()
local n = 0
for _, id in ipairs(ARGV) do
  local s = get_state(id)
  if s and s.status == 'failed' then
    redis.call('ZREM', KEYS[K_FAILED], id)
    redis.call('HSET', KEYS[K_RECLAIMS], id, 0)
    s.attempt = 0
    wait_or_ready(id, s, now, 0)
    n = n + 1
  end
end
if n > 0 then redis.call('LPUSH', KEYS[K_NOTIFY], 1) end
return n
