-- Record one step of a size count: members scanned and matched since the last step.
--
-- KEYS[1] token hash, KEYS[2] audience meta hash, KEYS[3] in-process tokens zset
-- ARGV[1] step number (1, 2, ...), ARGV[2] scanned, ARGV[3] matched, ARGV[4] the scan
-- cursor after this step ('0' when the scan is complete), ARGV[5] now (ISO-8601),
-- ARGV[6] the filter revision the count started with, ARGV[7] token id, ARGV[8] now (s,
-- read by the reconciler to tell a broken chain of steps from a slow one), ARGV[9] the
-- pub/sub channel on which the token's id is published if this call ends it
-- Steps are recorded once each (a redelivered step is a 'duplicate'); a changed filter
-- ends the count FAILED with filter_changed. On the last step the audience gets its
-- cached_size. Returns {outcome, cursor to continue from, last step recorded}.
local token, meta, inprocess = KEYS[1], KEYS[2], KEYS[3]
local step_no = tonumber(ARGV[1])
if redis.call('EXISTS', token) == 0 then return {'gone', '0', 0} end
if redis.call('HGET', token, 'state') ~= 'IN_PROCESS' then return {'finished', '0', 0} end
local step = tonumber(redis.call('HGET', token, 'step') or '0')
if step_no <= step then
  return {'duplicate', redis.call('HGET', token, 'cursor') or '0', step}
end
if (redis.call('HGET', meta, 'filter_rev') or '0') ~= ARGV[6] then
  redis.call('HSET', token, 'state', 'FAILED', 'finished_at', ARGV[5],
    'error_code', 'filter_changed',
    'error_message', 'The filter changed during the count; start a new count.')
  redis.call('ZREM', inprocess, ARGV[7])
  redis.call('PUBLISH', ARGV[9], ARGV[7])
  return {'finished', '0', 0}
end
redis.call('HINCRBY', token, 'received', tonumber(ARGV[2]))
local matched = redis.call('HINCRBY', token, 'matched', tonumber(ARGV[3]))
redis.call('HSET', token, 'step', step_no, 'cursor', ARGV[4], 'step_at', ARGV[8])
if ARGV[4] == '0' then
  redis.call('HSET', token, 'state', 'APPLIED', 'applied_at', ARGV[5], 'finished_at', ARGV[5])
  redis.call('ZREM', inprocess, ARGV[7])
  redis.call('PUBLISH', ARGV[9], ARGV[7])
  if redis.call('EXISTS', meta) == 1 then
    redis.call('HSET', meta, 'cached_size', matched, 'cached_size_updated_at', ARGV[5])
  end
  return {'finished', '0', step_no}
end
return {'counted', ARGV[4], step_no}
