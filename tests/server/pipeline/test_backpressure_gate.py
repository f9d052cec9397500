"""Backpressure: FIFO hand-off, bounded queue, shedding, resizing."""

from __future__ import annotations

import anyio
import pytest

from router_core.config import ServerSettings
from router_core.problems import DependencyError
from router_server.backpressure import Backpressure


def backpressure(
    max_in_flight: int = 2, max_queued: int = 2, timeout_s: float = 1.0
) -> Backpressure:
    settings = ServerSettings(
        max_in_flight=max_in_flight, max_queued=max_queued, queue_timeout_ms=int(timeout_s * 1000)
    )
    return Backpressure(lambda: settings)


def resize(g: Backpressure, settings: ServerSettings) -> None:
    """A reload: the settings backpressure reads change, and it is told."""
    g.settings = lambda: settings
    g.reconfigured()


def test_slots_are_handed_over_in_arrival_order() -> None:
    async def main() -> list[int]:
        g = backpressure(max_in_flight=1, max_queued=5)
        await g.enter()
        order: list[int] = []

        async def waiter(i: int) -> None:
            await g.enter()
            order.append(i)
            g.leave()

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(waiter, i)
                await anyio.sleep(0.01)
            assert g.queued == 4
            g.leave()
        assert (g.in_flight, g.queued) == (0, 0)
        return order

    assert anyio.run(main) == [0, 1, 2, 3]


def test_a_full_queue_sheds_at_once_with_retry_after() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, max_queued=1)
        await g.enter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(g.enter)
            await anyio.sleep(0.01)
            with pytest.raises(DependencyError) as caught:
                await g.enter()
            assert caught.value.status == 503
            assert caught.value.problem.code == "overloaded"
            assert caught.value.headers["retry-after"] == "1"
            g.leave()
        assert (g.in_flight, g.shed) == (1, 1)

    anyio.run(main)


def test_a_waiter_gives_up_after_the_queue_timeout() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, timeout_s=0.05)
        await g.enter()
        with pytest.raises(DependencyError):
            await g.enter()
        assert (g.in_flight, g.queued, g.shed) == (1, 0, 1)
        g.leave()
        await g.enter()  # the slot is free again, nobody is stuck in the queue
        assert g.in_flight == 1

    anyio.run(main)


def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1)
        await g.enter()
        with anyio.move_on_after(0.02):
            await g.enter()
        assert (g.in_flight, g.queued) == (1, 0)
        g.leave()
        assert g.in_flight == 0

    anyio.run(main)


def test_growing_the_cap_wakes_waiters() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, max_queued=4)
        await g.enter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(g.enter)
            tg.start_soon(g.enter)
            await anyio.sleep(0.01)
            assert g.queued == 2
            resize(g, ServerSettings(max_in_flight=3, max_queued=4, queue_timeout_ms=1000))
        assert (g.in_flight, g.queued) == (3, 0)

    anyio.run(main)


def test_zero_queue_sheds_whenever_full() -> None:
    async def main() -> None:
        g = backpressure(max_in_flight=1, max_queued=0)
        await g.enter()
        with pytest.raises(DependencyError):
            await g.enter()

    anyio.run(main)
