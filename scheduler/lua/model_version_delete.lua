-- MODEL_VERSION_DELETE: deletes version ARGV[1] of a model unless an alias points to it or
-- it is the only version; `latest` moves back to the highest remaining version.
-- KEYS[1] = the model record (HASH: `latest`, `v:N` → ModelVersion, `a:ALIAS` → N)
-- ARGV[1] = version
-- Returns {'ok'} | {'missing'} | {'nomodel'} | {'only'} | {'aliased', alias, ...}.
local record = KEYS[1]
local version = ARGV[1]
if redis.call('EXISTS', record) == 0 then
  return {'nomodel'}
end
if redis.call('HEXISTS', record, 'v:' .. version) == 0 then
  return {'missing'}
end
local fields = redis.call('HGETALL', record)
local aliases = {}
local highest = 0
for i = 1, #fields, 2 do
  local field, value = fields[i], fields[i + 1]
  local kind, rest = string.sub(field, 1, 2), string.sub(field, 3)
  if kind == 'a:' and value == version then
    table.insert(aliases, rest)
  elseif kind == 'v:' and rest ~= version and tonumber(rest) > highest then
    highest = tonumber(rest)
  end
end
if #aliases > 0 then
  table.sort(aliases)
  return {'aliased', unpack(aliases)}
end
if highest == 0 then
  return {'only'}
end
redis.call('HDEL', record, 'v:' .. version)
if redis.call('HGET', record, 'latest') == version then
  redis.call('HSET', record, 'latest', tostring(highest))
end
return {'ok'}
