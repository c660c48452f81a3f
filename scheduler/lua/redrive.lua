-- REDRIVE: queue a dead-lettered job again with fresh attempts and no deadline (an operator
-- decided it should run), and remove its dead-letter entry.
-- KEYS[1] = the model's normal stream (STREAM)
-- KEYS[2] = the job hash (HASH)
-- KEYS[3] = the model's dead-letter stream (STREAM)
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(4):
-- KEYS[4] = high stream (STREAM)
-- KEYS[5] = normal stream (STREAM)
-- KEYS[6] = low stream (STREAM)
-- KEYS[7] = job hash template (+ job id; HASH)
-- KEYS[8] = share hash template (+ tenant; HASH)
-- KEYS[9] = high backlog list template (+ tenant; LIST)
-- KEYS[10] = normal backlog list template (+ tenant; LIST)
-- KEYS[11] = low backlog list template (+ tenant; LIST)
-- ARGV[1] = job id
-- ARGV[2] = dead-letter entry id
-- Returns 1 when queued again, 0 when the job is not dead-lettered or its record expired.
local f = redis.call('HMGET', KEYS[2], 'state', 'env')
if f[1] ~= 'DEAD_LETTERED' or not f[2] then
  return 0
end
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'QUEUED', 'attempt', 0, 'entry', entry, 'owner', '',
  'deadline_ms', 0)
redis.call('HDEL', KEYS[2], 'error_code', 'error_reason', 'error_message')
share_count(queue_keys(4), KEYS[2], 1)
redis.call('PERSIST', KEYS[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return 1
