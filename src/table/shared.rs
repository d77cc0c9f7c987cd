//! Shared names: up to [`MAX_SHARED`] shared holders at once, or one exclusive holder,
//! never both; each holder with its own TTL, holder record and token.
//!
//! The name's own slot is its *head*; its word is `(GROUP | SHARED | w, counter)`, where
//! `w` is the exclusive holder's grant exactly as in an ordinary slot (so an exclusive
//! holder renews, releases, is revoked and reclaimed through the ordinary protocol,
//! which keeps the kind bits), and the counter is the token of the name's latest
//! grant of either kind. Shared grants live in seats 1..=64 like permits, and take their
//! tokens from the counter with [`protocol::take_shared_token`], which refuses while
//! `w` is a live grant (unless its holder is provably dead, whose grant it then ends).
//!
//! # Who may do what
//!
//! | state of `w` | shared acquirer | exclusive acquirer |
//! |---|---|---|
//! | free, revoked, expired, dead holder | takes a seat | takes `w` (CAS on the head), then waits until no seat holds a live shared grant ("drains"), renewing `w` meanwhile; returns the grant only then |
//! | held (draining or granted) | waits on the head | waits on the head |
//!
//! A waiting exclusive acquirer holds `w` while it drains, so no new shared grant starts
//! meanwhile: writers never starve. A shared acquirer waits while any exclusive holder
//! holds or drains; when one releases, waiting shared and exclusive acquirers race for
//! the name, so a continuous stream of exclusive acquirers can keep shared ones out
//! (there is no phase-fair bound; arrival order needs fair acquisition).
//!
//! # Why a shared grant looks at the head twice
//!
//! A shared acquirer takes its token (head CAS, refused while `w` is live) and then its
//! seat (seat CAS); an exclusive acquirer may take `w` in between and, scanning the
//! seats, miss the seat not yet taken. So after its seat CAS the shared acquirer looks
//! at the head again, and withdraws (releases the seat, never having returned it) if a
//! live `w` appeared; the exclusive acquirer scans the seats only after its own CAS on
//! the head. With a `SeqCst` fence between each side's CAS and its look at the other
//! word, at least one of them sees the other (Dekker): either the exclusive acquirer
//! waits for the seat, or the shared acquirer withdraws. So no shared grant and no
//! exclusive grant are ever *returned* for overlapping times; a table snapshot may show
//! a withdrawing seat next to a draining `w` for a moment.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::permits::{Pass, SeatTry};
use super::wait::{Renewer, LIVENESS_RECHECK};
use super::{interference, token_exhausted, AcquireOptions, Inner, Key, Patience, FREE_TRIES};
use crate::error::{Error, Result};
use crate::identity;
use crate::info::{Label, LeaseInfo, LeaseKind, LeaseState};
use crate::layout::{grant, holder::Record, MAX_SHARED};
use crate::protocol::{self, Observed, Refusal, Wait};
use crate::sync::Ordering;

/// What one attempt at a shared grant found.
enum SharedAttempt {
    Won {
        slot: u32,
        token: u64,
        deadline: u64,
    },
    /// An exclusive holder (or draining acquirer) has the head.
    Exclusive {
        head: u32,
        token: u64,
        deadline: u64,
        holder: Option<Record>,
    },
    /// Every seat is held; the one that frees soonest.
    Full {
        slot: u32,
        token: u64,
        deadline: u64,
        holder: Option<Record>,
    },
}

