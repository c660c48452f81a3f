-- GANG_ABORT: rank 0 gives up a gang that did not form by its deadline: the gang is
-- released (its members see it gone) and the job's entry goes back to the end of the queue,
-- with a status message saying why it waits. Not counted as an attempt.
-- KEYS[1] = the training stream (STREAM)
-- KEYS[2] = the job hash (HASH)
-- KEYS[3] = the job's gang hash (HASH)
-- KEYS[4] = the forming set (ZSET)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = entry id
-- ARGV[4] = job id
-- ARGV[5] = formation timeout s
-- Returns 'FORMED' when the last member joined meanwhile (run it), else 'ABORTED'.
local g = redis.call('HMGET', KEYS[3], 'state', 'rank:0', 'entry', 'size', 'joined')
local ours = g[2] == ARGV[2] and g[3] == ARGV[3]
if ours and g[1] == 'FORMED' then
  return 'FORMED'
end
if ours then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[4])
end
local f = redis.call('HMGET', KEYS[2], 'state', 'entry')
if f[2] == ARGV[3] and is_owner(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then
  if f[1] == 'QUEUED' then
    local fresh = redis.call('XADD', KEYS[1], '*', 'job', ARGV[4])
    local size, joined = g[4] or '?', g[5] or '?'
    redis.call('HSET', KEYS[2], 'entry', fresh, 'wait', 'waiting for workers: replicas=' ..
      size .. ' needs ' .. size .. ' workers with a free training slot at once, and only ' ..
      joined .. ' joined within ' .. ARGV[5] .. ' s; the gang forms when enough are free')
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
end
return 'ABORTED'
