"""Attacks on interruptible waits: signals whose handlers raise (or not) during waits of
every kind, from the main thread and beside non-main waiters; cancel objects that
raise; signals racing the grant; asyncio cancellation of every kind; threads sharing a
table with their own cancels; fork while another thread waits."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time

import pytest

import shmlease
from conftest import read_line

pytestmark = pytest.mark.timeout(120)

TTL = 30


class Boom(Exception):
    pass


@pytest.fixture
def raising_usr1():
    """SIGUSR1 raises Boom (in the main thread) while the test runs."""
    def handler(signum, frame):
        raise Boom()

    old = signal.signal(signal.SIGUSR1, handler)
    yield
    signal.signal(signal.SIGUSR1, old)


def block(t, name, kind):
    """Holders of `name` that leave no room for an acquisition of `kind`, and the
    acquisition's keyword arguments."""
    if kind == "permits":
        return [t.acquire(name, TTL, wait=0, permits=2) for _ in range(2)], {"permits": 2}
    if kind in ("shared", "shared-fair"):
        t.acquire(name, TTL, wait=0, shared=True).release()
        kw = {"shared": True, "fair": kind == "shared-fair"}
        return [t.acquire(name, TTL, wait=0)], kw
    if kind == "exclusive-of-shared":
        return [t.acquire(name, TTL, wait=0, shared=True)], {}
    if kind == "fair":
        return [t.acquire(name, TTL, wait=0)], {"fair": True}
    return [t.acquire(name, TTL, wait=0)], {}


KINDS = ["exclusive", "permits", "shared", "exclusive-of-shared", "fair", "shared-fair"]


def kill_soon(sig, after, times=1, every=0.05):
    def go():
        time.sleep(after)
        for _ in range(times):
            os.kill(os.getpid(), sig)
            time.sleep(every)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th


def wait_for(what, done, timeout=30.0):
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.005)


def assert_left_alone(t, name, holders):
    info = t.get(name)
    assert list(info.queue) == [], info.queue
    assert len(info.grants) == len(holders), info.grants
    assert all(h.valid for h in holders)


@pytest.mark.parametrize("kind", KINDS)
def test_a_raising_handler_ends_a_main_thread_wait_of_every_kind(table, raising_usr1, kind):
    holders, kw = block(table, "n", kind)
    th = kill_soon(signal.SIGUSR1, 0.2)
    with pytest.raises(Boom):
        table.acquire("n", TTL, wait=None, **kw)
    th.join()
    assert_left_alone(table, "n", holders)


@pytest.mark.parametrize("kind", KINDS)
def test_a_handler_that_does_not_raise_lets_the_wait_go_on(table, kind):
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        holders, kw = block(table, "n", kind)
        th = kill_soon(signal.SIGUSR1, 0.05, times=6)

        def release_later():
            th.join()
            time.sleep(0.1)
            for h in holders:
                h.release()

        rel = threading.Thread(target=release_later)
        rel.start()
        lease = table.acquire("n", TTL, wait=20, **kw)
        rel.join()
        assert lease is not None and lease.valid
        assert len(seen) == 6
        lease.release()
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("kind", ["fair", "shared", "permits", "exclusive-of-shared"])
def test_a_non_main_wait_is_ended_by_its_cancel_not_by_signals(table, raising_usr1, kind):
    holders, kw = block(table, "n", kind)
    cancel = threading.Event()
    out = []

    def waiter():
        try:
            out.append(("ok", table.acquire("n", TTL, wait=None, cancel=cancel, **kw)))
        except BaseException as e:  # noqa: BLE001
            out.append(("err", e))

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.1)
    # Signals whose handler raises: in the main thread, never in the waiter's.
    booms = 0
    for _ in range(5):
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
        except Boom:
            booms += 1
    assert booms == 5
    assert th.is_alive(), out
    if kind == "fair":
        assert len(table.get("n").queue) == 1
    cancel.set()
    th.join(10)
    assert not th.is_alive()
    assert out == [("ok", None)], out
    assert_left_alone(table, "n", holders)


class BadCancel:
    def __init__(self, after):
        self.calls = 0
        self.after = after

    def is_set(self):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("is_set exploded")
        return False


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancel_whose_is_set_raises_ends_the_wait_with_its_exception(table, kind):
    holders, kw = block(table, "n", kind)
    cancel = BadCancel(3)
    with pytest.raises(RuntimeError, match="is_set exploded"):
        table.acquire("n", TTL, wait=None, cancel=cancel, **kw)
    assert cancel.calls == 4
    assert_left_alone(table, "n", holders)


