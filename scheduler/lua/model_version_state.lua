-- MODEL_VERSION_STATE: stores version ARGV[1] again as ARGV[2] (the same ModelVersion with
-- its new state) and, when ARGV[3] = '1' (it became READY), moves `latest` to it if it is
-- newer. A version deleted meanwhile stays deleted.
-- KEYS[1] = the model record (HASH)
-- ARGV[1] = version
-- ARGV[2] = its ModelVersion with the new state
-- ARGV[3] = '1' when it became READY
-- Returns 'ok' | 'missing'.
local record = KEYS[1]
if redis.call('HEXISTS', record, 'v:' .. ARGV[1]) == 0 then
  return 'missing'
end
redis.call('HSET', record, 'v:' .. ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  local latest = tonumber(redis.call('HGET', record, 'latest') or '0')
  if tonumber(ARGV[1]) > latest then
    redis.call('HSET', record, 'latest', ARGV[1])
  end
end
return 'ok'
