-- Reap the due holds of one window: what a background reaper runs, window
-- by window, as MemoryLedger.reap does for all of them.
--
-- Sent after holds.lua, whose reap_due it runs (see there for the rules).
--
-- KEYS[1..4]  the window's state key, hold hash, reap index, reaped hash
-- ARGV[1]  now in µs since the epoch, or '' to read the server's clock
-- ARGV[2]  how many holds to reap at most (the caller runs it again while
--          it reaps that many)
--
-- Reply: {now, holds reaped}.

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end
return { now, reap_due(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, tonumber(ARGV[2])) }
