-- Make a failed batch pending again, so a replayed dead letter can still apply.
--
-- KEYS[1] token hash, KEYS[2] done bitmap, KEYS[3] batch payload, KEYS[4] pending zset,
-- KEYS[5] in-process tokens zset, KEYS[6] ts floors zset (source-time audiences)
-- ARGV[1] batch number, ARGV[2] pending member, ARGV[3] batch's first version,
-- ARGV[4] token id, ARGV[5] now in ms
-- Returns revived | pending (not finished: just enqueue it) | gone | missing | replace.
local token, done, payload, pending, inprocess = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', token) == 0 then return 'gone' end
if redis.call('HGET', token, 'kind') == 'replace' then return 'replace' end
if redis.call('EXISTS', payload) == 0 then return 'missing' end
if redis.call('GETBIT', done, tonumber(ARGV[1])) == 0 then return 'pending' end
redis.call('SETBIT', done, tonumber(ARGV[1]), 0)
if redis.call('HINCRBY', token, 'batches_failed', -1) <= 0 then
  redis.call('HDEL', token, 'error_code', 'error_message')
end
redis.call('HSET', token, 'state', 'IN_PROCESS')
redis.call('HDEL', token, 'finished_at', 'deliveries:' .. ARGV[1])
redis.call('ZADD', pending, tonumber(ARGV[3]), ARGV[2])
redis.call('ZADD', inprocess, tonumber(ARGV[5]), ARGV[4])
local floor = redis.call('HGET', token, 'ts_floor')
if floor then redis.call('ZADD', KEYS[6], tonumber(floor), ARGV[4]) end
return 'revived'
