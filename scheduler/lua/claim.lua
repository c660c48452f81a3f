-- CLAIM: read up to COUNT new entries of a model's three priority streams and start them, in
-- one round trip (the hot path under load; an idle worker blocks in XREADGROUP, then STARTs).
-- Priority without starvation: when COUNT >= 4, a share of the batch is read from the lower
-- streams first (normal: COUNT/4, low: COUNT/8, rounded down: low has a share from COUNT 8),
-- then the high stream fills the rest, then normal and low fill what high left empty.
-- The next 8 KEYS are keys.queue_keys(model), read by queue_keys(1):
-- KEYS[1] = high stream (STREAM)
-- KEYS[2] = normal stream (STREAM)
-- KEYS[3] = low stream (STREAM)
-- KEYS[4] = job hash template (+ job id; HASH)
-- KEYS[5] = share hash template (+ tenant; HASH)
-- KEYS[6] = high backlog list template (+ tenant; LIST)
-- KEYS[7] = normal backlog list template (+ tenant; LIST)
-- KEYS[8] = low backlog list template (+ tenant; LIST)
-- KEYS[9] = the model's dead-letter stream (STREAM)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3] = result TTL ms
-- ARGV[4] = count
-- Returns one {status, attempt, envelope, entry id, job id, level (1..3)} per entry read
-- (status as start_one's: RUN, LEAN, SKIP, EXPIRED, DEAD).
local now = now_ms()
local q = queue_keys(1)
local count = tonumber(ARGV[4])
local plan = {{3, math.floor(count / 8)}, {2, math.floor(count / 4)}, {1, count}, {2, count},
  {3, count}}
local out = {}
for _, step in ipairs(plan) do
  local level, want = step[1], math.min(step[2], count - #out)
  if want > 0 then
    local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want,
      'STREAMS', KEYS[level], '>')
    if read then
      for _, item in ipairs(read[1][2]) do
        local entry, job_id = item[1], item[2][2]
        local row = start_one(q, KEYS[level], KEYS[9], ARGV[1], ARGV[2], ARGV[3],
          q.job .. job_id, entry, job_id, now, entry_table(item[2]))
        row[4], row[5], row[6] = entry, job_id, level
        out[#out + 1] = row
      end
    end
  end
end
return out
