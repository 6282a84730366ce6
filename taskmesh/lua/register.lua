-- register.lua: store a new task and place it, in one step.
-- KEYS[1] the new task's hash   KEYS[2] seq   KEYS[3] stats   KEYS[4] queues
-- ARGV[1] prefix   ARGV[2] id   ARGV[3] '1' to defer (PENDING)
-- ARGV[4] n, the number of field/value pairs that follow
-- ARGV[5 .. 4+2n] record fields (name, queue, priority, ttl, payload, ...)
-- ARGV[5+2n ..] dependency ids in this shard (deduplicated by the caller),
--   then optionally '' and pairs of (id, link status) for dependencies in
--   other shards: the status link.lua found there ('linked' = unfinished,
--   this task now in its remote_dependents set), read against early:<id> (outcomes
--   apply.lua delivered before this task existed)
-- Returns {'exists'} | {'missing', dep_id} | {'created', status}
--
-- Placement: a dependency already FAILED/CANCELLED stores the task CANCELLED
-- (DependencyFailedError); else defer -> PENDING; else unfinished
-- dependencies -> WAITING (registered in each dependents:<dep> set); else
-- SCHEDULED while its delay/eta (fields delay_ms: from now on the Redis
-- clock, or eta_ms: absolute epoch ms; stored as due_ms) is ahead; else QUEUED.
-- Only TASK_CREATED is published; it carries the status stored.
-- Listing: each of the task's tags gets the id in tag:<tag> (score seq); the
-- status homes it enters are the status indexes (see leave() in the prelude).
-- Key families: applied, byseq, config, dependents, done, done_channel, early, events, parked,
--   pending, qcount, queue, queues, rate, rate_bucket, running, scheduled, seq, stats, tag,
--   tag_expiry, task, waiting, wake
-- Where the arguments sit: register_many.lua runs this body on its own
-- ARGV, so no registration's arguments are copied. `at`: this
-- registration's ARGV[2] (its id) is ARGV[at + 2]; `last` its last
-- argument; `f` where its defer flag, n and the n field pairs are. For a
-- call of its own: 0, #ARGV and 3. With KEYS.shared_at (register_many.lua's
-- shared form) the flag, n and the pairs (all but the payload) are shared
-- by the call's tasks, and a task's own arguments are its id and its
-- payload (ARGV[at + 3]).
local at, last = KEYS.at or 0, KEYS.last or #ARGV
local f = KEYS.shared_at or at + 3
local id = ARGV[at + 2]
local payload = KEYS.shared_at and ARGV[at + 3]
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local npairs = tonumber(ARGV[f + 1])
local first_dep = f + 2 + 2 * npairs

local unfinished, failed_dep, failed_status = {}, nil, nil
local remote_from, remote_unfinished = last + 1, 0
for i = first_dep, last do
  local dep = ARGV[i]
  if dep == '' then remote_from = i + 1; break end
  local status = redis.call('HGET', k_task(dep), 'status')
  if not status then return {'missing', dep} end
  if (status == 'failed' or status == 'cancelled') and not failed_dep then
    failed_dep, failed_status = dep, status
  elseif not is_terminal(status) then
    table.insert(unfinished, dep)
  end
end
for i = remote_from, last, 2 do
  local dep, status = ARGV[i], ARGV[i + 1]
  if status == 'linked' then
    status = redis.call('HGET', k_early(id), dep) or 'linked'
  end
  if (status == 'failed' or status == 'cancelled') and not failed_dep then
    failed_dep, failed_status = dep, status
  elseif status == 'linked' then
    remote_unfinished = remote_unfinished + 1
  end
end
if remote_from <= last then redis.call('DEL', k_early(id)) end

