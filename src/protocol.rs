//! The lease protocol of one slot: every state and every transition, on plain atomics,
//! with time passed in. No OS calls live here, so the same code runs in production, in
//! the model-based tests (with an injected clock) and under loom.
//!
//! # States of the grant word `(deadline, token)` at table time `now`
//!
//! | state | deadline | grantable | who leaves it, how |
//! |---|---|---|---|
//! | Free | `FREE` | yes | anyone: [`try_grant`] |
//! | Revoked | `REVOKED` | yes | anyone: [`try_grant`] |
//! | Held | `now < d ≤ now + 2·MAX_TTL` | no | the holder: [`renew`], [`release`]; an administrator: [`revoke`]; anyone, if the holder is provably dead: [`try_grant`] |
//! | Expired | `3 ≤ d ≤ now` | yes | anyone: [`try_grant`]; the table lock holder: [`retire`] |
//! | Corrupt | `d > now + 2·MAX_TTL` | yes | anyone: [`try_grant`] (no legitimate grant reaches that far; see [`IMPOSSIBLE_AHEAD_NS`]) |
//! | Unbound | `UNBOUND` | never | the table lock holder: [`bind`](fn@bind) |
//! | Group | `GROUP \| N` | never (it is no grant) | anyone, once: [`make_group`] (from Free, Revoked, Expired or Corrupt); the table lock holder: [`retire`], when no seat of the name is bound |
//!
//! Every transition is one CAS on the 128-bit grant word, from the exact value the actor
//! judged, so "decide from state X" and "move out of X" are one indivisible step. Each
//! grant sets the token to the least value ≥ `max(now, token + 1)` whose sequence (low
//! 16 bits) is the previous token's plus one ([`next_token`]): the word's value never
//! repeats, a stale holder's CAS (expecting its own token) can only fail, and the
//! number of grants between two tokens of a slot is known from the tokens alone.
//!
//! # Which clock judges what
//!
//! `now` is table time, read from `CLOCK_MONOTONIC` — except for one judgement that no
//! reading can get wrong: granting a Free or Revoked slot ([`try_grant_free`]), which
//! may use `CLOCK_MONOTONIC_COARSE` (lags by up to a timer tick, never leads; a fifth
//! of the cost). Everything that compares a deadline with the time — expiry, a
//! holder's own validity, renewal, revocation — takes a precise reading. Why that
//! split is safe is argued at [`try_grant_free`]; `tests/loom.rs` checks it with a
//! lagging-clock actor.
//!
//! # Flags on the deadline (see [`grant`])
//!
//! | flag | set by | kept by | cleared by | effect |
//! |---|---|---|---|---|
//! | `WAITERS` | [`announce_waiter`], [`watch`] (on a held grant) | grant, renew, request | release, revoke, retire (which wake) | whoever frees the grant wakes the futex |
//! | `OBSERVERS` | [`announce_observer`] (any bound state) | renew, request | grant, release, revoke, retire (which wake) | every change of holder wakes the futex |
//! | `REQUESTED` | [`request_release`] (on a held grant) | renew | grant, release, revoke, retire | the holder is asked to release; wakes the holder's keep-alive |
//!
//! A flag never changes who may do what: [`classify`] ignores them, and every CAS
//! expects the exact word it judged, flags included.
//!
//! # Multi-holder names (`permits = N`)
//!
//! The name's own slot is its *head*, in state Group; its grants live in seat slots,
//! each running the protocol above unchanged except for where tokens come from: a seat
//! grant takes its token from the head's counter with [`take_token`] (one CAS on the
//! head) and then CASes the seat from the exact word it judged grantable
//! ([`try_grant_with`]). So at most one grant per seat is unexpired (invariant 1 per
//! seat, hence at most N per name); tokens of the name are unique and taken in
//! increasing order (a grant that starts after another was returned has a larger one);
//! and each seat's token still only grows, because the counter is first raised past the
//! seat's own. A token taken by an attempt whose seat CAS then fails is never used.
//!
//! Side records (holder, label, renewal time, transition count) are written after the
//! CAS by the winner, and by nobody else: a granter whose CAS fails has written
//! nothing. Only the holder record is trusted for anything (early reclaim of a dead
//! holder), and only when its tag (the token's low 32 bits) matches the grant word just
//! read. Every grant's token differs from its predecessor's in those low bits too, so in
//! the window between a grant's CAS and its record store, the previous grant's record
//! (still in place) never passes for the new grant's: the window shows no record.
//!
//! A holder paused between its CAS and its record store for longer than its TTL may
//! later store a record for a grant it no longer holds: the store is skipped if the
//! grant is already gone, and if it goes in between, the record carries the old token's
//! tag, so readers ignore it (the current holder then merely loses early reclaim and is
//! reclaimable only by TTL). Trusting such a record would take a 2⁻³² tag coincidence
//! with a *later* grant *and* the stale process dying right after its store.

use crate::fault::{fast_grant_point, point, Op};
use crate::layout::{bind, grant, holder, Slot};
use crate::sync::AtomicU64;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// Longest TTL a grant may have (one year).
pub const MAX_TTL_NS: u64 = 365 * 24 * 3600 * 1_000_000_000;
/// Shortest TTL a grant may have.
pub const MIN_TTL_NS: u64 = 1_000;
/// A deadline further than this beyond `now` cannot come from any grant: it is garbage.
/// Twice the longest TTL, because an observer's `now` may be older than the grant it
/// then reads (it read the clock, then was descheduled while the grant happened): a
/// legitimate deadline is at most `MAX_TTL_NS` past the granter's clock, which is ahead
/// of the observer's by however long the observer stalled between its two reads.
pub const IMPOSSIBLE_AHEAD_NS: u64 = 2 * MAX_TTL_NS;
/// A CAS loop that keeps losing this many times is facing a scribbler, not contention:
/// honest actors change a slot a bounded number of times per attempt.
const RETRY_LIMIT: u32 = 1_000;

