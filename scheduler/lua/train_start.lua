-- TRAIN_START: a worker takes a training entry it has just read. A one-replica job starts as
-- any job does (start_one). A job of N > 1 replicas opens a gang instead: the job stays
-- QUEUED, the reader holds its entry as rank 0, and the gang waits for N - 1 more workers
-- (GANG_JOIN) until its formation deadline (GANG_ABORT). One gang forms at a time: two
-- partial gangs could hold each other's workers forever, so a reader that finds another gang
-- forming puts its entry back at the end of the queue and joins that gang instead.
-- KEYS[1] = the training stream (STREAM)
-- KEYS[2] = the training queue's dead-letter stream (STREAM)
-- KEYS[3] = the job hash (HASH)
-- KEYS[4] = the job's gang hash (HASH)
-- KEYS[5] = the forming set (ZSET)
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(6):
-- KEYS[6] = high stream (STREAM)
-- KEYS[7] = normal stream (STREAM)
-- KEYS[8] = low stream (STREAM)
-- KEYS[9] = job hash template (+ job id; HASH)
-- KEYS[10] = share hash template (+ tenant; HASH)
-- KEYS[11] = high backlog list template (+ tenant; LIST)
-- KEYS[12] = normal backlog list template (+ tenant; LIST)
-- KEYS[13] = low backlog list template (+ tenant; LIST)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = result TTL ms
-- ARGV[4] = entry id
-- ARGV[5] = job id
-- ARGV[6] = formation timeout ms
-- ARGV[7] = gang hash TTL ms
-- Returns {status, attempt, envelope, replicas}: RUN, FORMING (rank 0 of a new gang),
-- REQUEUED (another gang is forming), SKIP, EXPIRED or DEAD (see start_one).
local now = now_ms()
local replicas = tonumber(redis.call('HGET', KEYS[3], 'replicas') or '1')
if replicas <= 1 then
  local row = start_one(queue_keys(6), KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], KEYS[3],
    ARGV[4], ARGV[5], now)
  row[4] = 1
  return row
end
local f = redis.call('HMGET', KEYS[3], 'state', 'entry', 'attempt', 'max_attempts', 'env')
if f[1] ~= 'QUEUED' or f[2] ~= ARGV[4] then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[4])
  return {'SKIP', 0, '', replicas}
end
local attempt = tonumber(f[3])
if attempt >= tonumber(f[4]) then
  dead_letter(KEYS[1], ARGV[1], ARGV[4], KEYS[3], ARGV[5], ARGV[3], KEYS[2], attempt)
  return {'DEAD', attempt, '', replicas}
end
-- A gang of this very job left by a dead opener is stale: its entry was reclaimed.
redis.call('ZREM', KEYS[5], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
if redis.call('ZCARD', KEYS[5]) > 0 then
  local fresh = redis.call('XADD', KEYS[1], '*', 'job', ARGV[5])
  redis.call('HSET', KEYS[3], 'entry', fresh)
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[4])
  return {'REQUEUED', attempt, '', replicas}
end
local deadline = now + tonumber(ARGV[6])
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'size', replicas, 'state', 'FORMING', 'gen', 0, 'entry', ARGV[4],
  'deadline_ms', deadline, 'joined', 1, 'rank:0', ARGV[2], 'beat:0', now)
redis.call('PEXPIRE', KEYS[4], ARGV[7])
redis.call('ZADD', KEYS[5], deadline, ARGV[5])
-- Kept when set: a job that failed to form before goes on saying why.
redis.call('HSETNX', KEYS[3], 'wait', 'forming a gang of ' .. replicas .. ' replicas: 1 of ' ..
  replicas .. ' workers joined')
return {'FORMING', attempt, f[5], replicas}
