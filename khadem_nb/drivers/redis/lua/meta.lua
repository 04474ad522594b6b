-- ARGV: id, token, meta_json (whole object). Fenced like settle.
if redis.call('HGET', KEYS[K_TOKEN], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[K_META], ARGV[1], ARGV[3])
return 1
