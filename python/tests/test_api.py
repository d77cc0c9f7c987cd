"""The whole API in one process: tables, leases, by-token calls, inspection."""

from __future__ import annotations

import datetime
import gc
import os
import pickle
import threading
import time
from pathlib import Path

import pytest

import shmlease
from shmlease import LeaseState, LostReason


def test_table_locations_and_repr(location, tmp_path, shm_name, monkeypatch):
    t = shmlease.Table(location, capacity=32)
    assert t.location == location and t.capacity == 32
    assert repr(t) == f'shmlease.Table("{location}", capacity=32)'
    # An os.PathLike is always a path, even without a slash.
    monkeypatch.chdir(tmp_path)
    rel = shmlease.Table(Path("relative-table"), capacity=8)
    assert rel.location == "relative-table" and (tmp_path / "relative-table").is_file()
    shmlease.Table.remove(Path("relative-table"))
    # A bare name and shm:NAME are the same segment.
    a = shmlease.Table(shm_name, capacity=8)
    b = shmlease.Table(f"shm:{shm_name}", create=False)
    assert a.location == b.location == f"shm:{shm_name}"
    assert Path("/dev/shm", shm_name).exists()
    with a.lease("x", 5) as lease:
        assert b.get("x").token == lease.token
    shmlease.Table.remove(location)
    with pytest.raises(TypeError):
        shmlease.Table(42)


DEFAULT_TABLE = """
    import shmlease
    try:
        print(shmlease.Table().location)
    except (shmlease.Incompatible, shmlease.Corrupt, shmlease.NotATable, shmlease.PermissionDenied) as e:
        print(e.location)  # a table is there, but this version cannot use it: still the one
"""


def test_default_table_is_shmlease_table_else_per_user(children, location):
    # In a child, so that this process's environment stays as it is.
    r = children.run(DEFAULT_TABLE, env={"SHMLEASE_TABLE": location})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == location and os.path.exists(location)
    shmlease.Table.remove(location)
    # Unset: the per-user segment, created on first use. It may be in use by others
    # on this machine (or left by another version): removed afterwards only if this
    # test created it.
    default = f"/dev/shm/shmlease-{os.geteuid()}"
    existed = os.path.exists(default)
    r = children.run(DEFAULT_TABLE, env={"SHMLEASE_TABLE": ""})
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"shm:shmlease-{os.geteuid()}" and os.path.exists(default)
    finally:
        if not existed and os.path.exists(default):
            shmlease.Table.remove(f"shm:shmlease-{os.geteuid()}")


def test_create_and_open_only(location):
    t = shmlease.Table.create(location, capacity=16)
    assert t.capacity == 16
    with pytest.raises(shmlease.AlreadyExists) as e:
        shmlease.Table.create(location)
    assert isinstance(e.value, FileExistsError) and e.value.location == location
    shmlease.Table.remove(location)
    with pytest.raises(shmlease.NotFound) as e:
        shmlease.Table(location, create=False)
    assert isinstance(e.value, FileNotFoundError)


def test_lease_as_context_manager(table):
    before = time.monotonic()
    with table.lease("job", ttl=5, label="worker") as lease:
        assert isinstance(lease, shmlease.Lease)
        assert lease.name == "job" and lease.table is table and lease.ttl == 5.0
        assert lease.valid and lease.lost is None and lease.keep_alive
        assert 4.0 < lease.remaining <= 5.0
        assert before + 4.0 < lease.deadline <= time.monotonic() + 5.0
        info = table.get("job")
        assert info.state == LeaseState.HELD and info.token == lease.token
        assert info.holder.pid == os.getpid() and info.holder.label == "worker"
        assert not info.holder.detached
        assert "valid" in repr(lease) and '"job"' in repr(lease)
    assert not lease.valid and lease.remaining == 0.0 and lease.lost is None
    assert "released" in repr(lease)
    assert table.get("job").state == LeaseState.FREE


def test_tokens_grow_and_exclusivity(table):
    tokens = []
    for _ in range(5):
        lease = table.try_acquire("n", 1)
        with pytest.raises(shmlease.Held):
            table.try_acquire("n", 1)
        tokens.append(lease.token)
        lease.release()
    assert tokens == sorted(tokens) and len(set(tokens)) == 5


def test_durations_as_timedelta_and_numbers(table):
    with table.lease("td", ttl=datetime.timedelta(seconds=3, microseconds=500_000)) as lease:
        assert 3.0 < lease.remaining <= 3.5
        lease.renew(datetime.timedelta(minutes=2))
        assert 100 < lease.remaining <= 120
        lease.renew(7)
        assert 6 < lease.remaining <= 7
        lease.renew()  # back to its own TTL
        assert 3.0 < lease.remaining <= 3.5
        for bad in (-1, float("nan"), float("inf"), datetime.timedelta(seconds=-1)):
            with pytest.raises(ValueError):
                lease.renew(bad)
        with pytest.raises(TypeError):
            lease.renew("10s")
    with pytest.raises(ValueError):
        table.acquire("td", 1, wait=-1)


