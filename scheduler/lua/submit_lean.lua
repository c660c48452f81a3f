-- SUBMIT_LEAN: accept the lean jobs of one priority stream in one call: one entry each,
-- carrying the envelope and what a job hash would hold (see "Lean jobs" in the prelude).
-- Only synchronous calls' jobs go this way: a reply stream, no idempotency key, no share.
-- KEYS[1] = the stream of the jobs' priority level (STREAM)
-- ARGV[1] = most entries the stream may hold (0 = no limit)
-- ARGV[2 + 7(i-1)] .. ARGV[8 + 7(i-1)] = job i: job id, envelope bytes, deadline ms (0 = none),
--   max attempts, reply stream key, model version, tenant
-- Returns one {'OK', job id} | {'FULL', stream length} (refused: nothing written) per job.
local limit = tonumber(ARGV[1])
local depth = redis.call('XLEN', KEYS[1])
local out = {}
for i = 2, #ARGV, 7 do
  if limit > 0 and depth >= limit then
    out[#out + 1] = {'FULL', tostring(depth)}
  else
    redis.call('XADD', KEYS[1], '*', 'job', ARGV[i], 'env', ARGV[i + 1], 'dl', ARGV[i + 2],
      'ma', ARGV[i + 3], 're', ARGV[i + 4], 'v', ARGV[i + 5], 't', ARGV[i + 6])
    depth = depth + 1
    out[#out + 1] = {'OK', ARGV[i]}
  end
end
return out
