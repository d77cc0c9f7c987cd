"""shmlease — named, time-bound, exclusive leases for the processes of one host.

A lease table lives in shared memory (a POSIX shared-memory segment or a file). A
process takes a lease on a name for a TTL, renews it while it works (in the background,
by default) and releases it. If the holder dies or hangs, the lease expires and any
other process takes it over — at once when the holder is provably dead. Every grant
carries a fencing token that only ever grows for its name.

    import shmlease

    table = shmlease.Table()  # $SHMLEASE_TABLE, else the per-user default table
    with table.lease("db-migration", ttl=30) as lease:  # renewed in the background
        migrate(fencing_token=lease.token)

Permits: ``table.lease(name, ttl, permits=N)`` lets up to N holders have the name at
once, each with a grant (and fencing token) of its own.

Readers and writers: ``table.lease(name, ttl, shared=True)`` is one of up to 64 shared
holders; ``table.lease(name, ttl)`` of the same name is its one exclusive holder, which
waits for the shared holders to leave and keeps new ones out meanwhile.

Fair acquisition: ``table.lease(name, ttl, fair=True)`` (of any kind of name) waits in
line: among acquirers that ask for fairness, the one that started waiting first is
served first; ``table.get(name).queue`` shows who waits.

Leader election: ``table.election(name)`` — ``campaign()`` for a ``Leadership``
whose ``term`` is its fencing token, ``leader()``, ``observe()``, and ``run(lead)``.

Python, the ``shmlease`` CLI, C and Rust programs see the same leases in the same table.
"""

from __future__ import annotations

from ._errors import (
    AlreadyExists,
    BoundToProcess,
    Busy,
    Corrupt,
    Error,
    Held,
    Incompatible,
    InUse,
    InvalidLabel,
    InvalidName,
    InvalidOptions,
    InvalidTtl,
    IoError,
    Lost,
    NotATable,
    NotFound,
    PermissionDenied,
    TableFull,
    Timeout,
    Unavailable,
    Unsupported,
    WrongKind,
)
from ._types import (
    Change,
    Counters,
    DetachedLease,
    GrantInfo,
    Holder,
    Leader,
    LeaseInfo,
    LeaseKind,
    LeaseState,
    LostReason,
    Notice,
    QueuedInfo,
    StopReason,
    Stopped,
    TableInfo,
)
from ._shmlease import Election, Lease, Leadership, Leading, Observer, Stopper, Table
from ._aio import Campaign, LeaseAcquisition

__version__ = "0.1.0"

__all__ = [
    "Table",
    "Lease",
    "LeaseAcquisition",
    "DetachedLease",
    "LeaseInfo",
    "LeaseKind",
    "GrantInfo",
    "QueuedInfo",
    "LeaseState",
    "LostReason",
    "Holder",
    "TableInfo",
    "Counters",
    "Election",
    "Leadership",
    "Leader",
    "Observer",
    "Change",
    "Notice",
    "Leading",
    "Stopper",
    "StopReason",
    "Stopped",
    "Campaign",
    "Error",
    "Held",
    "Lost",
    "BoundToProcess",
    "InUse",
    "Timeout",
    "WrongKind",
    "TableFull",
    "InvalidName",
    "InvalidTtl",
    "InvalidLabel",
    "InvalidOptions",
    "NotATable",
    "Incompatible",
    "Corrupt",
    "PermissionDenied",
    "AlreadyExists",
    "NotFound",
    "Unsupported",
    "Busy",
    "Unavailable",
    "IoError",
]
