-- CANCEL: a job still queued will never run (its caller went away or its deadline passed).
-- The stream entry stays (deleting undelivered entries would corrupt the group's lag, which
-- autoscaling reads); START drops entries whose job is no longer QUEUED.
-- A running job is flagged when ARGV[3] = 1: COMPLETE then ends it CANCELLED, result dropped.
-- KEYS[1] job hash  ARGV[1] state (CANCELLED | EXPIRED)  ARGV[2] result TTL ms
-- ARGV[3] also flag a running job (0 | 1)
-- Returns 1 when a queued job was ended, 2 when a running job was flagged, 0 otherwise
-- (no such job, or it already ended).
local f = redis.call('HMGET', KEYS[1], 'state', 'ttl_ms', 'entry')
if f[1] == 'RUNNING' and ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  return 2
end
if f[1] ~= 'QUEUED' then
  return 0
end
if f[3] and f[3] ~= '' then
  share_count(KEYS[1], -1)  -- its entry no longer holds a place in its tenant's share
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'share', 0)
redis.call('HDEL', KEYS[1], 'env')
redis.call('PEXPIRE', KEYS[1], f[2] or ARGV[2])
return 1
