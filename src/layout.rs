//! The on-disk (in-memory) format of a lease table: a 256-byte header followed by
//! `capacity` slots of 128 bytes. In the mapping every field is an atomic, because other
//! processes write it concurrently and may write garbage; nothing in it is ever read
//! through a plain reference. [`Descriptor`] and [`HeaderImage`] are the header's bytes
//! as plain integers, for private copies only: the header of a file read before it is
//! mapped, and the one written into a new file. Sizes and offsets are pinned by `const`
//! asserts: they are the format.
//!
//! ```text
//! offset 0      Header (256 bytes, 4 cache lines)
//! offset 256    Slot 0 (128 bytes: line 0 = lease state, line 1 = name)
//! offset 384    Slot 1
//! ...
//! ```

use bytemuck::{Pod, Zeroable};

use crate::sync::{AtomicU128, AtomicU64};

/// `b"SHMLEASE"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMLEASE");
/// Bumped on any change to the layout or to the meaning of a field.
pub const FORMAT_VERSION: u32 = 3;
/// Written by the creator in its native byte order; a reader of the other order sees
/// `0x0403_0201` and refuses the table.
pub const ENDIAN_MARK: u32 = 0x0102_0304;
/// Bytes before the first slot.
pub const HEADER_SIZE: usize = 256;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 128;
/// Alignment of every slot (two cache lines, so that the adjacent-line prefetcher of one
/// slot never drags in a neighbour's lease word).
pub const SLOT_ALIGN: usize = 128;
/// Longest lease name, in bytes.
pub const NAME_MAX: usize = 64;
/// Longest holder label, in bytes.
pub const LABEL_MAX: usize = 8;
/// Largest capacity a table may be created with (2 GiB of slots).
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Most grants a multi-holder name can have at once (`permits = N`): one slot ("seat")
/// each, numbered 1..=N in the binding word's 8-bit seat field.
pub const MAX_SEATS: u32 = 128;
/// The first seat number of a name's fair queue: places 129..=255, one slot each.
pub const QUEUE_FIRST: u8 = 129;
/// Most fair acquirers that can wait for one name at once.
pub const MAX_QUEUE: u32 = 255 - QUEUE_FIRST as u32 + 1;
/// Table time values at or above this are garbage (table time reaches it after 9 years
/// of uptime; deadlines up to two years beyond it still fit below the grant word's flag
/// and kind bits).
pub const TIME_LIMIT: u64 = 1 << 58;
/// Most shared holders a name can have at once: seats 1..=64 of a shared name's head.
pub const MAX_SHARED: u32 = 64;
/// `CLOCK_MONOTONIC`, recorded so that a future format can use another clock.
pub const CLOCK_ID_MONOTONIC: u32 = 1;

/// The `geometry` word of the header: `HEADER_SIZE` | `SLOT_SIZE` << 16 | `NAME_MAX` << 32
/// | `SLOT_ALIGN` << 48.
pub const GEOMETRY: u64 = HEADER_SIZE as u64
    | (SLOT_SIZE as u64) << 16
    | (NAME_MAX as u64) << 32
    | (SLOT_ALIGN as u64) << 48;

/// Total size of a table of `capacity` slots.
pub const fn table_size(capacity: u32) -> usize {
    HEADER_SIZE + capacity as usize * SLOT_SIZE
}

