-- Fixed reference writer for the benchmark's "store limit" (not product code).
--
-- Vectorised last-write-wins: one call applies a whole batch of ops (10,000 in the
-- benchmark) to one audience with a handful of variadic commands:
--   HMGET  the stored version of every id                (KEYS[1], id -> version)
--   SADD   the ids added, SREM the ids removed           (KEYS[2], the membership set)
--   HSET   the new version of every op that wins         (KEYS[1])
--   HSET   the attributes of every add that wins         (KEYS[3], id -> attributes json)
--   HDEL   the attributes of every remove that wins      (KEYS[3])
-- An op wins when its version is above the id's stored version.
--
-- ARGV[1] version of the first op (op i has version ARGV[1] + i - 1)
-- ARGV[2] one character per op: '+' add, '-' remove
-- ARGV[3 .. n+2] the ids, ARGV[n+3 .. 2n+2] each op's attributes json ('' for none)
-- Ids are unique within a call (the caller deduplicates, as the product's producer does).
-- Returns {added, removed, superseded}.
--
-- Lua's unpack() stops at 7,999 values, so each variadic command is issued in slices
-- (HMGET: 5,000 ids; SADD/SREM/HDEL: 7,000 ids; HSET: 3,500 pairs).
local base = tonumber(ARGV[1])
local acts = ARGV[2]
local n = #acts
local versions, members, attributes = KEYS[1], KEYS[2], KEYS[3]

local current = {}
for s = 1, n, 5000 do
  local e = math.min(s + 4999, n)
  local got = redis.call('HMGET', versions, unpack(ARGV, s + 2, e + 2))
  for j = 1, #got do current[s + j - 1] = got[j] end
end

local adds, rems, vers, attrs, gone = {}, {}, {}, {}, {}
local superseded = 0
for i = 1, n do
  local v = base + i - 1
  local old = current[i]
  if old and tonumber(old) >= v then
    superseded = superseded + 1
  else
    local id = ARGV[i + 2]
    vers[#vers + 1] = id
    vers[#vers + 1] = v
    if string.byte(acts, i) == 43 then -- '+'
      adds[#adds + 1] = id
      attrs[#attrs + 1] = id
      attrs[#attrs + 1] = ARGV[n + 2 + i]
    else
      rems[#rems + 1] = id
      gone[#gone + 1] = id
    end
  end
end

local function variadic(cmd, key, list, step)
  for s = 1, #list, step do
    redis.call(cmd, key, unpack(list, s, math.min(s + step - 1, #list)))
  end
end
variadic('SADD', members, adds, 7000)
variadic('SREM', members, rems, 7000)
variadic('HSET', versions, vers, 7000)
variadic('HSET', attributes, attrs, 7000)
variadic('HDEL', attributes, gone, 7000)
return {#adds, #rems, superseded}
