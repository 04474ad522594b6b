-- ARGV: id, token, status, result_json, error_json, delay_ms, meta_json, keep_completed, release
-- Fenced: does nothing and returns 0 unless the job is active under `token`.
local id, token, status = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', KEYS[K_TOKEN], id) ~= token or redis.call('HGET', KEYS[K_STATUS], id) ~= 'active' then
  return 0
end
local now = now_ms()
redis.call('ZREM', KEYS[K_ACTIVE], id)
redis.call('HDEL', KEYS[K_TOKEN], id)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[K_META], id, ARGV[7]) end
local t = get_times(id)
if status == 'completed' then
  redis.call('HSET', KEYS[K_STATUS], id, 'completed')
  redis.call('HSET', KEYS[K_RESULT], id, ARGV[4])
  redis.call('HDEL', KEYS[K_ERROR], id)
  redis.call('ZADD', KEYS[K_DONE], now, id)
  set_times(id, {t[1], t[2], now, -1})
  trim_done(tonumber(ARGV[8]))
elseif status == 'failed' then
  redis.call('HSET', KEYS[K_STATUS], id, 'failed')
  redis.call('HSET', KEYS[K_ERROR], id, ARGV[5])
  redis.call('ZADD', KEYS[K_FAILED], now, id)
  set_times(id, {t[1], t[2], now, -1})
else -- back to the queue: a retry after delay_ms, or a release (attempt not counted)
  if ARGV[9] == '1' then
    redis.call('HINCRBY', KEYS[K_ATTEMPT], id, -1)
  else
    redis.call('HSET', KEYS[K_ERROR], id, ARGV[5])
  end
  local delay = tonumber(ARGV[6])
  if delay > 0 then
    redis.call('ZADD', KEYS[K_DELAYED], now + delay, id)
    redis.call('HSET', KEYS[K_STATUS], id, 'scheduled')
    set_times(id, {now + delay, -1, -1, -1})
  else
    make_ready(id)
    set_times(id, {now, -1, -1, -1})
    redis.call('LPUSH', KEYS[K_NOTIFY], 1)
  end
end
return 1
