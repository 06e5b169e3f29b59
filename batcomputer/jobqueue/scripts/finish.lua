-- KEYS: job, pending, stats, counters, dead index[, the batch of a chunk].  ARGV: allowed states
-- (comma-separated), ttl, job id, when a batch whose chunks are all done is due, the backlog key of queue ''
-- (a queue's name completes it), the drain counter of queue '' in this window (likewise), now, then field
-- pairs.
-- Writes the outcome only from an allowed state; takes the job off its queue's backlog (and its owner's share
-- of it, ``Keys.share``) and counts it in the
-- drain rate and the counters; a dead job, or a failed one marked 'replayable' (stopped by its time limit),
-- keeps its records (for a replay) and joins the dead index. Wakes
-- whoever waits: the requester's
-- inboxes (the submitter's, and any a waiting reader added with ``watch``), which get "<job id> <the final job
-- as JSON, but its results>\n<its results, as stored>" so that the waiting request needs no read of its own,
-- and passes the results on without parsing them.
-- An outcome for a job that is already final is refused and, when it came from a worker, counted: it means
-- the model ran twice for one job.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, false} end
if not string.find(',' .. ARGV[1] .. ',', ',' .. state .. ',', 1, true) then
  if string.find(ARGV[1], '$running', 1, true) and state ~= '$queued' and state ~= '$running'
      and state ~= '$cancelled' then
    redis.call('HINCRBY', KEYS[3], '$rescored', 1)
  end
  return {0, state}
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local outcome = redis.call('HGET', KEYS[1], 'state')
if outcome == '$dead' or redis.call('HGET', KEYS[1], 'replayable') == '1' then
  redis.call('HDEL', KEYS[1], 'holder')
  redis.call('ZADD', KEYS[5], tonumber(ARGV[7]), ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'payload', 'holder')
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZREM', KEYS[2], ARGV[3])
local meta = redis.call('HMGET', KEYS[1], 'queue', 'model', 'owner')
local queue = meta[1] or '$records'
redis.call('ZREM', ARGV[5] .. queue, ARGV[3])
if meta[3] then redis.call('ZREM', ARGV[5] .. queue .. ':' .. meta[3], ARGV[3]) end  -- the owner's share
local drained = ARGV[6] .. queue
redis.call('INCR', drained)
redis.call('EXPIRE', drained, 120)
redis.call('HINCRBY', KEYS[4], 'ended|' .. (meta[2] or '') .. '|' .. outcome, 1)
-- A chunk counts towards its batch once. When the last one is done, or one failed, the batch is queued
-- for its merge delivery (which writes the output, or fails the batch naming the chunk).
local merge = false
local batch = KEYS[6]
if batch and redis.call('HGET', batch, 'state') == '$running'
    and redis.call('HGET', batch, 'phase') == '$score' then
  if outcome == '$succeeded' then
    redis.call('HINCRBY', batch, 'rows_done', tonumber(redis.call('HGET', KEYS[1], 'count') or '0'))
    redis.call('HINCRBY', batch, 'rows_failed', tonumber(redis.call('HGET', KEYS[1], 'rows_failed') or '0'))
    local done = redis.call('HINCRBY', batch, 'chunks_done', 1)
    merge = done >= tonumber(redis.call('HGET', batch, 'chunks_total') or '0')
  elseif outcome ~= '$cancelled' then
    redis.call('HSET', batch, 'failed_chunk', ARGV[3])
    merge = true
  end
  if merge then
    merge = string.match(ARGV[3], '^([^.]+)%.')
    redis.call('HSET', batch, 'state', '$queued', 'phase', '$merge', 'attempts', '0')
    redis.call('HDEL', batch, 'sent', 'holder')
    redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), merge)
  end
end
local inboxes = redis.call('HGET', KEYS[1], 'inbox')
if inboxes then
  local flat = redis.call('HGETALL', KEYS[1])
  local job = {}
  for i = 1, #flat, 2 do job[flat[i]] = flat[i + 1] end
  job['inbox'] = nil
  job['sent'] = nil
  job['sent_at'] = nil
  local results = job['results'] or ''
  job['results'] = nil
  local entry = ARGV[3] .. ' ' .. cjson.encode(job) .. '\n' .. results
  for inbox in string.gmatch(inboxes, '%S+') do
    redis.call('RPUSH', inbox, entry)
    redis.call('EXPIRE', inbox, 300)
  end
end
return {1, state, merge}
