-- REDRIVE: queue a dead-lettered job again with fresh attempts and no deadline (an operator
-- decided it should run), and remove its dead-letter entry.
-- KEYS[1] stream  KEYS[2] job hash  KEYS[3] dead-letter stream
-- ARGV[1] job id  ARGV[2] dead-letter entry id
-- Returns 1 when queued again, 0 when the job is not dead-lettered or its record expired.
local f = redis.call('HMGET', KEYS[2], 'state', 'env')
if f[1] ~= 'DEAD_LETTERED' or not f[2] then
  return 0
end
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'QUEUED', 'attempt', 0, 'entry', entry, 'owner', '',
  'deadline_ms', 0)
redis.call('HDEL', KEYS[2], 'error_code', 'error_reason', 'error_message')
share_count(KEYS[2], 1)
redis.call('PERSIST', KEYS[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return 1
