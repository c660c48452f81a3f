-- REAP: reclaim entries whose lease expired and requeue (or expire, or dead-letter) their jobs.
-- KEYS[1] = the stream of the priority level reaped (STREAM)
-- KEYS[2] = the model's dead-letter stream (STREAM)
-- KEYS[3] = the model's delayed set (ZSET)
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(4):
-- KEYS[4] = high stream (STREAM)
-- KEYS[5] = normal stream (STREAM)
-- KEYS[6] = low stream (STREAM)
-- KEYS[7] = job hash template (+ job id; HASH)
-- KEYS[8] = share hash template (+ tenant; HASH)
-- KEYS[9] = high backlog list template (+ tenant; LIST)
-- KEYS[10] = normal backlog list template (+ tenant; LIST)
-- KEYS[11] = low backlog list template (+ tenant; LIST)
-- ARGV[1] = group
-- ARGV[2] = reaper consumer
-- ARGV[3] = lease ms (min idle)
-- ARGV[4] = count
-- ARGV[5] = result TTL ms
-- ARGV[6] = priority level of KEYS[1] (high | normal | low)
-- ARGV[7] = retry backoff base ms
-- ARGV[8] = backoff cap ms
-- ARGV[9] = jitter seed in [0, 1)
-- A job that lost its worker waits its backoff in the delayed set (see requeue_later); a lean
-- job is adopted first (its first attempt counted), then treated as any other.
-- Returns {requeued, expired, dead, dropped}.
local now = now_ms()
local q = queue_keys(4)
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0',
  'COUNT', ARGV[4], 'JUSTID')
local counts = {0, 0, 0, 0}
for _, entry in ipairs(claimed[2]) do
  local rows = redis.call('XRANGE', KEYS[1], entry, entry)
  local job_id = rows[1] and rows[1][2][2]
  local job_key = q.job .. (job_id or '')
  if job_id and redis.call('EXISTS', job_key) == 0 then
    local e = entry_table(rows[1][2])
    if e.env then  -- a lean job that lost its worker: it goes on with a job hash
      adopt_lean(job_key, e, entry, ARGV[2], 1)
    end
  end
  local f = job_id and redis.call('HMGET', job_key, 'state', 'entry', 'deadline_ms', 'attempt',
    'max_attempts') or {}
  local deadline = tonumber(f[3] or 0)
  if f[1] == 'QUEUED' and f[2] == entry then
    share_count(q, job_key, -1)  -- read but never started: it leaves the undelivered entries
  end
  if (f[1] ~= 'QUEUED' and f[1] ~= 'RUNNING') or f[2] ~= entry then
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    counts[4] = counts[4] + 1
  elseif deadline > 0 and now > deadline then
    finish_error(KEYS[1], ARGV[1], entry, job_key, job_id, ARGV[5], 'EXPIRED',
      'DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED',
      'the deadline passed before the request could be run again after its worker was lost')
    counts[2] = counts[2] + 1
  elseif tonumber(f[4]) >= tonumber(f[5]) then
    dead_letter(KEYS[1], ARGV[1], entry, job_key, job_id, ARGV[5], KEYS[2], f[4])
    counts[3] = counts[3] + 1
  else
    local jitter = (tonumber(ARGV[9]) + counts[1] * 0.6180339887) % 1
    requeue_later(KEYS[3], job_key, job_id, ARGV[6],
      backoff_ms(tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(f[4]), jitter), now)
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    counts[1] = counts[1] + 1
  end
end
return counts
