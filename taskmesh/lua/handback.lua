-- handback.lua: a stopping worker returns tasks it holds to their queues.
-- KEYS[1] running   ARGV[1] prefix   ARGV[2..] triples of id, claim token,
-- started ('1' if the function began executing, else '0')
-- Returns the number handed back. Tasks keep their place in line; an attempt
-- that never started is not counted; the token is cleared (fencing).
-- Key families: applied, byseq, config, dependents, done, done_channel, events, outbox, parked,
--   pending, qcount, queue, queues, rate, rate_bucket, remote_dependents, resolve, running, scheduled,
--   stats, tag_expiry, task, waiting, wake
local n = 0
for i = 2, #ARGV, 3 do
  local t = load(ARGV[i])
  if t and t.status == 'running' and t.token == ARGV[i + 1] then
    if ARGV[i + 2] ~= '1' then redis.call('HINCRBY', k_task(t.id), 'attempts', -1) end
    if t.cancel_requested == '1' then
      finish(t, 'cancelled', {})
    else
      enqueue(t, true)
    end
    n = n + 1
  end
end
return n
