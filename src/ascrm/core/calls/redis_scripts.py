"""The Lua scripts the Redis store runs: each change of a call is one atomic script call in Redis.

They read and write the stored form of stored.py. A script is called by its SHA1 (EVALSHA); the
store's lane loads them all (SCRIPT LOAD) before its first call and again when Redis answers NOSCRIPT
(after a restart, a failover or SCRIPT FLUSH): see redis_batches.py. Numbers cross into Lua as
strings (ARGV) and come back as integers; the call's hash is the only key a script writes for a
call, plus the listing's index. The hash's layout version, '2' in the scripts, is stored.LAYOUT.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1, as EVALSHA names it."""

    name: str
    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest())


# Every script that changes a call first checks its last ARGV, the moment (Redis's clock, in ms) after
# which the replica that sent it has given up waiting and answered without it: a script Redis runs
# later than that (it was hung, say, with the script in its socket buffer) changes nothing, so a late
# poll takes no command the platform never got, and a late event is lost as it would be in an outage.
_IN_TIME = """
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[#ARGV]) then
  return false
end
"""

# The reply of a script that changed a call (redis_cache.py): the whole hash, or, when the replica holds
# the call folded up to entry `have` of incarnation `held` and every entry after it is kept, only what
# it lacks: '+' and the incarnation, the small fields, the entries after `have`, the pending commands.
# A hash without an incarnation (made by a release before) gets `fresh`. Numbers go back as strings,
# as HGETALL's would.
_REPLY = """
local function reply(key, have, held, fresh)
  local i = redis.call('HGET', key, 'i')
  if not i then
    i = fresh
    redis.call('HSET', key, 'i', i)
  end
  have = tonumber(have) or 0
  local n = tonumber(redis.call('HGET', key, 'n')) or 0
  local k = tonumber(redis.call('HGET', key, 'k')) or 0
  if have == 0 or i ~= held or have < k or have > n
     or (have < n and redis.call('HEXISTS', key, have + 1) == 0) then
    return redis.call('HGETALL', key)
  end
  local cn = redis.call('HGET', key, 'cn') or '1'
  local out = {'+', i, 'v', '2', 'n', tostring(n), 'k', tostring(k), 'cn', cn}
  local updated = redis.call('HGET', key, 'u')
  if updated then
    out[#out + 1] = 'u'
    out[#out + 1] = updated
  end
  for j = have + 1, n do
    out[#out + 1] = tostring(j)
    out[#out + 1] = redis.call('HGET', key, j)
  end
  for id = (tonumber(redis.call('HGET', key, 'ch')) or 1), (tonumber(cn) or 1) - 1 do
    local command = redis.call('HGET', key, 'c:' .. id)
    if command then
      out[#out + 1] = 'c:' .. id
      out[#out + 1] = command
    end
  end
  return out
end
"""

# KEYS: the call, the calls index, the ended index, the call's key in the layout before (a JSON record
# of codec.py, which becomes the new hash's snapshot: a call begun before an upgrade keeps its
# history). ARGV: 1 the event's entry, 2 now (ISO), 3 now (Unix
# seconds), 4 the TTL, 5 the grace period, 6 "1" if the event is EndCall, 7 AN, 8 UN ("" for none),
# 9 "1" if a transfer connected, 10 the call id, 11 the most entries kept past the snapshot, 12 the
# entry the replica holds the call folded up to (0: none), 13 its incarnation, 14 a fresh incarnation,
# 15 the deadline.
# Appends the entry, renews the expiry (a live call: the TTL; one that ends: the grace period; a late
# event of an ended call: unchanged) and the call's place in the index; returns the hash (HGETALL, or
# only what the replica lacks: _REPLY; the whole hash of a call that ends with no grace period).
# A key of another layout is returned as it is, unchanged (the fold refuses it).
UPDATE = Script(
    "update",
    _IN_TIME
    + _REPLY
    + """
local key, member = KEYS[1], ARGV[10]
if redis.call('HGET', key, 'v') ~= '2' and redis.call('EXISTS', key) == 1 then
  return redis.call('HGETALL', key)
end
local n = redis.call('HINCRBY', key, 'n', 1)
if n == 1 then
  redis.call('HSET', key, 'v', '2', 'k', '0', 'cn', '1', 'ch', '1')
  redis.call('ZREM', KEYS[3], member)
  local before = redis.pcall('GET', KEYS[4])  -- the call as the release before this layout kept it
  if type(before) == 'string' then redis.call('HSET', key, 's', before) end
end
redis.call('HSET', key, n, ARGV[1], 'u', ARGV[2])
if ARGV[7] ~= '' then redis.call('HSETNX', key, 'an', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSETNX', key, 'un', ARGV[8]) end
if ARGV[9] == '1' then redis.call('HSET', key, 'cx', '1') end
local k, most = (tonumber(redis.call('HGET', key, 'k')) or 0), tonumber(ARGV[11])
if n - k > most then
  for i = k + 1, n - most do redis.call('HDEL', key, i) end
  redis.call('HSET', key, 'k', n - most)
end
local grace = tonumber(ARGV[5])
if redis.call('HEXISTS', key, 'x') == 0 then
  if ARGV[6] == '1' then
    redis.call('HSET', key, 'x', '1')
    if grace == 0 then
      local call = redis.call('HGETALL', key)
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[2], member)
      return call
    end
    redis.call('EXPIRE', key, grace)
    redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + grace, member)
  else
    redis.call('EXPIRE', key, ARGV[4])
  end
end
redis.call('ZADD', KEYS[2], ARGV[3], member)
return reply(key, ARGV[12], ARGV[13], ARGV[14])
""",
)

