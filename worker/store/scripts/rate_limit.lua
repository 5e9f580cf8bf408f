-- Take one request from an account's token bucket, shared by every API process.
--
-- KEYS[1] bucket hash {tokens, at_ms}
-- ARGV[1] rate (requests per second, also the burst size), ARGV[2] now in ms
-- Returns {allowed (1|0), tokens left (floored), ms until one token is back}.
local bucket = KEYS[1]
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local state = redis.call('HMGET', bucket, 'tokens', 'at_ms')
local tokens = tonumber(state[1]) or rate
local at = tonumber(state[2]) or now
tokens = math.min(rate, tokens + (math.max(now - at, 0) * rate / 1000))
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at_ms', now)
redis.call('PEXPIRE', bucket, math.ceil(1000 * 2))
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {allowed, math.floor(tokens), wait}
