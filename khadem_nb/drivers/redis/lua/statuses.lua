-- ARGV: job ids. Returns each job's status word ('' where there is no job): the state field
-- also holds the job's data, which a status poll of a big group need not carry back.
local states = hmget(KEYS[K_STATE], ARGV)
local out = {}
for j = 1, #ARGV do
  out[j] = states[j] and string.match(states[j], '^(%a+),') or ''
end
return out
