-- RELEASE: a worker hands a job it holds back to the queue (drain on SIGTERM, or a retryable
-- failure). With refund = 1 the attempt is not counted (the job never really ran).
-- KEYS[1] = the stream the job's entry is in (STREAM)
-- KEYS[2] = the job hash (HASH)
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(3):
-- KEYS[3] = high stream (STREAM)
-- KEYS[4] = normal stream (STREAM)
-- KEYS[5] = low stream (STREAM)
-- KEYS[6] = job hash template (+ job id; HASH)
-- KEYS[7] = share hash template (+ tenant; HASH)
-- KEYS[8] = high backlog list template (+ tenant; LIST)
-- KEYS[9] = normal backlog list template (+ tenant; LIST)
-- KEYS[10] = low backlog list template (+ tenant; LIST)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = entry id
-- ARGV[4] = refund (0 | 1)
-- ARGV[5] = job id
-- ARGV[6] = 1 when it is a lean job (no hash yet: adopted first, see the prelude)
-- Returns 1 when requeued, 0 when the lease was already lost.
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[2]) == 0
    and is_owner(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then
  local e = entry_fields(KEYS[1], ARGV[3])
  if e and e.env then
    adopt_lean(KEYS[2], e, ARGV[3], ARGV[2], 1)
  end
end
local f = redis.call('HMGET', KEYS[2], 'state', 'entry', 'owner', 'attempt')
if f[1] ~= 'RUNNING' or f[2] ~= ARGV[3] or f[3] ~= ARGV[2]
    or not is_owner(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then
  return 0
end
local fresh = redis.call('XADD', KEYS[1], '*', 'job', ARGV[5])
local attempt = tonumber(f[4])
if ARGV[4] == '1' and attempt > 0 then
  attempt = attempt - 1
end
redis.call('HSET', KEYS[2], 'state', 'QUEUED', 'entry', fresh, 'owner', '', 'attempt', attempt)
share_count(queue_keys(3), KEYS[2], 1)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
