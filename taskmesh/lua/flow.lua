-- flow.lua: flow control, loaded after prelude.lua into every script (see
-- taskmesh/scripts.py); used by claim.lua and unpark.lua.
--
-- Rate limits. A task with a `rate_key` whose limit is set in `ratelimits`
-- ("<per_second> <burst>") needs a token from `ratebucket:<rate key>` to be
-- claimed: a token bucket refilled continuously at per_second up to burst,
-- computed from Redis TIME (never a client clock), so it holds across all
-- workers. Fields: tokens (float), ts (ms of the last refill), parked (how
-- many tasks of the key wait in parking lots). A bucket is created full.
--
-- Parking. A task that finds no token stays QUEUED but leaves queue:<q> for
-- parked:<q>, scored by the ms when its turn for a token comes, so it never
-- holds up the tasks behind it (no head-of-line blocking). Turns are spaced
-- one token apart per waiting task, so each due task finds a token and the
-- lot is not churned (one that comes back early waits for the next token,
-- ahead of the rest). claim.lua moves due tasks back at their original
-- place in line (queue_score of priority and seq); qcount counts parked
-- tasks as queued all along, and leave() in the prelude takes them out of
-- either structure.
--
-- Priority aging (config field priority_aging_s). Queue scores stay those
-- of README *Registering* (priority bands, FIFO by seq inside a band), so
-- the order without aging is exactly that and metrics read bands as before. With aging, claim
-- order merges the bands by each head's aged time, first_queued_ms -
-- priority * aging: FIFO within a priority is kept, and a lower band's head
-- overtakes higher ones once it has waited priority-difference * aging
-- longer. The setting is read at every claim, so a change applies at once
-- to every task already queued.

local PARK_BUDGET = 500  -- tasks parked per claim call, at most
local UNPARK_BATCH = 100  -- due parked tasks moved back per queue per call
-- PRIORITY_SPAN (one priority band of queue scores) comes from prelude.lua.

local _limits = {}  -- rate key -> {rate, burst} or false, read once per call
local function rate_limit(rk)
  local limit = _limits[rk]
  if limit == nil then
    local raw = redis.call('HGET', K_RATELIMITS, rk)
    local rate, burst
    if raw then rate, burst = string.match(raw, '^(%S+) (%S+)$') end
    limit = rate and {rate = tonumber(rate), burst = tonumber(burst)} or false
    _limits[rk] = limit
  end
  return limit
end

local _returned = {}  -- ids this call took out of a parking lot

-- Takes a token for task `id` of rate key `rk`: returns 0 when granted (or
-- the key has no limit), else the ms until this task's turn. A task back
-- from the lot that finds no token (its turn came early: a late claim
-- earlier lost the time a full bucket cannot store) waits only for the
-- next token, ahead of the tasks still parked.
local function take_token(rk, id)
  local limit = rate_limit(rk)
  if not limit then return 0 end
  local key = k_rate_bucket(rk)
  local now = now_ms()
  local b = redis.call('HMGET', key, 'tokens', 'ts', 'parked')
  local tokens = tonumber(b[1]) or limit.burst
  local elapsed = math.max(now - (tonumber(b[2]) or now), 0)
  tokens = math.min(limit.burst, tokens + elapsed * limit.rate / 1000)
  -- The refill sums float steps of rate/1000: a task due exactly at its
  -- turn may see 0.999...; rounding must not send it to the back of the line.
  if tokens >= 1 - 1e-9 then
    redis.call('HSET', key, 'tokens', math.max(tokens - 1, 0), 'ts', now)
    return 0
  end
  -- Tasks already waiting go first: this one's turn is after theirs.
  local waiting = math.max(tonumber(b[3]) or 0, 0)
  local ahead = _returned[id] and 0 or waiting
  redis.call('HSET', key, 'tokens', tokens, 'ts', now, 'parked', waiting + 1)
  return math.max(math.ceil((1 - tokens + ahead) * 1000 / limit.rate), 1)
end

local function park(t, wait_ms)
  redis.call('ZREM', k_queue(t.queue), t.id)
  redis.call('ZADD', k_parked(t.queue), now_ms() + wait_ms, t.id)
end

-- Back from the lot to its original place in line (still QUEUED: no event).
local function unpark(t)
  redis.call('ZREM', k_parked(t.queue), t.id)
  redis.call('ZADD', k_queue(t.queue), queue_score(t.priority, t.seq), t.id)
  unparked(t.rate_key)
  _returned[t.id] = true
end

