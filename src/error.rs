//! The one error type, with a variant per thing a caller can act on.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::info::Holder;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a grant is not (or no longer) the live one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// Its deadline passed without a renewal.
    Expired,
    /// Somebody revoked it.
    Revoked,
    /// It was released (with its token, possibly by another process).
    Released,
    /// A later grant of the same name is current. (For a token presented by name,
    /// this is all that is known: it is older than the current grant's.)
    TakenOver,
    /// The token was never issued for this name: it is newer than any grant the name
    /// has had (a mistyped or made-up token).
    NotIssued {
        /// The token of the name's latest grant.
        latest: u64,
    },
    /// The table has no lease of that name: it was never granted, or it was released
    /// and its slot reused.
    NoSuchName,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::Expired => "it expired",
            LostReason::Revoked => "it was revoked",
            LostReason::Released => "it was already released",
            LostReason::TakenOver => "a newer grant is current",
            LostReason::NotIssued { latest } => {
                return write!(f, "no such token was issued (the latest is {latest})")
            }
            LostReason::NoSuchName => "the table has no lease by that name",
        })
    }
}

/// Everything that can go wrong. Match on the variant to decide what to do; the
/// `Display` text is one line meant for a human.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The lease is held by someone else (try again later, or wait with `acquire`).
    Held {
        /// Token of the current grant.
        token: u64,
        /// Time left until it expires unless renewed.
        remaining: Duration,
        /// Who holds it, when the table knows.
        holder: Option<Holder>,
    },
    /// The caller's grant is no longer valid; it must stop acting on its token.
    Lost {
        /// The token the caller presented.
        token: u64,
        /// What happened to it.
        reason: LostReason,
    },
    /// A by-token [`renew`](crate::LeaseTable::renew) or
    /// [`release`](crate::LeaseTable::release) named a lease that is bound to a live
    /// process: only its holder may renew or release it (an administrator can
    /// [`revoke`](crate::LeaseTable::revoke) it). By-token calls are for detached leases.
    BoundToProcess {
        /// The token presented (the grant's).
        token: u64,
        /// The process holding it, when recorded.
        holder: Option<Holder>,
    },
    /// [`LeaseTable::remove`](crate::LeaseTable::remove) found live grants in the table:
    /// removing it would let a new table appear at the same location while these
    /// holders still use the old one (two holders per name, tokens starting over).
    InUse {
        /// The location.
        location: String,
        /// The live grants (name, token, holder, time left).
        leases: Vec<crate::LeaseInfo>,
    },
    /// `acquire` waited for the whole timeout and the lease stayed held.
    TimedOut {
        /// How long it waited.
        waited: Duration,
        /// Token of the grant that was still live.
        token: u64,
        /// Who held it, when the table knows.
        holder: Option<Holder>,
    },
    /// A waiting acquisition was ended by its caller's [`Interrupt`](crate::Interrupt)
    /// check (see [`AcquireOptions::interrupt`](crate::AcquireOptions::interrupt)):
    /// nothing was granted, and whatever the wait held (its place in a fair queue, an
    /// exclusive acquirer's hold on a shared name) has been given up.
    Interrupted {
        /// How long it waited.
        waited: Duration,
    },
    /// The name is in use as another kind than the call asked for: exclusive, or with
    /// another number of permits. The kind is recorded with the name when it is first
    /// used, so that users who disagree about N are told instead of silently admitting
    /// more holders than either intended.
    WrongKind {
        /// The name.
        name: String,
        /// How the name is in use.
        recorded: crate::LeaseKind,
        /// What the call asked for.
        requested: crate::LeaseKind,
    },
    /// Every slot holds a live lease; no new name fits.
    TableFull {
        /// The table's capacity.
        capacity: u32,
    },
    /// A lease name is empty, longer than 64 bytes or contains NUL.
    InvalidName {
        /// What is wrong.
        reason: String,
    },
    /// A TTL outside 1 µs ..= 365 days.
    InvalidTtl {
        /// The TTL given.
        ttl: Duration,
    },
    /// A label longer than 8 bytes or containing NUL.
    InvalidLabel {
        /// What is wrong.
        reason: String,
    },
    /// Options or a location that cannot work (capacity, mode, shm name, permits).
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// The location exists but does not hold a lease table (empty, wrong magic, not a
    /// regular file, a symbolic link).
    NotATable {
        /// The location.
        location: String,
        /// Why not.
        reason: String,
    },
    /// A lease table this library cannot use (another format version, layout, byte
    /// order or clock).
    Incompatible {
        /// The location.
        location: String,
        /// What differs.
        reason: String,
    },
    /// A lease table whose header is damaged (impossible values, wrong size).
    Corrupt {
        /// The location.
        location: String,
        /// What is damaged.
        reason: String,
    },
    /// Refused for safety or by the OS: owned by another user, world-writable,
    /// or no permission to open it.
    Permission {
        /// The location.
        location: String,
        /// Why, and how to opt in where that is possible.
        reason: String,
    },
    /// `create` found something at the location already.
    AlreadyExists {
        /// The location.
        location: String,
    },
    /// `open` or `remove` found nothing at the location.
    NotFound {
        /// The location.
        location: String,
    },
    /// This machine or build lacks something shmlease needs (a lock-free 128-bit CAS; the
    /// `etcd` feature, for an etcd location).
    Unsupported {
        /// What is missing.
        reason: String,
    },
    /// A retryable refusal: another process has held the table lock (used only to
    /// bind new names and to recover after a reboot) for too long (it is probably
    /// stopped), or every slot's name kept being taken while this call looked for one
    /// to reuse. Nothing is wrong with the table; try again.
    Busy {
        /// The location.
        location: String,
        /// Which of the two, in words.
        reason: String,
    },
    /// A remote backend (etcd) could not answer in time: the cluster is unreachable, has
    /// no quorum, or refused the connection. Retryable. A lease already held stays valid
    /// until its own deadline ([`Lease::is_valid`](crate::Lease::is_valid)) and is lost
    /// then if renewals keep failing.
    Unavailable {
        /// The location.
        location: String,
        /// What failed, in words.
        reason: String,
    },
    /// Any other operating-system error.
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

