-- Drop an audience from the reconciler's index, unless work was registered meanwhile.
--
-- KEYS[1] reconcile index zset (audience -> when work was last registered, ms)
-- ARGV[1] audience id, ARGV[2] the score the caller saw when it found nothing pending
-- Registration (before every accept) moves the score, so an accept that raced the
-- caller's check keeps its audience indexed. Returns 1 when dropped.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
