-- progress.lua: record a task's progress and publish TASK_PROGRESS.
-- KEYS[1] task hash   ARGV[1] prefix   ARGV[2] id   ARGV[3] progress (0..1)
-- ARGV[4] '1' if a message follows   ARGV[5] message
-- ARGV[6] claim token ('' when a producer reports)
-- ARGV[7] ignored (was: '1' to publish whatever the rate; kept so callers
--         that still send it work)
-- Returns -1 unknown id, 0 not recorded (terminal, or a stale claim), 1 done.
--
-- The value is stored and published at every call. Throttling is the
-- caller's: a running task's updates go through its TaskContext's token
-- bucket in the worker (taskmesh/context.py), which always lets progress
-- 1.0, a changed message and the task's final value through.
-- Key families: config, events, task
local v = redis.call('HMGET', KEYS[1], 'status', 'token', 'queue', 'priority', 'name', 'attempts',
  'worker')
if not v[1] then return -1 end
if is_terminal(v[1]) then return 0 end
if ARGV[6] ~= '' and v[2] ~= ARGV[6] then return 0 end
local t = {id = ARGV[2], status = v[1], queue = v[3], priority = v[4], name = v[5]}

local message = cjson.null
if ARGV[4] == '1' then
  message = ARGV[5]
  redis.call('HSET', KEYS[1], 'progress', ARGV[3], 'progress_message', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'progress', ARGV[3])
  redis.call('HDEL', KEYS[1], 'progress_message')
end
emit('TASK_PROGRESS', t, {progress = tonumber(ARGV[3]), message = message,
  attempt = tonumber(v[6]), worker = v[7]})
return 1
