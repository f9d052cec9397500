"""Spend budgets in integer nano-USD, held by reservations and settled to actual cost.

Rules:
- Prices are whole nano-USD per token. A price in USD per million tokens is
  exact only with at most 3 decimals ($0.15/M is 150 nano-USD per token);
  anything finer, negative, or a float is refused rather than rounded.
- Prompt tokens served from a provider's cache (`cached`) and written to it
  (`cache_write`) may have rates of their own; without one they cost the
  input rate. The worst case prices every prompt token at the highest of the
  three, since a request may write its whole prompt to the cache.
- A window's state is `committed` (settled spend) and `reserved` (held for
  requests in flight). `reserve` admits `amount` iff
  committed + reserved + amount <= limit, so that sum never exceeds the
  limit through a reservation.
- `settle` moves one reservation out (reserved -= its amount) and charges the
  actual cost (committed += actual); `release` is a settle with actual 0.
  The reservation is settled in the window it was made in, even if that
  window has ended, so a request admitted before midnight is spent that day.
- The invariant committed + reserved <= limit holds at every instant only if
  every reservation is a true upper bound of its actual cost: the server
  reserves `worst_case` (prompt tokens + max_tokens at their prices) and caps
  generation at max_tokens. An actual above the reservation is charged anyway,
  because the money was spent, and may leave committed + reserved above the
  limit; later reservations are then refused until the window ends.
- A settle for more than is reserved (state lost in a Redis failover) clamps
  `reserved` at 0 instead of going negative.
- Integers only, all below 2**53 (about 9 million USD per window). Costs and
  sums saturate at MAX_SAFE_INTEGER instead of leaving that range: a
  configured budget is below 9,000,000 USD, less than MAX_SAFE_INTEGER
  nano-USD, so a saturated cost is refused by every budget just as its exact
  value would be, and a saturated `committed` keeps its window refusing.
"""

from __future__ import annotations

from decimal import Decimal, Inexact, InvalidOperation, Rounded, localcontext

import attrs

from router_core.limits.integers import MAX_SAFE_INTEGER, bounded, require_int

NANOS_PER_USD = 10**9
TOKENS_PER_MILLION = 10**6


@attrs.frozen
class Price:
    input_nanos_per_token: int = attrs.field(validator=bounded(0))
    output_nanos_per_token: int = attrs.field(validator=bounded(0))
    # None: such tokens cost the input rate.
    cache_read_nanos_per_token: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(bounded(0))
    )
    cache_write_nanos_per_token: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(bounded(0))
    )

    @property
    def cache_read(self) -> int:
        rate = self.cache_read_nanos_per_token
        return self.input_nanos_per_token if rate is None else rate

    @property
    def cache_write(self) -> int:
        rate = self.cache_write_nanos_per_token
        return self.input_nanos_per_token if rate is None else rate

    @property
    def prompt_worst(self) -> int:
        """The most one prompt token can cost: fresh, read or written."""
        return max(self.input_nanos_per_token, self.cache_read, self.cache_write)


@attrs.frozen
class BudgetState:
    committed: int = attrs.field(default=0, validator=bounded(0))
    reserved: int = attrs.field(default=0, validator=bounded(0))

    def __attrs_post_init__(self) -> None:
        if self.committed + self.reserved > MAX_SAFE_INTEGER:
            raise ValueError("committed + reserved must stay below 2**53 nano-USD")

    @property
    def spent(self) -> int:
        """Committed plus reserved: what counts against the limit."""
        return self.committed + self.reserved


@attrs.frozen
class ReserveResult:
    allowed: bool
    # The state to store: unchanged on a denial.
    new_state: BudgetState
    # limit - committed - reserved after the decision, at least 0.
    remaining: int


def price_from_usd_per_million(
    input: str | Decimal | int,
    output: str | Decimal | int,
    cache_read: str | Decimal | int | None = None,
    cache_write: str | Decimal | int | None = None,
) -> Price:
    """A Price from USD per million tokens, exactly, e.g. ("2.50", "10") -> (2500, 10000)."""
    return Price(
        _nanos_per_token("input price", input),
        _nanos_per_token("output price", output),
        None if cache_read is None else _nanos_per_token("cache read price", cache_read),
        None if cache_write is None else _nanos_per_token("cache write price", cache_write),
    )


