//! The plain C structs that describe leases and holders, and their filling from the
//! Rust library's values.

use std::ffi::c_char;
use std::time::{Duration, SystemTime};

use shmlease_core::{GrantInfo, Holder, LeaseInfo, LeaseKind, LeaseState, QueuedInfo};

/// Longest lease name, in bytes (without the terminating NUL).
pub const SHMLEASE_NAME_MAX: usize = 64;
/// Longest holder label, in bytes (without the terminating NUL).
pub const SHMLEASE_LABEL_MAX: usize = 8;

// The C arrays are sized with literals (cbindgen copies no expressions); keep them right.
const _: () = assert!(SHMLEASE_NAME_MAX == shmlease_core::layout::NAME_MAX);
const _: () = assert!(SHMLEASE_LABEL_MAX == shmlease_core::layout::LABEL_MAX);
const _: () = assert!(std::mem::size_of::<[c_char; 65]>() == SHMLEASE_NAME_MAX + 1);
const _: () = assert!(std::mem::size_of::<[c_char; 9]>() == SHMLEASE_LABEL_MAX + 1);

/// The state of a lease at the moment it was read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum shmlease_state {
    /// Released, or never granted: anyone may take it.
    SHMLEASE_STATE_FREE = 0,
    /// Granted and unexpired.
    SHMLEASE_STATE_HELD = 1,
    /// Granted, never released, and past its deadline: anyone may take it.
    SHMLEASE_STATE_EXPIRED = 2,
    /// Revoked: anyone may take it.
    SHMLEASE_STATE_REVOKED = 3,
}

/// How many may hold a name at once, and how: recorded with the name when it is first
/// used, and kept while the table remembers it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum shmlease_kind {
    /// One holder at a time (permits = 1, the default).
    SHMLEASE_KIND_EXCLUSIVE = 0,
    /// Up to `permits` holders at once (2 ..= 128), each with a grant of its own: see
    /// `shmlease_acquire_options.permits` and `shmlease_get_grants`.
    SHMLEASE_KIND_PERMITS = 1,
    /// A shared name: up to 64 shared holders at once (`permits` is 64), or one
    /// exclusive holder, never both; each holder with a grant of its own (see
    /// `shmlease_acquire_options.shared` and `shmlease_grant.shared`).
    SHMLEASE_KIND_SHARED = 2,
}

/// Who holds (or last held) a lease.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_holder {
    /// Whether the table recorded a holder; when false the other fields are zero.
    pub known: bool,
    /// A detached lease is bound to its TTL only: it outlives the process that took it.
    pub detached: bool,
    /// Process id, in the holder's PID namespace.
    pub pid: u32,
    /// Inode number of the holder's PID namespace (0 if unknown).
    pub pid_namespace: u32,
    /// The label the holder attached, NUL-terminated ("" if none; `SHMLEASE_LABEL_MAX`
    /// bytes at most).
    pub label: [c_char; 9],
}

/// Who holds a lease you could not get, and for how long: filled by
/// `shmlease_try_acquire` and `shmlease_acquire` when they return `SHMLEASE_HELD` or
/// `SHMLEASE_TIMED_OUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_held_by {
    /// Fencing token of the grant in the way.
    pub token: u64,
    /// Nanoseconds until it expires unless renewed (0 if it has just ended).
    pub remaining_ns: u64,
    /// Its holder.
    pub holder: shmlease_holder,
}