/// The table header. Line 0 is written once by the creator before the table is linked
/// into place and never again; line 1 changes only under the table lock (reboot,
/// binding); line 2 holds statistics counters; line 3 is reserved (zero).
#[repr(C, align(64))]
pub struct Header {
    // --- line 0: identity and layout descriptor ---
    pub magic: AtomicU64,
    /// `FORMAT_VERSION` (low 32 bits) | `ENDIAN_MARK` (high 32 bits).
    pub version_endian: AtomicU64,
    /// [`GEOMETRY`].
    pub geometry: AtomicU64,
    /// Number of slots (fits in 32 bits; the high half must be zero).
    pub capacity: AtomicU64,
    /// Wall-clock creation time, nanoseconds since the Unix epoch (informational).
    pub created_unix_ns: AtomicU64,
    /// Creator's pid (low 32 bits) and uid (high 32 bits), informational.
    pub creator: AtomicU64,
    /// `CLOCK_ID_MONOTONIC`.
    pub clock_id: AtomicU64,
    pub reserved0: AtomicU64,
    // --- line 1: time and fencing ---
    /// `/proc/sys/kernel/random/boot_id` of the boot that `time_base` belongs to.
    pub boot_id: [AtomicU64; 2],
    /// Added (wrapping) to the host's CLOCK_MONOTONIC to give table time. Rebased after a
    /// reboot so that table time keeps growing past every deadline and token ever written.
    pub time_base: AtomicU64,
    /// No token handed out by a slot bound after this point is ≤ this value: raised to a
    /// slot's last token whenever that slot's name is unbound (see `protocol`).
    pub token_floor: AtomicU64,
    /// Slots currently bound to a name (maintained under the table lock; advisory).
    pub bound: AtomicU64,
    /// Bumped (wrapping) whenever a name is bound to a slot or unbound from one: the
    /// futex word (its low half) of observers of names not in the table.
    pub name_events: AtomicU64,
    /// Bumped (wrapping) whenever a seat of a multi-holder or shared name on which a
    /// waiter announced itself is freed: the futex word (its low half) of acquirers
    /// waiting for any seat of a name (see `table::permits`).
    pub seat_events: AtomicU64,
    /// The last ticket handed to a fair acquirer (see `protocol::take_ticket`): every
    /// place in a fair queue, of any name, takes a larger one.
    pub tickets: AtomicU64,
    // --- lines 2 and 3: counters (slow paths, or sampled) ---
    pub counters: [AtomicU64; 16],
}

/// Line 0 of the header (identity and layout descriptor) as plain integers, field by
/// field as in [`Header`]. Every 64 bytes are a valid `Descriptor`, so a copy of a file's
/// first bytes can be read into one without `unsafe`; what the values mean is checked by
/// whoever reads it. Never a view of a live mapping.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Descriptor {
    pub magic: u64,
    pub version_endian: u64,
    pub geometry: u64,
    pub capacity: u64,
    pub created_unix_ns: u64,
    pub creator: u64,
    pub clock_id: u64,
    pub reserved0: u64,
}

impl Descriptor {
    /// The format version field.
    pub const fn version(&self) -> u32 {
        self.version_endian as u32
    }
    /// The byte-order mark field (`ENDIAN_MARK` if written in this machine's order).
    pub const fn endian_mark(&self) -> u32 {
        (self.version_endian >> 32) as u32
    }
}

/// The whole header as plain integers, field by field as in [`Header`]: what a creator
/// writes into a new table file before anybody can map it.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct HeaderImage {
    pub descriptor: Descriptor,
    pub boot_id: [u64; 2],
    pub time_base: u64,
    pub token_floor: u64,
    pub bound: u64,
    pub name_events: u64,
    pub seat_events: u64,
    pub tickets: u64,
    pub counters: [u64; 16],
}

/// Indexes into `Header::counters`.
pub mod counter {
    /// Grants that took over an expired lease.
    pub const EXPIRED_RECLAIMS: usize = 0;
    /// Grants that took over a lease whose holder process was provably dead.
    pub const DEAD_HOLDER_RECLAIMS: usize = 1;
    /// Successful revocations.
    pub const REVOCATIONS: usize = 2;
    /// Acquire attempts refused because the lease was held.
    pub const CONTENDED: usize = 3;
    /// Names bound to a slot.
    pub const BINDS: usize = 4;
    /// Names unbound so that their slot could be reused.
    pub const UNBINDS: usize = 5;
    /// Grants that replaced a slot holding an impossible (corrupt) deadline.
    pub const CORRUPT_RECLAIMS: usize = 6;
    /// Grants, counted only when a name is unbound (live slots carry their own count).
    pub const RETIRED_GRANTS: usize = 7;
    /// Renewals, sampled: one in `SAMPLE` (chosen by the clock's low bits) adds `SAMPLE`.
    pub const RENEWALS: usize = 8;
    /// Releases, sampled like `RENEWALS`.
    pub const RELEASES: usize = 9;
    /// Places held in fair queues, across the table (not a statistic: fair acquirers
    /// look at a name's queue only while it is not 0). Counted before a place is taken
    /// and after it is given up, so it is never too low; a waiter killed while queued
    /// leaves it too high for good (fair acquisitions then always look at the queue).
    pub const PLACES: usize = 10;
    /// Sampling period of the sampled counters (a power of two).
    pub const SAMPLE: u64 = 64;
}

