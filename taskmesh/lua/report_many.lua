-- report_many.lua: several outcome reports in one call (the reporter sends
-- every outcome that is ready at once this way, see taskmesh/reporter.py).
-- KEYS[1] running   KEYS[2] stats
-- ARGV[1] prefix   ARGV[2] w, the number of report.lua arguments after its
-- prefix (ARGV[2..] of report.lua: id, claim token, outcome, data, ...; the
-- trailing ones may be left out: they read as absent, see report.lua)
-- ARGV[3 ..] w arguments per report, one report after the other
-- Returns one reply per report: report.lua's own ('stale' when fenced out),
-- or an error reply for a report whose script raised.
--
-- Each report runs report.lua's body unchanged (see INCLUDES in
-- taskmesh/scripts.py), with its own KEYS (task hash, running, stats; one
-- table for all, KEYS.at and KEYS.last placing its arguments in this call's
-- ARGV, read there in place), in order: per-task fencing and transitions are exactly those of one
-- report.lua call each. Touches what report.lua touches. One failing report
-- (pcall) does not stop the others, as if each had been its own call; it
-- leaves what it wrote before raising, as a report.lua call would.
-- Key families: applied, byseq, config, dependents, done, done_channel, events, outbox, parked,
--   pending, qcount, queue, queues, rate, rate_bucket, remote_dependents, resolve, running, runtimes,
--   scheduled, stats, tag_expiry, task, waiting, wake
local width = tonumber(ARGV[2])
local out = {}
batch_begin()  -- wake tokens (released dependents, retries): one push per queue;
-- counters (stats, rate buckets, qcount) and runtime samples: one write each
local keys = {false, KEYS[1], KEYS[2]}
for i = 3, #ARGV, width do
  keys[1], keys.at, keys.last = k_task(ARGV[i]), i - 2, i + width - 1
  local ok, reply = pcall(report, keys, ARGV)
  if ok then out[#out + 1] = reply
  else out[#out + 1] = {err = tostring(type(reply) == 'table' and reply.err or reply)} end
end
flush_runtimes()
batch_end()
return out