@pytest.mark.parametrize("kind", ["exclusive", "fair"])
def test_a_signal_racing_the_grant_leaks_no_lease(table, raising_usr1, kind):
    """A holder thread takes and gives back the name again and again; the main thread
    waits for it while SIGUSR1 (raising) arrives at random moments, some as the lease is
    granted. Whatever happens, no grant outlives the objects that hold it."""
    fair = kind == "fair"
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            try:
                lease = table.acquire("n", TTL, wait=1, fair=fair)
            except shmlease.Timeout:
                continue
            if lease is not None:
                time.sleep(random.uniform(0, 0.003))
                lease.release()

    holder = threading.Thread(target=churn)
    holder.start()
    rng = random.Random(7)
    got = booms = 0
    try:
        for _ in range(150):
            timer = threading.Timer(rng.uniform(0, 0.004), os.kill, (os.getpid(), signal.SIGUSR1))
            try:
                timer.start()
                lease = table.acquire("n", TTL, wait=None, fair=fair)
                lease.release()
                got += 1
                timer.join()
            except Boom:
                booms += 1
            finally:
                timer.cancel()
                # A late signal lands here at the latest.
                try:
                    timer.join()
                    time.sleep(0.001)
                except Boom:
                    booms += 1
    finally:
        stop.set()
        holder.join(30)
    assert got > 0 and booms > 0, (got, booms)
    import gc

    gc.collect()
    info = table.get("n")
    assert info.state != "held" or not info.grants, info
    assert list(info.queue) == [], info.queue


ASYNC_KINDS = ["exclusive", "permits", "shared", "exclusive-of-shared", "fair", "shared-fair"]


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_cancelling_lease_async_of_every_kind_leaves_nothing(table, kind):
    holders, kw = block(table, "n", kind)

    async def main():
        task = asyncio.ensure_future(table.lease_async("n", TTL, wait=None, **kw).acquire())
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The wait's thread ends within 50 ms of the cancel.
    wait_for("the wait let go", lambda: not list(table.get("n").queue))
    time.sleep(0.2)
    assert_left_alone(table, "n", holders)
    for h in holders:
        h.release()
    lease = table.acquire("n", TTL, wait=5, **kw)
    assert lease is not None
    lease.release()


def test_threads_sharing_a_table_each_with_its_own_cancel(table):
    holder = table.acquire("q", TTL, wait=0)
    n = 6
    cancels = [threading.Event() for _ in range(n)]
    served, results = [], [None] * n
    lock = threading.Lock()

    def waiter(i):
        lease = table.acquire("q", TTL, wait=60, cancel=cancels[i], fair=True)
        results[i] = lease is not None
        if lease is not None:
            with lock:
                served.append(i)
            time.sleep(0.01)
            lease.release()

    threads = []
    for i in range(n):
        th = threading.Thread(target=waiter, args=(i,))
        th.start()
        threads.append(th)
        wait_for("in line", lambda: len(table.get("q").queue) == i + 1)
    gone = [4, 1, 2]
    for i in gone:
        cancels[i].set()
        time.sleep(0.03)
    wait_for("three left", lambda: len(table.get("q").queue) == n - len(gone))
    holder.release()
    for th in threads:
        th.join(30)
    assert [results[i] for i in gone] == [False] * len(gone)
    assert served == [i for i in range(n) if i not in gone]
    assert list(table.get("q").queue) == []


def _child_fair(t, name, conn):
    try:
        t.acquire(name, TTL, wait=0.3, fair=True)
        conn.send("granted?")
    except shmlease.Timeout:
        # The queue still works in the child: a name of its own too.
        lease = t.acquire("child-own", TTL, wait=5, fair=True)
        conn.send("timeout" if lease is not None else "none")
        lease.release()
    except BaseException as e:  # noqa: BLE001
        conn.send(repr(e))


def test_fork_while_another_thread_waits(table):
    from conftest import in_forked_child

    holder = table.acquire("x", TTL, wait=0)
    out = []

    def waiter():
        out.append(table.acquire("x", TTL, wait=60, fair=True))

    th = threading.Thread(target=waiter)
    th.start()
    wait_for("in line", lambda: len(table.get("x").queue) == 1)
    for _ in range(3):
        report, code = in_forked_child(_child_fair, table, "x")
        assert (report, code) == ("timeout", 0)
    # The parent's waiter kept its place, and is served.
    assert len(table.get("x").queue) == 1
    holder.release()
    th.join(30)
    assert out and out[0] is not None and out[0].valid
    out[0].release()
    assert list(table.get("x").queue) == []


CTRL_C = """
import sys, signal, shmlease
signal.signal(signal.SIGINT, signal.default_int_handler)
t = shmlease.Table(sys.argv[1], create=False)
kw = {"fair": True} if sys.argv[2] == "fair" else {"shared": True}
print("waiting", flush=True)
try:
    t.acquire("held", ttl=1, wait=None, **kw)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("returned", flush=True)
"""


