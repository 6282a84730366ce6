-- link.lua: make a task in another shard a dependent of this shard's task,
-- or say how the task already ended (run before registering the dependent).
-- KEYS[1] the dependency's hash (task:<dep>)
-- ARGV[1] prefix   ARGV[2] dependency id   ARGV[3] the dependent's shard
-- ARGV[4] the dependent's id
-- Returns 'missing' | 'completed' | 'failed' | 'cancelled' | 'linked'.
--
-- Atomic against the dependency finishing: either it is already terminal
-- (the caller registers the dependent knowing that), or the dependent is in
-- remote_dependents:<dep> before it can finish, and its outcome goes to the outbox with
-- the finishing script (see resolve() in the prelude). The dependency's
-- `plain` flag goes to '0' (it has dependents).
-- Key families: remote_dependents, task
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if is_terminal(status) then return status end
redis.call('SADD', k_remote_dependents(ARGV[2]), ARGV[3] .. '|' .. ARGV[4])
-- It has dependents now: not `plain` (see resolve_dependents in the prelude).
redis.call('HSET', KEYS[1], 'plain', '0')
return 'linked'