# KEYS: the call, the calls index. ARGV: 1 now (ISO), 2 now (Unix seconds), 3 the TTL, 4 the rules'
# revision as JSON, 5 the call id, 6 now as JSON, 7-9 as UPDATE's 12-14, 10 the deadline. A poll: marks
# the call polled (an entry the first time) and takes its oldest pending command (a "C" entry). Returns
# nil for an unknown call, else {the hash (or what the replica lacks), the number of the entry of the
# command taken (0: none)}.
POLL = Script(
    "poll",
    _IN_TIME
    + _REPLY
    + """
local key = KEYS[1]
if redis.call('HGET', key, 'v') ~= '2' then
  if redis.call('EXISTS', key) == 1 then return {redis.call('HGETALL', key), 0} end
  return {}
end
redis.call('HSET', key, 'u', ARGV[1])
local n = (tonumber(redis.call('HGET', key, 'n')) or 0)
if redis.call('HSETNX', key, 'p', '1') == 1 then
  n = n + 1
  redis.call('HSET', key, n, '["P",' .. ARGV[6] .. ']', 'n', n)
end
local taken = 0
local next_id = (tonumber(redis.call('HGET', key, 'cn')) or 1)
for id = (tonumber(redis.call('HGET', key, 'ch')) or 1), next_id - 1 do
  local command = redis.call('HGET', key, 'c:' .. id)
  if command then
    n = n + 1
    redis.call('HDEL', key, 'c:' .. id)
    redis.call('HSET', key, n, '["C",' .. ARGV[6] .. ',' .. ARGV[4] .. ',' .. command .. ']', 'n', n, 'ch', id + 1)
    taken = n
    break
  end
end
if taken == 0 then redis.call('HSET', key, 'ch', next_id) end
if redis.call('HEXISTS', key, 'x') == 0 then redis.call('EXPIRE', key, ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
return {reply(key, ARGV[7], ARGV[8], ARGV[9]), taken}
""",
)

# KEYS: the call. ARGV: 1 a decision's entry ("": none), 2 a poll rule to claim ("": none), 3 a
# snapshot ("": none), 4 the entry it was folded up to, 5 the deadline. Claims the rule (it answers once per call),
# writes the snapshot if it is newer than the one stored (dropping the entries it covers), appends the
# entry. Returns 1, -1 when another poll claimed the rule first (nothing written), 0 for no call.
RECORD = Script(
    "record",
    _IN_TIME
    + """
local key = KEYS[1]
if redis.call('HGET', key, 'v') ~= '2' then return 0 end
if ARGV[2] ~= '' and redis.call('HSETNX', key, 'f:' .. ARGV[2], '1') == 0 then return -1 end
if ARGV[3] ~= '' then
  local upto, k = tonumber(ARGV[4]), (tonumber(redis.call('HGET', key, 'k')) or 0)
  if upto > k and upto <= (tonumber(redis.call('HGET', key, 'n')) or 0) then
    for i = k + 1, upto do redis.call('HDEL', key, i) end
    redis.call('HSET', key, 's', ARGV[3], 'k', upto)
  end
end
if ARGV[1] ~= '' then
  local n = redis.call('HINCRBY', key, 'n', 1)
  redis.call('HSET', key, n, ARGV[1])
end
return 1
""",
)

# KEYS: the call. ARGV: 1 the command's value after its id, 2 the deadline. Returns {id, position in the queue}, or
# {-1} for no call, {-2} for a key of another layout, {0} for an ended call.
PUSH = Script(
    "push",
    _IN_TIME
    + """
local key = KEYS[1]
if redis.call('HGET', key, 'v') ~= '2' then
  if redis.call('EXISTS', key) == 1 then return {-2} end
  return {-1}
end
if redis.call('HEXISTS', key, 'x') == 1 then return {0} end
local id = (tonumber(redis.call('HGET', key, 'cn')) or 1)
redis.call('HSET', key, 'c:' .. id, '[' .. id .. ',' .. ARGV[1], 'cn', id + 1)
local position = 0
for i = (tonumber(redis.call('HGET', key, 'ch')) or 1), id do
  if redis.call('HEXISTS', key, 'c:' .. i) == 1 then position = position + 1 end
end
return {id, position}
""",
)

