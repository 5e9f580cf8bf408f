-- Accept a submission: reserve its versions and register its token and batches atomically.
--
-- KEYS[1] version sequence, KEYS[2] pending zset, KEYS[3] token hash,
-- KEYS[4] replace hash (present while a replace runs), KEYS[5] in-process tokens zset,
-- KEYS[6] all tokens zset, KEYS[7] audience meta hash, KEYS[8] ts floors zset,
-- KEYS[9..] each batch's staged payload in order (kept as long as the token: a batch pending for hours must still apply)
-- ARGV[1] token, ARGV[2] ops kept after deduplication, ARGV[3] token TTL seconds,
-- ARGV[4] kind (members | replace | erase | size), ARGV[5] now in ms,
-- ARGV[6..] token hash fields and values, then '--', then each batch's op count in order.
-- Versions are reserved in accept order, so the op accepted last carries the highest
-- version: that is what "last action wins" compares. A replace starts only when none
-- runs; a members update accepted while one runs is marked to wait for its swap.
-- A token with a ts_floor field (source-time audiences) enters the ts floors zset here,
-- atomically with its batches: apply.lua keeps every tombstone a pending op could need.
-- The audience is checked here, atomically with the accept: an upload that streamed while
-- its audience was deleted or archived is refused, not applied into freed keys.
-- Returns the first reserved version, or -1 when a replace is already running, -2 when
-- the audience is gone, -3 when it is archived (membership updates only).
local seq, pending, token, replace, inprocess, tokens, meta =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local token_id, kind, now_ms = ARGV[1], ARGV[4], tonumber(ARGV[5])
local kept = tonumber(ARGV[2])
local status = redis.call('HGET', meta, 'status')
if not status then return -2 end
if status == 'archived' and (kind == 'members' or kind == 'replace') then return -3 end
if kind == 'replace' then
  if redis.call('EXISTS', replace) == 1 then return -1 end
  redis.call('HSET', replace, 'token', token_id, 'started_ms', now_ms)
end
local first = redis.call('INCRBY', seq, kept) - kept + 1
local fields = {}
local i = 6
while ARGV[i] ~= '--' do
  fields[#fields + 1] = ARGV[i]
  i = i + 1
end
redis.call('HSET', token, 'base', first, 'kind', kind, 'created_ms', now_ms, unpack(fields))
if kind ~= 'replace' and redis.call('EXISTS', replace) == 1 then
  redis.call('HSET', token, 'waits_for_replace', '1')
end
redis.call('EXPIRE', token, tonumber(ARGV[3]))
redis.call('ZADD', inprocess, now_ms, token_id)
local floor = redis.call('HGET', token, 'ts_floor')
if floor then redis.call('ZADD', KEYS[8], tonumber(floor), token_id) end
redis.call('ZADD', tokens, now_ms, token_id)
-- Tokens expire after the retention; so does their entry here.
redis.call('ZREMRANGEBYSCORE', tokens, '-inf', now_ms - 1000 * tonumber(ARGV[3]))
local base = first
local batch = 0
for j = i + 1, #ARGV do
  redis.call('ZADD', pending, base, token_id .. ':' .. batch)
  base = base + tonumber(ARGV[j])
  batch = batch + 1
end
for k = 9, #KEYS do
  redis.call('EXPIRE', KEYS[k], tonumber(ARGV[3]))
end
return first