/// One lease slot. Line 0 is everything a grant touches; line 1 is the name, written
/// only while binding (under the table lock) and read by lookups.
#[repr(C, align(128))]
pub struct Slot {
    /// The grant word: see [`grant`]. The only word whose CAS decides ownership.
    pub grant: AtomicU128,
    /// The holder record: see [`holder`]. Tagged with the grant it describes.
    pub holder: AtomicU128,
    /// The binding word: see [`bind`].
    pub bind: AtomicU64,
    /// Table time of the last grant or renewal.
    pub renewed_at: AtomicU64,
    /// Grants since this name was bound to this slot.
    pub transitions: AtomicU64,
    /// Holder label, UTF-8, zero padded, little-endian bytes.
    pub label: AtomicU64,
    /// Name bytes, zero padded, little-endian words; length is in `bind`.
    pub name: [AtomicU64; NAME_MAX / 8],
}

impl Slot {
    /// A zeroed slot in ordinary memory (EMPTY, never granted): for tests and models.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Slot {
        Slot {
            grant: AtomicU128::new(0),
            holder: AtomicU128::new(0),
            bind: AtomicU64::new(0),
            renewed_at: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            label: AtomicU64::new(0),
            name: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<Header>() == HEADER_SIZE);
    assert!(core::mem::size_of::<Slot>() == SLOT_SIZE);
    assert!(core::mem::align_of::<Slot>() == SLOT_ALIGN);
    assert!(HEADER_SIZE % SLOT_ALIGN == 0);
    assert!(core::mem::offset_of!(Slot, grant) == 0);
    assert!(core::mem::offset_of!(Slot, holder) == 16);
    assert!(core::mem::offset_of!(Slot, bind) == 32);
    assert!(core::mem::offset_of!(Slot, label) == 56);
    assert!(core::mem::offset_of!(Slot, name) == 64);
    assert!(core::mem::offset_of!(Header, boot_id) == 64);
    assert!(core::mem::offset_of!(Header, seat_events) == 112);
    assert!(core::mem::offset_of!(Header, counters) == 128);
    // The plain copies have the header's layout exactly.
    macro_rules! same_offsets {
        ($plain:ty: $($field:ident),+) => {
            $(assert!(
                core::mem::offset_of!($plain, $field) == core::mem::offset_of!(Header, $field)
            );)+
        };
    }
    same_offsets!(Descriptor: magic, version_endian, geometry, capacity);
    same_offsets!(Descriptor: created_unix_ns, creator, clock_id, reserved0);
    same_offsets!(HeaderImage: boot_id, time_base, token_floor, bound, name_events, seat_events);
    same_offsets!(HeaderImage: tickets, counters);
    assert!(core::mem::size_of::<Descriptor>() == core::mem::offset_of!(Header, boot_id));
    assert!(core::mem::size_of::<HeaderImage>() == HEADER_SIZE);
};

