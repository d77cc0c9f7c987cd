//! Fair acquisition: acquirers that ask for it are granted a name in the order they
//! arrived, whatever its kind (exclusive, permits, shared).
//!
//! A fair acquirer that finds the name taken, or other fair acquirers waiting, takes a
//! *place* in the name's queue: a slot of its own (seats 129..=255 of the name, bound
//! like a permit's seat), granted as an ordinary lease bound to this process, with a
//! [`PLACE_TTL`] it renews while it waits, and with a *ticket* for token, taken from the
//! table's ticket counter ([`protocol::take_ticket`]): tickets are distinct and taken
//! in increasing order, so a queue's order is its tickets' order.
//!
//! A place is *live* while its grant is held by a process not provably dead. An
//! acquirer whose place has the smallest ticket among the live places of its name is
//! first in line: it acquires the name the ordinary way (waiting as any acquirer does),
//! and gives its place up once it has the name, or when it gives up. A helper thread
//! ([`super::wait::Renewer`]) renews the place for the whole wait: the waiting thread
//! may spend long in the caller's interrupt check, or in the ordinary wait. The others sleep on the table's seat-event count
//! after announcing themselves on every live place ahead of theirs, so that the
//! release of any of them wakes them (see `table::permits` on why a count).
//!
//! | a place ahead that… | is passed over… |
//! |---|---|
//! | is given up (granted, timed out, dropped) | at once (its release wakes the queue) |
//! | belongs to a process that died | once the death is provable: within [`super::wait::LIVENESS_RECHECK`] |
//! | belongs to a stopped (or hung) process | once its place expires: within [`PLACE_TTL`] |
//!
//! An acquirer whose own place expired while it was stopped has lost it: it takes a new
//! one, at the back. Acquirers that do not ask for fairness do not look at the queue:
//! they may take the name between two fair ones (barging); fairness is among fair
//! acquirers. The queue holds [`MAX_QUEUE`] places per name; past that, a fair
//! acquisition fails with [`Error::Busy`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::shared::live_grant;
use super::wait::{Renewer, LIVENESS_RECHECK};
use super::{interference, token_exhausted, AcquireOptions, Inner, Key, Patience};
use crate::error::{Error, Result};
use crate::identity;
use crate::info::{Holder, QueuedInfo};
use crate::layout::{grant, holder::Record, MAX_QUEUE, QUEUE_FIRST};
use crate::protocol::{self, Refusal};
use crate::sync::Ordering;

/// Time-to-live of a place in a fair queue: a waiter renews its place every quarter of
/// it, so a waiter that is stopped (or hung) for this long loses its place and stops
/// holding up those behind it.
pub const PLACE_TTL: Duration = Duration::from_secs(2);

/// A place in a fair queue, held by this process.
#[derive(Clone, Copy)]
struct Place {
    slot: u32,
    ticket: u64,
    deadline: u64,
}

/// The live places of a name ahead of a ticket.
struct Ahead {
    count: u32,
    /// The first of them: ticket, slot, holder record.
    first: Option<(u64, u32, Option<Record>)>,
    /// How long a waiter behind them may sleep before looking again.
    nap: Duration,
}

impl Inner {
    /// The live places of `key`'s queue with a ticket below `ticket`; with `announce`,
    /// announced as waited for (so that their release wakes us).
    fn places_ahead(&self, key: &Key, ticket: u64, announce: bool) -> Ahead {
        let now = self.now();
        let mut ahead = Ahead { count: 0, first: None, nap: super::LONGEST_NAP };
        for seat in QUEUE_FIRST..=u8::MAX {
            let Some((index, bound_as)) = self.find(&key.seat(seat)) else { continue };
            let word = self.slot(index).grant.load(Ordering::SeqCst);
            let Some((deadline, record)) = live_grant(self, index, word, now) else { continue };
            let t = grant::token(word);
            if t >= ticket {
                continue;
            }
            ahead.count += 1;
            if ahead.first.map_or(true, |(f, _, _)| t < f) {
                ahead.first = Some((t, index, record));
            }
            if announce {
                let _ = protocol::announce_waiter(self.slot(index), bound_as, now);
            }
            let until = Duration::from_nanos(deadline.saturating_sub(now));
            let live = record.is_some_and(|r| !r.detached);
            ahead.nap = ahead.nap.min(if live { until.min(LIVENESS_RECHECK) } else { until });
        }
        ahead
    }

