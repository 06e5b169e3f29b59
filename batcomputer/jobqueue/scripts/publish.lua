-- KEYS: queue (a lane), then the jobs the message carries.  ARGV: the message, now.  Puts the message on the
-- lane (what kombu's Redis transport does: LPUSH, consumers BRPOP) and marks its jobs sent, and when, in one
-- step. When ``start`` takes a job, it records the latest such time it has seen on that lane (``Keys.progress``):
-- a queued job sent before it had its message taken too, or lost (the sweeper's cue to send it again).
redis.call('LPUSH', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HSET', KEYS[i], 'sent', '1', 'sent_at', ARGV[2]) end
end
return #KEYS - 1
