-- renew.lua: heartbeat a worker and extend the leases of the tasks it holds.
-- KEYS[1] running   KEYS[2] workers   KEYS[3] the worker's hash
-- ARGV[1] prefix   ARGV[2] worker id   ARGV[3] lease_timeout_ms
-- ARGV[4] n, the number of worker-info field/value pairs that follow
-- ARGV[5 .. 4+2n] worker info   then pairs of task id, claim token
-- Returns {lost ids..., '', cancel-requested ids...}; "lost" = taken over. A lease is extended only
-- while the token still matches: a worker whose task was recovered and
-- re-claimed elsewhere learns it lost it instead of stealing it back.
-- A renewal that comes too late counts in the task's `late_renewals`: its
-- worker was alive after all (see recover.lua's WorkerLostError message).
-- Key families: running, task, worker, workers
local wid, lease_timeout_ms = ARGV[2], tonumber(ARGV[3])
local npairs = tonumber(ARGV[4])
local first_task = 5 + 2 * npairs
local deadline = now_ms() + lease_timeout_ms

redis.call('ZADD', KEYS[2], deadline, wid)
if npairs > 0 then
  local info = {}
  for i = 5, first_task - 1 do info[#info + 1] = ARGV[i] end
  redis.call('HSET', KEYS[3], 'last_heartbeat', now_s(), unpack(info))
end
redis.call('PEXPIRE', KEYS[3], lease_timeout_ms * 2)

local lost, cancels = {}, {}
for i = first_task, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local v = redis.call('HMGET', k_task(id), 'status', 'token', 'cancel_requested')
  if v[1] == 'running' and v[2] == token then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
    if v[3] == '1' then cancels[#cancels + 1] = id end
  elseif v[1] == 'running' or v[1] == 'queued' then
    -- Taken over (recovered, maybe re-claimed). Any other status means our
    -- own report landed after the worker's snapshot: nothing was lost.
    lost[#lost + 1] = id
    redis.call('HINCRBY', k_task(id), 'late_renewals', 1)
  end
end
lost[#lost + 1] = ''
for _, id in ipairs(cancels) do lost[#lost + 1] = id end
return lost
