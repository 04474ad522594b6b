-- ARGV: limit, lease_ms, token_prefix, max_reclaims, sweep_every_ms, lease_lost_error,
-- waiter ("lease_ms|worker", or '' for none), wait_ms, free (the worker's free resource units
-- as a JSON object, or '' for none), runs (what the worker runs: {"n": {name: true}, "s":
-- shipped code too}, or '' for anything).
-- Promotes due delayed jobs, reclaims expired leases (at most once per sweep_every_ms across
-- all workers, guarded by the lock key), takes jobs handed off to a worker that never popped
-- them (see enqueue.lua), then claims up to `limit` jobs in all: first those of lanes whose
-- rule lets them start now (at most LANES_LOOKED lanes, best first), then the others, highest
-- priority first, FIFO within one (see make_ready in _common.lua). A waiter that got fewer than `limit` registers for hand-off for wait_ms (or
-- leaves K_WAITING when it will not wait). Returns {now, ms_to_next_due, then per job: id,
-- data, attempt, token, reclaims, meta, available}.
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local LANES_LOOKED = 100
local PASSED_OVER = 1000  -- ready jobs a claim filtered by `runs` parks at most
local runs = ARGV[10] and ARGV[10] ~= '' and cjson.decode(ARGV[10]) or nil

-- whether the worker runs the job of state `s`, and else the job's name (read from the head
-- of its data: {"job":"<name>",...}); a job whose name does not read is taken, for the worker
-- to fail it with why
local function allowed(s)
  local name = string.match(s.data, '^{"job":"([^"\\]*)"')
  if not name then
    local ok, data = pcall(cjson.decode, s.data)
    name = ok and type(data) == 'table' and data.job or nil
    if type(name) ~= 'string' then return true end
  end
  if runs.n[name] then return true end
  if runs.s then
    local head = string.sub(s.data, 1, string.find(s.data, '"payload":', 1, true) or #s.data)
    if string.find(head, '"code":"[0-9a-f]+%.') then return true end
  end
  return false, name
end

-- a job the worker does not run moves out of the line into its name's parked lane, where the
-- workers that run it find it before the line (and none of them is held back by it)
local function park(id, name, score)
  local lane = PARKED .. name
  redis.call('HSET', KEYS[K_LANE_OF], id, lane)
  wait_in_lane(lane, id, score or redis.call('INCR', KEYS[K_SEQ]))
end

-- a lane this worker runs: one of parked jobs it runs, or one whose first job it runs
local function runs_lane(lane)
  if not runs then return true end
  if not counts_held(lane) then return runs.n[string.sub(lane, #PARKED + 1)] == true end
  local first = redis.call('ZRANGE', lane_key(lane), 0, 0)[1]
  local s = first and get_state(first)
  return not s or allowed(s)
end

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
    local lane = redis.call('HGET', KEYS[K_LANE_OF], id)
    if lane then free_slot(lane) end
    if reclaims > tonumber(ARGV[4]) then
      redis.call('HSET', KEYS[K_ERROR], id, cjson.encode({string.format(ARGV[6], reclaims), false, 'lost'}))
      redis.call('ZADD', KEYS[K_FAILED], now, id)
      s.status, s.finished, s.lease = 'failed', now, -1
      set_state(id, s)
      if redis.call('EXISTS', KEYS[K_AWAITING]) == 1 then
        local heard = {}
        upstream_ended({{id, 'failed'}}, now, heard)
        if #heard > 0 then redis.call('PUBLISH', KEYS[K_NOTIFY] .. ':settled', table.concat(heard, '\n')) end
      end
    else
      wait_or_ready(id, s, now, 0)
    end
  end
end

-- second value: ms until the next delayed job is due (-1: none), so an idle worker wakes then
local next_due = redis.call('ZRANGE', KEYS[K_DELAYED], 0, 0, 'WITHSCORES')
local out = {now, next_due[2] and math.max(0, tonumber(next_due[2]) - now) or -1}

-- a paused queue: nothing is claimed, and its workers wait without registering for hand-off
if redis.call('EXISTS', KEYS[K_PAUSED]) == 1 then
  redis.call('ZREM', KEYS[K_WAITING], ARGV[7])
  return out
end

-- handed-off rows still on the list: whole if the job is still active under the row's token
local rows = runs and {} or redis.call('LPOP', KEYS[K_HANDOFF], limit) or {}
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

local function decoded_rule(text)
  local ok, rule = pcall(cjson.decode, text)
  if ok and type(rule) == 'table' then return rule end
  return nil
end

-- whether a stored rule reads as flow.stored_rule reads it (its fair flag made a boolean)
local function sound(rule)
  if rule[1] ~= nil then return false end  -- an array, not a rule
  if rule.c ~= nil and type(rule.c) ~= 'number' then return false end
  local r = rule.r
  if r ~= nil and (type(r) ~= 'table' or type(r[1]) ~= 'number' or type(r[2]) ~= 'number') then return false end
  rule.f = rule.f ~= nil and rule.f ~= false and rule.f ~= 0 and rule.f ~= cjson.null
  return true
end

-- a lane's rule: its job kind's as stored in K_RULES (the code's rule now, for every lane of the
-- kind) with the units its jobs were dispatched with, else the one they were dispatched with; a
-- damaged one lets one job at a time start (as flow.rule_for). A unique key's, a schedule's and
-- a parked lane keep their own.
local function rule_of(lane)
  local dispatched = decoded_rule(redis.call('HGET', KEYS[K_LANES], lane) or '{}') or {c = 1}
  local own_rule = string.sub(lane, 1, 7) == 'unique\t' or string.sub(lane, 1, 9) == 'schedule\t'
  local stored = not own_rule and counts_held(lane) and
      redis.call('HGET', KEYS[K_RULES], string.match(lane, '^[^\t]*'))
  local rule = stored and decoded_rule(stored)
  if not rule or not sound(rule) then return dispatched end
  rule.u = dispatched.u
  return rule
end

local ids, lane_of, rule_of_lane, taken_of = {}, {}, {}, {}

-- how many jobs of `lane` may start now, counting those this claim took already; a lane held
-- back by its rate notes when it reopens
local function room_of(lane, rule, free, want)
  local room, mine = want, taken_of[lane] or 0
  if rule.c then
    room = math.min(room, rule.c - tonumber(redis.call('HGET', KEYS[K_LANE_HELD], lane) or 0) - mine)
  end
  for name, units in pairs(rule.u or {}) do room = math.min(room, math.floor((free[name] or 0) / units)) end
  if rule.r and room > 0 then
    local key = starts_key(lane)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - rule.r[2])
    local recent = redis.call('ZCARD', key) + mine
    room = math.min(room, rule.r[1] - recent)
    if room <= 0 then  -- the start whose window's end makes room (this claim's start now)
      local at, wait = recent - rule.r[1], rule.r[2]
      if at < recent - mine then
        wait = math.max(1, tonumber(redis.call('ZRANGE', key, at, at, 'WITHSCORES')[2]) + rule.r[2] - now)
      end
      if out[2] < 0 or wait < out[2] then out[2] = wait end
    end
  end
  return room
end

-- a fair lane that just had its turn goes behind every lane ranked now (its priority kept): the
-- next claim starts with the lanes served longest ago
local function rank_after_turn(lane)
  local head = redis.call('ZRANGE', lane_key(lane), 0, 0, 'WITHSCORES')
  if not head[2] then
    redis.call('ZREM', KEYS[K_LANE_WAIT], lane)
    return
  end
  local score = tonumber(head[2])
  redis.call('ZADD', KEYS[K_LANE_WAIT], score - score % 1e12 + redis.call('INCR', KEYS[K_SEQ]), lane)
end

-- claim up to `n` jobs of `lane` as its rule allows: how many it took
local function take_lane(lane, rule, n, free)
  local room = runs_lane(lane) and room_of(lane, rule, free, n) or 0
  if room <= 0 then return 0 end
  local got = redis.call('ZRANGE', lane_key(lane), 0, room - 1)
  if #got > 0 then redis.call('ZREM', lane_key(lane), unpack(got)) end
  if rule.f and #got > 0 then rank_after_turn(lane) else rank_lane(lane) end
  for _, id in ipairs(got) do
    ids[#ids + 1], lane_of[id] = id, lane
  end
  rule_of_lane[lane], taken_of[lane] = rule, (taken_of[lane] or 0) + #got
  for name, units in pairs(rule.u or {}) do free[name] = (free[name] or 0) - units * #got end
  return #got
end

-- claim order: lanes first (fair lanes after the others, a job each per turn, as
-- flow.claim_turns), then priority above 0 (scores below 0), the line of priority 0, and below 0
local want = limit - taken
if redis.call('EXISTS', KEYS[K_LANE_WAIT]) == 1 then
  local free = ARGV[9] ~= '' and cjson.decode(ARGV[9]) or {}
  local fair = {}
  for _, lane in ipairs(redis.call('ZRANGE', KEYS[K_LANE_WAIT], 0, LANES_LOOKED - 1)) do
    if #ids >= want then break end
    local rule = rule_of(lane)
    if rule.f then
      fair[#fair + 1] = {lane, rule}
    else
      take_lane(lane, rule, want - #ids, free)
    end
  end
  while #ids < want and #fair > 0 do
    local still = {}
    for _, pair in ipairs(fair) do
      if #ids >= want then break end
      if take_lane(pair[1], pair[2], #fair == 1 and want - #ids or 1, free) > 0 then still[#still + 1] = pair end
    end
    fair = still
  end
end

-- the next `n` ready jobs in claim order, taken off: {id, score} (score nil for the line's)
local function next_ready(n)
  local got = {}
  local high = redis.call('ZRANGE', KEYS[K_READY], '-inf', '(0', 'BYSCORE', 'LIMIT', 0, n, 'WITHSCORES')
  for i = 1, #high, 2 do got[#got + 1] = {high[i], tonumber(high[i + 1])} end
  if #high > 0 then
    local taken = {}
    for i = 1, #high, 2 do taken[#taken + 1] = high[i] end
    redis.call('ZREM', KEYS[K_READY], unpack(taken))
  end
  if #got < n then
    for _, id in ipairs(redis.call('LPOP', KEYS[K_LINE], n - #got) or {}) do got[#got + 1] = {id} end
  end
  if #got < n then
    local low = redis.call('ZPOPMIN', KEYS[K_READY], n - #got)
    for i = 1, #low, 2 do got[#got + 1] = {low[i], tonumber(low[i + 1])} end
  end
  return got
end

if runs then  -- only what the worker runs; what it passes over is parked, never put back in front
  local passed = 0
  while #ids < want and passed < PASSED_OVER do
    local got = next_ready(want - #ids)
    if #got == 0 then break end
    local got_ids = {}
    for j, pair in ipairs(got) do got_ids[j] = pair[1] end
    local states = hmget(KEYS[K_STATE], got_ids)
    for j, pair in ipairs(got) do
      local s = parse_state(states[j])
      local ok, name = true, nil
      if s and s.status == 'queued' then ok, name = allowed(s) end
      if ok then
        ids[#ids + 1] = pair[1]
      else
        park(pair[1], name, pair[2])
        passed = passed + 1
      end
    end
  end
else
  for _, pair in ipairs(next_ready(want - #ids)) do ids[#ids + 1] = pair[1] end
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
    local lane = lane_of[id]
    if lane then
      if counts_held(lane) then redis.call('HINCRBY', KEYS[K_LANE_HELD], lane, 1) end
      if rule_of_lane[lane].r then redis.call('ZADD', starts_key(lane), now, token) end
    end
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
