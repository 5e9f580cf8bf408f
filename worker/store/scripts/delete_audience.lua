-- Remove an audience's metadata (the rest of its keys are unlinked after), guarded.
--
-- KEYS[1] audience meta hash, KEYS[2] replace hash
-- ARGV[1] account, ARGV[2] expected revision ('' for no If-Match, '*' for any)
-- Returns ok | not_found | not_ready | precondition_failed, and the audience's name.
local meta, replace = KEYS[1], KEYS[2]
if redis.call('HGET', meta, 'account') ~= ARGV[1] then return {'not_found', ''} end
if redis.call('EXISTS', replace) == 1 then return {'not_ready', ''} end
local rev = redis.call('HGET', meta, 'rev')
if ARGV[2] ~= '' and ARGV[2] ~= '*' and ARGV[2] ~= rev then
  return {'precondition_failed', ''}
end
local name = redis.call('HGET', meta, 'name')
redis.call('DEL', meta)
return {'ok', name}
