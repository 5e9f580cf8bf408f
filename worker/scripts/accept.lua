-- Accept a submission: reserve its versions and register its token and batches atomically.
--
-- KEYS[1] version sequence of the audience, KEYS[2] pending zset, KEYS[3] token hash
-- ARGV[1] token, ARGV[2] ops kept after deduplication, ARGV[3] token TTL seconds,
-- ARGV[4..] token hash fields and values, then '--', then each batch's op count in order.
-- Versions are reserved in accept order, so the op accepted last carries the highest
-- version: that is what "last action wins" compares. Returns the first reserved version.
local seq, pending, token = KEYS[1], KEYS[2], KEYS[3]
local kept = tonumber(ARGV[2])
local first = redis.call('INCRBY', seq, kept) - kept + 1
local fields = {}
local i = 4
while ARGV[i] ~= '--' do
  fields[#fields + 1] = ARGV[i]
  i = i + 1
end
redis.call('HSET', token, 'base', first, unpack(fields))
redis.call('EXPIRE', token, tonumber(ARGV[3]))
local base = first
local batch = 0
for j = i + 1, #ARGV do
  redis.call('ZADD', pending, base, ARGV[1] .. ':' .. batch)
  base = base + tonumber(ARGV[j])
  batch = batch + 1
end
return first
