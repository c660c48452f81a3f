-- Prelude shared by the queue scripts (scheduler/scripts.py prepends it to each).
-- Lua scripts do not roll back: every helper checks first and writes last.
-- Keys: a helper touches only keys its caller took from KEYS (built by scheduler/keys.py). A
-- key whose last part the script reads in Redis (a job id, a tenant) is completed with `..`
-- from its template in KEYS (see keys.py); tests/unit/test_lua_keys.py checks both.

local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- Fair share across tenants. A job submitted with a share cap (its tenant's weight times
-- MAAS_FAIR_SHARE_SLOTS; 0 = none) counts in `ready` of its tenant's share hash while its
-- entry waits undelivered in a stream. At the cap, the tenant's new jobs wait in its backlog
-- list of their level instead (state QUEUED, no entry), and every entry of the tenant that
-- leaves the undelivered set moves the next one in. So a tenant flooding a model keeps at
-- most its cap of entries ahead of another tenant's job, and busy tenants are served in
-- proportion to their caps.
local LEVELS = {'high', 'normal', 'low'}

-- The keys of one model's queue, from KEYS[i] .. KEYS[i + 7] (keys.queue_keys): its streams
-- by level, then templates completed with a job id (job hashes) or with a tenant read from a
-- job hash (share hashes, backlog lists by level).
local function queue_keys(i)
  return {
    stream = {high = KEYS[i], normal = KEYS[i + 1], low = KEYS[i + 2]},
    job = KEYS[i + 3],
    share = KEYS[i + 4],
    backlog = {high = KEYS[i + 5], normal = KEYS[i + 6], low = KEYS[i + 7]},
  }
end

-- Moves the tenant's backlogged jobs into the streams (high level first) up to its cap.
-- `q`: the model's queue_keys.
local function share_refill(q, tenant, cap, ready)
  local share = q.share .. tenant
  for _, level in ipairs(LEVELS) do
    while ready < cap do
      local job_id = redis.call('LPOP', q.backlog[level] .. tenant)
      if not job_id then
        break
      end
      redis.call('HINCRBY', share, 'backlog', -1)
      local job_key = q.job .. job_id
      -- A job cancelled or expired in the backlog is dropped here.
      if redis.call('HGET', job_key, 'state') == 'QUEUED' then
        local entry = redis.call('XADD', q.stream[level], '*', 'job', job_id)
        redis.call('HSET', job_key, 'entry', entry)
        ready = redis.call('HINCRBY', share, 'ready', 1)
      end
    end
  end
end

-- An undelivered entry of the job was added (delta 1) or left (delta -1; refills).
-- `q`: the model's queue_keys; `known`: the job's {tenant, share} when the caller has read
-- them already.
local function share_count(q, job_key, delta, known)
  local f = known or redis.call('HMGET', job_key, 'tenant', 'share')
  local cap = tonumber(f[2])
  if not cap or cap <= 0 then
    return
  end
  local share = q.share .. f[1]
  local ready = redis.call('HINCRBY', share, 'ready', delta)
  if ready < 0 then
    redis.call('HSET', share, 'ready', 0)
    ready = 0
  end
  if delta < 0 then
    share_refill(q, f[1], cap, ready)
  end
end

-- Requeues a job that lost its run (its worker died): it waits `delay_ms` in the model's
-- delayed set (exponential backoff with jitter), then PROMOTE puts it back in its stream.
local function requeue_later(delayed, job_key, job_id, level, delay_ms, now)
  redis.call('HSET', job_key, 'state', 'QUEUED', 'entry', '', 'owner', '', 'retry_level', level)
  redis.call('ZADD', delayed, now + delay_ms, job_id)
end

-- The backoff before attempt `attempt` + 1: base * 2^(attempt-1), capped, times 0.5..1.
local function backoff_ms(base_ms, max_ms, attempt, jitter)
  local delay = math.min(max_ms, base_ms * 2 ^ math.max(0, attempt - 1))
  return math.floor(delay * (0.5 + 0.5 * jitter))
end

