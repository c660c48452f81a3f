-- TRAIN_CANCEL: a queued job is cancelled at once; a running one is flagged (its worker sees
-- the flag on its next update and stops at the next step).
-- KEYS[1] = the job hash (HASH)
-- KEYS[2] = the job's events stream (STREAM)
-- ARGV[1] = TrainingEvent CANCELLED
-- ARGV[2] = TrainingEvent CANCELLING
-- Returns 'CANCELLED' or 'CANCELLING' when this call cancelled the job, '' when there is no
-- such job, else the state it already had (a job cancelled before is 'ALREADY_CANCELLED').
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return ''
end
local function event(bytes)
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'seq', seq, 'ev', bytes)
end
if state == 'QUEUED' then
  -- The stream entry stays: START drops entries of jobs that are no longer queued.
  redis.call('HSET', KEYS[1], 'state', 'CANCELLED', 'cancel', 1)
  redis.call('HDEL', KEYS[1], 'env')
  event(ARGV[1])
  return 'CANCELLED'
end
if state == 'RUNNING' then
  if redis.call('HGET', KEYS[1], 'cancel') ~= '1' then
    redis.call('HSET', KEYS[1], 'cancel', 1)
    event(ARGV[2])
  end
  return 'CANCELLING'
end
if state == 'CANCELLED' then
  return 'ALREADY_CANCELLED'
end
return state
