-- resolve.lua: continue dependency resolution left on the `resolve` list.
-- KEYS[1] resolve list   ARGV[1] prefix
-- Returns how many "<id>|<status>" entries are still on the list afterwards,
-- or -1 if the list was empty (nothing was resolved).
--
-- A wide cascade (a failed or cancelled parent with thousands of dependents)
-- is walked RESOLVE_BUDGET dependents per script call; the rest waits on the
-- list. Workers drain it from claim.lua, and producers run this script so a
-- cascade never needs a running worker: cancel_task drains it to the end,
-- and a waiter on a WAITING task drains it before reading the status again.
-- Touches what resolve() in the prelude touches: task:<id>, dependents:<id>,
-- waiting, done:<status>, queue:<q>, scheduled:<q> (a released dependent
-- whose delay/eta is ahead), wake:<q>, qcount:<q>, stats, events,
-- the events/done:<id> channels.
-- Key families: applied, byseq, config, dependents, done, done_channel, events, outbox, parked,
--   pending, qcount, queue, queues, rate, rate_bucket, remote_dependents, resolve, running, scheduled,
--   stats, tag_expiry, task, waiting, wake
if redis.call('LLEN', KEYS[1]) == 0 then return -1 end
return resolve_pending()