std::thread_local! {
    /// The shared seat (0-based) this thread last won: where it looks first.
    static LAST_SHARED_SEAT: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// Whether slot `index`, read as `word`, holds a live grant of a live (or unknown)
/// holder: what an exclusive acquirer must wait for.
pub(super) fn live_grant(
    inner: &Inner,
    index: u32,
    word: u128,
    now: u64,
) -> Option<(u64, Option<Record>)> {
    let bits = grant::deadline_bits(word);
    if protocol::classify(bits, now) != Observed::Held {
        return None;
    }
    let token = grant::token(word);
    let record = inner.record_of(index, token);
    match record {
        Some(r) if !r.detached && identity::is_provably_dead(&r) => None,
        _ => Some((grant::deadline(word), record)),
    }
}

impl Inner {
    /// The head of `key`'s name as a shared name, making the name's own slot one (with
    /// [`protocol::make_shared`]) when `make` says so; `None` when the name is not bound.
    fn shared_head(&self, key: &Key, make: bool) -> Result<Option<(u32, u64)>> {
        for _ in 0..FREE_TRIES {
            let Some((index, bound_as)) = self.find(key) else { return Ok(None) };
            let Some(word) = self.word_as_bound(index, bound_as) else { continue };
            let bits = grant::deadline_bits(word);
            if grant::is_shared(bits) {
                return Ok(Some((index, bound_as)));
            }
            if let Some(n) = grant::permits(bits) {
                let recorded = super::permits::kind(n);
                return Err(self.wrong_kind(key, index, recorded, LeaseKind::Shared));
            }
            if !make {
                return Ok(None);
            }
            match protocol::make_shared(self.slot(index), bound_as) {
                Ok(()) => {
                    // Waiters and observers of the exclusive lease must see the change.
                    self.wake(index);
                    return Ok(Some((index, bound_as)));
                }
                Err(Refusal::Group { permits }) => {
                    let recorded = super::permits::kind(permits);
                    return Err(self.wrong_kind(key, index, recorded, LeaseKind::Shared));
                }
                Err(Refusal::Rebound) => {}
                Err(_) => return Err(interference(&self.location, index)),
            }
        }
        Ok(None)
    }

    /// Tries to take shared seat slot `index` (bound as `bound_as`) of the shared name
    /// whose head is `head`; `None` when the seat or the head moved.
    fn grant_shared_seat(
        &self,
        index: u32,
        bound_as: u64,
        (head, head_bound): (u32, u64),
        ttl: u64,
        label: Label,
    ) -> Result<Option<SharedAttempt>> {
        let me = identity::me().record(false);
        let now = self.now();
        let head_slot = self.slot(head);
        let mut exclusive = None;
        let result = protocol::try_grant_with(
            self.slot(index),
            bound_as,
            now,
            ttl,
            me,
            label.to_word(),
            &mut identity::is_provably_dead,
            false,
            |seat_token| {
                let t = protocol::take_shared_token(
                    head_slot,
                    head_bound,
                    now,
                    seat_token,
                    &mut identity::is_provably_dead,
                );
                if let Err(Refusal::Held { token, deadline, holder }) = t {
                    exclusive = Some((token, deadline, holder));
                    return Err(Refusal::Shared);
                }
                t
            },
        );
        let g = match result {
            Ok(g) => g,
            Err(Refusal::Shared) => {
                // Refused by the head (its exclusive holder), or a seat scribbled with the
                // kind bits (no shmlease writes those on a seat).
                let Some((token, deadline, holder)) = exclusive else {
                    return Err(interference(&self.location, index));
                };
                return Ok(Some(SharedAttempt::Exclusive { head, token, deadline, holder }));
            }
            Err(Refusal::Held { token, deadline, holder }) => {
                return Ok(Some(SharedAttempt::Full { slot: index, token, deadline, holder }))
            }
            Err(Refusal::Rebound) => return Ok(None),
            Err(Refusal::TokenExhausted) => return Err(token_exhausted(&self.location, index)),
            Err(Refusal::Group { .. } | Refusal::Interference) => {
                return Err(interference(&self.location, index))
            }
        };
        self.note_grant(index, &g);
        if let Some((token, deadline, holder)) = self.withdraw_if_exclusive(head, index, &g, now) {
            return Ok(Some(SharedAttempt::Exclusive { head, token, deadline, holder }));
        }
        Ok(Some(SharedAttempt::Won { slot: index, token: g.token, deadline: g.deadline }))
    }

    /// What a shared grant `g` just made in seat `index` does next: looks at the head
    /// again (see the module docs: an exclusive acquirer that took it after our token
    /// may have scanned the seats before our CAS), and if an exclusive grant is live
    /// there, withdraws (releases the seat, never returned) and says whose. `now`
    /// (precise or lagging: it may only make an expired grant look live, which costs a
    /// withdrawal, never a missed live one) judges the head.
    #[inline(always)]
    fn withdraw_if_exclusive(
        &self,
        head: u32,
        index: u32,
        g: &protocol::Granted,
        now: u64,
    ) -> Option<(u64, u64, Option<Record>)> {
        crate::sync::fence_after_cas128();
        let word = self.slot(head).grant.load(Ordering::SeqCst);
        let (deadline, holder) = live_grant(self, head, word, now)?;
        self.withdraw(index, g);
        Some((grant::token(word), deadline, holder))
    }

    /// Releases the shared grant `g` in seat `index`, which was never returned.
    #[cold]
    #[inline(never)]
    fn withdraw(&self, index: u32, g: &protocol::Granted) {
        if let Ok(wake) = protocol::release(self.slot(index), g.token, g.deadline) {
            if wake {
                self.freed(index);
            }
        }
    }

    /// The fast path of a shared grant ([`Inner::grant_seat_free`]): the head shared,
    /// its exclusive grant not live by the coarse clock (the token taken from it never
    /// ends one: a dead exclusive holder's grant is ended on the precise path), and the
    /// grant withdrawn if an exclusive acquirer took the head meanwhile. `None`:
    /// [`Inner::grant_shared`] judges it.
    #[inline(always)]
    pub(super) fn grant_shared_free(
        &self,
        key: &Key,
        ttl: u64,
        label: Label,
    ) -> Option<(u32, u64, u64)> {
        self.grant_seat_free(
            key,
            MAX_SHARED,
            &LAST_SHARED_SEAT,
            ttl,
            label,
            |head, head_bound, now, seat_token| {
                let never_dead = &mut |_: &Record| false;
                protocol::take_shared_token(head, head_bound, now, seat_token, never_dead).ok()
            },
            |head, index, g, now| self.withdraw_if_exclusive(head, index, g, now).is_none(),
        )
    }

    /// One pass over the seats of a shared name (see [`Inner::seat_pass`]).
    fn shared_pass(
        &self,
        key: &Key,
        head: (u32, u64),
        ttl: u64,
        label: Label,
    ) -> Result<Pass<SharedAttempt>> {
        self.seat_pass(key, MAX_SHARED, &LAST_SHARED_SEAT, |index, bound_as| {
            Ok(match self.grant_shared_seat(index, bound_as, head, ttl, label)? {
                Some(won @ SharedAttempt::Won { .. }) => SeatTry::Won(won),
                Some(ex @ SharedAttempt::Exclusive { .. }) => SeatTry::Final(ex),
                Some(full @ SharedAttempt::Full { deadline, .. }) => SeatTry::Held(full, deadline),
                None => SeatTry::Moved,
            })
        })
    }

    /// One attempt at a shared grant of `key`'s name (binding the head or a seat if
    /// needed).
    fn attempt_shared(&self, key: &Key, ttl: u64, label: Label) -> Result<SharedAttempt> {
        self.attempt_seated(
            key,
            || "a shared name".to_owned(),
            || self.shared_head(key, true),
            |head| self.shared_pass(key, head, ttl, label),
            |index, bound_as, head| {
                let attempt = self.grant_shared_seat(index, bound_as, head, ttl, label)?;
                Ok(attempt.filter(|a| !matches!(a, SharedAttempt::Full { .. })))
            },
        )
    }

    /// Takes a shared grant: `(slot, token, deadline)` of the seat granted.
    pub(super) fn grant_shared(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        let patience = Patience::of(options);
        loop {
            let attempt = match self.attempt_shared(key, ttl, options.label) {
                // No room in the table for another seat: a caller that waits waits for
                // one of the seats there are (a caller that does not is told so).
                Err(Error::TableFull { .. })
                    if patience.waits() && self.any_seat(key, MAX_SHARED) =>
                {
                    let left = patience.left()?;
                    if left.is_zero() {
                        return Err(Error::TableFull { capacity: self.capacity });
                    }
                    self.sleep_for_seats(key, MAX_SHARED, false, left);
                    continue;
                }
                other => other?,
            };
            let (index, token, deadline, record) = match attempt {
                SharedAttempt::Won { slot, token, deadline } => return Ok((slot, token, deadline)),
                SharedAttempt::Exclusive { head, token, deadline, holder, .. } => {
                    (head, token, deadline, holder)
                }
                SharedAttempt::Full { slot, token, deadline, holder } => {
                    (slot, token, deadline, holder)
                }
            };
            if !patience.waits() {
                let remaining = Duration::from_nanos(deadline.saturating_sub(self.now()));
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
            self.sleep_for_shared(key, left);
        }
    }

    /// Sleeps until a shared acquirer of `key`'s name may succeed: the head's exclusive
    /// holder leaves, or (every seat held) a seat frees; at most `left`.
    fn sleep_for_shared(&self, key: &Key, left: Duration) {
        let Some((head, head_bound)) = self.find(key) else { return };
        let now = self.now();
        let head_slot = self.slot(head);
        if live_grant(self, head, head_slot.grant.load(Ordering::Acquire), now).is_some() {
            // Wait for the exclusive holder, as for an exclusive lease.
            if let Wait::Sleep { futex_expect, deadline, token } =
                protocol::announce_waiter(head_slot, head_bound, now)
            {
                let live = self.record_of(head, token).is_some_and(|r| !r.detached);
                self.sleep(head, futex_expect, super::nap(now, deadline, left, live));
            }
            return;
        }
        self.sleep_for_seats(key, MAX_SHARED, false, left);
    }

    /// Sleeps until one of the `seats` seats of `key`'s name frees (see `table::permits`
    /// on waiting), at most `left`; returns at once if a seat is (or becomes) free, and
    /// with `unbound_is_free`, if a seat is not bound (it can be bound and taken).
    pub(super) fn sleep_for_seats(
        &self,
        key: &Key,
        seats: u32,
        unbound_is_free: bool,
        left: Duration,
    ) {
        let seen = self.seat_events();
        let now = self.now();
        let mut soonest = u64::MAX;
        let mut live_holder = false;
        for seat in 1..=seats as u8 {
            let Some((index, bound_as)) = self.find(&key.seat(seat)) else {
                if unbound_is_free {
                    return; // a free permit: bind it
                }
                continue;
            };
            match protocol::announce_waiter(self.slot(index), bound_as, now) {
                Wait::Retry => return,
                Wait::Sleep { deadline, token, .. } => {
                    soonest = soonest.min(deadline);
                    live_holder |= self
                        .record_of(index, token)
                        .is_some_and(|r| !r.detached && r.pidns == identity::me().pidns);
                }
            }
        }
        let mut nap = super::nap(now, soonest, left, false);
        if live_holder {
            nap = nap.min(LIVENESS_RECHECK);
        }
        self.sleep_for_seat_event(seen, nap);
    }

    /// An exclusive grant of the shared name `key` (its head at `head`): takes the head's
    /// exclusive grant, then waits (within `patience`) until no seat holds a live shared
    /// grant. `Ok(None)` when the name is no longer shared (it was unbound meanwhile):
    /// the caller starts over.
    pub(super) fn grant_exclusive_of_shared(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        label: Label,
        patience: &Patience<'_>,
    ) -> Result<Option<(u32, u64, u64)>> {
        // Turns that found the head moved, or lost the grant while draining: honest
        // actors cause few; garbage in the table could cause them forever (the caller
        // starts over, a bounded number of times, then answers Busy).
        let mut moved = 0;
        loop {
            if moved > FREE_TRIES {
                return Ok(None);
            }
            let Some((head, head_bound)) = self.shared_head(key, false)? else { return Ok(None) };
            let me = identity::me().record(false);
            let now = self.now();
            let next = |t| protocol::next_token(t, now).ok_or(Refusal::TokenExhausted);
            let slot = self.slot(head);
            let result = protocol::try_grant_with(
                slot,
                head_bound,
                now,
                ttl,
                me,
                label.to_word(),
                &mut identity::is_provably_dead,
                true,
                next,
            );
            match result {
                Ok(g) => {
                    self.note_grant(head, &g);
                    let drained = self.drain(key, head, (g.token, g.deadline), ttl, patience)?;
                    if let Some(granted) = drained {
                        return Ok(Some(granted));
                    }
                    moved += 1;
                }
                Err(Refusal::Held { token, deadline, holder }) => {
                    let remaining = patience.left()?;
                    if remaining.is_zero() {
                        let holder = self.holder_of(head, holder);
                        return Err(if patience.waits() {
                            Error::TimedOut { waited: patience.waited(), token, holder }
                        } else {
                            let remaining = Duration::from_nanos(deadline.saturating_sub(now));
                            Error::Held { token, remaining, holder }
                        });
                    }
                    if let Wait::Sleep { futex_expect, deadline, .. } =
                        protocol::announce_waiter(slot, head_bound, now)
                    {
                        let live = holder.is_some_and(|r| !r.detached);
                        self.sleep(head, futex_expect, super::nap(now, deadline, remaining, live));
                    }
                }
                Err(Refusal::Rebound) => moved += 1,
                Err(Refusal::TokenExhausted) => return Err(token_exhausted(&self.location, head)),
                Err(_) => return Err(interference(&self.location, head)),
            }
        }
    }

    /// The exclusive acquirer of a shared name, holding the head's grant `token` (until
    /// `deadline`), waits until no seat holds a live shared grant, renewing its own. The
    /// grant, once drained; `None` if it was lost meanwhile (try again); an error (the
    /// grant released) when `patience` runs out first.
    fn drain(
        self: &Arc<Inner>,
        key: &Key,
        head: u32,
        (token, mut deadline): (u64, u64),
        ttl: u64,
        patience: &Patience<'_>,
    ) -> Result<Option<(u32, u64, u64)>> {
        let slot = self.slot(head);
        // With an interrupt check, which may block for longer than our TTL, a helper
        // thread keeps our grant renewed while we wait (started when we first have to).
        let mut keeper: Option<Renewer> = None;
        loop {
            // Read before the scan: a seat freed after our look at it moves the count.
            let seen = self.seat_events();
            // See the module docs: our CAS on the head, then this fence, then the seats.
            crate::sync::fence_after_cas128();
            let now = self.now();
            let mut reader = None;
            let mut soonest = u64::MAX;
            let mut rescan = false;
            for seat in 1..=MAX_SHARED as u8 {
                let Some((index, bound_as)) = self.find(&key.seat(seat)) else { continue };
                let seat_slot = self.slot(index);
                let word = seat_slot.grant.load(Ordering::SeqCst);
                if protocol::classify(grant::deadline_bits(word), now) == Observed::Held
                    && live_grant(self, index, word, now).is_none()
                {
                    // A provably dead shared holder: end its grant, so that the table
                    // does not show it beside ours.
                    let _ = protocol::revoke(seat_slot, bound_as, now, Some(grant::token(word)));
                    continue;
                }
                if let Some((d, record)) = live_grant(self, index, word, now) {
                    // Announced, so that freeing it wakes us; one freed meanwhile makes
                    // us look again at once instead of sleeping.
                    if let Wait::Retry = protocol::announce_waiter(seat_slot, bound_as, now) {
                        rescan = true;
                    }
                    soonest = soonest.min(d);
                    reader.get_or_insert((index, grant::token(word), d, record));
                }
            }
            let Some((r_index, r_token, r_deadline, r_record)) = reader else {
                // Drained; but the grant must still be ours (revoked, or expired and
                // taken while we were stopped: try again).
                drop(keeper.take());
                let word = slot.grant.load(Ordering::SeqCst);
                if protocol::check_ours(word, token, self.now()).is_err() {
                    return Ok(None);
                }
                return Ok(Some((head, token, grant::deadline(word))));
            };
            if keeper.is_none() && patience.interruptible() {
                let every = Duration::from_nanos(ttl / 3).max(Duration::from_millis(1));
                keeper = Some(Renewer::start(self, head, token, ttl, every));
            }
            let remaining = match patience.left() {
                Ok(left) if !left.is_zero() => left,
                out => {
                    // Given up (out of time, or interrupted): our hold on the head with it.
                    if let Some(d) = keeper.as_mut().and_then(Renewer::stop) {
                        deadline = deadline.max(d);
                    }
                    if let Ok(wake) = protocol::release(slot, token, deadline) {
                        if wake {
                            self.freed(head);
                        }
                    }
                    out?;
                    let holder = self.holder_of(r_index, r_record);
                    return Err(if patience.waits() {
                        Error::TimedOut { waited: patience.waited(), token: r_token, holder }
                    } else {
                        let remaining = Duration::from_nanos(r_deadline.saturating_sub(now));
                        Error::Held { token: r_token, remaining, holder }
                    });
                }
            };
            // Keep our grant alive while we wait: renew once half its TTL has passed (on
            // the clock read now: the check may have taken long).
            let now = self.now();
            if deadline.saturating_sub(now) < ttl / 2 {
                match protocol::renew(slot, token, now, ttl) {
                    Ok(d) => deadline = d,
                    Err(_) => return Ok(None),
                }
            } else if protocol::check_ours(slot.grant.load(Ordering::Acquire), token, now).is_err()
            {
                return Ok(None); // revoked or taken while we drained
            }
            // Wake for the soonest shared deadline, our next renewal, a freed seat, and
            // (holders may die) a liveness look.
            if rescan {
                continue;
            }
            let until = soonest.min(deadline.saturating_sub(ttl / 2).max(now + 1));
            self.sleep_for_seat_event(seen, super::nap(now, until, remaining, true));
        }
    }

    /// Applies `op` ([`protocol::revoke`], [`protocol::request_release`]) to the live
    /// grants of `key`'s shared name, whose head is slot `head`, bound as `head_bound`
    /// and read as `word`: its exclusive holder's and every shared one's, or only the
    /// one with token `only`. Returns the largest token it was done to.
    pub(super) fn on_shared(
        &self,
        key: &Key,
        (head, head_bound, word): (u32, u64, u128),
        only: Option<u64>,
        op: super::SlotOp,
    ) -> Result<Option<u64>> {
        let mut done = None;
        if only.map_or(true, |t| t == grant::token(word)) {
            match op(self.slot(head), head_bound, self.now(), only) {
                Ok(protocol::Targeted::Done { token, wake }) => {
                    if wake {
                        self.freed(head);
                    }
                    done = Some(token);
                }
                Ok(_) | Err(Refusal::Rebound) => {}
                Err(_) => return Err(interference(&self.location, head)),
            }
        }
        if only.is_some() && done.is_some() {
            return Ok(done);
        }
        match self.on_seats(key, grant::token(word), MAX_SHARED, only, op) {
            Ok(seats) => Ok(done.max(seats)),
            Err(Error::Lost { .. }) if done.is_some() => Ok(done),
            // The exclusive holder's token, no longer live: say why, as for a lease.
            Err(Error::Lost { token, .. }) if token == grant::token(word) => {
                Err(Error::Lost { token, reason: self.why_not_live(head, token) })
            }
            Err(e) => Err(e),
        }
    }

    /// The info of a shared name whose head is slot `index`, read at `now`.
    pub(super) fn shared_info(
        &self,
        key: &Key,
        index: u32,
        head: &protocol::Snapshot,
        now: u64,
        wall: SystemTime,
    ) -> LeaseInfo {
        let mut plain = *head;
        plain.grant &= !(grant::KIND as u128);
        let mut info = self.info_of(index, &plain, now, wall);
        info.kind = LeaseKind::Shared;
        let mut grants = std::mem::take(&mut info.grants);
        for seat in 1..=MAX_SHARED as u8 {
            let Some((si, snap)) = self.snapshot_of(&key.seat(seat)) else { continue };
            let seat_info = self.info_of(si, &snap, now, wall);
            if seat_info.state == LeaseState::Held {
                grants.extend(seat_info.grants.into_iter().map(|mut g| {
                    g.shared = true;
                    g
                }));
            }
        }
        grants.sort_by_key(|g| g.token);
        if let Some(longest) = grants.iter().map(|g| g.remaining).max() {
            info.state = LeaseState::Held;
            info.remaining = info.remaining.max(longest);
        }
        // The head was read before the seats: a grant made in between shows a newer token.
        info.token = grants.iter().map(|g| g.token).fold(grant::token(head.grant), u64::max);
        info.grants = grants;
        info
    }
}
