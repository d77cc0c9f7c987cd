"""The small values shmlease returns: what the table says about leases, holders and
itself. Plain frozen dataclasses, copied out of the shared table when read."""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "LostReason",
    "LeaseState",
    "LeaseKind",
    "Holder",
    "GrantInfo",
    "QueuedInfo",
    "LeaseInfo",
    "Counters",
    "TableInfo",
    "DetachedLease",
    "Leader",
    "Change",
    "Notice",
    "StopReason",
    "Stopped",
]


class LostReason(str, enum.Enum):
    """Why a grant is not (or no longer) the live one."""

    #: Its deadline passed without a renewal.
    EXPIRED = "expired"
    #: Somebody revoked it.
    REVOKED = "revoked"
    #: It was released (with its token, possibly by another process).
    RELEASED = "released"
    #: A later grant of the same name is current.
    TAKEN_OVER = "taken_over"
    #: The token was never issued for this name (``Lost.latest`` is the latest).
    NOT_ISSUED = "not_issued"
    #: The table has no lease of that name.
    NO_SUCH_NAME = "no_such_name"
    #: A reason this version of the package does not know.
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class LeaseState(str, enum.Enum):
    """The state of a name's lease when it was read."""

    #: Granted and unexpired.
    HELD = "held"
    #: Granted, never released, and past its deadline: anyone may take it.
    EXPIRED = "expired"
    #: Revoked: anyone may take it.
    REVOKED = "revoked"
    #: Released, or never granted: anyone may take it.
    FREE = "free"

    def __str__(self) -> str:
        return self.value


class LeaseKind(str, enum.Enum):
    """How many may hold a name at once, as recorded with the name at its first use
    (``LeaseInfo.permits`` and ``WrongKind.recorded_permits`` give the number): one,
    up to N (permits), or readers and writers (shared)."""

    #: One holder at a time (``permits=1``, the default).
    EXCLUSIVE = "exclusive"
    #: Up to N holders at once (``permits=N``, 2 ≤ N ≤ 128), each with a grant of its own.
    PERMITS = "permits"
    #: Up to 64 shared holders at once (``shared=True``), or one exclusive holder, never
    #: both; each holder with a grant of its own (``LeaseInfo.permits`` is 64).
    SHARED = "shared"
    #: A kind this version of the package does not know.
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lease."""

    #: Process id, in the holder's PID namespace.
    pid: int
    #: Inode number of the holder's PID namespace (0 if unknown).
    pid_namespace: int
    #: How the process is told apart from a later one reusing its pid:
    #: ``"pidfd-inode"``, ``"start-time"`` or ``"unknown"``.
    identity: str
    #: The pidfd inode or start time, when known.
    identity_value: Optional[int]
    #: A detached lease is bound to its TTL only: it outlives its process.
    detached: bool
    #: The label the holder attached (may be empty).
    label: str


@dataclass(frozen=True)
class GrantInfo:
    """One live grant of a name: the one holder of an exclusive lease, one of the
    holders of a name with permits, or a shared name's exclusive holder or one of its
    shared holders (``shared`` tells which)."""

    #: Its fencing token.
    token: int
    #: Who holds it, when recorded.
    holder: Optional[Holder]
    #: When it was made (UTC).
    acquired_at: Optional[_dt.datetime]
    #: When it was last made or renewed (UTC).
    renewed_at: Optional[_dt.datetime]
    #: When it expires unless renewed (UTC).
    expires_at: Optional[_dt.datetime]
    #: Seconds left.
    remaining: float
    #: Slot index of the grant in the table (for a name with permits, or a shared
    #: holder, a seat's slot).
    slot: int
    #: A shared grant (``shared=True``); ``False`` for an exclusive grant or a permit.
    shared: bool = False


@dataclass(frozen=True)
class QueuedInfo:
    """A fair acquirer (``fair=True``) waiting for a name: its place in the name's
    queue. Places are served in ticket order, whatever kind of grant each asks for."""

    #: Its ticket (from a counter of the whole table): the smaller, the sooner served.
    ticket: int
    #: Who waits, when recorded (``label`` is empty: a place carries no label).
    holder: Optional[Holder]
    #: When the place expires unless its waiter renews it (UTC). A waiter renews its
    #: place while it waits; one stopped for 2 s loses it, and is passed over.
    expires_at: Optional[_dt.datetime]
    #: Slot index of the place in the table.
    slot: int


@dataclass(frozen=True)
class LeaseInfo:
    """A copy of one name's lease.

    For a name with permits, the top-level fields describe the name as a whole:
    ``token`` is the latest token taken by any of its grants, ``state`` is ``HELD``
    while any grant is, ``holder`` is ``None``, ``remaining`` is the longest time left
    of any grant; each live grant, with its holder, is in ``grants``. For a shared
    name likewise (``token`` is the latest of either kind), except that ``holder`` is
    the exclusive holder's while there is one (else ``None``); ``grants`` shows each
    holder of either kind, ``GrantInfo.shared`` telling which.
    """

    #: The lease name.
    name: str
    #: Fencing token of the current (or last) grant; 0 if never granted.
    token: int
    #: State when read.
    state: LeaseState
    #: Holder of the current (or last) grant, when recorded.
    holder: Optional[Holder]
    #: When the current (or last) grant was made (UTC).
    acquired_at: Optional[_dt.datetime]
    #: When it was last granted or renewed (UTC).
    renewed_at: Optional[_dt.datetime]
    #: When it expires (or expired), for granted leases (UTC).
    expires_at: Optional[_dt.datetime]
    #: Seconds left (0.0 unless held).
    remaining: float
    #: Grants of this name since it was bound to its slot.
    transitions: int
    #: Slot index in the table.
    slot: int
    #: Exclusive, with permits, or shared.
    kind: LeaseKind
    #: How many grants may be live at once (1 for an exclusive lease; for a shared
    #: name, 64 shared ones).
    permits: int
    #: The live grants, oldest first (empty unless held).
    grants: list[GrantInfo]
    #: Fair acquirers waiting for the name (``fair=True``), first in line first.
    #: Acquirers that do not ask for fairness wait without a place, so are not shown.
    queue: list[QueuedInfo]


@dataclass(frozen=True)
class Counters:
    """Counters kept by a table (``renewals`` and ``releases`` are sampled estimates)."""

    grants: int
    expired_reclaims: int
    dead_holder_reclaims: int
    corrupt_reclaims: int
    renewals: int
    releases: int
    revocations: int
    contended: int
    binds: int
    unbinds: int


@dataclass(frozen=True)
class TableInfo:
    """Facts about a table."""

    #: Where it lives (``Table(location)`` opens it).
    location: str
    format_version: int
    #: Number of slots.
    capacity: int
    #: Slots bound to a name.
    names: int
    #: Slots whose lease is held right now.
    held: int
    size_bytes: int
    slot_size: int
    #: Boot id the table's clock belongs to.
    boot_id: str
    #: The clock deadlines are measured on.
    clock: str
    creator_pid: int
    creator_uid: int
    #: Creation time (UTC).
    created_at: _dt.datetime
    counters: Counters


@dataclass(frozen=True)
class DetachedLease:
    """A lease turned loose from its process (``Lease.detach()``): anyone with its
    name and token may renew or release it (``table.renew``, ``table.release``)."""

    #: The lease name.
    name: str
    #: The fencing token of the grant.
    token: int
    #: When it expires unless renewed, on the clock of ``time.monotonic()``.
    deadline: float


@dataclass(frozen=True)
class Leader:
    """Who leads an election (``election.leader()``, ``Change.leader``)."""

    #: The leader's term: its grant's fencing token.
    term: int
    #: The leading process, when recorded.
    holder: Optional[Holder]
    #: When its term began (UTC).
    since: Optional[_dt.datetime]
    #: When its term ends unless renewed (UTC).
    expires_at: Optional[_dt.datetime]
    #: Seconds left before that, when read.
    remaining: float

    @property
    def pid(self) -> Optional[int]:
        """The leader's process id (``None`` if not recorded)."""
        return self.holder.pid if self.holder else None

    @property
    def label(self) -> Optional[str]:
        """The leader's label (``None`` if not recorded; may be empty)."""
        return self.holder.label if self.holder else None


