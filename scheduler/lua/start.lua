-- START: a worker takes the entries it has just read (after a blocking XREADGROUP).
-- Fenced by the job hash: REAP rewrites `entry` in the same script that reclaims an entry,
-- so a stale entry id no longer matches.
-- KEYS[1] = the stream the entries were read from (STREAM)
-- KEYS[2] = the model's dead-letter stream (STREAM)
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(3):
-- KEYS[3] = high stream (STREAM)
-- KEYS[4] = normal stream (STREAM)
-- KEYS[5] = low stream (STREAM)
-- KEYS[6] = job hash template (+ job id; HASH)
-- KEYS[7] = share hash template (+ tenant; HASH)
-- KEYS[8] = high backlog list template (+ tenant; LIST)
-- KEYS[9] = normal backlog list template (+ tenant; LIST)
-- KEYS[10] = low backlog list template (+ tenant; LIST)
-- KEYS[10+i] = the job hash of item i (HASH)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = result TTL ms
-- ARGV[2+2i] = entry id of item i
-- ARGV[3+2i] = job id of item i
-- Returns one {status, attempt, envelope} per item (see start_one).
local now = now_ms()
local q = queue_keys(3)
local out = {}
for i = 1, #KEYS - 10 do
  out[i] = start_one(q, KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], KEYS[10 + i],
    ARGV[2 + 2 * i], ARGV[3 + 2 * i], now)
end
return out
