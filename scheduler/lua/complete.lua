-- COMPLETE: record the outcome of each job of a batch, reply, ack. Fenced and idempotent:
-- a worker that lost its lease writes nothing. The job hash is the fence: REAP rewrites
-- `entry` and `owner` in the same script that reclaims the stream entry.
-- KEYS[1] = the stream the entries were read from (STREAM)
-- KEYS[1+i] = the job hash of item i (HASH)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = result TTL ms
-- ARGV[4i] = entry id of item i
-- ARGV[4i+1] = job id of item i
-- ARGV[4i+2] = state of item i (SUCCEEDED | FAILED)
-- ARGV[4i+3] = JobResult bytes of item i
-- The reply goes to the job's `reply_to` stream (see reply in the prelude).
-- Returns one 1 (recorded) or 0 (lease lost, dropped) per item.
local out = {}
for i = 1, #KEYS - 1 do
  local job_key = KEYS[1 + i]
  local base = 3 + 4 * (i - 1)
  local entry, job_id, state, result = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local f = redis.call('HMGET', job_key, 'state', 'entry', 'owner', 'cancel', 'ttl_ms')
  if f[1] == 'RUNNING' and f[2] == entry and f[3] == ARGV[2] then
    if f[4] == '1' then
      -- Cancelled while running: the result is discarded.
      state, result = 'CANCELLED', ''
    end
    redis.call('HSET', job_key, 'state', state, 'result', result, 'owner', '')
    redis.call('HDEL', job_key, 'env')
    redis.call('PEXPIRE', job_key, f[5] or ARGV[3])
    reply(job_key, job_id, state, {'result', result})
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
