"""The Lua scripts the Redis store and bus run: each is one round trip, atomic on the server.

Contract: the keys of a replay stream ``S`` (under the bus's prefix ``P``) are

- ``P s:S`` a Redis Stream, the log: frame ``n`` (the stream's event id, 1, 2, 3 ...) is entry
  ``n-0`` with field ``f``; the end of the stream is entry ``last-1`` with field ``e``, so
  ``XRANGE (n-0 +`` returns the frames after ``n`` and then the end;
- ``P m:S`` a hash, its metadata: ``epoch`` (changes when the store lost the stream: a producer
  appending to a stream whose metadata is gone starts a new epoch and sets ``since``), ``since``
  (the first id of the epoch), ``node`` (the producing process), ``tag``, ``ended``, ``last``;
- the Pub/Sub channel named like the log (channels and keys are separate namespaces), carrying
  each appended batch: ``epoch \\n first-id \\n end-flag \\n len,len,... \\n`` then the frames.

A broadcast channel ``C`` has its history in the Redis Stream ``P b:C`` (entry ``n-0``, field
``f`` the whole frame, ``id: n`` included), its counter in ``P n:C``, and its Pub/Sub channel
named like its history, carrying ``n \\n`` then the frame.

A process ``N`` holds the key ``P node:N`` (a lease it renews) while it runs.
"""

from __future__ import annotations

__all__ = ["ABANDON", "APPEND", "HISTORY", "PUBLISH", "READ"]

# KEYS: log1, meta1, log2, meta2, ...
# ARGV: node, live_ttl_ms, end_ttl_ms, maxlen, then per stream a header
#   "count first last flags epoch tag" (flags: 1 create, 2 end) followed by ``count`` frames.
# Frames whose id is not above the log's top (a batch sent twice) are skipped, not fatal.
APPEND = r"""
local node, live_ttl, end_ttl, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local a = 5
for g = 1, #KEYS / 2 do
  local log, meta = KEYS[2 * g - 1], KEYS[2 * g]
  local count, first, last, flags, epoch, tag =
    string.match(ARGV[a], '^(%d+) (%d+) (%d+) (%d+) (%S+) ?(.*)$')
  count = tonumber(count); first = tonumber(first); flags = tonumber(flags)
  local state = redis.call('HMGET', meta, 'epoch', 'ended')
  if not state[2] then
    local ep = state[1]
    if not ep then
      if flags % 2 == 1 then
        redis.call('HSET', meta, 'epoch', epoch, 'since', first, 'node', node, 'tag', tag)
        ep = epoch
      else
        -- The store lost this stream (restarted empty, evicted): a new epoch from here on.
        ep = epoch .. '.' .. first
        redis.call('HSET', meta, 'epoch', ep, 'since', first, 'node', node, 'tag', tag)
      end
    end
    local lens = {}
    for k = 1, count do
      local frame = ARGV[a + k]
      redis.pcall('XADD', log, 'MAXLEN', maxlen, (first + k - 1) .. '-0', 'f', frame)
      lens[k] = string.len(frame)
    end
    local ended = 0
    local ttl = live_ttl
    if flags >= 2 then
      redis.pcall('XADD', log, last .. '-1', 'e', '1')
      redis.call('HSET', meta, 'ended', '1', 'last', last)
      ended = 1
      ttl = end_ttl
    end
    redis.call('PEXPIRE', log, ttl)
    redis.call('PEXPIRE', meta, ttl)
    if count > 0 or ended == 1 then
      local parts = {ep, '\n', first, '\n', ended, '\n', table.concat(lens, ','), '\n'}
      for k = 1, count do parts[#parts + 1] = ARGV[a + k] end
      redis.call('PUBLISH', log, table.concat(parts))
    end
  end
  a = a + 1 + count
end
return #KEYS / 2
"""

# KEYS: log, meta.  ARGV: after (entries with ids above ``after-0``), count, node key prefix,
# the producing node if the caller knows it (for a stream whose metadata is gone).
# Returns {epoch, since, ended, last, node, tag}, node_alive, entries (XRANGE's reply).
READ = r"""
local m = redis.call('HMGET', KEYS[2], 'epoch', 'since', 'ended', 'last', 'node', 'tag')
local node = m[5] or ARGV[4]
local alive = 0
if node ~= '' then alive = redis.call('EXISTS', ARGV[3] .. node) end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
return {m, alive, entries}
"""

# KEYS: log, meta.  ARGV: expected last id (0: none), end_ttl_ms, then the frames (ids
# expected+1 ...). Ends the stream with them unless it ended or its log went past ``expected``.
ABANDON = r"""
local state = redis.call('HMGET', KEYS[2], 'ended', 'epoch')
if state[1] then return 0 end
local expected = tonumber(ARGV[1])
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 and tonumber(string.match(top[1][1], '^(%d+)')) > expected then return 0 end
local ep = state[2]
if not ep then
  ep = 'abandoned.' .. (expected + 1)
  redis.call('HSET', KEYS[2], 'epoch', ep, 'since', expected + 1)
end
local lens = {}
local parts = {}
for k = 3, #ARGV do
  redis.pcall('XADD', KEYS[1], (expected + k - 2) .. '-0', 'f', ARGV[k])
  lens[#lens + 1] = string.len(ARGV[k])
  parts[#parts + 1] = ARGV[k]
end
local last = expected + #ARGV - 2
redis.pcall('XADD', KEYS[1], last .. '-1', 'e', '1')
redis.call('HSET', KEYS[2], 'ended', '1', 'last', last)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local head = ep .. '\n' .. (expected + 1) .. '\n1\n' .. table.concat(lens, ',') .. '\n'
redis.call('PUBLISH', KEYS[1], head .. table.concat(parts))
return 1
"""

# KEYS: history1, counter1, history2, counter2, ...  ARGV: maxlen, ttl_ms, then one frame
# (without its id line) per channel. Each gets the channel's next id, is kept and published.
PUBLISH = r"""
local maxlen, ttl = ARGV[1], ARGV[2]
for g = 1, #KEYS / 2 do
  local history, counter = KEYS[2 * g - 1], KEYS[2 * g]
  local n = redis.call('INCR', counter)
  local frame = 'id: ' .. n .. '\n' .. ARGV[2 + g]
  redis.pcall('XADD', history, 'MAXLEN', maxlen, n .. '-0', 'f', frame)
  redis.call('PEXPIRE', history, ttl)
  redis.call('PEXPIRE', counter, ttl)
  redis.call('PUBLISH', history, n .. '\n' .. frame)
end
return #KEYS / 2
"""

# KEYS: history.  ARGV: after, count.  Returns the top id (0 if none) and the entries after.
HISTORY = r"""
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local top_id = 0
if #top > 0 then top_id = tonumber(string.match(top[1][1], '^(%d+)')) end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
return {top_id, entries}
"""
