-- GANG_END: rank 0 ends its gang (the job ended or went back to the queue); the other
-- ranks see it GONE. Fenced on the generation and rank 0's worker.
-- KEYS[1] = the job's gang hash (HASH)
-- ARGV[1] = gen
-- ARGV[2] = consumer
-- Returns 1 when it ended the gang, 0 when it was not there (or not ours).
local g = redis.call('HMGET', KEYS[1], 'gen', 'rank:0')
if g[1] ~= ARGV[1] or g[2] ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
