"""The Lua scripts the Redis store and bus run: each is one round trip, atomic on the server.

Contract: the keys of a replay stream ``S`` (under the bus's prefix ``P``) are

- ``P s:S`` a Redis Stream, the log: one entry per appended batch, with id ``last-0`` where
  ``last`` is the id (1, 2, 3 ...) of the batch's last frame, field ``f`` the frames end to end
  and field ``l`` their lengths (``12,40,...``); the end of the stream is entry ``last-1`` with
  field ``e``. So ``XRANGE (n-0 +`` returns every batch holding a frame after ``n`` (the first
  may begin before it), then the end. Batches whose frames are all older than the newest
  ``maxlen`` are trimmed (``MINID``); readers drop the older frames of a batch kept whole;
- ``P m:S`` a hash, its metadata: ``epoch`` (changes when the store lost the stream: a producer
  appending to a stream whose metadata is gone starts a new epoch and sets ``since``), ``since``
  (the first id of the epoch), ``node`` (the producing process), ``tag``, ``ended``, ``last``;
- the Pub/Sub channel named like the log (channels and keys are separate namespaces), carrying
  each appended batch: ``epoch \\n first-id \\n end-flag \\n lengths \\n`` then the frames.

A broadcast channel ``C`` has its history in the Redis Stream ``P b:C`` (entry ``n-0``, field
``f`` the whole frame, ``id: n`` included), its counter in ``P n:C``, and its Pub/Sub channel
named like its history, carrying ``n \\n`` then the frame.

A process ``N`` holds the key ``P node:N`` (a lease it renews) while it runs.
"""

from __future__ import annotations

__all__ = ["ABANDON", "APPEND", "HISTORY", "PUBLISH", "READ"]

# KEYS: log1, meta1, log2, meta2, ...
# ARGV: node, live_ttl_ms, end_ttl_ms, maxlen, the node's lease key and its length in ms (a
#   process whose batches arrive is alive, however late its keeper is), then per stream: a header
#   "first last flags epoch tag" (flags: 1 create, 2 end), the lengths ("" for none) and the
#   frames end to end. A batch whose id is not above the log's top (sent twice) is skipped.
APPEND = r"""
local node, live_ttl, end_ttl, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SET', ARGV[5], '1', 'PX', ARGV[6])
for g = 1, #KEYS / 2 do
  local log, meta = KEYS[2 * g - 1], KEYS[2 * g]
  local head, lengths, frames = ARGV[4 + 3 * g], ARGV[5 + 3 * g], ARGV[6 + 3 * g]
  local first, last, flags, epoch, tag = string.match(head, '^(%d+) (%d+) (%d+) (%S+) ?(.*)$')
  first = tonumber(first); last = tonumber(last); flags = tonumber(flags)
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
    if lengths ~= '' then
      local minid = last - maxlen + 1
      if minid > 1 then
        redis.pcall('XADD', log, 'MINID', minid .. '-0', last .. '-0', 'f', frames, 'l', lengths)
      else
        redis.pcall('XADD', log, last .. '-0', 'f', frames, 'l', lengths)
      end
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
    if lengths ~= '' or ended == 1 then
      redis.call('PUBLISH', log, ep .. '\n' .. first .. '\n' .. ended .. '\n' .. lengths ..
        '\n' .. frames)
    end
  end
end
return #KEYS / 2
"""

# KEYS: log, meta.  ARGV: after (entries with ids above ``after-0``), count, node key prefix,
# the producing node if the caller knows it (for a stream whose metadata is gone).
# Returns {epoch, since, ended, last, node, tag}, node_alive, entries (XRANGE's reply), and
# the id of the log's newest frame (0 if none).
READ = r"""
local m = redis.call('HMGET', KEYS[2], 'epoch', 'since', 'ended', 'last', 'node', 'tag')
local node = m[5] or ARGV[4]
local alive = 0
if node ~= '' then alive = redis.call('EXISTS', ARGV[3] .. node) end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local top = 0
if #newest > 0 then top = tonumber(string.match(newest[1][1], '^(%d+)')) end
return {m, alive, entries, top}
"""

# KEYS: log, meta.  ARGV: expected last id (0: none), end_ttl_ms, lengths, the frames end to
# end (ids expected+1 ...). Ends the stream with them unless it ended or its log went past
# ``expected``.
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
local count = 0
for _ in string.gmatch(ARGV[3], '%d+') do count = count + 1 end
local last = expected + count
if count > 0 then
  redis.pcall('XADD', KEYS[1], last .. '-0', 'f', ARGV[4], 'l', ARGV[3])
end
redis.pcall('XADD', KEYS[1], last .. '-1', 'e', '1')
redis.call('HSET', KEYS[2], 'ended', '1', 'last', last)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[1], ep .. '\n' .. (expected + 1) .. '\n1\n' .. ARGV[3] .. '\n' ..
  ARGV[4])
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
