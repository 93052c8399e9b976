"""The Lua scripts of the Redis outbox: each change of the outbox is one atomic script call in Redis.

The key layout is redis_outbox.py's. Every script gets the keys it names in KEYS and the prefix of the
per-notification keys (`<prefix>notify:n:`, `<prefix>notify:key:`) in ARGV, so a script reaches a
notification's hash by its key. A notification's hash holds `s`, where it is ('p' in the stream, 'l' in
the later set, 'f' failed), and `h`, the stream entry that carries it while in the stream: a handle
settles the notification only while `h` names it, so of two replicas holding one entry (the second
claimed it from the first, which was only slow) the first to settle wins and the other changes nothing,
except that `delivered` always removes the notification (it reached the receiver, wherever it stands).
"""

from __future__ import annotations

from ascrm.core.calls.redis_scripts import Script

# KEYS (all scripts): 1 the stream, 2 the pending index, 3 the later set, 4 the failed set, 5 the counts
# by target, 6 the sequence, 7 the claim cursor. ARGV[1] the hashes' prefix, ARGV[2] the markers' prefix.
_COMMON = """
local stream, pending, later, failed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local targets, seq, cursor = KEYS[5], KEYS[6], KEYS[7]
local hashes, markers = ARGV[1], ARGV[2]
local function count(target, by)
  if redis.call('HINCRBY', targets, target, by) <= 0 then redis.call('HDEL', targets, target) end
end
local function unstream(group, id)
  if id and id ~= '' then
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
  end
end
"""


# ARGV: 3 max_pending, 4 the markers' lifetime (s), then 6 per notification: key, target, kind, call id,
# created_at, body. Stores the ones whose marker is new (the first of a key repeated in the batch), due
# at their created_at. Returns the number stored, or -1 when they would make more than max_pending
# pending (nothing stored).
PUT = Script(
    "put",
    _COMMON
    + """
local most, ttl = tonumber(ARGV[3]), ARGV[4]
local new, seen = 0, {}
for i = 5, #ARGV, 6 do
  local key = ARGV[i]
  if not seen[key] and redis.call('EXISTS', markers .. key) == 0 then new = new + 1 end
  seen[key] = true
end
if new == 0 then return 0 end
if redis.call('ZCARD', pending) + new > most then return -1 end
local stored = 0
for i = 5, #ARGV, 6 do
  local key, target = ARGV[i], ARGV[i + 1]
  if redis.call('SET', markers .. key, '1', 'NX', 'EX', ttl) then
    local id = redis.call('XADD', stream, '*', 'k', key)
    local order = redis.call('INCR', seq)
    redis.call('HSET', hashes .. key, 't', target, 'n', ARGV[i + 2], 'c', ARGV[i + 3], 'r', ARGV[i + 4],
      'b', ARGV[i + 5], 'a', '0', 'd', ARGV[i + 4], 's', 'p', 'h', id)
    redis.call('ZADD', pending, order, key)
    count(target, 1)
    stored = stored + 1
  end
end
return stored
""",
)

# ARGV: 3 the group, 4 this consumer, 5 the limit, 6 now (Unix s), 7 claim_after (ms). Moves due
# notifications of the later set into the stream, claims entries other consumers have held longer than
# claim_after (Redis's clock), then reads new ones: at most limit in all. Returns a flat list, 8 per
# notification: entry id, key, target, kind, call id, created_at, body, attempts.
LEASE = Script(
    "lease",
    _COMMON
    + """
local group, consumer, limit = ARGV[3], ARGV[4], tonumber(ARGV[5])
for _, key in ipairs(redis.call('ZRANGEBYSCORE', later, '-inf', ARGV[6], 'LIMIT', 0, limit)) do
  redis.call('ZREM', later, key)
  local h = hashes .. key
  if redis.call('HGET', h, 's') == 'l' then
    redis.call('HSET', h, 's', 'p', 'h', redis.call('XADD', stream, '*', 'k', key))
  end
end
local entries = {}
local start = redis.call('GET', cursor) or '0-0'
local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[7], start, 'COUNT', limit)
redis.call('SET', cursor, claimed[1])
for _, entry in ipairs(claimed[2]) do entries[#entries + 1] = entry end
if #entries < limit then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', limit - #entries, 'STREAMS', stream, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do entries[#entries + 1] = entry end
  end
end
local out = {}
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  local key = nil
  if fields then
    for j = 1, #fields, 2 do if fields[j] == 'k' then key = fields[j + 1] end end
  end
  local held = key and redis.call('HMGET', hashes .. key, 's', 'h', 't', 'n', 'c', 'r', 'b', 'a')
  if held and held[1] == 'p' and held[2] == id then
    out[#out + 1] = id
    out[#out + 1] = key
    for j = 3, 8 do out[#out + 1] = held[j] end
  else
    unstream(group, id)  -- an entry nothing stands behind any more
  end
end
return out
""",
)

