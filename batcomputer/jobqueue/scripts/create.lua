-- Creates a job (gateway).
-- KEYS: job, jobs index, pending, the queue's backlog, counters, the owner's share of the backlog
-- [, idempotency key]
-- ARGV: now, ttl, job id, next check time, body digest, job key prefix, the job's fields as a JSON object of
-- strings (one argument: cheaper to send than a pair per field), its records (JSON), the queue's depth limit
-- (0: none), the counter to add one to, the most unfinished jobs of the queue one key may hold (0: no key, no
-- limit), the jobs a key may always hold, however full the queue.
-- With an idempotency key: a key already held for the same digest whose job still exists returns that job's
-- id; another digest is a conflict; a key whose job expired is claimed again. The job's hash is written in
-- the same script, so no key ever points at nothing. A queue holding ``limit`` unfinished jobs takes no new
-- one: {'full', depth} (admission control; a repeat of an accepted request is still answered), unless its key
-- holds fewer than its reserve; a key holding its share of the queue takes none either: {'share', held}. So
-- one key's flood can fill at most its share, and every other key still has its reserve.
if #KEYS == 7 then
  local seen = redis.call('GET', KEYS[7])
  if seen then
    local id, digest = string.match(seen, '^(%S+) (%S+)$$')
    if digest ~= ARGV[5] then return {'conflict', id} end
    if redis.call('EXISTS', ARGV[6] .. id) == 1 then return {'existing', id} end
  end
end
local limit, share, reserve = tonumber(ARGV[9]), tonumber(ARGV[11]), tonumber(ARGV[12])
if limit > 0 then
  if share > 0 then  -- a job whose record expired before it ended leaves its key's share here, when it is read
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
  end
  local held = share > 0 and redis.call('ZCARD', KEYS[6]) or 0
  if share > 0 and held >= share then return {'share', tostring(held)} end
  local depth = redis.call('ZCARD', KEYS[4])
  if depth >= limit and (share == 0 or held >= reserve) then return {'full', tostring(depth)} end
end
if #KEYS == 7 then redis.call('SET', KEYS[7], ARGV[3] .. ' ' .. ARGV[5], 'EX', tonumber(ARGV[2])) end
local fields = {}
for name, value in pairs(cjson.decode(ARGV[7])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], 'payload', ARGV[8], unpack(fields))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[3])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[3])
redis.call('ZADD', KEYS[4], tonumber(ARGV[1]), ARGV[3])
if share > 0 then redis.call('ZADD', KEYS[6], tonumber(ARGV[1]), ARGV[3]) end
redis.call('HINCRBY', KEYS[5], ARGV[10], 1)
return {'created', ARGV[3]}
