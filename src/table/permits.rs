//! Names with `permits = N` (N ≥ 2): the name's own slot is its *head*, and each of up to
//! N holders has a grant in a *seat* slot of its own (seats 1..=N, bound like names, with
//! the same name bytes). The slot protocol and the head's part in it are in
//! [`crate::protocol`] (`take_token`, `make_group`); the layout is in
//! [`crate::layout::grant`]. Here: finding and binding seats, waiting for any seat to
//! free, and the operations that address a name's grants by token or all at once.
//!
//! # States of a name with permits
//!
//! | state | what the table holds | left by |
//! |---|---|---|
//! | absent | no slot bound to the name | the first acquirer with `permits = N`: binds the head (table lock) and makes it a group |
//! | exclusive, not held | the name's slot as an ordinary lease, free, revoked or expired | an acquirer with `permits = N`: [`protocol::make_group`] (one CAS); an exclusive acquirer: a grant |
//! | group(N) | the head; seats bound as needed (table lock), each free, held or expired | seat grants, renewals, releases (lock-free, per seat); eviction of idle seats, then of the head once no seat is bound (table lock) |
//!
//! A group's N never changes while its head is bound: a caller asking for another N
//! (or for an exclusive lease) gets [`Error::WrongKind`]. An exclusive lease that is
//! live is never turned into a group.
//!
//! # Waiting
//!
//! A blocked acquirer reads the table's seat-event count (`Header::seat_events`),
//! announces itself (`WAITERS`) on every held seat, and sleeps on the count's futex
//! word. Whoever frees a seat that has `WAITERS` (release, revocation, unbinding) bumps
//! the count and wakes it. The count only grows, so no wake-up is lost between the
//! acquirer's last look and its sleep: a seat freed before the acquirer's announcement
//! on it is seen free (the acquirer tries again instead of sleeping), one freed after
//! it moves the count past the value read first. (A flag on the head would not do:
//! a waiter re-setting it restores the value another waiter is about to sleep on.) An
//! expiry wakes nobody, so the sleep ends at the soonest seat deadline; the death of a
//! holder is noticed within [`super::wait::LIVENESS_RECHECK`] (no per-holder death
//! alarm is kept for seats). The count is shared by all names: a freed seat wakes the
//! waiters of other names too, who look and sleep again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    interference, token_exhausted, AcquireOptions, Attempt, Inner, Key, Patience, FREE_TRIES,
};
use crate::error::{Error, LostReason, Result};
use crate::identity;
use crate::info::{GrantInfo, Label, LeaseInfo, LeaseKind, LeaseState};
use crate::layout::{bind, grant};
use crate::protocol::{self, Refusal, Targeted};
use crate::sync::Ordering;

