-- KEYS: webhooks.  ARGV: now, hold seconds, limit.  Takes due deliveries for this worker: each is pushed
-- back by the hold time, so that a worker that dies mid-delivery leaves it to another.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id) end
return due
