"""Shared names (``shared=True``): many shared holders at once or one exclusive holder,
never both; a waiting exclusive acquirer keeps new shared holders out; each holder with
its own token; what the table shows of them. Real processes (child interpreters, a
multiprocessing herd with fork and spawn, kill -9 of a holder) and asyncio."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import selectors
import signal
import time

import pytest

import shmlease
from shmlease import LeaseKind, LeaseState, LostReason

from conftest import read_line, run_workers, ticking

HOLD_SHARED = """
import sys, time, shmlease
t = shmlease.Table(sys.argv[1], create=False)
lease = t.acquire(sys.argv[2], ttl=float(sys.argv[3]), shared=True, label="reader")
print(lease.token, flush=True)
time.sleep(600)
"""

# Holds a shared grant until SIGUSR1, then releases it and says so.
HOLD_SHARED_UNTIL_USR1 = """
import signal, sys, time, shmlease
t = shmlease.Table(sys.argv[1], create=False)
lease = t.acquire(sys.argv[2], ttl=60, shared=True, label="reader")
def release(*_):
    lease.release()
    print("released", flush=True)
signal.signal(signal.SIGUSR1, release)
print(lease.token, flush=True)
while True:
    time.sleep(1)
"""

# Says it is about to wait, then waits (forever) for the exclusive grant.
WRITER = """
import sys, time, shmlease
t = shmlease.Table(sys.argv[1], create=False)
print("waiting", flush=True)
lease = t.acquire(sys.argv[2], ttl=60, wait=None, label="writer")
print(lease.token, flush=True)
time.sleep(600)
"""


def _silent(p, seconds: float) -> bool:
    """Whether child `p` prints nothing (and stays alive) for `seconds`."""
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        return not sel.select(seconds) and p.poll() is None
    finally:
        sel.close()


def _draining(table, name: str, pid: int, timeout: float = 30) -> int:
    """Waits until the exclusive acquirer `pid` holds the head of `name` (waiting for its
    shared holders); returns its token."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = table.get(name)
        for g in info.grants if info else ():
            if not g.shared and g.holder and g.holder.pid == pid:
                return g.token
        time.sleep(0.01)
    pytest.fail(f"process {pid} never took the exclusive grant of {name!r} to wait on it")


def test_shared_holders_at_once_and_an_exclusive_one_refused(table, children):
    readers = [children.start(HOLD_SHARED, table.location, "cat", "60") for _ in range(3)]
    tokens = [int(read_line(r)) for r in readers]
    assert len(set(tokens)) == 3, "each shared holder has a token of its own"
    pids = {r.pid for r in readers}
    # One more shared holder is welcome; an exclusive one is not.
    with table.lease("cat", 5, shared=True, wait=0) as mine:
        assert mine.token > max(tokens)
        with pytest.raises(shmlease.Held) as e:
            table.try_acquire("cat", 5)
        # Held names a live shared holder: one of the children, or this process.
        assert e.value.token in tokens + [mine.token]
        assert e.value.holder.pid in pids | {os.getpid()}
        assert 0 < e.value.remaining <= 60
        with pytest.raises(shmlease.Timeout) as e:
            table.acquire("cat", 5, wait=0.3)
        assert e.value.token in tokens + [mine.token] and e.value.waited >= 0.3
    # The refused exclusive attempts left the name to its shared holders.
    info = table.get("cat")
    assert [g.token for g in info.grants] == sorted(tokens)
    assert all(g.shared for g in info.grants)
    assert {g.holder.pid for g in info.grants} == pids
    for r in readers:
        r.kill()
        r.wait(30)
    with table.lease("cat", 5, wait=30) as writer:
        assert writer.token > mine.token
        # (The killed readers' grants are shown until their deadlines: nobody ended them.)
        assert [g.token for g in table.get("cat").grants if not g.shared] == [writer.token]
        with pytest.raises(shmlease.Held) as e:
            table.try_acquire("cat", 5, shared=True)
        assert e.value.token == writer.token and e.value.holder.pid == os.getpid()


