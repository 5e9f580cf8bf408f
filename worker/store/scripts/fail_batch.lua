-- Give up on one batch: it counts as finished but not applied, and the token records why.
--
-- KEYS[1] pending zset, KEYS[2] token hash, KEYS[3] done bitmap, KEYS[4] batch payload,
-- KEYS[5] in-process tokens zset, KEYS[6] replace hash, KEYS[7..9] shadow members, count
-- and tombstones, KEYS[10] parked list
-- ARGV[1] batch number, ARGV[2] pending member, ARGV[3] error code, ARGV[4] error message,
-- ARGV[5] now (ISO-8601), ARGV[6] token id, ARGV[7] 'keep' to keep the payload (a dead
-- letter that an operator may replay), ARGV[8] the pub/sub channel on which the token's id
-- is published if this call ends it
-- A failed replace is dropped whole at once: the old membership stays as it was, and
-- the updates parked behind it are released. A batch already finished is left alone.
-- Returns {token state ('' when the token is gone), parked messages to release}.
local pending, token, done, payload_key, inprocess, replace, parked =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[10]
local batch_no = tonumber(ARGV[1])

local function releasable()
  if redis.call('EXISTS', replace) == 1 then return 0 end
  return redis.call('LLEN', parked)
end

redis.call('ZREM', pending, ARGV[2])
if ARGV[7] ~= 'keep' then redis.call('DEL', payload_key) end
if redis.call('EXISTS', token) == 0 then
  return {'', releasable()}
end
if redis.call('GETBIT', done, batch_no) == 1 then
  return {redis.call('HGET', token, 'state'), releasable()}
end
redis.call('SETBIT', done, batch_no, 1)
local ttl = redis.call('PTTL', token)
if ttl > 0 then redis.call('PEXPIRE', done, ttl) end
redis.call('HSETNX', token, 'error_code', ARGV[3])
redis.call('HSETNX', token, 'error_message', ARGV[4])
local finished = redis.call('HINCRBY', token, 'batches_failed', 1)
  + tonumber(redis.call('HGET', token, 'batches_applied') or '0')
local is_replace = redis.call('HGET', token, 'kind') == 'replace'
if is_replace or finished >= tonumber(redis.call('HGET', token, 'batches_total')) then
  redis.call('HSET', token, 'state', 'FAILED', 'finished_at', ARGV[5])
  redis.call('ZREM', inprocess, ARGV[6])
  redis.call('PUBLISH', ARGV[8], ARGV[6])
end
if is_replace and redis.call('HGET', replace, 'token') == ARGV[6] then
  redis.call('DEL', KEYS[7], KEYS[8], KEYS[9], replace)
end
return {redis.call('HGET', token, 'state'), releasable()}
