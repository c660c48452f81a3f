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
  redis.call('PEXPIRE', job_key, ttl_ms)
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
