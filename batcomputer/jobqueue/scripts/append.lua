-- Appends records to a model's input stream unless its backlog would pass the limit (gateway).
-- KEYS: the input stream.  ARGV: the backlog limit, the consumer group, the number of metadata fields m, then
-- m field/value pairs every entry carries, then 1 when each record comes with the client's key (an entry field
-- `key`) or 0, then the records (their JSON, one per entry), each after its key ('' for none) when keyed.
-- The backlog is the group's lag (entries not yet delivered) plus its pending entries, as XINFO GROUPS tells;
-- before a consumer made the group, or when Redis cannot tell the lag (entries deleted before they were read),
-- it is the stream's length, which can only overstate it. Checked and appended in one step, so concurrent
-- appends never pass the limit together. Returns {'full', backlog} or {'added', id, ...}.
local limit = tonumber(ARGV[1])
local backlog = redis.call('XLEN', KEYS[1])
if backlog > 0 then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == ARGV[2] and type(info['lag']) == 'number' then backlog = info['lag'] + info['pending'] end
  end
end
local meta = tonumber(ARGV[3])
local keyed = ARGV[4 + 2 * meta] == '1'
local first = 5 + 2 * meta
local step = keyed and 2 or 1
if backlog + (#ARGV - first + 1) / step > limit then return {'full', backlog} end
local fields = {'record', ''}
for i = 4, first - 2 do fields[#fields + 1] = ARGV[i] end
local added = {'added'}
for i = first, #ARGV, step do
  local entry = fields
  if keyed then
    fields[2] = ARGV[i + 1]
    if ARGV[i] ~= '' then
      entry = {unpack(fields)}
      entry[#entry + 1] = 'key'
      entry[#entry + 1] = ARGV[i]
    end
  else
    fields[2] = ARGV[i]
  end
  added[#added + 1] = redis.call('XADD', KEYS[1], '*', unpack(entry))
end
return added
