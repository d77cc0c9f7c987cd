"""Fair acquisition (``fair=True``): waiters are served in the order they started
waiting, with every kind of name; each keeps its place in line for its whole wait (not
only for one of the 50 ms slices other waits are made of); a waiter killed in the middle
of the line is passed over; a fair caller that does not wait does not pass those in
line; what ``get(name).queue`` shows; asyncio; Ctrl-C. Real processes throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import shmlease
from shmlease import QueuedInfo

from conftest import read_line

# Waits fairly for the name (kind from argv), prints the token it is granted, then
# releases it at once (so that the next in line is served).
FAIR_WAITER = """
import os, signal, sys, shmlease
signal.signal(signal.SIGINT, signal.default_int_handler)
t = shmlease.Table(sys.argv[1], create=False)
kind = sys.argv[3]
kw = {"permits": 2} if kind == "permits" else {"shared": True} if kind == "shared" else {}
try:
    lease = t.acquire(sys.argv[2], ttl=30, wait=None, fair=True, label="waiter", **kw)
except KeyboardInterrupt:
    mine = [q for q in t.get(sys.argv[2]).queue if q.holder and q.holder.pid == os.getpid()]
    print("interrupted", len(mine), flush=True)
    sys.exit(3)
print(lease.token, flush=True)
lease.release()
"""


def _queued(table, name: str) -> list[QueuedInfo]:
    info = table.get(name)
    return info.queue if info else []


def _wait_in_line(table, name: str, pid: int, timeout: float = 30) -> QueuedInfo:
    """Waits until process `pid` has a place in `name`'s queue; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for q in _queued(table, name):
            if q.holder and q.holder.pid == pid:
                return q
        time.sleep(0.005)
    pytest.fail(f"process {pid} never took a place in the queue of {name!r}")


def _hold_all(table, name: str, kind: str) -> list[shmlease.Lease]:
    """Takes every grant of `name` that the fair waiters of `kind` would need."""
    if kind == "permits":
        return [table.acquire(name, 60, permits=2) for _ in range(2)]
    if kind == "shared":
        # The name becomes shared; its exclusive holder keeps shared waiters out.
        table.acquire(name, 1, shared=True).release()
    return [table.acquire(name, 60)]


def _line_up(table, children, name: str, kind: str, n: int) -> list:
    """Starts `n` fair waiters one after another, each once the previous one is in line."""
    waiters = []
    for _ in range(n):
        w = children.start(FAIR_WAITER, table.location, name, kind)
        _wait_in_line(table, name, w.pid)
        waiters.append(w)
    return waiters


@pytest.mark.parametrize("kind", ["exclusive", "permits", "shared"])
def test_fair_waiters_are_served_in_the_order_they_came(table, children, kind):
    held = _hold_all(table, "line", kind)
    waiters = _line_up(table, children, "line", kind, 4)
    queue = _queued(table, "line")
    assert [q.holder.pid for q in queue] == [w.pid for w in waiters]
    tickets = [q.ticket for q in queue]
    assert tickets == sorted(tickets) and len(set(tickets)) == 4
    for q in queue:
        assert q.holder.label == "" and q.expires_at is not None and q.slot >= 0
    # Every waiter keeps its place across many of its 50 ms wake-ups: the same tickets,
    # not new ones at the back.
    time.sleep(0.5)
    assert [q.ticket for q in _queued(table, "line")] == tickets
    for lease in held:
        lease.release()
    tokens = [int(read_line(w)) for w in waiters]
    # Tokens grow in the order granted: granted in the order they came.
    assert tokens == sorted(tokens) and len(set(tokens)) == 4, tokens
    for w in waiters:
        assert w.wait(30) == 0
    assert _queued(table, "line") == []


def test_a_waiter_killed_in_the_middle_of_the_line_is_passed_over(table, children):
    held = table.acquire("line", 60)
    first, middle, last = _line_up(table, children, "line", "exclusive", 3)
    os.killpg(middle.pid, signal.SIGKILL)
    middle.wait(30)
    # The dead waiter's place leaves the line (its death is provable).
    deadline = time.monotonic() + 30
    while middle.pid in [q.holder.pid for q in _queued(table, "line")]:
        assert time.monotonic() < deadline, "the killed waiter's place stayed in line"
        time.sleep(0.01)
    assert [q.holder.pid for q in _queued(table, "line")] == [first.pid, last.pid]
    held.release()
    a, c = int(read_line(first)), int(read_line(last))
    assert held.token < a < c
    assert first.wait(30) == 0 and last.wait(30) == 0


def _stopped_in_line(table, children, name: str):
    """A fair waiter, stopped while in line (its place stays live for 2 s) with the name
    free: the waiter and its place."""
    held = table.acquire(name, 60)
    w = children.start(FAIR_WAITER, table.location, name, "exclusive")
    place = _wait_in_line(table, name, w.pid)
    os.killpg(w.pid, signal.SIGSTOP)
    # SIGSTOP takes effect asynchronously: release only once every thread of the waiter
    # is stopped, or a thread still running could take the name it was woken for.
    _wait_stopped(w.pid)
    held.release()
    return w, place


