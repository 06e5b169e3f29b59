-- KEYS: job, pending, holders, stats, lane progress.  ARGV: now, now (ISO text), lease seconds, job id, holder.
-- Returns {state, attempts[, model, version, payload, phase, created, queue, owner, source, timeout, explain, keys]}. A batch whose chunks are being scored is
-- running without a holder of its own: a delivery of it then is a duplicate. A start moves its lane's
-- progress (the latest send time of a job taken from it) forward.
local job = KEYS[1]
local state = redis.call('HGET', job, 'state')
if not state then return {false, 0} end
local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
if state ~= '$queued' and state ~= '$running' then
  redis.call('HINCRBY', KEYS[4], '$duplicates', 1)
  return {state, attempts}
end
local now = tonumber(ARGV[1])
if state == '$running' then
  local holder = redis.call('HGET', job, 'holder')
  local lease = holder and tonumber(redis.call('ZSCORE', KEYS[3], holder) or '0') or 0
  if lease > now or redis.call('HGET', job, 'phase') == '$score' then
    redis.call('HINCRBY', KEYS[4], '$duplicates', 1)
    return {'$busy', attempts}
  end
end
attempts = redis.call('HINCRBY', job, 'attempts', 1)
redis.call('HSET', job, 'state', '$running', 'started', ARGV[2], 'holder', ARGV[5])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
local fields = redis.call('HMGET', job, 'model', 'version', 'payload', 'phase', 'created', 'queue', 'owner',
                          'lane', 'sent_at', 'source', 'timeout', 'explain', 'keys')
-- Lanes are first in, first out: every message sent on this lane before this job's was taken, or lost.
local lane, sent_at = fields[8] or fields[6] or '$records', tonumber(fields[9] or '')
if sent_at and sent_at > tonumber(redis.call('HGET', KEYS[5], lane) or '0') then
  redis.call('HSET', KEYS[5], lane, fields[9])
end
return {'$running', attempts, fields[1], fields[2], fields[3], fields[4] or '', fields[5] or '', fields[6] or '',
        fields[7] or '', fields[10] or 'job', fields[11] or '', fields[12] or '', fields[13] or ''}
