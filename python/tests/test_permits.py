"""Names with permits (``permits=N``): N holders at once and never more, each grant with
its own token; what the table shows of them; real processes (a multiprocessing herd
with fork and spawn, kill -9 of a holder) and asyncio."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

import pytest

import shmlease
from shmlease import LeaseKind, LeaseState, LostReason

from conftest import in_forked_child, read_line, run_workers, ticking

HOLD = """
import sys, time, shmlease
t = shmlease.Table(sys.argv[1], create=False)
lease = t.acquire(sys.argv[2], ttl=60, permits=int(sys.argv[3]), label="child")
print(lease.token, flush=True)
time.sleep(600)
"""


def test_two_permits_admit_two_processes_and_refuse_a_third(table, children):
    holders = [children.start(HOLD, table.location, "pool", "2") for _ in range(2)]
    tokens = [int(read_line(h)) for h in holders]
    assert tokens[0] != tokens[1]
    with pytest.raises(shmlease.Held) as e:
        table.try_acquire("pool", 5, permits=2)
    # Held names a live grant of one of the two holders.
    assert e.value.token in tokens and e.value.holder.pid in {h.pid for h in holders}
    assert 0 < e.value.remaining <= 60
    with pytest.raises(shmlease.Timeout) as e:
        table.acquire("pool", 5, wait=0.2, permits=2)
    assert e.value.token in tokens
    # One holder ends: its permit is free for the next, whose token is larger than both.
    holders[0].kill()
    holders[0].wait(30)
    with table.lease("pool", 5, wait=30, permits=2) as lease:
        assert lease.token > max(tokens)
        with pytest.raises(shmlease.Held):
            table.try_acquire("pool", 5, permits=2)


def test_each_permit_is_a_lease_of_its_own(table):
    a = table.acquire("p", 30, permits=2, keep_alive=False)
    b = table.acquire("p", 0.2, permits=2, keep_alive=False)
    assert a.token < b.token
    # b expires on its own deadline; a is unaffected, and renews and releases alone.
    b_lost = b.wait_lost(30)
    assert b_lost == LostReason.EXPIRED and not b.valid
    assert a.valid and a.lost is None
    a.renew(60)
    assert a.remaining > 59
    with pytest.raises(shmlease.Lost):
        b.renew()
    c = table.try_acquire("p", 30, permits=2)
    assert c.token > b.token
    a.release()
    assert c.valid and [g.token for g in table.get("p").grants] == [c.token]
    # Requests and revocations reach one grant by token; revoking the name, every grant
    # (the newest token returned).
    d = table.try_acquire("p", 30, permits=2)
    assert table.request_release("p", d.token) == d.token
    assert d.release_requested and not c.release_requested
    assert table.revoke("p", c.token) == c.token
    assert c.wait_lost(30) == LostReason.REVOKED and d.valid
    e = table.try_acquire("p", 30, permits=2)
    assert table.revoke("p") == e.token
    assert d.wait_lost(30) == LostReason.REVOKED and e.wait_lost(30) == LostReason.REVOKED
    assert table.get("p").grants == []


def test_info_shows_the_kind_and_each_grant(table):
    with table.lease("solo", 30) as solo:
        info = table.get("solo")
        assert (info.kind, info.permits) == (LeaseKind.EXCLUSIVE, 1)
        [g] = info.grants
        assert isinstance(g, shmlease.GrantInfo)
        assert (g.token, g.holder, g.slot) == (solo.token, info.holder, info.slot)
        assert g.expires_at == info.expires_at and 29 < g.remaining <= 30
    assert table.get("solo").grants == []

    a = table.acquire("gpu", 30, permits=3, label="a", keep_alive=False)
    b = table.acquire("gpu", 10, permits=3, label="b", keep_alive=False)
    info = table.get("gpu")
    assert (info.kind, info.permits, info.state) == (LeaseKind.PERMITS, 3, LeaseState.HELD)
    assert str(info.kind) == "permits"
    # The name as a whole: the latest token, no single holder, the longest time left.
    assert info.token == b.token and info.holder is None
    assert info.remaining == pytest.approx(a.remaining, abs=1.0)
    assert [g.token for g in info.grants] == [a.token, b.token]
    for g, label, ttl in zip(info.grants, ("a", "b"), (30, 10)):
        assert g.holder.pid == os.getpid() and g.holder.label == label
        assert g.acquired_at.tzinfo is not None and g.renewed_at is not None
        assert g.expires_at > g.acquired_at
        assert ttl - 1 < g.remaining <= ttl
    # Each grant has a slot of its own, none of them the name's.
    slots = {g.slot for g in info.grants}
    assert len(slots) == 2 and info.slot not in slots
    # A name with permits is listed once.
    assert [i.name for i in table.list()].count("gpu") == 1
    b.release()
    assert [g.token for g in table.get("gpu").grants] == [a.token]
    a.release()
    info = table.get("gpu")
    assert info.grants == [] and info.state == LeaseState.FREE
    assert (info.kind, info.permits) == (LeaseKind.PERMITS, 3), "the name keeps its N"


def test_permit_counts_out_of_range_are_invalid_options(table):
    for n in (0, 129, 255, 256, -1, 2**40):
        with pytest.raises(shmlease.InvalidOptions) as e:
            table.try_acquire("n", 1, permits=n)
        assert str(n) in e.value.reason
        assert isinstance(e.value, ValueError)
    assert table.get("n") is None


def _child_reads_a_permit(lease, conn):
    report = {"valid": lease.valid, "remaining": lease.remaining}
    try:
        lease.release()
        report["release"] = "done"
    except shmlease.BoundToProcess as e:
        report["release"] = ("bound", e.holder.pid if e.holder else None)
    conn.send(report)


def test_forked_child_sees_its_parents_permit_by_its_own_token(table):
    # The first of two permits: not the name's latest token, so the child finds its
    # grant by token among the name's grants.
    first = table.acquire("fk", 30, permits=2)
    second = table.acquire("fk", 30, permits=2)
    report, _ = in_forked_child(_child_reads_a_permit, first)
    assert report["valid"] and 29 < report["remaining"] <= 30
    assert report["release"] == ("bound", os.getpid())
    assert first.valid and second.valid
    first.release()
    second.release()


PERMITS = 3
WORKERS = 6
ROUNDS = 25


def _herd_worker(table, start, inside, peak, rounds, results):
    """Once every worker is ready, takes a permit `rounds` times; inside, counts itself
    in `inside` and records the most holders ever seen at once in `peak`."""
    tokens = []
    start.wait(60)  # spawned workers start slowly: all of them contend, not one by one
    for _ in range(rounds):
        with table.lease("herd", ttl=30, wait=60, permits=PERMITS) as lease:
            with inside.get_lock():
                inside.value += 1
                if inside.value > peak.value:
                    peak.value = inside.value
            tokens.append(lease.token)
            time.sleep(0.002)
            with inside.get_lock():
                inside.value -= 1
    results.put(tokens)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_herd_of_processes_never_exceeds_n_holders(table, method):
    ctx = multiprocessing.get_context(method)
    inside = ctx.Value("i", 0)
    peak = ctx.Value("i", 0)
    start = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_herd_worker, args=(table, start, inside, peak, ROUNDS, results))
        for _ in range(WORKERS)
    ]
    per_worker = run_workers(workers, results, timeout=120)
    assert peak.value <= PERMITS, f"{peak.value} holders at once"
    # Six workers started together, holding 2 ms each: several hold at once (permits
    # are not a mutex).
    assert peak.value >= 2
    tokens = [t for ts in per_worker for t in ts]
    assert len(tokens) == WORKERS * ROUNDS
    assert len(set(tokens)) == len(tokens), "a token was handed out twice"
    for ts in per_worker:
        assert ts == sorted(ts), "a worker's later grant has a smaller token"
    info = table.get("herd")
    assert info.grants == [] and info.permits == PERMITS


TAKER = """
import sys, shmlease
t = shmlease.Table(sys.argv[1], create=False)
lease = t.try_acquire("pool", 5, permits=2)
print(lease.token, t.info().counters.dead_holder_reclaims, flush=True)
lease.release()
"""


def test_kill_9_of_a_permit_holder_is_reclaimed_at_once_by_another_process(table, children):
    mine = table.acquire("pool", 60, permits=2)
    holder = children.start(HOLD, table.location, "pool", "2")
    dead_token = int(read_line(holder))
    assert holder.pid in {g.holder.pid for g in table.get("pool").grants}
    with pytest.raises(shmlease.Held):
        table.try_acquire("pool", 5, permits=2)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    # Not waiting at all: the dead holder's permit (60 s left) is taken at once.
    r = children.run(TAKER, table.location, timeout=60)
    assert r.returncode == 0, r.stderr
    token, dead_reclaims = map(int, r.stdout.split())
    assert token > dead_token and dead_reclaims >= 1
    assert mine.valid


def test_asyncio_leases_with_permits(table):
    async def main():
        async with ticking() as ticks, table.lease_async("aio", ttl=10, permits=2) as a:
            b = await table.lease_async("aio", ttl=10, permits=2)
            with pytest.raises(shmlease.Held):
                await table.lease_async("aio", ttl=10, wait=0, permits=2)
            with pytest.raises(shmlease.WrongKind):
                await table.lease_async("aio", ttl=10, wait=5, permits=3)
            # A third waits (the loop runs meanwhile) until a permit frees.
            third = asyncio.create_task(table.lease_async("aio", ttl=10, wait=30, permits=2).acquire())
            await asyncio.sleep(0.3)
            assert not third.done()
            b.release()
            c = await asyncio.wait_for(third, 30)
            assert c.token > b.token > a.token
            assert sorted(g.token for g in table.get("aio").grants) == [a.token, c.token]
            c.release()
        return len(ticks)

    ticks = asyncio.run(main())
    assert ticks >= 20  # 0.3 s of waiting at 10 ms a tick: the loop never blocked
    assert table.get("aio").grants == []
