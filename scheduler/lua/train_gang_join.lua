-- GANG_JOIN: a worker with a free training slot takes the next rank of the gang that is
-- forming, if any. The worker that fills the last rank forms the gang, all or none: the job
-- becomes RUNNING (owner = rank 0, which holds the stream entry; attempt + 1 = the gang's
-- generation) in this same call. A gang past its deadline takes no one (GANG_ABORT ends it).
-- KEYS[1] = the forming set (ZSET: job id → formation deadline ms)
-- KEYS[2] = gang hash template (+ job id of the forming gang; HASH)
-- KEYS[3] = job hash template (+ job id of the forming gang; HASH)
-- ARGV[1] = consumer
-- ARGV[2] = gang TTL ms
-- Returns {} when there is nothing to join, else {job id, rank, size, state, gen, envelope}
-- with state FORMING (wait for the others) or FORMED (gen = the attempt).
local now = now_ms()
local job_id = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'LIMIT', 0, 1)[1]
if not job_id then
  return {}
end
local gang = KEYS[2] .. job_id
local job = KEYS[3] .. job_id
local g = redis.call('HMGET', gang, 'state', 'size', 'joined', 'entry', 'rank:0')
local j = redis.call('HMGET', job, 'state', 'entry', 'attempt', 'env')
if g[1] ~= 'FORMING' or j[1] ~= 'QUEUED' or g[4] ~= j[2] then
  redis.call('ZREM', KEYS[1], job_id)  -- cancelled, reclaimed or already formed
  return {}
end
local size, joined = tonumber(g[2]), tonumber(g[3])
for r = 0, joined - 1 do
  if redis.call('HGET', gang, 'rank:' .. r) == ARGV[1] then
    return {}  -- one rank per worker
  end
end
local rank = joined
joined = joined + 1
redis.call('HSET', gang, 'rank:' .. rank, ARGV[1], 'beat:' .. rank, now, 'joined', joined)
if joined < size then
  redis.call('HSET', job, 'wait', 'forming a gang of ' .. size .. ' replicas: ' .. joined ..
    ' of ' .. size .. ' workers joined')
  return {job_id, rank, size, 'FORMING', 0, j[4]}
end
local attempt = tonumber(j[3]) + 1
redis.call('HSET', job, 'state', 'RUNNING', 'owner', g[5], 'attempt', attempt)
redis.call('HDEL', job, 'wait')
for r = 0, size - 1 do
  redis.call('HSET', gang, 'beat:' .. r, now)
end
redis.call('HSET', gang, 'state', 'FORMED', 'gen', attempt)
redis.call('PEXPIRE', gang, ARGV[2])
redis.call('ZREM', KEYS[1], job_id)
return {job_id, rank, size, 'FORMED', attempt, j[4]}
