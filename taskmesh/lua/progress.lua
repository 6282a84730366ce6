-- progress.lua: record a task's progress and publish TASK_PROGRESS.
-- KEYS[1] task hash   ARGV[1] prefix   ARGV[2] id   ARGV[3] progress (0..1)
-- ARGV[4] '1' if a message follows   ARGV[5] message
-- ARGV[6] claim token ('' when a producer reports)
-- Returns -1 unknown id, 0 not recorded (terminal, or a stale claim), 1 done.
-- The value is always stored; TASK_PROGRESS is throttled to one per
-- PROGRESS_EVENT_MS per task, except that progress 1.0 and a changed
-- message are always published.
local t = load(ARGV[2])
if not t then return -1 end
if is_terminal(t.status) then return 0 end
if ARGV[6] ~= '' and t.token ~= ARGV[6] then return 0 end
local PROGRESS_EVENT_MS = 100
local previous = redis.call('HMGET', KEYS[1], 'progress_event_at', 'progress_message')
local message = cjson.null
if ARGV[4] == '1' then
  message = ARGV[5]
  redis.call('HSET', KEYS[1], 'progress', ARGV[3], 'progress_message', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'progress', ARGV[3])
  redis.call('HDEL', KEYS[1], 'progress_message')
end
local last = tonumber(previous[1] or '0')
local changed = ARGV[4] == '1' and ARGV[5] ~= previous[2]
if now_ms() - last >= PROGRESS_EVENT_MS or tonumber(ARGV[3]) >= 1 or changed then
  redis.call('HSET', KEYS[1], 'progress_event_at', now_ms())
  emit('TASK_PROGRESS', t, {progress = tonumber(ARGV[3]), message = message,
    attempt = tonumber(t.attempts), worker = t.worker})
end
return 1