/// A copy of one name's lease, filled by `shmlease_get` and `shmlease_list`.
///
/// For a name with permits (`kind` is `SHMLEASE_KIND_PERMITS`) the fields describe the
/// name as a whole: `state` is held while any grant is, `token` is the latest token
/// taken for any of its grants, `remaining_ns` and `expires_at_unix_ns` those of the
/// grant that lasts longest (0 while none is held), `acquired_at_unix_ns` and
/// `renewed_at_unix_ns` 0, and `holder.known` false; `shmlease_get_grants` gives each
/// holder. A shared name (`SHMLEASE_KIND_SHARED`) is described the same way, with
/// `token` the latest of either kind, except that while it has an exclusive holder,
/// `holder`, `acquired_at_unix_ns` and `renewed_at_unix_ns` are that holder's (also
/// while it waits for shared holders to leave: then its grant is listed next to
/// theirs).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_info {
    /// The lease name, NUL-terminated (`SHMLEASE_NAME_MAX` bytes at most).
    pub name: [c_char; 65],
    /// State at the time of reading.
    pub state: shmlease_state,
    /// Fencing token of the current (or last) grant; 0 if never granted.
    pub token: u64,
    /// Nanoseconds left before it expires (0 unless held).
    pub remaining_ns: u64,
    /// Grants of this name since it was bound to its slot.
    pub transitions: u64,
    /// When the current (or last) grant was made, in nanoseconds since the Unix epoch
    /// (wall clock; 0 if unknown).
    pub acquired_at_unix_ns: i64,
    /// When it was last granted or renewed (Unix ns, wall clock; 0 if unknown).
    pub renewed_at_unix_ns: i64,
    /// When it expires or expired (Unix ns, wall clock; 0 if never granted).
    pub expires_at_unix_ns: i64,
    /// Slot index in the table (`UINT32_MAX` for a name the table does not know).
    pub slot: u32,
    /// Holder of the current (or last) grant (not known for a name with permits; for a
    /// shared name, its exclusive holder while it has one).
    pub holder: shmlease_holder,
    /// Exclusive, a name with permits, or a shared name.
    pub kind: shmlease_kind,
    /// How many may hold the name at once: 1 for an exclusive lease, 64 (shared holders)
    /// for a shared name.
    pub permits: u32,
    /// How many grants are live (at most `permits`): what `shmlease_get_grants` lists,
    /// as of this read.
    pub grants: u32,
    /// How many fair acquirers wait in line for the name (at most 127): what
    /// `shmlease_get_queue` lists, as of this read.
    pub queued: u32,
}

/// One live grant of a name (one permit of a name with permits, one holder of a shared
/// name, or the one holder of an exclusive lease), filled by `shmlease_get_grants`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_grant {
    /// Its fencing token (unique for the name; the grants of a name with permits are
    /// listed in the order taken, so their tokens grow).
    pub token: u64,
    /// Nanoseconds left before it expires unless renewed.
    pub remaining_ns: u64,
    /// When it was made, in nanoseconds since the Unix epoch (wall clock; 0 if unknown).
    pub acquired_at_unix_ns: i64,
    /// When it was last made or renewed (Unix ns, wall clock; 0 if unknown).
    pub renewed_at_unix_ns: i64,
    /// When it expires unless renewed (Unix ns, wall clock).
    pub expires_at_unix_ns: i64,
    /// Slot index of the grant in the table.
    pub slot: u32,
    /// Its holder.
    pub holder: shmlease_holder,
    /// A shared grant of a shared name; false for its exclusive holder, a permit, or an
    /// exclusive lease.
    pub shared: bool,
}

impl shmlease_grant {
    pub(crate) fn from_rust(g: &GrantInfo) -> shmlease_grant {
        shmlease_grant {
            token: g.token,
            remaining_ns: nanos(g.remaining),
            acquired_at_unix_ns: unix_ns(g.acquired_at),
            renewed_at_unix_ns: unix_ns(g.renewed_at),
            expires_at_unix_ns: unix_ns(g.expires_at),
            slot: g.slot,
            holder: shmlease_holder::from_rust(g.holder.as_ref()),
            shared: g.shared,
        }
    }
}

/// One fair acquirer waiting for a name: its place in the name's queue, filled by
/// `shmlease_get_queue` (see `shmlease_acquire_options.fair`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_queued {
    /// Its ticket: places are served in ticket order (tickets come from one counter of
    /// the table, so they are not tokens of the name).
    pub ticket: u64,
    /// Nanoseconds before the place expires unless its waiter renews it (a waiter
    /// renews its place every half second while it waits; a place expires, passing its
    /// waiter over, only if the waiter is stopped or hung for 2 s).
    pub remaining_ns: u64,
    /// When the place expires unless renewed (Unix ns, wall clock; 0 if unknown).
    pub expires_at_unix_ns: i64,
    /// Slot index of the place in the table.
    pub slot: u32,
    /// The waiting process (places record no label: `label` is "").
    pub holder: shmlease_holder,
}

