"""Type stubs of the native module (re-exported by ``shmlease``)."""

import datetime
import os
import threading
from typing import Callable, Iterator, Optional, TypeVar, Union

from ._aio import Campaign, LeaseAcquisition
from ._types import Change, DetachedLease, Leader, LeaseInfo, LostReason, Notice, StopReason, Stopped, TableInfo

_R = TypeVar("_R")

#: Seconds (int or float) or a timedelta.
Duration = Union[int, float, datetime.timedelta]
#: A table location: a str read as the CLI reads ``-t`` (``etcd://…``/``etcds://…``: a
#: table on an etcd cluster, in a build with the etcd backend; ``shm:NAME`` or a bare
#: name: a shared-memory segment; else with ``/`` in it: a path), or an
#: ``os.PathLike`` (a path).
Location = Union[str, "os.PathLike[str]"]

#: The longest a blocking call waits before running signal handlers, in seconds.
SLICE_SECONDS: float
#: Whether this build has the etcd backend (takes ``etcd://`` locations).
ETCD: bool

class Table:
    """A lease table shared by every process that opens it. ``Table()`` is the default
    table: ``$SHMLEASE_TABLE``, else the per-user segment the CLI uses too, created on
    first use."""

    def __new__(
        cls,
        location: Optional[Location] = None,
        *,
        capacity: int = 4096,
        mode: int = 0o600,
        create: bool = True,
        allow_foreign_owner: bool = False,
        allow_world_writable: bool = False,
    ) -> "Table": ...
    @staticmethod
    def create(
        location: Location, *, capacity: int = 4096, mode: int = 0o600, allow_world_writable: bool = False
    ) -> "Table":
        """Creates a new table; raises ``AlreadyExists`` if anything is there."""
    @staticmethod
    def remove(location: Optional[Location] = None, *, force: bool = False) -> None:
        """Removes a table; ``InUse`` while grants in it are live, unless ``force``."""
    @property
    def location(self) -> str:
        """A path, ``shm:NAME`` or an etcd location as written: ``Table(table.location)``
        opens the same table."""
    @property
    def capacity(self) -> int:
        """Number of slots."""
    def acquire(
        self,
        name: str,
        ttl: Optional[Duration] = None,
        *,
        wait: Optional[Duration] = None,
        label: Optional[str] = None,
        keep_alive: bool = True,
        cancel: Optional[threading.Event] = None,
        permits: int = 1,
        shared: bool = False,
        fair: bool = False,
    ) -> "Lease":
        """Takes the lease (``ttl`` default 10 s), waiting up to ``wait`` (``None``:
        forever, ``0``: never). ``Held``/``Timeout`` when it stays held. Returns
        ``None`` only if ``cancel`` was set. ``permits=N``: one of up to ``N`` holders
        at once, each with its own grant; ``WrongKind`` if the name is in use with
        another ``N``. ``shared=True``: one of up to 64 shared holders; without it, a
        shared name's exclusive holder, which waits for the shared holders to leave
        and keeps new ones out meanwhile. ``permits`` is 1 to 128. ``fair=True``:
        served in arrival order among fair acquirers, waiting in the name's queue
        (``get(name).queue``); Ctrl-C or ``cancel`` end a fair wait within 50 ms, and
        its place in line with it."""
    def lease(
        self,
        name: str,
        ttl: Optional[Duration] = None,
        *,
        wait: Optional[Duration] = None,
        label: Optional[str] = None,
        keep_alive: bool = True,
        cancel: Optional[threading.Event] = None,
        permits: int = 1,
        shared: bool = False,
        fair: bool = False,
    ) -> "Lease":
        """``acquire()``, named for ``with table.lease(name) as lease:``."""
    def try_acquire(
        self,
        name: str,
        ttl: Optional[Duration] = None,
        *,
        label: Optional[str] = None,
        keep_alive: bool = True,
        permits: int = 1,
        shared: bool = False,
        fair: bool = False,
    ) -> "Lease":
        """Takes the lease if nobody holds it (fewer than ``permits`` do; with
        ``shared``, no exclusive holder; with ``fair``, nobody waits in line); raises
        ``Held`` otherwise."""
    def lease_async(
        self,
        name: str,
        ttl: Optional[Duration] = None,
        *,
        wait: Optional[Duration] = None,
        label: Optional[str] = None,
        keep_alive: bool = True,
        permits: int = 1,
        shared: bool = False,
        fair: bool = False,
    ) -> LeaseAcquisition:
        """``async with table.lease_async(name) as lease:`` or ``await``."""
    def renew(self, name: str, token: int, ttl: Duration) -> float:
        """Renews a detached lease by token; returns its deadline (``time.monotonic()``)."""
    def release(self, name: str, token: int) -> None:
        """Releases a detached lease by token."""
    def revoke(self, name: str, token: Optional[int] = None) -> Optional[int]:
        """Revokes the grant of ``name`` (every grant of a name with permits or a
        shared name; only ``token``'s, if given); returns its token (the newest)."""
    def request_release(self, name: str, token: Optional[int] = None) -> Optional[int]:
        """Asks the holder of ``name`` (each holder, with permits or shared; only
        ``token``'s, if given) to release it (cooperative); returns its token (the
        newest)."""
    def election(self, name: str, *, ttl: Optional[Duration] = None, label: Optional[str] = None) -> "Election":
        """The election on ``name`` (``ttl`` default 10 s: how long a frozen leader
        blocks the others; a dead one is replaced at once)."""
    def get(self, name: str) -> Optional[LeaseInfo]:
        """The lease on ``name``, if the table knows the name (live grants in
        ``grants``, fair waiters in ``queue``)."""
    def list(self) -> list[LeaseInfo]:
        """Every name the table knows (a name with permits, or shared, once)."""
    def info(self) -> TableInfo:
        """Facts and counters about the table."""

