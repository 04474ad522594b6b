-- Drops dead unique locks: those whose job is gone (retention removed it), is in a status that
-- no longer holds the lock, or whose expiry passed. A dead lock would be taken over by the next
-- dispatch of its key anyway; dropping it keeps K_UNIQUE as large as the live locks.
-- ARGV: the HSCAN cursor, the fields to look at in this call. Returns the next cursor.
local now = now_ms()
local reply = redis.call('HSCAN', KEYS[K_UNIQUE], ARGV[1], 'COUNT', ARGV[2])
local fields = reply[2]
for i = 1, #fields, 2 do
  if not live_holder(fields[i + 1], now) then
    redis.call('HDEL', KEYS[K_UNIQUE], fields[i])
  end
end
return reply[1]
