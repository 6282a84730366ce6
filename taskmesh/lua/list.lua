-- list.lua: one page of list_tasks, walked over the status indexes.
-- KEYS[1] queues (the set of queue names)
-- ARGV[1] prefix   ARGV[2] want: matches to return   ARGV[3] budget: index
-- entries to examine at most   ARGV[4] wanted statuses, comma-separated
-- ARGV[5] queue filter ('' = any)   ARGV[6] tag filter ('' = any)
-- ARGV[7..9] cursor: phase ('' = from the start), score, id
-- Key families read: queue:<q>, parked:<q>, pending, waiting, byseq:running,
-- byseq:scheduled, done:<status>, tag:<tag>, task:<id> (existence, queue,
-- status, seq). Written: an index entry whose record is gone (expired) is
-- removed from that index on the way (ZREM), nothing else.
-- Returns {flag, phase, score, id, then phase, score, id per match}:
-- flag 'end' = nothing matches after the last match returned; 'more' = resume
-- from the position returned (the last entry examined).
--
-- Order (README *Finding tasks, retrying one*): phase 'q' = QUEUED in claim order (queue scores
-- ascending, merged across queues as one worker serving them all would),
-- then 'p' = QUEUED but parked for a rate-limit token (parked:<q>, by when
-- their turn comes), then 'u' = PENDING/WAITING/SCHEDULED/RUNNING newest first (seq descending),
-- then 'f' = finished, most recently finished first (done:<status> score
-- descending: expiry ms, or FOREVER_BASE + finished ms). Ties in score are
-- broken by id the way Redis orders them, so a position (phase, score, id)
-- is exact. A sparse tag (few ids among many tasks) is listed from its own
-- index, sorted into that same order; a dense one filters the status walk.
-- The page's records are read by the caller (metadata matching happens there).
-- Key families: byseq, done, parked, pending, queue, queues, tag, task, waiting
local TAG_DIRECT = 2000
local MAX_CHUNK = 256  -- entries read from one index per ZRANGE, at most
local want, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local wanted = {}
for s in string.gmatch(ARGV[4], '[^,]+') do wanted[s] = true end
local queue, tag = ARGV[5], ARGV[6]
local cphase, cscore, cid = ARGV[7], tonumber(ARGV[8]), ARGV[9]
local RANK = {q = 1, p = 2, u = 3, f = 4}
local ASC = {q = true, p = true, u = false, f = false}

local function fmt(score) return string.format('%.17g', score) end

