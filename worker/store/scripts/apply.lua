-- Apply one batch of ops to an audience's membership, exactly once, last action wins.
--
-- KEYS[1] members hash   id -> "<version>+<attributes json>" (member) or "<version>-" (tombstone)
-- KEYS[2] member count   integer, the audience's size
-- KEYS[3] pending zset   "<token>:<batch>" -> first version of each accepted, unapplied batch
-- KEYS[4] tombstone zset id -> version of a kept tombstone
-- KEYS[5] token hash     state and counts of the indexing token
-- KEYS[6] done bitmap    bit <batch> set once that batch of the token is applied or failed
-- KEYS[7] batch payload  lines "<+|-><id>\t<attributes json or empty>\n", deduplicated
-- KEYS[8] replace hash   present while a replace runs: its token and first version
-- KEYS[9..11] shadow members, shadow count, shadow tombstones: the replace being built
-- KEYS[12] parked list   messages of batches waiting for a running replace to end
-- KEYS[13] in-process tokens zset
-- KEYS[14] ts floors zset  token -> oldest ts it could carry (source-time audiences)
-- ARGV[1] batch number, ARGV[2] version of the payload's first op (op i has version + i),
-- ARGV[3] now (ISO-8601), ARGV[4] this batch's pending member, ARGV[5] tombstones purged
-- at most, ARGV[6] this batch's message (kept if parked), ARGV[7] token id,
-- ARGV[8] prefix of the audience's token keys (same slot; read at a replace's swap and,
-- for source-time audiences, to see whether a ts floor's token is still in process),
-- ARGV[9] now in ms, ARGV[10] source-time horizon in ms, ARGV[11] clock slack in ms,
-- ARGV[12] ops applied per call at most (the step), ARGV[13] the pub/sub channel on which
-- the id of each token this call ends is published (long polls wake on it)
--
-- A call applies at most one step of the batch's ops and records how far it got in the
-- token hash (field applied:<batch>, "<ops>,<byte offset>"), atomically with their effects;
-- it returns 'partial' until the last step, which ends the batch. The caller calls again
-- until then. A step is short, so no other command waits long behind a 10,000-op batch,
-- and a call redelivered after a crash goes on from the recorded step, applying nothing
-- twice. The batch stays in the pending set until its last step; meanwhile its next
-- step's first version stands for it where tombstones are kept or purged. Tombstones are
-- purged at most ARGV[5] per call; the batch ends only once none is left due.
--
-- An op takes effect only when its version is above the id's stored version, so the op
-- accepted last stands whatever order batches arrive in. A removed id keeps a tombstone
-- only while an older batch is still pending (one that could otherwise resurrect it);
-- tombstones older than every pending batch are purged here, so they never pile up.
-- A replace writes into shadow keys, swapped in whole when its last batch is applied,
-- unless its guard (token field max_removed_ratio) finds it would remove too much.
--
-- Source-time audiences (token field ordering = source_time): each payload line starts
-- with the op's ts digits, values are "<ts>:<version>+<attributes>" / "<ts>:<version>-",
-- and an op takes effect only when (ts, version) is above the stored pair: the greatest
-- ts stands, between equal ts the op accepted later. One that loses to an earlier-accepted
-- op (its ts is older) counts as stale, one that loses to a later-accepted op as
-- superseded. Removes keep a tombstone, scored by ts, until its ts falls behind
-- min(now - horizon, the ts floor of every token still in process) - slack: no op still to
-- come can then be older than it (the API refuses ops older than the horizon). A token
-- leaves the floors when it ends here; one ended elsewhere (failed, replaced, expired) is
-- dropped from them when it is found at their head.
-- Returns {outcome, added, removed, superseded, token state, parked messages to release,
-- tokens this call ended as REPLACED (only when 'applied'), stale}
-- with outcome applied | partial (a step applied; call again) | duplicate | parked |
-- aborted (token gone, abandoned, replaced or a failed replace) | missing (payload lost).
-- The counts are this call's own.
local members, count_key, pending, tomb, token, done, payload_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local replace, shadow, shadow_n, shadow_tomb, parked, inprocess =
  KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local batch_no = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local now = ARGV[3]
local pending_member = ARGV[4]
local purge_limit = tonumber(ARGV[5])
local token_id = ARGV[7]
local token_prefix = ARGV[8]
local timed = redis.call('HGET', token, 'ordering') == 'source_time'
local ended_channel = ARGV[13]

