-- prelude.lua: prepended to every taskmesh script (see taskmesh/scripts.py).
--
-- Contract shared by all scripts: ARGV[1] is the namespace key prefix
-- "taskmesh:{ns}:". Keys that depend on data (another task's hash, a queue
-- named in a record) are derived from it here, mirroring taskmesh/keys.py;
-- being prefix-derived they share the {ns} hash tag, so every script touches
-- one Redis Cluster slot. Fixed keys are also passed in KEYS for routing.
--
-- A script runs atomically: no other client observes the state between two
-- of its commands, which is what makes every transition below all-or-nothing.

local PREFIX = ARGV[1]
local K_RESOLVE = PREFIX .. 'resolve'
-- Whether resolutions are left on the `resolve` list (see resolve()): the
-- guard of a claim's cold statements (COLD in taskmesh/scripts.py), so
-- computed before any other statement.
local _resolve_owed = redis.call('EXISTS', K_RESOLVE) == 1
local function k_task(id) return PREFIX .. 'task:' .. id end
local function k_dependents(id) return PREFIX .. 'dependents:' .. id end
local function k_queue(q) return PREFIX .. 'queue:' .. q end
local function k_wake(q) return PREFIX .. 'wake:' .. q end
local function k_scheduled(q) return PREFIX .. 'scheduled:' .. q end
local function k_parked(q) return PREFIX .. 'parked:' .. q end
local function k_rate_bucket(rk) return PREFIX .. 'ratebucket:' .. rk end
local function k_done(status) return PREFIX .. 'done:' .. status end
local function k_worker(id) return PREFIX .. 'worker:' .. id end
local function k_done_channel(id) return PREFIX .. 'done:' .. id end
local function k_qcount(q) return PREFIX .. 'qcount:' .. q end
-- Called once per finished task with the same second: the key is made
-- once per script (a number concatenated is formatted by sprintf, ~1.5k
-- instructions, besides the new string).
local _rate_keys = {}
local function k_rate(sec)
  local key = _rate_keys[sec]
  if not key then
    key = PREFIX .. 'rate:' .. sec
    _rate_keys[sec] = key
  end
  return key
end
local function k_remote_dependents(id) return PREFIX .. 'remote_dependents:' .. id end
local function k_applied(id) return PREFIX .. 'applied:' .. id end
local function k_early(id) return PREFIX .. 'early:' .. id end
local function k_periodic_schedule(name) return PREFIX .. 'periodic:' .. name end
local function k_byseq(status) return PREFIX .. 'byseq:' .. status end
local function k_tag(tag) return PREFIX .. 'tag:' .. tag end
local K_RUNNING = PREFIX .. 'running'
local K_WAITING = PREFIX .. 'waiting'
local K_PENDING = PREFIX .. 'pending'
local K_QUEUES = PREFIX .. 'queues'
local K_WORKERS = PREFIX .. 'workers'
local K_STATS = PREFIX .. 'stats'
local K_CONFIG = PREFIX .. 'config'
local K_RATELIMITS = PREFIX .. 'ratelimits'
local K_SEQ = PREFIX .. 'seq'
local K_CLAIMS = PREFIX .. 'claims'
local K_EVENTS = PREFIX .. 'events'
local K_CONTROL = PREFIX .. 'control'
local K_RUNTIMES = PREFIX .. 'runtimes'
local K_OUTBOX = PREFIX .. 'outbox'
local K_CAPRES = PREFIX .. 'capres'
local K_PERIODIC = PREFIX .. 'periodic'
local K_TAG_EXPIRY = PREFIX .. 'tag_expiry'

local WAKE_TOKENS = 63  -- wake lists are trimmed to this many extra tokens
local MAX_RECOVERIES = 3
local RATE_WINDOW_S = 120  -- per-second outcome buckets live this long
local RUNTIME_SAMPLES = 1000  -- recent completion runtimes kept for percentiles
local RUNTIME_SLACK = 100  -- the runtimes list is trimmed once it is this much longer
local RESOLVE_BUDGET = 200  -- dependents handled per script call (see resolve())
-- done:<status> score of a record kept forever: above every expiry in ms, and
-- + finished ms keeps "most recently finished first" (exact below 2^53).
local FOREVER_BASE = 4503599627370496

local _now_ms, _time
local function now_ms()
  if not _now_ms then
    _time = redis.call('TIME')
    _now_ms = tonumber(_time[1]) * 1000 + math.floor(tonumber(_time[2]) / 1000)
  end
  return _now_ms