-- Byte order, as Redis orders equal scores (Lua's own '<' follows the
-- server's collation locale, which need not be bytewise).
local function lex_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- Is (s, id) strictly after (ps, pid) in the walk order of a phase?
local function after(asc, s, id, ps, pid)
  if s ~= ps then if asc then return s > ps else return s < ps end end
  if asc then return lex_lt(pid, id) else return lex_lt(id, pid) end
end

local function present(reply) return reply ~= false and reply ~= nil end

local function is_after_cursor(phase, s, id)
  if cphase == '' then return true end
  if RANK[phase] ~= RANK[cphase] then return RANK[phase] > RANK[cphase] end
  return after(ASC[phase], s, id, cscore, cid)
end

local out = {}
local function emit_match(phase, s, id)
  out[#out + 1] = phase
  out[#out + 1] = fmt(s)
  out[#out + 1] = id
end

local function sources(phase)
  local keys = {}
  if phase == 'q' then
    if wanted['queued'] then
      if queue ~= '' then keys[1] = k_queue(queue)
      else
        for _, q in ipairs(redis.call('SMEMBERS', KEYS[1])) do keys[#keys + 1] = k_queue(q) end
      end
    end
  elseif phase == 'p' then
    if wanted['queued'] then
      if queue ~= '' then keys[1] = k_parked(queue)
      else
        for _, q in ipairs(redis.call('SMEMBERS', KEYS[1])) do keys[#keys + 1] = k_parked(q) end
      end
    end
  elseif phase == 'u' then
    if wanted['pending'] then keys[#keys + 1] = K_PENDING end
    if wanted['waiting'] then keys[#keys + 1] = K_WAITING end
    if wanted['scheduled'] then keys[#keys + 1] = k_byseq('scheduled') end
    if wanted['running'] then keys[#keys + 1] = k_byseq('running') end
  else
    for _, s in ipairs({'completed', 'failed', 'cancelled'}) do
      if wanted[s] then keys[#keys + 1] = k_done(s) end
    end
  end
  return keys
end

-- Sparse tag: every id of the tag, placed and sorted --------------------------
-- Placing the tag's n ids costs ~3n commands; walking the statuses costs
-- ~want x total / n entries. The cheaper one is taken (both give one order).
local function tag_is_sparse()
  local n = redis.call('ZCARD', k_tag(tag))
  if n > TAG_DIRECT then return false end
  local total = 0
  for _, phase in ipairs({'q', 'p', 'u', 'f'}) do
    for _, key in ipairs(sources(phase)) do total = total + redis.call('ZCARD', key) end
  end
  return 3 * n * n <= want * total
end

if tag ~= '' and tag_is_sparse() then
  local found = {}
  for _, id in ipairs(redis.call('ZRANGE', k_tag(tag), 0, -1)) do
    local v = redis.call('HMGET', k_task(id), 'status', 'queue', 'seq')
    local status, q = v[1], v[2]
    if not status then
      redis.call('ZREM', k_tag(tag), id)
    elseif wanted[status] and (queue == '' or q == queue) then
      local phase, s = 'u', tonumber(v[3])
      if status == 'queued' then
        phase, s = 'q', tonumber(redis.call('ZSCORE', k_queue(q), id))
        if not s then phase, s = 'p', tonumber(redis.call('ZSCORE', k_parked(q), id)) end
      elseif is_terminal(status) then
        phase, s = 'f', tonumber(redis.call('ZSCORE', k_done(status), id))
      end
      if s and is_after_cursor(phase, s, id) then
        found[#found + 1] = {phase = phase, s = s, id = id}
      end
    end
  end
  table.sort(found, function(a, b)
    if a.phase ~= b.phase then return RANK[a.phase] < RANK[b.phase] end
    return after(ASC[a.phase], b.s, b.id, a.s, a.id)
  end)
  local n = math.min(#found, want)
  for i = 1, n do emit_match(found[i].phase, found[i].s, found[i].id) end
  if #found > want then
    local last = found[want]
    return {'more', last.phase, fmt(last.s), last.id, unpack(out)}
  end
  return {'end', '', '', '', unpack(out)}
end

-- The status walk --------------------------------------------------------------
-- Refills a source's buffer with the entries after its own last position.
-- The first read takes about what the page needs, later ones double (so a
-- page of 10 reads ~10 entries per index, a filtered walk few round trips).
-- A chunk made only of ties at that score (all at or before the position)
-- moves the offset on, so any number of equal scores is walked exactly.
local function refill(src, asc)
  while true do
    local raw
    local from = src.ls and fmt(src.ls) or (asc and '-inf' or '+inf')
    if asc then
      raw = redis.call('ZRANGEBYSCORE', src.key, from, '+inf', 'WITHSCORES', 'LIMIT', src.offset, src.chunk)
    else
      raw = redis.call('ZREVRANGEBYSCORE', src.key, from, '-inf', 'WITHSCORES', 'LIMIT', src.offset, src.chunk)
    end
    local buf = {}
    for i = 1, #raw, 2 do
      local s = tonumber(raw[i + 1])
      if not src.ls or after(asc, s, raw[i], src.ls, src.lid) then
        buf[#buf + 1] = {s = s, id = raw[i]}
      end
    end
    src.full = #raw == 2 * src.chunk
    local read = src.chunk
    src.chunk = math.min(src.chunk * 2, MAX_CHUNK)
    if #buf > 0 or not src.full then
      src.buf, src.pos = buf, 1
      src.offset = 0
      return
    end
    src.offset = src.offset + read
  end
end

local function head(src, asc)
  if src.pos > #src.buf then
    if src.done then return nil end
    if #src.buf > 0 and not src.full then src.done = true return nil end
    refill(src, asc)
    if #src.buf == 0 then src.done = true return nil end
  end
  return src.buf[src.pos]
end

local lphase, lscore, lid = cphase, ARGV[8], cid
local examined = 0
for _, phase in ipairs({'q', 'p', 'u', 'f'}) do
  if cphase == '' or RANK[phase] >= RANK[cphase] then
    local asc = ASC[phase]
    local srcs = {}
    for _, key in ipairs(sources(phase)) do
      local src = {key = key, buf = {}, pos = 1, offset = 0, full = true,
        chunk = math.min(want + 1, MAX_CHUNK)}
      if phase == cphase then src.ls, src.lid = cscore, cid end
      srcs[#srcs + 1] = src
    end
    while true do
      local best, bh = nil, nil
      for _, src in ipairs(srcs) do
        local h = head(src, asc)
        if h and (not bh or after(asc, bh.s, bh.id, h.s, h.id)) then best, bh = src, h end
      end
      if not best then break end
      if examined >= budget then return {'more', lphase, lscore, lid, unpack(out)} end
      best.pos = best.pos + 1
      best.ls, best.lid = bh.s, bh.id
      examined = examined + 1
      lphase, lscore, lid = phase, fmt(bh.s), bh.id
      local ok
      if queue ~= '' and phase ~= 'q' then
        local q = redis.call('HGET', k_task(bh.id), 'queue')
        if not q then redis.call('ZREM', best.key, bh.id) end
        ok = q == queue
      else
        ok = redis.call('EXISTS', k_task(bh.id)) == 1
        if not ok then redis.call('ZREM', best.key, bh.id) end
      end
      if ok and tag ~= '' then ok = present(redis.call('ZSCORE', k_tag(tag), bh.id)) end
      if ok then
        emit_match(phase, bh.s, bh.id)
        if #out >= 3 * want then return {'more', lphase, lscore, lid, unpack(out)} end
      end
    end
  end
end
return {'end', '', '', '', unpack(out)}
