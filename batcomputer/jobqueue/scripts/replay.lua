-- KEYS: job, pending, dead index, the job's queue's backlog of queue '' (its name completes it), stats.
-- ARGV: now, ttl, job id, next check time.  Sends a dead job (or a failed one marked 'replayable': it ran past
-- its time limit) again, with its records as they were accepted
-- and its pinned version: queued, attempts from zero, its error gone; 'replays' counts how often.
-- Returns {'replayed', the lane to send it on}, {'state', state} for a job that is not dead, {'gone'} when its records were
-- not kept (it died before replays existed), false for no such job.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= '$dead' and not (state == '$failed' and redis.call('HGET', KEYS[1], 'replayable') == '1') then
  return {'state', state}
end
if redis.call('HEXISTS', KEYS[1], 'payload') == 0 then return {'gone'} end
local queue = redis.call('HGET', KEYS[1], 'queue') or '$records'
redis.call('HSET', KEYS[1], 'state', '$queued', 'attempts', '0')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('HDEL', KEYS[1], 'error', 'finished', 'started', 'holder', 'sent', 'replayable')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4] .. queue, tonumber(ARGV[1]), ARGV[3])
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then redis.call('ZADD', KEYS[4] .. queue .. ':' .. owner, tonumber(ARGV[1]), ARGV[3]) end
redis.call('HINCRBY', KEYS[5], '$replayed', 1)
return {'replayed', redis.call('HGET', KEYS[1], 'lane') or queue}
