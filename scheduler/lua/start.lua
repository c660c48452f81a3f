-- START: a worker takes the entries it has just read (after a blocking XREADGROUP).
-- Fenced by the job hash: REAP rewrites `entry` in the same script that reclaims an entry,
-- so a stale entry id no longer matches.
-- KEYS[1] stream  KEYS[2] dead-letter stream  KEYS[2+i] job hash of item i
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] result TTL ms  ARGV[2+2i] entry id, ARGV[3+2i] job id
-- Returns one {status, attempt, envelope} per item (see start_one).
local now = now_ms()
local out = {}
for i = 1, #KEYS - 2 do
  out[i] = start_one(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], KEYS[2 + i],
    ARGV[2 + 2 * i], ARGV[3 + 2 * i], now)
end
return out
