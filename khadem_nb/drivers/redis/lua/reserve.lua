-- ARGV: limit, lease_ms, token_prefix, max_reclaims, sweep_every_ms, lease_lost_error,
-- waiter ("lease_ms|worker", or '' for none), wait_ms.
-- Promotes due delayed jobs, reclaims expired leases (at most once per sweep_every_ms across
-- all workers, guarded by the lock key), takes jobs handed off to a worker that never popped
-- them (see enqueue.lua), then claims up to `limit` jobs in all, highest priority first, FIFO
-- within one (see make_ready in _common.lua). A waiter that got fewer than `limit` registers for hand-off for wait_ms (or
-- leaves K_WAITING when it will not wait). Returns {now, ms_to_next_due, then per job: id,
-- data, attempt, token, reclaims, meta, available}.
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()

local function register(claimed)
  if ARGV[7] == '' then return end
  if claimed < limit and tonumber(ARGV[8]) > 0 then
    redis.call('ZADD', KEYS[K_WAITING], now + tonumber(ARGV[8]), ARGV[7])
  else
    redis.call('ZREM', KEYS[K_WAITING], ARGV[7])
  end
end

local due = redis.call('ZRANGEBYSCORE', KEYS[K_DELAYED], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[K_DELAYED], id)
  local s = get_state(id) or lost_state(now)  -- its available time stays the one it was due at
  make_ready(id, s)
  set_state(id, s)
end

if redis.call('SET', KEYS[K_SWEEP], 1, 'NX', 'PX', tonumber(ARGV[5])) then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[K_ACTIVE], '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(expired) do
    redis.call('ZREM', KEYS[K_ACTIVE], id)
    redis.call('HDEL', KEYS[K_TOKEN], id)
    local reclaims = redis.call('HINCRBY', KEYS[K_RECLAIMS], id, 1)
    local s = get_state(id) or lost_state(now)
    if reclaims > tonumber(ARGV[4]) then
      redis.call('HSET', KEYS[K_ERROR], id, cjson.encode({string.format(ARGV[6], reclaims), false, 'lost'}))
      redis.call('ZADD', KEYS[K_FAILED], now, id)
      s.status, s.finished, s.lease = 'failed', now, -1
      set_state(id, s)
    else
      wait_or_ready(id, s, now, 0)
    end
  end
end

-- second value: ms until the next delayed job is due (-1: none), so an idle worker wakes then
local next_due = redis.call('ZRANGE', KEYS[K_DELAYED], 0, 0, 'WITHSCORES')
local out = {now, next_due[2] and math.max(0, tonumber(next_due[2]) - now) or -1}

-- handed-off rows still on the list: whole if the job is still active under the row's token
local rows = redis.call('LPOP', KEYS[K_HANDOFF], limit) or {}
for _, row in ipairs(rows) do
  local at, id, token, data = handoff_row(row)
  local s = still_held(id, token)
  if s then
    redis.call('ZADD', KEYS[K_ACTIVE], now + lease, id)
    s.started, s.lease = now, now + lease
    set_state(id, s)
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, data, s.attempt, token
    out[n + 5], out[n + 6], out[n + 7] = redis.call('HGET', KEYS[K_RECLAIMS], id) or 0, '{}', at
  end
end
local taken = (#out - 2) / 7
if taken >= limit then
  register(taken)
  return out
end

-- claim order: priority above 0 (scores below 0), then the line of priority 0, then below 0
local want = limit - taken
local ids = redis.call('ZRANGE', KEYS[K_READY], '-inf', '(0', 'BYSCORE', 'LIMIT', 0, want)
if #ids > 0 then redis.call('ZREM', KEYS[K_READY], unpack(ids)) end
if #ids < want then
  for _, id in ipairs(redis.call('LPOP', KEYS[K_LINE], want - #ids) or {}) do ids[#ids + 1] = id end
end
if #ids < want then
  local low = redis.call('ZPOPMIN', KEYS[K_READY], want - #ids)
  for i = 1, #low, 2 do ids[#ids + 1] = low[i] end
end
register(taken + #ids)
if #ids == 0 then return out end
local states = hmget(KEYS[K_STATE], ids)
local reclaims, meta = hmget(KEYS[K_RECLAIMS], ids), hmget(KEYS[K_META], ids)
local state_of, token_of, active = {}, {}, {}
for j, id in ipairs(ids) do
  -- a state that cannot be read still runs (the worker fails it if its data is bad too)
  local s = parse_state(states[j]) or lost_state(now)
  if s.status == 'queued' then  -- anything else is a stale entry, never claimed twice
    local token = ARGV[3] .. '-' .. j
    s.status, s.attempt, s.started, s.finished, s.lease = 'active', s.attempt + 1, now, -1, now + lease
    push2(state_of, id, state_text(s))
    push2(token_of, id, token)
    push2(active, now + lease, id)
    local n = #out
    out[n + 1] = id
    out[n + 2] = s.data
    out[n + 3] = s.attempt
    out[n + 4] = token
    out[n + 5] = reclaims[j] or 0
    out[n + 6] = meta[j] or '{}'
    out[n + 7] = s.available
  end
end
if #token_of == 0 then return out end
call_many('HSET', KEYS[K_STATE], state_of)
call_many('HSET', KEYS[K_TOKEN], token_of)
call_many('ZADD', KEYS[K_ACTIVE], active)
return out
