-- TRAIN_CREATE: queue a training job with its record and first event, atomically.
-- KEYS[1] = the training stream (STREAM)
-- KEYS[2] = the job hash (HASH)
-- KEYS[3] = the job's events stream (STREAM)
-- KEYS[4] = the tenant's index (ZSET)
-- KEYS[5] = the tenant's active jobs (SET; touched only with a quota)
-- KEYS[6] = job hash template (+ job id of an active job; HASH)
-- KEYS[7] = the idempotency key (STRING; only when the request has one)
-- ARGV[1] = job id
-- ARGV[2] = envelope
-- ARGV[3] = max attempts
-- ARGV[4] = TrainingJob record
-- ARGV[5] = first TrainingEvent (QUEUED)
-- ARGV[6] = fingerprint
-- ARGV[7] = idempotency TTL s
-- ARGV[8] = tenant ('' = none)
-- ARGV[9] = data-parallel replicas (TRAIN_START gang-leases a job of more than 1)
-- ARGV[10] = most training jobs the tenant may have queued or running (0 = no limit)
-- Returns {'OK'|'EXISTS'|'MISMATCH', job id} | {'QUOTA', jobs the tenant has active}
-- Sent twice (a reply lost with its connection, the call retried), it answers as the first
-- did and writes nothing: job ids are never reused, so a job hash that exists is its own.
if #KEYS == 7 then
  local reused = reuse_of(KEYS[7], ARGV[6])
  if reused then
    return reused
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'OK', ARGV[1]}
end
-- The tenant's active jobs (a set, cleaned here: members that ended are dropped).
local quota = tonumber(ARGV[10] or 0)
if quota > 0 then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local state = redis.call('HGET', KEYS[6] .. id, 'state')
    if state ~= 'QUEUED' and state ~= 'RUNNING' then
      redis.call('SREM', KEYS[5], id)
    end
  end
  local n = redis.call('SCARD', KEYS[5])
  if n >= quota then
    return {'QUOTA', tostring(n)}
  end
  redis.call('SADD', KEYS[5], ARGV[1])
end
local now = now_ms()
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'env', ARGV[2], 'state', 'QUEUED', 'attempt', 0,
  'max_attempts', ARGV[3], 'deadline_ms', 0, 'reply_to', '', 'entry', entry,
  'created_ms', now, 'record', ARGV[4], 'seq', 1, 'tenant', ARGV[8],
  'replicas', ARGV[9] or 1)
redis.call('XADD', KEYS[3], '*', 'seq', 1, 'ev', ARGV[5])
redis.call('ZADD', KEYS[4], now, ARGV[1])
if #KEYS == 7 then
  redis.call('SET', KEYS[7], ARGV[1] .. '|' .. ARGV[6], 'EX', ARGV[7])
end
return {'OK', ARGV[1]}
