"""Backpressure: hand-off in arrival order, bounded queue, shedding, resizing, fair
shares by organization and priority, and shedding on a blocked event loop."""

from __future__ import annotations

import time

import anyio
import pytest

from router_core.config import AdmissionSettings, ServerSettings
from router_core.config_enums import Priority
from router_core.fair_share import WEIGHT, ShedReason
from router_core.problems import DependencyError
from router_server.backpressure import Backpressure, Tenant, overloaded

ACME = Tenant("acme")


def backpressure(
    max_in_flight: int = 2,
    max_queued: int = 2,
    timeout_s: float = 1.0,
    admission: AdmissionSettings | None = None,
) -> Backpressure:
    settings = ServerSettings(
        max_in_flight=max_in_flight,
        max_queued=max_queued,
        queue_timeout_ms=int(timeout_s * 1000),
        admission=admission or AdmissionSettings(),
    )
    return Backpressure(lambda: settings)


def resize(g: Backpressure, settings: ServerSettings) -> None:
    """A reload: the settings backpressure reads change, and it is told."""
    g.settings = lambda: settings
    g.reconfigured()


def org(name: str, priority: Priority = Priority.NORMAL, key: Priority | None = None) -> Tenant:
    return Tenant(name, WEIGHT[priority], key or priority)


async def until(condition: object) -> None:
    """Let the other tasks run until `condition()` holds (no clock involved)."""
    assert callable(condition)
    for _ in range(10_000):
        if condition():
            return
        await anyio.sleep(0)
    raise AssertionError("the condition never held")


async def shed_reason(g: Backpressure, tenant: Tenant) -> str:
    with pytest.raises(DependencyError) as caught:
        await g.enter(tenant)
    assert caught.value.status == 503
    assert caught.value.problem.code == "overloaded"
    assert caught.value.headers["retry-after"]
    reason: str = caught.value.extra["reason"]
    return reason


def test_slots_are_handed_over_in_arrival_order() -> None:
    async def main() -> list[int]:
        g = backpressure(max_in_flight=1, max_queued=5)
        first = await g.enter(ACME)
        order: list[int] = []

        async def waiter(i: int) -> None:
            slot = await g.enter(ACME)
            order.append(i)
            g.leave(slot)

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(waiter, i)
                await until(lambda i=i: g.queued == i + 1)
            g.leave(first)
        assert (g.in_flight, g.queued) == (0, 0)
        return order

    assert anyio.run(main) == [0, 1, 2, 3]


def test_a_full_queue_sheds_at_once_with_retry_after() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, max_queued=1)
        first = await g.enter(ACME)
        async with anyio.create_task_group() as tg:
            tg.start_soon(g.enter, ACME)
            await until(lambda: g.queued == 1)
            assert await shed_reason(g, ACME) == "queue_full"
            g.leave(first)
        assert (g.in_flight, g.shed) == (1, 1)
        assert g.shed_by_reason == {ShedReason.QUEUE_FULL: 1}

    anyio.run(main)


def test_a_waiter_gives_up_after_the_queue_timeout() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, timeout_s=0.05)
        first = await g.enter(ACME)
        assert await shed_reason(g, ACME) == "queue_timeout"
        assert (g.in_flight, g.queued, g.shed) == (1, 0, 1)
        g.leave(first)
        await g.enter(ACME)  # the slot is free again, nobody is stuck in the queue
        assert g.in_flight == 1

    anyio.run(main)


def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1)
        first = await g.enter(ACME)
        with anyio.move_on_after(0.02):
            await g.enter(ACME)
        assert (g.in_flight, g.queued) == (1, 0)
        g.leave(first)
        assert g.in_flight == 0

    anyio.run(main)


def test_growing_the_cap_wakes_waiters() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, max_queued=4)
        await g.enter(ACME)
        async with anyio.create_task_group() as tg:
            tg.start_soon(g.enter, ACME)
            tg.start_soon(g.enter, ACME)
            await until(lambda: g.queued == 2)
            resize(g, ServerSettings(max_in_flight=3, max_queued=4, queue_timeout_ms=1000))
        assert (g.in_flight, g.queued) == (3, 0)

    anyio.run(main)


def test_zero_queue_sheds_whenever_full() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, max_queued=0)
        await g.enter(ACME)
        assert await shed_reason(g, ACME) == "queue_full"

    anyio.run(main)


