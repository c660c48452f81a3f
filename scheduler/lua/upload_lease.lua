-- UPLOAD_LEASE: renews or releases the lease of the stream writing a resumable upload, only
-- while that stream still holds it (a lease that expired and was taken by another stream is
-- left alone).
-- KEYS[1] = the upload's lease (STRING)
-- ARGV[1] = the holder's token
-- ARGV[2] = the new TTL in ms; 0 releases the lease
-- Returns 1 when the caller held the lease; 0 otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