def test_a_waiting_exclusive_acquirer_gets_the_name_once_the_shared_holders_release(
    table, children
):
    mine = table.acquire("db", 60, shared=True)
    other = children.start(HOLD_SHARED_UNTIL_USR1, table.location, "db")
    other_token = int(read_line(other))
    writer = children.start(WRITER, table.location, "db")
    assert read_line(writer) == "waiting"
    draining = _draining(table, "db", writer.pid)
    assert _silent(writer, 0.3), "the writer was granted the name beside two shared holders"
    # While it waits, new shared acquisitions are refused (or wait), naming the writer.
    with pytest.raises(shmlease.Held) as e:
        table.try_acquire("db", 5, shared=True)
    assert e.value.holder.pid == writer.pid and e.value.token >= draining
    # The shared holders still hold, unaffected.
    assert mine.valid and mine.lost is None
    shared_tokens = [g.token for g in table.get("db").grants if g.shared]
    assert shared_tokens == sorted([mine.token, other_token])

    mine.release()
    assert _silent(writer, 0.3), "the writer was granted the name beside a shared holder"
    os.kill(other.pid, signal.SIGUSR1)
    assert read_line(other) == "released"
    token = int(read_line(writer, timeout=60))
    assert token > max(mine.token, other_token)
    info = table.get("db")
    assert (info.kind, info.state) == (LeaseKind.SHARED, LeaseState.HELD)
    [g] = info.grants
    assert (g.token, g.shared, g.holder.pid, g.holder.label) == (token, False, writer.pid, "writer")
    with pytest.raises(shmlease.Held) as e:
        table.try_acquire("db", 5, shared=True)
    assert e.value.token == token and e.value.holder.pid == writer.pid


def test_a_waiting_shared_acquirer_stays_behind_a_waiting_exclusive_one(table, children):
    mine = table.acquire("db", 60, shared=True)
    writer = children.start(WRITER, table.location, "db")
    assert read_line(writer) == "waiting"
    _draining(table, "db", writer.pid)
    # Two seconds: forty of the writer's 50 ms wake-ups.
    with pytest.raises(shmlease.Timeout) as e:
        table.acquire("db", 5, shared=True, wait=2)
    assert e.value.holder.pid == writer.pid
    assert mine.valid


def test_kill_9_of_a_shared_holder_does_not_hold_up_an_exclusive_acquirer(table, children):
    # A TTL far longer than any watchdog here: only the death may free the name.
    reader = children.start(HOLD_SHARED, table.location, "cfg", "600")
    dead_token = int(read_line(reader))
    writer = children.start(WRITER, table.location, "cfg")
    assert read_line(writer) == "waiting"
    _draining(table, "cfg", writer.pid)
    assert _silent(writer, 0.3)
    os.kill(reader.pid, signal.SIGKILL)
    reader.wait(30)
    token = int(read_line(writer, timeout=60))
    assert token > dead_token
    # A dead shared holder is not waited for by a caller that never waits either, and
    # a dead exclusive holder lets shared holders in at once.
    reader = children.start(HOLD_SHARED, table.location, "cfg2", "600")
    dead_token = int(read_line(reader))
    os.kill(reader.pid, signal.SIGKILL)
    reader.wait(30)
    with table.lease("cfg2", 5, wait=0) as lease:
        assert lease.token > dead_token
        assert [g.token for g in table.get("cfg2").grants if not g.shared] == [lease.token]
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(30)
    with table.lease("cfg", 5, shared=True, wait=0) as lease:
        assert lease.token > token


def test_each_holder_is_a_lease_of_its_own(table):
    a = table.acquire("s", 30, shared=True, keep_alive=False)
    b = table.acquire("s", 0.2, shared=True, keep_alive=False)
    assert a.token < b.token
    assert b.wait_lost(30) == LostReason.EXPIRED and a.valid
    a.renew(60)
    assert a.remaining > 59
    c = table.try_acquire("s", 30, shared=True)
    assert c.token > b.token
    assert table.request_release("s", c.token) == c.token
    assert c.release_requested and not a.release_requested
    assert table.revoke("s", a.token) == a.token
    assert a.wait_lost(30) == LostReason.REVOKED and c.valid
    # By token from anywhere, as for a detached lease.
    d = table.acquire("s", 30, shared=True).detach()
    table.renew("s", d.token, 45)
    assert {g.token: round(g.remaining) for g in table.get("s").grants}[d.token] == 45
    assert table.revoke("s") == d.token  # every holder; the newest token
    assert c.wait_lost(30) == LostReason.REVOKED
    assert table.get("s").grants == []
    with pytest.raises(shmlease.Lost):
        table.release("s", d.token)


