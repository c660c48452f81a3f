-- ADMIN_BOOTSTRAP: installs the first admin key (MAAS_ADMIN_KEY_FILE) once per cluster.
-- KEYS[1] = the bootstrap marker (STRING)
-- KEYS[2] = the key's hash (HASH)
-- KEYS[3] = the set of every key id (SET)
-- ARGV[1] = key id
-- ARGV[2] = sha256 of the key
-- ARGV[3] = its ApiKey record (protobuf)
-- Returns 1 when it installed the key; 0 when a bootstrap happened before: the key is left
-- as it is, so a bootstrap key revoked since stays revoked across gateway restarts.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[2], 'sha256', ARGV[2], 'record', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1])
return 1
