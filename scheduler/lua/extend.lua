-- EXTEND: renew the leases of entries a worker still owns (owner-checked heartbeat).
-- KEYS[1] = the stream the entries were read from (STREAM)
-- ARGV[1] = group
-- ARGV[2] = consumer
-- ARGV[3..] = entry ids
-- XCLAIM <self> 0 JUSTID resets the idle time without raising the delivery count.
-- Returns the entry ids whose lease was lost (reclaimed by the reaper).
local lost = {}
for i = 3, #ARGV do
  if is_owner(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
