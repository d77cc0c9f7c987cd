//! A lease table: the mapping, name lookup, waiting, and the public operations. The
//! per-slot state machine lives in [`crate::protocol`]; here, `key` lays names out,
//! `binding` binds and unbinds them under the table lock, and `open` creates, opens,
//! validates and removes tables.
//!
//! # The shared-memory contract
//!
//! The table is a `MAP_SHARED` mapping that any process with write access can change at
//! any moment, including with garbage. So this module never forms a reference to plain
//! data in it: the header and slots are `#[repr(C)]` structs made only of atomics, for
//! which every bit pattern is a valid value, and every value read from them is checked
//! before use. Geometry (capacity, size) is read and validated once at open and then
//! taken from this process's copy, never from the mapping, so no scribble can steer an
//! access out of bounds. What a scribbler *can* do is make leases look expired, held,
//! corrupt or unbound: operations then return an error or reclaim the slot.
//!
//! Names are found by linear probing from a home slot given by a fixed hash; a lookup
//! reads without any lock. Binding a name to a slot (and unbinding an idle name to reuse
//! its slot) happens under the table lock, an `flock` on the table file that the kernel
//! releases if its holder dies. Each acquisition of the lock takes it on an open file
//! description of its own, made for it: `flock` belongs to a description, and `fork()`
//! shares descriptions, so a lock on a description opened once per table would be held
//! by a parent and all its forked children at once. Two descriptions exclude each other
//! even within one process, so the lock serves this process's threads as well.
//!
//! # What a forked child may do
//!
//! Everything with a `LeaseTable` it inherited: the mapping is shared, the identity it
//! records is its own (re-read after the fork), and every table lock is its own. A
//! [`Lease`] it inherited stays its parent's: the child may read it (`token`,
//! `is_valid`, `remaining`) but `renew`, `release`, `detach` and `keep_alive` fail with
//! [`Error::BoundToProcess`], and dropping it does nothing. The parent's keep-alive
//! thread does not exist in the child.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::election::Leader;
use crate::error::{Error, LostReason, Result};
use crate::identity;
use crate::info::{Counters, Holder, Label, LeaseInfo, LeaseState, TableInfo};
pub(crate) use crate::layout::counter;
use crate::layout::{self, bind, grant, Header, Slot, HEADER_SIZE, NAME_MAX, SLOT_SIZE};
use crate::lease::{DetachedLease, Lease, RawLease};
use crate::options::Location;
use crate::protocol::{self, Observed, Refusal, Targeted, Took};
use crate::sync::Ordering;
use crate::sys;

mod binding;
mod fair;
mod key;
mod open;
mod permits;
mod shared;
mod wait;

pub use crate::options::AcquireOptions;
pub use fair::PLACE_TTL;
pub(crate) use key::Key;
use key::NameRef;
pub use open::RemoveOptions;
pub(crate) use wait::{nap, DeathAlarm, Patience, LONGEST_NAP};

/// An operation on whatever grant is live in a slot ([`protocol::revoke`],
/// [`protocol::request_release`]).
pub(crate) type SlotOp = fn(&Slot, u64, u64, Option<u64>) -> std::result::Result<Targeted, Refusal>;

/// Lock-free lookups that keep finding the name re-bound before they can grant it give
/// up after this many tries and go through the table lock, where nobody re-binds.
const FREE_TRIES: u32 = 4;
/// Under the table lock, a pass looking for a slot to bind may have to start over when
/// the idle name it chose is granted meanwhile (by a process that does not need the
/// lock). Honest, but unbounded in principle: past this many passes the call returns
/// the retryable [`Error::Busy`].
const BIND_PASSES: u32 = 256;
/// A grant may be made with the coarse clock only if its TTL is at least this many of its
/// ticks: the grant is then shorter than asked by about 1/256 (the clock's lag: a tick,
/// more when ticks are late).
const COARSE_TTL_TICKS: u64 = 256;

/// Whether a grant of `ttl` may read the coarse clock (see [`COARSE_TTL_TICKS`]).
#[inline(always)]
fn coarse_clock_will_do(ttl: u64) -> bool {
    ttl >= sys::coarse_tick_ns().saturating_mul(COARSE_TTL_TICKS)
}
/// Byte offset, inside a slot, of the futex word: the high half of the deadline.
const FUTEX_OFFSET: usize = if cfg!(target_endian = "little") { 4 } else { 8 };

/// A lease table, mapped into this process.
///
/// Cheap to clone (clones share the mapping) and safe to use from many threads.
/// Dropping the last clone unmaps the table; the table itself stays until
/// [`LeaseTable::remove`].
///
/// ```
/// # let path = std::env::temp_dir().join(format!("shmlease-doc-table-{}", std::process::id()));
/// use shmlease::{LeaseTable, TableOptions};
/// use std::time::Duration;
///
/// let table = LeaseTable::open_or_create(&path, &TableOptions::new().capacity(64))?;
/// let lease = table.try_acquire("nightly-report", Duration::from_secs(30))?;
/// // Someone else trying now is refused, and told who holds it.
/// assert!(matches!(
///     table.try_acquire("nightly-report", Duration::from_secs(30)),
///     Err(shmlease::Error::Held { .. })
/// ));
/// lease.release()?;
/// # LeaseTable::remove(&path)?;
/// # Ok::<(), shmlease::Error>(())
/// ```
#[derive(Clone)]
pub struct LeaseTable {
    pub(crate) backend: Backend,
}

/// Where a table's leases live: one module tree per backend; everything above this
/// enum (the CLI, the C library, Python) sees only [`LeaseTable`].
#[derive(Clone)]
pub(crate) enum Backend {
    /// A mapping of a file or shared-memory segment (this module tree).
    Shm(Arc<Inner>),
    /// A key prefix on an etcd cluster (`crate::etcd`).
    #[cfg(feature = "etcd")]
    Etcd(crate::etcd::EtcdTable),
}

pub(crate) struct Inner {
    map: memmap2::MmapRaw,
    file: File,
    location: Location,
    capacity: u32,
    time_base: u64,
}

impl std::fmt::Debug for LeaseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Shm(inner) => f
                .debug_struct("LeaseTable")
                .field("location", &inner.location)
                .field("capacity", &inner.capacity)
                .finish(),
            #[cfg(feature = "etcd")]
            Backend::Etcd(t) => {
                f.debug_struct("LeaseTable").field("location", t.location()).finish()
            }
        }
    }
}