    /// Takes a place at the back of `key`'s queue, counted in `counter::PLACES` (before
    /// it exists, so that the count is never too low).
    fn take_place(&self, key: &Key) -> Result<Place> {
        self.places().fetch_add(1, Ordering::SeqCst);
        let place = self.take_place_uncounted(key);
        if place.is_err() {
            self.uncount_place();
        }
        place
    }

    /// The count of places held in fair queues.
    fn places(&self) -> &crate::sync::AtomicU64 {
        &self.header().counters[crate::layout::counter::PLACES]
    }

    fn uncount_place(&self) {
        let _ =
            self.places().fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    fn take_place_uncounted(&self, key: &Key) -> Result<Place> {
        let ttl = PLACE_TTL.as_nanos() as u64;
        let me = identity::me().record(false);
        let tickets = &self.header().tickets;
        let try_at = |index: u32, bound_as: u64| -> Result<Option<Place>> {
            let now = self.now();
            let r = protocol::try_grant_with(
                self.slot(index),
                bound_as,
                now,
                ttl,
                me,
                0,
                &mut identity::is_provably_dead,
                false,
                |t| protocol::take_ticket(tickets, now, t),
            );
            match r {
                Ok(g) => Ok(Some(Place { slot: index, ticket: g.token, deadline: g.deadline })),
                Err(Refusal::Held { .. } | Refusal::Rebound) => Ok(None),
                Err(Refusal::TokenExhausted) => Err(token_exhausted(&self.location, index)),
                Err(_) => Err(interference(&self.location, index)),
            }
        };
        // One pass over the places: one granted, else the first unbound (`None`: every
        // place is held).
        let pass = || -> Result<std::result::Result<Place, Option<u8>>> {
            let mut unbound = None;
            for seat in QUEUE_FIRST..=u8::MAX {
                match self.find(&key.seat(seat)) {
                    Some((index, bound_as)) => {
                        if let Some(place) = try_at(index, bound_as)? {
                            return Ok(Ok(place));
                        }
                    }
                    None => {
                        unbound.get_or_insert(seat);
                    }
                }
            }
            Ok(Err(unbound))
        };
        let full = || Error::Busy {
            location: self.location.to_string(),
            reason: format!("the fair queue of this name is full ({MAX_QUEUE} waiters)"),
        };
        match pass()? {
            Ok(place) => return Ok(place),
            Err(None) => return Err(full()),
            Err(Some(_)) => {}
        }
        // Bind a place under the table lock (nobody else binds or evicts meanwhile, but
        // another waiter may take the place just bound: look again).
        let _lock = self.lock()?;
        for _ in 0..super::BIND_PASSES {
            let seat = match pass()? {
                Ok(place) => return Ok(place),
                Err(None) => return Err(full()),
                Err(Some(seat)) => seat,
            };
            let Some((index, bound_as)) = self.bind_locked(&key.seat(seat))? else { continue };
            if let Some(place) = try_at(index, bound_as)? {
                return Ok(place);
            }
        }
        Err(Error::Busy {
            location: self.location.to_string(),
            reason: "the places of this name's fair queue kept being taken or evicted while \
                     this call bound them (the table is too small for the names in use)"
                .into(),
        })
    }

    /// Gives a place up (its renewal stopped first), waking those behind it.
    fn leave(&self, keeper: &mut Renewer, mut place: Place) {
        if let Some(d) = keeper.stop() {
            place.deadline = place.deadline.max(d);
        }
        if let Ok(wake) = protocol::release(self.slot(place.slot), place.ticket, place.deadline) {
            if wake {
                self.freed(place.slot);
            }
        }
        self.uncount_place();
    }

    /// A fair acquisition (see the module docs): `options` without `fair` says what kind
    /// of grant, how long to wait.
    pub(super) fn grant_fair(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        options: &AcquireOptions,
    ) -> Result<(u32, u64, u64)> {
        let patience = Patience::of(options);
        let plain = AcquireOptions { fair: false, wait: None, ..options.clone() };
        // Nobody queued: one ordinary attempt first. (No place bound anywhere in the
        // table: no queue to look at.)
        let queued = if self.places().load(Ordering::SeqCst) == 0 {
            Ahead { count: 0, first: None, nap: Duration::ZERO }
        } else {
            self.places_ahead(key, u64::MAX, false)
        };
        match queued.first {
            None => match self.grant_any(key, ttl, &plain) {
                Ok(granted) => return Ok(granted),
                Err(e @ Error::Held { .. }) if options.wait.is_none() => return Err(e),
                Err(Error::Held { .. }) => {}
                Err(e) => return Err(e),
            },
            Some((ticket, index, record)) if options.wait.is_none() => {
                // Others wait in line: a caller that does not wait may not pass them.
                let remaining = self.place_remaining(index, ticket);
                return Err(Error::Held {
                    token: ticket,
                    remaining,
                    holder: self.holder_of(index, record),
                });
            }
            Some(_) => {}
        }
        let renew_every = PLACE_TTL / 4;
        let place_ttl = PLACE_TTL.as_nanos() as u64;
        let mut place = self.take_place(key)?;
        // The place is renewed by a helper thread for the whole wait (and by this thread
        // too, should the helper not start): this thread asks the caller's interrupt
        // check, which may block for longer than a place lives.
        let mut keeper = Renewer::start(self, place.slot, place.ticket, place_ttl, renew_every);
        let mut renewed = Instant::now();
        loop {
            let remaining = match patience.left() {
                Ok(left) if !left.is_zero() => left,
                out => {
                    // Out of time, or interrupted: the place goes, and those behind move up.
                    self.leave(&mut keeper, place);
                    out?;
                    let ahead = self.places_ahead(key, place.ticket, false);
                    let (token, holder) = match ahead.first {
                        Some((t, i, r)) => (t, self.holder_of(i, r)),
                        None => (place.ticket, None),
                    };
                    return Err(Error::TimedOut { waited: patience.waited(), token, holder });
                }
            };
            if renewed.elapsed() >= renew_every {
                let now = self.now();
                match protocol::renew(self.slot(place.slot), place.ticket, now, place_ttl) {
                    Ok(d) => place.deadline = d,
                    // Lost (we were stopped past its TTL): a new place, at the back.
                    Err(_) => {
                        keeper.stop();
                        self.uncount_place();
                        place = self.take_place(key)?;
                        keeper =
                            Renewer::start(self, place.slot, place.ticket, place_ttl, renew_every);
                    }
                }
                renewed = Instant::now();
            }
            let seen = self.seat_events();
            let ahead = self.places_ahead(key, place.ticket, true);
            let slice = remaining
                .min(renew_every.saturating_sub(renewed.elapsed()).max(Duration::from_millis(1)));
            if ahead.count > 0 {
                self.sleep_for_seat_event(seen, slice.min(ahead.nap));
                continue;
            }
            // First in line: take the name the ordinary way, in one wait for all the time
            // left (a wait cut into slices would give up what it holds between them: an
            // exclusive acquirer of a shared name its hold on the head, letting waiting
            // shared acquirers in), while the helper keeps our place renewed.
            let rest = patience.nested(&plain);
            let got = self.grant_any(key, ttl, &rest);
            self.leave(&mut keeper, place);
            return got;
        }
    }

    /// Time left of the place with `ticket` in slot `index`.
    fn place_remaining(&self, index: u32, ticket: u64) -> Duration {
        let word = self.slot(index).grant.load(Ordering::Acquire);
        if grant::token(word) != ticket {
            return Duration::ZERO;
        }
        Duration::from_nanos(grant::deadline(word).saturating_sub(self.now()))
    }

    /// The live places of the queue of `key`'s name, in ticket order: for
    /// [`crate::LeaseInfo::queue`].
    pub(super) fn queue_of(&self, key: &Key, now: u64, wall: SystemTime) -> Vec<QueuedInfo> {
        let mut queue = Vec::new();
        for seat in QUEUE_FIRST..=u8::MAX {
            let Some((si, bound_as)) = self.find(&key.seat(seat)) else { continue };
            let Some(word) = self.word_as_bound(si, bound_as) else { continue };
            let Some((deadline, record)) = live_grant(self, si, word, now) else { continue };
            let ticket = grant::token(word);
            queue.push(QueuedInfo {
                ticket,
                holder: record.map(|r| Holder::from_record(&r, 0)),
                expires_at: wall.checked_add(Duration::from_nanos(deadline.saturating_sub(now))),
                slot: si,
            });
        }
        queue.sort_by_key(|q| q.ticket);
        queue
    }
}