/// What the grant word says at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    Free,
    Revoked,
    Held,
    Expired,
    Corrupt,
    Unbound,
    /// The head of a multi-holder name (no grant itself).
    Group,
}

/// Classifies a deadline (with or without the flag bits) at `now`.
#[inline]
pub fn classify(deadline_bits: u64, now: u64) -> Observed {
    let mut bits = deadline_bits;
    if bits & grant::GROUP != 0 {
        if grant::is_shared(bits) {
            // A shared name's head: the grant of its exclusive holder, if any.
            bits &= !grant::KIND;
        } else if grant::permits(bits).is_some() {
            return Observed::Group;
        }
    }
    match bits & grant::DEADLINE {
        grant::FREE => Observed::Free,
        grant::REVOKED => Observed::Revoked,
        grant::UNBOUND => Observed::Unbound,
        d if d <= now => Observed::Expired,
        d if d - now > IMPOSSIBLE_AHEAD_NS => Observed::Corrupt,
        _ => Observed::Held,
    }
}

/// How a successful grant came about (which state it left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Took {
    Free,
    Revoked,
    Expired,
    DeadHolder,
    Corrupt,
}

/// A grant won by [`try_grant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    pub token: u64,
    pub deadline: u64,
    pub took: Took,
    /// Observers were announced on the word this grant replaced: wake them.
    pub wake: bool,
}

/// The token of the grant that follows one with `token`, at `now`: the least value
/// ≥ `max(now, token + 1)` whose sequence is `seq(token) + 1`, and whose low 32 bits
/// (the holder record's tag) therefore differ from `token`'s. `None` past 2⁶⁴.
#[inline(always)]
pub fn next_token(token: u64, now: u64) -> Option<u64> {
    let least = token.checked_add(1)?.max(now);
    let seq = (token.wrapping_add(1)) & grant::SEQ_MASK;
    let candidate = (least & !grant::SEQ_MASK) | seq;
    if candidate >= least {
        Some(candidate)
    } else {
        candidate.checked_add(grant::SEQ_MASK + 1)
    }
}

/// The token a counter (a head's, or the table's tickets) hands to a grant in a slot
/// whose current token is `seat_token`: the least value ≥ `max(now, counter + 1,
/// seat_token + 1)` (as [`next_token`] makes them) whose low 32 bits differ from
/// `seat_token`'s, so that the slot's old holder record never passes for the new grant's.
#[inline]
fn counted_token(counter: u64, seat_token: u64, now: u64) -> Result<u64, Refusal> {
    let token = next_token(counter.max(seat_token), now).ok_or(Refusal::TokenExhausted)?;
    if token as u32 != seat_token as u32 {
        return Ok(token);
    }
    next_token(token, now).ok_or(Refusal::TokenExhausted)
}

/// Why a slot operation did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Somebody else holds it.
    Held { token: u64, deadline: u64, holder: Option<holder::Record> },
    /// The slot no longer stands for the name the caller looked up (it was re-bound,
    /// or is being unbound: its grant word is `UNBOUND`): look the name up again.
    Rebound,
    /// The slot's token cannot grow any more (only a corrupt slot gets here).
    TokenExhausted,
    /// The slot is the head of a name used with `permits` = this (0: a garbage head).
    Group { permits: u32 },
    /// The slot is the head of a shared name: exclusive grants of it go through
    /// `table::shared` (they wait for its shared holders to leave).
    Shared,
    /// The slot kept changing under us past any honest rate.
    Interference,
}

/// Why a holder's grant is no longer theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// Its deadline passed.
    Expired,
    /// An administrator revoked it.
    Revoked,
    /// It was released (by this holder, or by someone presenting its token).
    Released,
    /// A later grant replaced it.
    TakenOver,
    /// The slot kept changing under us past any honest rate.
    Interference,
}

/// Whether freeing `word` (release, revoke, retire) must wake the futex.
#[inline]
fn wakes(word: u128) -> bool {
    grant::deadline_bits(word) & (grant::WAITERS | grant::OBSERVERS) != 0
}

/// Is `word` the live grant with `token` at `now`?
#[inline]
pub fn check_ours(word: u128, token: u64, now: u64) -> Result<(), Lost> {
    if grant::token(word) != token {
        return Err(Lost::TakenOver);
    }
    match classify(grant::deadline_bits(word), now) {
        Observed::Held | Observed::Corrupt => Ok(()),
        Observed::Free => Err(Lost::Released),
        Observed::Revoked => Err(Lost::Revoked),
        Observed::Expired | Observed::Unbound => Err(Lost::Expired),
        // Made a head from a grant that was no longer live.
        Observed::Group => Err(Lost::TakenOver),
    }
}

/// Tries to grant the lease in `slot` (which the caller found bound to its name with
/// binding word `bound_as`) until `now + ttl`, recording `me` and `label` as the holder.
/// `holder_is_dead` is asked only when the slot is held and its holder record belongs to
/// the current grant; it must answer `true` only for a provably dead process.
#[inline(always)]
pub fn try_grant(
    slot: &Slot,
    bound_as: u64,
    now: u64,
    ttl: u64,
    me: holder::Record,
    label: u64,
    holder_is_dead: &mut dyn FnMut(&holder::Record) -> bool,
) -> Result<Granted, Refusal> {
    let next = |token| next_token(token, now).ok_or(Refusal::TokenExhausted);
    try_grant_with(slot, bound_as, now, ttl, me, label, holder_is_dead, false, next)
}

