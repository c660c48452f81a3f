-- COMPLETE: record the outcome of each job of a batch, reply, ack. Fenced and idempotent:
-- a worker that lost its lease writes nothing. The job hash is the fence: REAP rewrites
-- `entry` and `owner` in the same script that reclaims the stream entry.
-- KEYS[1] = the stream the entries were read from (STREAM)
-- KEYS[1+i] = the job hash of item i (HASH)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = result TTL ms
-- ARGV[5i-1] = entry id of item i
-- ARGV[5i] = job id of item i
-- ARGV[5i+1] = state of item i (SUCCEEDED | FAILED)
-- ARGV[5i+2] = JobResult bytes of item i
-- ARGV[5i+3] = reply stream of item i when it is a lean job ('' = a job with a hash)
-- The reply goes to the job's `reply_to` stream (see reply in the prelude). A lean job has
-- no hash: the entry's ownership in the pending list is its fence, and nothing but the
-- reply is written.
-- Returns one 1 (recorded) or 0 (lease lost, dropped) per item.
-- The fence of a lean item: its entry is still pending with this consumer.
local function complete_lean(job_key, entry, job_id, state, result, reply_to)
  if not is_owner(KEYS[1], ARGV[1], entry, ARGV[2]) then
    return 0
  end
  reply(job_key, job_id, state, {'result', result}, reply_to)
  redis.call('XACK', KEYS[1], ARGV[1], entry)
  redis.call('XDEL', KEYS[1], entry)
  return 1
end

-- The fence of an item with a job hash: the hash names this entry and this consumer.
local function complete_hashed(job_key, entry, job_id, state, result)
  local f = redis.call('HMGET', job_key, 'state', 'entry', 'owner', 'cancel', 'ttl_ms')
  if f[1] ~= 'RUNNING' or f[2] ~= entry or f[3] ~= ARGV[2] then
    return 0
  end
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
  return 1
end

local out = {}
for i = 1, #KEYS - 1 do
  local job_key = KEYS[1 + i]
  local base = 3 + 5 * (i - 1)
  local entry, job_id, state, result = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  if ARGV[base + 5] ~= '' then
    out[i] = complete_lean(job_key, entry, job_id, state, result, ARGV[base + 5])
  else
    out[i] = complete_hashed(job_key, entry, job_id, state, result)
  end
end
return out
