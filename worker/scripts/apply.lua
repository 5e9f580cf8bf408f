-- Apply one batch of ops to an audience's membership, exactly once, last action wins.
--
-- KEYS[1] members hash   id -> "<version>+<attributes json>" (member) or "<version>-" (tombstone)
-- KEYS[2] member count   integer, the audience's size
-- KEYS[3] pending zset   "<token>:<batch>" -> first version of each batch accepted, not yet applied
-- KEYS[4] tombstone zset id -> version of a kept tombstone
-- KEYS[5] token hash     state and counts of the indexing token
-- KEYS[6] done bitmap    bit <batch> set once that batch of the token is applied or failed
-- KEYS[7] batch payload  lines "<+|-><id>\t<attributes json or empty>\n", deduplicated
-- ARGV[1] batch number, ARGV[2] version of the payload's first op (op i has version + i),
-- ARGV[3] now (ISO-8601), ARGV[4] this batch's pending member, ARGV[5] tombstones purged at most
--
-- An op takes effect only when its version is above the id's stored version, so the op
-- accepted last stands whatever order batches arrive in. A removed id keeps a tombstone
-- only while an older batch is still pending (one that could otherwise resurrect it);
-- tombstones older than every pending batch are purged here, so they never pile up.
-- Returns {outcome, added, removed, superseded, token state}; outcome is one of
-- applied | duplicate (already applied: nothing changes) | aborted (token gone or
-- abandoned at submit) | missing (payload lost).
local members, count_key, pending, tomb, token, done, payload_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local batch_no = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local now = ARGV[3]
local pending_member = ARGV[4]
local purge_limit = tonumber(ARGV[5])

if redis.call('EXISTS', token) == 0 or redis.call('HGET', token, 'aborted') == '1' then
  redis.call('DEL', payload_key)
  redis.call('ZREM', pending, pending_member)
  return {'aborted', 0, 0, 0, ''}
end
if redis.call('GETBIT', done, batch_no) == 1 then
  return {'duplicate', 0, 0, 0, redis.call('HGET', token, 'state')}
end
local payload = redis.call('GET', payload_key)
if not payload then
  return {'missing', 0, 0, 0, redis.call('HGET', token, 'state')}
end

local acts, ids, attrs, n = {}, {}, {}, 0
for a, id, at in string.gmatch(payload, '([+-])([^\t\n]*)\t([^\n]*)\n') do
  n = n + 1
  acts[n] = a
  ids[n] = id
  attrs[n] = at
end

redis.call('ZREM', pending, pending_member)
local oldest = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
local min_pending = nil
if oldest[2] then min_pending = tonumber(oldest[2]) end

local added, removed, superseded, delta = 0, 0, 0, 0
local sets, dels, tombs = {}, {}, {}
local CHUNK = 1000
for s = 1, n, CHUNK do
  local e = math.min(s + CHUNK - 1, n)
  local current = redis.call('HMGET', members, unpack(ids, s, e))
  for i = s, e do
    local v = base + i - 1
    local old = current[i - s + 1]
    local old_v, old_member = nil, false
    if old then
      local p = string.find(old, '[+-]')
      old_v = tonumber(string.sub(old, 1, p - 1))
      old_member = string.sub(old, p, p) == '+'
    end
    if old_v and old_v >= v then
      superseded = superseded + 1
    elseif acts[i] == '+' then
      sets[#sets + 1] = ids[i]
      sets[#sets + 1] = string.format('%d+', v) .. attrs[i]
      if not old_member then delta = delta + 1 end
      added = added + 1
    else
      if old_member then delta = delta - 1 end
      removed = removed + 1
      if min_pending and min_pending < v then
        sets[#sets + 1] = ids[i]
        sets[#sets + 1] = string.format('%d-', v)
        tombs[#tombs + 1] = v
        tombs[#tombs + 1] = ids[i]
      elseif old then
        dels[#dels + 1] = ids[i]
      end
    end
  end
end

local ARGS = 4000
for s = 1, #sets, ARGS do
  redis.call('HSET', members, unpack(sets, s, math.min(s + ARGS - 1, #sets)))
end
for s = 1, #dels, ARGS do
  redis.call('HDEL', members, unpack(dels, s, math.min(s + ARGS - 1, #dels)))
end
for s = 1, #tombs, ARGS do
  redis.call('ZADD', tomb, unpack(tombs, s, math.min(s + ARGS - 1, #tombs)))
end
if delta ~= 0 then redis.call('INCRBY', count_key, delta) end

local expired
if min_pending then
  expired = redis.call('ZRANGEBYSCORE', tomb, '-inf', '(' .. string.format('%d', min_pending),
    'LIMIT', 0, purge_limit)
else
  expired = redis.call('ZRANGE', tomb, 0, purge_limit - 1)
end
for _, id in ipairs(expired) do
  local score = redis.call('ZSCORE', tomb, id)
  if redis.call('HGET', members, id) == string.format('%d-', tonumber(score)) then
    redis.call('HDEL', members, id)
  end
  redis.call('ZREM', tomb, id)
end

redis.call('DEL', payload_key)
redis.call('SETBIT', done, batch_no, 1)
local ttl = redis.call('PTTL', token)
if ttl > 0 then redis.call('PEXPIRE', done, ttl) end
redis.call('HINCRBY', token, 'added', added)
redis.call('HINCRBY', token, 'removed', removed)
redis.call('HINCRBY', token, 'superseded', superseded)
local finished = redis.call('HINCRBY', token, 'batches_applied', 1)
  + tonumber(redis.call('HGET', token, 'batches_failed') or '0')
if finished >= tonumber(redis.call('HGET', token, 'batches_total')) then
  if tonumber(redis.call('HGET', token, 'batches_failed') or '0') > 0 then
    redis.call('HSET', token, 'state', 'FAILED', 'finished_at', now)
  else
    redis.call('HSET', token, 'state', 'APPLIED', 'applied_at', now, 'finished_at', now)
  end
end
return {'applied', added, removed, superseded, redis.call('HGET', token, 'state')}
