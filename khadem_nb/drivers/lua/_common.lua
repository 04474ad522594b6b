-- Shared by every script (prepended by the driver). KEYS follow one fixed layout, all under
-- the queue's hash tag, so every key a script touches is declared and in one cluster slot.
local K_SEQ, K_READY, K_DELAYED, K_ACTIVE, K_DONE, K_FAILED, K_ALL = 1, 2, 3, 4, 5, 6, 7
local K_DATA, K_STATUS, K_ATTEMPT, K_TOKEN, K_TIMES, K_RESULT, K_ERROR = 8, 9, 10, 11, 12, 13, 14
local K_RECLAIMS, K_META, K_SCORE, K_KEYS, K_NOTIFY, K_LOCK = 15, 16, 17, 18, 19, 20
local K_WAITING, K_HANDOFF = 21, 22

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- times: "available,started,finished,lease" as one field per job
local function get_times(id)
  local raw = redis.call('HGET', KEYS[K_TIMES], id)
  if not raw then return {0, -1, -1, -1} end
  local out = {}
  for part in string.gmatch(raw, '([^,]+)') do out[#out + 1] = tonumber(part) end
  return out
end

local function set_times(id, t)
  redis.call('HSET', KEYS[K_TIMES], id, t[1] .. ',' .. t[2] .. ',' .. t[3] .. ',' .. t[4])
end

local function make_ready(id)
  redis.call('ZADD', KEYS[K_READY], redis.call('HGET', KEYS[K_SCORE], id), id)
  redis.call('HSET', KEYS[K_STATUS], id, 'queued')
end

-- waiting again: in the delayed set until now + delay, or ready at once
local function wait_or_ready(id, now, delay)
  if delay > 0 then
    redis.call('ZADD', KEYS[K_DELAYED], now + delay, id)
    redis.call('HSET', KEYS[K_STATUS], id, 'scheduled')
    set_times(id, {now + delay, -1, -1, -1})
  else
    make_ready(id)
    set_times(id, {now, -1, -1, -1})
  end
end

local function forget(id)
  for i = K_DATA, K_SCORE do redis.call('HDEL', KEYS[i], id) end
  redis.call('ZREM', KEYS[K_ALL], id)
end

-- retention of a set of finished jobs scored by finish time: at most `keep` of them (-1: no
-- limit) and none that finished `age_ms` or longer ago (-1: no limit); oldest forgotten first,
-- at most 1000 a call, so lowering a limit never blocks the server for long
local function trim(key, keep, age_ms, now)
  if keep >= 0 then
    local extra = redis.call('ZCARD', key) - keep
    if extra > 0 then
      local old = redis.call('ZPOPMIN', key, math.min(extra, 1000))
      for i = 1, #old, 2 do forget(old[i]) end
    end
  end
  if age_ms >= 0 then
    local old = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. (now - age_ms), 'LIMIT', 0, 1000)
    for _, id in ipairs(old) do
      redis.call('ZREM', key, id)
      forget(id)
    end
  end
end

-- Batching: a redis.call costs more than the work it does on one small field, so the hot
-- scripts gather a whole batch into flat argument lists and write each key with one
-- variadic command. Chunks of 4000 arguments stay within what Lua can unpack.
local function push2(list, a, b)
  local n = #list
  list[n + 1] = a
  list[n + 2] = b
end

local function call_many(command, key, args)
  for c = 1, #args, 4000 do
    redis.call(command, key, unpack(args, c, math.min(#args, c + 3999)))
  end
end

local function hmget(key, ids)
  local out = {}
  for c = 1, #ids, 4000 do
    local part = redis.call('HMGET', key, unpack(ids, c, math.min(#ids, c + 3999)))
    for _, v in ipairs(part) do out[#out + 1] = v end
  end
  return out
end

-- the available time at the head of a times field ('available,started,finished,lease')
local function available_of(raw)
  if not raw then return 0 end
  return tonumber(string.match(raw, '^([^,]+)'))
end

-- a hand-off row (enqueue.lua): "claimed_at<TAB>id<TAB>token<TAB>data"
local function handoff_row(row)
  return string.match(row, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
end

-- whether job `id` is still held under `token` (not settled, not reclaimed by the sweep)
local function still_held(id, token)
  return redis.call('HGET', KEYS[K_TOKEN], id) == token and redis.call('HGET', KEYS[K_STATUS], id) == 'active'
end