def test_wait_zero_never_waits_and_wait_none_waits(table):
    holder = table.acquire("w", 10)
    start = time.monotonic()
    with pytest.raises(shmlease.Held):
        table.acquire("w", 1, wait=0)
    assert time.monotonic() - start < 5  # did not wait for the 10 s lease
    threading.Timer(0.2, holder.release).start()
    lease = table.acquire("w", 1, wait=None)  # forever: until the release
    assert lease.valid and lease.token > holder.token
    lease.release()


def test_timeout(table):
    holder = table.acquire("t", 30)
    with pytest.raises(shmlease.Timeout) as e:
        table.acquire("t", 1, wait=0.3)
    assert isinstance(e.value, TimeoutError)
    assert e.value.waited >= 0.3 and e.value.token == holder.token
    assert e.value.holder.pid == os.getpid()
    holder.release()


def test_release_twice_and_after_loss(table):
    lease = table.acquire("r", 10)
    lease.release()
    with pytest.raises(shmlease.Lost) as e:
        lease.release()
    assert e.value.reason == LostReason.RELEASED
    with pytest.raises(shmlease.Lost):
        lease.renew()


def test_garbage_collected_lease_is_released(table):
    lease = table.acquire("gc", 30)
    token = lease.token
    del lease
    assert table.get("gc").state == LeaseState.FREE
    # Also from inside a reference cycle, once the collector runs.
    class Worker:
        pass

    w = Worker()
    w.self = w
    w.lease = table.acquire("gc", 30)
    assert w.lease.token > token
    del w
    gc.collect()
    assert table.try_acquire("gc", 1).valid


def test_keep_alive_renews_and_without_it_the_lease_expires(table):
    kept = table.acquire("kept", 0.3)
    plain = table.acquire("plain", 0.3, keep_alive=False)
    time.sleep(1.0)
    assert kept.valid and kept.lost is None
    assert not plain.valid and plain.lost == LostReason.EXPIRED
    assert table.try_acquire("plain", 1).token > plain.token
    with pytest.raises(shmlease.Held):
        table.try_acquire("kept", 1)
    kept.release()


def test_revocation_is_noticed_by_wait_lost(table):
    lease = table.acquire("rv", 30)
    assert lease.wait_lost(0.1) is None  # times out: still held
    threading.Timer(0.2, table.revoke, args=("rv",)).start()
    assert lease.wait_lost(10) == LostReason.REVOKED
    assert lease.lost == LostReason.REVOKED and not lease.valid
    # Without keep-alive too.
    plain = table.acquire("rv", 30, keep_alive=False)
    threading.Timer(0.2, table.revoke, args=("rv", plain.token)).start()
    assert plain.wait_lost(10) == LostReason.REVOKED


def test_takeover_is_reported(table):
    lease = table.acquire("to", 0.2, keep_alive=False)
    time.sleep(0.3)
    other = table.acquire("to", 10)
    assert lease.lost == LostReason.TAKEN_OVER
    assert lease.wait_lost(1) == LostReason.TAKEN_OVER
    other.release()


def test_wait_lost_returns_when_released_by_another_thread(table):
    for keep_alive in (True, False):
        lease = table.acquire("wl", 30, keep_alive=keep_alive)
        result = []
        t = threading.Thread(target=lambda: result.append(lease.wait_lost()))
        t.start()
        time.sleep(0.2)
        lease.release()
        t.join(10)
        assert not t.is_alive() and result == [None]
        assert table.get("wl").state == LeaseState.FREE


def test_wait_lost_cancel_event(table):
    lease = table.acquire("wc", 30)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    assert lease.wait_lost(None, cancel=cancel) is None
    assert lease.valid
    lease.release()


def test_acquire_cancel_event(table):
    holder = table.acquire("ac", 30)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    assert table.acquire("ac", 1, cancel=cancel) is None
    assert table.get("ac").token == holder.token
    holder.release()


def test_exit_raises_lost_when_the_block_lost_its_lease(table):
    with pytest.raises(shmlease.Lost) as e:
        with table.lease("ex", 30) as lease:
            table.revoke("ex")
    assert e.value.reason == LostReason.REVOKED and e.value.token == lease.token
    # An exception of the block is not replaced.
    with pytest.raises(KeyError):
        with table.lease("ex", 30):
            table.revoke("ex")
            raise KeyError("mine")
    # Released inside the block: nothing more to do at its end.
    with table.lease("ex", 30) as lease:
        lease.release()


def test_detached_lease_by_token(table):
    lease = table.acquire("d", 5)
    d = lease.detach()
    assert isinstance(d, shmlease.DetachedLease)
    assert d.name == "d" and d.token == lease.token
    assert 4 < d.deadline - time.monotonic() <= 5
    assert not lease.valid  # no longer this object's
    with pytest.raises(shmlease.Lost):
        lease.release()
    info = table.get("d")
    assert info.state == LeaseState.HELD and info.holder.detached
    del lease
    gc.collect()
    assert table.get("d").state == LeaseState.HELD  # not released by the drop
    deadline = table.renew("d", d.token, 60)
    assert 59 < deadline - time.monotonic() <= 60
    table.release("d", d.token)
    with pytest.raises(shmlease.Lost) as e:
        table.release("d", d.token)
    assert e.value.reason == LostReason.RELEASED
    with pytest.raises(shmlease.Lost) as e:
        table.renew("d", d.token + 10**12, 1)
    assert e.value.reason == LostReason.NOT_ISSUED and e.value.latest == d.token
    with pytest.raises(shmlease.Lost) as e:
        table.release("never-granted", 1)
    assert e.value.reason == LostReason.NO_SUCH_NAME