def test_info_shows_the_kind_and_each_holder(table):
    # An exclusive holder that is there when the name becomes shared stays its holder.
    solo = table.acquire("lib", 30, label="w")
    with pytest.raises(shmlease.Held) as e:
        table.try_acquire("lib", 30, shared=True)
    assert e.value.token == solo.token
    info = table.get("lib")
    assert (info.kind, info.permits) == (LeaseKind.SHARED, 64)
    assert str(info.kind) == "shared"
    [g] = info.grants
    assert (g.token, g.shared, g.holder.label) == (solo.token, False, "w")
    assert info.holder == g.holder and info.token == solo.token
    solo.release()

    r1 = table.acquire("lib", 30, shared=True, label="r1", keep_alive=False)
    r2 = table.acquire("lib", 10, shared=True, label="r2", keep_alive=False)
    info = table.get("lib")
    assert (info.kind, info.state, info.token) == (LeaseKind.SHARED, LeaseState.HELD, r2.token)
    assert info.holder is None, "no exclusive holder"
    assert info.remaining == pytest.approx(r1.remaining, abs=1.0)
    assert [(g.token, g.shared, g.holder.label) for g in info.grants] == [
        (r1.token, True, "r1"),
        (r2.token, True, "r2"),
    ]
    for g, ttl in zip(info.grants, (30, 10)):
        assert g.holder.pid == os.getpid() and ttl - 1 < g.remaining <= ttl
        assert g.acquired_at.tzinfo is not None and g.expires_at > g.acquired_at
    slots = {g.slot for g in info.grants}
    assert len(slots) == 2 and info.slot not in slots
    assert [i.name for i in table.list()].count("lib") == 1
    r1.release()
    r2.release()
    info = table.get("lib")
    assert info.grants == [] and info.state != LeaseState.HELD
    assert info.kind == LeaseKind.SHARED, "the name stays shared"
    # An exclusive grant of a name with permits or of an exclusive name is not shared.
    with table.lease("plain", 5) as p:
        assert [g.shared for g in table.get("plain").grants] == [False]
    with table.lease("pool", 5, permits=2):
        assert [g.shared for g in table.get("pool").grants] == [False]
    assert p.token > 0


def test_shared_with_permits_is_invalid_and_kinds_must_agree(table):
    for n in (2, 128):
        with pytest.raises(shmlease.InvalidOptions) as e:
            table.try_acquire("x", 1, shared=True, permits=n)
        assert "shared" in e.value.reason and isinstance(e.value, ValueError)
    assert table.get("x") is None, "a refused call leaves no trace"
    # permits=1 is an exclusive lease's count, so shared=True with it is fine.
    with table.lease("x", 1, shared=True, permits=1, wait=0):
        assert table.get("x").kind == LeaseKind.SHARED

    pool = table.acquire("pool", 30, permits=3)
    with pytest.raises(shmlease.WrongKind) as e:
        table.try_acquire("pool", 1, shared=True)
    assert e.value.name == "pool"
    assert (e.value.recorded, e.value.recorded_permits) == (LeaseKind.PERMITS, 3)
    assert (e.value.requested, e.value.requested_permits) == (LeaseKind.SHARED, 64)
    # A caller that would wait is told at once.
    with pytest.raises(shmlease.WrongKind):
        table.acquire("pool", 1, shared=True, wait=None)
    pool.release()

    reader = table.acquire("cat", 30, shared=True)
    with pytest.raises(shmlease.WrongKind) as e:
        table.acquire("cat", 1, permits=2, wait=None)
    assert (e.value.recorded, e.value.recorded_permits) == (LeaseKind.SHARED, 64)
    assert (e.value.requested, e.value.requested_permits) == (LeaseKind.PERMITS, 2)
    assert "shared" in str(e.value)
    # An election needs an exclusive name.
    with pytest.raises(shmlease.WrongKind):
        table.election("cat", ttl=1).campaign(wait=0)
    assert reader.valid
    reader.release()


READERS = 0.75  # the share of a herd's acquisitions that are shared
WORKERS = 6
ROUNDS = 30


