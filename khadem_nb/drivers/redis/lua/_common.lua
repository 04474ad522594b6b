-- Shared by every script (prepended by the driver). KEYS follow one fixed layout, all under
-- the queue's hash tag, so every key a script touches is declared and in one cluster slot.
local K_SEQ, K_READY, K_DELAYED, K_ACTIVE, K_COMPLETED, K_FAILED, K_ALL = 1, 2, 3, 4, 5, 6, 7
local K_STATE, K_TOKEN, K_RESULT, K_ERROR, K_RECLAIMS, K_META = 8, 9, 10, 11, 12, 13
local K_KEYS, K_NOTIFY, K_SWEEP, K_WAITING, K_HANDOFF, K_LINE = 14, 15, 16, 17, 18, 19
local K_CANCELLED, K_UNIQUE, K_EXPIRING = 20, 21, 22
local K_LANE_OF, K_LANES, K_LANE_WAIT, K_LANE_HELD = 23, 24, 25, 26
local K_AWAITING, K_PAUSED, K_RULES = 27, 28, 29

-- Ready jobs: those of priority 0 (nearly all) wait in the K_LINE list, FIFO, where a batch is
-- one RPUSH; the others in the K_READY sorted set, scored -priority * 1e12 + seq, so scores
-- below 0 (priority > 0) are claimed before the line and scores above it (priority < 0) after.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A job is one field of the state hash: "status,attempt,priority,available,started,finished,
-- lease<TAB>data" (times in ms since the epoch, -1 for none; data, the JSON written at dispatch,
-- never changes). An enqueue writes one hash field per job, and a claim or a settle reads and
-- rewrites that one field.
local STATE_PATTERN = '^(%a+),(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+)\t(.*)$'

local function parse_state(raw)
  if not raw then return nil end
  local status, attempt, priority, available, started, finished, lease, data = string.match(raw, STATE_PATTERN)
  if not status then return nil end
  return {status = status, attempt = tonumber(attempt), priority = tonumber(priority),
          available = tonumber(available), started = tonumber(started),
          finished = tonumber(finished), lease = tonumber(lease), data = data}
end

-- what a job whose state field is missing or unreadable is taken to be: never claimed, priority
-- 0, no data (a worker still claims it and fails it with a clear error: nothing is dropped)
local function lost_state(now)
  return {status = 'queued', attempt = 0, priority = 0, available = now, started = -1,
          finished = -1, lease = -1, data = ''}
end

local function state_text(s)
  return s.status .. ',' .. s.attempt .. ',' .. s.priority .. ',' .. s.available .. ',' ..
    s.started .. ',' .. s.finished .. ',' .. s.lease .. '\t' .. s.data
end

local function get_state(id)
  return parse_state(redis.call('HGET', KEYS[K_STATE], id))
end

local function set_state(id, s)
  redis.call('HSET', KEYS[K_STATE], id, state_text(s))
end

-- The holder of a lock ("id|statuses that hold it|expiry ms (-1: none)") while the lock is
-- live (not expired, and its job exists in one of those statuses, or any status for '*', even
-- gone); nil for a dead lock.
local function live_holder(lock, now)
  local holder, holds, expires = string.match(lock, '^(.-)|(.-)|(%-?%d+)$')
  if not holder or (tonumber(expires) >= 0 and now >= tonumber(expires)) then return nil end
  if holds == '*' then return holder end
  local s = get_state(holder)
  if s and string.find(',' .. holds .. ',', ',' .. s.status .. ',', 1, true) then
    return holder
  end
  return nil
end

-- Lanes (flow control): a job with limits names its lane in K_LANE_OF. Ready, it waits in the
-- lane's own sorted set (the K_LANE_WAIT key name, ':', the lane), scored like K_READY; K_LANE_WAIT
-- scores each lane that has waiting jobs by its first one. K_LANES holds each lane's rule (JSON),
-- K_LANE_HELD how many of its jobs are held now; the starts of a rated lane's window are the
-- sorted set named K_LANES, ':', the lane, ':starts'. All share the queue's hash tag.
local function lane_key(lane)
  return KEYS[K_LANE_WAIT] .. ':' .. lane
end

local function starts_key(lane)
  return KEYS[K_LANES] .. ':' .. lane .. ':starts'
end

-- the lane's place among lanes: the score of its first waiting job (or gone, with none)
local function rank_lane(lane)
  local head = redis.call('ZRANGE', lane_key(lane), 0, 0, 'WITHSCORES')
  if head[2] then
    redis.call('ZADD', KEYS[K_LANE_WAIT], head[2], lane)
  else
    redis.call('ZREM', KEYS[K_LANE_WAIT], lane)
  end
end

-- a job of `score` joins the lane: the lane ranks no later than it (a fair lane ranked later
-- than its first job by its last turn, see reserve.lua, keeps that place for jobs behind it)
local function rank_at_most(lane, score)
  local rank = redis.call('ZSCORE', KEYS[K_LANE_WAIT], lane)
  if not rank or tonumber(rank) > score then redis.call('ZADD', KEYS[K_LANE_WAIT], score, lane) end
end

local function wait_in_lane(lane, id, score)
  redis.call('ZADD', lane_key(lane), score, id)
  rank_at_most(lane, score)
