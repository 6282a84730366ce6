-- progress.lua: record a task's progress and publish TASK_PROGRESS.
-- KEYS[1] task hash   ARGV[1] prefix   ARGV[2] id   ARGV[3] progress (0..1)
-- ARGV[4] '1' if a message follows   ARGV[5] message
-- ARGV[6] claim token ('' when a producer reports)
-- ARGV[7] '1' to publish whatever the rate (a task's last value)
-- Returns -1 unknown id, 0 not recorded (terminal, or a stale claim), 1 done.
--
-- The value is always stored. A producer's update always publishes. A
-- running task's updates publish through a token bucket per task (bursts of
-- PROGRESS_BURST, then PROGRESS_RATE per second), so a tight loop cannot
-- flood subscribers; progress 1.0, a changed message and a task's final
-- value always publish.
-- Key families: config, events, task
local PROGRESS_BURST, PROGRESS_RATE = 10, 10
local t = load(ARGV[2])
if not t then return -1 end
if is_terminal(t.status) then return 0 end
local from_task = ARGV[6] ~= ''
if from_task and t.token ~= ARGV[6] then return 0 end

local previous = redis.call('HMGET', KEYS[1], 'progress_tokens', 'progress_tokens_at',
  'progress_message')
local message = cjson.null
if ARGV[4] == '1' then
  message = ARGV[5]
  redis.call('HSET', KEYS[1], 'progress', ARGV[3], 'progress_message', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'progress', ARGV[3])
  redis.call('HDEL', KEYS[1], 'progress_message')
end

local publish = true
if from_task then
  local tokens = tonumber(previous[1] or PROGRESS_BURST)
  local elapsed = (now_ms() - tonumber(previous[2] or now_ms())) / 1000
  tokens = math.min(PROGRESS_BURST, tokens + elapsed * PROGRESS_RATE)
  local changed = ARGV[4] == '1' and ARGV[5] ~= previous[3]
  publish = tokens >= 1 or tonumber(ARGV[3]) >= 1 or changed or ARGV[7] == '1'
  if publish then tokens = math.max(tokens - 1, 0) end
  redis.call('HSET', KEYS[1], 'progress_tokens', tokens, 'progress_tokens_at', now_ms())
end
if publish then
  emit('TASK_PROGRESS', t, {progress = tonumber(ARGV[3]), message = message,
    attempt = tonumber(t.attempts), worker = t.worker})
end
return 1