/// [`try_grant`], with the new grant's token made by `token_after` from the token of the
/// word being replaced (it must return a larger one whose low 32 bits differ, and may
/// refuse): [`next_token`] for a name's own slot, [`take_token`] for a seat. With
/// `shared_head`, the slot must be a shared name's head (its exclusive grant is taken,
/// and the kind bits kept); without, it must not be (refused with `Shared`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn try_grant_with(
    slot: &Slot,
    bound_as: u64,
    now: u64,
    ttl: u64,
    me: holder::Record,
    label: u64,
    holder_is_dead: &mut dyn FnMut(&holder::Record) -> bool,
    shared_head: bool,
    mut token_after: impl FnMut(u64) -> Result<u64, Refusal>,
) -> Result<Granted, Refusal> {
    debug_assert!((MIN_TTL_NS..=MAX_TTL_NS).contains(&ttl));
    for _ in 0..RETRY_LIMIT {
        let current = slot.grant.load(Acquire);
        // The grant word we just read belongs to the binding we looked up only if the
        // binding is unchanged now (a re-binding writes the grant word after announcing
        // itself in `bind`, so seeing its grant word implies seeing its `bind`).
        if slot.bind.load(Acquire) != bound_as {
            return Err(Refusal::Rebound);
        }
        let deadline_bits = grant::deadline_bits(current);
        let token = grant::token(current);
        if grant::is_shared(deadline_bits) != shared_head {
            return Err(if shared_head { Refusal::Rebound } else { Refusal::Shared });
        }
        let took = match classify(deadline_bits, now) {
            Observed::Free => Took::Free,
            Observed::Revoked => Took::Revoked,
            Observed::Expired => Took::Expired,
            Observed::Corrupt => Took::Corrupt,
            Observed::Unbound => return Err(Refusal::Rebound),
            Observed::Group => {
                return Err(Refusal::Group {
                    permits: grant::permits(deadline_bits).unwrap_or_default(),
                })
            }
            Observed::Held => {
                let raw = slot.holder.load(Acquire);
                let record = holder::Record::unpack(raw);
                let record = (record.tag == holder::Record::tag_for(token)).then_some(record);
                match record {
                    Some(r) if !r.detached && holder_is_dead(&r) => {
                        // The record must be unchanged after the probe: a dead process
                        // cannot change it, but a live one may have detached the lease
                        // (binding it to its TTL alone) between our read and the probe.
                        // If it changed, look again.
                        if slot.holder.load(Acquire) != raw {
                            continue;
                        }
                        Took::DeadHolder
                    }
                    _ => {
                        return Err(Refusal::Held {
                            token,
                            deadline: deadline_bits & grant::DEADLINE & !grant::KIND,
                            holder: record,
                        })
                    }
                }
            }
        };
        // The previous grant's record stays in place until ours replaces it: its tag
        // must not match our token (see the module docs); sequences guarantee it.
        let new_token = token_after(token)?;
        let deadline = now + ttl;
        // Waiters stay announced across grants: whoever frees this grant wakes them.
        // Observers are woken now; a request was for the grant we replace.
        let kept = deadline_bits & grant::WAITERS | grant::sticky(deadline_bits);
        let new = grant::pack(deadline | kept, new_token);
        point(Op::Grant);
        if slot.grant.compare_exchange(current, new, AcqRel, Acquire).is_ok() {
            point(Op::Grant);
            record_grant(slot, new_token, now, me, label);
            let wake = deadline_bits & grant::OBSERVERS != 0;
            return Ok(Granted { token: new_token, deadline, took, wake });
        }
    }
    Err(Refusal::Interference)
}

/// What the winner of a grant's CAS writes next, and nobody else (see the module docs):
/// the label, the holder record, the renewal time and the transition count.
#[inline(always)]
fn record_grant(slot: &Slot, token: u64, now: u64, me: holder::Record, label: u64) {
    let record = holder::Record { tag: holder::Record::tag_for(token), ..me };
    slot.label.store(label, Relaxed);
    point(Op::Grant);
    // Only while the grant is still ours: if it was revoked and re-granted since our
    // CAS, storing now would overwrite the new holder's record (making it reclaimable
    // by TTL only; never wrongly reclaimable: the tag would differ).
    if slot.grant.load_high(Acquire) == token {
        slot.holder.store(record.pack(), Release);
    }
    point(Op::Grant);
    slot.renewed_at.store(now, Relaxed);
    // Only the holder writes this, so load+store is exact unless a stale holder races
    // it; it is a statistic, not part of any guarantee.
    slot.transitions.store(slot.transitions.load(Relaxed).wrapping_add(1), Relaxed);
    point(Op::Grant);
}

