-- TRAIN_CREATE: queue a training job with its record and first event, atomically.
-- KEYS[1] stream  KEYS[2] job hash  KEYS[3] events stream  KEYS[4] index  [KEYS[5] idempotency]
-- ARGV[1] job id  ARGV[2] envelope  ARGV[3] max attempts  ARGV[4] TrainingJob record
-- ARGV[5] first TrainingEvent (QUEUED)  ARGV[6] fingerprint  ARGV[7] idempotency TTL s
-- ARGV[8] tenant ('' = none); KEYS[4] is that tenant's index
-- ARGV[9] data-parallel replicas (TRAIN_START gang-leases a job of more than 1)
-- ARGV[10] most training jobs the tenant may have queued or running (0 = no limit)
-- Returns {'OK'|'EXISTS'|'MISMATCH', job id} | {'QUOTA', jobs the tenant has active}
if #KEYS == 5 then
  local reused = reuse_of(KEYS[5], ARGV[6])
  if reused then
    return reused
  end
end
-- The tenant's active jobs (a set, cleaned here: members that ended are dropped).
local active = prefix_of(KEYS[2]) .. ':active:' .. ARGV[8]
local quota = tonumber(ARGV[10] or 0)
if quota > 0 then
  for _, id in ipairs(redis.call('SMEMBERS', active)) do
    local state = redis.call('HGET', prefix_of(KEYS[2]) .. ':job:' .. id, 'state')
    if state ~= 'QUEUED' and state ~= 'RUNNING' then
      redis.call('SREM', active, id)
    end
  end
  local n = redis.call('SCARD', active)
  if n >= quota then
    return {'QUOTA', tostring(n)}
  end
  redis.call('SADD', active, ARGV[1])
end
local now = now_ms()
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'env', ARGV[2], 'state', 'QUEUED', 'attempt', 0,
  'max_attempts', ARGV[3], 'deadline_ms', 0, 'reply_to', '', 'entry', entry,
  'created_ms', now, 'record', ARGV[4], 'seq', 1, 'tenant', ARGV[8],
  'replicas', ARGV[9] or 1)
redis.call('XADD', KEYS[3], '*', 'seq', 1, 'ev', ARGV[5])
redis.call('ZADD', KEYS[4], now, ARGV[1])
if #KEYS == 5 then
  redis.call('SET', KEYS[5], ARGV[1] .. '|' .. ARGV[6], 'EX', ARGV[7])
end
return {'OK', ARGV[1]}
