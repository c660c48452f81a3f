-- MODEL_VERSION_FAILURE: counts one runner timeout or crash of version ARGV[1]
-- (field `fail:N`) and, once the count reaches ARGV[2], stores the version as ARGV[3] (the
-- same ModelVersion, QUARANTINED).
-- KEYS[1] = the model record (HASH)
-- ARGV[1] = version
-- ARGV[2] = failures that quarantine it
-- ARGV[3] = the version's ModelVersion, QUARANTINED
-- Returns the count (0 when the version no longer exists).
local record = KEYS[1]
if redis.call('HEXISTS', record, 'v:' .. ARGV[1]) == 0 then
  return 0
end
local count = redis.call('HINCRBY', record, 'fail:' .. ARGV[1], 1)
if count >= tonumber(ARGV[2]) then
  redis.call('HSET', record, 'v:' .. ARGV[1], ARGV[3])
end
return count