/// [`try_grant`] of a slot that is Free or Revoked, judged with `lagging_now`: a clock
/// reading that may lag table time but never leads it (`CLOCK_MONOTONIC_COARSE`, which
/// reads the precise clock's value at the last timer tick). `None` when the slot is in
/// any other state, no longer bound as `bound_as`, or changed before our CAS: the
/// caller then judges it with [`try_grant`] and a precise reading. One try, no loop.
///
/// # Why a lagging reading is safe here, and only here
///
/// A Free or Revoked word is grantable whatever the time, so `lagging_now` decides
/// nothing about *whether* to grant; it only sets three values, each safe when early:
///
/// - **The deadline**, `lagging_now + ttl`, is at most `now + ttl` for the true table
///   time `now` at the CAS: the grant is shorter than asked by the reading's lag
///   (about a tick, more when ticks are late: see `sys::monotonic_coarse_ns`), never
///   longer. Exclusivity does not rest on the deadline being accurate but on everyone
///   judging expiry from *this stored deadline* with a clock that never leads: every
///   other actor, and the holder itself (`check_ours`, `renew`, `Lease::is_valid`,
///   `remaining`: all with the precise clock), sees the grant end at the same instant
///   of true time — no later than a precise grant's would. A holder must never judge
///   its own grant with a lagging reading: it would believe itself valid up to a tick
///   after a precise acquirer saw the deadline pass and took the lease.
/// - **The token** is [`next_token`]`(token, lagging_now)`, the least value above
///   `max(lagging_now, token + 1)` with the next sequence: strictly above the previous
///   token whatever the reading, so tokens still only grow. A reading older than the
///   previous grant's (a precise granter a moment ago) only means the token comes from
///   `token + 1` instead of the clock.
/// - **The renewal time** (and `acquired_at`, which `get` derives from the token) may
///   read up to a tick early: information, not a guarantee.
///
/// This is exactly what a precise granter preempted for a tick between its clock read
/// and its CAS produces, which the protocol has always had to allow. What a lagging
/// reading must not do is *refuse* (a grant that expired since the last tick looks
/// held) or *reclaim* with a verdict about time: those go to [`try_grant`].
#[inline(always)]
pub fn try_grant_free(
    slot: &Slot,
    bound_as: u64,
    lagging_now: u64,
    ttl: u64,
    me: holder::Record,
    label: u64,
) -> Option<Granted> {
    let next = |token| next_token(token, lagging_now);
    try_grant_free_with(slot, bound_as, lagging_now, ttl, me, label, next)
}

/// [`try_grant_free`], with the new grant's token made by `token_after` from the token
/// of the word being replaced, as in [`try_grant_with`] (`None`: no grant): for a seat,
/// [`take_token`] or [`take_shared_token`] with the same `lagging_now`. The token is
/// taken before the seat's CAS; one whose CAS then fails is never used.
///
/// A lagging reading is as safe for the head's counter as for a slot's own token: the
/// counter still only grows (`counter + 1` at least, whatever the reading), and
/// [`take_shared_token`] judges the head's exclusive grant with it only to *refuse*
/// (a grant that expired since the last tick looks held: the caller then retries with a
/// precise reading), never to end one.
#[inline(always)]
pub fn try_grant_free_with(
    slot: &Slot,
    bound_as: u64,
    lagging_now: u64,
    ttl: u64,
    me: holder::Record,
    label: u64,
    token_after: impl FnOnce(u64) -> Option<u64>,
) -> Option<Granted> {
    debug_assert!((MIN_TTL_NS..=MAX_TTL_NS).contains(&ttl));
    let current = slot.grant.load(Acquire);
    // As in `try_grant_with`: the word belongs to our binding only if it is unchanged.
    if slot.bind.load(Acquire) != bound_as {
        return None;
    }
    let bits = grant::deadline_bits(current);
    // Flags aside, exactly FREE or REVOKED: no kind bits (a head is no plain grant), no
    // deadline (whose verdict would depend on the time).
    let took = match bits & grant::DEADLINE {
        grant::FREE => Took::Free,
        grant::REVOKED => Took::Revoked,
        _ => return None,
    };
    let new_token = token_after(grant::token(current))?;
    let deadline = lagging_now + ttl;
    // Waiters stay announced (whoever frees this grant wakes them); observers are woken.
    let new = grant::pack(deadline | bits & grant::WAITERS, new_token);
    fast_grant_point();
    slot.grant.compare_exchange(current, new, AcqRel, Acquire).ok()?;
    fast_grant_point();
    record_grant(slot, new_token, lagging_now, me, label);
    Some(Granted { token: new_token, deadline, took, wake: bits & grant::OBSERVERS != 0 })
}

/// Extends the grant with `token` to `now + ttl`. Returns the new deadline. `now` must be
/// a precise reading: with a lagging one, a holder could extend a grant that expired
/// before the call (see [`try_grant_free`]).
#[inline(always)]
pub fn renew(slot: &Slot, token: u64, now: u64, ttl: u64) -> Result<u64, Lost> {
    let mut current = slot.grant.load(Acquire);
    for _ in 0..RETRY_LIMIT {
        check_ours(current, token, now)?;
        let deadline = now + ttl;
        let bits = grant::deadline_bits(current);
        let flags = bits & grant::FLAGS | grant::sticky(bits);
        point(Op::Renew);
        match slot.grant.compare_exchange(
            current,
            grant::pack(deadline | flags, token),
            AcqRel,
            Acquire,
        ) {
            Ok(_) => {
                point(Op::Renew);
                slot.renewed_at.store(now, Relaxed);
                point(Op::Renew);
                return Ok(deadline);
            }
            Err(actual) => current = actual,
        }
    }
    Err(Lost::Interference)
}