def test_a_flooding_organization_is_shed_while_another_gets_the_next_slots() -> None:
    """A holds every slot and fills the queue; B arrives: B takes queue places from
    A's newest waiters, A's new arrivals are shed at once while B waits, and the
    first freed slot goes to B (the next to A: then each holds its share)."""

    async def main() -> tuple[list[str], Backpressure]:
        g = backpressure(max_in_flight=2, max_queued=4, timeout_s=30)
        a, b = org("a"), org("b")
        held = [await g.enter(a), await g.enter(a)]
        served: list[str] = []
        refused: list[str] = []

        async def ask(tenant: Tenant) -> None:
            try:
                slot = await g.enter(tenant)
            except DependencyError as exc:
                refused.append(f"{tenant.organization}:{exc.extra['reason']}")
                return
            served.append(tenant.organization)
            held.append(slot)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(ask, a)
            await until(lambda: g.queued == 4)
            for _ in range(2):
                tg.start_soon(ask, b)
            await until(lambda: len(refused) == 2)  # two of A's waiters gave way
            assert await shed_reason(g, a) == "fair_share"  # A holds its share; B waits
            g.leave(held.pop(0))
            g.leave(held.pop(0))
            await until(lambda: len(served) == 2)
            assert served == ["b", "a"]
            while held:
                g.leave(held.pop())
                await anyio.sleep(0)
        assert sorted(refused) == ["a:fair_share", "a:fair_share"]
        return served, g

    served, g = anyio.run(main)
    assert sorted(served) == ["a", "a", "b", "b"]
    status = g.status()
    assert status["shed_by_reason"] == {
        "loop_lag": 0, "queue_full": 0, "queue_timeout": 0, "fair_share": 3,
        "backend_capacity": 0,
    }  # fmt: skip
    assert status["organizations"] == {"a": {"in_flight": 0, "queued": 0, "shed": 3}}


def test_freed_slots_go_by_organization_weight() -> None:
    """Both organizations wait, the low-priority one first; then 13 slots free at
    once. Each goes to the organization with the least (held + 1) / weight: the
    high-priority one (weight 4) gets about four for each of the low one's (1)."""

    async def main() -> list[str]:
        g = backpressure(max_in_flight=1, max_queued=20, timeout_s=30)
        gold, bronze = org("gold", Priority.HIGH), org("bronze", Priority.LOW)
        await g.enter(org("other"))
        order: list[str] = []

        async def ask(tenant: Tenant) -> None:
            await g.enter(tenant)
            order.append(tenant.organization)

        async with anyio.create_task_group() as tg:
            for i, tenant in enumerate([bronze] * 5 + [gold] * 8):
                tg.start_soon(ask, tenant)
                await until(lambda i=i: g.queued == i + 1)
            resize(g, ServerSettings(max_in_flight=14, max_queued=20, queue_timeout_ms=30_000))
        return order

    gold, bronze = "gold", "bronze"
    assert anyio.run(main) == [
        gold,
        gold,
        gold,
        bronze,
        gold,
        gold,
        gold,
        gold,
        bronze,
        gold,
        bronze,
        bronze,
        bronze,
    ]


def test_a_high_priority_key_goes_ahead_in_its_organizations_queue() -> None:
    async def main() -> list[str]:
        g = backpressure(max_in_flight=1, max_queued=10, timeout_s=30)
        first = await g.enter(org("acme"))
        order: list[str] = []

        async def ask(tenant: Tenant, label: str) -> None:
            slot = await g.enter(tenant)
            order.append(label)
            g.leave(slot)

        async with anyio.create_task_group() as tg:
            for i, key in enumerate([Priority.LOW, Priority.NORMAL, Priority.HIGH] * 2):
                tg.start_soon(ask, org("acme", key=key), f"{key}{i // 3}")
                await until(lambda i=i: g.queued == i + 1)
            g.leave(first)
        return order

    assert anyio.run(main) == ["high0", "high1", "normal0", "normal1", "low0", "low1"]


