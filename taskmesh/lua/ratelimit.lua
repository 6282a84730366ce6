-- ratelimit.lua: set or remove the rate limit of one rate key.
-- KEYS[1] ratelimits   KEYS[2] ratebucket:<rate key>
-- ARGV[1] prefix   ARGV[2] rate key   ARGV[3] per_second ('' removes the
-- limit)   ARGV[4] burst (bucket capacity)
-- Returns 1 if the stored limit changed, else 0.
--
-- A new limit starts with a full bucket. A changed one keeps the tokens
-- (down to the new capacity) and forgets the parked count: the tasks parked
-- under the old rate are sent back to their queues by unpark.lua (the
-- caller runs it after a change), so none waits out a turn computed for a
-- limit that no longer holds. Removing a limit deletes its bucket.
-- Key families: rate_bucket, ratelimits
local rk = ARGV[2]
local old = redis.call('HGET', KEYS[1], rk)
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], rk)
  redis.call('DEL', KEYS[2])
  return old and 1 or 0
end
local limit = ARGV[3] .. ' ' .. ARGV[4]
if old == limit then return 0 end
redis.call('HSET', KEYS[1], rk, limit)
local tokens = tonumber(redis.call('HGET', KEYS[2], 'tokens') or '')
if tokens then
  redis.call('HSET', KEYS[2], 'tokens', math.min(tokens, tonumber(ARGV[4])))
  redis.call('HDEL', KEYS[2], 'parked')
end
return 1
