-- TRAIN_UPDATE: a worker that holds a training job's lease records events and its record,
-- and optionally ends the job. Fenced: a worker that lost the lease writes nothing.
-- KEYS[1] = the training stream (STREAM)
-- KEYS[2] = the job hash (HASH)
-- KEYS[3] = the job's events stream (STREAM)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = entry id
-- ARGV[4] = terminal state ('' = still running)
-- ARGV[5] = TrainingJob record ('' = unchanged)
-- ARGV[6] = this call's token (unique per call)
-- ARGV[7..] = TrainingEvent bytes, in order
-- Returns -1 when the lease is lost, else 1 if cancellation was requested, 0 if not.
-- Sent twice (its reply lost with its connection, the call retried), it answers as the first
-- did and writes nothing: the job hash keeps the token of the last update (`update`).
local f = redis.call('HMGET', KEYS[2], 'state', 'entry', 'owner', 'cancel', 'update')
if f[5] == ARGV[6] then
  return tonumber(f[4] or '0')
end
if f[1] ~= 'RUNNING' or f[2] ~= ARGV[3] or f[3] ~= ARGV[2]
    or not is_owner(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then
  return -1
end
redis.call('HSET', KEYS[2], 'update', ARGV[6])
for i = 7, #ARGV do
  local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'seq', seq, 'ev', ARGV[i])
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], 'record', ARGV[5])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], 'state', ARGV[4], 'owner', '')
  redis.call('HDEL', KEYS[2], 'env')
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
end
return tonumber(f[4] or '0')