-- Sends a job's terminal outcome to the gateway waiting for it (if any). The reply stream is
-- named by the job hash (`reply_to`, from keys.reply_stream at submit) or, for a lean job
-- (no hash), by its stream entry (`to`): the one key no script receives in KEYS (it lives in
-- the gateway's slot, not the model's; see issue 15).
-- `extra` is a flat list of field/value pairs (e.g. 'result', bytes or 'code', c, ...).
local function reply(job_key, job_id, state, extra, to)
  local reply_to = to
  if not reply_to then
    reply_to = redis.call('HGET', job_key, 'reply_to')
  end
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

-- Lean jobs. A synchronous call's job (SUBMIT_LEAN: no idempotency key, no tenant share)
-- has no job hash while all goes well: its stream entry carries what a job hash would hold
-- ('job' id, 'env' envelope, 'dl' deadline ms, 'ma' max attempts, 're' reply stream,
-- 'v' version, 't' tenant), its first delivery is its start (attempt 1, no write), and the
-- entry's pending-list ownership is its fence (COMPLETE checks XPENDING). A lean job that
-- leaves that path (its worker lost: REAP; handed back: RELEASE) is adopted: it gets the
-- job hash a SUBMITted job has (`adopt_lean`) and goes on as one. A hash that exists for a
-- lean entry's job id is a cancel mark (CANCEL of a lean job): START skips the entry.

-- An entry's flat field list as a table.
local function entry_table(flat)
  local e = {}
  for i = 1, #flat, 2 do
    e[flat[i]] = flat[i + 1]
  end
  return e
end

-- The fields of an entry still in its stream (nil once deleted).
local function entry_fields(stream, entry)
  local rows = redis.call('XRANGE', stream, entry, entry)
  return rows[1] and entry_table(rows[1][2])
end

-- Gives a lean job the job hash of a started job (state RUNNING, `attempt` attempts made).
local function adopt_lean(job_key, e, entry, owner, attempt)
  redis.call('HSET', job_key, 'env', e.env, 'state', 'RUNNING', 'attempt', attempt,
    'max_attempts', e.ma, 'deadline_ms', e.dl, 'reply_to', e.re, 'entry', entry,
    'owner', owner, 'created_ms', now_ms(), 'version', e.v, 'tenant', e.t, 'share', 0)
end

-- Starts a lean entry: {LEAN, 1, env}, or EXPIRED (its waiter answered, the entry removed).
local function start_lean(stream, group, entry, job_key, job_id, e, now)
  local deadline = tonumber(e.dl)
  if deadline > 0 and now > deadline then
    reply(job_key, job_id, 'EXPIRED', {'code', 'DEADLINE_EXCEEDED', 'reason', 'DEADLINE_EXCEEDED',
      'message', 'the deadline passed while the request was queued; it was never run'}, e.re)
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    return {'EXPIRED', 0, ''}
  end
  return {'LEAN', 1, e.env}
end

-- Starts one delivered entry (START, CLAIM and TRAIN_START share this; `q`: the model's
-- queue_keys; `fields`: the entry's fields when the caller read them). Returns
-- {status, attempt, env}: RUN (go), LEAN (go, a lean job: nothing was written), SKIP (no
-- longer queued, or a stale entry), EXPIRED or DEAD (waiter answered).
-- Sent twice (START's reply lost with its connection, the call retried), it answers RUN
-- again: the job is RUNNING from this very entry and consumer, which only this start does.
-- Taken for a stale entry, the job would stay RUNNING with its entry acked: never reaped.
local function start_one(q, stream, dead_key, group, consumer, ttl_ms, job_key, entry, job_id,
                         now, fields)
  local f = redis.call('HMGET', job_key, 'state', 'entry', 'deadline_ms', 'attempt',
    'max_attempts', 'env', 'tenant', 'share', 'owner')
  if not f[1] then
    local e = fields or entry_fields(stream, entry)
    if e and e.env then
      return start_lean(stream, group, entry, job_key, job_id, e, now)
    end
  end
  local deadline, attempt = tonumber(f[3]), tonumber(f[4])
  if f[1] == 'RUNNING' and f[2] == entry and f[9] == consumer then
    return {'RUN', attempt, f[6]}
  end
  if f[1] ~= 'QUEUED' or f[2] == entry then
    -- Delivered: it leaves its tenant's undelivered entries.
    share_count(q, job_key, -1, {f[7], f[8]})
  end
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