/// The grant word: `deadline` in the low 64 bits, `token` in the high 64 bits.
///
/// | deadline bits | meaning |
/// |---|---|
/// | 63 (`WAITERS`) | some process sleeps on this slot's futex and wants a wake-up when the lease is freed (acquirers, and the holder's keep-alive) |
/// | 62 (`OBSERVERS`) | some process observes every change of holder (election observers): the next grant, release, revocation or unbinding wakes the futex and clears the bit |
/// | 61 (`REQUESTED`) | somebody asked the holder of this grant to release it (cooperative hand-over); cleared by the next grant |
/// | 60 (`GROUP`) | without `SHARED`, with 2..=128 in bits 0..8 and nothing else in bits 8..61: the *head* of a name with that many permits N, not a grant; the grants are in its seats (see below). Any other value with bit 60 alone is a corrupt deadline |
/// | 59 (`SHARED`) | with `GROUP`: the head of a *shared* name; bits 0..59 are the grant of its exclusive holder, if any, as in an ordinary slot (`FREE`, `REVOKED`, a deadline), and the shared holders' grants are in its seats 1..=64. `GROUP \| SHARED` is kept by every transition except unbinding |
/// | 0..61 = `FREE` (0) | released (or never granted since the name was bound) |
/// | 0..61 = `REVOKED` (1) | revoked by an administrator |
/// | 0..61 = `UNBOUND` (2) | the name is being unbound from this slot; never grantable |
/// | 0..61 = t ≥ 3 | granted until table time t; expired (and grantable) once now ≥ t |
///
/// `token` is the fencing token of the current or most recent grant. It never decreases
/// in a slot, over the slot's whole life, across names: every grant sets it to the
/// least value ≥ `max(now, token + 1)` whose low 16 bits (the grant's *sequence*,
/// [`grant::seq`]) are the previous token's plus one, and every binding to
/// `max(token, floor) + 1`. So a given grant word value occurs at most once, and a CAS
/// from a remembered value can never succeed against a later grant (no ABA); and an
/// observer that saw one term and then another knows, from their sequences alone,
/// how many grants it missed in between (modulo 65,536).
///
/// # Multi-holder names
///
/// A name used with `permits = N > 1` is a *head* slot (seat 0 in the binding word)
/// whose grant word is `(GROUP | N, counter)`, plus up to N *seat* slots (seats 1..=N,
/// same name bytes), each an ordinary grant word with its own deadline, holder and
/// token. The head's token field is the name's token counter: every seat grant takes
/// its token from it with one CAS (see `protocol::take_token`), so the tokens of all the
/// name's grants are distinct and grow in the order they are taken. The head never
/// expires; it is unbound only when none of its seats is bound.
pub mod grant {
    /// Bit set by waiters; see the table above.
    pub const WAITERS: u64 = 1 << 63;
    /// Bit set by observers; see the table above.
    pub const OBSERVERS: u64 = 1 << 62;
    /// Bit set by a request to release; see the table above.
    pub const REQUESTED: u64 = 1 << 61;
    /// Marks the head of a multi-holder name; see the table above.
    pub const GROUP: u64 = 1 << 60;
    /// With `GROUP`, marks the head of a shared name; see the table above.
    pub const SHARED: u64 = 1 << 59;
    /// The kind bits of a shared name's head, kept by its transitions.
    pub const KIND: u64 = GROUP | SHARED;
    /// Mask of N in a head's deadline field.
    pub const PERMITS: u64 = 0xff;
    /// The flag bits.
    pub const FLAGS: u64 = WAITERS | OBSERVERS | REQUESTED;
    /// Mask of the deadline proper.
    pub const DEADLINE: u64 = !FLAGS;
    /// Mask of a token's sequence bits.
    pub const SEQ_MASK: u64 = 0xffff;
    /// Released / never granted.
    pub const FREE: u64 = 0;
    /// Revoked.
    pub const REVOKED: u64 = 1;
    /// Name being unbound.
    pub const UNBOUND: u64 = 2;

    /// Packs a grant word.
    #[inline]
    pub const fn pack(deadline: u64, token: u64) -> u128 {
        (token as u128) << 64 | deadline as u128
    }
    /// The sequence of a grant with `token`: its low 16 bits, one more (modulo 2¹⁶)
    /// than its predecessor's in the same slot.
    #[inline]
    pub const fn seq(token: u64) -> u16 {
        token as u16
    }
    /// The deadline field including the flag bits.
    #[inline]
    pub const fn deadline_bits(word: u128) -> u64 {
        word as u64
    }
    /// The deadline without the flag bits (and, on a shared name's head, without the
    /// kind bits: its exclusive holder's deadline).
    #[inline]
    pub const fn deadline(word: u128) -> u64 {
        let bits = word as u64;
        bits & DEADLINE & !sticky(bits)
    }
    /// The token.
    #[inline]
    pub const fn token(word: u128) -> u64 {
        (word >> 64) as u64
    }
    /// Whether `deadline_bits` are those of a shared name's head.
    #[inline]
    pub const fn is_shared(deadline_bits: u64) -> bool {
        deadline_bits & KIND == KIND
    }
    /// The kind bits every transition of this word keeps: `KIND` on a shared name's
    /// head, none anywhere else.
    #[inline]
    pub const fn sticky(deadline_bits: u64) -> u64 {
        if is_shared(deadline_bits) {
            KIND
        } else {
            0
        }
    }
    /// N, if `deadline_bits` are those of a multi-holder name's head: `GROUP`, flags,
    /// and 2..=128 (`MAX_SEATS`) in the low byte, nothing else. Any other word with `GROUP` set is
    /// garbage (a deadline beyond any legitimate one: corrupt, hence reclaimable).
    #[inline]
    pub const fn permits(deadline_bits: u64) -> Option<u32> {
        let n = (deadline_bits & PERMITS) as u32;
        if deadline_bits & DEADLINE != GROUP | n as u64 || n < 2 || n > super::MAX_SEATS {
            return None;
        }
        Some(n)
    }
}