local function unpark_due(q)
  local due = redis.call('ZRANGEBYSCORE', k_parked(q), '-inf', now_ms(), 'LIMIT', 0, UNPARK_BATCH)
  for _, id in ipairs(due) do
    local t = load(id)
    if t and t.status == 'queued' then unpark(t) else redis.call('ZREM', k_parked(q), id) end
  end
end

-- ms until the first parked task of queue q is due, or nil if none is parked.
local function parked_wait(q)
  local first = redis.call('ZRANGE', k_parked(q), 0, 0, 'WITHSCORES')
  if first[2] then return math.max(tonumber(first[2]) - now_ms(), 0) end
  return nil
end

-- `raw`: the config field priority_aging_s as claim.lua read it.
local function priority_aging_ms(raw)
  local s = tonumber(raw or '')
  return s and s > 0 and s * 1000 or nil
end

local BAND_CHUNK = 16  -- most band members the aged merge reads at a time

-- One priority band of a queue, read lazily for the aged merge in chunks of
-- 1, 2, 4 ... BAND_CHUNK (a claim of one task reads little more than each
-- band's head). Members come in seq order; each gets the sort key
-- first_queued_ms - priority * aging, raised to the key before it (a running
-- maximum), so a band stays FIFO: its later members never pass its head.
local function band_reader(q, p, aging_ms)
  local low = (255 - p) * PRIORITY_SPAN
  local upto = '(' .. string.format('%d', low + PRIORITY_SPAN)
  -- Reads resume after the last score seen, not at an offset: the claim
  -- removes members (claimed, parked) while the merge goes on.
  local band = {from = string.format('%d', low), buf = {}, i = 1, chunk = 1,
    exhausted = false, floor = -math.huge}
  function band.head()
    if band.i > #band.buf and not band.exhausted then
      local page = redis.call('ZRANGEBYSCORE', k_queue(q), band.from, upto, 'WITHSCORES',
        'LIMIT', 0, band.chunk)
      band.buf, band.i = {}, 1
      band.exhausted = #page / 2 < band.chunk
      if #page > 0 then band.from = '(' .. page[#page] end
      band.chunk = math.min(band.chunk * 2, BAND_CHUNK)
      for j = 1, #page, 2 do
        local when = redis.call('HMGET', k_task(page[j]), 'first_queued_ms', 'queued_at')
        local first = tonumber(when[1]) or (tonumber(when[2]) or 0) * 1000
        band.floor = math.max(band.floor, first - p * aging_ms)
        band.buf[#band.buf + 1] = {id = page[j], q = q, score = tonumber(page[j + 1]),
          aged = band.floor}
      end
    end
    return band.buf[band.i]
  end
  return band
end

-- The candidates of these queues in claim order, as an iterator of
-- {id, q, score}, at most m of them (read each before the next: the
-- one-queue order refills one table). Without aging, the queue scores'
-- order (priority, then seq). With aging, a lazy k-way merge of the
-- non-empty priority bands (known from qcount) by aged key, ties to the
-- lower score (higher priority): only what the claim looks at is read.
local function claim_order(queues, m, aging_ms)
  local n = 0
  if not aging_ms then
    local out = {}
    if #queues == 1 then
      -- One queue: its own order is the order (no scores to merge by; a
      -- score in a reply costs Redis a double formatted, Lua one parsed).
      -- One candidate table, refilled at each step (the caller reads it
      -- before asking for the next): no table per candidate.
      local ids, c = redis.call('ZRANGE', k_queue(queues[1]), 0, m - 1), {q = queues[1]}
      return function()
        n = n + 1
        if not ids[n] then return nil end
        c.id = ids[n]
        return c
      end
    end
    for _, q in ipairs(queues) do
      local head = redis.call('ZRANGE', k_queue(q), 0, m - 1, 'WITHSCORES')
      for i = 1, #head, 2 do
        out[#out + 1] = {id = head[i], q = q, score = tonumber(head[i + 1])}
      end
    end
    table.sort(out, function(a, b) return a.score < b.score end)
    return function()
      n = n + 1
      return out[n]
    end
  end
  local bands = {}
  for _, q in ipairs(queues) do
    local counts = redis.call('HGETALL', k_qcount(q))
    for i = 1, #counts, 2 do
      local p = tonumber(counts[i])
      if p and tonumber(counts[i + 1]) > 0 then bands[#bands + 1] = band_reader(q, p, aging_ms) end
    end
  end
  return function()
    if n >= m then return nil end
    local best, best_head = nil, nil
    for _, band in ipairs(bands) do
      local h = band.head()
      if h and (not best_head or h.aged < best_head.aged
          or (h.aged == best_head.aged and h.score < best_head.score)) then
        best, best_head = band, h
      end
    end
    if not best then return nil end
    best.i = best.i + 1
    n = n + 1
    return best_head
  end
end