-- t: the record as load() would return it, of the fields this script and
-- the prelude read. Fields in the order registration.Blueprint writes them
-- (name, queue, priority, ttl, payload, then the optional ones) take a
-- constructor sized at once (a table grown field by field rehashes three
-- times, ~8k instructions); any other order (a retry's copy) the general
-- loop.
local t
if ARGV[f + 2] == 'name' and ARGV[f + 4] == 'queue' and ARGV[f + 6] == 'priority'
    and ARGV[f + 8] == 'ttl' then
  t = {id = id, status = 'new', name = ARGV[f + 3], queue = ARGV[f + 5],
    priority = ARGV[f + 7], ttl = ARGV[f + 9]}
  local from = f + 10
  if ARGV[from] == 'payload' then from = from + 2 end  -- (not read here)
  for i = from, first_dep - 1, 2 do t[ARGV[i]] = ARGV[i + 1] end
else
  t = {id = id, status = 'new'}
  for i = f + 2, first_dep - 1, 2 do t[ARGV[i]] = ARGV[i + 1] end
end
-- as text, made once: a number given to redis.call is printed with
-- '%.14g' at each call (see small_int_text)
local seq = small_int_text(redis.call('INCR', KEYS[2]))
t.seq = seq
if t.delay_ms then t.due_ms = now_ms() + tonumber(t.delay_ms)
elseif t.eta_ms then t.due_ms = tonumber(t.eta_ms) end
local pending = #unfinished + remote_unfinished
-- Where the task goes, decided before the record is written so that its
-- HSET stores it with its status ('new' only where mark_terminal() or
-- schedule() writes the status itself).
local placed = 'new'
if failed_dep then placed = 'new'
elseif ARGV[f] == '1' then placed = 'pending'
elseif pending > 0 then placed = 'waiting'
elseif not (t.due_ms and t.due_ms > now_ms()) then placed = 'queued' end
-- 'status' first: every load() looks it up, and HMGET scans the record's
-- listpack from the front (the final status overwrites it in place).
-- Counters still at 0 (attempts, failures, recoveries, pending_dependencies)
-- and progress are not stored: every reader defaults them (fewer fields
-- make each later read and write of the record cheaper).
-- The given fields go to HSET straight from ARGV (a shared form's payload
-- before them).
-- `plain` = '1': the record has none of the options claim.lua and
-- report.lua would otherwise look for (executor, rate_key, timeout,
-- metadata, tags, dependencies): they read this one field, second in the
-- record, instead of scanning the whole record for each absent one (~1.5k
-- instructions each). A record without it (written before it existed) is
-- read field by field. Only registration writes those options; cancel.lua,
-- asking a running task to stop, writes '0' (report.lua then reads
-- cancel_requested), and so does a task's first dependent (registered
-- here or by link.lua): a record with '1' has no dependents, so its
-- outcome needs no look at its dependents sets.
local plain = (t.executor or t.rate_key or t.timeout or t.metadata or t.tags
  or t.dependencies) and '0' or '1'
if placed == 'queued' then  -- (no first_queued_ms: see enqueue() in the prelude)
  if payload then
    redis.call('HSET', KEYS[1], 'status', placed, 'plain', plain, 'seq', seq, 'created_at', now_s(),
      'queued_at', now_s(), 'payload', payload,
      unpack(ARGV, f + 2, first_dep - 1))
  else
    redis.call('HSET', KEYS[1], 'status', placed, 'plain', plain, 'seq', seq, 'created_at', now_s(),
      'queued_at', now_s(), unpack(ARGV, f + 2, first_dep - 1))
  end
elseif payload then
  redis.call('HSET', KEYS[1], 'status', placed, 'plain', plain, 'seq', seq, 'created_at', now_s(),
    'payload', payload, unpack(ARGV, f + 2, first_dep - 1))
else
  redis.call('HSET', KEYS[1], 'status', placed, 'plain', plain, 'seq', seq, 'created_at', now_s(),
    unpack(ARGV, f + 2, first_dep - 1))
end
if pending > 0 or t.due_ms then  -- fields only some tasks have (dependencies, a delay)
  local sometimes = {}
  if pending > 0 then
    sometimes[#sometimes + 1] = 'pending_dependencies'
    sometimes[#sometimes + 1] = pending
  end
  if t.due_ms then
    sometimes[#sometimes + 1] = 'due_ms'
    sometimes[#sometimes + 1] = string.format('%.0f', t.due_ms)
  end
  redis.call('HSET', KEYS[1], unpack(sometimes))
end
add_count(KEYS[3], 'registered', 1)
note_queue(t.queue)
if t.tags and t.tags ~= '[]' then
  for _, tag in ipairs(cjson.decode(t.tags)) do redis.call('ZADD', k_tag(tag), seq, id) end
end

if failed_dep then
  local err = {type = 'DependencyFailedError', attempt = 0,
    message = 'dependency ' .. failed_dep .. ' ended ' .. string.upper(failed_status)}
  mark_terminal(t, 'cancelled', {'error', cjson.encode(err)}, nil, true)
else
  -- (the dependency's `plain` flag goes to '0': it now has dependents, see
  -- resolve_dependents in the prelude)
  for _, dep in ipairs(unfinished) do
    redis.call('SADD', k_dependents(dep), id)
    redis.call('HSET', k_task(dep), 'plain', '0')
  end
  t.status = placed
  if placed == 'pending' then enter_pending(t)
  elseif placed == 'waiting' then enter_waiting(t)
  elseif placed == 'queued' then join_queue(t)
  else schedule(t, t.due_ms) end  -- SCHEDULED until due_ms; writes the status itself
end
emit('TASK_CREATED', t)
return {'created', t.status}