/// The holder record: who holds the grant whose token's low 32 bits equal `tag`.
///
/// | bits | field |
/// |---|---|
/// | 0..32 | tag: low 32 bits of the token of the grant this record describes |
/// | 32..64 | inode number of the holder's PID namespace (0 = unknown) |
/// | 64..86 | holder pid, as seen in that namespace |
/// | 86..88 | identity kind: 0 unknown, 1 pidfd inode, 2 process start time |
/// | 88 | detached: bound to its TTL only, never reclaimed early |
/// | 89..128 | identity value (low 39 bits) |
///
/// Written with one 128-bit store after the grant's CAS; a reader trusts it only when
/// the tag matches the grant word it just read, so a record can never be attributed to
/// the wrong grant by tearing.
pub mod holder {
    /// Identity kind: unknown (the record cannot prove anything).
    pub const KIND_UNKNOWN: u8 = 0;
    /// Identity kind: inode number of a pidfd (pidfs, Linux 6.9+), unique per process.
    pub const KIND_PIDFD_INODE: u8 = 1;
    /// Identity kind: start time from `/proc/PID/stat` (clock ticks since boot).
    pub const KIND_START_TIME: u8 = 2;
    /// Mask of the identity value.
    pub const IDENT_MASK: u64 = (1 << 39) - 1;
    /// Mask of the pid field.
    pub const PID_MASK: u32 = (1 << 22) - 1;

    /// A decoded holder record.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Record {
        pub tag: u32,
        pub pidns: u32,
        pub pid: u32,
        pub kind: u8,
        pub detached: bool,
        pub ident: u64,
    }

    impl Record {
        /// Encodes the record.
        #[inline]
        pub const fn pack(&self) -> u128 {
            let hi = (self.pid & PID_MASK) as u64
                | ((self.kind & 3) as u64) << 22
                | (self.detached as u64) << 24
                | (self.ident & IDENT_MASK) << 25;
            (hi as u128) << 64 | (self.pidns as u128) << 32 | self.tag as u128
        }
        /// Decodes a record (any bit pattern decodes to something).
        #[inline]
        pub const fn unpack(word: u128) -> Self {
            let hi = (word >> 64) as u64;
            Record {
                tag: word as u32,
                pidns: (word >> 32) as u32,
                pid: (hi as u32) & PID_MASK,
                kind: ((hi >> 22) & 3) as u8,
                detached: (hi >> 24) & 1 == 1,
                ident: (hi >> 25) & IDENT_MASK,
            }
        }
        /// The record's tag for a grant with `token`.
        #[inline]
        pub const fn tag_for(token: u64) -> u32 {
            token as u32
        }
    }
}

/// The binding word: which name, if any, this slot stands for.
///
/// | bits | field |
/// |---|---|
/// | 0..2 | state: `EMPTY` 0 (never bound: ends every probe chain), `BINDING` 1 (a binder holds the table lock and is writing the name), `BOUND` 2, `TOMBSTONE` 3 (was bound; probe chains continue past it) |
/// | 2..9 | name length, 1..=64 |
/// | 9..32 | generation: incremented by every binding, so a lookup can tell that the slot was re-bound while it looked |
/// | 32..40 | seat: 0 for a name's own slot (its lease, or the head of a multi-holder name), 1..=128 for the seats of a multi-holder or shared name, 129..=255 for the places of its fair queue |
/// | 40..64 | 24 bits of the name's hash, to skip most mismatches without reading the name |
///
/// Changed only under the table lock; read by everyone.
pub mod bind {
    /// Never bound.
    pub const EMPTY: u64 = 0;
    /// Being bound by the holder of the table lock.
    pub const BINDING: u64 = 1;
    /// Bound.
    pub const BOUND: u64 = 2;
    /// Was bound; reusable.
    pub const TOMBSTONE: u64 = 3;
    const GEN_MASK: u64 = (1 << 23) - 1;

