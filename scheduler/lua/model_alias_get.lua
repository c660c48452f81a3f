-- MODEL_ALIAS_GET: the version alias ARGV[1] points to and that version's record, read in
-- one step (a concurrent move and delete cannot leave the alias pointing at nothing).
-- KEYS[1] = the model record (HASH)
-- ARGV[1] = alias
-- Returns {version, ModelVersion bytes} | {'missing'} | {'nomodel'}.
local record = KEYS[1]
local version = redis.call('HGET', record, 'a:' .. ARGV[1])
if not version then
  if redis.call('EXISTS', record) == 0 then
    return {'nomodel'}
  end
  return {'missing'}
end
return {version, redis.call('HGET', record, 'v:' .. version)}