def test_a_blocked_event_loop_sheds_new_requests_before_anything_else() -> None:
    """A task blocks the loop (as a CPU-bound request would); the next arrival is
    refused for lag, and low priority goes first: a high-priority request is still
    admitted at a lag that sheds a low one."""

    async def main() -> tuple[str, str, Backpressure]:
        lag = AdmissionSettings(max_loop_lag_ms=100, lag_probe_interval_ms=10, min_in_flight=0)
        g = backpressure(max_in_flight=100, admission=lag)
        async with anyio.create_task_group() as tg:
            tg.start_soon(g.run)
            await until(lambda: g.saturation.sleeping)
            time.sleep(0.6)  # the loop is blocked: the probe cannot wake
            low = await shed_reason(g, org("acme", Priority.LOW))
            normal = await shed_reason(g, org("acme"))
            tg.cancel_scope.cancel()
        return low, normal, g

    low, normal, g = anyio.run(main)
    assert (low, normal) == ("loop_lag", "loop_lag")
    assert g.in_flight == 0  # nothing was admitted, nothing to give back
    assert g.shed_by_reason[ShedReason.LOOP_LAG] == 2


def test_lag_sheds_low_priority_first() -> None:
    lag = AdmissionSettings(max_loop_lag_ms=100, min_in_flight=0)
    g = backpressure(max_in_flight=10, admission=lag)
    g.saturation.smoothed_s = 0.15  # between the low (50 ms) and high (200 ms) thresholds

    async def main() -> None:
        assert await shed_reason(g, org("acme", Priority.LOW)) == "loop_lag"
        assert await shed_reason(g, org("acme")) == "loop_lag"
        slot = await g.enter(org("acme", Priority.HIGH))
        g.leave(slot)

    anyio.run(main)


def test_a_router_with_little_in_flight_is_not_shed_for_lag() -> None:
    """Three requests cannot lag a loop by a second themselves: the lag is the
    host's (or a pause), and refusing the fourth would relieve nothing. At the
    floor, lag sheds again."""
    g = backpressure(max_in_flight=10, admission=AdmissionSettings(min_in_flight=4))
    g.saturation.smoothed_s = 1.0

    async def main() -> str:
        for _ in range(4):
            await g.enter(ACME)
        return await shed_reason(g, ACME)

    assert anyio.run(main) == "loop_lag"
    assert g.in_flight == 4


def test_no_lag_threshold_never_sheds_for_lag() -> None:
    g = backpressure(max_in_flight=10, admission=AdmissionSettings(max_loop_lag_ms=None))
    g.saturation.smoothed_s = 60.0

    async def main() -> None:
        g.leave(await g.enter(ACME))

    anyio.run(main)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def clocked(max_in_flight: int = 2, timeout_s: float = 1.0) -> tuple[Backpressure, FakeClock]:
    clock = FakeClock()
    g = backpressure(max_in_flight=max_in_flight, max_queued=10, timeout_s=timeout_s)
    g.clock = clock
    return g, clock


def test_a_request_that_would_wait_past_the_timeout_is_refused_at_once() -> None:
    async def main() -> None:
        g, clock = clocked()
        slots = [await g.enter(ACME), await g.enter(ACME)]
        clock.now = 10.0
        g.leave(slots.pop())  # held 10 s: with 2 in flight a slot frees about every 5 s
        slots.append(await g.enter(ACME))
        with pytest.raises(DependencyError) as caught:
            await g.enter(ACME)
        assert caught.value.extra["reason"] == "queue_timeout"
        assert "about 5000 ms to free, past the 1000 ms queue timeout" in caught.value.detail
        # Refused without queueing: nobody waits, nothing was held for it.
        assert (g.in_flight, g.queued, g.shed) == (2, 0, 1)

    anyio.run(main)


def test_a_request_whose_wait_fits_the_timeout_queues_and_gets_the_next_slot() -> None:
    async def main() -> None:
        g, clock = clocked()
        slots = [await g.enter(ACME), await g.enter(ACME)]
        clock.now = 0.5
        g.leave(slots.pop())  # a slot frees about every 0.25 s: a 1 s queue is worth it
        slots.append(await g.enter(ACME))
        got: list[object] = []

        async def waiter() -> None:
            got.append(await g.enter(ACME))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await until(lambda: g.queued == 1)
            g.leave(slots.pop())
        assert len(got) == 1
        assert g.shed == 0

    anyio.run(main)


