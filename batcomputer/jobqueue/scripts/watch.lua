-- KEYS: job.  ARGV: inbox key.  A final job's fields; otherwise the inbox is added to those the finish script
-- wakes, and the reply is empty. False: no such job.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if string.find('$final', ',' .. state .. ',', 1, true) then return redis.call('HGETALL', KEYS[1]) end
local inboxes = redis.call('HGET', KEYS[1], 'inbox')
if not inboxes then
  redis.call('HSET', KEYS[1], 'inbox', ARGV[1])
elseif not string.find(' ' .. inboxes .. ' ', ' ' .. ARGV[1] .. ' ', 1, true) then
  redis.call('HSET', KEYS[1], 'inbox', inboxes .. ' ' .. ARGV[1])
end
return {}
