-- Give up on one batch: it counts as finished but not applied, and the token records why.
--
-- KEYS[1] pending zset, KEYS[2] token hash, KEYS[3] done bitmap, KEYS[4] batch payload
-- ARGV[1] batch number, ARGV[2] pending member, ARGV[3] error code, ARGV[4] error message,
-- ARGV[5] now (ISO-8601)
-- Returns the token's state, or '' when the token is gone. A batch already applied or
-- failed is left as it is.
local pending, token, done, payload_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch_no = tonumber(ARGV[1])
redis.call('ZREM', pending, ARGV[2])
if redis.call('EXISTS', token) == 0 then
  redis.call('DEL', payload_key)
  return ''
end
if redis.call('GETBIT', done, batch_no) == 1 then
  return redis.call('HGET', token, 'state')
end
redis.call('SETBIT', done, batch_no, 1)
local ttl = redis.call('PTTL', token)
if ttl > 0 then redis.call('PEXPIRE', done, ttl) end
redis.call('HSETNX', token, 'error_code', ARGV[3])
redis.call('HSETNX', token, 'error_message', ARGV[4])
local finished = redis.call('HINCRBY', token, 'batches_failed', 1)
  + tonumber(redis.call('HGET', token, 'batches_applied') or '0')
if finished >= tonumber(redis.call('HGET', token, 'batches_total')) then
  redis.call('HSET', token, 'state', 'FAILED', 'finished_at', ARGV[5])
end
return redis.call('HGET', token, 'state')
