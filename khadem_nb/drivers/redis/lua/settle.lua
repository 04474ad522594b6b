-- ARGV: retention (completed kept, completed max age ms, failed kept, failed max age ms; -1
-- for no limit), plain (how many plain completions come first, 3 values each: id,
-- token, result_json), then 7 values per other job: id, token, verb, result_json,
-- error_json, delay_ms, meta_json. The verb says what happened: 'complete', 'fail', 'retry'
-- (back to the queue after delay_ms, the error kept) or 'release' (given back untouched: the
-- attempt does not count).
-- Fenced: a job is changed only if it is active under its token; one cancelled while held
-- under it is stopped instead (it stays cancelled, and records when it stopped). Returns, per
-- job, 1 settled, 2 stopped, 0 left as it was.
-- Completions and failures of the batch are written with one variadic command per key; the
-- rarer retries and releases go one by one. One PUBLISH tells every settle, a line per job:
-- "id<TAB>status", plus "<TAB>result_json" for a completion whose result is small, so a waiter
-- neither reads the status again nor, for such a result, the record.
local NOTICE_RESULT_MAX = 1024  -- bytes of result JSON a settle notice carries
local now = now_ms()
local plain = tonumber(ARGV[5])
local ids, at = {}, {}  -- at[j]: where job j's values start in ARGV
for j = 1, plain do at[j] = 6 + (j - 1) * 3 end
for i = 6 + plain * 3, #ARGV, 7 do at[#at + 1] = i end
for j, i in ipairs(at) do ids[j] = ARGV[i] end
if #ids == 0 then return {} end
local tokens, states = hmget(KEYS[K_TOKEN], ids), hmget(KEYS[K_STATE], ids)
local out, seen, settled, heard, metas = {}, {}, {}, {}, {}
local finished, results, errors, done, failed, clear_error = {}, {}, {}, {}, {}, {}
local ended = {}  -- {id, status} of each job that ended, for the jobs waiting for it
local notify = false

local function finish(s, id, status)
  s.status, s.finished, s.lease = status, now, -1
  push2(finished, id, state_text(s))
  ended[#ended + 1] = {id, status}
end

local function give_back(i, id, s, verb)
  if verb == 'release' then
    s.attempt = math.max(0, s.attempt - 1)
  else
    redis.call('HSET', KEYS[K_ERROR], id, ARGV[i + 4])
  end
  local delay = tonumber(ARGV[i + 5])
  wait_or_ready(id, s, now, delay)
  notify = notify or delay <= 0
  return delay > 0 and 'scheduled' or 'queued'
end

for j, id in ipairs(ids) do
  local i = at[j]
  local s = not seen[id] and tokens[j] == ARGV[i + 1] and parse_state(states[j])
  if s and s.status == 'cancelled' then  -- cancelled while held: its holder has stopped it
    seen[id] = true
    out[j] = 2
    s.finished = now
    set_state(id, s)
    redis.call('HDEL', KEYS[K_TOKEN], id)
    if j > plain and ARGV[i + 6] ~= '' then redis.call('HSET', KEYS[K_META], id, ARGV[i + 6]) end
    heard[#heard + 1] = id .. '\tcancelled'
  elseif not s or s.status ~= 'active' then
    out[j] = 0
  else
    seen[id] = true
    out[j] = 1
    local verb, result = 'complete', ARGV[i + 2]
    if j > plain then
      verb, result = ARGV[i + 2], ARGV[i + 3]
      if ARGV[i + 6] ~= '' then push2(metas, id, ARGV[i + 6]) end
    end
    local state
    if verb == 'complete' then
      state = 'completed'
      finish(s, id, 'completed')
      push2(results, id, result)
      clear_error[#clear_error + 1] = id
      push2(done, now, id)
    elseif verb == 'fail' then
      state = 'failed'
      finish(s, id, 'failed')
      push2(errors, id, ARGV[i + 4])
      push2(failed, now, id)
    else -- 'retry' or 'release': back to the queue
      state = give_back(i, id, s, verb)
    end
    settled[#settled + 1] = id
    if state == 'completed' and #result <= NOTICE_RESULT_MAX then
      heard[#heard + 1] = id .. '\t' .. state .. '\t' .. result
    else
      heard[#heard + 1] = id .. '\t' .. state
    end
  end
end

if #ended > 0 and redis.call('EXISTS', KEYS[K_AWAITING]) == 1 then  -- jobs wait for others here
  notify = upstream_ended(ended, now, heard) > 0 or notify
end
if #heard > 0 then redis.call('PUBLISH', KEYS[K_NOTIFY] .. ':settled', table.concat(heard, '\n')) end
if #settled > 0 and redis.call('EXISTS', KEYS[K_LANE_OF]) == 1 then  -- each frees its lane's slot
  for _, lane in ipairs(hmget(KEYS[K_LANE_OF], settled)) do
    if lane then
      free_slot(lane)
      notify = true
    end
  end
end
if #settled > 0 then
  call_many('ZREM', KEYS[K_ACTIVE], settled)
  call_many('HDEL', KEYS[K_TOKEN], settled)
  if #metas > 0 then call_many('HSET', KEYS[K_META], metas) end
  if #finished > 0 then call_many('HSET', KEYS[K_STATE], finished) end
  if #results > 0 then call_many('HSET', KEYS[K_RESULT], results) end
  if #clear_error > 0 then call_many('HDEL', KEYS[K_ERROR], clear_error) end
  if #done > 0 then call_many('ZADD', KEYS[K_COMPLETED], done) end
  if #errors > 0 then call_many('HSET', KEYS[K_ERROR], errors) end
  if #failed > 0 then call_many('ZADD', KEYS[K_FAILED], failed) end
end
trim(KEYS[K_COMPLETED], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
trim(KEYS[K_FAILED], tonumber(ARGV[3]), tonumber(ARGV[4]), now)
if notify then redis.call('LPUSH', KEYS[K_NOTIFY], 1) end
return out
