-- ARGV: keep_completed, then 8 values per job: id, token, status, result_json, error_json,
-- delay_ms, meta_json, release ('1' gives the job back without counting the attempt).
-- Fenced: a job is changed only if it is active under its token. Returns 1/0 per job.
local now = now_ms()
local keep = tonumber(ARGV[1])
local notify = false

local function settle(i)
  local id, token, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HGET', KEYS[K_TOKEN], id) ~= token or redis.call('HGET', KEYS[K_STATUS], id) ~= 'active' then
    return 0
  end
  redis.call('ZREM', KEYS[K_ACTIVE], id)
  redis.call('HDEL', KEYS[K_TOKEN], id)
  if ARGV[i + 6] ~= '' then redis.call('HSET', KEYS[K_META], id, ARGV[i + 6]) end
  local t = get_times(id)
  if status == 'completed' then
    redis.call('HSET', KEYS[K_STATUS], id, 'completed')
    redis.call('HSET', KEYS[K_RESULT], id, ARGV[i + 3])
    redis.call('HDEL', KEYS[K_ERROR], id)
    redis.call('ZADD', KEYS[K_DONE], now, id)
    set_times(id, {t[1], t[2], now, -1})
  elseif status == 'failed' then
    redis.call('HSET', KEYS[K_STATUS], id, 'failed')
    redis.call('HSET', KEYS[K_ERROR], id, ARGV[i + 4])
    redis.call('ZADD', KEYS[K_FAILED], now, id)
    set_times(id, {t[1], t[2], now, -1})
  else -- back to the queue: a retry after delay_ms, or a release (attempt not counted)
    if ARGV[i + 7] == '1' then
      redis.call('HINCRBY', KEYS[K_ATTEMPT], id, -1)
    else
      redis.call('HSET', KEYS[K_ERROR], id, ARGV[i + 4])
    end
    local delay = tonumber(ARGV[i + 5])
    wait_or_ready(id, now, delay)
    notify = notify or delay <= 0
  end
  redis.call('PUBLISH', KEYS[K_NOTIFY] .. ':settled', id)
  return 1
end

local out = {}
for i = 2, #ARGV, 8 do out[#out + 1] = settle(i) end
trim_done(keep)
if notify then redis.call('LPUSH', KEYS[K_NOTIFY], 1) end
return out