@dataclass(frozen=True)
class Change:
    """One change of leadership, as an ``Observer`` reports it."""

    #: The leader's term, or with no leader the last term granted (0: never).
    term: int
    #: The new leader, or ``None``: nobody leads (resigned, revoked, expired, died).
    leader: Optional[Leader]
    #: Terms that began and ended since the previous change reported, unseen: ``0``
    #: when none (always for the first change), ``None`` when unknown (the name was
    #: idle, gave its slot back and was bound again meanwhile). Counted modulo 65,536.
    skipped: Optional[int]


@dataclass(frozen=True)
class Notice:
    """What ``Leadership.wait_notice`` woke for: a loss, or a hand-over request."""

    #: Why leadership was lost; ``None``: a hand-over was requested (still leading).
    lost: Optional[LostReason]

    @property
    def release_requested(self) -> bool:
        """Whether someone asked the leader to hand over (it still leads)."""
        return self.lost is None


class StopReason(str, enum.Enum):
    """Why ``lead`` is told to stop (``Leading.should_stop()``, ``Stopped.reason``)."""

    #: Someone asked the leader to hand over (``table.request_release(name)``).
    REQUESTED = "requested"
    #: ``Stopper.stop()`` was called.
    STOPPED = "stopped"
    #: Less than the stop margin is left before the term's deadline: renewals are late
    #: (the process was frozen or starved), another candidate may be elected then.
    LATE = "late"
    #: Leadership is lost (``Leading.lost``, ``Stopped.lost`` say why): another
    #: candidate may lead now; only the term (fencing) protects what ``lead`` still does.
    LOST = "lost"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Stopped:
    """How a term of ``election.run`` ended, as ``on_stopped`` hears it."""

    #: The term that ended.
    term: int
    #: Why ``lead`` was told to stop (``None``: it returned on its own).
    reason: Optional[StopReason]
    #: With ``reason`` ``LOST``: why leadership was lost.
    lost: Optional[LostReason]
    #: Whether leadership was still held when ``lead`` returned, and was then resigned
    #: (the next candidate woken at once); ``False``: it was already lost.
    resigned: bool


def _utc(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
