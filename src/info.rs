//! What the table tells about leases, holders and itself: plain values, copied out of the
//! shared mapping.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::layout::{holder, LABEL_MAX};
use crate::Location;

/// A holder label: up to 8 bytes of UTF-8 stored inline (no allocation).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Label {
    bytes: [u8; LABEL_MAX],
}

impl Label {
    /// Makes a label; `None` when `text` is longer than 8 bytes or contains NUL.
    pub fn new(text: &str) -> Option<Label> {
        if text.len() > LABEL_MAX || text.bytes().any(|b| b == 0) {
            return None;
        }
        let mut bytes = [0u8; LABEL_MAX];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Label { bytes })
    }

    pub(crate) fn from_word(word: u64) -> Label {
        Label { bytes: word.to_le_bytes() }
    }

    pub(crate) fn to_word(self) -> u64 {
        u64::from_le_bytes(self.bytes)
    }

    /// The label text (lossy if the table held invalid UTF-8).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let len = self.bytes.iter().position(|b| *b == 0).unwrap_or(LABEL_MAX);
        String::from_utf8_lossy(&self.bytes[..len])
    }

    /// Whether the label is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes[0] == 0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_str(), f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// A holder's host name: up to 47 bytes of UTF-8 stored inline, empty where the table
/// spans one host only (shared memory).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Host {
    len: u8,
    bytes: [u8; Host::MAX],
}

impl Default for Host {
    fn default() -> Self {
        Host { len: 0, bytes: [0; Host::MAX] }
    }
}

impl Host {
    /// The longest host name recorded; longer ones are cut (at a character boundary).
    pub const MAX: usize = 47;

    /// Makes a host name, cut to 47 bytes; `None` when `text` contains NUL.
    pub fn new(text: &str) -> Option<Host> {
        if text.bytes().any(|b| b == 0) {
            return None;
        }
        let len = (0..=text.len().min(Host::MAX)).rev().find(|&i| text.is_char_boundary(i))?;
        let mut bytes = [0u8; Host::MAX];
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Some(Host { len: len as u8, bytes })
    }

    /// The host name (empty when not recorded).
    pub fn as_str(&self) -> &str {
        // Built only from a `&str` cut at its length: always valid UTF-8.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    /// Whether no host is recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a holder process is told apart from a later process that reuses its pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessIdentity {
    /// Inode number of the process's pidfd (pidfs, Linux 6.9+; low 39 bits).
    PidfdInode(u64),
    /// Start time of the process in clock ticks after boot (low 39 bits).
    StartTime(u64),
    /// Not known: the holder can only be reclaimed when its TTL runs out.
    Unknown,
}

/// Who holds (or last held) a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Holder {
    /// Process id, in the holder's PID namespace.
    pub pid: u32,
    /// Inode number of the holder's PID namespace (0 if unknown).
    pub pid_namespace: u32,
    /// Reuse-proof identity of the process.
    pub identity: ProcessIdentity,
    /// A detached lease is bound to its TTL only: it outlives its process.
    pub detached: bool,
    /// The label the holder attached (may be empty).
    pub label: Label,
    /// The holder's host, for tables that span hosts (etcd); empty for shared memory.
    pub host: Host,
}

impl Holder {
    pub(crate) fn from_record(r: &holder::Record, label: u64) -> Holder {
        Holder {
            pid: r.pid,
            pid_namespace: r.pidns,
            identity: match r.kind {
                holder::KIND_PIDFD_INODE => ProcessIdentity::PidfdInode(r.ident),
                holder::KIND_START_TIME => ProcessIdentity::StartTime(r.ident),
                _ => ProcessIdentity::Unknown,
            },
            detached: r.detached,
            label: Label::from_word(label),
            host: Host::default(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if !self.host.is_empty() {
            write!(f, " on {}", self.host)?;
        }
        if !self.label.is_empty() {
            write!(f, " ({})", self.label)?;
        }
        if self.detached {
            write!(f, " [detached]")?;
        }
        Ok(())
    }
}

/// The state of a name's lease at the moment it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Granted and unexpired.
    Held,
    /// Granted, never released, and past its deadline: anyone may take it.
    Expired,
    /// Revoked: anyone may take it.
    Revoked,
    /// Released, or never granted: anyone may take it.
    Free,
}

impl LeaseState {
    /// Lower-case name, as the CLI prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseState::Held => "held",
            LeaseState::Expired => "expired",
            LeaseState::Revoked => "revoked",
            LeaseState::Free => "free",
        }
    }
}

/// How many may hold a name at once: recorded with the name when it is first used
/// (bound to the table), kept while the name stays in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseKind {
    /// One holder at a time (`permits = 1`, the default).
    Exclusive,
    /// Up to N holders at once (2 ≤ N ≤ 128), each with its own grant.
    Permits(u32),
    /// Up to 64 shared holders at once, or one exclusive holder, never both; each
    /// holder with its own grant. A name becomes shared when first acquired shared;
    /// exclusive acquisitions of it then wait for its shared holders to leave.
    Shared,
}

impl LeaseKind {
    /// How many grants may be live at once (for a shared name: shared ones).
    pub fn permits(&self) -> u32 {
        match self {
            LeaseKind::Exclusive => 1,
            LeaseKind::Permits(n) => *n,
            LeaseKind::Shared => crate::layout::MAX_SHARED,
        }
    }

    /// Lower-case name, as the CLI prints it (`exclusive`, `permits`, `shared`).
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseKind::Exclusive => "exclusive",
            LeaseKind::Permits(_) => "permits",
            LeaseKind::Shared => "shared",
        }
    }
}

