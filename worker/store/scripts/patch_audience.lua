-- Change an audience's own fields, guarded by its revision and readiness.
--
-- KEYS[1] audience meta hash, KEYS[2] replace hash (present while a replace runs)
-- ARGV[1] account, ARGV[2] expected revision ('' for no If-Match, '*' for any),
-- ARGV[3] now (ISO-8601), ARGV[4] '1' when the filter changes, then field/value pairs
-- to set, then '--', then fields to delete.
-- The revision (the ETag) moves only here, so membership and cached sizes never change
-- it. A changed filter clears the cached size and bumps the filter revision, which a
-- running count checks. Returns {ok | not_found | not_ready | precondition_failed, the
-- name the audience had before}.
local meta, replace = KEYS[1], KEYS[2]
if redis.call('HGET', meta, 'account') ~= ARGV[1] then return {'not_found', ''} end
if redis.call('EXISTS', replace) == 1 then return {'not_ready', ''} end
local rev = redis.call('HGET', meta, 'rev')
if ARGV[2] ~= '' and ARGV[2] ~= '*' and ARGV[2] ~= rev then
  return {'precondition_failed', ''}
end
local old_name = redis.call('HGET', meta, 'name')
local sets, dels, i = {}, {}, 5
while ARGV[i] ~= '--' do
  sets[#sets + 1] = ARGV[i]
  i = i + 1
end
for j = i + 1, #ARGV do dels[#dels + 1] = ARGV[j] end
if ARGV[4] == '1' then
  redis.call('HINCRBY', meta, 'filter_rev', 1)
  dels[#dels + 1] = 'cached_size'
  dels[#dels + 1] = 'cached_size_updated_at'
end
if #sets > 0 then redis.call('HSET', meta, unpack(sets)) end
if #dels > 0 then redis.call('HDEL', meta, unpack(dels)) end
redis.call('HSET', meta, 'updated_at', ARGV[3])
redis.call('HINCRBY', meta, 'rev', 1)
return {'ok', old_name}
