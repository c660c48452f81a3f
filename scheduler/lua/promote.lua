-- PROMOTE: jobs whose retry backoff is over go back to the stream of their priority level.
-- KEYS[1] the model's delayed set (zset: job id → due Unix ms)
-- ARGV[1] key prefix of this model's keys  ARGV[2] most jobs to move
-- Returns how many jobs went back to a stream (cancelled or expired ones are dropped).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, ARGV[2])
local moved = 0
for _, job_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], job_id)
  local job_key = ARGV[1] .. ':job:' .. job_id
  local f = redis.call('HMGET', job_key, 'state', 'entry', 'retry_level')
  if f[1] == 'QUEUED' and f[2] == '' then
    local entry = redis.call('XADD', level_stream(ARGV[1], f[3] or 'normal'), '*', 'job', job_id)
    redis.call('HSET', job_key, 'entry', entry)
    share_count(job_key, 1)
    moved = moved + 1
  end
end
return moved