end
local _now_s
-- Integer conversions only: '%.3f' and '%.0f' go through libc's exact
-- floating-point printing (~5-7k instructions each), '%d' does not (a Lua
-- number here is an integer below 2^53: exact as a C long).
local function now_s()  -- string.format costs ~3 us: format once per script
  if not _now_s then
    local ms = now_ms()
    _now_s = string.format('%d.%03d', math.floor(ms / 1000), ms % 1000)
  end
  return _now_s
end
-- A number given to redis.call is formatted by Redis (snprintf %.17g, ~1-2k
-- instructions) at every call, a Lua number turned into text by Lua's own
-- sprintf: values repeated within a script are passed as text made once.
local _now_ms_text
local function now_ms_text()
  if not _now_ms_text then _now_ms_text = string.format('%d', now_ms()) end
  return _now_ms_text
end
-- The text of a small count (an attempt number, a task's place in a claim,
-- a length) without sprintf: 0..9 are cut from a constant; larger integers
-- go through '%d' (a Lua number turned into text by tostring, table.concat
-- or '..' is printed with '%.14g': libc's floating-point printing, ~1.4k
-- instructions).
local function small_int_text(n)
  if n >= 0 and n <= 9 and n % 1 == 0 then return string.sub('0123456789', n + 1, n + 1) end
  if n % 1 == 0 and n > -2^53 and n < 2^53 then return string.format('%d', n) end
  return tostring(n)
end
local attempt_text = small_int_text  -- the text of attempt number n (almost always 1)

-- Priority dominates, then the global FIFO sequence: ZPOPMIN order is
-- "highest priority first, oldest first". Exact up to 2^53. The one place
-- the formula is written in Lua (taskmesh.keys.queue_band in Python).
local PRIORITY_SPAN = 17592186044416  -- 2^44: one priority band of queue scores
local function queue_score(priority, seq)
  return string.format('%d', (255 - tonumber(priority)) * PRIORITY_SPAN + tonumber(seq))
end

-- Registration options not stored while at their default (registration.py;
-- taskmesh.models.RECORD_DEFAULTS in Python, pinned equal by
-- tests/test_keys.py): a reader of the field applies these.
local DEFAULT_EXECUTOR = 'async'
local DEFAULT_MAX_RETRIES = 0
local DEFAULT_RETRY_DELAY_S = 1
local DEFAULT_RETRY_BACKOFF = 1

-- (claim.lua and report.lua read their own fields, with the defaults above.)
local FIELDS = {'status', 'queue', 'priority', 'seq', 'ttl', 'attempts', 'failures',
  'recoveries', 'token', 'name', 'worker', 'cancel_requested', 'pending_dependencies',
  'started_at', 'due_ms', 'rate_key', 'tags'}

-- Returns the task as a table, or nil if the record does not exist.
-- `fields` (default FIELDS; 'status' first) lets a hot script read only
-- what it and the prelude functions it passes t to use: HMGET scans the
-- record's listpack once per field, so a field read costs even when unused.
-- Counters left at their default are not stored (register.lua): attempts,
-- failures, recoveries, pending_dependencies read as nil, i.e. 0.
local function load(id, fields)
  fields = fields or FIELDS
  local values = redis.call('HMGET', k_task(id), unpack(fields))
  if not values[1] then return nil end
  local t = {id = id}
  for i = 1, #fields do t[fields[i]] = values[i] end
  return t
end

-- The terminal statuses, in the order their done:<status> indexes are
-- walked (taskmesh.models.TERMINAL_ORDER in Python).
local TERMINAL = {'completed', 'failed', 'cancelled'}
local function is_terminal(status)
  for _, s in ipairs(TERMINAL) do
    if status == s then return true end
  end
  return false
end