/// Ends the grant with `token`. `deadline_hint` is the holder's last known deadline: when
/// it is still exact, the release is a single CAS with no prior load and no clock read.
/// A grant that expired but that nobody has taken since is still the caller's to
/// release (no other grant was made in between, so nothing is unsafe about it). Returns
/// whether waiters or observers announced themselves (the caller must then wake them).
#[inline(always)]
pub fn release(slot: &Slot, token: u64, deadline_hint: u64) -> Result<bool, Lost> {
    // A hint that is not a real deadline (e.g. 0 from a caller that does not know it)
    // must never be the expected value: FREE → FREE would "succeed" twice, and REVOKED
    // or UNBOUND → FREE would undo a revocation or an unbinding. With kind bits, it is
    // left to `release_from` (which keeps them).
    let current =
        if deadline_hint & grant::DEADLINE > grant::UNBOUND && deadline_hint & grant::GROUP == 0 {
            // The common case, inline: one CAS from the word the holder was last granted.
            let expected = grant::pack(deadline_hint, token);
            point(Op::Release);
            match slot.grant.compare_exchange(
                expected,
                grant::pack(grant::FREE, token),
                AcqRel,
                Acquire,
            ) {
                Ok(_) => {
                    point(Op::Release);
                    return Ok(wakes(expected));
                }
                Err(actual) => actual,
            }
        } else {
            slot.grant.load(Acquire)
        };
    release_from(slot, token, current)
}

/// [`release`] when the grant word is `current` (not what the holder last knew).
#[inline(never)]
fn release_from(slot: &Slot, token: u64, mut current: u128) -> Result<bool, Lost> {
    for _ in 0..RETRY_LIMIT {
        if grant::token(current) != token {
            return Err(Lost::TakenOver);
        }
        let bits = grant::deadline_bits(current);
        // Kind bits are rare (heads only): one test keeps them off the common path.
        let sticky = if bits & grant::GROUP == 0 {
            0
        } else if grant::permits(bits).is_some() {
            return Err(Lost::TakenOver); // a head with permits is no grant
        } else {
            grant::sticky(bits)
        };
        match bits & grant::DEADLINE & !sticky {
            grant::FREE => return Err(Lost::Released),
            grant::REVOKED => return Err(Lost::Revoked),
            grant::UNBOUND => return Err(Lost::Expired),
            _ => {}
        }
        let freed = grant::pack(grant::FREE | sticky, token);
        point(Op::Release);
        match slot.grant.compare_exchange(current, freed, AcqRel, Acquire) {
            Ok(_) => {
                point(Op::Release);
                return Ok(wakes(current));
            }
            Err(actual) => current = actual,
        }
    }
    Err(Lost::Interference)
}

/// Outcome of an operation on whatever grant is live in a slot ([`revoke`],
/// [`request_release`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targeted {
    /// Done to the grant with this token; `wake` says whether the futex must be woken.
    Done { token: u64, wake: bool },
    /// Nothing was held. `token` is the last grant's token.
    NotHeld { token: u64 },
    /// Held, but under another token than the one the caller named.
    OtherToken { token: u64 },
}

/// Revokes the live grant in `slot` (bound as `bound_as`), or only the grant with
/// `only_token` when given.
pub fn revoke(
    slot: &Slot,
    bound_as: u64,
    now: u64,
    only_token: Option<u64>,
) -> Result<Targeted, Refusal> {
    on_live_grant(slot, bound_as, now, only_token, Op::Revoke, |current| {
        let sticky = grant::sticky(grant::deadline_bits(current));
        Some((grant::pack(grant::REVOKED | sticky, grant::token(current)), wakes(current)))
    })
}

/// The one loop of [`revoke`] and [`request_release`]: finds the live grant (the one
/// with `only_token`, if given) and CASes it to what `next` makes of it (the new word,
/// and whether to wake the futex), or leaves it if `next` says `None` (nothing to do).
fn on_live_grant(
    slot: &Slot,
    bound_as: u64,
    now: u64,
    only_token: Option<u64>,
    op: Op,
    next: impl Fn(u128) -> Option<(u128, bool)>,
) -> Result<Targeted, Refusal> {
    for _ in 0..RETRY_LIMIT {
        let current = slot.grant.load(Acquire);
        if slot.bind.load(Acquire) != bound_as {
            return Err(Refusal::Rebound);
        }
        let token = grant::token(current);
        match classify(grant::deadline_bits(current), now) {
            Observed::Held | Observed::Corrupt => {}
            Observed::Unbound => return Err(Refusal::Rebound),
            Observed::Group => {
                let permits = grant::permits(grant::deadline_bits(current)).unwrap_or_default();
                return Err(Refusal::Group { permits });
            }
            _ => return Ok(Targeted::NotHeld { token }),
        }
        if only_token.is_some_and(|t| t != token) {
            return Ok(Targeted::OtherToken { token });
        }
        let Some((new, wake)) = next(current) else {
            return Ok(Targeted::Done { token, wake: false });
        };
        point(op);
        if slot.grant.compare_exchange(current, new, AcqRel, Acquire).is_ok() {
            point(op);
            return Ok(Targeted::Done { token, wake });
        }
    }
    Err(Refusal::Interference)
}

/// What a would-be waiter should do after [`announce_waiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Sleep on the slot's futex word while it still equals `futex_expect`, at most until
    /// table time `deadline` (when the grant expires by itself).
    Sleep { futex_expect: u32, deadline: u64, token: u64 },
    /// The state changed: try to acquire again at once.
    Retry,
}

/// The 32-bit futex word of a grant word: the high half of the deadline field, which
/// includes the `WAITERS` bit, so freeing the lease (which clears it) always changes it.
#[inline]
pub fn futex_value(word: u128) -> u32 {
    (grant::deadline_bits(word) >> 32) as u32
}

