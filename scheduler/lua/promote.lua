-- PROMOTE: jobs whose retry backoff is over go back to the stream of their priority level.
-- KEYS[1] = the model's delayed set (ZSET: job id → due Unix ms)
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(2):
-- KEYS[2] = high stream (STREAM)
-- KEYS[3] = normal stream (STREAM)
-- KEYS[4] = low stream (STREAM)
-- KEYS[5] = job hash template (+ job id; HASH)
-- KEYS[6] = share hash template (+ tenant; HASH)
-- KEYS[7] = high backlog list template (+ tenant; LIST)
-- KEYS[8] = normal backlog list template (+ tenant; LIST)
-- KEYS[9] = low backlog list template (+ tenant; LIST)
-- ARGV[1] = most jobs to move
-- Returns how many jobs went back to a stream (cancelled or expired ones are dropped).
local q = queue_keys(2)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, ARGV[1])
local moved = 0
for _, job_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], job_id)
  local job_key = q.job .. job_id
  local f = redis.call('HMGET', job_key, 'state', 'entry', 'retry_level')
  if f[1] == 'QUEUED' and f[2] == '' then
    local entry = redis.call('XADD', q.stream[f[3] or 'normal'], '*', 'job', job_id)
    redis.call('HSET', job_key, 'entry', entry)
    share_count(q, job_key, 1)
    moved = moved + 1
  end
end
return moved