impl LeaseTable {
    /// The shared-memory table. Only called on paths that an etcd table has already
    /// been sent away from (each public operation dispatches first; an etcd table's
    /// leases carry their etcd part), so the other arm is a bug, not an input.
    #[inline(always)]
    pub(crate) fn shm(&self) -> &Arc<Inner> {
        match &self.backend {
            Backend::Shm(inner) => inner,
            #[cfg(feature = "etcd")]
            Backend::Etcd(_) => unreachable!("a shared-memory operation on an etcd table"),
        }
    }

    /// An etcd table, behind the backend-neutral API.
    #[cfg(feature = "etcd")]
    pub(crate) fn from_etcd(table: crate::etcd::EtcdTable) -> LeaseTable {
        LeaseTable { backend: Backend::Etcd(table) }
    }

    /// The etcd table, if this is one.
    #[cfg(feature = "etcd")]
    #[inline(always)]
    pub(crate) fn etcd(&self) -> Option<&crate::etcd::EtcdTable> {
        match &self.backend {
            Backend::Etcd(t) => Some(t),
            Backend::Shm(_) => None,
        }
    }
}

/// Sends an operation on an etcd table to the etcd backend: `to_etcd!(self, t => expr)`
/// returns `expr` (with `t` the `EtcdTable`) when the table is on etcd, and does
/// nothing (and costs nothing) in a build without the `etcd` feature.
macro_rules! to_etcd {
    ($table:expr, $t:ident => $e:expr) => {
        #[cfg(feature = "etcd")]
        if let Some($t) = $table.etcd() {
            return $e;
        }
    };
}
pub(crate) use to_etcd;

pub(crate) fn ttl_ns(ttl: Duration) -> Result<u64> {
    let ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    if (protocol::MIN_TTL_NS..=protocol::MAX_TTL_NS).contains(&ns) {
        Ok(ns)
    } else {
        Err(Error::InvalidTtl { ttl })
    }
}

/// What a protocol loss means to a caller; `None` for interference (a scribbler).
pub(crate) fn lost_reason(l: protocol::Lost) -> Option<LostReason> {
    match l {
        protocol::Lost::Expired => Some(LostReason::Expired),
        protocol::Lost::Revoked => Some(LostReason::Revoked),
        protocol::Lost::Released => Some(LostReason::Released),
        protocol::Lost::TakenOver => Some(LostReason::TakenOver),
        protocol::Lost::Interference => None,
    }
}

/// The error for a grant with `token` lost in the protocol.
pub(crate) fn lost(token: u64, l: protocol::Lost, location: &Location, slot: u32) -> Error {
    match lost_reason(l) {
        Some(reason) => Error::Lost { token, reason },
        None => interference(location, slot),
    }
}

/// A slot whose token cannot grow any more: only a scribbled token gets near 2⁶⁴.
fn token_exhausted(location: &Location, slot: u32) -> Error {
    Error::Corrupt {
        location: location.to_string(),
        reason: format!("slot {slot} has exhausted its token space"),
    }
}

/// A slot that changed more often during one call than honest actors can make it (they
/// change a slot a bounded number of times per attempt): another process is writing
/// garbage into the table.
fn interference(location: &Location, slot: u32) -> Error {
    Error::Corrupt {
        location: location.to_string(),
        reason: format!(
            "slot {slot} keeps changing faster than any lease holder could change it \
             (something other than shmlease is writing into the table)"
        ),
    }
}

/// What one acquisition attempt found.
pub(crate) enum Attempt {
    Won {
        slot: u32,
        token: u64,
        deadline: u64,
    },
    Held {
        slot: u32,
        bound_as: u64,
        token: u64,
        deadline: u64,
        holder: Option<layout::holder::Record>,
    },
    /// The name is shared: an exclusive grant of it is taken by `table::shared`.
    Shared {
        slot: u32,
    },
}