def _nanos_per_token(what: str, usd_per_million: str | Decimal | int) -> int:
    if isinstance(usd_per_million, bool) or not isinstance(usd_per_million, str | Decimal | int):
        raise TypeError(
            f"{what} must be a str, Decimal or int number of USD per million tokens, "
            f"not {type(usd_per_million).__name__} (a float cannot hold cents exactly)"
        )
    text = usd_per_million.strip() if isinstance(usd_per_million, str) else usd_per_million
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} {usd_per_million!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0 USD per million tokens, not {value}")
    # USD per 10**6 tokens is value * 10**9 / 10**6 = value * 10**3 nano-USD per token;
    # a wide context that traps rounding keeps the scaling exact.
    with localcontext() as ctx:
        ctx.prec = 64
        ctx.traps[Inexact] = True
        ctx.traps[Rounded] = True
        try:
            nanos = value.scaleb(3)
        except (Inexact, Rounded):
            raise ValueError(f"{what} {usd_per_million!r} has too many digits") from None
    if nanos != nanos.to_integral_value():
        raise ValueError(
            f"{what} {value} USD per million tokens is {nanos} nano-USD per token; "
            f"prices must be whole nano-USD per token, i.e. at most 3 decimal places "
            f"of USD per million tokens"
        )
    if nanos > MAX_SAFE_INTEGER:
        raise ValueError(f"{what} {value} USD per million tokens is too large")
    return int(nanos)


def cost(
    price: Price,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> int:
    """What a request costs, in nano-USD, saturated at MAX_SAFE_INTEGER.

    `prompt_tokens` includes the cached and cache-write tokens; a report of
    more of those than the prompt holds is capped at the prompt.
    """
    require_int("prompt_tokens", prompt_tokens, 0)
    require_int("completion_tokens", completion_tokens, 0)
    require_int("cached_tokens", cached_tokens, 0)
    require_int("cache_write_tokens", cache_write_tokens, 0)
    read = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - read)
    total = (
        price.input_nanos_per_token * (prompt_tokens - read - written)
        + price.cache_read * read
        + price.cache_write * written
        + price.output_nanos_per_token * completion_tokens
    )
    return total if total <= MAX_SAFE_INTEGER else MAX_SAFE_INTEGER


def worst_case(price: Price, prompt_tokens_upper_bound: int, max_tokens: int) -> int:
    """The most a request can cost: the amount to reserve at admission."""
    require_int("prompt_tokens", prompt_tokens_upper_bound, 0)
    require_int("max_tokens", max_tokens, 0)
    total = (
        price.prompt_worst * prompt_tokens_upper_bound + price.output_nanos_per_token * max_tokens
    )
    return total if total <= MAX_SAFE_INTEGER else MAX_SAFE_INTEGER


def max_affordable_tokens(price: Price, prompt_tokens: int, remaining: int) -> int | None:
    """The largest max_tokens whose worst case fits in `remaining` nano-USD.

    -1 if even the prompt does not fit; None if output is free, so the budget
    puts no bound on max_tokens. The clamp policy refuses below 1.
    """
    require_int("prompt_tokens", prompt_tokens, 0)
    require_int("remaining", remaining, -MAX_SAFE_INTEGER)
    left = remaining - price.prompt_worst * prompt_tokens
    if left < 0:
        return -1
    if price.output_nanos_per_token == 0:
        return None
    return left // price.output_nanos_per_token


def reserve(state: BudgetState, amount: int, limit: int) -> ReserveResult:
    """Hold `amount` against the window's limit if it fits beside what is held and spent."""
    require_int("amount", amount, 0)
    require_int("limit", limit, 0)
    # Subtract rather than add, so every operand stays below 2**53.
    allowed = amount <= limit - state.committed - state.reserved
    new_state = BudgetState(state.committed, state.reserved + amount) if allowed else state
    return ReserveResult(allowed, new_state, max(0, limit - new_state.spent))


def settle(state: BudgetState, reserved_amount: int, actual: int) -> BudgetState:
    """Replace one reservation of `reserved_amount` by its actual cost."""
    require_int("reserved_amount", reserved_amount, 0)
    require_int("actual", actual, 0)
    reserved = max(0, state.reserved - reserved_amount)
    # settle.lua adds in doubles: a sum past 2**53 may be inexact there, but it
    # is then above the cap, so both sides store the cap exactly.
    committed = min(state.committed + actual, MAX_SAFE_INTEGER - reserved)
    return BudgetState(committed, reserved)


def release(state: BudgetState, reserved_amount: int) -> BudgetState:
    """Drop a reservation whose request consumed nothing."""
    return settle(state, reserved_amount, 0)
