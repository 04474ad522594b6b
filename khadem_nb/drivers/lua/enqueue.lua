-- ARGV: notify_cap, the number of jobs, then the batch as one value, a line per job:
-- "id<TAB>priority<TAB>delay_ms<TAB>data_json<TAB>key_json" (compact JSON has no raw tab or
-- newline; key_json, the sweep key, is empty for none). One value for the whole batch: the
-- client packed a thousand arguments more slowly than this script splits one.
-- One INCRBY numbers the whole batch; each hash and set is written with one variadic command.
-- Hand-off: a worker whose claim came back short registers in K_WAITING (member
-- "lease_ms|worker", scored by when its wait ends) and blocks on K_HANDOFF. While workers wait
-- and nothing else is ready, the batch's first ready jobs (highest priority, then FIFO) are
-- claimed here, one per waiting worker, and pushed on K_HANDOFF as "now<TAB>id<TAB>token<TAB>
-- data": the worker starts them without a claim round trip. A row nobody pops (the worker
-- stopped) is taken by the next reserve, or its lease expires and the sweep reclaims the job.
local now = now_ms()
local count, batch = tonumber(ARGV[2]), ARGV[3]
if count == 0 then return now end
local first = redis.call('INCRBY', KEYS[K_SEQ], count) - count
local find, sub = string.find, string.sub
local state, all = {}, {}
local ready, delayed, sweep = {}, {}, {}
local queued_tail = ',' .. now .. ',-1,-1,-1\t'
local pos, size = 1, #batch
-- walks the batch in place (no string per line); one pair per job in state and all
for j = 1, count do
  local a = find(batch, '\t', pos, true)
  local b = find(batch, '\t', a + 1, true)
  local c = find(batch, '\t', b + 1, true)
  local d = find(batch, '\t', c + 1, true)
  local e = find(batch, '\n', d + 1, true) or size + 1
  local id, priority, delay = sub(batch, pos, a - 1), sub(batch, a + 1, b - 1), tonumber(sub(batch, b + 1, c - 1))
  local seq = first + j
  local i = 2 * j
  local data = sub(batch, c + 1, d - 1)
  all[i - 1], all[i] = seq, id
  state[i - 1] = id
  if e > d + 1 then push2(sweep, cjson.decode(sub(batch, d + 1, e - 1)), id) end
  if delay > 0 then
    push2(delayed, now + delay, id)
    state[i] = 'scheduled,0,' .. priority .. ',' .. (now + delay) .. ',-1,-1,-1\t' .. data
  else
    push2(ready, -tonumber(priority) * 1e12 + seq, id)
    state[i] = 'queued,0,' .. priority .. queued_tail .. data
  end
  pos = e + 1
end
local handed = 0
if #ready > 0 and redis.call('ZCARD', KEYS[K_READY]) == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[K_WAITING], '-inf', '(' .. now)
  local waiters = redis.call('ZPOPMAX', KEYS[K_WAITING], #ready / 2)
  if #waiters > 0 then
    local order, state_of, rows, active, token_of = {}, {}, {}, {}, {}
    for i = 1, #ready, 2 do order[#order + 1] = {ready[i], ready[i + 1]} end
    table.sort(order, function(x, y) return x[1] < y[1] end)
    for i = 1, #state, 2 do state_of[state[i]] = state[i + 1] end
    ready = {}
    for n, entry in ipairs(order) do
      local id = entry[2]
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
      else
        push2(ready, entry[1], id)
      end
    end
    call_many('HSET', KEYS[K_TOKEN], token_of)
    call_many('ZADD', KEYS[K_ACTIVE], active)
    call_many('RPUSH', KEYS[K_HANDOFF], rows)
  end
end
call_many('HSET', KEYS[K_STATE], state)
call_many('ZADD', KEYS[K_ALL], all)
if #ready > 0 then call_many('ZADD', KEYS[K_READY], ready) end
if #delayed > 0 then call_many('ZADD', KEYS[K_DELAYED], delayed) end
if #sweep > 0 then call_many('HSET', KEYS[K_KEYS], sweep) end
if count > handed then
  redis.call('LPUSH', KEYS[K_NOTIFY], unpack({1, 1, 1, 1, 1, 1, 1, 1}, 1, math.min(8, count - handed)))
  redis.call('LTRIM', KEYS[K_NOTIFY], 0, tonumber(ARGV[1]) - 1)
end
return now
