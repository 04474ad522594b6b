-- ARGV: notify_cap, then per job 5 values: id, priority, delay_ms, data_json, sweep_key ('' if none)
-- One INCRBY numbers the whole batch; each hash and set is written with one variadic command.
local now = now_ms()
local count = (#ARGV - 1) / 5
if count == 0 then return now end
local first = redis.call('INCRBY', KEYS[K_SEQ], count) - count
local data, attempt, score, status, times = {}, {}, {}, {}, {}
local all, ready, delayed, sweep = {}, {}, {}, {}
for j = 1, count do
  local i = 2 + (j - 1) * 5
  local id, delay = ARGV[i], tonumber(ARGV[i + 2])
  local seq = first + j
  local s = -tonumber(ARGV[i + 1]) * 1e12 + seq
  push2(data, id, ARGV[i + 3])
  push2(attempt, id, 0)
  push2(score, id, s)
  push2(all, seq, id)
  if ARGV[i + 4] ~= '' then push2(sweep, ARGV[i + 4], id) end
  if delay > 0 then
    push2(delayed, now + delay, id)
    push2(status, id, 'scheduled')
    push2(times, id, (now + delay) .. ',-1,-1,-1')
  else
    push2(ready, s, id)
    push2(status, id, 'queued')
    push2(times, id, now .. ',-1,-1,-1')
  end
end
call_many('HSET', KEYS[K_DATA], data)
call_many('HSET', KEYS[K_ATTEMPT], attempt)
call_many('HSET', KEYS[K_SCORE], score)
call_many('HSET', KEYS[K_STATUS], status)
call_many('HSET', KEYS[K_TIMES], times)
call_many('ZADD', KEYS[K_ALL], all)
if #ready > 0 then call_many('ZADD', KEYS[K_READY], ready) end
if #delayed > 0 then call_many('ZADD', KEYS[K_DELAYED], delayed) end
if #sweep > 0 then call_many('HSET', KEYS[K_KEYS], sweep) end
redis.call('LPUSH', KEYS[K_NOTIFY], unpack({1, 1, 1, 1, 1, 1, 1, 1}, 1, math.min(8, count)))
redis.call('LTRIM', KEYS[K_NOTIFY], 0, tonumber(ARGV[1]) - 1)
return now