    /// State bits.
    #[inline]
    pub const fn state(word: u64) -> u64 {
        word & 3
    }
    /// Name length.
    #[inline]
    pub const fn name_len(word: u64) -> usize {
        ((word >> 2) & 0x7f) as usize
    }
    /// Generation.
    #[inline]
    pub const fn generation(word: u64) -> u64 {
        (word >> 9) & GEN_MASK
    }
    /// Mask of the stored hash bits.
    pub const HASH_MASK: u32 = (1 << 24) - 1;
    /// Stored hash bits.
    #[inline]
    pub const fn hash(word: u64) -> u32 {
        (word >> 40) as u32
    }
    /// Seat number.
    #[inline]
    pub const fn seat(word: u64) -> u8 {
        (word >> 32) as u8
    }
    /// Packs a binding word (`hash` is cut to its low 24 bits).
    #[inline]
    pub const fn pack(state: u64, name_len: usize, generation: u64, seat: u8, hash: u32) -> u64 {
        (state & 3)
            | ((name_len as u64) & 0x7f) << 2
            | (generation & GEN_MASK) << 9
            | (seat as u64) << 32
            | ((hash & HASH_MASK) as u64) << 40
    }
    /// The same word with another state and the generation advanced by `step`.
    #[inline]
    pub const fn with_state(word: u64, state: u64, step: u64) -> u64 {
        pack(state, name_len(word), generation(word) + step, seat(word), hash(word))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn holder_record_round_trips_and_truncates_to_field_widths() {
        let r = holder::Record {
            tag: 0xdead_beef,
            pidns: 4026531836,
            pid: 4_194_303,
            kind: holder::KIND_PIDFD_INODE,
            detached: true,
            ident: holder::IDENT_MASK,
        };
        assert_eq!(holder::Record::unpack(r.pack()), r);
        let wide = holder::Record { pid: u32::MAX, ident: u64::MAX, ..r };
        let back = holder::Record::unpack(wide.pack());
        assert_eq!(back.pid, holder::PID_MASK);
        assert_eq!(back.ident, holder::IDENT_MASK);
        assert_eq!(back.kind, holder::KIND_PIDFD_INODE, "wide fields must not spill into kind");
    }

    #[test]
    fn bind_word_fields_are_independent() {
        let w = bind::pack(bind::BOUND, 64, (1 << 23) - 1, 255, 0xffff_ffff);
        assert_eq!(bind::state(w), bind::BOUND);
        assert_eq!(bind::name_len(w), 64);
        assert_eq!(bind::generation(w), (1 << 23) - 1);
        assert_eq!(bind::seat(w), 255);
        assert_eq!(bind::hash(w), bind::HASH_MASK);
        let next = bind::with_state(w, bind::BINDING, 1);
        assert_eq!(bind::generation(next), 0, "generation wraps within its field");
        assert_eq!(bind::state(next), bind::BINDING);
        assert_eq!(bind::seat(next), 255);
        assert_eq!(bind::hash(next), bind::HASH_MASK);
        let low = bind::pack(bind::BOUND, 1, 0, 7, 0x0012_3456);
        assert_eq!((bind::seat(low), bind::hash(low), bind::name_len(low)), (7, 0x12_3456, 1));
    }

    #[test]
    fn grant_word_splits() {
        let w = grant::pack(grant::FLAGS | 12345, 777);
        assert_eq!(grant::deadline(w), 12345);
        assert_eq!(grant::deadline_bits(w) & grant::FLAGS, grant::FLAGS);
        assert_eq!(grant::seq(0x1_0002_0003), 3);
        assert_eq!(grant::token(w), 777);
        assert_eq!(grant::permits(12345), None);
        assert_eq!(grant::permits(grant::GROUP | grant::WAITERS | 4), Some(4));
        assert_eq!(grant::permits(grant::GROUP | 1), None, "N = 1 is no group");
        assert_eq!(grant::permits(grant::GROUP | 1 << 20 | 4), None, "garbage");
        assert_eq!(grant::permits(grant::DEADLINE), None, "garbage");
        assert!(grant::is_shared(grant::KIND | 5) && !grant::is_shared(grant::GROUP | 5));
        assert_eq!(grant::sticky(grant::WAITERS | grant::KIND | 77), grant::KIND);
        assert_eq!(grant::sticky(grant::GROUP | 4), 0);
    }
}