end

-- the lanes of parked jobs (reserve.lua): this, then the job name; they have no limits, so
-- their held jobs are not counted
local PARKED = 'parked\31'

local function counts_held(lane)
  return string.sub(lane, 1, #PARKED) ~= PARKED
end

-- a job of `lane` is no longer held (settled, cancelled, reclaimed): its slot is free
local function free_slot(lane)
  if not counts_held(lane) then return end
  if redis.call('HINCRBY', KEYS[K_LANE_HELD], lane, -1) <= 0 then
    redis.call('HDEL', KEYS[K_LANE_HELD], lane)
  end
end

-- ready again (a retry, a reclaim, a release, a due delayed job): at the back of its priority
local function make_ready(id, s)
  local lane = redis.call('HGET', KEYS[K_LANE_OF], id)
  if lane then
    wait_in_lane(lane, id, -s.priority * 1e12 + redis.call('INCR', KEYS[K_SEQ]))
  elseif s.priority == 0 then
    redis.call('RPUSH', KEYS[K_LINE], id)
  else
    redis.call('ZADD', KEYS[K_READY], -s.priority * 1e12 + redis.call('INCR', KEYS[K_SEQ]), id)
  end
  s.status = 'queued'
end

-- waiting again, unclaimed: in the delayed set until now + delay, or ready at once
local function wait_or_ready(id, s, now, delay)
  s.started, s.finished, s.lease = -1, -1, -1
  if delay > 0 then
    redis.call('ZADD', KEYS[K_DELAYED], now + delay, id)
    s.status, s.available = 'scheduled', now + delay
  else
    make_ready(id, s)
    s.available = now
  end
  set_state(id, s)
end

local function forget(id)
  for i = K_STATE, K_META do redis.call('HDEL', KEYS[i], id) end
  redis.call('HDEL', KEYS[K_LANE_OF], id)
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

-- a hand-off row (enqueue.lua): "claimed_at<TAB>id<TAB>token<TAB>data"
local function handoff_row(row)
  return string.match(row, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
end

-- job `id`'s state if it is still held under `token` (not settled, not reclaimed by the sweep)
local function still_held(id, token)
  if redis.call('HGET', KEYS[K_TOKEN], id) ~= token then return nil end
  local s = get_state(id)
  if s and s.status == 'active' then return s end
  return nil
end

-- Jobs that wait for others (dependencies): a waiting job is in K_AWAITING (scored by its
-- sequence number) with its state 'waiting'. The set named K_AWAITING, ':left:', the job holds
-- the parents it still waits for; the set K_AWAITING, ':children:', a parent holds its waiting
-- children as "child|on_upstream_failure". Parents and children share the queue's hash tag.
local function left_key(id)
  return KEYS[K_AWAITING] .. ':left:' .. id
end

local function children_key(id)
  return KEYS[K_AWAITING] .. ':children:' .. id
end

-- why a parent ends its child, as the child's error says it (status nil: the parent is gone)
local function upstream_reason(parent, status)
  if not status then return 'upstream job ' .. parent .. ' is gone' end
  if status == 'failed' then return 'upstream job ' .. parent .. ' failed' end
  return 'upstream job ' .. parent .. ' was cancelled'
end

-- a waiting job ended by a parent: cancelled, with the reason
local function stop_waiting(id, s, reason, now)
  s.status, s.finished = 'cancelled', now
  set_state(id, s)
  redis.call('ZREM', KEYS[K_AWAITING], id)
  redis.call('DEL', left_key(id))
  redis.call('HSET', KEYS[K_ERROR], id, cjson.encode({reason .. ' (was waiting)', false}))
  redis.call('ZADD', KEYS[K_CANCELLED], now, id)
end

-- Jobs `ended` ({{id, status}, ...}) just ended: each child waiting for one is cancelled (a
-- failed or cancelled parent, unless it runs anyway), or released when it was its last parent,
-- or waits on; a cancelled child's own children follow. Adds "id<TAB>cancelled" settle notices
-- to `heard`; returns how many children became ready.
local function upstream_ended(ended, now, heard)
  local released = 0
  while #ended > 0 do
    local parent, status = unpack(table.remove(ended))
    local key = children_key(parent)
    for _, member in ipairs(redis.call('SMEMBERS', key)) do
      -- a child's state (its data holds every parent id) is read only when it changes
      local child, policy = string.match(member, '^(.*)|(%a+)$')
      if child and redis.call('ZSCORE', KEYS[K_AWAITING], child) then
        if status ~= 'completed' and policy ~= 'run' then
          stop_waiting(child, get_state(child) or lost_state(now), upstream_reason(parent, status), now)
          heard[#heard + 1] = child .. '\tcancelled'
          ended[#ended + 1] = {child, 'cancelled'}
        else
          redis.call('SREM', left_key(child), parent)
          if redis.call('SCARD', left_key(child)) == 0 then
            local s = get_state(child) or lost_state(now)
            redis.call('ZREM', KEYS[K_AWAITING], child)
            wait_or_ready(child, s, now, math.max(0, s.available - now))
            released = released + 1
          end
        end
      end
    end
    redis.call('DEL', key)
  end
  return released
end
