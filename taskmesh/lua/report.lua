-- report.lua: a worker reports how an attempt ended. Fenced by claim token.
-- KEYS[1] task hash   KEYS[2] running   KEYS[3] stats
-- ARGV[1] prefix   ARGV[2] id   ARGV[3] claim token
-- ARGV[4] outcome: 'completed' | 'failed' | 'cancelled'
-- ARGV[5] result envelope (completed) or error JSON (failed)
-- ARGV[6] '1' if the failure may be retried (task exceptions, timeouts)
-- ARGV[7] ms the claimed task waited in the worker before its function
--         started (a sequential lane), measured on the worker's own clock:
--         started_at moves forward by that much, so it and the runtime
--         describe the function, not the wait
-- ARGV[8] the task's exception pickled by the worker's codec ('' if it did
--         not pickle): kept as field error_exc when the task ends FAILED
-- ARGV[9] jitter factor in [0.5, 1.5], drawn by the worker; scales the retry
--         delay of a task registered with retry_jitter
-- Returns 'stale' if the claim is no longer current (the lease was taken
-- over, the task was handed back), else the task's new status.
--
-- Completed: stores the result and promotes dependents. Failed with retries
-- left (and, with retry_on, an exception of a listed class): SCHEDULED after
-- retry_delay * retry_backoff^(failures-1) seconds, times the jitter factor
-- with retry_jitter (TASK_RETRYING). Otherwise terminal, cascading to
-- dependents. A task whose cancellation was requested ends CANCELLED
-- whatever it returned.
-- Key families: applied, byseq, config, dependents, done, done_channel, events, outbox, parked,
--   pending, qcount, queue, queues, rate, rate_bucket, remote_dependents, resolve, running, runtimes,
--   scheduled, stats, tag_expiry, task, waiting, wake

-- Where the arguments sit: report_many.lua runs this body on its own ARGV,
-- so no report's arguments are copied: this report's ARGV[2] (its id) is
-- ARGV[at + 2] and `last` its last argument (report_many sends the
-- arguments a batch needs: those past `last` read as absent, i.e. '0', ''
-- and 1, which is what a completion sends). For a call of its own: 0, #ARGV.
local at, last = KEYS.at or 0, KEYS.last or #ARGV
local id, token, outcome, data, retryable, waited, exc, jitter = unpack(ARGV, at + 2, last)

-- What every outcome needs, in one HMGET: fencing, the event, leave() and
-- mark_terminal(); a failure reads its retry settings (and seq, for
-- schedule()) below. The task table is made by one constructor (sized
-- once; see load_candidate in claim.lua). A field the record lacks is
-- false, as load() in the prelude has it.
-- Tags, dependencies and cancel_requested, which most records lack (an
-- absent field costs HMGET a scan of the whole record), are read only when
-- the record's `plain` flag (register.lua; cancel.lua clears it) is not '1';
-- with '1' the task has no dependents either (resolve_dependents).
local v = redis.call('HMGET', KEYS[1], 'status', 'plain', 'token', 'queue', 'priority', 'name',
  'attempts', 'worker', 'started_at', 'ttl')
if v[1] ~= 'running' or v[3] ~= token then return 'stale' end
local t = {id = id, key = KEYS[1], status = v[1], plain = v[2], token = v[3], queue = v[4],
  priority = v[5], name = v[6], attempts = v[7], worker = v[8], started_at = v[9], ttl = v[10],
  tags = false, cancel_requested = false, dependencies = false}
if v[2] ~= '1' then
  local o = redis.call('HMGET', KEYS[1], 'tags', 'dependencies', 'cancel_requested')
  t.tags, t.dependencies, t.cancel_requested = o[1], o[2], o[3]
end
local cancel_requested = t.cancel_requested == '1'
local waited_ms = tonumber(waited or '0') or 0
if waited_ms > 0 and t.started_at then
  t.started_at = string.format('%.3f', tonumber(t.started_at) + waited_ms / 1000)
  redis.call('HSET', KEYS[1], 'started_at', t.started_at)
end

if outcome == 'completed' and not cancel_requested then
  -- as text: it goes to the samples and to the event (see now_ms_text)
  local runtime_ms = string.format('%d', now_ms() - math.floor(tonumber(t.started_at) * 1000))
  runtime_sample(runtime_ms)
  finish(t, 'completed', {'result', data}, nil, t.attempts or nil, t.worker or nil, runtime_ms)
  return 'completed'
end

if outcome == 'failed' and not cancel_requested then
  local err = cjson.decode(data)
  local policy = redis.call('HMGET', KEYS[1], 'failures', 'max_retries', 'retry_delay',
    'retry_backoff', 'retry_on', 'retry_jitter', 'seq')
  t.seq = policy[7]
  local failures = (tonumber(policy[1]) or 0) + 1
  redis.call('HSET', KEYS[1], 'failures', failures, 'last_error', data)
  -- (options at their default are not stored: see DEFAULT_* in the prelude)
  if retryable == '1' and failures <= (tonumber(policy[2]) or DEFAULT_MAX_RETRIES)
      and listed(policy[5], err) then
    local delay = (tonumber(policy[3]) or DEFAULT_RETRY_DELAY_S)
      * (tonumber(policy[4]) or DEFAULT_RETRY_BACKOFF) ^ (failures - 1)
    if policy[6] == '1' then
      delay = delay * math.min(math.max(tonumber(jitter or '') or 1, 0.5), 1.5)
    end
    schedule(t, now_ms() + math.floor(delay * 1000))
    add_count(KEYS[3], 'retried', 1)
    emit('TASK_RETRYING', t, {attempt = tonumber(t.attempts), delay = delay, error = err, worker = t.worker})
    return 'scheduled'
  end
  local fields = {'error', data}
  if exc and exc ~= '' then fields[3], fields[4] = 'error_exc', exc end
  finish(t, 'failed', fields, {attempt = tonumber(t.attempts), error = err, worker = t.worker})
  return 'failed'
end

finish(t, 'cancelled', {}, {attempt = tonumber(t.attempts), worker = t.worker})
return 'cancelled'
