-- shards.lua: read, or fix at first use, a namespace's shard count (shard 0).
-- KEYS[1] config   KEYS[2] seq   KEYS[3] stats
-- ARGV[1] prefix   ARGV[2] the count to fix ('0' = only read)
-- Returns the stored count, or 0 when the namespace is unused and ARGV[2]
-- is '0'.
--
-- A namespace already written by a version without shards (it has a seq,
-- stats or config but no 'shards' field) counts as 1 shard, and gets that
-- stored the first time anyone fixes it.
-- Key families: config, seq, stats
local stored = redis.call('HGET', KEYS[1], 'shards')
if stored then return tonumber(stored) end
local legacy = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0
local wanted = tonumber(ARGV[2])
if wanted == 0 then return legacy and 1 or 0 end
if legacy then wanted = 1 end
redis.call('HSET', KEYS[1], 'shards', wanted)
return wanted
