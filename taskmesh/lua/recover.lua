-- recover.lua: the lease reaper, run periodically by every worker.
-- KEYS[1] running   KEYS[2] workers   KEYS[3] stats
-- ARGV[1] prefix   ARGV[2] max tasks to recover in this call
-- Returns the number of expired leases handled.
--
-- A RUNNING task whose lease deadline passed lost its worker. It goes back
-- to its queue at its original place (recoveries + 1, claim token cleared so
-- the old worker's late reports are discarded), or ends FAILED with
-- WorkerLostError on the fourth loss, or CANCELLED if cancellation was asked.
-- Also prunes dead workers, expired entries of the done:* indexes, and the
-- ids of expired tagged records from their tag:<tag> indexes (tag_expiry).
-- Key families: applied, byseq, config, dependents, done, done_channel, events, outbox, parked,
--   pending, qcount, queue, queues, rate, rate_bucket, remote_dependents, resolve, running, scheduled,
--   stats, tag, tag_expiry, task, waiting, wake, workers
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(expired) do
  local t = load(id)
  if not t or t.status ~= 'running' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HINCRBY', KEYS[3], 'lease_expiries', 1)
    local lost_from = t.worker
    if t.cancel_requested == '1' then
      finish(t, 'cancelled', {}, {worker = lost_from})
    elseif (tonumber(t.recoveries) or 0) >= MAX_RECOVERIES then
      local message = 'worker ' .. tostring(lost_from) .. ' stopped renewing its lease; '
        .. MAX_RECOVERIES .. ' recoveries already made'
      -- Workers that renewed after losing the task (renew.lua) were alive but
      -- frozen past the lease: typically a thread task holding the GIL in a
      -- long C call, during which no other Python thread (renewal) runs.
      local late = tonumber(redis.call('HGET', k_task(id), 'late_renewals') or '0')
      if late > 0 then
        message = message .. '; the worker was alive (it renewed after the lease had'
          .. ' expired) but could not renew in time: a thread task holding the GIL in a long'
          .. ' C call (or a paused process) does this; run such work with'
          .. ' executor_type="process"'
      end
      local err = {type = 'WorkerLostError', attempt = tonumber(t.attempts), message = message}
      finish(t, 'failed', {'error', cjson.encode(err)}, {error = err, worker = lost_from})
    else
      redis.call('HINCRBY', k_task(id), 'recoveries', 1)
      redis.call('HINCRBY', KEYS[3], 'recoveries', 1)
      enqueue(t, true)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for _, status in ipairs(TERMINAL) do
  redis.call('ZREMRANGEBYSCORE', k_done(status), '-inf', now)
end
local gone = redis.call('ZRANGEBYSCORE', K_TAG_EXPIRY, '-inf', '(' .. now, 'LIMIT', 0, 500)
for _, entry in ipairs(gone) do
  local e = cjson.decode(entry)
  -- A record that exists again was registered anew under the same id: its
  -- tag entries are its own now.
  if redis.call('EXISTS', k_task(e[1])) == 0 then
    for _, tag in ipairs(e[2]) do redis.call('ZREM', k_tag(tag), e[1]) end
  end
  redis.call('ZREM', K_TAG_EXPIRY, entry)
end
return #expired
