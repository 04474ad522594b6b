-- ARGV: waiter ("lease_ms|worker"). A worker stops waiting (paused or stopped): it leaves
-- K_WAITING, and if no other worker waits any more, the jobs still on K_HANDOFF go back to the
-- ready set uncounted (attempt given back, token dropped): nobody will pop them. Atomic, so a
-- dispatch that raced the leave either handed off before it (and the job comes back here) or
-- saw no waiter. Returns how many jobs came back.
local now = now_ms()
redis.call('ZREM', KEYS[K_WAITING], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[K_WAITING], '-inf', '(' .. now)
if redis.call('ZCARD', KEYS[K_WAITING]) > 0 then return 0 end
local rows = redis.call('LRANGE', KEYS[K_HANDOFF], 0, -1)
redis.call('DEL', KEYS[K_HANDOFF])
local back = 0
for _, row in ipairs(rows) do
  local at, id, token = handoff_row(row)
  local s = still_held(id, token)
  if s then
    redis.call('ZREM', KEYS[K_ACTIVE], id)
    redis.call('HDEL', KEYS[K_TOKEN], id)
    make_ready(id, s)
    s.attempt, s.available, s.started, s.finished, s.lease = math.max(0, s.attempt - 1), tonumber(at), -1, -1, -1
    set_state(id, s)
    back = back + 1
  end
end
if back > 0 then redis.call('LPUSH', KEYS[K_NOTIFY], 1) end
return back