std::thread_local! {
    /// The seat (0-based) this thread last won, whatever the name: where it looks first.
    static LAST_SEAT: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// What a try at one seat found, for [`Inner::seat_pass`].
pub(super) enum SeatTry<A> {
    /// Granted: the pass ends, and this thread looks at this seat first next time.
    Won(A),
    /// An answer that ends the pass (a shared name's exclusive holder).
    Final(A),
    /// Held until the deadline given: the pass goes on.
    Held(A, u64),
    /// The seat or the head moved: start over.
    Moved,
}

/// What a pass over every seat of a name found.
pub(super) enum Pass<A> {
    /// A grant or a final answer, or every seat held (the one that frees soonest).
    Done(A),
    /// No bound seat was free, and this seat (1..=N) is not bound: bind it.
    Unbound(u8),
    /// The head or a seat moved while we looked: start over.
    Moved,
}

/// Where a pass over a name's seats starts: the seat (0-based) the thread last won.
pub(super) type LastSeat = std::thread::LocalKey<std::cell::Cell<Option<u32>>>;

impl Inner {
    /// The key of the name bound to slot `index` (its seat included).
    pub(super) fn key_of(&self, index: u32) -> Key {
        let slot = self.slot(index);
        let b = slot.bind.load(Ordering::Acquire);
        let mut words = [0u64; 8];
        for (out, word) in words.iter_mut().zip(&slot.name) {
            *out = word.load(Ordering::Relaxed);
        }
        Key::from_stored(words, bind::name_len(b), bind::seat(b))
    }

    /// [`Error::WrongKind`] for `key`'s name (its own slot or head is `index`), in use
    /// as `recorded`.
    pub(super) fn wrong_kind(
        &self,
        key: &Key,
        index: u32,
        recorded: LeaseKind,
        requested: LeaseKind,
    ) -> Error {
        if recorded == LeaseKind::Permits(0) {
            return Error::Corrupt {
                location: self.location.to_string(),
                reason: format!(
                    "slot {index} is the head of a name with an impossible permit count"
                ),
            };
        }
        Error::WrongKind { name: key.name(), recorded, requested }
    }

    /// Slot `index` was freed with waiters or observers announced on it: wakes them,
    /// and when it is a seat, whoever waits for any seat (see the module docs).
    pub(crate) fn freed(&self, index: u32) {
        self.wake(index);
        if bind::seat(self.slot(index).bind.load(Ordering::Acquire)) != 0 {
            self.seat_event();
        }
    }

    /// Whether any of the `seats` seats of `key`'s name is bound.
    pub(super) fn any_seat(&self, key: &Key, seats: u32) -> bool {
        (1..=seats as u8).any(|s| self.find(&key.seat(s)).is_some())
    }

    /// Whether any of the first `seats` seats of the name whose head is slot `head` is
    /// bound. Only for the table lock's holder: nobody else (re)binds slots, so the
    /// name read from the head stays the head's.
    pub(super) fn any_seat_bound(&self, head: u32, seats: u32) -> bool {
        self.any_seat(&self.key_of(head), seats)
    }

    /// The head of `key`'s name as a group of `permits`, making the name's own slot one
    /// if it holds no live exclusive grant; `None` when the name is not bound.
    fn head(&self, key: &Key, permits: u32) -> Result<Option<(u32, u64)>> {
        for _ in 0..FREE_TRIES {
            let Some((index, bound_as)) = self.find(key) else { return Ok(None) };
            let slot = self.slot(index);
            let Some(word) = self.word_as_bound(index, bound_as) else { continue };
            let bits = grant::deadline_bits(word);
            match grant::permits(bits) {
                Some(n) if n == permits => return Ok(Some((index, bound_as))),
                Some(n) => return Err(self.wrong_kind(key, index, kind(n), kind(permits))),
                None => {}
            }
            match protocol::make_group(
                slot,
                bound_as,
                permits,
                self.now(),
                &mut identity::is_provably_dead,
            ) {
                Ok(()) => {
                    // Exclusive waiters and observers must learn the kind changed.
                    self.wake(index);
                    return Ok(Some((index, bound_as)));
                }
                Err(Refusal::Group { permits: n }) if n == permits => {
                    return Ok(Some((index, bound_as)))
                }
                Err(Refusal::Group { permits: n }) => {
                    return Err(self.wrong_kind(key, index, kind(n), kind(permits)))
                }
                Err(Refusal::Shared) => {
                    return Err(self.wrong_kind(key, index, LeaseKind::Shared, kind(permits)))
                }
                Err(Refusal::Held { .. }) => {
                    return Err(self.wrong_kind(key, index, LeaseKind::Exclusive, kind(permits)))
                }
                Err(Refusal::Rebound) => {}
                Err(_) => return Err(interference(&self.location, index)),
            }
        }
        Ok(None)
    }

    /// Tries to grant seat slot `index` (bound as `bound_as`), taking the token from the
    /// head; `None` when the seat or the head moved.
    fn grant_seat(
        &self,
        index: u32,
        bound_as: u64,
        (head, head_bound): (u32, u64),
        permits: u32,
        ttl: u64,
        label: Label,
    ) -> Result<Option<Attempt>> {
        let me = identity::me().record(false);
        let now = self.now();
        let head_slot = self.slot(head);
        let result = protocol::try_grant_with(
            self.slot(index),
            bound_as,
            now,
            ttl,
            me,
            label.to_word(),
            &mut identity::is_provably_dead,
            false,
            |seat_token| protocol::take_token(head_slot, head_bound, permits, now, seat_token),
        );
        match result {
            Ok(g) => {
                self.note_grant(index, &g);
                Ok(Some(Attempt::Won { slot: index, token: g.token, deadline: g.deadline }))
            }
            Err(Refusal::Held { token, deadline, holder }) => {
                Ok(Some(Attempt::Held { slot: index, bound_as, token, deadline, holder }))
            }
            Err(Refusal::Rebound) => Ok(None),
            Err(Refusal::TokenExhausted) => Err(token_exhausted(&self.location, index)),
            Err(Refusal::Group { .. } | Refusal::Shared | Refusal::Interference) => {
                Err(interference(&self.location, index))
            }
        }
    }

    /// One pass over the first `seats` seats of `key`'s name, trying each bound one
    /// with `try_seat(index, bound_as)`, from the seat this thread last won (`last`; at
    /// first, one picked by the pid), so that processes and threads holding seats of
    /// one name at once settle on seats of their own instead of all trying the same
    /// one first.
    pub(super) fn seat_pass<A>(
        &self,
        key: &Key,
        seats: u32,
        last: &'static LastSeat,
        mut try_seat: impl FnMut(u32, u64) -> Result<SeatTry<A>>,
    ) -> Result<Pass<A>> {
        let start = last.with(|s| s.get()).unwrap_or(identity::pid()) % seats;
        let mut unbound = None;
        let mut soonest: Option<(A, u64)> = None;
        for k in 0..seats {
            let seat = 1 + ((start + k) % seats) as u8;
            let Some((index, bound_as)) = self.find(&key.seat(seat)) else {
                unbound.get_or_insert(seat);
                continue;
            };
            match try_seat(index, bound_as)? {
                SeatTry::Won(a) => {
                    last.with(|s| s.set(Some(seat as u32 - 1)));
                    return Ok(Pass::Done(a));
                }
                SeatTry::Final(a) => return Ok(Pass::Done(a)),
                SeatTry::Held(a, deadline) => {
                    if soonest.as_ref().map_or(true, |(_, d)| deadline < *d) {
                        soonest = Some((a, deadline));
                    }
                }
                SeatTry::Moved => return Ok(Pass::Moved),
            }
        }
        Ok(match (unbound, soonest) {
            (Some(seat), _) => Pass::Unbound(seat),
            (None, Some((held, _))) => Pass::Done(held),
            (None, None) => Pass::Moved,
        })
    }

    /// One attempt at a seat of `key`'s name, for both kinds with seats: passes
    /// (`pass(head)`) over the seats of the head that `head()` finds (`None`: the name
    /// is not bound); when the name or a seat must be bound, binds them under the table
    /// lock and tries the seat just bound with `grant(index, bound_as, head)` (`None`:
    /// look again). `what` names the name's kind in a `Busy` (made only then).
    pub(super) fn attempt_seated<A>(
        &self,
        key: &Key,
        what: impl FnOnce() -> String,
        head: impl Fn() -> Result<Option<(u32, u64)>>,
        pass: impl Fn((u32, u64)) -> Result<Pass<A>>,
        grant: impl Fn(u32, u64, (u32, u64)) -> Result<Option<A>>,
    ) -> Result<A> {
        for _ in 0..FREE_TRIES {
            let Some(h) = head()? else { break };
            match pass(h)? {
                Pass::Done(a) => return Ok(a),
                Pass::Unbound(_) => break,
                Pass::Moved => {}
            }
        }
        // Under the table lock, where nobody else binds or unbinds: binds the head if
        // the name is absent, then a seat as needed.
        let _lock = self.lock()?;
        for _ in 0..super::BIND_PASSES {
            if self.bind_locked(key)?.is_none() {
                continue;
            }
            let Some(h) = head()? else { continue };
            let seat = match pass(h)? {
                Pass::Done(a) => return Ok(a),
                Pass::Unbound(seat) => seat,
                Pass::Moved => continue,
            };
            let Some((index, bound_as)) = self.bind_locked(&key.seat(seat))? else { continue };
            if let Some(a) = grant(index, bound_as, h)? {
                return Ok(a);
            }
        }
        Err(Error::Busy {
            location: self.location.to_string(),
            reason: format!(
                "the seats of {} kept being taken or evicted while this call bound them \
                 (the table is too small for the names in use)",
                what()
            ),
        })
    }

    /// One pass over the seats of a group (see [`Inner::seat_pass`]).
    fn try_seats(
        &self,
        key: &Key,
        head: (u32, u64),
        permits: u32,
        ttl: u64,
        label: Label,
    ) -> Result<Pass<Attempt>> {
        self.seat_pass(key, permits, &LAST_SEAT, |index, bound_as| {
            Ok(match self.grant_seat(index, bound_as, head, permits, ttl, label)? {
                Some(Attempt::Shared { .. }) => return Err(interference(&self.location, index)),
                Some(won @ Attempt::Won { .. }) => SeatTry::Won(won),
                Some(held @ Attempt::Held { deadline, .. }) => SeatTry::Held(held, deadline),
                None => SeatTry::Moved,
            })
        })
    }

    /// One attempt to take a permit of `key`'s name (binding the head or a seat if
    /// needed).
    fn attempt_permit(&self, key: &Key, permits: u32, ttl: u64, label: Label) -> Result<Attempt> {
        self.attempt_seated(
            key,
            || format!("a name with {permits} permits"),
            || self.head(key, permits),
            |head| self.try_seats(key, head, permits, ttl, label),
            |index, bound_as, head| {
                let attempt = self.grant_seat(index, bound_as, head, permits, ttl, label)?;
                Ok(attempt.filter(|a| matches!(a, Attempt::Won { .. })))
            },
        )
    }

    /// The fast path of both kinds with seats, as [`Inner::grant_free`] is of an
    /// exclusive lease: the name's head is bound, and the seat this thread looks at
    /// first (see [`Inner::seat_pass`]; one of `seats`) is bound and Free or Revoked:
    /// granted with the coarse clock, its token taken from the head by `take(head,
    /// head_bound, now, seat_token)` with the same reading
    /// ([`protocol::try_grant_free_with`] says why both are safe), when the grant keeps
    /// about 255/256 of its TTL that way. The grant is returned if `keep(head, seat, &g,
    /// now)` says so (a shared grant's second look at the head). `None` for anything
    /// else (an unbound head or seat, another kind or N, a held or expired seat, a short
    /// TTL, a lost race, a grant not kept): the kind's precise path judges it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn grant_seat_free(
        &self,
        key: &Key,
        seats: u32,
        last: &'static LastSeat,
        ttl: u64,
        label: Label,
        take: impl FnOnce(&crate::layout::Slot, u64, u64, u64) -> Option<u64>,
        keep: impl FnOnce(u32, u32, &protocol::Granted, u64) -> bool,
    ) -> Option<(u32, u64, u64)> {
        if !super::coarse_clock_will_do(ttl) {
            return None;
        }
        let (head, head_bound) = self.find(key)?;
        let seat = 1 + (last.with(|s| s.get()).unwrap_or_else(identity::pid) % seats) as u8;
        let (index, bound_as) = self.find_seat(key, seat)?;
        let me = identity::me().record(false);
        let now = self.now_lagging();
        let head_slot = self.slot(head);
        let g = protocol::try_grant_free_with(
            self.slot(index),
            bound_as,
            now,
            ttl,
            me,
            label.to_word(),
            |seat_token| take(head_slot, head_bound, now, seat_token),
        )?;
        self.note_grant(index, &g);
        if !keep(head, index, &g, now) {
            return None;
        }
        last.with(|s| s.set(Some(seat as u32 - 1)));
        Some((index, g.token, g.deadline))
    }

    /// The fast path of a permit ([`Inner::grant_seat_free`], the token from the head's
    /// counter); `None`: [`Inner::grant_permit`] judges it.
    #[inline(always)]
    pub(super) fn grant_permit_free(
        &self,
        key: &Key,
        permits: u32,
        ttl: u64,
        label: Label,
    ) -> Option<(u32, u64, u64)> {
        self.grant_seat_free(
            key,
            permits,
            &LAST_SEAT,
            ttl,
            label,
            |head, head_bound, now, seat_token| {
                protocol::take_token(head, head_bound, permits, now, seat_token).ok()
            },
            |_, _, _, _| true,
        )
    }

    /// Takes a permit: `(slot, token, deadline)` of the seat granted.
    pub(super) fn grant_permit(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        let permits = options.permits;
        let patience = Patience::of(options);
        loop {
            let attempt = match self.attempt_permit(key, permits, ttl, options.label) {
                // No room in the table for another seat: a caller that waits waits for
                // one of the seats there are (a caller that does not is told so).
                Err(Error::TableFull { .. }) if patience.waits() && self.any_seat(key, permits) => {
                    let left = patience.left()?;
                    if left.is_zero() {
                        return Err(Error::TableFull { capacity: self.capacity });
                    }
                    self.sleep_for_seats(key, permits, false, left);
                    continue;
                }
                other => other?,
            };
            let (index, token, record) = match attempt {
                Attempt::Won { slot, token, deadline } => return Ok((slot, token, deadline)),
                Attempt::Held { slot, token, holder, .. } => (slot, token, holder),
                Attempt::Shared { slot, .. } => return Err(interference(&self.location, slot)),
            };
            if !patience.waits() {
                let remaining = self.remaining_of(index, token);
                return Err(Error::Held {
                    token,
                    remaining,
                    holder: self.holder_of(index, record),
                });
            }
            let left = patience.left()?;
            if left.is_zero() {
                let holder = self.holder_of(index, record);
                return Err(Error::TimedOut { waited: patience.waited(), token, holder });
            }
            self.sleep_for_seats(key, permits, true, left);
        }
    }

    /// Time left of the grant with `token` in slot `index` (zero if it is gone).
    fn remaining_of(&self, index: u32, token: u64) -> Duration {
        let word = self.slot(index).grant.load(Ordering::Acquire);
        let left = if grant::token(word) == token {
            grant::deadline(word).saturating_sub(self.now())
        } else {
            0
        };
        Duration::from_nanos(left)
    }

    /// The seat among the first `seats` of `key`'s name that holds the grant with
    /// `token` (live or not), if any: read while the seat is still bound to the name.
    pub(super) fn seat_with_token(&self, key: &Key, seats: u32, token: u64) -> Option<u32> {
        (1..=seats as u8).find_map(|s| {
            let (index, bound_as) = self.find(&key.seat(s))?;
            let word = self.word_as_bound(index, bound_as)?;
            (grant::token(word) == token).then_some(index)
        })
    }

    /// A consistent snapshot of the slot bound to `key` (the name at its seat), taken
    /// while it is still bound as found.
    pub(super) fn snapshot_of(&self, key: &Key) -> Option<(u32, protocol::Snapshot)> {
        let (index, bound_as) = self.find(key)?;
        let snap = protocol::snapshot(self.slot(index))?;
        (snap.bind == bound_as).then_some((index, snap))
    }

    /// Applies `op` to every live grant in the first `seats` seats of `key`'s name (to
    /// the one with `only`, when given); returns the largest token it was done to.
    /// `latest` is the name's latest token, read from its head, for the reason of a
    /// `Lost`.
    pub(super) fn on_seats(
        &self,
        key: &Key,
        latest: u64,
        seats: u32,
        only: Option<u64>,
        op: fn(
            &crate::layout::Slot,
            u64,
            u64,
            Option<u64>,
        ) -> std::result::Result<Targeted, Refusal>,
    ) -> Result<Option<u64>> {
        let mut done = None;
        for seat in 1..=seats as u8 {
            let Some((index, bound_as)) = self.find(&key.seat(seat)) else { continue };
            if only
                .is_some_and(|t| grant::token(self.slot(index).grant.load(Ordering::Acquire)) != t)
            {
                continue;
            }
            match op(self.slot(index), bound_as, self.now(), only) {
                Ok(Targeted::Done { token, wake }) => {
                    if wake {
                        self.freed(index);
                    }
                    done = done.max(Some(token));
                }
                Ok(Targeted::NotHeld { .. } | Targeted::OtherToken { .. }) => {}
                Err(Refusal::Rebound) => {} // evicted: it held nothing
                Err(_) => return Err(interference(&self.location, index)),
            }
        }
        match (only, done) {
            (Some(token), None) => {
                Err(Error::Lost { token, reason: self.why_not_in_group(key, latest, seats, token) })
            }
            _ => Ok(done),
        }
    }

    /// Why `token` is not a live grant in the first `seats` seats of `key`'s name,
    /// whose latest token is `latest`.
    pub(super) fn why_not_in_group(
        &self,
        key: &Key,
        latest: u64,
        seats: u32,
        token: u64,
    ) -> LostReason {
        if token > latest {
            return LostReason::NotIssued { latest };
        }
        match self.seat_with_token(key, seats, token) {
            Some(index) => self.why_not_live(index, token),
            // Its seat has been granted again since, or evicted once idle.
            None => LostReason::TakenOver,
        }
    }

    /// The info of a group whose head is slot `index` (with `permits`), read at `now`.
    pub(super) fn group_info(
        &self,
        key: &Key,
        index: u32,
        head: &protocol::Snapshot,
        permits: u32,
        now: u64,
        wall: SystemTime,
    ) -> LeaseInfo {
        let mut info = self.info_of(index, head, now, wall);
        info.kind = kind(permits);
        info.token = grant::token(head.grant);
        info.state = LeaseState::Free;
        info.holder = None;
        info.acquired_at = None;
        info.renewed_at = None;
        info.expires_at = None;
        info.remaining = Duration::ZERO;
        info.transitions = 0;
        let mut grants = Vec::new();
        for seat in 1..=permits as u8 {
            let Some((si, snap)) = self.snapshot_of(&key.seat(seat)) else { continue };
            info.transitions = info.transitions.wrapping_add(snap.transitions);
            let seat_info = self.info_of(si, &snap, now, wall);
            if seat_info.state == LeaseState::Held {
                grants.extend(seat_info.grants);
            }
        }
        grants.sort_by_key(|g| g.token);
        if let Some(longest) = grants.iter().map(|g| g.remaining).max() {
            info.state = LeaseState::Held;
            info.remaining = longest;
            info.expires_at = grants.iter().filter_map(|g| g.expires_at).max();
        }
        // The head was read before the seats: a grant made in between shows a newer token.
        info.token = grants.iter().map(|g| g.token).fold(info.token, u64::max);
        info.grants = grants;
        info
    }
}

/// The kind of a name recorded with `permits` (1: exclusive).
pub(super) fn kind(permits: u32) -> LeaseKind {
    if permits <= 1 {
        LeaseKind::Exclusive
    } else {
        LeaseKind::Permits(permits)
    }
}

/// The grant a held slot shows, for [`LeaseInfo::grants`].
pub(super) fn grant_info(info: &LeaseInfo) -> GrantInfo {
    GrantInfo {
        token: info.token,
        holder: info.holder,
        acquired_at: info.acquired_at,
        renewed_at: info.renewed_at,
        expires_at: info.expires_at,
        remaining: info.remaining,
        slot: info.slot,
        shared: false,
    }
}
