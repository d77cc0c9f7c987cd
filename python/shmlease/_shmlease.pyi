"""Type stubs of the native module (re-exported by ``shmlease``)."""

import datetime
import os
import threading
from typing import Optional, Union

from ._aio import LeaseAcquisition
from ._types import DetachedLease, LeaseInfo, LostReason, TableInfo

#: Seconds (int or float) or a timedelta.
Duration = Union[int, float, datetime.timedelta]
#: A table location: a str read as the CLI reads ``-t`` (``/`` in it: a path;
#: ``shm:NAME`` or a bare name: a shared-memory segment), or an ``os.PathLike`` (a path).
Location = Union[str, "os.PathLike[str]"]

#: The longest a blocking call waits before running signal handlers, in seconds.
SLICE_SECONDS: float

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
        """A path, or ``shm:NAME``: ``Table(table.location)`` opens the same table."""
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
    ) -> "Lease":
        """Takes the lease (``ttl`` default 10 s), waiting up to ``wait`` (``None``:
        forever, ``0``: never). ``Held``/``Timeout`` when it stays held. Returns
        ``None`` only if ``cancel`` was set."""
    def lease(
        self,
        name: str,
        ttl: Optional[Duration] = None,
        *,
        wait: Optional[Duration] = None,
        label: Optional[str] = None,
        keep_alive: bool = True,
        cancel: Optional[threading.Event] = None,
    ) -> "Lease":
        """``acquire()``, named for ``with table.lease(name) as lease:``."""
    def try_acquire(
        self, name: str, ttl: Optional[Duration] = None, *, label: Optional[str] = None, keep_alive: bool = True
    ) -> "Lease":
        """Takes the lease if nobody holds it; raises ``Held`` otherwise."""
    def lease_async(
        self,
        name: str,
        ttl: Optional[Duration] = None,
        *,
        wait: Optional[Duration] = None,
        label: Optional[str] = None,
        keep_alive: bool = True,
    ) -> LeaseAcquisition:
        """``async with table.lease_async(name) as lease:`` or ``await``."""
    def renew(self, name: str, token: int, ttl: Duration) -> float:
        """Renews a detached lease by token; returns its deadline (``time.monotonic()``)."""
    def release(self, name: str, token: int) -> None:
        """Releases a detached lease by token."""
    def revoke(self, name: str, token: Optional[int] = None) -> Optional[int]:
        """Revokes the grant of ``name`` (only ``token``'s, if given); returns its token."""
    def request_release(self, name: str, token: Optional[int] = None) -> Optional[int]:
        """Asks the holder of ``name`` to release it (cooperative); returns its token."""
    def get(self, name: str) -> Optional[LeaseInfo]:
        """The lease on ``name``, if the table knows the name."""
    def list(self) -> list[LeaseInfo]:
        """Every name the table knows."""
    def info(self) -> TableInfo:
        """Facts and counters about the table."""

class Lease:
    """A lease held by this process; a context manager that releases it."""

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

def _restore_table(kind: str, value: str, allow_foreign_owner: bool, allow_world_writable: bool) -> Table: ...
def _bench_rust_fast_path(table: Table, name: str, iterations: int) -> float: ...
