-- ARGV: notify_cap, the number of jobs, then the batch as one value: runs of jobs that share
-- their priority, delay, sweep key and lane, each run a header line "priority<TAB>delay_ms<TAB>
-- key_json<TAB>lane_json<TAB>n" (key_json empty for none; lane_json [lane, rule] or empty)
-- followed by n lines "id<TAB>data_json". A ready job with a lane waits in its lane, never
-- handed off (see _common.lua). Compact
-- JSON has no raw tab or newline. One value for the whole batch (the client packed a thousand
-- arguments more slowly than this script splits one), and a run's status text is built once,
-- so a job costs two finds and two subs here.
-- One INCRBY numbers the whole batch; each hash, set and list is written with one variadic
-- command.
-- Hand-off: a worker whose claim came back short registers in K_WAITING (member
-- "lease_ms|worker", scored by when its wait ends) and blocks on K_HANDOFF. While workers wait
-- and nothing else is ready, the batch's first ready jobs (highest priority, then FIFO) are
-- claimed here, one per waiting worker, and pushed on K_HANDOFF as "now<TAB>id<TAB>token<TAB>
-- data": the worker starts them without a claim round trip. A row nobody pops (the worker
-- stopped) is taken by the next reserve, or its lease expires and the sweep reclaims the job.
local now = now_ms()
local count, batch = tonumber(ARGV[2]), ARGV[3]
if count == 0 then return now end
-- A keyed dispatch (one job: a unique job, a schedule's slot) names its lock: ARGV[4] the
-- lock's field, ARGV[5] the lock to store, "id|statuses that hold it|expiry ms (-1: none)". A
-- live lock (see live_holder) stores nothing and returns the holder's id.
if ARGV[4] and ARGV[4] ~= '' then
  local lock = redis.call('HGET', KEYS[K_UNIQUE], ARGV[4])
  local holder = lock and live_holder(lock, now)
  if holder then return holder end
  redis.call('HSET', KEYS[K_UNIQUE], ARGV[4], ARGV[5])
end
-- Jobs with parents: ARGV[6], JSON {id: [on_upstream_failure, [parent ids]]}. Each is judged
-- against its parents here: a parent gone, or failed or cancelled (unless the job runs anyway),
-- cancels it; parents not ended yet make it wait (see _common.lua); else it is stored ready.
local kids = ARGV[6] and ARGV[6] ~= '' and cjson.decode(ARGV[6]) or nil

-- 'waiting' or 'cancelled' for a job with parents that does not start ready, its sets written
local function place_child(id, kid, seq, now)
  local policy, left = kid[1], {}
  for _, parent in ipairs(kid[2]) do
    local s = get_state(parent)
    local status = s and s.status
    if not s or ((status == 'failed' or status == 'cancelled') and policy ~= 'run') then
      redis.call('HSET', KEYS[K_ERROR], id, cjson.encode({upstream_reason(parent, status) .. ' (was waiting)', false}))
      redis.call('ZADD', KEYS[K_CANCELLED], now, id)
      return 'cancelled'
    elseif status ~= 'completed' and status ~= 'failed' and status ~= 'cancelled' then
      left[#left + 1] = parent
    end
  end
  if #left == 0 then return nil end
  call_many('SADD', left_key(id), left)
  for _, parent in ipairs(left) do redis.call('SADD', children_key(parent), id .. '|' .. policy) end
  redis.call('ZADD', KEYS[K_AWAITING], seq, id)
  return 'waiting'
end

local first = redis.call('INCRBY', KEYS[K_SEQ], count) - count
local find, sub = string.find, string.sub
local state, all = {}, {}
local line, ready, delayed, sweep, lane_of = {}, {}, {}, {}, {}
local pos, size, j = 1, #batch, 0
while j < count do
  local a = find(batch, '\t', pos, true)
  local b = find(batch, '\t', a + 1, true)
  local c = find(batch, '\t', b + 1, true)
  local d = find(batch, '\t', c + 1, true)
  local e = find(batch, '\n', d + 1, true)
  local priority, delay = tonumber(sub(batch, pos, a - 1)), tonumber(sub(batch, a + 1, b - 1))
  local key = c > b + 1 and cjson.decode(sub(batch, b + 1, c - 1)) or nil
  local lane, waiting = nil, {}
  if d > c + 1 then
    local named = cjson.decode(sub(batch, c + 1, d - 1))
    lane = named[1]
    redis.call('HSET', KEYS[K_LANES], lane, named[2])
  end
  c = d
  local head
  if delay > 0 then
    head = 'scheduled,0,' .. priority .. ',' .. (now + delay) .. ',-1,-1,-1\t'
  else
    head = 'queued,0,' .. priority .. ',' .. now .. ',-1,-1,-1\t'
  end
  pos = e + 1
  for _ = 1, tonumber(sub(batch, c + 1, e - 1)) do
    j = j + 1
    local t = find(batch, '\t', pos, true)
    e = find(batch, '\n', t + 1, true) or size + 1
    local id, i = sub(batch, pos, t - 1), 2 * j
    all[i - 1], all[i] = first + j, id
    state[i - 1], state[i] = id, head .. sub(batch, t + 1, e - 1)
    if lane then push2(lane_of, id, lane) end
    local held = kids and kids[id] and place_child(id, kids[id], first + j, now)
    if held then
      state[i] = held .. ',0,' .. priority .. ',' .. (now + delay) .. ',-1,' ..
        (held == 'cancelled' and now or -1) .. ',-1\t' .. sub(batch, t + 1, e - 1)
    elseif delay > 0 then
      push2(delayed, now + delay, id)
    elseif lane then
      push2(waiting, -priority * 1e12 + first + j, id)
    elseif priority == 0 then
      line[#line + 1] = id
    else
      push2(ready, -priority * 1e12 + first + j, id)
    end
    if key then push2(sweep, key, id) end
    pos = e + 1
  end
  if #waiting > 0 then
    call_many('ZADD', lane_key(lane), waiting)
    local low = waiting[1]
    for i = 3, #waiting, 2 do low = math.min(low, waiting[i]) end
    rank_at_most(lane, low)
  end
end

-- The batch's ready jobs in claim order: {score, id}, priority 0 scored by its sequence number.
local function in_claim_order()
  local seq_of, order = {}, {}
  for i = 1, #all, 2 do seq_of[all[i + 1]] = all[i] end
  for i = 1, #ready, 2 do order[#order + 1] = {ready[i], ready[i + 1]} end
  for _, id in ipairs(line) do order[#order + 1] = {seq_of[id], id} end
  table.sort(order, function(x, y) return x[1] < y[1] end)
  return order
end

local handed = 0
if #ready + #line > 0 and redis.call('ZCARD', KEYS[K_READY]) == 0
    and redis.call('LLEN', KEYS[K_LINE]) == 0 and redis.call('EXISTS', KEYS[K_PAUSED]) == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[K_WAITING], '-inf', '(' .. now)
  local waiters = redis.call('ZPOPMAX', KEYS[K_WAITING], #ready / 2 + #line)
  if #waiters > 0 then
    local order, state_of, rows, active, token_of = in_claim_order(), {}, {}, {}, {}
    for i = 1, #state, 2 do state_of[state[i]] = state[i + 1] end
    ready, line = {}, {}
    for n, entry in ipairs(order) do
      local score, id = entry[1], entry[2]
      if n <= #waiters / 2 then  -- later pairs for the same id overwrite the queued ones
        local lease = tonumber(string.match(waiters[2 * n - 1], '^(%d+)|'))
        local token = 'h' .. first .. '-' .. n
        local s = parse_state(state_of[id])
        s.status, s.attempt, s.started, s.lease = 'active', 1, now, now + lease
        push2(state, id, state_text(s))
        push2(active, now + lease, id)
        push2(token_of, id, token)
        rows[#rows + 1] = now .. '\t' .. id .. '\t' .. token .. '\t' .. s.data
        handed = handed + 1
      elseif score < 0 or score >= 1e12 then
        push2(ready, score, id)
      else
        line[#line + 1] = id
      end
    end
    call_many('HSET', KEYS[K_TOKEN], token_of)
    call_many('ZADD', KEYS[K_ACTIVE], active)
    call_many('RPUSH', KEYS[K_HANDOFF], rows)
  end
end
call_many('HSET', KEYS[K_STATE], state)
call_many('ZADD', KEYS[K_ALL], all)
if #line > 0 then call_many('RPUSH', KEYS[K_LINE], line) end
if #ready > 0 then call_many('ZADD', KEYS[K_READY], ready) end
if #delayed > 0 then call_many('ZADD', KEYS[K_DELAYED], delayed) end
if #sweep > 0 then call_many('HSET', KEYS[K_KEYS], sweep) end
if #lane_of > 0 then call_many('HSET', KEYS[K_LANE_OF], lane_of) end
if count > handed then
  redis.call('LPUSH', KEYS[K_NOTIFY], unpack({1, 1, 1, 1, 1, 1, 1, 1}, 1, math.min(8, count - handed)))
  redis.call('LTRIM', KEYS[K_NOTIFY], 0, tonumber(ARGV[1]) - 1)
end
return now
