-- unpark.lua: send parked tasks of one rate key back to their queue, after
-- its limit changed or was removed (see ratelimit.lua). Walks one parking
-- lot in ZSCAN steps so a big lot never blocks Redis for long.
-- KEYS[1] parked:<queue>
-- ARGV[1] prefix   ARGV[2] rate key   ARGV[3] queue   ARGV[4] ZSCAN cursor
-- Returns the next cursor ('0' when the walk is done).
-- Tasks keep their original place in line and stay QUEUED (no event);
-- idle workers of the queue are woken.
-- Key families: parked, queue, rate_bucket, task, wake
local page = redis.call('ZSCAN', KEYS[1], ARGV[4], 'COUNT', 200)
local moved = 0
for i = 1, #page[2], 2 do
  local t = load(page[2][i])
  if not t or t.status ~= 'queued' then
    redis.call('ZREM', KEYS[1], page[2][i])
  elseif t.rate_key == ARGV[2] then
    unpark(t)
    moved = moved + 1
  end
end
if moved > 0 then wake(ARGV[3]) end
return page[1]
