-- KEYS: pending, holders, stats, lane progress.  ARGV: now, lease seconds, requeue seconds, job key prefix, queue key prefix,
-- limit, whether Redis restarted since the last sweep ('1'/'0').  Returns a flat list {job id, lane, ...} of
-- jobs to send again. After a restart every queued job is sent again at once, whatever its queue holds: a
-- message a worker had popped but not yet recorded as unacknowledged when Redis went down is gone, and a busy
-- queue would otherwise hide that for minutes (a duplicate is harmless: ``start`` skips it).
-- A queued job's 'sent' field counts the checks that found its queue busy (1 after publishing): each such
-- check postpones the next one by one more requeue period, and after SENT_PATIENCE of them the job is sent again
-- anyway (a duplicate is harmless). A job that a later message of its lane overtook (``start`` recorded a job
-- sent after it) lost its message: it is sent again at its first check, however busy the lane.
local now = tonumber(ARGV[1])
local restarted = ARGV[7] == '1'
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', restarted and '+inf' or now, 'LIMIT', 0, tonumber(ARGV[6]))
local resend = {}
local backlog = {}
for _, id in ipairs(due) do
  local job = ARGV[4] .. id
  local fields = redis.call('HMGET', job, 'state', 'queue', 'holder', 'lane')
  local state, queue, holder = fields[1], fields[4] or fields[2] or '$records', fields[3]  -- the lane it goes on
  if state == '$running' then
    local lease = holder and tonumber(redis.call('ZSCORE', KEYS[2], holder) or '0') or 0
    if lease > now then
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    else
      redis.call('HSET', job, 'state', '$queued')
      redis.call('HDEL', job, 'holder', 'sent')
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
      resend[#resend + 1] = id
      resend[#resend + 1] = queue
    end
  elseif state == '$queued' then
    local sent = tonumber(redis.call('HGET', job, 'sent') or '0')
    if sent > 0 and backlog[queue] == nil then backlog[queue] = redis.call('LLEN', ARGV[5] .. queue) > 0 end
    -- Overtaken: a job sent on its lane after this one was taken already, so this one's message was lost.
    local sent_at = tonumber(redis.call('HGET', job, 'sent_at') or '')
    local overtaken = sent_at and sent_at < tonumber(redis.call('HGET', KEYS[4], queue) or '0')
    if sent == 0 or restarted or not backlog[queue] or overtaken or sent > $patience then
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
      resend[#resend + 1] = id
      resend[#resend + 1] = queue
    else
      redis.call('HSET', job, 'sent', sent + 1)
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]) * sent, id)
    end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
if #resend > 0 then redis.call('HINCRBY', KEYS[3], '$resent', #resend / 2) end
return resend
