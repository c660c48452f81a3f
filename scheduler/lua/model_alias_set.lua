-- MODEL_ALIAS_SET: points alias ARGV[1] of a model at version ARGV[2], atomically.
-- Checked first, written last: the version must exist, so an alias never points at nothing,
-- and MODEL_VERSION_DELETE cannot interleave.
-- KEYS[1] = the model record (HASH)
-- ARGV[1] = alias
-- ARGV[2] = version
-- Returns {'ok', previous version or ''} | {'missing'} (no such version) | {'nomodel'}.
local record = KEYS[1]
if redis.call('EXISTS', record) == 0 then
  return {'nomodel'}
end
if redis.call('HEXISTS', record, 'v:' .. ARGV[2]) == 0 then
  return {'missing'}
end
local previous = redis.call('HGET', record, 'a:' .. ARGV[1]) or ''
redis.call('HSET', record, 'a:' .. ARGV[1], ARGV[2])
return {'ok', previous}
