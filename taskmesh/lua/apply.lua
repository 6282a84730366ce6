-- apply.lua: apply one cross-shard delivery (a dependency in another shard
-- ended) to its dependent in this shard, exactly once.
-- KEYS[1] the dependent's hash (task:<id>)
-- ARGV[1] prefix   ARGV[2] dependent id   ARGV[3] dependency id
-- ARGV[4] the dependency's terminal status
-- Returns 'dup' | 'early' | 'terminal' | 'applied'.
--
-- Deliveries come from outbox lists drained at least once (a drainer may die
-- after applying and before removing the entry), so applied:<id> remembers
-- each dependency already counted. A delivery that arrives before the
-- dependent is registered (the producer linked, then paused) is kept in
-- early:<id>, which register.lua reads. (Most families below are reached
-- through release()/finish() in the prelude.)
-- Key families: applied, byseq, config, dependents, done, done_channel, early, events, outbox,
--   parked, pending, qcount, queue, queues, rate, rate_bucket, remote_dependents, resolve, running,
--   scheduled, stats, tag_expiry, task, waiting, wake
local id, dep, status = ARGV[2], ARGV[3], ARGV[4]
local t = load(id)
if t and is_terminal(t.status) then return 'terminal' end
if redis.call('SADD', k_applied(id), dep) == 0 then return 'dup' end
if not t then
  redis.call('HSET', k_early(id), dep, status)
  redis.call('EXPIRE', k_early(id), 86400)
  redis.call('EXPIRE', k_applied(id), 86400)
  return 'early'
end
if status == 'completed' then
  local left = redis.call('HINCRBY', KEYS[1], 'pending_dependencies', -1)
  if left <= 0 and t.status == 'waiting' then release(t, true) end
else
  local err = {type = 'DependencyFailedError', attempt = 0,
    message = 'dependency ' .. dep .. ' ended ' .. string.upper(status)}
  finish(t, 'cancelled', {'error', cjson.encode(err)}, {error = err})
end
return 'applied'