def test_only_the_waiters_ahead_in_its_own_organization_count_against_a_request() -> None:
    async def main() -> None:
        g, clock = clocked(max_in_flight=2, timeout_s=1.0)
        slots = [await g.enter(ACME), await g.enter(ACME)]
        clock.now = 0.8
        g.leave(slots.pop())  # a slot frees about every 0.4 s
        slots.append(await g.enter(ACME))
        async with anyio.create_task_group() as tg:
            tg.start_soon(g.enter, ACME)
            await until(lambda: g.queued == 1)
            # acme's next one would wait for 2 slots (0.8 s), its third for 3 (1.2 s):
            tg.start_soon(g.enter, ACME)
            await until(lambda: g.queued == 2)
            assert await shed_reason(g, ACME) == "queue_timeout"
            # Another organization is not refused for acme's queue: it waits.
            tg.start_soon(g.enter, org("globex"))
            await until(lambda: g.queued == 3)
            tg.cancel_scope.cancel()
        assert g.shed == 1

    anyio.run(main)


def test_retries_of_refusals_are_spread_over_two_seconds() -> None:
    """Retry-After is whole seconds; retry-after-ms (read first by the openai
    SDK) spreads clients refused together over that second and the next."""
    spreads = set()
    for _ in range(200):
        headers = overloaded("full", 0.2, ShedReason.LOOP_LAG).headers
        assert headers["retry-after"] == "1"
        spreads.add(int(headers["retry-after-ms"]))
    assert min(spreads) >= 1000
    assert max(spreads) <= 2000
    assert len(spreads) > 50  # spread, not one value
    longer = overloaded("full", 2.5, ShedReason.QUEUE_TIMEOUT).headers
    assert longer["retry-after"] == "3"
    assert 3000 <= int(longer["retry-after-ms"]) <= 6000


def busy(percent: int, window_ms: int = 20, min_limit: int = 1) -> AdmissionSettings:
    return AdmissionSettings(
        max_loop_lag_ms=None, max_busy_percent=percent, window_ms=window_ms,
        lag_probe_interval_ms=5, min_limit=min_limit,
    )  # fmt: skip


def test_a_router_busier_than_its_target_admits_only_what_fits() -> None:
    """20 requests hold slots while a task keeps the loop's core busy (as their
    streams would): each window the busy limit drops to what fits in 10 % of a
    core at the measured cost, below the 20 in flight, so the next arrival is
    refused at once (no queue). Idle again, the 20 in use earn it back."""

    async def main() -> tuple[float, int, str, int]:
        g = backpressure(max_in_flight=100, max_queued=0, admission=busy(10))
        slots = [await g.enter(ACME) for _ in range(20)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(g.run)
            for _ in range(200):  # keep the CPU busy until a window has measured it
                burn_until = time.process_time() + 0.005
                while time.process_time() < burn_until:
                    pass
                await anyio.sleep(0)
                if g.capacity() < 20:
                    break
            measured = g.saturation.busy or 0.0  # None: never measured (fails below)
            shrunk = g.capacity()
            reason = await shed_reason(g, ACME)
            # Idle: the CPU falls under the target while the 20 are still in.
            with anyio.fail_after(30):
                while g.capacity() <= 20:
                    await anyio.sleep(0.01)
            grown = g.capacity()
            tg.cancel_scope.cancel()
        for slot in slots:
            g.leave(slot)
        return measured, shrunk, reason, grown

    measured, shrunk, reason, grown = anyio.run(main)
    assert measured > 0.1
    assert shrunk < 20
    assert reason == "queue_full"
    assert grown > 20


def test_the_busy_limit_caps_capacity_only_while_it_is_on() -> None:
    g = backpressure(max_in_flight=100, admission=busy(80, min_limit=4))
    g.saturation.busy_limit = 2.5
    assert g.capacity() == 4  # never below min_limit
    g.saturation.busy_limit = 30.0
    assert g.capacity() == 30
    resize(g, ServerSettings(max_in_flight=10, admission=busy(80, min_limit=4)))
    assert g.capacity() == 10  # never above max_in_flight
    resize(g, ServerSettings(max_in_flight=100, admission=AdmissionSettings()))
    assert g.capacity() == 100  # off: no busy limit, whatever was measured
    assert g.status()["max_busy_percent"] is None
