"""asyncio for shmlease: acquisition, campaigns, loss notices and observed changes
that never block the event loop.

A wait runs in a thread of its own (the first attempt does not: an uncontended lease
is granted on the loop's thread in about a microsecond). Cancelling the awaiting task
sets the thread's cancel event, which the native wait checks every 50 ms, so the
thread ends within that; a lease granted in the meantime is released, not leaked, and
a fair wait (``fair=True``) gives up its place in line.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from typing import Any, Callable, Optional

from . import _errors
from ._shmlease import Election, Lease, Leadership, Observer, Table

__all__ = ["LeaseAcquisition", "Campaign", "wait_lost_async", "wait_notice_async", "next_change_async"]

# The waits still running (cancel event -> thread), ended at interpreter exit so that
# their threads are gone before the interpreter is: a daemon thread that comes back to
# Python during finalization is stopped in the middle of native code.
_running: "weakref.WeakKeyDictionary[threading.Event, threading.Thread]" = weakref.WeakKeyDictionary()


@atexit.register
def _stop_waits() -> None:
    waits = list(_running.items())
    for event, _ in waits:
        event.set()
    for _, thread in waits:
        thread.join(1.0)  # each wait checks its event every 50 ms


async def _in_thread(call: Callable[[threading.Event], Any], abandon: Callable[[Any], None]) -> Any:
    """Runs ``call(cancel)`` in a new thread and awaits its result. If the awaiting
    task is cancelled, sets ``cancel`` and hands a result that still arrives to
    ``abandon``."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    cancel = threading.Event()

    def deliver(ok: bool, value: Any) -> None:
        if future.cancelled():
            if ok:
                abandon(value)
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            value, ok = call(cancel), True
        except BaseException as e:  # delivered to the awaiting task
            value, ok = e, False
        try:
            loop.call_soon_threadsafe(deliver, ok, value)
        except RuntimeError:  # the loop is closed: nobody awaits any more
            if ok:
                abandon(value)

    thread = threading.Thread(target=run, name="shmlease-async-wait", daemon=True)
    _running[cancel] = thread
    thread.start()
    try:
        return await future
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        _running.pop(cancel, None)


def _release_quietly(lease: Optional[Lease]) -> None:
    if lease is not None:
        try:
            lease.release()
        except _errors.Error:
            pass


class LeaseAcquisition:
    """What ``table.lease_async(...)`` returns: ``async with`` it (the lease is
    released at the end of the block) or ``await`` it (for the :class:`Lease`)."""

    def __init__(
        self,
        table: Table,
        name: str,
        ttl: Any = None,
        wait: Any = None,
        label: Optional[str] = None,
        keep_alive: bool = True,
        permits: int = 1,
        shared: bool = False,
        fair: bool = False,
    ) -> None:
        self._table = table
        self._name = name
        self._ttl = ttl
        self._wait = wait
        self._label = label
        self._keep_alive = keep_alive
        self._permits = permits
        self._shared = shared
        self._fair = fair
        self._lease: Optional[Lease] = None

    async def acquire(self) -> Lease:
        """Takes the lease, waiting as ``wait`` says without blocking the loop."""
        t, name, ttl = self._table, self._name, self._ttl
        kw = {
            "label": self._label,
            "keep_alive": self._keep_alive,
            "permits": self._permits,
            "shared": self._shared,
            "fair": self._fair,
        }
        try:
            return t.acquire(name, ttl, wait=0, **kw)
        except _errors.Held:
            if self._wait == 0:
                raise

        def call(cancel: threading.Event) -> Optional[Lease]:
            return t.acquire(name, ttl, wait=self._wait, cancel=cancel, **kw)

        lease: Optional[Lease] = await _in_thread(call, _release_quietly)
        if lease is None:  # cancelled at interpreter exit
            raise asyncio.CancelledError()
        return lease

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.acquire().__await__()

    async def __aenter__(self) -> Lease:
        self._lease = await self.acquire()
        return self._lease

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        lease, self._lease = self._lease, None
        if lease is not None:
            return bool(lease.__exit__(exc_type, exc, tb))
        return False

    def __repr__(self) -> str:
        return f"<shmlease.LeaseAcquisition {self._name!r} in {self._table!r}>"


async def wait_lost_async(lease: Any, timeout: Any = None) -> Any:
    """``await lease.wait_lost_async(timeout)``: see ``Lease.wait_lost`` (and
    ``Leadership.wait_lost``)."""
    return await _in_thread(lambda cancel: lease.wait_lost(timeout, cancel=cancel), lambda _: None)


async def wait_notice_async(leadership: Leadership, timeout: Any = None) -> Any:
    """``await leadership.wait_notice_async(timeout)``: see ``Leadership.wait_notice``."""
    return await _in_thread(lambda cancel: leadership.wait_notice(timeout, cancel=cancel), lambda _: None)


async def next_change_async(observer: Observer, timeout: Any = None) -> Any:
    """``await observer.next_change_async(timeout)``: see ``Observer.next_change``. A
    change that arrives as the awaiting task is cancelled is kept for the next call,
    so cancelling loses none."""

    def keep(change: Any) -> None:
        if change is not None:
            observer._unread(change)

    return await _in_thread(lambda cancel: observer.next_change(timeout, cancel=cancel), keep)


def _resign_quietly(leadership: Optional[Leadership]) -> None:
    if leadership is not None:
        try:
            leadership.resign()
        except _errors.Error:
            pass


class Campaign:
    """What ``election.campaign_async(...)`` returns: ``async with`` it (leadership is
    resigned at the end of the block) or ``await`` it (for the :class:`Leadership`)."""

    def __init__(self, election: Election, wait: Any = None) -> None:
        self._election = election
        self._wait = wait
        self._leadership: Optional[Leadership] = None

    async def campaign(self) -> Leadership:
        """Campaigns, waiting as ``wait`` says without blocking the loop."""
        election = self._election
        try:
            return election.campaign(0)  # nobody leads: elected on the loop's thread
        except _errors.Held:
            if self._wait == 0:
                raise

        def call(cancel: threading.Event) -> Optional[Leadership]:
            return election.campaign(self._wait, cancel=cancel)

        leadership: Optional[Leadership] = await _in_thread(call, _resign_quietly)
        if leadership is None:  # cancelled at interpreter exit
            raise asyncio.CancelledError()
        return leadership

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.campaign().__await__()

    async def __aenter__(self) -> Leadership:
        self._leadership = await self.campaign()
        return self._leadership

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        leadership, self._leadership = self._leadership, None
        if leadership is not None:
            return bool(leadership.__exit__(exc_type, exc, tb))
        return False

    def __repr__(self) -> str:
        return f"<shmlease.Campaign for {self._election!r}>"
