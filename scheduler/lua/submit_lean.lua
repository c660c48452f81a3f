-- SUBMIT_LEAN: accept the lean jobs of one priority stream in one call: one entry each,
-- carrying the envelope and what a job hash would hold (see "Lean jobs" in the prelude).
-- Only synchronous calls' jobs go this way: a reply stream, no idempotency key, no share.
-- Sent twice, it adds nothing the second time: a call whose reply was lost with its
-- connection may be sent again (the client's retry; after a failover, to the replica that
-- took over, which may have it). Job ids are never reused, so a lean job is no more
-- idempotent than its call: the call leaves a receipt, keyed by its first job id, holding its
-- answers ('O' accepted, 'F' full, one per job), and a call that finds its receipt answers
-- from it. The receipt outlives every retry of the call (RECEIPT_TTL_MS, producer.py).
-- KEYS[1] = the stream of the jobs' priority level (STREAM)
-- KEYS[2] = this call's receipt (STRING)
-- ARGV[1] = most entries the stream may hold (0 = no limit)
-- ARGV[2] = receipt TTL ms
-- ARGV[3 + 7(i-1)] .. ARGV[9 + 7(i-1)] = job i: job id, envelope bytes, deadline ms (0 = none),
--   max attempts, reply stream key, model version, tenant
-- Returns one {'OK', job id} | {'FULL', stream length} (refused: nothing written) per job.
local limit = tonumber(ARGV[1])
local out = {}
local receipt = redis.call('GET', KEYS[2])
if receipt then
  for i = 3, #ARGV, 7 do
    local n = #out + 1
    out[n] = receipt:sub(n, n) == 'O' and {'OK', ARGV[i]} or {'FULL', tostring(limit)}
  end
  return out
end
local depth = redis.call('XLEN', KEYS[1])
local answers = {}
for i = 3, #ARGV, 7 do
  if limit > 0 and depth >= limit then
    out[#out + 1] = {'FULL', tostring(depth)}
    answers[#answers + 1] = 'F'
  else
    redis.call('XADD', KEYS[1], '*', 'job', ARGV[i], 'env', ARGV[i + 1], 'dl', ARGV[i + 2],
      'ma', ARGV[i + 3], 're', ARGV[i + 4], 'v', ARGV[i + 5], 't', ARGV[i + 6])
    depth = depth + 1
    out[#out + 1] = {'OK', ARGV[i]}
    answers[#answers + 1] = 'O'
  end
end
redis.call('SET', KEYS[2], table.concat(answers), 'PX', ARGV[2])
return out
