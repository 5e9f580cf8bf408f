-- Take or renew the reconciler's lease: one worker sweeps at a time.
--
-- KEYS[1] lease key
-- ARGV[1] holder id, ARGV[2] lease length in ms
-- Returns 1 when the caller holds the lease (taken now or renewed), else 0.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
