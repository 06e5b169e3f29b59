-- KEYS: queue, then the jobs the message carries.  ARGV: the message.  Puts the message on the queue (what
-- kombu's Redis transport does: LPUSH, consumers BRPOP) and marks its jobs sent, in one step.
redis.call('LPUSH', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HSET', KEYS[i], 'sent', '1') end
end
return #KEYS - 1