impl shmlease_queued {
    pub(crate) fn from_rust(q: &QueuedInfo, now: SystemTime) -> shmlease_queued {
        let remaining = q.expires_at.and_then(|t| t.duration_since(now).ok()).unwrap_or_default();
        shmlease_queued {
            ticket: q.ticket,
            remaining_ns: nanos(remaining),
            expires_at_unix_ns: unix_ns(q.expires_at),
            slot: q.slot,
            holder: shmlease_holder::from_rust(q.holder.as_ref()),
        }
    }
}

/// Copies `text` into a NUL-terminated C array, truncating at a byte boundary if needed.
fn c_text<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (dst, src) in out.iter_mut().zip(text.as_bytes().iter().take(N - 1)) {
        *dst = *src as c_char;
    }
    out
}

pub(crate) fn unix_ns(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl shmlease_holder {
    pub(crate) fn from_rust(holder: Option<&Holder>) -> shmlease_holder {
        match holder {
            Some(h) => shmlease_holder {
                known: true,
                detached: h.detached,
                pid: h.pid,
                pid_namespace: h.pid_namespace,
                label: c_text(&h.label.as_str()),
            },
            None => shmlease_holder {
                known: false,
                detached: false,
                pid: 0,
                pid_namespace: 0,
                label: [0; 9],
            },
        }
    }
}

impl shmlease_info {
    pub(crate) fn from_rust(info: &LeaseInfo) -> shmlease_info {
        // A shared name's own holder is its exclusive holder's grant, if it has one.
        let exclusive = info.grants.iter().find(|g| !g.shared);
        let (holder, acquired_at, renewed_at, expires_at) = match info.kind {
            LeaseKind::Shared => (
                exclusive.and_then(|g| g.holder),
                exclusive.and_then(|g| g.acquired_at),
                exclusive.and_then(|g| g.renewed_at),
                info.grants.iter().filter_map(|g| g.expires_at).max(),
            ),
            _ => (info.holder, info.acquired_at, info.renewed_at, info.expires_at),
        };
        shmlease_info {
            name: c_text(&info.name),
            state: match info.state {
                LeaseState::Held => shmlease_state::SHMLEASE_STATE_HELD,
                LeaseState::Expired => shmlease_state::SHMLEASE_STATE_EXPIRED,
                LeaseState::Revoked => shmlease_state::SHMLEASE_STATE_REVOKED,
                LeaseState::Free => shmlease_state::SHMLEASE_STATE_FREE,
            },
            token: info.token,
            remaining_ns: nanos(info.remaining),
            transitions: info.transitions,
            acquired_at_unix_ns: unix_ns(acquired_at),
            renewed_at_unix_ns: unix_ns(renewed_at),
            expires_at_unix_ns: unix_ns(expires_at),
            slot: info.slot,
            holder: shmlease_holder::from_rust(holder.as_ref()),
            kind: match info.kind {
                LeaseKind::Exclusive => shmlease_kind::SHMLEASE_KIND_EXCLUSIVE,
                LeaseKind::Shared => shmlease_kind::SHMLEASE_KIND_SHARED,
                _ => shmlease_kind::SHMLEASE_KIND_PERMITS,
            },
            permits: info.kind.permits(),
            grants: u32::try_from(info.grants.len()).unwrap_or(u32::MAX),
            queued: u32::try_from(info.queue.len()).unwrap_or(u32::MAX),
        }
    }

    /// A name the table does not know: free, never granted.
    pub(crate) fn unknown(name: &str) -> shmlease_info {
        shmlease_info {
            name: c_text(name),
            state: shmlease_state::SHMLEASE_STATE_FREE,
            token: 0,
            remaining_ns: 0,
            transitions: 0,
            acquired_at_unix_ns: 0,
            renewed_at_unix_ns: 0,
            expires_at_unix_ns: 0,
            slot: u32::MAX,
            holder: shmlease_holder::from_rust(None),
            kind: shmlease_kind::SHMLEASE_KIND_EXCLUSIVE,
            permits: 1,
            grants: 0,
            queued: 0,
        }
    }
}
