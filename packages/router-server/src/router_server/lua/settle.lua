-- Replace holds by the actual amounts, in the windows they were taken in.
--
-- Sent after holds.lua, whose functions it uses (fmt, expired).
-- This repeats MemoryLedger.settle, HoldBook.take and ledger.charged
-- (router_core.limits): a hold is settled once. An open hold (in the hold
-- hash: removed from it and from the reap index) is replaced by its actual;
-- a reaped one (in the hash of reaped holds, unless that has expired: removed
-- from it) had its amount returned already, so only the actual is charged;
-- a hold in neither is settled already: a no-op. Then its window's state
-- becomes, with `held` its amount if open and 0 if reaped, for a quota,
-- max(0, used - held) + actual, and for a budget,
-- {committed + actual, max(0, reserved - held)}, expiring with the window;
-- a quota's used, and a budget's committed + reserved, saturate at
-- MAX_SAFE_INTEGER (a sum past 2**53 is inexact in doubles, but then above
-- the cap, which is stored exactly).
-- A window key read past its end counts as absent, as in MemoryLedger.get.
-- Integers below 2**53, sent to Redis through fmt() (see admit.lua).
--
-- KEYS[4i - 3 .. 4i]  hold i's state key, hold hash, reap index, reaped hash
-- ARGV[1]  now in µs since the epoch, or '' to read the server's clock
-- ARGV[2 + 5 * (i - 1) ...]  hold i: request id, quota | budget, amount,
--          expire_at_us (-1: never), actual
--
-- Reply: {now, holds settled (open or reaped)}.

local NEVER = -1
local MAX_SAFE_INTEGER = 9007199254740991

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end

local settled = 0
for i = 1, #KEYS / 4 do
  local state_key, hold_key = KEYS[4 * i - 3], KEYS[4 * i - 2]
  local index_key, reaped_key = KEYS[4 * i - 1], KEYS[4 * i]
  local at = 2 + 5 * (i - 1)
  local id, kind = ARGV[at], ARGV[at + 1]
  local amount, expire, actual = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local held = nil
  if redis.call('HDEL', hold_key, id) == 1 then
    redis.call('ZREM', index_key, id)
    held = amount
  elseif not expired(reaped_key, now) and redis.call('HDEL', reaped_key, id) == 1 then
    held = 0
  end
  if held ~= nil then
    settled = settled + 1
    local live = expire == NEVER or expire > now
    if not live then
      redis.call('DEL', state_key)
    end
    if kind == 'quota' then
      local used = tonumber(redis.call('GET', state_key) or '0') - held
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
      local reserved = tonumber(budget[2] or '0') - held
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