impl Inner {
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked at open), page
        // aligned, and lives as long as `self`. `Header` consists only of atomics, for
        // which any bytes are a valid value and concurrent writes by other processes
        // are sound; we never create a non-atomic reference into it.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    #[inline]
    pub(crate) fn slot(&self, index: u32) -> &Slot {
        assert!(index < self.capacity, "slot index out of range");
        // SAFETY: index < capacity, and the mapping is exactly table_size(capacity)
        // bytes (checked at open), so the slot lies inside it; HEADER_SIZE and
        // SLOT_SIZE are multiples of the slot's alignment and the mapping is page
        // aligned. `Slot` is made only of atomics (see `header`).
        unsafe {
            &*(self.map.as_ptr().add(HEADER_SIZE + index as usize * SLOT_SIZE) as *const Slot)
        }
    }

    #[inline]
    fn futex_word(&self, index: u32) -> *const u32 {
        // Stays inside the slot's grant word (bytes 0..16 of the slot).
        (self.slot(index) as *const Slot as *const u8).wrapping_add(FUTEX_OFFSET) as *const u32
    }

    /// The header's name-event count (see [`Header::name_events`]), low half.
    pub(crate) fn name_events(&self) -> u32 {
        self.header().name_events.load(Ordering::Acquire) as u32
    }

    /// The low half of a header counter, as a futex word.
    fn low_half(word: &crate::sync::AtomicU64) -> *const u32 {
        let offset = if cfg!(target_endian = "little") { 0 } else { 4 };
        (word as *const _ as *const u8).wrapping_add(offset) as *const u32
    }

    /// A name was bound or unbound (table lock held): wakes observers of absent names.
    pub(crate) fn name_event(&self) {
        self.header().name_events.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the word lies inside our live mapping's header, 4-byte aligned.
        unsafe { sys::futex_wake_all(Self::low_half(&self.header().name_events)) };
    }

    /// Sleeps until a name is bound or unbound (the count moves from `seen`), at most
    /// `timeout`.
    pub(crate) fn sleep_for_names(&self, seen: u32, timeout: Duration) {
        // SAFETY: the word lies inside our live mapping (kept alive by `self`), aligned.
        unsafe { sys::futex_wait(Self::low_half(&self.header().name_events), seen, timeout) };
    }

    /// The header's seat-event count (see [`Header::seat_events`]), low half: read it
    /// before looking at the seats, then sleep on it with [`Inner::sleep_for_seat_event`].
    pub(crate) fn seat_events(&self) -> u32 {
        self.header().seat_events.load(Ordering::SeqCst) as u32
    }

    /// A seat with waiters announced on it was freed: wakes whoever waits for a seat.
    fn seat_event(&self) {
        self.header().seat_events.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the word lies inside our live mapping's header, 4-byte aligned.
        unsafe { sys::futex_wake_all(Self::low_half(&self.header().seat_events)) };
    }

    /// Sleeps until a seat is freed (the count moves from `seen`), at most `timeout`.
    pub(crate) fn sleep_for_seat_event(&self, seen: u32, timeout: Duration) {
        // SAFETY: the word lies inside our live mapping (kept alive by `self`), aligned.
        unsafe { sys::futex_wait(Self::low_half(&self.header().seat_events), seen, timeout) };
    }

    pub(crate) fn wake(&self, index: u32) {
        // SAFETY: the word lies inside our live mapping, 4-byte aligned.
        unsafe { sys::futex_wake_all(self.futex_word(index)) };
    }

    pub(crate) fn sleep(&self, index: u32, expect: u32, timeout: Duration) {
        // SAFETY: the word lies inside our live mapping (kept alive by `self`), aligned.
        unsafe { sys::futex_wait(self.futex_word(index), expect, timeout) };
    }

    /// Table time: the host's CLOCK_MONOTONIC (this process's, corrected for its time
    /// namespace) plus the table's base. No system call.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let offset = identity::timens_offset_ns();
        sys::monotonic_ns().wrapping_sub(offset as u64).wrapping_add(self.time_base)
    }

    /// Table time from `CLOCK_MONOTONIC_COARSE` ([`sys::monotonic_coarse_ns`]): lags
    /// [`Inner::now`] by up to a timer tick, never leads it, for a fifth of the cost.
    /// Only for what a lagging reading cannot get wrong: [`protocol::try_grant_free`].
    #[inline]
    pub(crate) fn now_lagging(&self) -> u64 {
        let offset = identity::timens_offset_ns();
        sys::monotonic_coarse_ns().wrapping_sub(offset as u64).wrapping_add(self.time_base)
    }

    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    fn count(&self, which: usize) {
        self.header().counters[which].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a fast-path event one time in `SAMPLE`, chosen by the clock's low bits, so
    /// that the fast path almost never touches the shared header line.
    #[inline]
    pub(crate) fn count_sampled(&self, which: usize, now: u64) {
        if now & (counter::SAMPLE - 1) == 0 {
            self.header().counters[which].fetch_add(counter::SAMPLE, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn name_matches(&self, slot: &Slot, word: u64, key: &Key, seat: u8) -> bool {
        bind::state(word) == bind::BOUND
            && bind::hash(word) == key.hash_bits()
            && bind::name_len(word) == key.len
            && bind::seat(word) == seat
            && slot.name.iter().zip(key.used_words()).all(|(a, b)| a.load(Ordering::Relaxed) == *b)
    }

    /// The grant word of slot `index`, found bound as `bound_as`, if it is still bound
    /// so once read: a word read without that check may belong to whatever name took
    /// the slot over meanwhile (the protocol's transitions check the same way).
    #[inline]
    pub(crate) fn word_as_bound(&self, index: u32, bound_as: u64) -> Option<u128> {
        let slot = self.slot(index);
        let word = slot.grant.load(Ordering::Acquire);
        (slot.bind.load(Ordering::Acquire) == bound_as).then_some(word)
    }

    /// Whether the slot, bound as `word`, is bound to `key`'s name at any seat.
    fn same_name(&self, slot: &Slot, word: u64, key: &Key) -> bool {
        bind::hash(word) == key.hash_bits()
            && bind::name_len(word) == key.len
            && slot.name.iter().zip(key.used_words()).all(|(a, b)| a.load(Ordering::Relaxed) == *b)
    }

    /// Lock-free lookup: the slot bound to `key` and its binding word.
    #[inline(always)]
    pub(crate) fn find(&self, key: &Key) -> Option<(u32, u64)> {
        self.find_seat(key, key.seat)
    }

    /// [`Inner::find`] of seat `seat` of `key`'s name (0: the name's own slot), without
    /// a key made for it.
    #[inline(always)]
    pub(crate) fn find_seat(&self, key: &Key, seat: u8) -> Option<(u32, u64)> {
        let mut index = key.home_of_seat(seat, self.capacity);
        for _ in 0..self.capacity {
            let slot = self.slot(index);
            let word = slot.bind.load(Ordering::Acquire);
            if bind::state(word) == bind::EMPTY {
                return None;
            }
            if self.name_matches(slot, word, key, seat) {
                return Some((index, word));
            }
            index = if index + 1 == self.capacity { 0 } else { index + 1 };
        }
        None
    }

    /// [`Inner::find`] for a name's own slot, from its bytes (see [`NameRef`]): the same
    /// probe and the same checks as with its [`Key`].
    #[inline(always)]
    fn find_name(&self, name: &NameRef<'_>) -> Option<(u32, u64)> {
        let mut index = name.home(self.capacity);
        for _ in 0..self.capacity {
            let slot = self.slot(index);
            let word = slot.bind.load(Ordering::Acquire);
            if bind::state(word) == bind::EMPTY {
                return None;
            }
            if bind::state(word) == bind::BOUND
                && bind::hash(word) == name.hash_bits()
                && bind::name_len(word) == name.len()
                && bind::seat(word) == 0
                && (0..name.used_words())
                    .all(|i| slot.name[i].load(Ordering::Relaxed) == name.word(i))
            {
                return Some((index, word));
            }
            index = if index + 1 == self.capacity { 0 } else { index + 1 };
        }
        None
    }

    /// Whether the slot's name is being (or was half-way) unbound.
    #[cold]
    fn is_retired(&self, index: u32) -> bool {
        grant::deadline(self.slot(index).grant.load(Ordering::Acquire)) == grant::UNBOUND
    }

    /// The recorded holder of the grant with `token` in slot `index`, if it is current.
    #[cold]
    pub(crate) fn current_holder(&self, index: u32, token: u64) -> Option<Holder> {
        let current = grant::token(self.slot(index).grant.load(Ordering::Acquire)) == token;
        self.holder_of(index, self.record_of(index, token).filter(|_| current))
    }

    /// The holder record in slot `index`, if it is the record of the grant with `token`.
    pub(crate) fn record_of(&self, index: u32, token: u64) -> Option<layout::holder::Record> {
        let r = layout::holder::Record::unpack(self.slot(index).holder.load(Ordering::Acquire));
        (r.tag == layout::holder::Record::tag_for(token)).then_some(r)
    }

    #[cold]
    fn holder_of(&self, index: u32, record: Option<layout::holder::Record>) -> Option<Holder> {
        let label = self.slot(index).label.load(Ordering::Relaxed);
        record.map(|r| Holder::from_record(&r, label))
    }

    /// The slot of `key` for a by-token call with `token`: refused when that grant is
    /// live and bound to a process other than this one (see [`LeaseTable::renew`]).
    /// A detached record never becomes bound again, and a dead process never lives
    /// again, so the verdict holds until the call's CAS.
    fn by_token(&self, key: &Key, token: u64) -> Result<u32> {
        let Some((mut index, bound_as)) = self.find(key) else {
            return Err(Error::Lost { token, reason: LostReason::NoSuchName });
        };
        let Some(head_word) = self.word_as_bound(index, bound_as) else {
            return Err(Error::Busy {
                location: self.location.to_string(),
                reason: "the name moved to another slot while this call looked it up".into(),
            });
        };
        let head = grant::deadline_bits(head_word);
        // A shared name's head carries the token of its latest grant of either kind: a
        // shared grant is found in its seat, else the token is the exclusive holder's.
        if grant::is_shared(head) {
            if let Some(seat) = self.seat_with_token(key, layout::MAX_SHARED, token) {
                index = seat;
            }
        }
        if let Some(permits) = grant::permits(head) {
            match self.seat_with_token(key, permits, token) {
                Some(seat) => index = seat,
                None => {
                    let latest = grant::token(head_word);
                    let reason = self.why_not_in_group(key, latest, permits, token);
                    return Err(Error::Lost { token, reason });
                }
            }
        }
        let slot = self.slot(index);
        let word = slot.grant.load(Ordering::Acquire);
        if grant::token(word) == token
            && protocol::classify(grant::deadline_bits(word), self.now()) == Observed::Held
        {
            match self.record_of(index, token) {
                Some(r) if r.detached || identity::is_me(&r) || identity::is_provably_dead(&r) => {}
                record => {
                    return Err(Error::BoundToProcess {
                        token,
                        holder: self.holder_of(index, record),
                    })
                }
            }
        }
        Ok(index)
    }

    /// The error for a by-token call whose `token` turned out not to be the live grant
    /// of slot `index`.
    fn lost_by_token(&self, index: u32, token: u64, l: protocol::Lost) -> Error {
        match lost_reason(l) {
            Some(_) => Error::Lost { token, reason: self.why_not_live(index, token) },
            None => interference(&self.location, index),
        }
    }

    /// Why `token` is not the live grant of slot `index` (as it is now). Tokens of a
    /// name only grow, across re-bindings too (the floor), so a token above the latest
    /// was never issued for it.
    fn why_not_live(&self, index: u32, token: u64) -> LostReason {
        let word = self.slot(index).grant.load(Ordering::Acquire);
        let latest = grant::token(word);
        if token > latest {
            return LostReason::NotIssued { latest };
        }
        if token < latest {
            return LostReason::TakenOver;
        }
        match protocol::classify(grant::deadline_bits(word), self.now()) {
            Observed::Revoked => LostReason::Revoked,
            Observed::Free => LostReason::Released,
            _ => LostReason::Expired,
        }
    }

    /// One attempt to take the lease on `key`, binding the name first if needed.
    #[inline(always)]
    pub(crate) fn attempt(&self, key: &Key, ttl: u64, label: Label) -> Result<Attempt> {
        for _ in 0..FREE_TRIES {
            let Some((index, bound_as)) = self.find(key) else { break };
            match self.grant_at(key, index, bound_as, ttl, label)? {
                Some(attempt) => return Ok(attempt),
                // Being unbound (by the table lock's holder, or by a process that died
                // doing it): the locked path waits for the former or finishes the
                // latter's work. Else the name moved: look again.
                None if self.is_retired(index) => break,
                None => {}
            }
        }
        self.attempt_locked(key, ttl, label)
    }

    /// [`Inner::grant_any`] for anything but an unfair exclusive acquisition: out of the
    /// fast path.
    #[cold]
    #[inline(never)]
    fn grant_other_kind(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        if options.fair {
            return self.grant_fair(key, ttl, options);
        }
        if options.shared {
            if options.permits > 1 {
                return Err(Error::InvalidOptions {
                    reason: "a lease cannot be both shared and one of several permits".into(),
                });
            }
            return self.grant_shared(key, ttl, options);
        }
        self.grant_permit(key, ttl, options)
    }

    /// What every grant is followed by: waking the observers it replaced, counting how
    /// it came about.
    #[inline]
    pub(crate) fn note_grant(&self, index: u32, g: &protocol::Granted) {
        if g.wake {
            self.wake(index);
        }
        match g.took {
            Took::Free | Took::Revoked => {}
            Took::Expired => self.count(counter::EXPIRED_RECLAIMS),
            Took::DeadHolder => self.count(counter::DEAD_HOLDER_RECLAIMS),
            Took::Corrupt => self.count(counter::CORRUPT_RECLAIMS),
        }
    }

    /// Tries to grant the lease in slot `index`, found bound to `key`'s name as
    /// `bound_as`; `None` when the slot no longer stands for that name.
    #[inline(always)]
    fn grant_at(
        &self,
        key: &Key,
        index: u32,
        bound_as: u64,
        ttl: u64,
        label: Label,
    ) -> Result<Option<Attempt>> {
        let me = identity::me().record(false);
        let now = self.now();
        let result = protocol::try_grant(
            self.slot(index),
            bound_as,
            now,
            ttl,
            me,
            label.to_word(),
            &mut identity::is_provably_dead,
        );
        match result {
            Ok(g) => {
                self.note_grant(index, &g);
                Ok(Some(Attempt::Won { slot: index, token: g.token, deadline: g.deadline }))
            }
            Err(Refusal::Held { token, deadline, holder }) => {
                self.count(counter::CONTENDED);
                Ok(Some(Attempt::Held { slot: index, bound_as, token, deadline, holder }))
            }
            Err(Refusal::Rebound) => Ok(None),
            Err(Refusal::TokenExhausted) => Err(token_exhausted(&self.location, index)),
            Err(Refusal::Group { permits }) => Err(self.wrong_kind(
                key,
                index,
                permits::kind(permits),
                crate::LeaseKind::Exclusive,
            )),
            Err(Refusal::Shared) => Ok(Some(Attempt::Shared { slot: index })),
            Err(Refusal::Interference) => Err(interference(&self.location, index)),
        }
    }

    /// A grant of `key`'s name of the kind and manner `options` ask for: slot, token and
    /// deadline.
    pub(crate) fn grant_any(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        if options.fair | options.shared | (options.permits > 1) {
            return self.grant_other_kind(key, ttl, options);
        }
        self.grant_exclusive(key, ttl, options)
    }

    /// The fast path of an unfair exclusive acquisition: the name is bound and its slot
    /// Free or Revoked, granted with the coarse clock (see [`protocol::try_grant_free`]
    /// on why that is safe) when the grant keeps about 255/256 of its TTL that way (it
    /// loses the clock's lag: a tick, more when ticks are late). `None` for anything else (not bound, held, expired, a
    /// head, a short TTL, a lost race): [`Inner::grant_exclusive`] judges it with the
    /// precise clock.
    #[inline(always)]
    fn grant_free(&self, key: &Key, ttl: u64, label: Label) -> Option<(u32, u64, u64)> {
        if !coarse_clock_will_do(ttl) {
            return None;
        }
        self.grant_free_at(self.find(key)?, ttl, label)
    }

    /// [`Inner::grant_free`] in slot `index`, found bound to the name as `bound_as`.
    #[inline(always)]
    fn grant_free_at(
        &self,
        (index, bound_as): (u32, u64),
        ttl: u64,
        label: Label,
    ) -> Option<(u32, u64, u64)> {
        let me = identity::me().record(false);
        let now = self.now_lagging();
        let g =
            protocol::try_grant_free(self.slot(index), bound_as, now, ttl, me, label.to_word())?;
        self.note_grant(index, &g);
        Some((index, g.token, g.deadline))
    }

    /// [`Inner::grant_any`] for an unfair exclusive acquisition: [`Inner::grant_free`]
    /// (inlined into [`LeaseTable::acquire_with`]'s worker), else the precise path.
    #[inline(always)]
    fn grant_exclusive(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        match self.grant_free(key, ttl, options.label) {
            Some(granted) => Ok(granted),
            None => self.grant_exclusive_precise(key, ttl, options),
        }
    }

    /// [`Inner::grant_exclusive`] judged with the precise clock: waiting, expiry, dead
    /// holders, binding, shared names.
    #[inline(never)]
    fn grant_exclusive_precise(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        for _ in 0..FREE_TRIES {
            let granted = match options.wait {
                None => match self.attempt(key, ttl, options.label)? {
                    Attempt::Won { slot, token, deadline } => Some((slot, token, deadline)),
                    Attempt::Held { slot, token, deadline, holder, .. } => {
                        let remaining = Duration::from_nanos(deadline.saturating_sub(self.now()));
                        let holder = self.holder_of(slot, holder);
                        return Err(Error::Held { token, remaining, holder });
                    }
                    Attempt::Shared { .. } => self.grant_exclusive_of_shared(
                        key,
                        ttl,
                        options.label,
                        &Patience::of(options),
                    )?,
                },
                Some(_) => {
                    let patience = Patience::of(options);
                    self.acquire_blocking(key, ttl, options.label, &patience, None)?
                }
            };
            if let Some(granted) = granted {
                return Ok(granted);
            }
        }
        Err(Error::Busy {
            location: self.location.to_string(),
            reason: "the name kept changing between shared and unbound while this call took it"
                .into(),
        })
    }

    /// The leader that slot `index` shows while its grant word is still `word` (flags
    /// aside), or `None` when it changed or is not held.
    pub(crate) fn leader_at(&self, index: u32, word: u128) -> Option<Leader> {
        let snap = protocol::snapshot(self.slot(index))?;
        let flagless = |w: u128| w & !(grant::FLAGS as u128);
        if flagless(snap.grant) != flagless(word) {
            return None;
        }
        Leader::from_info(&self.info_of(index, &snap, self.now(), SystemTime::now()))
    }

    /// The leader slot `index` shows if its live grant has `token`.
    pub(crate) fn leader_now(&self, index: u32, token: u64) -> Option<Leader> {
        let snap = protocol::snapshot(self.slot(index))?;
        let info = self.info_of(index, &snap, self.now(), SystemTime::now());
        Leader::from_info(&info).filter(|l| l.term == token)
    }

    /// Whether slot `index`, whose grant word is `word`, was never granted since its
    /// name was bound.
    pub(crate) fn never_granted(&self, index: u32, word: u128) -> bool {
        grant::deadline(word) == grant::FREE
            && self.slot(index).transitions.load(Ordering::Relaxed) == 0
    }

    fn info_of(
        &self,
        index: u32,
        snap: &protocol::Snapshot,
        now: u64,
        wall: SystemTime,
    ) -> LeaseInfo {
        let len = bind::name_len(snap.bind).min(NAME_MAX);
        let mut bytes = [0u8; NAME_MAX];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&snap.name) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let name = String::from_utf8_lossy(&bytes[..len]).into_owned();
        let token = grant::token(snap.grant);
        let bits = grant::deadline_bits(snap.grant);
        let deadline = bits & grant::DEADLINE;
        let granted = snap.transitions > 0;
        let state = match protocol::classify(bits, now) {
            Observed::Held | Observed::Corrupt => LeaseState::Held,
            Observed::Expired => LeaseState::Expired,
            Observed::Revoked => LeaseState::Revoked,
            Observed::Free | Observed::Unbound | Observed::Group => LeaseState::Free,
        };
        let at = |t: u64| {
            if now >= t {
                wall.checked_sub(Duration::from_nanos(now - t))
            } else {
                wall.checked_add(Duration::from_nanos(t - now))
            }
        };
        let real_deadline = deadline > grant::UNBOUND && grant::permits(bits).is_none();
        let mut info = LeaseInfo {
            name,
            token: if granted { token } else { 0 },
            state,
            holder: snap.holder.filter(|_| granted).map(|r| Holder::from_record(&r, snap.label)),
            acquired_at: if granted { at(token) } else { None },
            renewed_at: if granted && snap.renewed_at > 0 { at(snap.renewed_at) } else { None },
            expires_at: if real_deadline { at(deadline) } else { None },
            remaining: if state == LeaseState::Held {
                Duration::from_nanos(deadline.saturating_sub(now))
            } else {
                Duration::ZERO
            },
            transitions: snap.transitions,
            slot: index,
            kind: crate::info::LeaseKind::Exclusive,
            grants: Vec::new(),
            queue: Vec::new(),
        };
        if state == LeaseState::Held {
            info.grants.push(permits::grant_info(&info));
        }
        info
    }

    /// The info of the name whose own slot (or head) is `index`, from `snap`.
    fn name_info(
        &self,
        index: u32,
        snap: &protocol::Snapshot,
        now: u64,
        wall: SystemTime,
        with_queue: bool,
    ) -> LeaseInfo {
        let bits = grant::deadline_bits(snap.grant);
        // The name as the snapshot saw it: the slot may be another name's by now.
        let key = Key::from_stored(snap.name, bind::name_len(snap.bind), 0);
        let mut info = match grant::permits(bits) {
            Some(permits) => self.group_info(&key, index, snap, permits, now, wall),
            None if grant::is_shared(bits) => self.shared_info(&key, index, snap, now, wall),
            None => self.info_of(index, snap, now, wall),
        };
        if with_queue {
            info.queue = self.queue_of(&key, now, wall);
        }
        info
    }
}

impl LeaseTable {
    /// Takes the lease on `name` for `ttl` if nobody holds it; never waits.
    ///
    /// The lease is bound to this process: if the process dies, others may take it
    /// as soon as they can prove the death (at once on Linux 6.9+), else when the TTL
    /// runs out. Fails with [`Error::Held`] if someone else holds it.
    ///
    /// A grant runs from the time the library read its clock, which for a free name
    /// and a TTL of 256 coarse-clock ticks or more (1.024 s with a 4 ms tick) is
    /// `CLOCK_MONOTONIC_COARSE`, up to a tick or so behind: such a grant may end that
    /// much before "call time + `ttl`" (never after). This is so for every kind of
    /// acquisition. Judge a lease by [`Lease::is_valid`], [`Lease::remaining`] and
    /// [`Lease::deadline`], which read the grant as stored, never by a deadline of
    /// your own.
    #[inline(always)]
    pub fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Lease<'_>> {
        to_etcd!(self, t => self.acquire_on_etcd(t, name, ttl, &AcquireOptions::new()));
        // As `acquire_with`, but the options are built only off the fast path: their
        // fields were stores that the grant's CAS waited behind (`1.14 → 1.04` against
        // the clock + CAS limit), and their interrupt a drop to check.
        let (slot, token, deadline) = self.grant_now(name, ttl)?;
        Ok(Lease::new(self, slot, token, deadline))
    }

    /// [`LeaseTable::try_acquire`] for the C library, which keeps a lease's parts in a
    /// handle of its own: the parts, with no [`Lease`] made, taken apart and dropped
    /// (a `drop_in_place::<Lease>` call per take). Not a stable API.
    #[doc(hidden)]
    #[inline(always)]
    pub fn try_acquire_raw(&self, name: &str, ttl: Duration) -> Result<RawLease> {
        to_etcd!(self, _t => self.try_acquire(name, ttl).map(Lease::into_raw));
        let (slot, token, deadline) = self.grant_now(name, ttl)?;
        Ok(RawLease { slot, token, deadline, pid: identity::pid() })
    }

    /// Takes the lease on `name` for `ttl`, waiting up to `timeout` (forever if `None`)
    /// while somebody else holds it. Waiting sleeps on a futex: it wakes at once when
    /// the holder releases or the lease is revoked, when the holder's deadline passes,
    /// and (for a live-process holder) within 50 ms of the holder dying. It also looks
    /// at least once a second, so that a releasing process killed before it could wake
    /// the waiters delays them by a second at most. Waiting is not fair (ask for
    /// [`AcquireOptions::fair`] for arrival order): a waiter that is woken but finds the
    /// lease taken again (a holder taking it in a loop) sleeps 50 µs before it looks
    /// again, which lets such a holder run undisturbed and keeps throughput up.
    pub fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        timeout: Option<Duration>,
    ) -> Result<Lease<'_>> {
        self.acquire_with(name, ttl, &AcquireOptions::new().wait(timeout))
    }

    /// Takes a lease with every option: waiting, label.
    #[inline(always)]
    pub fn acquire_with(
        &self,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
    ) -> Result<Lease<'_>> {
        to_etcd!(self, t => self.acquire_on_etcd(t, name, ttl, options));
        // The lease is built here, in the caller's frame, from plain words: returning a
        // `Result<Lease>` from a non-inlined function costs the caller a
        // store-forwarding stall when it moves the value out.
        let (slot, token, deadline) = self.grant(name, ttl, options)?;
        Ok(Lease::new(self, slot, token, deadline))
    }

    /// [`LeaseTable::acquire_with`] on etcd, out of the shared-memory fast path.
    #[cfg(feature = "etcd")]
    #[cold]
    #[inline(never)]
    fn acquire_on_etcd(
        &self,
        t: &crate::etcd::EtcdTable,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
    ) -> Result<Lease<'_>> {
        let granted = t.acquire_with(name, ttl, options);
        wait::resume_check_panic(&granted);
        granted.map(|l| Lease::on_etcd(self, l))
    }

    /// Does the work of [`LeaseTable::try_acquire`]: slot, token and deadline.
    #[inline(never)]
    fn grant_now(&self, name: &str, ttl: Duration) -> Result<(u32, u64, u64)> {
        // The fast path looks the name up from its bytes: no key is laid out (see
        // `NameRef`); the key is built only if that does not grant.
        let Some(fast) = NameRef::new(name) else { return Err(Key::invalid(name)) };
        let ttl = ttl_ns(ttl)?;
        let inner = self.shm();
        if coarse_clock_will_do(ttl) {
            if let Some(found) = inner.find_name(&fast) {
                if let Some(granted) = inner.grant_free_at(found, ttl, Label::default()) {
                    return Ok(granted);
                }
            }
        }
        self.grant_now_slow(name, ttl)
    }

    /// [`LeaseTable::grant_now`] off its fast path, judged with the precise clock.
    #[inline(never)]
    fn grant_now_slow(&self, name: &str, ttl: u64) -> Result<(u32, u64, u64)> {
        let key = &Key::build(name);
        // No interrupt and no wait: never `Interrupted` (see `grant`).
        self.shm().grant_exclusive_precise(key, ttl, &AcquireOptions::new())
    }

    /// Does the work of [`LeaseTable::acquire_with`]: slot, token and deadline.
    #[inline(never)]
    fn grant(
        &self,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        // The key is used where it was built: moving it into and out of a `Result`
        // (`Key::new(name)?`) copied its words with wider loads than the stores that had
        // just written them, a store-forwarding stall worth a fifth of this function; so
        // did returning it from `Key::build` (see `Key::fill`).
        let mut built = Key::EMPTY;
        built.fill(name);
        let key = &built;
        if key.len == 0 {
            return Err(Key::invalid(name));
        }
        let ttl = ttl_ns(ttl)?;
        let inner = self.shm();
        let other_kind = options.fair | options.shared | (options.permits > 1);
        // The fast path returns straight into the caller's slot (it is never interrupted):
        // going through `granted` below costs a copy of the result.
        if !other_kind {
            if let Some(granted) = inner.grant_free(key, ttl, options.label) {
                return Ok(granted);
            }
        } else if !options.fair & (options.permits <= 1 || !options.shared) {
            // Permits and shared grants have fast paths of their own (same clock rules).
            let free = if options.shared {
                inner.grant_shared_free(key, ttl, options.label)
            } else {
                inner.grant_permit_free(key, options.permits, ttl, options.label)
            };
            if let Some(granted) = free {
                return Ok(granted);
            }
        }
        let granted = if other_kind {
            inner.grant_other_kind(key, ttl, options)
        } else {
            inner.grant_exclusive_precise(key, ttl, options)
        };
        wait::resume_check_panic(&granted);
        granted
    }

    /// Extends the grant of `name` with `token` to `ttl` from now — for detached leases
    /// (see [`Lease::detach`]), from any process. Returns the new deadline.
    ///
    /// Fails with [`Error::BoundToProcess`] if the grant is bound to another live
    /// process (tokens are public: only the holder may renew its lease), and with
    /// [`Error::Lost`] saying why if `token` is not the live grant.
    pub fn renew(&self, name: &str, token: u64, ttl: Duration) -> Result<Instant> {
        to_etcd!(self, t => t.renew(name, token, ttl));
        let key = Key::new(name)?;
        let ttl = ttl_ns(ttl)?;
        let inner = self.shm();
        let index = inner.by_token(&key, token)?;
        let now = inner.now();
        let deadline = protocol::renew(inner.slot(index), token, now, ttl)
            .map_err(|l| inner.lost_by_token(index, token, l))?;
        inner.count_sampled(counter::RENEWALS, now);
        Ok(Instant::now() + Duration::from_nanos(deadline - now))
    }

    /// Ends the grant of `name` with `token` — for detached leases, from any process.
    /// Fails like [`LeaseTable::renew`].
    pub fn release(&self, name: &str, token: u64) -> Result<()> {
        to_etcd!(self, t => t.release(name, token));
        let key = Key::new(name)?;
        let inner = self.shm();
        let index = inner.by_token(&key, token)?;
        match protocol::release(inner.slot(index), token, 0) {
            Ok(wake) => {
                if wake {
                    inner.freed(index);
                }
                Ok(())
            }
            Err(l) => Err(inner.lost_by_token(index, token, l)),
        }
    }

    /// Revokes whatever grant `name` has, waking anyone waiting for it. Returns the
    /// revoked token, or `None` if nothing was held. The holder learns on its next
    /// renewal (or at once, with a keep-alive) that its lease is lost.
    pub fn revoke(&self, name: &str) -> Result<Option<u64>> {
        to_etcd!(self, t => t.revoke(name));
        self.on_live_grant(name, None, protocol::revoke).inspect(|done| {
            if done.is_some() {
                self.shm().count(counter::REVOCATIONS);
            }
        })
    }

    /// Revokes the grant of `name` only if its token is `token`; otherwise fails with
    /// [`Error::Lost`] saying what is true instead (that grant ended, was never issued,
    /// or a newer one is current; or the table has no such name).
    pub fn revoke_token(&self, name: &str, token: u64) -> Result<()> {
        to_etcd!(self, t => t.revoke_token(name, token));
        self.on_live_grant(name, Some(token), protocol::revoke)?;
        self.shm().count(counter::REVOCATIONS);
        Ok(())
    }

    /// Asks the holder of `name`'s live grant (or, with `token`, of that grant only) to
    /// release it: cooperative hand-over. Nothing changes about who holds it or until
    /// when; the holder sees [`Lease::release_requested`], and its keep-alive wakes
    /// whoever waits in [`Lease::wait_notice`]. Returns the token asked, or `None` if
    /// nothing was held (without `token`); with `token`, a grant that is not the live
    /// one fails like [`LeaseTable::revoke_token`]. Asking twice is asking once.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("shmlease-doc-request-{}", std::process::id()));
    /// # let table = shmlease::LeaseTable::open_or_create(&path, &Default::default())?;
    /// use std::time::Duration;
    /// let lease = table.try_acquire("planner", Duration::from_secs(30))?;
    /// assert!(!lease.release_requested());
    /// assert_eq!(table.request_release("planner", None)?, Some(lease.token()));
    /// assert!(lease.release_requested());
    /// lease.release()?;
    /// assert_eq!(table.request_release("planner", None)?, None);
    /// # shmlease::LeaseTable::remove(&path)?;
    /// # Ok::<(), shmlease::Error>(())
    /// ```
    pub fn request_release(&self, name: &str, token: Option<u64>) -> Result<Option<u64>> {
        to_etcd!(self, t => t.request_release(name, token));
        self.on_live_grant(name, token, protocol::request_release)
    }

    /// Finds `name` and applies `op` to its live grant (only the one with token `only`,
    /// when given), waking the futex if `op` says so.
    fn on_live_grant(&self, name: &str, only: Option<u64>, op: SlotOp) -> Result<Option<u64>> {
        let key = Key::new(name)?;
        let inner = self.shm();
        let not_there = || match only {
            Some(token) => Err(Error::Lost { token, reason: LostReason::NoSuchName }),
            None => Ok(None),
        };
        for _ in 0..BIND_PASSES {
            let Some((index, bound_as)) = inner.find(&key) else { return not_there() };
            let Some(word) = inner.word_as_bound(index, bound_as) else { continue };
            let head = grant::deadline_bits(word);
            if grant::is_shared(head) {
                return inner.on_shared(&key, (index, bound_as, word), only, op);
            }
            match op(inner.slot(index), bound_as, inner.now(), only) {
                Ok(Targeted::Done { token, wake }) => {
                    if wake {
                        inner.freed(index);
                    }
                    return Ok(Some(token));
                }
                Ok(Targeted::NotHeld { .. } | Targeted::OtherToken { .. }) => {
                    return match only {
                        None => Ok(None),
                        Some(token) => {
                            Err(Error::Lost { token, reason: inner.why_not_live(index, token) })
                        }
                    };
                }
                Err(Refusal::Group { permits }) if permits > 0 => {
                    return inner.on_seats(&key, grant::token(word), permits, only, op)
                }
                Err(Refusal::Rebound) if inner.is_retired(index) => return not_there(),
                Err(Refusal::Rebound) => continue,
                Err(_) => return Err(interference(&inner.location, index)),
            }
        }
        Err(Error::Busy {
            location: inner.location.to_string(),
            reason: format!("{name:?} kept moving between slots while this call looked for it"),
        })
    }

    /// The lease on `name`, if the name is known to the table.
    pub fn get(&self, name: &str) -> Result<Option<LeaseInfo>> {
        to_etcd!(self, t => t.get(name));
        let key = Key::new(name)?;
        let inner = self.shm();
        let Some((index, _)) = inner.find(&key) else { return Ok(None) };
        let now = inner.now();
        let wall = SystemTime::now();
        Ok(protocol::snapshot(inner.slot(index))
            .map(|s| inner.name_info(index, &s, now, wall, true)))
    }

    /// Every name the table knows, in slot order (of its own slot), whatever its state.
    pub fn list(&self) -> Result<Vec<LeaseInfo>> {
        to_etcd!(self, t => t.list());
        let inner = self.shm();
        let now = inner.now();
        let wall = SystemTime::now();
        let mut out = Vec::new();
        // Queues are looked up only for the names that have places bound (each lookup
        // probes every place a queue can have).
        let mut queued = std::collections::HashSet::new();
        for index in 0..inner.capacity {
            if let Some(s) = protocol::snapshot(inner.slot(index)) {
                if bind::seat(s.bind) >= layout::QUEUE_FIRST {
                    queued.insert((s.name, bind::name_len(s.bind)));
                }
                if grant::deadline(s.grant) != grant::UNBOUND && bind::seat(s.bind) == 0 {
                    out.push((index, s));
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|(index, s)| {
                let with_queue = queued.contains(&(s.name, bind::name_len(s.bind)));
                inner.name_info(index, &s, now, wall, with_queue)
            })
            .collect())
    }

    /// Facts and counters about the table (scans every slot).
    pub fn info(&self) -> TableInfo {
        // Infallible by contract: an etcd table that cannot be read tells what its
        // descriptor says, with no counts (`try_info` tells why).
        to_etcd!(self, t => t.info().unwrap_or_else(|_| t.descriptor_info()));
        let inner = self.shm();
        let h = inner.header();
        let c = |i: usize| h.counters[i].load(Ordering::Relaxed);
        let now = inner.now();
        let (mut names, mut held, mut grants) = (0u32, 0u32, c(counter::RETIRED_GRANTS));
        for index in 0..inner.capacity {
            let slot = inner.slot(index);
            let b = slot.bind.load(Ordering::Relaxed);
            if bind::state(b) == bind::BOUND {
                let g = slot.grant.load(Ordering::Relaxed);
                if grant::deadline(g) != grant::UNBOUND {
                    names += (bind::seat(b) == 0) as u32;
                    // Places in fair queues are waiters, not grants of their names.
                    if bind::seat(b) < layout::QUEUE_FIRST {
                        grants = grants.wrapping_add(slot.transitions.load(Ordering::Relaxed));
                        held += matches!(
                            protocol::classify(grant::deadline_bits(g), now),
                            Observed::Held | Observed::Corrupt
                        ) as u32;
                    }
                }
            }
        }
        let boot: Vec<String> = h
            .boot_id
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .map(|b| format!("{b:02x}"))
            .collect();
        let boot = boot.concat();
        let creator = h.creator.load(Ordering::Relaxed);
        TableInfo {
            location: inner.location.clone(),
            format_version: layout::FORMAT_VERSION,
            capacity: inner.capacity,
            names,
            held,
            size_bytes: layout::table_size(inner.capacity) as u64,
            slot_size: SLOT_SIZE as u32,
            boot_id: format!(
                "{}-{}-{}-{}-{}",
                &boot[0..8],
                &boot[8..12],
                &boot[12..16],
                &boot[16..20],
                &boot[20..32]
            ),
            clock: "CLOCK_MONOTONIC",
            creator_pid: creator as u32,
            creator_uid: (creator >> 32) as u32,
            created_at: SystemTime::UNIX_EPOCH
                + Duration::from_nanos(h.created_unix_ns.load(Ordering::Relaxed)),
            counters: Counters {
                grants,
                expired_reclaims: c(counter::EXPIRED_RECLAIMS),
                dead_holder_reclaims: c(counter::DEAD_HOLDER_RECLAIMS),
                corrupt_reclaims: c(counter::CORRUPT_RECLAIMS),
                renewals: c(counter::RENEWALS),
                releases: c(counter::RELEASES),
                revocations: c(counter::REVOCATIONS),
                contended: c(counter::CONTENDED),
                binds: c(counter::BINDS),
                unbinds: c(counter::UNBINDS),
            },
        }
    }

    /// [`LeaseTable::info`], or why it cannot be read (an etcd cluster that does not
    /// answer). Never fails on a shared-memory table.
    pub fn try_info(&self) -> Result<TableInfo> {
        to_etcd!(self, t => t.info());
        Ok(self.info())
    }

    /// Where the table lives.
    pub fn location(&self) -> &Location {
        to_etcd!(self, t => t.as_location());
        &self.shm().location
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        to_etcd!(self, t => t.capacity());
        self.shm().capacity
    }
}

