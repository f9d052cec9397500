-- Replace holds by the actual amounts, in the windows they were taken in.
--
-- This repeats MemoryLedger.settle and ledger.settled (router_core.limits):
-- a hold is settled once (its field is deleted from the hold hash; a hold
-- already gone is a no-op), then its window's state becomes, for a quota,
-- max(0, used - amount) + actual, and for a budget,
-- {committed + actual, max(0, reserved - amount)}, expiring with the window;
-- a quota's used, and a budget's committed + reserved, saturate at
-- MAX_SAFE_INTEGER (a sum past 2**53 is inexact in doubles, but then above
-- the cap, which is stored exactly).
-- A window key read past its end counts as absent, as in MemoryLedger.get.
-- Integers below 2**53, sent to Redis through fmt() (see admit.lua).
--
-- KEYS[2i - 1], KEYS[2i]  hold i's state key and hold key
-- ARGV[1]  now in µs since the epoch, or '' to read the server's clock
-- ARGV[2 + 5 * (i - 1) ...]  hold i: request id, quota | budget, amount,
--          expire_at_us (-1: never), actual
--
-- Reply: {now, holds settled}.

local NEVER = -1
local MAX_SAFE_INTEGER = 9007199254740991
local floor = math.floor

local function fmt(x)
  return string.format('%.0f', x)
end

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end

local settled = 0
for i = 1, #KEYS / 2 do
  local state_key, hold_key = KEYS[2 * i - 1], KEYS[2 * i]
  local at = 2 + 5 * (i - 1)
  local id, kind = ARGV[at], ARGV[at + 1]
  local amount, expire, actual = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  if redis.call('HDEL', hold_key, id) == 1 then
    settled = settled + 1
    local live = expire == NEVER or expire > now
    if not live then
      redis.call('DEL', state_key)
    end
    if kind == 'quota' then
      local used = tonumber(redis.call('GET', state_key) or '0') - amount
      if used < 0 then
        used = 0
      end
      used = used + actual
      if used > MAX_SAFE_INTEGER then
        used = MAX_SAFE_INTEGER
      end
      redis.call('SET', state_key, fmt(used))
    else
      local budget = redis.call('HMGET', state_key, 'committed', 'reserved')
      local committed = tonumber(budget[1] or '0') + actual
      local reserved = tonumber(budget[2] or '0') - amount
      if reserved < 0 then
        reserved = 0
      end
      if committed > MAX_SAFE_INTEGER - reserved then
        committed = MAX_SAFE_INTEGER - reserved
      end
      redis.call('HSET', state_key, 'committed', fmt(committed), 'reserved', fmt(reserved))
    end
    if expire == NEVER then
      redis.call('PERSIST', state_key)
    else
      -- In the past, this deletes the key at once: the window is over.
      redis.call('PEXPIREAT', state_key, fmt(floor((expire + 999) / 1000)))
    end
  end
end
return { now, settled }
