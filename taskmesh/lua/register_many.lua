-- register_many.lua: several registrations in one call (register_many sends
-- its tasks this way, one call per shard and chunk, see taskmesh/store.py).
-- KEYS[1] seq   KEYS[2] stats   KEYS[3] queues
-- ARGV[1] prefix   ARGV[2 ..] one registration after the other, each as
-- its count of arguments, then register.lua's ARGV[2..] (id, defer flag,
-- n, the n field/value pairs, dependency ids, remote dependencies);
-- or, the shared form (tasks without dependencies that differ only in
-- their payload): ARGV[2] 'shared', ARGV[3] m, ARGV[4 .. 3+m] the defer
-- flag, n and the n field/value pairs every task has (no payload), then
-- an id and a payload per task
-- Returns one reply per registration: register.lua's own ({'created',
-- status}, {'exists'}, {'missing', dep_id}), or an error reply for one whose
-- script raised.
--
-- Each registration runs register.lua's body unchanged (see INCLUDES in
-- taskmesh/scripts.py) with its own KEYS (task hash, seq, stats, queues;
-- KEYS.at and KEYS.last place its arguments in this call's ARGV, read in
-- place rather than copied), in order: each is exactly one register.lua call. One failing
-- registration (pcall) does not stop the others, as if each had been its
-- own call. What the batch saves: the libraries, TIME and the config read
-- once per call, one wake-token push per queue (batch_begin/batch_end in
-- the prelude), one SADD per queue.
-- Key families: applied, byseq, config, dependents, done, done_channel, early, events, parked,
--   pending, qcount, queue, queues, rate, rate_bucket, running, scheduled, seq, stats, tag,
--   tag_expiry, task, waiting, wake
local out = {}
-- One KEYS table for every registration; at/last (and shared_at) place its
-- arguments in this call's ARGV (see register.lua), read there in place.
local keys = {false, KEYS[1], KEYS[2], KEYS[3]}
local function run()
  local ok, reply = pcall(register, keys, ARGV)
  if ok then out[#out + 1] = reply
  else out[#out + 1] = {err = tostring(type(reply) == 'table' and reply.err or reply)} end
end
batch_begin()
if ARGV[2] == 'shared' then
  local m = tonumber(ARGV[3])
  keys.shared_at, keys.last = 4, 0  -- (no dependencies)
  for i = 4 + m, #ARGV, 2 do
    keys[1], keys.at = k_task(ARGV[i]), i - 2
    run()
  end
else
  local i = 2
  while i <= #ARGV do
    local width = tonumber(ARGV[i])
    keys[1], keys.at, keys.last = k_task(ARGV[i + 1]), i - 1, i + width
    run()
    i = i + width + 1
  end
end
batch_end()
return out
