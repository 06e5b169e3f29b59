-- KEYS: job, pending.  ARGV: holder, now, job id.  A worker that cannot finish a delivery it started (an
-- error between start and end) gives the job back: queued again, due for the sweeper at once, and unsent
-- (the broker dropped the failed delivery's message), so a busy queue does not hide it.
if redis.call('HGET', KEYS[1], 'state') ~= '$running' or redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', '$queued')
redis.call('HDEL', KEYS[1], 'holder', 'sent')
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[3])
return 1
