-- Prelude shared by the queue scripts (scheduler/scripts.py prepends it to each).
-- Lua scripts do not roll back: every helper checks first and writes last.

local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- Sends a job's terminal outcome to the gateway waiting for it (if any).
-- `extra` is a flat list of field/value pairs (e.g. 'result', bytes or 'code', c, ...).
local function reply(job_key, job_id, state, extra)
  local reply_to = redis.call('HGET', job_key, 'reply_to')
  if reply_to and reply_to ~= '' then
    redis.call('XADD', reply_to, 'MAXLEN', '~', 10000, '*', 'job', job_id, 'state', state,
      unpack(extra))
    -- A dead gateway's stream goes away an hour after its last reply.
    redis.call('PEXPIRE', reply_to, 3600000)
  end
end

-- Ends a job that did not produce a result: state, error, reply, entry removed.
local function finish_error(stream, group, entry, job_key, job_id, ttl_ms, state, code, reason,
                            message)
  redis.call('HSET', job_key, 'state', state, 'error_code', code, 'error_reason', reason,
    'error_message', message, 'owner', '')
  redis.call('PEXPIRE', job_key, redis.call('HGET', job_key, 'ttl_ms') or ttl_ms)
  reply(job_key, job_id, state, {'code', code, 'reason', reason, 'message', message})
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

local function is_owner(stream, group, entry, consumer)
  return #redis.call('XPENDING', stream, group, entry, entry, 1, consumer) > 0
end

local function dead_letter(stream, group, entry, job_key, job_id, ttl_ms, dead_key, attempt)
  redis.call('XADD', dead_key, 'MAXLEN', '~', 10000, '*', 'job', job_id, 'attempts', attempt)
  finish_error(stream, group, entry, job_key, job_id, ttl_ms, 'DEAD_LETTERED', 'UNAVAILABLE',
    'DEAD_LETTERED', 'the job was attempted ' .. attempt ..
    ' times and never completed (each attempt lost its worker); it is dead-lettered')
end

-- Starts one delivered entry (START and CLAIM share this). Returns {status, attempt, env}:
-- RUN (go), SKIP (no longer queued, or a stale entry), EXPIRED or DEAD (waiter answered).
local function start_one(stream, dead_key, group, consumer, ttl_ms, job_key, entry, job_id, now)
  local f = redis.call('HMGET', job_key, 'state', 'entry', 'deadline_ms', 'attempt',
    'max_attempts', 'env')
  local deadline, attempt = tonumber(f[3]), tonumber(f[4])
  if f[1] ~= 'QUEUED' or f[2] ~= entry then
    -- Terminal, cancelled, or a stale entry of a requeued job: drop the entry only.
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    return {'SKIP', 0, ''}
  elseif deadline > 0 and now > deadline then
    finish_error(stream, group, entry, job_key, job_id, ttl_ms, 'EXPIRED',
      'DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED',
      'the deadline passed while the request was queued; it was never run')
    return {'EXPIRED', attempt, ''}
  elseif attempt >= tonumber(f[5]) then
    dead_letter(stream, group, entry, job_key, job_id, ttl_ms, dead_key, attempt)
    return {'DEAD', attempt, ''}
  end
  attempt = attempt + 1
  redis.call('HSET', job_key, 'state', 'RUNNING', 'owner', consumer, 'attempt', attempt)
  return {'RUN', attempt, f[6]}
end

-- An idempotency key already used: {'EXISTS', id} for the same request (by fingerprint),
-- {'MISMATCH', id} for a different one; nil when the key is new.
local function reuse_of(idem_key, fingerprint)
  local existing = redis.call('GET', idem_key)
  if not existing then
    return nil
  end
  local sep = string.find(existing, '|', 1, true)
  local id = string.sub(existing, 1, sep - 1)
  if string.sub(existing, sep + 1) ~= fingerprint then
    return {'MISMATCH', id}
  end
  return {'EXISTS', id}
end
