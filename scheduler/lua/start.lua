-- START: a worker takes the entries it has just read. Fenced by the job hash: REAP rewrites
-- `entry` in the same script that reclaims an entry, so a stale entry id no longer matches.
-- KEYS[1] stream  KEYS[2] dead-letter stream  KEYS[2+i] job hash of item i
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] result TTL ms  ARGV[3+2i-1] entry id, ARGV[3+2i] job id
-- Returns one {status, attempt, envelope} per item; status is RUN (go), SKIP (not ours, or
-- the job is no longer queued), EXPIRED or DEAD (the waiter has been answered).
local now = now_ms()
local out = {}
for i = 1, #KEYS - 2 do
  local job_key, entry, job_id = KEYS[2 + i], ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local f = redis.call('HMGET', job_key, 'state', 'entry', 'deadline_ms', 'attempt',
    'max_attempts', 'env')
  local deadline, attempt = tonumber(f[3]), tonumber(f[4])
  if f[1] ~= 'QUEUED' or f[2] ~= entry then
    -- Terminal, cancelled, or a stale entry of a requeued job: drop the entry only.
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    out[i] = {'SKIP', 0, ''}
  elseif deadline > 0 and now > deadline then
    finish_error(KEYS[1], ARGV[1], entry, job_key, job_id, ARGV[3], 'EXPIRED',
      'DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED',
      'the deadline passed while the request was queued; it was never run')
    out[i] = {'EXPIRED', attempt, ''}
  elseif attempt >= tonumber(f[5]) then
    dead_letter(KEYS[1], ARGV[1], entry, job_key, job_id, ARGV[3], KEYS[2], attempt)
    out[i] = {'DEAD', attempt, ''}
  else
    attempt = attempt + 1
    redis.call('HSET', job_key, 'state', 'RUNNING', 'owner', ARGV[2], 'attempt', attempt)
    out[i] = {'RUN', attempt, f[6]}
  end
end
return out
