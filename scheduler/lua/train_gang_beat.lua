-- GANG_BEAT: one rank of a formed gang renews its place (per-rank lease) and learns whether
-- the gang still stands. A rank whose beat is older than the lease is lost (its worker died):
-- the gang is BROKEN and every rank stops; rank 0 hands the job back and it re-forms.
-- Rank 0 also publishes the rendezvous address here (fenced on the generation).
-- KEYS[1] = the job's gang hash (HASH)
-- ARGV[1] = gen
-- ARGV[2] = rank
-- ARGV[3] = consumer
-- ARGV[4] = lease ms
-- ARGV[5] = gang TTL ms
-- ARGV[6] = rendezvous host:port ('' = none)
-- ARGV[7] = '1' = mark the gang BROKEN
-- Returns {state, addr}: state FORMED (go on), BROKEN (stop) or GONE (ended or re-formed).
local g = redis.call('HMGET', KEYS[1], 'state', 'gen', 'size', 'rank:' .. ARGV[2], 'addr')
if not g[1] or g[2] ~= ARGV[1] or g[4] ~= ARGV[3] then
  return {'GONE', ''}
end
if g[1] ~= 'FORMED' then
  return {g[1], g[5] or ''}
end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'BROKEN')
  return {'BROKEN', g[5] or ''}
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'beat:' .. ARGV[2], now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if ARGV[6] ~= '' and ARGV[2] == '0' then
  redis.call('HSET', KEYS[1], 'addr', ARGV[6])
  g[5] = ARGV[6]
end
for r = 0, tonumber(g[3]) - 1 do
  if now - tonumber(redis.call('HGET', KEYS[1], 'beat:' .. r) or '0') > tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[1], 'state', 'BROKEN')
    return {'BROKEN', g[5] or ''}
  end
end
return {'FORMED', g[5] or ''}