/// Releases the grant with `token` in slot `index` (see [`protocol::release`]).
#[inline(always)]
pub(crate) fn release_slot(
    inner: &Inner,
    index: u32,
    token: u64,
    deadline_hint: u64,
) -> Result<()> {
    match protocol::release(inner.slot(index), token, deadline_hint) {
        Ok(wake) => {
            // The token's low bits (a clock reading) are as good a sampling coin as a
            // fresh clock read, and cost nothing; the hint may be a constant 0.
            inner.count_sampled(counter::RELEASES, token);
            if wake {
                inner.freed(index);
            }
            Ok(())
        }
        Err(l) => Err(lost_slot(token, l, inner, index)),
    }
}

/// [`lost`], out of line (the error is large; the fast path only tests for it).
#[cold]
#[inline(never)]
fn lost_slot(token: u64, l: protocol::Lost, inner: &Inner, index: u32) -> Error {
    lost(token, l, &inner.location, index)
}

/// Turns a grant into a detached one.
pub(crate) fn detach_slot(inner: &Inner, index: u32, token: u64) -> Result<DetachedLease> {
    let now = inner.now();
    let slot = inner.slot(index);
    let record = identity::me().record(true);
    protocol::rewrite_holder(slot, token, now, record)
        .map_err(|l| lost(token, l, &inner.location, index))?;
    let deadline = grant::deadline(slot.grant.load(Ordering::Acquire));
    Ok(DetachedLease {
        token,
        deadline: Instant::now() + Duration::from_nanos(deadline.saturating_sub(now)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert!(ttl_ns(Duration::ZERO).is_err());
        assert!(ttl_ns(Duration::from_nanos(999)).is_err());
        assert!(ttl_ns(Duration::from_micros(1)).is_ok());
        assert!(ttl_ns(Duration::from_secs(365 * 86400)).is_ok());
        assert!(ttl_ns(Duration::from_secs(365 * 86400 + 1)).is_err());
        assert!(ttl_ns(Duration::MAX).is_err());
    }
}