def _rw_worker(table, index, start, lock, readers, writers, peak, broken, results):
    """Once every worker is ready, takes the name `ROUNDS` times, shared three times in
    four; inside, counts itself in `readers` or `writers` and, under `lock`, counts in
    `broken` every moment an exclusive holder had company."""
    grants = []
    start.wait(60)  # spawned workers start slowly: all of them contend, not one by one
    for i in range(ROUNDS):
        shared = (i * 7 + index) % 4 != 0
        with table.lease("rw", ttl=30, wait=60, shared=shared) as lease:
            with lock:
                if shared:
                    readers.value += 1
                    broken.value += writers.value != 0
                    peak.value = max(peak.value, readers.value)
                else:
                    writers.value += 1
                    broken.value += writers.value != 1 or readers.value != 0
            grants.append((lease.token, shared))
            time.sleep(0.003)
            with lock:
                if shared:
                    broken.value += writers.value != 0
                    readers.value -= 1
                else:
                    broken.value += writers.value != 1 or readers.value != 0
                    writers.value -= 1
    results.put(grants)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_herd_of_readers_and_writers_never_shares_with_a_writer(table, method):
    ctx = multiprocessing.get_context(method)
    lock = ctx.Lock()
    readers, writers, peak, broken = (ctx.RawValue("i", 0) for _ in range(4))
    start = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_rw_worker,
            args=(table, i, start, lock, readers, writers, peak, broken, results),
        )
        for i in range(WORKERS)
    ]
    per_worker = run_workers(workers, results, timeout=180)
    assert broken.value == 0, f"an exclusive holder had company {broken.value} times"
    # Six workers started together, reading 3 ms at a time: readers overlap.
    assert peak.value >= 2, "shared holders never held at once"
    grants = [g for gs in per_worker for g in gs]
    assert len(grants) == WORKERS * ROUNDS
    assert sum(not shared for _, shared in grants) >= WORKERS * ROUNDS // 5
    tokens = [t for t, _ in grants]
    assert len(set(tokens)) == len(tokens), "a token was handed out twice"
    for gs in per_worker:
        assert [t for t, _ in gs] == sorted(t for t, _ in gs), "a later grant, a smaller token"
    info = table.get("rw")
    assert info.grants == [] and info.kind == LeaseKind.SHARED


def test_asyncio_shared_leases(table):
    async def main():
        async with ticking() as ticks:
            async with table.lease_async("aio", ttl=10, shared=True) as a:
                b = await table.lease_async("aio", ttl=10, shared=True, wait=0)
                assert [g.shared for g in table.get("aio").grants] == [True, True]
                with pytest.raises(shmlease.Held):
                    await table.lease_async("aio", ttl=10, wait=0)
                with pytest.raises(shmlease.WrongKind):
                    await table.lease_async("aio", ttl=10, wait=5, permits=3)
                with pytest.raises(shmlease.InvalidOptions):
                    await table.lease_async("aio", ttl=10, shared=True, permits=2)
                # A writer waits for both readers (the loop runs meanwhile); while it waits,
                # a new reader is refused.
                writer = asyncio.create_task(table.lease_async("aio", ttl=10, wait=30).acquire())
                while not any(not g.shared for g in table.get("aio").grants):
                    await asyncio.sleep(0.01)
                with pytest.raises(shmlease.Held):
                    await table.lease_async("aio", ttl=10, shared=True, wait=0)
                await asyncio.sleep(0.3)
                assert not writer.done()
                b.release()
                await asyncio.sleep(0.2)
                assert not writer.done(), "the writer was granted the name beside a reader"
            w = await asyncio.wait_for(writer, 30)
            assert w.token > b.token > a.token
            # A reader waits for the writer.
            reader = asyncio.create_task(
                table.lease_async("aio", ttl=10, wait=30, shared=True).acquire()
            )
            await asyncio.sleep(0.2)
            assert not reader.done()
            w.release()
            c = await asyncio.wait_for(reader, 30)
            assert c.token > w.token
            assert [(g.token, g.shared) for g in table.get("aio").grants] == [(c.token, True)]
            c.release()
        return len(ticks)

    ticks = asyncio.run(main())
    assert ticks >= 50  # 0.7 s of waiting at 10 ms a tick: the loop never blocked
    assert table.get("aio").grants == []