fn fmt_holder(f: &mut fmt::Formatter<'_>, holder: &Option<Holder>) -> fmt::Result {
    match holder {
        Some(h) => write!(f, " by {h}"),
        None => Ok(()),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Held { token, remaining, holder } => {
                write!(f, "lease is held")?;
                fmt_holder(f, holder)?;
                write!(f, " (token {token}, {remaining:.3?} left)")
            }
            Error::Lost { token, reason } => {
                write!(f, "lease with token {token} is lost: {reason}")
            }
            Error::BoundToProcess { token, holder } => {
                write!(f, "lease with token {token} is bound to its holder process")?;
                fmt_holder(f, holder)?;
                write!(
                    f,
                    ": only that process may renew or release it (by-token calls are for \
                     detached leases; revoke it to take it away)"
                )
            }
            Error::InUse { location, leases } => {
                write!(f, "lease table {location} has {} live lease(s)", leases.len())?;
                for (i, l) in leases.iter().take(3).enumerate() {
                    // Quoted: a name may hold control characters.
                    let sep = if i == 0 { ":" } else { "," };
                    write!(f, "{sep} {:?} (token {}", l.name, l.token)?;
                    if let Some(h) = &l.holder {
                        write!(f, ", {h}")?;
                    }
                    write!(f, ", {:.1?} left)", l.remaining)?;
                }
                if leases.len() > 3 {
                    write!(f, ", and {} more", leases.len() - 3)?;
                }
                write!(f, "; not removed")
            }
            Error::TimedOut { waited, token, holder } => {
                write!(f, "timed out after {waited:.3?} waiting for a lease held")?;
                fmt_holder(f, holder)?;
                write!(f, " (token {token})")
            }
            Error::Interrupted { waited } => {
                write!(f, "interrupted by the caller after waiting {waited:.3?} for a lease")
            }
            Error::WrongKind { name, recorded, requested } => write!(
                f,
                "{name:?} is in use as {recorded}, recorded when it was first used; this call \
                 asked for {requested} (every user of a name must agree on its kind)"
            ),
            Error::TableFull { capacity } => write!(
                f,
                "lease table is full: all {capacity} slots hold live leases (create a larger table)"
            ),
            Error::InvalidName { reason } => write!(f, "invalid lease name: {reason}"),
            Error::InvalidTtl { ttl } => {
                write!(f, "invalid TTL {ttl:?}: must be between 1µs and 365 days")
            }
            Error::InvalidLabel { reason } => write!(f, "invalid label: {reason}"),
            Error::InvalidOptions { reason } => write!(f, "invalid options: {reason}"),
            Error::NotATable { location, reason } => {
                write!(f, "{location} is not a lease table: {reason}")
            }
            Error::Incompatible { location, reason } => {
                write!(f, "{location} is a lease table this version cannot use: {reason}")
            }
            Error::Corrupt { location, reason } => {
                write!(f, "lease table {location} is corrupt: {reason}")
            }
            Error::Permission { location, reason } => write!(f, "{location}: {reason}"),
            Error::AlreadyExists { location } => write!(f, "{location} already exists"),
            Error::NotFound { location } => write!(f, "no lease table at {location}"),
            Error::Unsupported { reason } => write!(f, "not supported here: {reason}"),
            Error::Busy { location, reason } => {
                write!(f, "lease table {location} is busy: {reason}")
            }
            Error::Unavailable { location, reason } => {
                write!(f, "lease table {location} is unavailable: {reason}")
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
