-- Holds in Redis: what admit.lua, settle.lua and reap.lua share (each of
-- them is sent as this file followed by its own).
--
-- This repeats router_core.limits.holds (HoldBook, reaped_until) and
-- MemoryLedger._reap; tests/system/limits/test_limits_redis_equivalence.py
-- shows they agree. Per window (a quota's or budget's state key K):
--   <prefix>{<tag>}:h:K  hash of the open holds, request id -> amount
--   <prefix>{<tag>}:i:K  sorted set of the open holds, request id by reap time
--   <prefix>{<tag>}:r:K  hash of the reaped holds, request id -> amount
-- A hold is in h and i together, or in neither. Redis Lua numbers are
-- doubles: every integer stays below 2**53 (the Python side bounds inputs)
-- and goes back to Redis through fmt(), as tostring() keeps only 14 digits.
-- A key's expiry is read as an instant (PEXPIRETIME, Redis 7 or Valkey), so
-- a `now` passed by a test decides as the memory ledger's clock would.

local REAPED_TTL_US = 604800000000 -- holds.REAPED_TTL_US: 7 days
local floor = math.floor

local function fmt(x)
  return string.format('%.0f', x)
end

-- Expiry instants go to Redis in ms, rounded up, so a key outlives its state.
local function expire_key_at(key, expire_us)
  if expire_us == -1 then
    redis.call('PERSIST', key)
  else
    redis.call('PEXPIREAT', key, fmt(floor((expire_us + 999) / 1000)))
  end
end

-- Whether `key` has expired by `now` (µs); one that has is deleted, as
-- MemoryLedger.get deletes an expired entry.
local function expired(key, now)
  local at = redis.call('PEXPIRETIME', key)
  if at >= 0 and at * 1000 <= now then
    redis.call('DEL', key)
    return true
  end
  return false
end

-- Reap up to `limit` holds of one window due at `now` (reap time <= now),
-- oldest first: return their amounts to the window's state and remember
-- them, unless the state is gone (the window is over). Returns how many.
local function reap_due(state_key, hold_key, index_key, reaped_key, now, limit)
  local due = redis.call('ZRANGEBYSCORE', index_key, '-inf', fmt(now), 'LIMIT', 0, limit)
  if #due == 0 then
    return 0
  end
  local amounts = {}
  for n, id in ipairs(due) do
    amounts[n] = tonumber(redis.call('HGET', hold_key, id) or '0')
    redis.call('HDEL', hold_key, id)
  end
  redis.call('ZREM', index_key, unpack(due))
  local kind = redis.call('TYPE', state_key)['ok']
  if kind == 'none' or expired(state_key, now) then
    return #due
  end
  if kind == 'string' then
    local used = tonumber(redis.call('GET', state_key))
    for _, amount in ipairs(amounts) do
      used = used - amount
      if used < 0 then
        used = 0
      end
    end
    redis.call('SET', state_key, fmt(used), 'KEEPTTL')
  else
    local budget = redis.call('HMGET', state_key, 'committed', 'reserved')
    local reserved = tonumber(budget[2] or '0')
    for _, amount in ipairs(amounts) do
      reserved = reserved - amount
      if reserved < 0 then
        reserved = 0
      end
    end
    redis.call('HSET', state_key, 'reserved', fmt(reserved))
  end
  -- holds.reaped_until: REAPED_TTL_US after now, or the window's end, whichever first.
  expired(reaped_key, now)
  local until_ms = floor((now + REAPED_TTL_US + 999) / 1000)
  local window_end_ms = redis.call('PEXPIRETIME', state_key)
  if window_end_ms >= 0 and window_end_ms < until_ms then
    until_ms = window_end_ms
  end
  for n, id in ipairs(due) do
    redis.call('HSET', reaped_key, id, fmt(amounts[n]))
  end
  redis.call('PEXPIREAT', reaped_key, fmt(until_ms))
  return #due
end