def test_revoke(table):
    assert table.revoke("nobody") is None
    lease = table.acquire("v", 30)
    assert table.revoke("v") == lease.token
    assert table.get("v").state == LeaseState.REVOKED
    lease2 = table.acquire("v", 30)
    with pytest.raises(shmlease.Lost) as e:
        table.revoke("v", lease.token)
    assert e.value.reason == LostReason.TAKEN_OVER
    assert table.revoke("v", lease2.token) == lease2.token


def test_get_list_info(table):
    assert table.get("none") is None and table.list() == []
    with table.lease("a", 5), table.lease("b", 5, label="lbl"):
        names = {i.name: i for i in table.list()}
        assert set(names) == {"a", "b"}
        b = names["b"]
        assert b.holder.label == "lbl" and b.transitions == 1 and 0 <= b.slot < 64
        assert b.acquired_at.tzinfo is datetime.timezone.utc
        assert b.expires_at > b.acquired_at and 4 < b.remaining <= 5
        info = table.info()
        assert isinstance(info, shmlease.TableInfo)
        assert info.capacity == 64 and info.names == 2 and info.held == 2
        assert info.location == table.location and info.clock == "CLOCK_MONOTONIC"
        assert info.creator_pid == os.getpid() and info.counters.grants >= 2
        assert "TableInfo(" in repr(info)


def test_table_pickles_as_its_location_and_leases_do_not(table):
    again = pickle.loads(pickle.dumps(table))
    assert again.location == table.location
    with table.lease("p", 5) as lease:
        assert again.get("p").token == lease.token
        with pytest.raises(TypeError):
            pickle.dumps(lease)


def test_exceptions_pickle(table):
    holder = table.acquire("pk", 30)
    with pytest.raises(shmlease.Held) as e:
        table.try_acquire("pk")
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is shmlease.Held and str(again) == str(e.value)
    assert again.token == holder.token and again.holder == e.value.holder
    holder.release()


def test_gil_is_released_while_waiting(table):
    holder = table.acquire("gil", 30)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.01)

    t = threading.Thread(target=tick)
    t.start()
    try:
        with pytest.raises(shmlease.Timeout):
            table.acquire("gil", 1, wait=0.5)
        with_wait = len(ticks)
        holder.wait_lost(0.5)
    finally:
        stop.set()
        t.join()
    # The ticker ran during both waits (it would not run at all with the GIL held).
    assert with_wait >= 10 and len(ticks) - with_wait >= 10
    holder.release()


def test_keeper_keeps_many_leases_and_forgets_released_ones(table):
    # ttl/3 above 30 ms: the keeper starts each keep-alive when its first renewal is
    # due; below, the keep-alive starts at once.
    leases = [table.acquire(f"k{i}", 0.2 + 0.05 * i) for i in range(5)]
    short = table.acquire("short", 0.05)
    early = leases.pop(2)
    early.release()
    time.sleep(0.8)
    assert all(l.valid for l in leases) and short.valid
    assert table.get("k2").state == LeaseState.FREE
    for l in leases:
        l.release()
    short.release()
    assert "released" in repr(short)


def test_repr_of_a_lost_lease(table):
    lease = table.acquire("lost-repr", 30)
    table.revoke("lost-repr")
    assert repr(lease) == f'<shmlease.Lease "lost-repr" token={lease.token} lost>'


def test_request_release(table, children):
    assert table.request_release("rr") is None
    lease = table.acquire("rr", 30)
    assert not lease.release_requested
    # From another process, as a scheduler asking an agent to hand over would.
    r = children.run(
        "import sys, shmlease; print(shmlease.Table(sys.argv[1], create=False).request_release('rr'))",
        table.location,
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == lease.token and lease.release_requested
    assert lease.valid  # asking changes nothing about who holds it
    with pytest.raises(shmlease.Lost):
        table.request_release("rr", lease.token + 1)
    lease.release()
    assert not lease.release_requested and table.request_release("rr") is None


def test_threads_of_one_process_contend_exclusively(table):
    # The GIL is released while waiting, so threads really wait on the lease, not on
    # the interpreter; each grant excludes the others and tokens grow.
    inside = 0
    guard = threading.Lock()
    grants = []
    errors = []

    def worker():
        nonlocal inside
        try:
            for _ in range(30):
                with table.lease("threads", ttl=10, wait=30) as lease:
                    with guard:
                        inside += 1
                        grants.append((lease.token, inside))
                    time.sleep(0.0005)
                    with guard:
                        inside -= 1
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    assert len(grants) == 180 and all(n == 1 for _, n in grants), "two threads held it at once"
    tokens = [t for t, _ in grants]
    assert tokens == sorted(tokens) and len(set(tokens)) == 180
