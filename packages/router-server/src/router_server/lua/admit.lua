-- One admission decision over every limit of a request, in one atomic step.
--
-- Sent after holds.lua, whose functions it uses (fmt, expire_key_at, reap_due).
-- This repeats router_core.limits step for step: gcra.py, windows.py,
-- quota.py, budget.py, the loop of admission.py, and the deadline, the
-- reaping and the holds of ledger.py and holds.py.
-- tests/system/limits/test_limits_redis_equivalence.py shows they agree.
-- Redis runs Lua 5.1, whose numbers are doubles: every integer here stays
-- below 2**53 (the Python side bounds the inputs), floor(a / b) is exact
-- floor division for 0 <= a < 2**53 and b >= 1, and numbers go back to Redis
-- through fmt(), because tostring() keeps only 14 digits.
--
-- KEYS[i]  spec i's key without a window suffix: <space>s:<spec key>, where
--          <space> is <prefix>{<tag>}:. A quota or budget appends
--          ':<window id>' here, and keeps its holds under <space>h:, <space>i:
--          and <space>r: + its state key (see holds.lua); every key touched
--          shares the {<tag>}, so all of them live in one Cluster slot.
-- ARGV[1]  now in µs since the epoch, or '' to read the server's clock
-- ARGV[2]  the request id, the field of its holds
-- ARGV[3]  how long (µs) a `total` window's holds are kept past the latest
--          reap time among them (other windows' holds end with their window)
-- ARGV[4]  the deadline in µs (the same clock as now), or '' for none
-- ARGV[5]  the hold lifetime in µs: a hold's reap time is now + this
-- ARGV[6 + 6 * (i - 1) ...]  spec i: kind, a, b, c, cost, <space>
--          rate, tokens_rate: a = rate, b = period_us, c = burst; <space> ''
--          quota, budget:     a = limit, b = day | month | total
--
-- Reply, when the admission ran after its deadline (now > deadline): {now, 2},
-- and nothing was written (no reaping either). Otherwise: {now, allowed (1
-- or 0), index of the denying spec, its current usage, its retry_after_s,
-- then for the request-rate and the token-rate headers: spec index (0:
-- none), remaining, reset_after_us; then, when allowed, each spec's written
-- state a, b and expire_at_us}: for a rate {tat us, tat frac}, a quota
-- {used, 0}, a budget {committed, reserved}. Before deciding, each quota and
-- budget window reaps up to 16 due holds (holds.ADMIT_REAP_LIMIT), whatever
-- the decision. Duplicate keys are refused with the error DUPLICATE_KEY.

local NEVER = -1
local US_PER_S = 1000000
local US_PER_DAY = 86400000000
local ADMIT_REAP_LIMIT = 16

local function seconds_up(us)
  if us == NEVER then
    return NEVER
  end
  return floor((us + US_PER_S - 1) / US_PER_S)
end

-- windows.py: Howard Hinnant's civil_from_days.
local function civil_from_days(days)
  local z = days + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local mday = doy - floor((153 * mp + 2) / 5) + 1
  local month = mp - 9
  if mp < 10 then
    month = mp + 3
  end
  local year = yoe + era * 400
  if month <= 2 then
    year = year + 1
  end
  return year, month, mday
end

local function days_in_month(year, month)
  if month == 2 then
    local leap = year - floor(year / 4) * 4 == 0
      and (year - floor(year / 100) * 100 ~= 0 or year - floor(year / 400) * 400 == 0)
    if leap then
      return 29
    end
    return 28
  end
  if month == 4 or month == 6 or month == 9 or month == 11 then
    return 30
  end
  return 31
end

-- (id, end_us) of the window of `kind` containing `now`.
local function window_of(kind, now)
  if kind == 'total' then
    return 0, NEVER
  end
  local day = floor(now / US_PER_DAY)
  if kind == 'day' then
    return day, (day + 1) * US_PER_DAY
  end
  local year, month, mday = civil_from_days(day)
  local start = day - (mday - 1)
  return (year - 1970) * 12 + (month - 1), (start + days_in_month(year, month)) * US_PER_DAY
end

-- gcra.py
local function gcra_remaining(ahead, frac, cap, rate, period)
  if ahead > floor(cap / rate) then
    return 0
  end
  local held = ahead * rate + frac
  if held > cap then
    return 0
  end
  return floor((cap - held) / period)
end

local function gcra_reset(ahead, frac)
  if frac > 0 then
    return ahead + 1
  end
  return ahead
end

-- allowed, new tat us, new tat frac, remaining, retry_after_us, reset_after_us
local function gcra_check(tat_us, tat_frac, now, cost, rate, period, burst)
  local us, frac = tat_us, tat_frac
  if frac >= rate then
    us, frac = us + 1, 0
  end
  if us < now then
    us, frac = now, 0
  end
  local ahead = us - now
  local cap = burst * period
  if cost > burst then
    return false, tat_us, tat_frac, gcra_remaining(ahead, frac, cap, rate, period), NEVER,
      gcra_reset(ahead, frac)
  end
  local slack = (burst - cost) * period
  local slack_us = floor(slack / rate)
  local slack_frac = slack - slack_us * rate
  if ahead > slack_us or (ahead == slack_us and frac > slack_frac) then
    local retry = ahead - slack_us
    if frac > slack_frac then
      retry = retry + 1
    end
    return false, tat_us, tat_frac, gcra_remaining(ahead, frac, cap, rate, period), retry,
      gcra_reset(ahead, frac)
  end
  local new_us, new_frac = tat_us, tat_frac
  if cost > 0 then
    local step = cost * period
    local step_us = floor(step / rate)
    us = us + step_us
    frac = frac + (step - step_us * rate)
    if frac >= rate then
      us, frac = us + 1, frac - rate
    end
    new_us, new_frac = us, frac
    ahead = us - now
  end
  return true, new_us, new_frac, gcra_remaining(ahead, frac, cap, rate, period), 0,
    gcra_reset(ahead, frac)
end

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * US_PER_S + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end
local request_id = ARGV[2]
local total_hold_us = tonumber(ARGV[3])
local hold_us = tonumber(ARGV[5])

local checks = {}
local seen = {}
for i = 1, #KEYS do
  local at = 6 + 6 * (i - 1)
  local c = { kind = ARGV[at], cost = tonumber(ARGV[at + 4]) }
  c.is_rate = c.kind == 'rate' or c.kind == 'tokens_rate'
  if c.is_rate then
    c.rate, c.period, c.burst = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
    c.key = KEYS[i]
  else
    c.limit = tonumber(ARGV[at + 1])
    c.window_id, c.window_end = window_of(ARGV[at + 2], now)
    c.key = KEYS[i] .. ':' .. fmt(c.window_id)
    -- KEYS[i] is <space>s:<spec key>: the holds keys swap the 's:'.
    local space = ARGV[at + 5]
    local name = string.sub(c.key, #space + 3)
    c.hold_key, c.index_key = space .. 'h:' .. name, space .. 'i:' .. name
    c.reaped_key = space .. 'r:' .. name
  end
  if seen[c.key] then
    return redis.error_reply('DUPLICATE_KEY each check needs its own key')
  end
  seen[c.key] = true
  checks[i] = c
end

-- A decision the caller has given up on is not taken: nothing is written.
if ARGV[4] ~= '' and now > tonumber(ARGV[4]) then
  return { now, 2 }
end

for _, c in ipairs(checks) do
  if not c.is_rate then
    reap_due(c.key, c.hold_key, c.index_key, c.reaped_key, now, ADMIT_REAP_LIMIT)
  end
end

-- Bind each check to its stored state; an absent key is the zero state.
for _, c in ipairs(checks) do
  if c.is_rate then
    c.us, c.frac = 0, 0
    local tat = redis.call('HMGET', c.key, 'us', 'frac')
    if tat[1] then
      local us, frac = tonumber(tat[1]), tonumber(tat[2])
      -- A TAT lives until ceil(TAT), the expire_at its write had; past it the
      -- key is gone, as in MemoryLedger.get (the TTL is rounded up to a ms).
      local expire = us
      if frac > 0 then
        expire = us + 1
      end
      if expire <= now then
        redis.call('DEL', c.key)
      else
        c.us, c.frac = us, frac
      end
    end
  elseif c.kind == 'quota' then
    -- The current window's key always ends after now: no expiry to check.
    c.used = tonumber(redis.call('GET', c.key) or '0')
  else
    local budget = redis.call('HMGET', c.key, 'committed', 'reserved')
    c.committed, c.reserved = tonumber(budget[1] or '0'), tonumber(budget[2] or '0')
  end
end

-- admission.py's _evaluate: the outcome of `c` at `cost`.
local function evaluate(c, cost)
  if c.is_rate then
    local ok, us, frac, remaining, retry, reset =
      gcra_check(c.us, c.frac, now, cost, c.rate, c.period, c.burst)
    return {
      ok = ok, a = us, b = frac, expire = now + reset,
      usage = c.burst - remaining, retry_s = seconds_up(retry),
      remaining = remaining, reset = reset,
    }
  end
  local retry_s = NEVER
  if cost <= c.limit and c.window_end ~= NEVER then
    retry_s = seconds_up(c.window_end - now)
  end
  if c.kind == 'quota' then
    local ok = cost <= c.limit - c.used
    local used = c.used
    if ok then
      used = used + cost
    end
    return { ok = ok, a = used, b = 0, expire = c.window_end, usage = c.used, retry_s = retry_s }
  end
  local ok = cost <= c.limit - c.committed - c.reserved
  local reserved = c.reserved
  if ok then
    reserved = reserved + cost
  end
  return {
    ok = ok, a = c.committed, b = reserved, expire = c.window_end,
    usage = c.committed + c.reserved, retry_s = retry_s,
  }
end

-- admission.py's _headers: fewest remaining, then longest reset; first wins a tie.
local function add_headers(reply, indexes, outcomes)
  local best = {}
  for n, i in ipairs(indexes) do
    local o = outcomes[n]
    local kind = checks[i].kind
    local current = best[kind]
    if current == nil or o.remaining < current.remaining
      or (o.remaining == current.remaining and o.reset > current.reset) then
      best[kind] = { index = i, remaining = o.remaining, reset = o.reset }
    end
  end
  for _, kind in ipairs({ 'rate', 'tokens_rate' }) do
    local b = best[kind]
    if b then
      table.insert(reply, b.index)
      table.insert(reply, b.remaining)
      table.insert(reply, b.reset)
    else
      table.insert(reply, 0)
      table.insert(reply, 0)
      table.insert(reply, 0)
    end
  end
end

local outcomes = {}
local rate_indexes = {}
local rate_outcomes = {}
for i, c in ipairs(checks) do
  local o = evaluate(c, c.cost)
  if not o.ok then
    -- A denial writes nothing; the headers come from peeks of every rate check.
    local peeks = {}
    for j, d in ipairs(checks) do
      if d.is_rate then
        table.insert(peeks, j)
      end
    end
    local peek_outcomes = {}
    for n, j in ipairs(peeks) do
      peek_outcomes[n] = evaluate(checks[j], 0)
    end
    local reply = { now, 0, i, o.usage, o.retry_s }
    add_headers(reply, peeks, peek_outcomes)
    return reply
  end
  outcomes[i] = o
  if c.is_rate then
    table.insert(rate_indexes, i)
    table.insert(rate_outcomes, o)
  end
end

local reply = { now, 1, 0, 0, 0 }
add_headers(reply, rate_indexes, rate_outcomes)
for i, c in ipairs(checks) do
  local o = outcomes[i]
  -- Only a charge is written: a cost of 0 is a peek.
  if c.cost > 0 then
    if c.is_rate then
      redis.call('HSET', c.key, 'us', fmt(o.a), 'frac', fmt(o.b))
    elseif c.kind == 'quota' then
      redis.call('SET', c.key, fmt(o.a))
    else
      redis.call('HSET', c.key, 'committed', fmt(o.a), 'reserved', fmt(o.b))
    end
    expire_key_at(c.key, o.expire)
    if not c.is_rate then
      redis.call('HSET', c.hold_key, request_id, fmt(c.cost))
      redis.call('ZADD', c.index_key, fmt(now + hold_us), request_id)
      local keep_until = c.window_end
      if keep_until == NEVER then
        keep_until = now + hold_us + total_hold_us
      end
      expire_key_at(c.hold_key, keep_until)
      expire_key_at(c.index_key, keep_until)
    end
  end
  table.insert(reply, o.a)
  table.insert(reply, o.b)
  table.insert(reply, o.expire)
end
return reply