local function releasable()
  if redis.call('EXISTS', replace) == 1 then return 0 end
  return redis.call('LLEN', parked)
end

local function drop(outcome)
  redis.call('DEL', payload_key)
  redis.call('ZREM', pending, pending_member)
  return {outcome, 0, 0, 0, redis.call('HGET', token, 'state') or '', releasable()}
end

if redis.call('EXISTS', token) == 0 or redis.call('HGET', token, 'aborted') == '1' then
  return drop('aborted')
end
if redis.call('GETBIT', done, batch_no) == 1 then
  return {'duplicate', 0, 0, 0, redis.call('HGET', token, 'state'), releasable()}
end
local state = redis.call('HGET', token, 'state')
local kind = redis.call('HGET', token, 'kind')
if state == 'REPLACED' or (kind == 'replace' and state ~= 'IN_PROCESS') then
  return drop('aborted')
end
if kind ~= 'replace' and redis.call('HGET', token, 'waits_for_replace') == '1'
    and redis.call('EXISTS', replace) == 1 then
  redis.call('RPUSH', parked, ARGV[6])
  return {'parked', 0, 0, 0, state, 0}
end
local payload_len = redis.call('STRLEN', payload_key)
if payload_len == 0 and redis.call('EXISTS', payload_key) == 0 then
  return {'missing', 0, 0, 0, state, releasable()}
end
if kind == 'replace' then
  members, count_key, tomb = shadow, shadow_n, shadow_tomb
end

local live = KEYS[1]
local step = tonumber(ARGV[12])
local progress_field = 'applied:' .. batch_no
local from_op, pos = 0, 1
local progress = redis.call('HGET', token, progress_field)
if progress then
  local comma = string.find(progress, ',', 1, true)
  from_op = tonumber(string.sub(progress, 1, comma - 1))
  pos = tonumber(string.sub(progress, comma + 1))
end
base = base + from_op
local find = string.find
local acts, ids, attrs, stamps, n = {}, {}, {}, {}, 0
-- The step's lines from ``chunk`` (the payload from byte ``pos``); returns bytes read.
-- A source-time line starts with its ts digits; any other line's first capture is an
-- empty position capture (its number is never read: stamps are read only when timed).
local line = timed and '^(%d+)([+-])([^\t\n]*)\t([^\n]*)\n'
  or '^()([+-])([^\t\n]*)\t([^\n]*)\n'
local function parse(chunk)
  local at_byte = 1
  while n < step do
    local _, e, t, a, id, at = find(chunk, line, at_byte)
    if not e then break end
    n = n + 1
    stamps[n] = tonumber(t)
    acts[n] = a
    ids[n] = id
    attrs[n] = at
    at_byte = e + 1
  end
  return at_byte - 1
end
-- Only the part a step needs is read: a window of the payload (all of the rest when a
-- line is longer than the window).
local WINDOW = 524288
local read = parse(redis.call('GETRANGE', payload_key, pos - 1, pos + WINDOW - 2))
if n == 0 and pos + WINDOW - 1 <= payload_len then
  read = parse(redis.call('GETRANGE', payload_key, pos - 1, -1))
end
pos = pos + read
local ops_done = n == 0 or pos > payload_len

-- The oldest version still to come: of the other pending batches, and of this one's next
-- step (its ops are distinct ids, so a step never needs a tombstone for the batch's own
-- later ops; an older tombstone loses to those ops by version anyway).
local oldest = redis.call('ZRANGE', pending, 0, 1, 'WITHSCORES')
local min_pending = nil
for j = 1, #oldest, 2 do
  if oldest[j] ~= pending_member then
    min_pending = tonumber(oldest[j + 1])
    break
  end
end
if not ops_done and (not min_pending or base + n < min_pending) then
  min_pending = base + n
end

-- Source time: tombstones older than this can go; no op still to come is as old.
local purge_before = 0
if timed then
  local floors = KEYS[14]
  purge_before = tonumber(ARGV[9]) - tonumber(ARGV[10])
  local resolved = false
  for _ = 1, 100 do
    local first = redis.call('ZRANGE', floors, 0, 0, 'WITHSCORES')
    if not first[1] then
      resolved = true
      break
    end
    if redis.call('HGET', token_prefix .. first[1], 'state') == 'IN_PROCESS' then
      purge_before = math.min(purge_before, tonumber(first[2]))
      resolved = true
      break
    end
    redis.call('ZREM', floors, first[1])
  end
  purge_before = resolved and math.max(purge_before - tonumber(ARGV[11]), 0) or 0
