"""The exceptions of shmlease: one class per kind of failure a caller can act on.

Every exception carries the details of its kind as attributes (``Held.holder``,
``Lost.reason``, ...). Catch :class:`Error` for all of them; :class:`Timeout` is also a
:class:`TimeoutError`, :class:`PermissionDenied` a :class:`PermissionError`, and the
invalid-argument kinds are :class:`ValueError`\\ s.
"""

from __future__ import annotations

__all__ = [
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


class Error(Exception):
    """Base class of every shmlease error. ``str(e)`` is one line meant for a human."""


class Held(Error):
    """The lease is held by someone else (try later, or wait with ``wait=``).

    Attributes: ``token`` (the current grant's), ``remaining`` (seconds until it
    expires unless renewed), ``holder`` (a :class:`~shmlease.Holder`, or ``None``).
    """

    token: int = 0
    remaining: float = 0.0
    holder: object = None


class Lost(Error):
    """The caller's grant is no longer valid: stop acting on its token.

    Attributes: ``token`` (the one presented), ``reason`` (a
    :class:`~shmlease.LostReason`), ``latest`` (for ``NOT_ISSUED``: the name's latest
    token, else ``None``).
    """

    token: int = 0
    reason: object = None
    latest: int | None = None


class BoundToProcess(Error):
    """The lease is bound to a live process, which alone may renew or release it
    (by-token calls are for detached leases; revoke it to take it away). Also what a
    forked child gets for changing a lease it inherited.

    Attributes: ``token``, ``holder``.
    """

    token: int = 0
    holder: object = None


class InUse(Error):
    """``Table.remove`` found live grants in the table (remove with ``force=True``
    only once nothing uses it).

    Attributes: ``location``, ``leases`` (a list of :class:`~shmlease.LeaseInfo`).
    """

    location: str = ""
    leases: list[object] = []


class Timeout(Error, TimeoutError):
    """The wait ran out and the lease stayed held.

    Attributes: ``waited`` (seconds), ``token`` (the grant that was still live),
    ``holder``.
    """

    waited: float = 0.0
    token: int = 0
    holder: object = None


class WrongKind(Error, ValueError):
    """The name is in use as another kind than the call asked for: exclusive, with
    another number of permits, or shared (a shared name has no permits, and a name
    with permits takes no shared holders; an exclusive acquisition of a shared name is
    no error: it waits for the shared holders). The kind is recorded with the name at
    its first use, so that users who disagree about ``permits`` are told, rather than
    admitting more holders than either intended: pass the recorded ``permits``, or use
    another name. An election on a name in use with permits or shared is refused too.

    Attributes: ``name``; ``recorded`` and ``requested`` (each a
    :class:`~shmlease.LeaseKind`: how the name is in use, and what the call asked for),
    with their numbers of permits in ``recorded_permits`` and ``requested_permits``
    (1 for an exclusive lease, 64 for a shared name).
    """

    name: str = ""
    recorded: object = None
    recorded_permits: int = 0
    requested: object = None
    requested_permits: int = 0


class TableFull(Error):
    """Every slot holds a live lease; no new name fits. Attribute: ``capacity``."""

    capacity: int = 0


class InvalidName(Error, ValueError):
    """A lease name that is empty, longer than 64 bytes or contains NUL.
    Attribute: ``reason``."""

    reason: str = ""


class InvalidTtl(Error, ValueError):
    """A TTL outside 1 µs ..= 365 days. Attribute: ``ttl`` (seconds)."""

    ttl: float = 0.0


class InvalidLabel(Error, ValueError):
    """A label longer than 8 bytes or containing NUL. Attribute: ``reason``."""

    reason: str = ""


class InvalidOptions(Error, ValueError):
    """Options or a location that cannot work: table options, a permit count out of
    range, ``shared=True`` with ``permits`` above 1. Attribute: ``reason``."""

    reason: str = ""


class NotATable(Error):
    """The location holds something that is not a lease table.
    Attributes: ``location``, ``reason``."""

    location: str = ""
    reason: str = ""


class Incompatible(Error):
    """A lease table this version cannot use (format, layout, byte order, clock).
    Attributes: ``location``, ``reason``."""

    location: str = ""
    reason: str = ""


class Corrupt(Error):
    """A damaged lease table, or one something else writes into.
    Attributes: ``location``, ``reason``."""

    location: str = ""
    reason: str = ""


class PermissionDenied(Error, PermissionError):
    """Refused for safety or by the OS: owned by another user, world-writable, or no
    permission. Attributes: ``location``, ``reason``."""

    location: str = ""
    reason: str = ""


class AlreadyExists(Error, FileExistsError):
    """Creating found something at the location already. Attribute: ``location``."""

    location: str = ""


class NotFound(Error, FileNotFoundError):
    """Opening or removing found no table at the location. Attribute: ``location``."""

    location: str = ""


class Unsupported(Error):
    """This machine lacks something shmlease needs. Attribute: ``reason``."""

    reason: str = ""


class Busy(Error):
    """A retryable refusal: the table lock was held too long by another process, or
    names kept moving; nothing is wrong with the table. Attributes: ``location``,
    ``reason``."""

    location: str = ""
    reason: str = ""


class Unavailable(Error, ConnectionError):
    """A remote table (``etcd://…``) could not be reached, or lost its quorum, within
    the location's timeout; retryable. Attributes: ``location``, ``reason``."""

    location: str = ""
    reason: str = ""


class IoError(Error, OSError):
    """Any other operating-system error (``errno`` is set when known).
    Attribute: ``context`` (what was being done)."""

    context: str = ""
