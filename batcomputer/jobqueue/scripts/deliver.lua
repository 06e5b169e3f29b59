-- KEYS: input, output, dead letters, stats.  ARGV: group, output maxlen, dead-letter maxlen, then the batch as
-- one JSON array of [kind ("out" or "dead"), input entry id, [field, value, ...]] (one argument: cheaper to
-- send than thousands). Returns {written, skipped}: an entry no longer pending (another consumer wrote it)
-- is skipped. XACK says whether the entry was pending, and the script runs whole: acknowledgement and output
-- happen together.
local written, skipped, dead = 0, 0, 0
for _, item in ipairs(cjson.decode(ARGV[4])) do
  if redis.call('XACK', KEYS[1], ARGV[1], item[2]) == 1 then  -- it was pending: this is its one outcome
    if item[1] == 'out' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(item[3]))
      written = written + 1
    else
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(item[3]))
      dead = dead + 1
    end
  else
    skipped = skipped + 1
  end
end
if written > 0 then redis.call('HINCRBY', KEYS[4], 'scored', written) end
if dead > 0 then redis.call('HINCRBY', KEYS[4], 'dead', dead) end
if skipped > 0 then redis.call('HINCRBY', KEYS[4], 'skipped', skipped) end
return {written, skipped}