/// Sets the `WAITERS` bit on a held grant so that whoever frees it wakes the futex.
pub fn announce_waiter(slot: &Slot, bound_as: u64, now: u64) -> Wait {
    let current = slot.grant.load(Acquire);
    if slot.bind.load(Acquire) != bound_as {
        return Wait::Retry;
    }
    let bits = grant::deadline_bits(current);
    if classify(bits, now) != Observed::Held {
        return Wait::Retry;
    }
    let announced = grant::pack(bits | grant::WAITERS, grant::token(current));
    if bits & grant::WAITERS == 0
        && slot.grant.compare_exchange(current, announced, AcqRel, Acquire).is_err()
    {
        return Wait::Retry;
    }
    point(Op::Grant);
    Wait::Sleep {
        futex_expect: futex_value(announced),
        deadline: bits & grant::DEADLINE,
        token: grant::token(current),
    }
}

/// Marks a grant that a keep-alive thread watches, so that revocation or release wakes
/// it. Returns the futex value to sleep on, or why the grant is no longer ours.
pub fn watch(slot: &Slot, token: u64, now: u64) -> Result<u32, Lost> {
    let mut current = slot.grant.load(Acquire);
    for _ in 0..RETRY_LIMIT {
        check_ours(current, token, now)?;
        let bits = grant::deadline_bits(current);
        if bits & grant::WAITERS != 0 {
            return Ok(futex_value(current));
        }
        let announced = grant::pack(bits | grant::WAITERS, token);
        match slot.grant.compare_exchange(current, announced, AcqRel, Acquire) {
            Ok(_) => return Ok(futex_value(announced)),
            Err(actual) => current = actual,
        }
    }
    Err(Lost::Interference)
}

/// Asks the holder of the live grant in `slot` (bound as `bound_as`), or only of the
/// grant with `only_token`, to release it: sets `REQUESTED` on the grant word (asking
/// twice is asking once). Changes nothing about who holds it or until when. Wakes
/// whoever watches the grant (its keep-alive sets `WAITERS`).
pub fn request_release(
    slot: &Slot,
    bound_as: u64,
    now: u64,
    only_token: Option<u64>,
) -> Result<Targeted, Refusal> {
    on_live_grant(slot, bound_as, now, only_token, Op::Request, |current| {
        let bits = grant::deadline_bits(current);
        (bits & grant::REQUESTED == 0).then(|| {
            (
                grant::pack(bits | grant::REQUESTED, grant::token(current)),
                bits & grant::WAITERS != 0,
            )
        })
    })
}

/// Whether the live grant with `token` has been asked to release (`Ok(false)` if not),
/// or why it is no longer the caller's.
#[inline]
pub fn release_requested(slot: &Slot, token: u64, now: u64) -> Result<bool, Lost> {
    let current = slot.grant.load(Acquire);
    check_ours(current, token, now)?;
    Ok(grant::deadline_bits(current) & grant::REQUESTED != 0)
}

/// What an observer saw and may sleep on, from [`announce_observer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The grant word, with the `OBSERVERS` bit as it is now set.
    pub word: u128,
    /// Sleep on the slot's futex while it still equals this value: the next change of
    /// holder (grant, release, revocation, unbinding) wakes it. Expiry wakes nobody:
    /// sleep at most until the deadline.
    pub futex_expect: u32,
}

/// Sets the `OBSERVERS` bit on the slot's grant word (in any bound state), so that the
/// next change of holder wakes the futex. `None` when the slot no longer stands for the
/// name looked up as `bound_as` (look it up again).
pub fn announce_observer(slot: &Slot, bound_as: u64) -> Option<Observation> {
    for _ in 0..RETRY_LIMIT {
        let current = slot.grant.load(Acquire);
        if slot.bind.load(Acquire) != bound_as {
            return None;
        }
        let bits = grant::deadline_bits(current);
        if bits & grant::DEADLINE == grant::UNBOUND {
            return None;
        }
        if bits & grant::OBSERVERS != 0 {
            return Some(Observation { word: current, futex_expect: futex_value(current) });
        }
        let announced = grant::pack(bits | grant::OBSERVERS, grant::token(current));
        if slot.grant.compare_exchange(current, announced, AcqRel, Acquire).is_ok() {
            return Some(Observation { word: announced, futex_expect: futex_value(announced) });
        }
    }
    None
}

/// Rewrites the holder record of the live grant with `token`, e.g. to mark it detached.
pub fn rewrite_holder(
    slot: &Slot,
    token: u64,
    now: u64,
    record: holder::Record,
) -> Result<(), Lost> {
    check_ours(slot.grant.load(Acquire), token, now)?;
    let record = holder::Record { tag: holder::Record::tag_for(token), ..record };
    slot.holder.store(record.pack(), Release);
    // If the grant was lost between the check and the store, the record describes a
    // grant that is gone; its tag keeps readers from applying it to the next one.
    check_ours(slot.grant.load(Acquire), token, now)
}

/// The next token of the multi-holder name whose head is `head` (found bound as
/// `head_bound`, with `permits`), for a seat whose current token is `seat_token`: the
/// head's counter is CASed to the least value ≥ `max(now, counter + 1, seat_token + 1)`
/// whose low 32 bits differ from `seat_token`'s (see [`try_grant`] on records). Refused
/// with `Rebound` when the head no longer stands for the name (look everything up again).
#[inline(always)]
pub fn take_token(
    head: &Slot,
    head_bound: u64,
    permits: u32,
    now: u64,
    seat_token: u64,
) -> Result<u64, Refusal> {
    for _ in 0..RETRY_LIMIT {
        let current = head.grant.load(Acquire);
        if head.bind.load(Acquire) != head_bound {
            return Err(Refusal::Rebound);
        }
        let bits = grant::deadline_bits(current);
        if grant::permits(bits) != Some(permits) {
            return Err(Refusal::Rebound);
        }
        let counter = grant::token(current);
        let token = counted_token(counter, seat_token, now)?;
        point(Op::Grant);
        if head.grant.compare_exchange(current, grant::pack(bits, token), AcqRel, Acquire).is_ok() {
            return Ok(token);
        }
    }
    Err(Refusal::Interference)
}

