-- SUBMIT: accept one job atomically: idempotency key, job hash, stream entry (or, over its
-- tenant's fair share, a place in the tenant's backlog; see share_count in the prelude).
-- KEYS[1] = the stream of the job's priority level (STREAM)
-- KEYS[2] = the job hash (HASH)
-- KEYS[3] = the tenant's share hash on this model (HASH; touched only with a share cap)
-- KEYS[4] = the tenant's backlog list of the job's priority level (LIST; idem)
-- KEYS[5] = the idempotency key (STRING; only when the request has one)
-- ARGV[1] = job id
-- ARGV[2] = envelope bytes
-- ARGV[3] = deadline ms (0 = none)
-- ARGV[4] = max attempts
-- ARGV[5] = reply stream key ('' = nobody waits)
-- ARGV[6] = request fingerprint
-- ARGV[7] = idempotency TTL s
-- ARGV[8] = result TTL ms of this job (0 = the queue's default)
-- ARGV[9] = model version
-- ARGV[10] = tenant ('' = none; jobs are read back by their tenant only)
-- ARGV[11] = most entries the stream may hold (0 = no limit)
-- ARGV[12] = the tenant's share cap (0 = no fair share)
-- ARGV[13] = most jobs the tenant may have queued on this model (0 = no limit)
-- Returns {'OK', job id} | {'EXISTS', existing job id} | {'MISMATCH', existing job id}
--   | {'FULL', stream length} | {'QUOTA', jobs the tenant has queued} (refused: nothing written)
-- Sent twice (a call whose reply was lost with its connection, retried; see SUBMIT_LEAN), it
-- answers as the first did and writes nothing: job ids are never reused, so a job hash that
-- exists is this call's own.
if #KEYS == 5 then
  local reused = reuse_of(KEYS[5], ARGV[6])
  if reused then
    return reused
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'OK', ARGV[1]}
end
local cap, quota = tonumber(ARGV[12]), tonumber(ARGV[13])
local shared = cap > 0
local ready, backlog = 0, 0
if shared then
  local s = redis.call('HMGET', KEYS[3], 'ready', 'backlog')
  ready, backlog = tonumber(s[1] or 0), tonumber(s[2] or 0)
  if quota > 0 and ready + backlog >= quota then
    return {'QUOTA', tostring(ready + backlog)}
  end
end
local depth = redis.call('XLEN', KEYS[1]) + backlog
if tonumber(ARGV[11]) > 0 and depth >= tonumber(ARGV[11]) then
  return {'FULL', tostring(depth)}
end
local entry = ''
if shared and ready >= cap then
  redis.call('RPUSH', KEYS[4], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'backlog', 1)
else
  entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
  if shared then
    redis.call('HINCRBY', KEYS[3], 'ready', 1)
  end
end
redis.call('HSET', KEYS[2], 'env', ARGV[2], 'state', 'QUEUED', 'attempt', 0,
  'max_attempts', ARGV[4], 'deadline_ms', ARGV[3], 'reply_to', ARGV[5],
  'entry', entry, 'created_ms', now_ms(), 'version', ARGV[9], 'tenant', ARGV[10],
  'share', cap)
if ARGV[8] ~= '0' then
  redis.call('HSET', KEYS[2], 'ttl_ms', ARGV[8])
end
if #KEYS == 5 then
  redis.call('SET', KEYS[5], ARGV[1] .. '|' .. ARGV[6], 'EX', ARGV[7])
end
return {'OK', ARGV[1]}
