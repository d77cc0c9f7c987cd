"""Every exception kind, raised by the situation it names, with its attributes."""

from __future__ import annotations

import fcntl
import os
import struct
import time

import pytest

import shmlease
from shmlease import LostReason


def test_hierarchy():
    kinds = [getattr(shmlease, n) for n in shmlease._errors.__all__]
    assert all(issubclass(k, shmlease.Error) for k in kinds)
    assert issubclass(shmlease.Timeout, TimeoutError)
    assert issubclass(shmlease.PermissionDenied, PermissionError)
    assert issubclass(shmlease.AlreadyExists, FileExistsError)
    assert issubclass(shmlease.NotFound, FileNotFoundError)
    assert issubclass(shmlease.IoError, OSError)
    for k in (shmlease.InvalidName, shmlease.InvalidTtl, shmlease.InvalidLabel, shmlease.InvalidOptions,
              shmlease.WrongKind):
        assert issubclass(k, ValueError)
    # Kinds that are not about the OS are not OSErrors (`except OSError` must not eat them).
    for k in (shmlease.Held, shmlease.Lost, shmlease.BoundToProcess, shmlease.Busy, shmlease.Corrupt):
        assert not issubclass(k, OSError)


def test_held(table):
    lease = table.acquire("h", 30, label="me")
    with pytest.raises(shmlease.Held) as e:
        table.try_acquire("h", 1)
    assert e.value.token == lease.token and 29 < e.value.remaining <= 30
    assert e.value.holder.pid == os.getpid() and e.value.holder.label == "me"
    assert "held by pid" in str(e.value)


def test_wrong_kind(table):
    from shmlease import LeaseKind

    pool = table.acquire("pool", 30, permits=3)
    for permits, kind in ((2, LeaseKind.PERMITS), (1, LeaseKind.EXCLUSIVE)):
        with pytest.raises(shmlease.WrongKind) as e:
            table.try_acquire("pool", 1, permits=permits)
        assert e.value.name == "pool"
        assert (e.value.recorded, e.value.recorded_permits) == (LeaseKind.PERMITS, 3)
        assert (e.value.requested, e.value.requested_permits) == (kind, permits)
    assert "permits = 3" in str(e.value) and '"pool"' in str(e.value)
    # A caller that would wait is told at once: waiting cannot make the kinds agree.
    with pytest.raises(shmlease.WrongKind):
        table.acquire("pool", 1, wait=None)
    pool.release()
    # A live exclusive lease is not turned into permits; once free, it may be.
    solo = table.acquire("solo", 30)
    with pytest.raises(shmlease.WrongKind) as e:
        table.try_acquire("solo", 1, permits=2)
    assert (e.value.recorded, e.value.recorded_permits) == (LeaseKind.EXCLUSIVE, 1)
    assert (e.value.requested, e.value.requested_permits) == (LeaseKind.PERMITS, 2)
    solo.release()
    with table.lease("solo", 1, permits=2, wait=0) as permit:
        assert permit.token > solo.token


@pytest.mark.parametrize(
    "situation, reason",
    [
        ("expired", LostReason.EXPIRED),
        ("revoked", LostReason.REVOKED),
        ("released", LostReason.RELEASED),
        ("taken_over", LostReason.TAKEN_OVER),
    ],
)
def test_lost(table, situation, reason):
    lease = table.acquire("l", 0.2 if situation in ("expired", "taken_over") else 30, keep_alive=False)
    token = lease.token
    d = None
    if situation in ("expired", "taken_over"):
        time.sleep(0.3)
    if situation == "taken_over":
        other = table.acquire("l", 30)
    if situation == "revoked":
        table.revoke("l")
    if situation == "released":
        d = lease.detach()
        table.release("l", d.token)
        with pytest.raises(shmlease.Lost) as e:
            table.renew("l", token, 1)
    else:
        with pytest.raises(shmlease.Lost) as e:
            lease.renew(1)
    assert e.value.token == token and e.value.reason == reason and e.value.latest is None


