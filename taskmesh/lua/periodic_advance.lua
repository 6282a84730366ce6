-- periodic_advance.lua: move a periodic schedule past the tick just fired,
-- if no one else has (compare-and-set), so however many workers fire the
-- same schedule it advances once per tick and no leader is needed.
-- KEYS[1] the schedule's hash periodic:<name>   KEYS[2] periodic (zset)
-- ARGV[1] prefix   ARGV[2] name   ARGV[3] next_run_at the caller read
-- ARGV[4] the new next_run_at (epoch s)   ARGV[5] the tick fired (epoch s,
-- '' if none was: the schedule could not be read)   ARGV[6] its task id
-- Returns 1 if advanced, 0 if the schedule had moved on (or was removed).
--
-- The tick's task itself was registered before this call, with the task id
-- "periodic:<name>:<tick>" (register.lua is idempotent on ids): a caller
-- that dies in between leaves the schedule due, and the next worker to fire
-- it registers the same id, which creates nothing, then advances it.
-- Key families: periodic, periodic_schedule
local current = redis.call('HGET', KEYS[1], 'next_run_at')
if not current then
  redis.call('ZREM', KEYS[2], ARGV[2])  -- removed meanwhile: drop a stray index entry
  return 0
end
if current ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'next_run_at', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'last_run_at', ARGV[5], 'last_task_id', ARGV[6])
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
return 1
