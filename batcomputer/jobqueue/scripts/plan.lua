-- KEYS: batch, pending, the bulk queue's backlog.  ARGV: now, ttl, when chunks are due, batch id, holder, job
-- key prefix, chunk count, row count, the chunks' common fields (JSON object), then per chunk: index, rows, payload.
-- Creates the chunk jobs that do not exist yet (a plan is written once: a second planner that lost its lease
-- finds the batch no longer its own), each counted in the bulk queue's depth and in its key's share of it, and
-- moves the batch to scoring: no holder, not swept (its chunks are). Returns the new chunk ids, or false when
-- this holder no longer holds the batch.
if redis.call('HGET', KEYS[1], 'state') ~= '$running' or redis.call('HGET', KEYS[1], 'holder') ~= ARGV[5] then
  return false
end
local common = cjson.decode(ARGV[9])
local shared = {}
for name, value in pairs(common) do
  shared[#shared + 1] = name
  shared[#shared + 1] = value
end
local tenant = redis.call('HMGET', KEYS[1], 'owner', 'lane')  -- chunks are their batch's key's, on its lane
if tenant[1] then shared[#shared + 1] = 'owner'; shared[#shared + 1] = tenant[1] end
if tenant[2] then shared[#shared + 1] = 'lane'; shared[#shared + 1] = tenant[2] end
local fresh = {}
for i = 10, #ARGV, 3 do
  local id = ARGV[4] .. '.' .. ARGV[i]
  local key = ARGV[6] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'id', id, 'index', ARGV[i], 'count', ARGV[i + 1], 'payload', ARGV[i + 2], unpack(shared))
    redis.call('EXPIRE', key, tonumber(ARGV[2]))
    redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), id)
    redis.call('ZADD', KEYS[3], tonumber(ARGV[1]), id)
    if tenant[1] then redis.call('ZADD', KEYS[3] .. ':' .. tenant[1], tonumber(ARGV[1]), id) end
    fresh[#fresh + 1] = id
  end
end
redis.call('HSET', KEYS[1], 'phase', '$score', 'chunks_total', ARGV[7], 'chunks_done', '0', 'rows_total', ARGV[8],
           'rows_done', '0', 'rows_failed', '0', 'count', ARGV[8], 'scoring_started', ARGV[1])
redis.call('HDEL', KEYS[1], 'holder')
redis.call('ZREM', KEYS[2], ARGV[4])
return fresh
