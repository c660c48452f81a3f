-- CANCEL: a job still queued will never run (its caller went away or its deadline passed).
-- The stream entry stays (deleting undelivered entries would corrupt the group's lag, which
-- autoscaling reads); START drops entries whose job is no longer QUEUED.
-- KEYS[1] job hash  ARGV[1] state (CANCELLED | EXPIRED)  ARGV[2] result TTL ms
-- Returns 1 when the job was queued and is now ended, 0 when it was already running or over.
if redis.call('HGET', KEYS[1], 'state') ~= 'QUEUED' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
redis.call('HDEL', KEYS[1], 'env')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