@pytest.mark.parametrize("kind", ["fair", "shared"])
def test_ctrl_c_in_a_child_ends_its_wait_and_its_place(table, children, kind):
    if kind == "shared":
        table.acquire("held", TTL, wait=0, shared=True).release()
    holder = table.acquire("held", TTL, wait=0)
    child = children.start(CTRL_C, table.location, kind)
    assert read_line(child) == "waiting"
    if kind == "fair":
        wait_for("in line", lambda: len(table.get("held").queue) == 1)
    time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 3, (out, err)
    assert list(table.get("held").queue) == []
    assert holder.valid


def test_a_long_signal_handler_does_not_cost_a_writer_its_hold(table):
    """The exclusive acquirer of a shared name (ttl 0.3 s) whose signal handler runs for
    0.8 s during its wait: shared acquirers stay out for the whole wait."""
    reader = table.acquire("db", TTL, wait=0, shared=True)
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        if len(calls) == 1:
            time.sleep(0.8)
        else:
            raise Boom()

    old = signal.signal(signal.SIGUSR1, handler)
    stop = threading.Event()
    got_in = []

    def readers():
        # Until the writer holds the name, shared grants come: count from then on.
        while not stop.is_set():
            try:
                table.acquire("db", TTL, wait=0, shared=True).release()
            except shmlease.Held:
                break
            time.sleep(0.005)
        while not stop.is_set():
            try:
                table.acquire("db", TTL, wait=0, shared=True).release()
                got_in.append(time.monotonic())
            except shmlease.Held:
                pass
            time.sleep(0.02)

    def signals():
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(1.5)
        os.kill(os.getpid(), signal.SIGUSR1)

    th = threading.Thread(target=readers)
    sig = threading.Thread(target=signals, daemon=True)
    try:
        sig.start()
        time.sleep(0.1)
        th.start()
        with pytest.raises(Boom):
            table.acquire("db", 0.3, wait=None)
    finally:
        stop.set()
        th.join(10)
        signal.signal(signal.SIGUSR1, old)
    assert reader.valid
    assert got_in == [], f"{len(got_in)} shared grants while the writer waited"


def test_a_long_signal_handler_does_not_cost_a_fair_waiter_its_place(table):
    holder = table.acquire("p", TTL, wait=0)
    order = []
    started = threading.Event()

    def handler(signum, frame):
        started.set()
        time.sleep(2.8)  # longer than a place lives (2 s)

    old = signal.signal(signal.SIGUSR1, handler)

    def fair_thread(tag, hold):
        lease = table.acquire("p", TTL, wait=60, fair=True)
        order.append(tag)
        time.sleep(hold)
        lease.release()

    first = threading.Thread(target=fair_thread, args=("first", 0.1))
    third = threading.Thread(target=fair_thread, args=("third", 0))
    try:
        first.start()
        wait_for("first in line", lambda: len(table.get("p").queue) == 1)

        def later():
            wait_for("main in line", lambda: len(table.get("p").queue) == 2)
            third.start()
            wait_for("third in line", lambda: len(table.get("p").queue) == 3)
            os.kill(os.getpid(), signal.SIGUSR1)
            started.wait(10)
            holder.release()

        helper = threading.Thread(target=later)
        helper.start()
        lease = table.acquire("p", TTL, wait=60, fair=True)
        order.append("second")
        lease.release()
        helper.join(30)
        first.join(30)
        third.join(30)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert order == ["first", "second", "third"]


def test_a_waiting_writer_is_served_before_shared_acquirers_that_wait_too(table):
    """One wait holds the name for the writer across its 50 ms wake-ups: shared
    acquirers that wait meanwhile do not get in at one of them, and are served after
    it."""
    reader = table.acquire("db", TTL, wait=0, shared=True)
    order = []
    lock = threading.Lock()

    def take(tag, **kw):
        lease = table.acquire("db", TTL, wait=30, **kw)
        with lock:
            order.append((tag, lease.token))
        time.sleep(0.05)
        lease.release()

    writer = threading.Thread(target=take, args=("writer",))
    writer.start()
    wait_for("the writer holds the name", lambda: _shared_refused(table))
    readers = [threading.Thread(target=take, args=(f"r{i}",), kwargs={"shared": True}) for i in range(3)]
    for r in readers:
        r.start()
    time.sleep(0.5)  # ten of the writer's wake-ups, with shared acquirers waiting
    assert order == []
    reader.release()
    writer.join(30)
    for r in readers:
        r.join(30)
    assert order[0][0] == "writer", order
    assert len(order) == 4


def _shared_refused(table):
    try:
        table.acquire("db", TTL, wait=0, shared=True).release()
        return False
    except shmlease.Held:
        return True
