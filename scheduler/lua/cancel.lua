-- CANCEL: a job still queued will never run (its caller went away or its deadline passed).
-- The stream entry stays (deleting undelivered entries would corrupt the group's lag, which
-- autoscaling reads); START drops entries whose job is no longer QUEUED.
-- A running job is flagged when ARGV[3] = 1: COMPLETE then ends it CANCELLED, result dropped.
-- KEYS[1] = the job hash (HASH)
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(2):
-- KEYS[2] = high stream (STREAM)
-- KEYS[3] = normal stream (STREAM)
-- KEYS[4] = low stream (STREAM)
-- KEYS[5] = job hash template (+ job id; HASH)
-- KEYS[6] = share hash template (+ tenant; HASH)
-- KEYS[7] = high backlog list template (+ tenant; LIST)
-- KEYS[8] = normal backlog list template (+ tenant; LIST)
-- KEYS[9] = low backlog list template (+ tenant; LIST)
-- ARGV[1] = state (CANCELLED | EXPIRED)
-- ARGV[2] = result TTL ms
-- ARGV[3] = also flag a running job (0 | 1)
-- ARGV[4] = 1: the job may be lean (see the prelude): with no hash, a cancel mark is left
--   (a hash in state ARGV[1], expiring after ARGV[2] ms) that START reads as "skip"
-- Returns 1 when a queued job was ended (or a lean job marked), 2 when a running job was
-- flagged, 0 otherwise (no such job, or it already ended).
local f = redis.call('HMGET', KEYS[1], 'state', 'ttl_ms', 'entry')
if not f[1] and ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'state', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if f[1] == 'RUNNING' and ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  return 2
end
if f[1] ~= 'QUEUED' then
  return 0
end
if f[3] and f[3] ~= '' then
  -- Its entry no longer holds a place in its tenant's share.
  share_count(queue_keys(2), KEYS[1], -1)
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'share', 0)
redis.call('HDEL', KEYS[1], 'env')
redis.call('PEXPIRE', KEYS[1], f[2] or ARGV[2])
return 1