class Lease:
    """A lease held by this process (with permits, or shared: one grant of the name);
    a context manager that releases it."""

    @property
    def token(self) -> int:
        """The fencing token."""
    @property
    def name(self) -> str: ...
    @property
    def table(self) -> Table: ...
    @property
    def ttl(self) -> float:
        """The TTL it was taken with, in seconds."""
    @property
    def valid(self) -> bool:
        """Whether this grant is still the live one."""
    @property
    def remaining(self) -> float:
        """Seconds left unless renewed (0.0 once not valid)."""
    @property
    def deadline(self) -> float:
        """When it expires unless renewed, on the clock of ``time.monotonic()``."""
    @property
    def keep_alive(self) -> bool: ...
    @property
    def release_requested(self) -> bool:
        """Whether someone asked the holder to release it while it is held."""
    @property
    def lost(self) -> Optional[LostReason]:
        """``None`` while valid (or released, or in a forked child); else why it was lost."""
    def renew(self, ttl: Optional[Duration] = None) -> None:
        """Extends it to ``ttl`` (default: its own TTL) from now; ``Lost`` if gone."""
    def release(self) -> None:
        """Releases it; ``Lost`` if it was already gone."""
    def detach(self) -> DetachedLease:
        """Turns it loose from this process: renew or release it by name and token."""
    def wait_lost(
        self, timeout: Optional[Duration] = None, *, cancel: Optional[threading.Event] = None
    ) -> Optional[LostReason]:
        """Blocks until it is lost (why), or ``None`` on timeout, release or cancel."""
    async def wait_lost_async(self, timeout: Optional[Duration] = None) -> Optional[LostReason]:
        """``wait_lost`` without blocking the event loop."""
    def __enter__(self) -> "Lease": ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

class Election:
    """An election on one lease name: candidates campaign, the winner leads a term."""

    @property
    def name(self) -> str: ...
    @property
    def table(self) -> Table: ...
    @property
    def ttl(self) -> float:
        """How long a leadership lasts unless renewed, in seconds."""
    @property
    def label(self) -> Optional[str]: ...
    def campaign(
        self, wait: Optional[Duration] = None, *, cancel: Optional[threading.Event] = None
    ) -> "Leadership":
        """Campaigns until elected, up to ``wait`` (``None``: forever, ``0``: ``Held`` if
        someone leads); ``Timeout`` when it runs out. ``None`` only if ``cancel`` was set."""
    def campaign_async(self, wait: Optional[Duration] = None) -> Campaign:
        """``async with election.campaign_async() as leadership:`` or ``await``."""
    def leader(self) -> Optional[Leader]:
        """Who leads now, or ``None``."""
    def observe(self) -> "Observer":
        """A stream of leadership changes, starting with the current state."""
    def run(
        self,
        lead: Callable[["Leading"], _R],
        *,
        stop_margin: Optional[Duration] = None,
        campaign_wait: Optional[Duration] = None,
        on_new_leader: Optional[Callable[[Leader], object]] = None,
        on_stopped: Optional[Callable[[Stopped], object]] = None,
        stopper: Optional["Stopper"] = None,
    ) -> Optional[_R]:
        """Campaigns, runs ``lead`` while leading, resigns; ``None`` if stopped before elected."""