/// Makes the name's own slot (bound as `bound_as`) the head of a name with `permits`
/// (2..=128), if it holds no live grant: the counter starts from the slot's token, so
/// the name's tokens keep growing (a grant of a provably dead holder, as `holder_is_dead`
/// says, is ended). Refused with `Held` while an
/// exclusive grant is live, with `Group` when it is a head already (with its N).
pub fn make_group(
    slot: &Slot,
    bound_as: u64,
    permits: u32,
    now: u64,
    holder_is_dead: &mut dyn FnMut(&holder::Record) -> bool,
) -> Result<(), Refusal> {
    debug_assert!((2..=grant::PERMITS as u32).contains(&permits));
    for _ in 0..RETRY_LIMIT {
        let current = slot.grant.load(Acquire);
        if slot.bind.load(Acquire) != bound_as {
            return Err(Refusal::Rebound);
        }
        let bits = grant::deadline_bits(current);
        let token = grant::token(current);
        if grant::is_shared(bits) {
            return Err(Refusal::Shared);
        }
        match classify(bits, now) {
            Observed::Group => {
                return Err(Refusal::Group { permits: grant::permits(bits).unwrap_or_default() })
            }
            Observed::Unbound => return Err(Refusal::Rebound),
            Observed::Held => {
                // A provably dead holder's grant is ended, as by `try_grant`.
                let raw = slot.holder.load(Acquire);
                let record = holder::Record::unpack(raw);
                let record = (record.tag == holder::Record::tag_for(token)).then_some(record);
                match record {
                    Some(r) if !r.detached && holder_is_dead(&r) => {
                        if slot.holder.load(Acquire) != raw {
                            continue;
                        }
                    }
                    _ => {
                        return Err(Refusal::Held {
                            token,
                            deadline: bits & grant::DEADLINE,
                            holder: record,
                        })
                    }
                }
            }
            Observed::Free | Observed::Revoked | Observed::Expired | Observed::Corrupt => {}
        }
        // Waiters and observers of the exclusive lease are woken by the caller (they
        // will find the name's kind changed); a request was for a grant that is gone.
        let head = grant::pack(grant::GROUP | permits as u64 | (bits & grant::WAITERS), token);
        point(Op::Grant);
        if slot.grant.compare_exchange(current, head, AcqRel, Acquire).is_ok() {
            point(Op::Grant);
            return Ok(());
        }
    }
    Err(Refusal::Interference)
}

/// Makes the name's own slot (bound as `bound_as`) the head of a shared name: adds the
/// kind bits to its word, whatever its exclusive grant (a live one stays exactly as it
/// is, and becomes the shared name's exclusive holder). `Ok` if it is one already;
/// refused with `Group` for a name with permits.
pub fn make_shared(slot: &Slot, bound_as: u64) -> Result<(), Refusal> {
    for _ in 0..RETRY_LIMIT {
        let current = slot.grant.load(Acquire);
        if slot.bind.load(Acquire) != bound_as {
            return Err(Refusal::Rebound);
        }
        let bits = grant::deadline_bits(current);
        if grant::is_shared(bits) {
            return Ok(());
        }
        if let Some(permits) = grant::permits(bits) {
            return Err(Refusal::Group { permits });
        }
        if bits & grant::DEADLINE == grant::UNBOUND {
            return Err(Refusal::Rebound);
        }
        point(Op::Grant);
        let shared = grant::pack(bits | grant::KIND, grant::token(current));
        if slot.grant.compare_exchange(current, shared, AcqRel, Acquire).is_ok() {
            point(Op::Grant);
            return Ok(());
        }
    }
    Err(Refusal::Interference)
}

/// The next token of the shared name whose head is `head` (bound as `head_bound`), for
/// a shared grant in a seat whose current token is `seat_token`, as [`take_token`] —
/// but only while the name has no live exclusive holder: refused with `Held` (naming
/// it) while it has one, unless `holder_is_dead` proves it dead, in which case its
/// grant is ended (`FREE`) in the same CAS. The CAS is `SeqCst`: see `table::shared`
/// on why a shared grant must also look at the head again after its seat's CAS.
pub fn take_shared_token(
    head: &Slot,
    head_bound: u64,
    now: u64,
    seat_token: u64,
    holder_is_dead: &mut dyn FnMut(&holder::Record) -> bool,
) -> Result<u64, Refusal> {
    for _ in 0..RETRY_LIMIT {
        let current = head.grant.load(SeqCst);
        if head.bind.load(Acquire) != head_bound {
            return Err(Refusal::Rebound);
        }
        let mut bits = grant::deadline_bits(current);
        if !grant::is_shared(bits) {
            return Err(Refusal::Rebound);
        }
        let counter = grant::token(current);
        match classify(bits, now) {
            Observed::Unbound => return Err(Refusal::Rebound),
            Observed::Held => {
                let raw = head.holder.load(Acquire);
                let record = holder::Record::unpack(raw);
                let record = (record.tag == holder::Record::tag_for(counter)).then_some(record);
                match record {
                    Some(r) if !r.detached && holder_is_dead(&r) => {
                        if head.holder.load(Acquire) != raw {
                            continue;
                        }
                        bits = bits & grant::FLAGS & !grant::REQUESTED | grant::KIND | grant::FREE;
                    }
                    _ => {
                        let deadline = bits & grant::DEADLINE & !grant::KIND;
                        return Err(Refusal::Held { token: counter, deadline, holder: record });
                    }
                }
            }
            _ => {}
        }
        let token = counted_token(counter, seat_token, now)?;
        point(Op::Grant);
        if head.grant.compare_exchange(current, grant::pack(bits, token), SeqCst, SeqCst).is_ok() {
            return Ok(token);
        }
    }
    Err(Refusal::Interference)
}

