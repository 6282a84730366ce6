-- claim.lua: atomically move up to N queued tasks into RUNNING for a worker.
-- KEYS[1] running   KEYS[2] config   KEYS[3] claims   KEYS[4] workers
-- ARGV[1] prefix   ARGV[2] worker id   ARGV[3] N (max to claim)
-- ARGV[4] lease_timeout_ms   ARGV[5] free sequential slots   ARGV[6] free process slots
-- ARGV[7] claim request id ('' for none)   ARGV[8] '1' when this request
-- id was never sent before (no replay to look for), else ''   ARGV[9..] queue names
-- Returns {flags, next_due_ms, task...}; each task is 8 entries:
--   id, token, attempt, executor, timeout, payload, metadata, name
-- flags: 'c' = cluster cap reached, 'l' = skipped sequential or process
-- tasks (that local lane is full), 'q' = tasks still queued (or dependency resolution still pending). next_due_ms: ms until the next SCHEDULED
-- task of these queues is due or a parked task's token turn comes, -1 if none.
--
-- First continues pending dependency resolution (bounded, see resolve() in
-- the prelude) and promotes due SCHEDULED tasks (retries, delays) of these queues,
-- so neither needs a separate scheduler process. A claimed task is RUNNING with a lease
-- in this same step: no task is ever held by a worker outside `running`.
--
-- Replay: a claim whose reply is lost (Redis stopped after running it) is
-- resent with the same request id. The ids and tokens of the last claim are
-- kept in the worker's hash (`last_claim`), and a resent request gets those
-- tasks back (the ones still RUNNING under that claim) instead of claiming
-- more, so no claimed task sits unknown to its worker until its lease expires.
-- Only a resent request can match: a first send (ARGV[8] '1', the worker
-- knows) does not read `last_claim`. The value is a JSON list: the request
-- id, the claim token's two fixed parts (see the token below), then the ids
-- claimed, in order (the n-th one's token is head .. n .. tail).
--
-- Flow control (flow.lua): due parked tasks go back to their queues first;
-- a candidate whose rate key has no token is parked (at most PARK_BUDGET per
-- call) and the next candidates are looked at, so tasks waiting for a token
-- never hold up the queue; next_due_ms counts parked tasks' turns too. With
-- priority aging set, candidates come in aged order (claim_order).
-- Also touches: parked:<q>, ratelimits, ratebucket:<rate key>, scheduled:<q>,
-- queue:<q>, qcount:<q>, wake:<q>, task:<id>, byseq:scheduled / byseq:running
-- (listing indexes, written with the homes).
-- Key families: applied, byseq, claims, config, dependents, done, done_channel, events, outbox,
--   parked, pending, qcount, queue, queues, rate, rate_bucket, ratelimits, remote_dependents, resolve,
--   running, scheduled, stats, tag_expiry, task, waiting, wake, worker, workers
local wid, want, lease_timeout_ms = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
-- Executors with a local lane the worker must not over-claim for.
local lane_slots = {sequential = tonumber(ARGV[5]), process = tonumber(ARGV[6])}
local claim_id = ARGV[7]
local queues = {}
for i = 9, #ARGV do queues[#queues + 1] = ARGV[i] end
local now = now_ms()

-- What a claim reads of a candidate (stored at `key`), in one HMGET: what
-- leave(), enter_running(), emit() and the reply use; nil if the record is
-- gone. The table is made by one constructor, so Lua sizes it once (filled
-- field by field, as load() in the prelude does, it is rehashed four times).
-- A field HMGET does not find costs a scan of the whole record, so the
-- options most records lack (executor, rate_key, timeout, metadata) are
-- read only when the record's `plain` flag (register.lua) is not '1'.
-- A replayed claim also checks the token (a queued task has none).
local function load_candidate(id, key, with_token)
  local v = redis.call('HMGET', key, 'status', 'plain', 'queue', 'priority', 'seq', 'attempts',
    'name', 'payload')
  if not v[1] then return nil end
  local t = {id = id, status = v[1], queue = v[3], priority = v[4], seq = v[5], attempts = v[6],
    executor = DEFAULT_EXECUTOR, rate_key = false, name = v[7], timeout = false,
    payload = v[8], metadata = false, token = false}
  if v[2] ~= '1' then
    local o = redis.call('HMGET', key, 'executor', 'rate_key', 'timeout', 'metadata')
    t.executor, t.rate_key, t.timeout, t.metadata = o[1] or DEFAULT_EXECUTOR, o[2], o[3], o[4]
  end
  if with_token then t.token = redis.call('HGET', key, 'token') or false end
  return t
end

-- The 8 reply entries of a claimed (RUNNING) task.
local function claimed_entry(out, t, token)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = t.id, token, tonumber(t.attempts), t.executor
  out[n + 5], out[n + 6], out[n + 7], out[n + 8] = t.timeout or '', t.payload or '',
    t.metadata or '', t.name or ''
end

if claim_id ~= '' and ARGV[8] ~= '1' then
  local last = redis.call('HGET', k_worker(wid), 'last_claim')
  if last then
    local record = cjson.decode(last)
    if record[1] == claim_id then
      local out = {'q', 0}  -- 'q', due now: the worker claims again at once
      for i = 4, #record do
        local token = record[2] .. small_int_text(i - 3) .. record[3]
        local t = load_candidate(record[i], k_task(record[i]), true)
        if t and t.status == 'running' and t.token == token then
          claimed_entry(out, t, token)
        end
      end
      return out
    end
  end
end
-- Wake tokens and counters (qcount) are written once per call (batch_end).
batch_begin()
local unresolved = resolve_pending()

-- A queue's earliest SCHEDULED task, read once: when it is not due yet
-- nothing is promoted, and the same head gives next_due_ms at the end
-- (claiming does not touch scheduled:<q>); else it is read again there.
local scheduled_head = {}
for _, q in ipairs(queues) do
  local first = redis.call('ZRANGE', k_scheduled(q), 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now then
    local due = redis.call('ZRANGEBYSCORE', k_scheduled(q), '-inf', now, 'LIMIT', 0, 100)
    for _, id in ipairs(due) do
      local t = load(id)
      if t then enqueue(t, true) else
        redis.call('ZREM', k_scheduled(q), id)
        redis.call('ZREM', k_byseq('scheduled'), id)
      end
    end
  else
    scheduled_head[q] = first
  end
end

local flags = ''
-- The namespace settings a claim obeys, in one read.
local settings = redis.call('HMGET', KEYS[2], 'max_concurrent_tasks', 'priority_aging_s')
local cap = settings[1]
if cap then
  local room = tonumber(cap) - redis.call('ZCARD', KEYS[1])
  if room < want then
    want = math.max(room, 0)
    flags = flags .. 'c'
  end
end

-- Parked tasks whose turn came rejoin their queues (only when this claim
-- can take them: they get their token now, ahead of the tasks still parked).
if want > 0 then
  for _, q in ipairs(queues) do unpark_due(q) end
end

-- Merge the heads of all queues: scores order by priority, then global seq
-- (or aged order, see flow.lua). A round that parked tasks looks again, at
-- the heads behind them.
local aging_ms = priority_aging_ms(settings[2])
local out, claimed, park_budget = {}, 0, PARK_BUDGET
local claimed_ids = {claim_id, false, false}  -- last_claim (see Replay above)
local claim_no  -- this call's value of the claims counter, taken at its first task
local token_head, token_tail  -- a token is "<counter>.<n>-<ms>": its fixed parts
-- The lease deadline of every task this call claims, as text (now_ms_text).
local deadline = string.format('%d', now + lease_timeout_ms)
while claimed < want and park_budget > 0 do
  local parked = 0
  flush_counts()  -- claim_order reads qcount (priority aging)
  for c in claim_order(queues, want - claimed + 8, aging_ms) do
    if claimed >= want or park_budget <= 0 then break end
    local key = k_task(c.id)
    local t = load_candidate(c.id, key)
    if not t then
      redis.call('ZREM', k_queue(c.q), c.id)
    elseif lane_slots[t.executor] and lane_slots[t.executor] <= 0 then
      if not string.find(flags, 'l') then flags = flags .. 'l' end
    else
      local wait = t.rate_key and take_token(t.rate_key, t.id) or 0
      if wait > 0 then
        park(t, wait)
        parked, park_budget = parked + 1, park_budget - 1
      else
        if lane_slots[t.executor] then lane_slots[t.executor] = lane_slots[t.executor] - 1 end
        leave(t)
        -- counter + Redis clock: a rollback (AOF everysec after power loss)
        -- re-issues counter values, never the same ms, so fencing survives it.
        -- One INCR per claim call (topped up by INCRBY after the loop): its
        -- tasks are told apart by their place in it ("<counter>.<n>-<ms>");
        -- the INCRBY only skips values no later call can take.
        if not claim_no then
          claim_no = redis.call('INCR', KEYS[3])
          token_head, token_tail = string.format('%d.', claim_no), '-' .. now_ms_text()
        end
        local token = token_head .. small_int_text(claimed + 1) .. token_tail
        local attempt = (tonumber(t.attempts) or 0) + 1
        local attempt_s = attempt_text(attempt)
        redis.call('HSET', key, 'status', 'running', 'worker', wid, 'token', token,
          'attempts', attempt_s, 'started_at', now_s())
        enter_running(t, deadline)
        t.status, t.worker = 'running', wid
        emit('TASK_STARTED', t, nil, attempt_s, wid)
        t.attempts = attempt
        claimed_entry(out, t, token)
        claimed = claimed + 1
        claimed_ids[claimed + 3] = c.id
      end
    end
  end
  if parked == 0 then break end
end
-- The counter stays a count of claimed tasks (the soak test's identity
-- claims - recoveries = tasks rests on it): one INCRBY per call, not per task.
if claimed > 1 then redis.call('INCRBY', KEYS[3], claimed - 1) end

local next_due = -1
for _, q in ipairs(queues) do
  if redis.call('ZCARD', k_queue(q)) > 0 then
    if not string.find(flags, 'q') then flags = flags .. 'q' end
    -- We took all we asked for and work remains: wake the next idle worker.
    if claimed > 0 and claimed >= want then wake(q) end
  end
  local first = scheduled_head[q] or redis.call('ZRANGE', k_scheduled(q), 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = math.max(tonumber(first[2]) - now, 0)
    if next_due < 0 or wait < next_due then next_due = wait end
  end
  local turn = parked_wait(q)
  if turn then
    if not string.find(flags, 'q') then flags = flags .. 'q' end
    if next_due < 0 or turn < next_due then next_due = turn end
  end
  -- Parking budget spent: more candidates may be claimable right away.
  if park_budget <= 0 then wake(q) end
end

if unresolved > 0 and not string.find(flags, 'q') then flags = flags .. 'q' end
if claim_id ~= '' and claimed > 0 then
  claimed_ids[2], claimed_ids[3] = token_head, token_tail
  redis.call('HSET', k_worker(wid), 'last_claim', cjson.encode(claimed_ids))
  redis.call('PEXPIRE', k_worker(wid), lease_timeout_ms * 2)  -- like its heartbeat (renew.lua)
end
batch_end()
table.insert(out, 1, next_due)
table.insert(out, 1, flags)
return out