-- One wake-up token for the idle workers of queue q. The list holds at
-- most WAKE_TOKENS + 1 tokens; a full list already wakes every BLPOP a
-- push would (no idle worker is draining it), so a push to a full list
-- is skipped: one LLEN, not an LPUSH and an LTRIM per enqueue (~18k
-- instructions). Tokens are pushed after the task is queued (callers).
-- Inside a batch (batch_begin .. batch_end: a script running many
-- transitions) the tokens are counted and pushed once per queue at the
-- end: nothing outside sees a script's writes before it ends, so the
-- workers woken are the same, for one LPUSH (and at most one LTRIM) a queue.
local _wakes  -- nil: push now; else queue -> tokens owed (a batch)
local _wake_order = {}
local function push_wakes(q, n)
  local key = k_wake(q)
  local room = WAKE_TOKENS + 1 - redis.call('LLEN', key)
  if room <= 0 then return end
  if n == 1 then
    redis.call('LPUSH', key, '1')
    return
  end
  local tokens = {}
  for i = 1, math.min(n, room) do tokens[i] = '1' end
  redis.call('LPUSH', key, unpack(tokens))
end
local function wake(q)
  if not _wakes then return push_wakes(q, 1) end
  if not _wakes[q] then _wake_order[#_wake_order + 1] = q end
  _wakes[q] = (_wakes[q] or 0) + 1
end

-- Once-per-call memo of idempotent writes (SADD of a queue name to
-- `queues`): a batch registering many tasks of one queue writes it once.
local _noted = {}
local function note_queue(q)
  if not _noted[q] then
    redis.call('SADD', K_QUEUES, q)
    _noted[q] = true
  end
end

-- Counters (stats, qcount, the per-second rate buckets) and the runtime
-- samples, the same way: inside a batch they are summed per (key, field)
-- and written once per call (flush_counts), not once per task; outside one
-- they are written at once. Nothing reads them inside the script that
-- writes them, except claim_order (flow.lua), whose caller flushes first.
-- A rate bucket gets its expiry when the field is created (its first
-- outcome of that status), as with one HINCRBY per task.
local _counts, _count_order, _count_expiry = nil, {}, {}
local _runtimes = {}
local function add_count(key, field, n, expire_s)
  if not _counts then
    if redis.call('HINCRBY', key, field, n) == n and expire_s then
      redis.call('EXPIRE', key, expire_s)
    end
    return
  end
  local c = _counts[key]
  if not c then
    c = {order = {}, sums = {}}
    _counts[key] = c
    _count_order[#_count_order + 1] = key
    _count_expiry[key] = expire_s
  end
  field = tostring(field)
  if not c.sums[field] then c.order[#c.order + 1] = field end
  c.sums[field] = (c.sums[field] or 0) + n
end
local function push_runtimes(samples)
  if redis.call('LPUSH', K_RUNTIMES, unpack(samples)) > RUNTIME_SAMPLES + RUNTIME_SLACK then
    redis.call('LTRIM', K_RUNTIMES, 0, RUNTIME_SAMPLES - 1)
  end
end
local function runtime_sample(ms)
  if not _counts then return push_runtimes({ms}) end
  _runtimes[#_runtimes + 1] = ms
  if #_runtimes >= RUNTIME_SAMPLES then  -- a bounded unpack()
    push_runtimes(_runtimes)
    _runtimes = {}
  end
end
local function flush_counts()
  if not _counts then return end
  for _, key in ipairs(_count_order) do
    local c, expire_s = _counts[key], _count_expiry[key]
    for _, field in ipairs(c.order) do
      local n = c.sums[field]
      if n ~= 0 and redis.call('HINCRBY', key, field, n) == n and expire_s then
        redis.call('EXPIRE', key, expire_s)
      end
    end
  end
  _counts, _count_order, _count_expiry = {}, {}, {}
end
-- The runtime samples a batch kept (report_many calls it before batch_end).
local function flush_runtimes()
  if #_runtimes > 0 then
    push_runtimes(_runtimes)
    _runtimes = {}
  end
end

-- The events stream's cap (config events_maxlen, read once per script, as
-- text: see now_ms_text) and whether this batch added to it: XADD ... MAXLEN
-- costs ~3k instructions an entry over a plain XADD, so a batch appends
-- plainly and trims once at its end (the cap is approximate, '~', anyway:
-- whole stream nodes go). Outside a batch each XADD trims (MAXLEN ~).
local _maxlen, _trim_owed
local function trim_events()
  _trim_owed = false
  redis.call('XTRIM', K_EVENTS, 'MAXLEN', '~', _maxlen)
end

local function batch_begin()
  _wakes = {}
  _counts = {}
end
local function batch_end()
  flush_counts()
  if _trim_owed then trim_events() end
  _counts = nil
  local owed = _wakes
  _wakes = nil
  for _, q in ipairs(_wake_order) do push_wakes(q, owed[q]) end
  _wake_order = {}
end

-- Events --------------------------------------------------------------------
-- Every event is one write: an entry of the capped stream, in the same
-- script as the transition it reports. The stream serves replay and live
-- readers alike (live readers block on it with XREAD from the position they
-- subscribed at, events.py), so nothing is published and nothing is lost
-- between a replay and the live tail.
-- An entry has the same four fields whatever its type, so Redis stores
-- their names once per stream node (XADD's "same fields" entries: an entry
-- appends only its values): task_id; e, the text
-- "<type>,<status>,<priority>,<queue>,<attempt>,<runtime_ms>,<us>" (a queue
-- name has no comma; '' for what the event has not; us is the script's
-- clock in microseconds: the event's time, and what orders the events of
-- different shards when they are merged, sharding.merge_key); worker; name
-- (free text, each in its own field). Any other extra (an error, a delay,
-- progress) goes JSON-encoded in a fifth field, data, present only then.
-- Each field costs its XADD ~1.5k instructions, so us lives in e. No JSON
-- and no number formatting for the common events (us is formatted once per
-- script). events.decode_entry reads this and the earlier shapes.
-- The hot callers (a claim's TASK_STARTED, a completion) pass attempt,
-- worker and runtime_ms as text arguments instead of in `data`: no table to
-- make and walk per event.
local _us
local function emit(etype, t, data, attempt, worker, runtime_ms)
  if not _us then
    _maxlen = _maxlen or redis.call('HGET', K_CONFIG, 'events_maxlen') or '100000'
    now_ms()
    _us = _time[1] .. string.format('%06d', tonumber(_time[2]))
  end
  attempt, worker, runtime_ms = attempt or '', worker or '', runtime_ms or ''
  local rest
  if data then
    for key, value in pairs(data) do
      -- (a field HMGET did not find is false: that goes in the JSON, as before)
      if key == 'attempt' and value then attempt = value
      elseif key == 'worker' and value then worker = value
      elseif key == 'runtime_ms' and value then runtime_ms = value
      else
        rest = rest or {}
        rest[key] = value
      end
    end
  end
  local e = etype .. ',' .. (t.status or '') .. ',' .. (t.priority or '') .. ',' .. (t.queue or '')
    .. ',' .. attempt .. ',' .. runtime_ms .. ',' .. _us
  if not _counts then  -- one event: trimmed as it is added
    if rest then
      redis.call('XADD', K_EVENTS, 'MAXLEN', '~', _maxlen, '*', 'task_id', t.id, 'e', e,
        'worker', worker, 'name', t.name or '', 'data', cjson.encode(rest))
    else
      redis.call('XADD', K_EVENTS, 'MAXLEN', '~', _maxlen, '*', 'task_id', t.id, 'e', e,
        'worker', worker, 'name', t.name or '')
    end
    return
  end
  _trim_owed = true  -- a batch: trimmed once, at batch_end
  if rest then
    redis.call('XADD', K_EVENTS, '*', 'task_id', t.id, 'e', e, 'worker', worker,
      'name', t.name or '', 'data', cjson.encode(rest))
  else
    redis.call('XADD', K_EVENTS, '*', 'task_id', t.id, 'e', e, 'worker', worker,
      'name', t.name or '')
  end
end

-- One task of rate key `rk` left the parking lot: its bucket's count of
-- waiting tasks (which spaces out their turns) goes down. The bucket may be
-- gone (limit removed): then there is nothing to count.
local function unparked(rk)
  if rk and redis.call('HEXISTS', k_rate_bucket(rk), 'parked') == 1 then
    redis.call('HINCRBY', k_rate_bucket(rk), 'parked', -1)
  end
end

-- byseq:running, made once per script (a claim and a report each name it
-- per task).
local _byseq_running
local function byseq_running()
  _byseq_running = _byseq_running or k_byseq('running')
  return _byseq_running
end

-- Structures ----------------------------------------------------------------
-- Each non-terminal status has exactly one home structure; a transition is
-- leave(old home) + enter(new home) + HSET status, inside one script.
-- PENDING and WAITING homes are scored by seq, so they double as listing
-- indexes; RUNNING and SCHEDULED homes are scored by time, so each also has
-- a byseq:<status> index (written and removed together with the home).
local function leave(t)
  local s = t.status
  if s == 'pending' then redis.call('ZREM', K_PENDING, t.id)
  elseif s == 'waiting' then redis.call('ZREM', K_WAITING, t.id)
  elseif s == 'queued' then
    -- A QUEUED task is in its queue, or parked waiting for a rate-limit
    -- token (see flow.lua); qcount counts both.
    if redis.call('ZREM', k_queue(t.queue), t.id) == 1 then
      add_count(k_qcount(t.queue), t.priority, -1)
    elseif redis.call('ZREM', k_parked(t.queue), t.id) == 1 then
      add_count(k_qcount(t.queue), t.priority, -1)
      unparked(t.rate_key)
    end
  elseif s == 'scheduled' then
    redis.call('ZREM', k_scheduled(t.queue), t.id)
    redis.call('ZREM', k_byseq('scheduled'), t.id)
  elseif s == 'running' then
    redis.call('ZREM', K_RUNNING, t.id)
    redis.call('ZREM', byseq_running(), t.id)
  end
end

-- The homes entered without enqueue(); the caller writes the status field.
local function enter_pending(t) redis.call('ZADD', K_PENDING, t.seq, t.id) end
local function enter_waiting(t) redis.call('ZADD', K_WAITING, t.seq, t.id) end
local function enter_scheduled(t, due_ms)
  redis.call('ZADD', k_scheduled(t.queue), due_ms, t.id)
  redis.call('ZADD', k_byseq('scheduled'), t.seq, t.id)
end
local function enter_running(t, deadline_ms)
  redis.call('ZADD', K_RUNNING, deadline_ms, t.id)
  redis.call('ZADD', byseq_running(), t.seq, t.id)
end

-- QUEUED's home: t joins its queue at its original place in line (seq
-- never changes). The caller writes the status (register.lua with the
-- record itself, else enqueue()).
local function join_queue(t)
  if redis.call('ZADD', k_queue(t.queue), queue_score(t.priority, t.seq), t.id) == 1 then
    add_count(k_qcount(t.queue), t.priority, 1)
  end
  wake(t.queue)
end

local function enqueue(t, announce)
  leave(t)
  join_queue(t)
  -- When the task first joined the line is kept (like seq): priority aging
  -- (flow.lua) ages a re-queued task from then. It is queued_at until the
  -- task is queued again; so first_queued_ms is written only then, from
  -- the queued_at it replaces (a record without it reads queued_at).
  -- A task just registered (status 'new') has neither them nor a token.
  if t.status == 'new' then
    redis.call('HSET', k_task(t.id), 'status', 'queued', 'queued_at', now_s())
  else
    local first = redis.call('HGET', k_task(t.id), 'queued_at')
    if first then
      redis.call('HSETNX', k_task(t.id), 'first_queued_ms',
        string.format('%d', math.floor(tonumber(first) * 1000 + 0.5)))
    end
    redis.call('HSET', k_task(t.id), 'status', 'queued', 'queued_at', now_s())
    redis.call('HDEL', k_task(t.id), 'token')
  end
  t.status = 'queued'
  if announce then emit('TASK_QUEUED', t) end
end

-- Makes t SCHEDULED until due_ms (a retry delay, or delay=/eta=). An idle
-- worker sleeps until the earliest due time it saw at its last claim; if t
-- is now the earliest of its queue, a wake token makes one idle worker
-- claim again and recompute that sleep (so it is not woken for every
-- later-due task, and never sleeps past an earlier one).
local function schedule(t, due_ms)
  leave(t)
  local key = k_scheduled(t.queue)
  enter_scheduled(t, due_ms)
  redis.call('HSET', k_task(t.id), 'status', 'scheduled')
  redis.call('HDEL', k_task(t.id), 'token')
  t.status = 'scheduled'
  if redis.call('ZRANGE', key, 0, 0)[1] == t.id then wake(t.queue) end
end

-- A task whose dependencies are done (or that has none) may run: QUEUED, or
-- SCHEDULED while the time asked with delay=/eta= (due_ms) is still ahead.
local function release(t, announce)
  local due = tonumber(t.due_ms)
  if due and due > now_ms() then schedule(t, due) else enqueue(t, announce) end
end

-- The done:<id> message (waiters.py, parse_done): the status alone, or,
-- when the outcome fields the waiter would read are DONE_INLINE_BYTES or
-- less together, "<status>|<attempts>|<#result>|<#error>|<#error_exc>|"
-- followed by those three values (absent = empty), so the waiter needs no
-- read of the record. `fields` are the only outcome fields the record has:
-- result, error and error_exc are written by mark_terminal alone.
local DONE_INLINE_BYTES = 4096
local function done_message(t, status, fields)
  local result, err, exc = '', '', ''
  for i = 1, #fields, 2 do  -- (no table of them: a table per outcome costs more)
    local name = fields[i]
    if name == 'result' then result = fields[i + 1]
    elseif name == 'error' then err = fields[i + 1]
    elseif name == 'error_exc' then exc = fields[i + 1] end
  end
  if #result + #err + #exc > DONE_INLINE_BYTES then return status end
  -- (the lengths as text made here: see small_int_text; one concatenation)
  return status .. '|' .. (t.attempts or '0') .. '|' .. small_int_text(#result) .. '|'
    .. small_int_text(#err) .. '|' .. small_int_text(#exc) .. '|' .. result .. err .. exc
end

-- Where a record finishing now goes, per ttl text: its done:<status> score
-- and its EXPIRE argument, as text (formatted once per script and ttl).
local _done_places = {}

-- Writes a terminal status: the one place a task record gets its expiry.
-- `fields` are extra HSET pairs (result, error); `data` goes into the event.
local function mark_terminal(t, status, fields, data, quiet, attempt, worker, runtime_ms)
  leave(t)
  local key = t.key or k_task(t.id)  -- t.key: the record's key, when the caller has it
  redis.call('HSET', key, 'status', status, 'finished_at', now_s(), unpack(fields))
  -- A failed or cancelled task keeps its payload until the record expires,
  -- so retry_task can register it again.
  if status == 'completed' then
    redis.call('HDEL', key, 'token', 'payload')
  else
    redis.call('HDEL', key, 'token')
  end
  -- Cross-shard deliveries: none matter now. Only a task with dependencies
  -- can have them; false = loaded and absent (nil: not loaded, so delete).
  if t.dependencies ~= false then redis.call('DEL', k_applied(t.id)) end
  local ttl_text = t.ttl or '-1'
  local place = _done_places[ttl_text]
  if not place then  -- once per script and ttl (see now_ms_text)
    local ttl = tonumber(ttl_text) or -1
    if ttl >= 0 then
      place = {ttl = ttl, expire = string.format('%d', math.max(ttl, 1)),
        score = string.format('%d', now_ms() + ttl * 1000)}
    else
      place = {ttl = ttl, score = string.format('%d', FOREVER_BASE + now_ms())}
    end
    _done_places[ttl_text] = place
  end
  if place.expire then
    redis.call('EXPIRE', key, place.expire)
    -- The record will vanish with its tags: remember where its id is listed.
    if t.tags and t.tags ~= '[]' then
      redis.call('ZADD', K_TAG_EXPIRY, now_ms() + math.max(place.ttl, 1) * 1000,
        cjson.encode({t.id, cjson.decode(t.tags)}))
    end
  end
  redis.call('ZADD', k_done(status), place.score, t.id)
  add_count(K_STATS, status, 1)
  -- The bucket's expiry is set when it is created (its first outcome).
  add_count(k_rate(math.floor(now_ms() / 1000)), status, 1, RATE_WINDOW_S)
  t.status = status
  redis.call('PUBLISH', k_done_channel(t.id), done_message(t, status, fields))
  if not quiet then
    local etype = status == 'completed' and 'TASK_COMPLETED' or 'TASK_' .. string.upper(status)
    emit(etype, t, data, attempt, worker, runtime_ms)
  end
end

-- The ids resolve() takes off a parent's dependents sets go on the parent's
-- own record (`resolved_dependents`, a JSON list), so what depended on a
-- finished task can still be shown, and goes when the record expires. Only
-- parents with dependents pay for it; a record already gone is not re-created.
-- `remote` holds "<shard>|<id>" members, `spopped` plain ids.
local function keep_resolved(parent_id, remote, spopped)
  local key = k_task(parent_id)
  if redis.call('EXISTS', key) == 0 then return end
  local kept = redis.call('HGET', key, 'resolved_dependents')
  local list = kept and cjson.decode(kept) or {}
  for _, member in ipairs(remote) do list[#list + 1] = string.match(member, '^%d+|(.*)$') end
  for _, id in ipairs(spopped) do list[#list + 1] = id end
  redis.call('HSET', key, 'resolved_dependents', cjson.encode(list))
end

-- Completion promotes each dependent whose last dependency this was; failure
-- or cancellation cancels dependents transitively (DependencyFailedError).
-- The walk uses a stack, not recursion, and handles at most RESOLVE_BUDGET
-- dependents per script call so a wide fan-out never blocks Redis for long:
-- what is left is queued on the `resolve` list as "<id>|<status>" and
-- continued by the next claim.lua calls (every worker's claim drains some).
local function resolve(stack)
  local budget = RESOLVE_BUDGET
  while #stack > 0 do
    local parent = table.remove(stack)
    -- Dependents in other shards: one outbox entry each, written with the
    -- outcome itself, applied there once by apply.lua (see sharding.py).
    local rkey = k_remote_dependents(parent.id)
    local remote = redis.call('SMEMBERS', rkey)
    for _, member in ipairs(remote) do
      local shard, did = string.match(member, '^(%d+)|(.*)$')
      redis.call('RPUSH', K_OUTBOX, cjson.encode({parent.id, parent.status, tonumber(shard), did}))
    end
    if #remote > 0 then redis.call('DEL', rkey) end
    local dkey = k_dependents(parent.id)
    local batch = budget > 0 and redis.call('SPOP', dkey, budget) or {}
    budget = budget - #batch
    if #remote > 0 or #batch > 0 then keep_resolved(parent.id, remote, batch) end
    for _, did in ipairs(batch) do
      local d = load(did)
      if d and not is_terminal(d.status) then
        if parent.status == 'completed' then
          local left = redis.call('HINCRBY', k_task(did), 'pending_dependencies', -1)
          if left <= 0 and d.status == 'waiting' then release(d, true) end
        else
          local err = {type = 'DependencyFailedError', attempt = 0,
            message = 'dependency ' .. parent.id .. ' ended ' .. string.upper(parent.status)}
          mark_terminal(d, 'cancelled', {'error', cjson.encode(err)}, {error = err})
          table.insert(stack, {id = did, status = 'cancelled'})
        end
      end
    end
    if budget <= 0 then
      table.insert(stack, parent)
      for _, left in ipairs(stack) do
        if redis.call('EXISTS', k_dependents(left.id), k_remote_dependents(left.id)) > 0 then
          redis.call('RPUSH', K_RESOLVE, left.id .. '|' .. left.status)
        end
      end
      -- Wake idle workers so the rest is resolved promptly.
      for _, q in ipairs(redis.call('SMEMBERS', K_QUEUES)) do wake(q) end
      return
    end
  end
end

local function resolve_dependents(t)
  -- A record whose `plain` flag is '1' (t.plain, read by report.lua) has no
  -- dependents: register.lua and link.lua write '0' on a task when they add
  -- to its dependents sets. Otherwise most tasks still have none: one
  -- EXISTS instead of resolve()'s reads.
  if t.plain == '1' then return end
  if redis.call('EXISTS', k_dependents(t.id), k_remote_dependents(t.id)) == 0 then return end
  resolve({{id = t.id, status = t.status}})
end

-- Continues resolutions left over by earlier scripts (see resolve()). Its
-- callers call it before any write: the list is as _resolve_owed found it.
local function resolve_pending()
  if not _resolve_owed then return 0 end  -- the usual case: no LPOP
  local stack = {}
  for _, entry in ipairs(redis.call('LPOP', K_RESOLVE, RESOLVE_BUDGET) or {}) do
    local id, status = string.match(entry, '^(.*)|(%a+)$')
    if id then table.insert(stack, 1, {id = id, status = status}) end
  end
  if #stack == 0 then return 0 end
  resolve(stack)
  return redis.call('LLEN', K_RESOLVE)
end

-- Whether a failure may be retried under retry_on (report.lua): a JSON list
-- of qualified class names; the error record lists the classes of the
-- failing exception (its MRO, written by the worker), so a subclass of a
-- listed class matches.
local function listed(retry_on, err)
  if not retry_on then return true end
  local names = {}
  for _, name in ipairs(cjson.decode(retry_on)) do names[name] = true end
  for _, name in ipairs(type(err.types) == 'table' and err.types or {}) do
    if names[name] then return true end
  end
  return false
end

-- attempt, worker, runtime_ms: text for the event (see emit).
local function finish(t, status, fields, data, attempt, worker, runtime_ms)
  mark_terminal(t, status, fields, data, false, attempt, worker, runtime_ms)
  resolve_dependents(t)
end
