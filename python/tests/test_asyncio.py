"""asyncio: two tasks and two processes contending, the loop never blocked, and
cancellation that leaks neither a lease nor a thread."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

import shmlease
from shmlease import LeaseState, LostReason

from conftest import ticking


def _wait_threads_gone(timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(t.name == "shmlease-async-wait" for t in threading.enumerate()):
            return True
        time.sleep(0.01)
    return False


def test_two_tasks_contend_and_the_loop_keeps_running(table):
    async def main():
        inside = 0
        tokens = []

        async def worker():
            nonlocal inside
            for _ in range(5):
                async with table.lease_async("a", ttl=10) as lease:
                    inside += 1
                    assert inside == 1
                    tokens.append(lease.token)
                    await asyncio.sleep(0.05)  # the other task waits meanwhile
                    inside -= 1

        async with ticking() as ticks:
            await asyncio.wait_for(asyncio.gather(worker(), worker()), 60)
        return tokens, ticks

    tokens, ticks = asyncio.run(main())
    assert len(tokens) == 10 and tokens == sorted(tokens)
    # 10 holds of 50 ms: the ticker ran throughout (a blocked loop would not tick).
    assert len(ticks) >= 20
    assert table.get("a").state == LeaseState.FREE


def test_await_form_and_wait_zero(table):
    async def main():
        lease = await table.lease_async("b", ttl=5)
        with pytest.raises(shmlease.Held):
            await table.lease_async("b", wait=0)
        with pytest.raises(shmlease.Timeout):
            await table.lease_async("b", wait=0.2)
        lease.release()

    asyncio.run(main())


def test_cancelling_a_waiting_task_abandons_the_wait_cleanly(table):
    holder = table.acquire("c", 30)

    async def main():
        task = asyncio.create_task(table.lease_async("c", ttl=5).acquire())
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _wait_threads_gone(), "the waiting thread did not end"
    assert table.get("c").token == holder.token  # the abandoned wait took nothing
    holder.release()
    # Nobody else holds it now: the cancelled wait left no lease behind.
    assert table.try_acquire("c", 1).valid


def test_a_lease_granted_as_the_task_is_cancelled_is_released(table):
    for _ in range(20):
        holder = table.acquire("race", 30)

        async def main():
            task = asyncio.create_task(table.lease_async("race", ttl=30).acquire())
            await asyncio.sleep(0.05)
            holder.release()  # the waiting thread is granted it about now...
            task.cancel()  # ...while the task is cancelled
            try:
                await task
            except asyncio.CancelledError:
                return None
            return task.result()

        lease = asyncio.run(main())
        assert _wait_threads_gone()
        if lease is None:
            # Cancelled: whatever the thread got was released, not leaked.
            assert table.try_acquire("race", 1).valid
        else:
            lease.release()


def test_wait_lost_async(table):
    async def main():
        lease = await table.lease_async("w", ttl=30)
        asyncio.get_running_loop().call_later(0.3, table.revoke, "w")
        async with ticking() as ticks:
            reason = await asyncio.wait_for(lease.wait_lost_async(), 10)
        assert len(ticks) >= 10  # the loop ran during the wait
        assert await lease.wait_lost_async(0.1) == LostReason.REVOKED
        # Cancelled wait: the thread ends, the lease stays held.
        other = await table.lease_async("w2", ttl=30)
        task = asyncio.create_task(other.wait_lost_async())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert other.valid
        other.release()
        return reason

    assert asyncio.run(main()) == LostReason.REVOKED
    assert _wait_threads_gone()


ASYNC_WORKER = """
import asyncio, sys, time, shmlease
table = shmlease.Table(sys.argv[1], create=False)

async def main():
    got = []
    for _ in range(10):
        async with table.lease_async("p", ttl=10, wait=60) as lease:
            start = time.time()
            await asyncio.sleep(0.01)
            got.append((lease.token, start, time.time()))
    for g in got:
        print(*g)

asyncio.run(main())
"""


def test_two_processes_with_asyncio(table, children):
    procs = [children.start(ASYNC_WORKER, table.location) for _ in range(2)]
    holds = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        holds += [tuple(float(x) for x in line.split()) for line in out.splitlines()]
    assert len(holds) == 20
    holds.sort()
    for (t1, _, end1), (t2, start2, _) in zip(holds, holds[1:]):
        assert t1 < t2 and end1 <= start2, "two processes held the lease at once"