impl fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseKind::Exclusive => f.write_str("an exclusive lease (permits = 1)"),
            LeaseKind::Permits(n) => write!(f, "permits = {n}"),
            LeaseKind::Shared => f.write_str("a shared name (shared holders or one exclusive)"),
        }
    }
}

/// One live grant of a name (of several, for a name with permits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantInfo {
    /// Its fencing token.
    pub token: u64,
    /// Who holds it, when recorded.
    pub holder: Option<Holder>,
    /// When it was made.
    pub acquired_at: Option<SystemTime>,
    /// When it was last made or renewed.
    pub renewed_at: Option<SystemTime>,
    /// When it expires unless renewed.
    pub expires_at: Option<SystemTime>,
    /// Time left.
    pub remaining: Duration,
    /// Slot index of the grant in the table.
    pub slot: u32,
    /// A shared grant (of a shared name); `false` for an exclusive grant or a permit.
    pub shared: bool,
}

/// A fair acquirer waiting for a name: its place in the name's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedInfo {
    /// Its ticket: places are served in ticket order.
    pub ticket: u64,
    /// Who waits, when recorded.
    pub holder: Option<Holder>,
    /// When the place expires unless the waiter renews it (it does while it waits).
    pub expires_at: Option<SystemTime>,
    /// Slot index of the place in the table.
    pub slot: u32,
}

/// A copy of one name's lease.
///
/// For a name with permits, the top-level fields describe the name as a whole: `token`
/// is the latest token taken for any of its grants, `state` is `Held` while any grant
/// is, `holder` is `None`, `remaining` is the longest time left of any grant, and
/// `transitions` counts grants since the name's seats were bound. Each live grant is in
/// `grants`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease name.
    pub name: String,
    /// Fencing token of the current (or last) grant; 0 if never granted.
    pub token: u64,
    /// State at the time of reading.
    pub state: LeaseState,
    /// Holder of the current (or last) grant, when recorded.
    pub holder: Option<Holder>,
    /// When the current (or last) grant was made.
    pub acquired_at: Option<SystemTime>,
    /// When it was last granted or renewed.
    pub renewed_at: Option<SystemTime>,
    /// When it expires (or expired), for granted leases.
    pub expires_at: Option<SystemTime>,
    /// Time left (zero unless held).
    pub remaining: Duration,
    /// Grants of this name since it was bound to its slot.
    pub transitions: u64,
    /// Slot index in the table.
    pub slot: u32,
    /// Exclusive, or how many permits.
    pub kind: LeaseKind,
    /// The live grants, oldest first: the one holder of a held exclusive lease, each
    /// holder of a name with permits.
    pub grants: Vec<GrantInfo>,
    /// Fair acquirers waiting for the name, first in line first (see
    /// [`AcquireOptions::fair`](crate::AcquireOptions::fair)).
    pub queue: Vec<QueuedInfo>,
}

/// Counters kept by the table (slow paths only, so they cost the fast path nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Grants so far (live slots' counts plus those of unbound names).
    pub grants: u64,
    /// Grants that took over an expired lease.
    pub expired_reclaims: u64,
    /// Grants that took over a lease whose holder was provably dead.
    pub dead_holder_reclaims: u64,
    /// Grants that replaced a slot with an impossible deadline (garbage).
    pub corrupt_reclaims: u64,
    /// Renewals, estimated: so that the fast path does not write the shared header,
    /// about one renewal in 64 (picked by the clock's low bits) is counted, as 64. For
    /// `n` renewals the estimate is off by about 8·√n (±250 at a thousand, ±2.5% at
    /// a hundred thousand), and reads 0 or 64 for the first few dozen.
    pub renewals: u64,
    /// Releases, estimated like `renewals` (it may exceed `grants`).
    pub releases: u64,
    /// Successful revocations.
    pub revocations: u64,
    /// Acquire attempts that found the lease held.
    pub contended: u64,
    /// Names bound to slots.
    pub binds: u64,
    /// Names unbound to reuse their slot.
    pub unbinds: u64,
}

/// Facts about a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Where it lives.
    pub location: Location,
    /// Format version of the table.
    pub format_version: u32,
    /// Number of slots.
    pub capacity: u32,
    /// Names in the table (a name with several holders, or a fair queue, counts once).
    pub names: u32,
    /// Grants live right now (a name with several holders counts each; waiting places
    /// in fair queues are not grants).
    pub held: u32,
    /// Size of the table in bytes.
    pub size_bytes: u64,
    /// Bytes per slot.
    pub slot_size: u32,
    /// Boot id the table's clock belongs to.
    pub boot_id: String,
    /// The clock deadlines are measured on.
    pub clock: &'static str,
    /// Creator's pid.
    pub creator_pid: u32,
    /// Creator's uid.
    pub creator_uid: u32,
    /// Creation time.
    pub created_at: SystemTime,
    /// Counters.
    pub counters: Counters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_is_cut_at_a_character_boundary() {
        assert_eq!(Host::new("box-1").unwrap().as_str(), "box-1");
        assert_eq!(Host::new(&"a".repeat(64)).unwrap().as_str(), "a".repeat(47));
        assert_eq!(Host::new(&"é".repeat(30)).unwrap().as_str(), "é".repeat(23));
        assert!(Host::new("a\0b").is_none());
        assert!(Host::default().is_empty());
    }

    #[test]
    fn errors_stay_small() {
        // `Result<_, Error>` is returned on the fast path: keep it under clippy's limit.
        assert!(
            std::mem::size_of::<crate::Error>() <= 128,
            "{}",
            std::mem::size_of::<crate::Error>()
        );
    }
}