/// The ticket of a new place in a fair queue, for a place (slot) whose current token is
/// `seat_token`: the table's ticket counter (`Header::tickets`) is CASed to the least
/// value ≥ `max(now, counter + 1, seat_token + 1)` whose low 32 bits differ from
/// `seat_token`'s. So tickets are distinct across the table and taken in increasing
/// order (a place taken after another was returned has a larger ticket), and each
/// place's token still only grows.
pub fn take_ticket(tickets: &AtomicU64, now: u64, seat_token: u64) -> Result<u64, Refusal> {
    for _ in 0..RETRY_LIMIT {
        let counter = tickets.load(SeqCst);
        let ticket = counted_token(counter, seat_token, now)?;
        if tickets.compare_exchange(counter, ticket, SeqCst, SeqCst).is_ok() {
            return Ok(ticket);
        }
    }
    Err(Refusal::Interference)
}

/// Unbinding, step 1 (table lock held): makes the slot ungrantable if nobody holds it
/// (a multi-holder name's head: the caller has checked that none of its seats is
/// bound). Returns the slot's last token (to raise the table's token floor with) and whether
/// waiters must be woken (they will look the name up again).
pub fn retire(slot: &Slot, now: u64) -> Option<(u64, bool)> {
    for _ in 0..RETRY_LIMIT {
        let current = slot.grant.load(Acquire);
        let bits = grant::deadline_bits(current);
        let token = grant::token(current);
        match classify(bits, now) {
            Observed::Unbound => return Some((token, false)),
            Observed::Held => return None,
            _ => {}
        }
        let new = grant::pack(grant::UNBOUND, token);
        point(Op::Bind);
        if slot.grant.compare_exchange(current, new, AcqRel, Acquire).is_ok() {
            point(Op::Bind);
            return Some((token, wakes(current)));
        }
    }
    None
}

/// Binds `name` (zero-padded words, `len` bytes, `hash` bits) to `slot`, whose binding
/// word was `previous` (table lock held; the slot must be EMPTY, TOMBSTONE, BINDING left
/// by a dead binder, or retired). The first grant will carry a token above both the
/// slot's own history and `floor`. Returns the new binding word, or `None` when the
/// slot's token space is exhausted (a corrupt slot).
#[allow(clippy::too_many_arguments)]
pub fn bind(
    slot: &Slot,
    previous: u64,
    name: &[u64; 8],
    len: usize,
    seat: u8,
    hash: u32,
    floor: u64,
) -> Option<u64> {
    let generation = bind::generation(previous) + 1;
    slot.bind.store(bind::pack(bind::BINDING, len, generation, seat, hash), Relaxed);
    point(Op::Bind);
    let last = grant::token(slot.grant.load(Acquire));
    let token = last.max(floor).checked_add(1)?;
    for (word, value) in slot.name.iter().zip(name) {
        word.store(*value, Relaxed);
    }
    point(Op::Bind);
    slot.holder.store(0, Relaxed);
    slot.label.store(0, Relaxed);
    slot.renewed_at.store(0, Relaxed);
    slot.transitions.store(0, Relaxed);
    point(Op::Bind);
    // Release: a reader that sees this grant word also sees the BINDING store above,
    // so its binding re-check fails (see `try_grant`).
    slot.grant.store(grant::pack(grant::FREE, token), Release);
    point(Op::Bind);
    let bound = bind::pack(bind::BOUND, len, generation, seat, hash);
    slot.bind.store(bound, Release);
    point(Op::Bind);
    Some(bound)
}

/// Unbinding, step 2 (table lock held, after [`retire`] and raising the floor).
pub fn tombstone(slot: &Slot) {
    let b = slot.bind.load(Acquire);
    slot.bind.store(bind::with_state(b, bind::TOMBSTONE, 0), Release);
    point(Op::Bind);
}

/// A consistent copy of a bound slot, for inspection.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub bind: u64,
    pub grant: u128,
    /// The holder record, when it belongs to the grant in `grant`.
    pub holder: Option<holder::Record>,
    pub label: u64,
    pub renewed_at: u64,
    pub transitions: u64,
    pub name: [u64; 8],
}

/// Reads a bound slot consistently (same binding before and after), or `None` if it is
/// not bound or keeps being re-bound.
pub fn snapshot(slot: &Slot) -> Option<Snapshot> {
    for _ in 0..8 {
        let b = slot.bind.load(Acquire);
        if bind::state(b) != bind::BOUND {
            return None;
        }
        let mut name = [0u64; 8];
        for (out, word) in name.iter_mut().zip(&slot.name) {
            *out = word.load(Relaxed);
        }
        let grant_word = slot.grant.load(Acquire);
        let record = holder::Record::unpack(slot.holder.load(Acquire));
        let label = slot.label.load(Relaxed);
        let renewed_at = slot.renewed_at.load(Relaxed);
        let transitions = slot.transitions.load(Relaxed);
        if slot.bind.load(Acquire) != b {
            continue;
        }
        let token = grant::token(grant_word);
        let holder = (record.tag == holder::Record::tag_for(token)).then_some(record);
        return Some(Snapshot {
            bind: b,
            grant: grant_word,
            holder,
            label,
            renewed_at,
            transitions,
            name,
        });
    }
    None
}