def _wait_stopped(pid: int, timeout: float = 30.0) -> None:
    """Waits until every thread of process `pid` is stopped (state T)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            states = []
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            states = []
        if states and all(s in ("T", "t") for s in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} never stopped")


def test_a_fair_try_acquire_does_not_pass_those_in_line(table, children):
    # A stopped waiter keeps its place until the place expires (2 s after its last
    # renewal): while it is live, fair calls that do not wait must refuse. A place
    # never comes back, so one still in line after the calls was live during them. (If
    # this machine was so slow that it expired first, that round proves nothing: it is
    # run again with a new waiter.)
    for _ in range(5):
        w, place = _stopped_in_line(table, children, "line")
        refusals = []
        for call in (
            lambda: table.try_acquire("line", 30, fair=True),
            lambda: table.acquire("line", 30, wait=0, fair=True),
        ):
            try:
                call().release()
            except shmlease.Held as e:
                refusals.append((e.token, e.holder.pid if e.holder else None))
        if place.ticket in [q.ticket for q in _queued(table, "line")]:
            assert refusals == [(place.ticket, w.pid)] * 2
            break
        os.killpg(w.pid, signal.SIGKILL)
        w.wait(30)
    else:
        pytest.fail("a stopped waiter's place never stayed live long enough to check")
    # Callers that do not ask for fairness ignore the line (they may barge in).
    barger = table.try_acquire("line", 30)
    assert barger.token > 0
    barger.release()
    os.killpg(w.pid, signal.SIGKILL)


def test_fair_with_permits_and_shared_keeps_each_kinds_rules(table):
    # Nobody in line: a fair acquisition is an ordinary one, of any kind.
    a = table.try_acquire("pool", 30, permits=2, fair=True)
    b = table.acquire("pool", 30, permits=2, fair=True, wait=5)
    with pytest.raises(shmlease.Held):
        table.try_acquire("pool", 30, permits=2, fair=True)
    with pytest.raises(shmlease.WrongKind):
        table.try_acquire("pool", 30, fair=True)
    a.release()
    b.release()
    r1 = table.try_acquire("cat", 30, shared=True, fair=True)
    r2 = table.try_acquire("cat", 30, shared=True, fair=True)
    with pytest.raises(shmlease.Held):
        table.try_acquire("cat", 30, fair=True)  # the exclusive one waits for readers
    with pytest.raises(shmlease.Timeout):
        table.acquire("cat", 30, fair=True, wait=0.2)
    r1.release()
    r2.release()
    with table.lease("cat", 30, fair=True, wait=5) as w:
        assert table.get("cat").grants[0].token == w.token
    assert _queued(table, "cat") == []


def test_a_fair_wait_that_times_out_leaves_the_line(table):
    held = table.acquire("line", 60)
    with pytest.raises(shmlease.Timeout) as e:
        table.acquire("line", 30, wait=0.3, fair=True)
    assert e.value.waited >= 0.3
    assert _queued(table, "line") == []
    held.release()


def test_permits_are_bounded_at_128(table):
    with table.lease("wide", 30, permits=128, wait=0) as lease:
        assert table.get("wide").permits == 128 and lease.token > 0
    with pytest.raises(shmlease.InvalidOptions) as e:
        table.try_acquire("wider", 30, permits=129)
    assert "128" in e.value.reason and "129" in e.value.reason


def test_asyncio_fair_lease_is_served_in_order(table, children):
    held = table.acquire("line", 60)

    async def main() -> tuple[int, int]:
        mine = asyncio.ensure_future(_fair_lease_token(table))
        _ = await asyncio.to_thread(_wait_in_line, table, "line", os.getpid())
        behind = children.start(FAIR_WAITER, table.location, "line", "exclusive")
        await asyncio.to_thread(_wait_in_line, table, "line", behind.pid)
        held.release()
        token = await mine
        return token, int(await asyncio.to_thread(read_line, behind))

    mine, theirs = asyncio.run(main())
    assert held.token < mine < theirs


async def _fair_lease_token(table) -> int:
    async with table.lease_async("line", 30, wait=30, fair=True) as lease:
        # The loop runs while this task holds it, and the one behind still waits.
        await asyncio.sleep(0.05)
        return lease.token


def test_a_cancelled_fair_wait_gives_up_its_place_and_the_next_is_served(table, children):
    held = table.acquire("line", 60)
    behind = None

    async def main() -> None:
        nonlocal behind
        task = asyncio.ensure_future(table.lease_async("line", 30, wait=None, fair=True).acquire())
        await asyncio.to_thread(_wait_in_line, table, "line", os.getpid())
        behind = children.start(FAIR_WAITER, table.location, "line", "exclusive")
        await asyncio.to_thread(_wait_in_line, table, "line", behind.pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The cancelled wait's place goes (within a 50 ms wake-up): only the one behind is left.
    deadline = time.monotonic() + 30
    while [q.holder.pid for q in _queued(table, "line")] != [behind.pid]:
        assert time.monotonic() < deadline, _queued(table, "line")
        time.sleep(0.01)
    held.release()
    token = int(read_line(behind))
    assert token > held.token
    assert behind.wait(30) == 0
    assert table.get("line").grants == [] and _queued(table, "line") == []


def test_sigint_interrupts_a_fair_wait(table, children):
    held = table.acquire("line", 600)
    w = children.start(FAIR_WAITER, table.location, "line", "exclusive")
    _wait_in_line(table, "line", w.pid)
    time.sleep(0.2)  # a few of its wake-ups into the wait
    w.send_signal(signal.SIGINT)
    # The watchdog: a wait that ignored the signal would run until the lease is freed.
    out, err = w.communicate(timeout=30)
    assert w.returncode == 3, (out, err)
    # Its place was given up before KeyboardInterrupt reached Python.
    assert out.split() == ["interrupted", "0"], out
    assert _queued(table, "line") == []
    held.release()