# ARGV: 3 the group, 4 the handle, 5 the key. Removes the notification wherever it stands. Returns 1 if it
# was there, else 0.
DELIVERED = Script(
    "delivered",
    _COMMON
    + """
local group, handle, key = ARGV[3], ARGV[4], ARGV[5]
unstream(group, handle)
local h = hashes .. key
local held = redis.call('HMGET', h, 's', 'h', 't')
if not held[1] then return 0 end
if held[1] == 'f' then
  redis.call('ZREM', failed, key)
else
  if held[1] == 'p' and held[2] ~= handle then unstream(group, held[2]) end
  redis.call('ZREM', later, key)
  redis.call('ZREM', pending, key)
  count(held[3], -1)
end
redis.call('DEL', h)
return 1
""",
)

# ARGV: 3 the group, 4 the handle, 5 the key, 6 due (Unix s), 7 the error. The notification, if the handle
# still holds it, leaves the stream for the later set until due, its attempts one more. Returns 1, or 0
# when the handle no longer holds it (nothing changed).
RETRY_AT = Script(
    "retry_at",
    _COMMON
    + """
local group, handle, key = ARGV[3], ARGV[4], ARGV[5]
local h = hashes .. key
local held = redis.call('HMGET', h, 's', 'h')
unstream(group, handle)
if held[1] ~= 'p' or held[2] ~= handle then return 0 end
redis.call('HINCRBY', h, 'a', 1)
redis.call('HSET', h, 's', 'l', 'h', '', 'd', ARGV[6], 'e', ARGV[7])
redis.call('ZADD', later, ARGV[6], key)
return 1
""",
)

# ARGV: 3 the group, 4 the handle, 5 the key, 6 the error, 7 the most failed kept. The notification, if
# the handle still holds it, moves to the failed set (the oldest failed beyond the most kept are dropped).
# Returns 1, or 0 when the handle no longer holds it.
FAIL = Script(
    "fail",
    _COMMON
    + """
local group, handle, key = ARGV[3], ARGV[4], ARGV[5]
local h = hashes .. key
local held = redis.call('HMGET', h, 's', 'h', 't')
unstream(group, handle)
if held[1] ~= 'p' or held[2] ~= handle then return 0 end
redis.call('ZREM', pending, key)
count(held[3], -1)
redis.call('HINCRBY', h, 'a', 1)
redis.call('HSET', h, 's', 'f', 'h', '', 'e', ARGV[6])
redis.call('HDEL', h, 'd')
redis.call('ZADD', failed, redis.call('INCR', seq), key)
local excess = redis.call('ZCARD', failed) - tonumber(ARGV[7])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', failed, math.min(excess, 100))
  for i = 1, #popped, 2 do redis.call('DEL', hashes .. popped[i]) end
end
return 1
""",
)

# ARGV: 3 the key, 4 now (Unix s), 5 max_pending, 6 the marker's lifetime (s). A failed notification
# made pending again: due now, created_at now (its deadline counts from it), no attempts, its marker
# renewed. Returns 1, 0 when the key names no failed notification, -1 when max_pending are pending.
RETRY = Script(
    "retry",
    _COMMON
    + """
local key, now = ARGV[3], ARGV[4]
local h = hashes .. key
if redis.call('HGET', h, 's') ~= 'f' then return 0 end
if redis.call('ZCARD', pending) >= tonumber(ARGV[5]) then return -1 end
redis.call('ZREM', failed, key)
local id = redis.call('XADD', stream, '*', 'k', key)
redis.call('HSET', h, 's', 'p', 'h', id, 'a', '0', 'd', now, 'r', now)
redis.call('ZADD', pending, redis.call('INCR', seq), key)
count(redis.call('HGET', h, 't'), 1)
redis.call('SET', markers .. key, '1', 'EX', ARGV[6])
return 1
""",
)

# ARGV: 3 'pending' or 'failed', 4 offset, 5 limit. Returns a flat list, 9 per notification: key,
# target, kind, call id, created_at, body, attempts, due (or ''), last error (or '').
LISTING = Script(
    "listing",
    _COMMON
    + """
local index = pending
if ARGV[3] == 'failed' then index = failed end
local first = tonumber(ARGV[4])
local out = {}
for _, key in ipairs(redis.call('ZRANGE', index, first, first + tonumber(ARGV[5]) - 1)) do
  local held = redis.call('HMGET', hashes .. key, 't', 'n', 'c', 'r', 'b', 'a', 'd', 'e')
  if held[1] then
    out[#out + 1] = key
    for j = 1, 8 do out[#out + 1] = held[j] or '' end
  end
end
return out
""",
)

# ARGV: 3 the group, 4 this consumer, 5 idle (ms). Creates the group (from the stream's start, so entries
# added before it are read) unless it exists; deletes consumers that hold nothing and were idle longer
# than idle (replicas gone), so their number stays that of the live replicas. Returns the number deleted.
START = Script(
    "start",
    _COMMON
    + """
local group, consumer, idle = ARGV[3], ARGV[4], tonumber(ARGV[5])
local made = redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(made.err)
end
local gone = 0
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local fields = {}
  for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
  if fields['name'] ~= consumer and tonumber(fields['pending']) == 0 and tonumber(fields['idle']) > idle then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, fields['name'])
    gone = gone + 1
  end
end
return gone
""",
)

SCRIPTS = (PUT, LEASE, DELIVERED, RETRY_AT, FAIL, RETRY, LISTING, START)