def test_bound_to_process(table, children):
    # A lease bound to a live process (this one) cannot be renewed by token elsewhere.
    lease = table.acquire("b", 30)
    r = children.run(
        """
        import sys, shmlease
        t = shmlease.Table(sys.argv[1], create=False)
        try:
            t.renew("b", int(sys.argv[2]), 5)
        except shmlease.BoundToProcess as e:
            print("bound", e.token, e.holder.pid)
        """,
        table.location,
        str(lease.token),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["bound", str(lease.token), str(os.getpid())]
    lease.release()


def test_in_use(table):
    lease = table.acquire("u", 30)
    with pytest.raises(shmlease.InUse) as e:
        shmlease.Table.remove(table.location)
    assert e.value.location == table.location
    assert [l.name for l in e.value.leases] == ["u"] and e.value.leases[0].token == lease.token
    lease.release()


def test_table_full(location):
    t = shmlease.Table(location, capacity=1)
    held = t.acquire("one", 30)
    with pytest.raises(shmlease.TableFull) as e:
        t.try_acquire("two", 1)
    assert e.value.capacity == 1
    held.release()
    shmlease.Table.remove(location)


@pytest.mark.parametrize("name", ["", "x" * 65, "nul\0byte"])
def test_invalid_name(table, name):
    with pytest.raises(shmlease.InvalidName) as e:
        table.try_acquire(name, 1)
    assert e.value.reason


@pytest.mark.parametrize("ttl", [0, 1e-7, 366 * 86400])
def test_invalid_ttl(table, ttl):
    with pytest.raises(shmlease.InvalidTtl) as e:
        table.try_acquire("t", ttl)
    assert e.value.ttl == pytest.approx(ttl)


def test_invalid_label(table):
    with pytest.raises(shmlease.InvalidLabel) as e:
        table.try_acquire("t", 1, label="nine-byte")
    assert "nine-byte" in e.value.reason


@pytest.mark.parametrize("options", [{"capacity": 0}, {"mode": 0o400}, {"mode": 0o666}])
def test_invalid_options(location, options):
    with pytest.raises(shmlease.InvalidOptions) as e:
        shmlease.Table(location, **options)
    assert e.value.reason
    with pytest.raises(shmlease.InvalidOptions):
        shmlease.Table("shm:..")


def test_not_a_table(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a lease table" * 100)
    with pytest.raises(shmlease.NotATable) as e:
        shmlease.Table(str(garbage))
    assert e.value.location == str(garbage) and "magic" in e.value.reason
    with pytest.raises(shmlease.NotATable):
        shmlease.Table.remove(str(garbage), force=True)
    assert garbage.exists()
    os.symlink(garbage, tmp_path / "link")
    with pytest.raises(shmlease.NotATable) as e:
        shmlease.Table(str(tmp_path / "link"))
    assert "symbolic link" in e.value.reason


def _patch(path: str, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<Q", value))


def test_incompatible(location):
    shmlease.Table(location, capacity=4)
    with open(location, "rb") as f:
        f.seek(8)
        (version_endian,) = struct.unpack("<Q", f.read(8))
    _patch(location, 8, (version_endian & ~0xFFFFFFFF) | 99)  # format version 99
    with pytest.raises(shmlease.Incompatible) as e:
        shmlease.Table(location)
    assert "version 99" in e.value.reason and e.value.location == location
    shmlease.Table.remove(location, force=True)


def test_corrupt(location):
    shmlease.Table(location, capacity=4)
    _patch(location, 24, 0)  # capacity 0
    with pytest.raises(shmlease.Corrupt) as e:
        shmlease.Table(location)
    assert "capacity" in e.value.reason
    shmlease.Table.remove(location, force=True)


def test_permission_denied(location):
    shmlease.Table(location, capacity=4)
    os.chmod(location, 0o666)  # world-writable: anyone could forge leases
    with pytest.raises(shmlease.PermissionDenied) as e:
        shmlease.Table(location)
    assert isinstance(e.value, PermissionError) and "world-writable" in e.value.reason
    assert shmlease.Table(location, allow_world_writable=True).capacity == 4
    if os.geteuid() == 0:
        os.chmod(location, 0o600)
        os.chown(location, 65534, 65534)  # owned by someone else
        with pytest.raises(shmlease.PermissionDenied) as e:
            shmlease.Table(location)
        assert "owned by uid 65534" in e.value.reason
    shmlease.Table.remove(location, force=True)


def test_already_exists_and_not_found(location):
    shmlease.Table.create(location, capacity=4)
    with pytest.raises(shmlease.AlreadyExists):
        shmlease.Table.create(location)
    shmlease.Table.remove(location)
    with pytest.raises(shmlease.NotFound):
        shmlease.Table.remove(location)
    with pytest.raises(shmlease.NotFound):
        shmlease.Table(location, create=False)


def test_busy_when_the_table_lock_is_held_too_long(table):
    # The table lock (an flock on the table file) guards binding new names; a holder
    # that keeps it for over 5 s (a stopped process) makes binders give up.
    with open(table.location, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(shmlease.Busy) as e:
            table.try_acquire("new-name", 1)
    assert e.value.location == table.location and "lock" in e.value.reason
    assert table.try_acquire("new-name", 1).valid


def test_io_error(tmp_path):
    with pytest.raises(shmlease.IoError) as e:
        shmlease.Table(str(tmp_path / ("x" * 300)))
    assert isinstance(e.value, OSError) and e.value.errno == 36  # ENAMETOOLONG
    assert e.value.context


def test_unsupported_and_base_error_exist():
    # Unsupported (no lock-free 128-bit CAS, an unknowable time namespace) cannot be
    # produced on a machine that runs these tests; its class is in place.
    assert issubclass(shmlease.Unsupported, shmlease.Error)
    assert shmlease.Unsupported("x").reason == ""
    # Unavailable comes only from an etcd table (a build with the etcd feature).
    assert issubclass(shmlease.Unavailable, shmlease.Error)
    assert issubclass(shmlease.Unavailable, ConnectionError)
    assert shmlease.Unavailable("x").location == ""