class Leadership:
    """Leadership of an election held by this process; a context manager that resigns."""

    @property
    def term(self) -> int:
        """The term: the grant's fencing token."""
    @property
    def election(self) -> Election: ...
    @property
    def since(self) -> datetime.datetime:
        """When the term began (UTC)."""
    @property
    def ttl(self) -> float: ...
    @property
    def is_leader(self) -> bool:
        """Whether it still leads (``False`` from the instant another could be elected)."""
    @property
    def remaining(self) -> float:
        """Seconds left unless renewed (0.0 once over)."""
    @property
    def lost(self) -> Optional[LostReason]:
        """``None`` while leading (or resigned, or in a forked child); else why it was lost."""
    @property
    def release_requested(self) -> bool:
        """Whether someone asked this leader to hand over."""
    def wait_lost(
        self, timeout: Optional[Duration] = None, *, cancel: Optional[threading.Event] = None
    ) -> Optional[LostReason]:
        """Blocks until lost (why), or ``None`` on timeout, resignation or cancel."""
    def wait_notice(
        self, timeout: Optional[Duration] = None, *, cancel: Optional[threading.Event] = None
    ) -> Optional[Notice]:
        """Blocks until lost or asked to hand over, or ``None`` as ``wait_lost``."""
    async def wait_lost_async(self, timeout: Optional[Duration] = None) -> Optional[LostReason]:
        """``wait_lost`` without blocking the event loop."""
    async def wait_notice_async(self, timeout: Optional[Duration] = None) -> Optional[Notice]:
        """``wait_notice`` without blocking the event loop."""
    def resign(self) -> None:
        """Resigns, waking the next candidate at once; ``Lost`` if already lost or resigned."""
    def __enter__(self) -> "Leadership": ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

class Observer:
    """A stream of an election's leadership changes; iterating waits without limit."""

    @property
    def election(self) -> Election: ...
    def next_change(
        self, timeout: Optional[Duration] = None, *, cancel: Optional[threading.Event] = None
    ) -> Optional[Change]:
        """The next change, or ``None`` once ``timeout`` passes or ``cancel`` is set."""
    async def next_change_async(self, timeout: Optional[Duration] = None) -> Optional[Change]:
        """``next_change`` without blocking the event loop."""
    def _unread(self, change: Change) -> None: ...
    def __iter__(self) -> Iterator[Change]: ...
    def __next__(self) -> Change: ...

class Leading:
    """What ``lead`` sees in ``election.run(lead)``: its term, and whether to stop."""

    @property
    def term(self) -> int: ...
    @property
    def is_leader(self) -> bool: ...
    @property
    def remaining(self) -> float: ...
    @property
    def lost(self) -> Optional[LostReason]:
        """Why leadership was lost, once ``should_stop()`` said ``LOST``."""
    def should_stop(self) -> Optional[StopReason]:
        """Whether to stop, and why; ``None``: keep leading."""
    def wait_stop(self, timeout: Optional[Duration] = None) -> Optional[StopReason]:
        """Blocks until ``lead`` should stop (why), or ``None`` after ``timeout``."""

class Stopper:
    """Stops an ``election.run`` from any thread or a signal handler."""

    def __new__(cls) -> "Stopper": ...
    def stop(self) -> None:
        """Asks the run to stop."""
    @property
    def stopped(self) -> bool: ...

def _restore_table(kind: str, value: str, allow_foreign_owner: bool, allow_world_writable: bool) -> Table: ...
def _bench_rust_fast_path(table: Table, name: str, iterations: int) -> float: ...
