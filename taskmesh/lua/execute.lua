-- execute.lua: release a deferred (PENDING) task; a no-op in any other status.
-- It goes WAITING (dependencies unfinished), SCHEDULED (its delay/eta is
-- still ahead) or QUEUED.
-- KEYS[1] task hash   KEYS[2] pending
-- ARGV[1] prefix   ARGV[2] id
-- Returns the status after the call, or false if the task does not exist.
-- Key families: byseq, config, events, parked, pending, qcount, queue, rate_bucket, running,
--   scheduled, task, waiting, wake
local t = load(ARGV[2])
if not t then return false end
if t.status ~= 'pending' then return t.status end
if tonumber(t.pending_dependencies or '0') > 0 then
  leave(t)
  enter_waiting(t)
  redis.call('HSET', KEYS[1], 'status', 'waiting')
  return 'waiting'
end
release(t, true)
return t.status
