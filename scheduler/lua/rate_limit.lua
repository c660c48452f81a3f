-- RATE_LIMIT: take one token from a tenant's token bucket, refilled continuously.
-- KEYS[1] = the tenant's bucket (HASH: `tokens`, `ms` of the last take)
-- ARGV[1] = refill rate, tokens per second (> 0)
-- ARGV[2] = capacity (burst), tokens (>= 1)
-- Returns {1, 0} when a token was taken, {0, ms until the next token} when none is left.
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens, last = tonumber(f[1]) or burst, tonumber(f[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local taken, wait_ms = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
-- A bucket that would be full again carries no information: let it go.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 2000)
return {taken, wait_ms}
