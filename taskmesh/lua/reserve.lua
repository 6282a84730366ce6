-- reserve.lua: reserve room under the namespace-wide cap before claiming in
-- any shard of a sharded namespace (runs on shard 0).
-- KEYS[1] config   KEYS[2] capres   KEYS[3] workers
-- ARGV[1] prefix   ARGV[2] worker id   ARGV[3] tasks this worker holds now
-- ARGV[4] how many more it wants
-- Returns the number granted, or -1 when there is no cap (take all you want).
--
-- capres holds, per worker, the slots it may fill: what it holds plus what
-- it was granted. Each worker rewrites its own entry on every claim, so
-- slots freed by finished tasks come back at its next claim; entries of
-- workers whose heartbeat expired are dropped (their tasks' leases expire
-- with it, so the reaper re-queues them). Running tasks across all shards
-- therefore never exceed the cap.
-- Key families: capres, config, workers
local wid, held, want = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local cap = redis.call('HGET', KEYS[1], 'max_concurrent_tasks')
if not cap then
  redis.call('HDEL', KEYS[2], wid)
  return -1
end
local now = now_ms()
local total = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local other = entries[i]
  if other ~= wid then
    local beat = redis.call('ZSCORE', KEYS[3], other)
    if beat and tonumber(beat) > now then
      total = total + tonumber(entries[i + 1])
    else
      redis.call('HDEL', KEYS[2], other)
    end
  end
end
local grant = math.max(math.min(want, tonumber(cap) - total - held), 0)
redis.call('HSET', KEYS[2], wid, held + grant)
return grant
