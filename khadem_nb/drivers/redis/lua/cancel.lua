-- ARGV: reason, then job ids. Cancels each job that is waiting, queued, scheduled or active, in one
-- step against claims (scripts run one at a time): the state becomes 'cancelled', the job
-- leaves its ready, delayed or active set for K_CANCELLED, and its error says the reason and
-- the status it had. A pending job never starts. A job handed off (enqueue.lua) but not yet
-- popped by its worker is taken back from K_HANDOFF and counts as pending. A running job keeps
-- its token, so its holder's next settle stops it (settle.lua), and its holder is told on
-- the abort channel; the heartbeat tells it again if that message is missed. Waiters hear
-- of every cancel on the settle channel.
-- Returns, per id: 0 left as it was, 1 cancelled before it started, 2 cancelled while running.
local now = now_ms()
local reason = ARGV[1]
local out, aborts, from_line, heard, ended = {}, {}, {}, {}, {}
local handoff = nil  -- id -> row on K_HANDOFF, read once when a running job is cancelled

local function handed_off(id)
  if not handoff then
    handoff = {}
    for _, row in ipairs(redis.call('LRANGE', KEYS[K_HANDOFF], 0, -1)) do
      local _, row_id = handoff_row(row)
      if row_id then handoff[row_id] = row end
    end
  end
  local row = handoff[id]
  if row and redis.call('LREM', KEYS[K_HANDOFF], 1, row) == 1 then return true end
  return false
end

for i = 2, #ARGV do
  local id = ARGV[i]
  local s = get_state(id)
  local was = s and s.status
  local started = 1
  local lane = was and redis.call('HGET', KEYS[K_LANE_OF], id)
  if was == 'queued' and lane then
    redis.call('ZREM', lane_key(lane), id)
    rank_lane(lane)
  elseif was == 'queued' then
    if s.priority == 0 then from_line[id] = true else redis.call('ZREM', KEYS[K_READY], id) end
  elseif was == 'scheduled' then
    redis.call('ZREM', KEYS[K_DELAYED], id)
    if s.available <= now then was = 'queued' end
  elseif was == 'waiting' then
    redis.call('ZREM', KEYS[K_AWAITING], id)
    redis.call('DEL', left_key(id))
  elseif was == 'active' then
    redis.call('ZREM', KEYS[K_ACTIVE], id)
    if handed_off(id) then
      redis.call('HDEL', KEYS[K_TOKEN], id)
      s.attempt = math.max(0, s.attempt - 1)
      was = 'queued'
    else
      started = 2
      aborts[#aborts + 1] = id
      if lane then free_slot(lane) end  -- its slot is free at once, as it stops
    end
  else
    was = nil
  end
  if was then
    s.status, s.finished, s.lease = 'cancelled', now, -1
    set_state(id, s)
    redis.call('HSET', KEYS[K_ERROR], id, cjson.encode({reason .. ' (was ' .. was .. ')', false}))
    redis.call('ZADD', KEYS[K_CANCELLED], now, id)
    heard[#heard + 1] = id .. '\tcancelled'
    ended[#ended + 1] = {id, 'cancelled'}
    out[#out + 1] = started
  else
    out[#out + 1] = 0
  end
end

-- priority 0 jobs wait in the K_LINE list: a few are removed one by one, many in one pass
local n = 0
for _ in pairs(from_line) do n = n + 1 end
if n > 0 and n <= 16 then
  for id in pairs(from_line) do redis.call('LREM', KEYS[K_LINE], 1, id) end
elseif n > 0 then
  local kept = {}
  for _, id in ipairs(redis.call('LRANGE', KEYS[K_LINE], 0, -1)) do
    if not from_line[id] then kept[#kept + 1] = id end
  end
  redis.call('DEL', KEYS[K_LINE])
  if #kept > 0 then call_many('RPUSH', KEYS[K_LINE], kept) end
end

if #ended > 0 and redis.call('EXISTS', KEYS[K_AWAITING]) == 1
    and upstream_ended(ended, now, heard) > 0 then
  redis.call('LPUSH', KEYS[K_NOTIFY], 1)
end
if #heard > 0 then redis.call('PUBLISH', KEYS[K_NOTIFY] .. ':settled', table.concat(heard, '\n')) end
if #aborts > 0 then redis.call('PUBLISH', KEYS[K_NOTIFY] .. ':abort', table.concat(aborts, '\n')) end
return out
