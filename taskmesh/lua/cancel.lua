-- cancel.lua: cancel a task on a producer's request.
-- KEYS[1] task hash   ARGV[1] prefix   ARGV[2] id
-- Returns -1 unknown id, 0 already terminal, 1 cancelled now,
-- 2 running: cancellation requested and signalled to its worker, which ends
-- it CANCELLED (report.lua honours the flag whatever the task returns; the
-- lease reaper honours it if the worker dies).
-- Key families: applied, byseq, config, control, dependents, done, done_channel, events, outbox,
--   parked, pending, qcount, queue, queues, rate, rate_bucket, remote_dependents, resolve, running,
--   scheduled, stats, tag_expiry, task, waiting, wake
local t = load(ARGV[2])
if not t then return -1 end
if is_terminal(t.status) then return 0 end
if t.status == 'running' then
  -- (plain '0': report.lua reads cancel_requested only of a record not plain)
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'plain', '0')
  redis.call('PUBLISH', K_CONTROL, cjson.encode({action = 'cancel', task_id = t.id, worker = t.worker}))
  return 2
end
finish(t, 'cancelled', {})
return 1
