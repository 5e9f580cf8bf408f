-- Lease due completion calls to one caller; a crashed caller's come back after the lease.
--
-- KEYS[1] due zset "<audience>\t<token>" -> when
-- ARGV[1] now, ARGV[2] how many at most, ARGV[3] the lease's end
-- Returns the leased entries.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, entry in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], entry)
end
return due
