-- CLAIM: read up to COUNT new entries and start them, in one round trip (the hot path under
-- load; an idle worker blocks in XREADGROUP instead, then calls START).
-- KEYS[1] stream  KEYS[2] dead-letter stream
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] result TTL ms  ARGV[4] count
-- ARGV[5] key prefix of this model's keys (job hashes share the stream's hash slot)
-- Returns one {status, attempt, envelope, entry id, job id} per entry read.
local now = now_ms()
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4],
  'STREAMS', KEYS[1], '>')
local out = {}
if not read then
  return out
end
for _, item in ipairs(read[1][2]) do
  local entry, job_id = item[1], item[2][2]
  local row = start_one(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3],
    ARGV[5] .. ':job:' .. job_id, entry, job_id, now)
  row[4], row[5] = entry, job_id
  out[#out + 1] = row
end
return out