end

local added, removed, superseded, stale, delta = 0, 0, 0, 0, 0
-- A replace counts how many of the live members its shadow keeps, for its guard.
local kept_delta = 0
local replaced = {}
local sets, dels, tombs = {}, {}, {}
local CHUNK = 1000
for s = 1, n, CHUNK do
  local e = math.min(s + CHUNK - 1, n)
  local current = redis.call('HMGET', members, unpack(ids, s, e))
  local in_live = {}
  if kind == 'replace' then in_live = redis.call('HMGET', live, unpack(ids, s, e)) end
  for i = s, e do
    local v = base + i - 1
    local old = current[i - s + 1]
    local old_v, old_member, old_ts = nil, false, nil
    if old then
      local p = string.find(old, '[+-]')
      if timed then
        local c = string.find(old, ':', 1, true)
        old_ts = tonumber(string.sub(old, 1, c - 1))
        old_v = tonumber(string.sub(old, c + 1, p - 1))
      else
        old_v = tonumber(string.sub(old, 1, p - 1))
      end
      old_member = string.sub(old, p, p) == '+'
    end
    local ts = stamps[i]
    if timed and old_v and (old_ts > ts or (old_ts == ts and old_v >= v)) then
      if old_v < v then stale = stale + 1 else superseded = superseded + 1 end
    elseif not timed and old_v and old_v >= v then
      superseded = superseded + 1
    elseif acts[i] == '+' then
      sets[#sets + 1] = ids[i]
      if timed then
        sets[#sets + 1] = string.format('%d:%d+', ts, v) .. attrs[i]
      else
        sets[#sets + 1] = string.format('%d+', v) .. attrs[i]
      end
      if not old_member then
        delta = delta + 1
        local lv = in_live[i - s + 1]
        if lv and string.find(lv, '+', 1, true) then kept_delta = kept_delta + 1 end
      end
      added = added + 1
    else
      if old_member then
        delta = delta - 1
        local lv = in_live[i - s + 1]
        if lv and string.find(lv, '+', 1, true) then kept_delta = kept_delta - 1 end
      end
      removed = removed + 1
      -- A tombstone while an op still to come could resurrect the id (see the header).
      local keep, score, value
      if timed then
        keep, score, value = ts >= purge_before, ts, string.format('%d:%d-', ts, v)
      else
        keep, score, value = min_pending and min_pending < v, v, string.format('%d-', v)
      end
      if keep then
        sets[#sets + 1] = ids[i]
        sets[#sets + 1] = value
        tombs[#tombs + 1] = score
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

local expired, purged
if timed then
  expired = redis.call('ZRANGEBYSCORE', tomb, '-inf', '(' .. string.format('%d', purge_before),
    'LIMIT', 0, purge_limit)
  for _, id in ipairs(expired) do
    local value = redis.call('HGET', members, id)
    if value and string.sub(value, -1) == '-'
        and tonumber(string.sub(value, 1, string.find(value, ':', 1, true) - 1)) < purge_before
    then
      redis.call('HDEL', members, id)
    end
    redis.call('ZREM', tomb, id)
  end
  purged = #expired
  expired = {}
elseif min_pending then
  expired = redis.call('ZRANGEBYSCORE', tomb, '-inf', '(' .. string.format('%d', min_pending),
    'LIMIT', 0, purge_limit)
else
  expired = redis.call('ZRANGE', tomb, 0, purge_limit - 1)
end
purged = purged or #expired
for _, id in ipairs(expired) do
  local score = redis.call('ZSCORE', tomb, id)
  if redis.call('HGET', members, id) == string.format('%d-', tonumber(score)) then
    redis.call('HDEL', members, id)
  end
  redis.call('ZREM', tomb, id)
end

redis.call('HINCRBY', token, 'added', added)
redis.call('HINCRBY', token, 'removed', removed)
redis.call('HINCRBY', token, 'superseded', superseded)
if stale ~= 0 then redis.call('HINCRBY', token, 'stale', stale) end
if kept_delta ~= 0 then redis.call('HINCRBY', token, 'kept', kept_delta) end
-- The batch ends once its ops are all applied and no more tombstones are due (a call
-- that purged as many as it may leaves the rest to the next call).
if not ops_done or purged >= purge_limit then
  redis.call('HSET', token, progress_field, string.format('%d,%d', from_op + n, pos))
  return {'partial', added, removed, superseded, redis.call('HGET', token, 'state'), 0, {},
    stale}
end
redis.call('HDEL', token, progress_field)
redis.call('ZREM', pending, pending_member)
redis.call('DEL', payload_key)
redis.call('SETBIT', done, batch_no, 1)
local ttl = redis.call('PTTL', token)
if ttl > 0 then redis.call('PEXPIRE', done, ttl) end
local failed = tonumber(redis.call('HGET', token, 'batches_failed') or '0')
local finished = redis.call('HINCRBY', token, 'batches_applied', 1) + failed
local total = tonumber(redis.call('HGET', token, 'batches_total'))
if finished >= total and kind == 'replace' and failed == 0 then
  -- The guard: a replace that would remove more than max_removed_ratio of the live
  -- members (a truncated or empty export) is dropped whole; the membership stays.
  local ratio = redis.call('HGET', token, 'max_removed_ratio')
  local live_n = tonumber(redis.call('GET', KEYS[2]) or '0')
  local would_remove = live_n - tonumber(redis.call('HGET', token, 'kept') or '0')
  if ratio and would_remove > tonumber(ratio) * live_n then
    redis.call('ZREM', inprocess, token_id)
    redis.call('ZREM', KEYS[14], token_id)
    redis.call('HSET', token, 'state', 'FAILED', 'finished_at', now,
      'error_code', 'replace_guard',
      'error_message', string.format('The replace would have removed %d of the %d current '
        .. 'members, more than max_removed_ratio %s allows; it was dropped and the '
        .. 'membership is unchanged.', would_remove, live_n, ratio),
      'would_remove', would_remove)
    redis.call('DEL', shadow, shadow_n, shadow_tomb, replace)
    redis.call('PUBLISH', ended_channel, token_id)
    return {'applied', added, removed, superseded, 'FAILED', releasable(), {}, stale}
  end
end
if finished >= total then
  redis.call('ZREM', inprocess, token_id)
  redis.call('ZREM', KEYS[14], token_id)
  if failed > 0 then
    redis.call('HSET', token, 'state', 'FAILED', 'finished_at', now)
  else
    redis.call('HSET', token, 'state', 'APPLIED', 'applied_at', now, 'finished_at', now)
  end
  if kind == 'replace' and failed == 0 then
    -- Swap the new membership in whole. Membership tokens accepted before the replace
    -- and still in process end REPLACED; their batches are dropped when they arrive.
    local replace_base = tonumber(redis.call('HGET', token, 'base'))
    for _, other in ipairs(redis.call('ZRANGE', inprocess, 0, -1)) do
      local other_key = token_prefix .. other
      if redis.call('HGET', other_key, 'kind') == 'members'
          and tonumber(redis.call('HGET', other_key, 'base')) < replace_base then
        redis.call('HSET', other_key, 'state', 'REPLACED', 'finished_at', now)
        redis.call('ZREM', inprocess, other)
        redis.call('PUBLISH', ended_channel, other)
        replaced[#replaced + 1] = other
        local prefix = other .. ':'
        for _, entry in ipairs(redis.call('ZRANGE', pending, 0, -1)) do
          if string.sub(entry, 1, #prefix) == prefix then redis.call('ZREM', pending, entry) end
        end
      end
    end
    if redis.call('EXISTS', shadow) == 1 then
      redis.call('RENAME', shadow, KEYS[1])
    else
      redis.call('DEL', KEYS[1])
    end
    redis.call('SET', KEYS[2], redis.call('GET', shadow_n) or '0')
    redis.call('DEL', shadow_n)
    if redis.call('EXISTS', shadow_tomb) == 1 then
      redis.call('RENAME', shadow_tomb, KEYS[4])
    else
      redis.call('DEL', KEYS[4])
    end
    redis.call('DEL', replace)
  end
  redis.call('PUBLISH', ended_channel, token_id)
end
return {'applied', added, removed, superseded, redis.call('HGET', token, 'state'), releasable(),
  replaced, stale}
