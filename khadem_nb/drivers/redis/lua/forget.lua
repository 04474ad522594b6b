-- ARGV: ids of jobs to delete if they are finished (completed, failed or cancelled); pending
-- and running jobs stay. Returns how many went.
local sets = {completed = K_COMPLETED, failed = K_FAILED, cancelled = K_CANCELLED}
local n = 0
for _, id in ipairs(ARGV) do
  local s = get_state(id)
  local set = s and sets[s.status]
  if set then
    redis.call('ZREM', KEYS[set], id)
    redis.call('ZREM', KEYS[K_EXPIRING], id)
    forget(id)
    n = n + 1
  end
end
return n