# KEYS: the call. ARGV: 1 the command id, 2 the deadline. Returns 1 if it was pending, 0 if not, -1 for no call.
CANCEL = Script(
    "cancel",
    _IN_TIME
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HDEL', KEYS[1], 'c:' .. ARGV[1])
""",
)

# KEYS: the calls index, the ended index, the sweeper's lease. ARGV: 1 the call key's text before the
# id, 2 after it, 3 now, 4 the idle cutoff (now - TTL), 5 max_calls, 6 this replica's token, 7 the
# lease in ms, 8 the most members dropped or evicted at once. One replica sweeps at a time: whoever
# holds the lease (taken when free, renewed by its holder, lapsing when the holder stops). Drops ended
# calls past their grace period and calls idle past the TTL (their hashes have expired), then evicts
# the oldest beyond the cap. Returns the ids of evicted calls, or nil when another replica holds the lease.
SWEEP = Script(
    "sweep",
    """
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[6] then return false end
redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[7])
local most = tonumber(ARGV[8])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, most)
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
local evicted = {}
local excess = math.min(redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5]), most)
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], excess)
  for i = 1, #popped, 2 do
    local id = popped[i]
    redis.call('ZREM', KEYS[2], id)
    if redis.call('DEL', ARGV[1] .. id .. ARGV[2]) == 1 then
      evicted[#evicted + 1] = id
    end
  end
end
return evicted
""",
)

# KEYS: the caller's entry, the map's index. ARGV: 1 the destination, 2 the TTL (s), 3 now (Unix s), 4 the
# caller, 5 the most entries kept, 6 the entries' key before the caller, 7 the deadline. Remembers the
# caller's last operator for the TTL, and drops the oldest entries past the most kept (a few per call).
STICKY = Script(
    "sticky",
    _IN_TIME
    + """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[3]) - tonumber(ARGV[2])))
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], math.min(excess, 100))
  for i = 1, #popped, 2 do redis.call('DEL', ARGV[6] .. popped[i]) end
end
return 1
""",
)


# Pools (pools/redis_pools.py): one hash per pool, `<prefix>pool:<Pool.key>`, changed by one script per pick.
# KEYS: the pool's hash. ARGV: strategy, draw, n, the n members, their n weights, n flags ('1': a
# candidate), the hash's lifetime (ms), the deadline (Redis's clock, ms). Reply: the member, '' when every
# candidate rests, false when late (nothing changed). Fields: p (round robin's next index, 0-based),
# s (picks), u:<m> (the pick number of m's last pick), c:<m> (smooth weighted's current weight),
# r:<m> (resting until, ms), o:<m> (offered), a:<m> (answered).
POOL_PICK = Script(
    "pool_pick",
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if now > tonumber(ARGV[#ARGV]) then return false end
local key, strategy, draw, n = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local kept = ARGV[4 + 3 * n]
local ready, isready = {}, {}
for i = 1, n do
  if ARGV[3 + 2 * n + i] == '1' then
    local resting = tonumber(redis.call('HGET', key, 'r:' .. ARGV[3 + i]) or '0')
    if resting <= now then
      ready[#ready + 1] = i
      isready[i] = true
    end
  end
end
if #ready == 0 then return '' end
local pick = ready[1]
if strategy == 'round_robin' then
  local position = tonumber(redis.call('HGET', key, 'p') or '0')
  for step = 0, n - 1 do
    local i = (position + step) % n + 1
    if isready[i] then
      pick = i
      break
    end
  end
  redis.call('HSET', key, 'p', pick % n)
elseif strategy == 'weighted' then
  local total, best, value = 0, nil, nil
  for _, i in ipairs(ready) do
    local weight = tonumber(ARGV[3 + n + i])
    local current = redis.call('HINCRBY', key, 'c:' .. ARGV[3 + i], weight)
    total = total + weight
    if best == nil or current > value then best, value = i, current end
  end
  redis.call('HINCRBY', key, 'c:' .. ARGV[3 + best], -total)
  pick = best
elseif strategy == 'least_recent' then
  local value = nil
  for _, i in ipairs(ready) do
    local used = tonumber(redis.call('HGET', key, 'u:' .. ARGV[3 + i]) or '0')
    if value == nil or used < value then pick, value = i, used end
  end
elseif strategy == 'random' then
  pick = ready[math.min(math.floor(draw * #ready) + 1, #ready)]
end
local member = ARGV[3 + pick]
redis.call('HSET', key, 'u:' .. member, redis.call('HINCRBY', key, 's', 1))
redis.call('HINCRBY', key, 'o:' .. member, 1)
redis.call('PEXPIRE', key, kept)
return member
""",
)

# KEYS: the pool's hash. ARGV: the member, how long it rests (ms), the hash's lifetime (ms).
POOL_REST = Script(
    "pool_rest",
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""",
)

# KEYS: the pool's hash. Reply: Redis's clock (ms) and the hash as HGETALL's flat list.
POOL_STATES = Script(
    "pool_states",
    """
local clock = redis.call('TIME')
return {tostring(tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)), redis.call('HGETALL', KEYS[1])}
""",
)
