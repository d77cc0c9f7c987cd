//! Leader election over a lease name: candidates *campaign*, the winner holds
//! *leadership* whose *term* is its grant's fencing token, and *resigns* to hand over;
//! anyone may ask who leads ([`Election::leader`]) or *observe* the changes
//! ([`Observer`]); a [`Runner`] runs a closure while leading, in the shape of
//! client-go's `leaderelection`.
//!
//! # The state machine
//!
//! An election is nothing but the lease on its name, so the lease's guarantees are the
//! election's: at most one unexpired grant, tokens strictly increasing, loss noticed
//! by the holder. A candidate moves through these states:
//!
//! | state | how it is left | by whom |
//! |---|---|---|
//! | Campaigning | the grant is won → Leading | the candidate (`acquire`: woken by release, revocation, expiry, or the holder's death) |
//! | | timeout, or [`Stopper::stop`] → Idle | the candidate, or any thread |
//! | Leading(term) | [`Leadership::resign`] or drop → Idle; the next candidate wakes at once | the leader |
//! | | revoked, expired, taken over → Lost(reason) | an administrator; time; a candidate after the leader's death or expiry |
//! | | [`LeaseTable::request_release`] → still Leading, asked to resign | anyone |
//!
//! [`Leadership::is_leader`] reads the grant word and the clock (in that order), so it
//! is `false` from the instant the grant stops being this candidate's: no other
//! candidate can be granted before that instant, because a grant needs the word to be
//! free, revoked, expired or held by a dead process. It is no more than a snapshot:
//! act on a shared resource only through the term (fencing), which a resource can
//! check against the highest term it has seen.
//!
//! # Observing
//!
//! An [`Observer`] sets the slot's `OBSERVERS` flag and sleeps on its futex; the next
//! grant, release, revocation or unbinding wakes it, and it sleeps no longer than the
//! leader's deadline (expiry changes the leader without anyone acting). It reports
//! each change once, in increasing term order. Every grant's token carries a sequence
//! one above its predecessor's (see [`crate::layout::grant`]), so an observer that
//! slept through terms learns how many it missed ([`Change::skipped`]); when the name
//! was unbound and bound again meanwhile (it was idle and its slot was reused), or
//! more than 32,768 grants went by, the count is unknown and reported as such, never
//! as zero. A name that is not in the table at all (never used, or idle and evicted)
//! has no slot to sleep on: its observer sleeps on a word of the table header that
//! every binding and unbinding bumps (looking again at least every second), and never
//! binds the name itself (that would evict other idle names).
//!
//! On an etcd table the election is the lease on its name too (term = the key's create
//! revision); a candidate waits on a watch of the key, and an observer follows one
//! watch on it from the revision of a first read, so it sees every grant and every end
//! and counts exactly what it skipped (see `docs/etcd.md`, *Elections*). A leader
//! there is replaced when its TTL runs out, never sooner: no host can tell that a
//! process on another is dead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, LostReason, Result};
use crate::identity;
use crate::info::{Holder, LeaseInfo, LeaseState};
use crate::layout::{grant, holder::Record};
use crate::lease::{Lease, Notice};
use crate::protocol::{self, Observed};
use crate::table::{self, AcquireOptions, DeathAlarm, Key, LeaseTable};

/// The default TTL of a leadership: renewed every third of it by a keep-alive thread.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// An election on one lease name of a table.
///
/// ```
/// # let path = std::env::temp_dir().join(format!("shmlease-doc-election-{}", std::process::id()));
/// # let table = shmlease::LeaseTable::open_or_create(&path, &Default::default())?;
/// use std::time::Duration;
///
/// let election = table.election("scheduler")?.ttl(Duration::from_secs(5))?.label("node-a")?;
/// let leadership = election.campaign(Some(Duration::from_secs(1)))?;
/// assert!(leadership.is_leader());
/// let leader = election.leader()?.expect("somebody leads");
/// assert_eq!(leader.term, leadership.term());
/// leadership.resign()?;
/// assert!(election.leader()?.is_none());
/// # shmlease::LeaseTable::remove(&path)?;
/// # Ok::<(), shmlease::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Election<'t> {
    table: &'t LeaseTable,
    name: String,
    ttl: Duration,
    options: AcquireOptions,
}

impl LeaseTable {
    /// The election on `name` (a lease name like any other: `shmlease get NAME` shows
    /// its leader). TTL [`DEFAULT_TTL`], no label.
    pub fn election(&self, name: &str) -> Result<Election<'_>> {
        Key::new(name)?;
        Ok(Election {
            table: self,
            name: name.to_owned(),
            ttl: DEFAULT_TTL,
            options: AcquireOptions::new(),
        })
    }
}

impl<'t> Election<'t> {
    /// How long a leadership lasts unless renewed (its keep-alive renews it every third
    /// of this): how long a stopped (`SIGSTOP`ped, frozen) leader blocks the others. A
    /// leader that dies is replaced at once, whatever the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Result<Self> {
        table::ttl_ns(ttl)?;
        self.ttl = ttl;
        Ok(self)
    }

    /// A label (up to 8 bytes) that others see with the leader.
    pub fn label(mut self, label: &str) -> Result<Self> {
        self.options = self.options.label(label)?;
        Ok(self)
    }

    /// The lease name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table.
    pub fn table(&self) -> &'t LeaseTable {
        self.table
    }

    /// Campaigns until elected, or until `timeout` passes ([`Error::TimedOut`]; `None`:
    /// no limit). The leadership is kept alive by a background thread until resigned,
    /// dropped or lost.
    pub fn campaign(&self, timeout: Option<Duration>) -> Result<Leadership<'t>> {
        self.check_kind()?;
        let options = self.options.clone().wait(timeout);
        self.lead(self.table.acquire_with(&self.name, self.ttl, &options)?)
    }

    /// Becomes leader if nobody leads now; else fails with [`Error::Held`] at once.
    pub fn try_campaign(&self) -> Result<Leadership<'t>> {
        self.check_kind()?;
        self.lead(self.table.acquire_with(&self.name, self.ttl, &self.options)?)
    }

    fn lead(&self, mut lease: Lease<'t>) -> Result<Leadership<'t>> {
        // The name may have become shared while we campaigned (an exclusive grant of a
        // shared name is no leadership: the name has shared holders between terms).
        self.check_kind()?;
        lease.keep_alive(self.ttl)?;
        Ok(Leadership { lease, since: SystemTime::now() })
    }

    /// An election needs an exclusive name: one in use with permits or shared is
    /// refused with [`Error::WrongKind`].
    fn check_kind(&self) -> Result<()> {
        // Every name on etcd is exclusive (it carries no permits nor shared leases).
        crate::table::to_etcd!(self.table, _t => Ok(()));
        match self.table.get(&self.name)? {
            Some(i) if i.kind != crate::LeaseKind::Exclusive => Err(not_an_election(&i)),
            _ => Ok(()),
        }
    }

    /// Who leads now, or `None` (also when the leader is provably dead: its grant
    /// stands until a candidate takes it over, at once if one is waiting).
    pub fn leader(&self) -> Result<Option<Leader>> {
        crate::table::to_etcd!(self.table, t => t.leader(&self.name));
        let inner = self.table.shm();
        let info = self.table.get(&self.name)?;
        if let Some(i) = info.as_ref().filter(|i| i.kind != crate::LeaseKind::Exclusive) {
            return Err(not_an_election(i));
        }
        Ok(info.and_then(|info| {
            let dead = inner
                .record_of(info.slot, info.token)
                .is_some_and(|r| !r.detached && identity::is_provably_dead(&r));
            Leader::from_info(&info).filter(|_| !dead)
        }))
    }

    /// A stream of leadership changes, starting with the current state.
    pub fn observe(&self) -> Observer<'t> {
        Observer {
            table: self.table,
            name: self.name.clone(),
            last: None,
            alarm: None,
            #[cfg(feature = "etcd")]
            etcd: self
                .table
                .etcd()
                .map(|t| Box::new(crate::etcd::EtcdObserver::new(t, &self.name))),
        }
    }

    /// A runner: campaigns, runs a closure while leading, hands over (see [`Runner`]).
    pub fn runner(&self) -> Runner<'_, 't> {
        Runner {
            election: self,
            stop_margin: self.ttl / 5,
            campaign_timeout: None,
            on_new_leader: None,
            on_stopped: None,
            stopper: Stopper::default(),
        }
    }
}

/// Who leads an election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's term: its grant's fencing token.
    pub term: u64,
    /// The leading process, when recorded.
    pub holder: Option<Holder>,
    /// When its term began.
    pub since: Option<SystemTime>,
    /// When its term ends unless renewed.
    pub expires_at: Option<SystemTime>,
    /// Time left before that.
    pub remaining: Duration,
}

impl Leader {
    /// The leader a lease's state shows, if it is held.
    pub fn from_info(info: &LeaseInfo) -> Option<Leader> {
        (info.state == LeaseState::Held).then_some(Leader {
            term: info.token,
            holder: info.holder,
            since: info.acquired_at,
            expires_at: info.expires_at,
            remaining: info.remaining,
        })
    }
}

/// The error for an election on a name in use with permits or shared: an election has
/// one leader, so it needs an exclusive name.
fn not_an_election(info: &LeaseInfo) -> Error {
    Error::WrongKind {
        name: info.name.clone(),
        recorded: info.kind,
        requested: crate::LeaseKind::Exclusive,
    }
}

/// Leadership of an election, held by this process: the lease on the election's name,
/// kept alive in the background. Dropping it resigns.
#[derive(Debug)]
pub struct Leadership<'t> {
    lease: Lease<'t>,
    since: SystemTime,
}

impl<'t> Leadership<'t> {
    /// The term: the grant's fencing token. Pass it to whatever the leader writes to,
    /// so that a deposed leader's late writes can be refused.
    pub fn term(&self) -> u64 {
        self.lease.token()
    }

    /// Whether this candidate still leads: `false` from the instant another candidate
    /// could be granted (see the module docs).
    pub fn is_leader(&self) -> bool {
        self.lease.is_valid()
    }

    /// When this term began (this process's wall clock).
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// Time left before the term ends unless renewed (zero once lost).
    pub fn remaining(&self) -> Duration {
        self.lease.remaining()
    }

    /// Why leadership was lost, once the keep-alive has noticed.
    pub fn lost(&self) -> Option<LostReason> {
        self.lease.lost()
    }

    /// Blocks until leadership is lost (returning why) or `timeout` passes (`None`).
    pub fn wait_lost(&self, timeout: Option<Duration>) -> Option<LostReason> {
        self.lease.wait_lost(timeout)
    }

    /// Whether someone asked this leader to hand over ([`LeaseTable::request_release`]).
    pub fn release_requested(&self) -> bool {
        self.lease.release_requested()
    }

    /// Blocks until leadership is lost or a hand-over is requested, or `timeout` passes.
    pub fn wait_notice(&self, timeout: Option<Duration>) -> Option<Notice> {
        self.lease.wait_notice(timeout)
    }

    /// The underlying lease.
    pub fn lease(&self) -> &Lease<'t> {
        &self.lease
    }

    /// Resigns: releases the lease, waking the next candidate at once. Fails with
    /// [`Error::Lost`] if leadership was already lost (nothing changes then).
    pub fn resign(self) -> Result<()> {
        self.lease.release()
    }
}

/// One change of leadership, as an [`Observer`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The leader's term, or with no leader the last term granted (0: never).
    pub term: u64,
    /// The new leader, or `None`: nobody leads (resigned, revoked, expired).
    pub leader: Option<Leader>,
    /// Terms that began and ended since the previous change this observer reported,
    /// without being reported: `Some(0)` when none (always for the first change), `None`
    /// when unknown (the name was unbound, and maybe bound again, meanwhile; or more
    /// than 32,768 grants went by: each token carries a 16-bit sequence).
    pub skipped: Option<u32>,
}

/// What an observer last reported.
#[derive(Clone, Copy, Debug)]
struct Seen {
    term: u64,
    leading: bool,
    /// The binding word of the name's slot (0: the name was not in the table).
    bound_as: u64,
    /// The slot's count of grants (a statistic), to tell a wrapped sequence.
    transitions: u64,
    /// The table's token floor when the name was seen absent (it grows at every
    /// unbinding, so an unchanged floor means the name was not bound and unbound since).
    floor: u64,
}

/// A blocking stream of the leadership changes of one election, for processes that
/// follow it without campaigning (see the module docs). Also an iterator that waits
/// without limit.
#[derive(Debug)]
pub struct Observer<'t> {
    table: &'t LeaseTable,
    name: String,
    last: Option<Seen>,
    alarm: Option<DeathAlarm>,
    /// The observer itself, when the table is on etcd (a watch on the name's key).
    #[cfg(feature = "etcd")]
    etcd: Option<Box<crate::etcd::EtcdObserver>>,
}

impl Observer<'_> {
    /// Waits for the next change (the first call reports the current state at once),
    /// at most `timeout` (`Ok(None)` then; `None`: no limit).
    pub fn next_change(&mut self, timeout: Option<Duration>) -> Result<Option<Change>> {
        #[cfg(feature = "etcd")]
        if let Some(o) = self.etcd.as_deref_mut() {
            return o.next_change(timeout);
        }
        let inner = self.table.shm();
        let key = Key::new(&self.name)?;
        let start = Instant::now();
        loop {
            let left = match timeout {
                Some(t) => t.checked_sub(start.elapsed()).unwrap_or_default(),
                None => Duration::MAX,
            };
            let events = inner.name_events();
            let Some((index, bound_as)) = inner.find(&key) else {
                // Not in the table: nobody leads, and there is no slot to sleep on
                // (binding one just to watch would evict other idle names, and in a
                // full table observers would evict each other's forever). Sleep until
                // a name is bound or unbound.
                let floor = inner.header().token_floor.load(std::sync::atomic::Ordering::Acquire);
                if let Some(change) = self.absent(floor) {
                    return Ok(Some(change));
                }
                if left.is_zero() {
                    return Ok(None);
                }
                inner.sleep_for_names(events, left.min(table::LONGEST_NAP));
                continue;
            };
            let slot = inner.slot(index);
            let Some(observation) = protocol::announce_observer(slot, bound_as) else {
                continue; // unbound or re-bound meanwhile: look again
            };
            let word = observation.word;
            let now = inner.now();
            let bits = grant::deadline_bits(word);
            if grant::permits(bits).is_some() || grant::is_shared(bits) {
                if let Some(info) = self.table.get(&self.name)? {
                    return Err(not_an_election(&info));
                }
                continue;
            }
            let term = grant::token(word);
            // A leader that is provably dead leads no more, though its grant stands
            // until a candidate takes it over (at once, if one is waiting).
            let record = inner.record_of(index, term);
            let leading = protocol::classify(bits, now) == Observed::Held
                && !record.is_some_and(|r| !r.detached && identity::is_provably_dead(&r));
            let transitions = slot.transitions.load(std::sync::atomic::Ordering::Relaxed);
            let seen = Seen { term, leading, bound_as, transitions, floor: 0 };
            if let Some(mut change) = self.change_to(seen, index, word) {
                self.last = Some(Seen { term: change.term, ..seen });
                // A name never granted has a token floor in its word, but no term yet.
                if change.leader.is_none()
                    && change.term == term
                    && inner.never_granted(index, word)
                {
                    change.term = 0;
                }
                return Ok(Some(change));
            }
            if left.is_zero() {
                return Ok(None);
            }
            let deadline = if leading { bits & grant::DEADLINE } else { u64::MAX };
            // The leader's death is a change too: let the kernel tell.
            let record = record.filter(|_| leading);
            let watched = DeathAlarm::keep(&mut self.alarm, inner, index, record.as_ref());
            let unwatched = record.is_some_and(|r| !r.detached) && !watched;
            inner.sleep(
                index,
                observation.futex_expect,
                table::nap(now, deadline, left, unwatched),
            );
        }
    }

    /// The change to report on finding the name absent from the table, if any: the
    /// state at the first call; the end of the leader last reported; or, for a name
    /// seen idle, that what happened before it was unbound is unknown.
    fn absent(&mut self, floor: u64) -> Option<Change> {
        let change = match self.last {
            None => Change { term: 0, leader: None, skipped: Some(0) },
            Some(last) if last.bound_as == 0 => return None,
            Some(last) => Change { term: last.term, leader: None, skipped: None },
        };
        let term = self.last.map_or(0, |l| l.term);
        self.last = Some(Seen { term, leading: false, bound_as: 0, transitions: 0, floor });
        Some(change)
    }

    /// The change from what was last reported to `now` (seen in the grant word `word`
    /// of slot `index`), if it is one.
    fn change_to(&self, now: Seen, index: u32, word: u128) -> Option<Change> {
        let inner = self.table.shm();
        let (term, skipped) = match self.last {
            None => (now.term, Some(0)),
            Some(last) if last.bound_as == now.bound_as => {
                if last.term == now.term {
                    if last.leading == now.leading {
                        return None;
                    }
                    (now.term, Some(0)) // the leader we reported stepped down
                } else {
                    // Grants after the last reported term, up to this word's: all but
                    // the current one were missed, and that one too if it is over. The
                    // sequence counts modulo 2¹⁶: past half of that (by the slot's
                    // grant count), the count is unknown.
                    let grants = grant::seq(now.term).wrapping_sub(grant::seq(last.term)) as u32;
                    let wrapped = now.transitions.wrapping_sub(last.transitions) >= 1 << 15;
                    let missed = if now.leading { grants.saturating_sub(1) } else { grants };
                    (now.term, (!wrapped).then_some(missed))
                }
            }
            // Seen absent, and bound since without an unbinding in between (the floor
            // would have grown): this binding's grants (its grant count) are all there
            // were.
            Some(last)
                if last.bound_as == 0
                    && now.transitions < 1 << 15
                    && inner.header().token_floor.load(std::sync::atomic::Ordering::Acquire)
                        == last.floor =>
            {
                let grants = now.transitions as u32;
                match (now.leading, grants) {
                    (_, 0) => return None,
                    (true, n) => (now.term, Some(n - 1)),
                    (false, n) => (now.term, Some(n)),
                }
            }
            // Another binding of the name (it was idle, unbound, and bound again): what
            // happened in between is unknown, unless this binding was never granted
            // and nobody led before either.
            Some(last) if !now.leading && inner.never_granted(index, word) => {
                if !last.leading {
                    return None;
                }
                (last.term, None)
            }
            Some(_) => (now.term, None),
        };
        let leader = if now.leading {
            // `None` if the word changed since: the next pass reports what it became.
            Some(inner.leader_at(index, word)?)
        } else {
            None
        };
        Some(Change { term, leader, skipped })
    }
}

impl Iterator for Observer<'_> {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Result<Change>> {
        self.next_change(None).transpose()
    }
}

/// Stops a [`Runner`] from any thread: a campaigning runner gives up, a leading one
/// tells its closure to stop ([`StopReason::Stopped`]) and resigns when it returns.
#[derive(Clone, Debug, Default)]
pub struct Stopper {
    state: Arc<StopState>,
}

#[derive(Debug, Default)]
struct StopState {
    stopped: AtomicBool,
    at: Mutex<Option<Place>>,
    /// Wakes a runner campaigning on etcd (its wait is a watch, not a futex).
    #[cfg(feature = "etcd")]
    interrupt: Arc<crate::etcd::CampaignStop>,
}

/// Where a runner is: the table, name and slot it campaigns on, and its term once it
/// leads.
type Place = (LeaseTable, String, u32, Option<u64>);

impl Stopper {
    /// Asks the runner to stop.
    pub fn stop(&self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        #[cfg(feature = "etcd")]
        self.state.interrupt.fire();
        let at = self.state.at.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((table, name, slot, term)) = at.as_ref() {
            match term {
                // Wakes the leader's keep-alive, hence whoever waits for a notice.
                Some(term) => {
                    let _ = table.request_release(name, Some(*term));
                }
                None => table.shm().wake(*slot),
            }
        }
    }

    /// Whether [`Stopper::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.state.stopped.load(Ordering::SeqCst)
    }

    fn place(&self, at: Option<Place>) {
        *self.state.at.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

/// Why a leading closure is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Someone asked the leader to hand over ([`LeaseTable::request_release`]).
    Requested,
    /// [`Stopper::stop`] was called.
    Stopped,
    /// Less than the stop margin is left before the term's deadline: renewals are late
    /// (the process was stopped or starved), and another candidate may be elected at
    /// the deadline.
    Late,
    /// Leadership is already lost: another candidate may lead now. Only the term
    /// (fencing) protects what the closure still does.
    Lost(LostReason),
}

/// What a leading closure sees: its term, and whether to stop.
#[derive(Debug)]
pub struct Leading<'a, 't> {
    leadership: &'a Leadership<'t>,
    stopper: &'a Stopper,
    margin: Duration,
    reason: Mutex<Option<StopReason>>,
}

impl Leading<'_, '_> {
    /// The term.
    pub fn term(&self) -> u64 {
        self.leadership.term()
    }

    /// Whether this candidate still leads (see [`Leadership::is_leader`]).
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// Time left before the term's deadline (renewed in the background).
    pub fn remaining(&self) -> Duration {
        self.leadership.remaining()
    }

    /// Whether to stop, and why; once a reason is given it stays (except that a loss
    /// replaces any other reason). A few atomic loads: cheap enough for every loop
    /// iteration.
    pub fn should_stop(&self) -> Option<StopReason> {
        let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lost) = self.leadership.lost() {
            *reason = Some(StopReason::Lost(lost));
        } else if reason.is_none() {
            *reason = if let Some(lost) = self.leadership.lease.loss_now() {
                Some(StopReason::Lost(lost))
            } else if self.stopper.is_stopped() {
                Some(StopReason::Stopped)
            } else if self.leadership.release_requested() {
                Some(StopReason::Requested)
            } else if self.leadership.remaining() < self.margin {
                Some(StopReason::Late)
            } else {
                None
            };
        }
        *reason
    }

    /// Blocks until the closure should stop (returning why), or `timeout` passes
    /// (`None`). Woken by the keep-alive (loss, hand-over request, [`Stopper::stop`]),
    /// and by the clock when the deadline comes within the stop margin.
    pub fn wait_stop(&self, timeout: Option<Duration>) -> Option<StopReason> {
        let start = Instant::now();
        loop {
            if let Some(reason) = self.should_stop() {
                return Some(reason);
            }
            let mut nap = self.remaining().saturating_sub(self.margin);
            if let Some(t) = timeout {
                let left = t.checked_sub(start.elapsed()).filter(|l| !l.is_zero())?;
                nap = nap.min(left);
            }
            self.leadership.wait_notice(Some(nap.max(Duration::from_millis(1))));
        }
    }
}

/// How a leading closure ended, as [`Runner::on_stopped`] hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// The term that ended.
    pub term: u64,
    /// Why the closure was told to stop, if it was (`None`: it returned on its own).
    pub reason: Option<StopReason>,
    /// Whether leadership was still ours when the closure returned, and was then
    /// released (the next candidate was woken at once). `false`: it was already lost.
    pub resigned: bool,
}

type NewLeaderHook<'r> = Box<dyn FnMut(&Leader) + 'r>;
type StoppedHook<'r> = Box<dyn FnMut(&Stopped) + 'r>;

/// Runs a closure while leading, in the shape of client-go's `leaderelection`:
/// campaign, call `on_new_leader` for every leader seen (this one included), run the
/// closure with a [`Leading`] that says when to stop, keep renewing until the closure
/// has returned, resign, then call `on_stopped` — only if this candidate led.
///
/// # When the closure overruns
///
/// The closure is *told* to stop ([`Leading::should_stop`], [`Leading::wait_stop`]);
/// nothing stops it by force. What holds while it runs on:
/// - After a hand-over request, [`Stopper::stop`] or a late renewal ([`StopReason::Late`]):
///   the keep-alive goes on renewing, so leadership stays this candidate's, and no
///   other candidate is elected, until the closure returns and the runner resigns —
///   unless renewals stop (the process is frozen past the TTL) or someone revokes it.
/// - After a loss (revoked, expired, taken over): another candidate may already lead.
///   [`Leading::is_leader`] is `false` from the instant that became possible, and the
///   new leader's term is higher. Whatever the overrunning closure still writes must
///   carry its term, so that the resource refuses it once it has seen a higher term:
///   fencing is what makes an overrun harmless, not timing.
///
/// The stop margin (default TTL/5) is how early before an *unrenewed* deadline the
/// closure hears [`StopReason::Late`]; with renewals on time (every TTL/3) the
/// deadline never comes that close.
pub struct Runner<'e, 't> {
    election: &'e Election<'t>,
    stop_margin: Duration,
    campaign_timeout: Option<Duration>,
    on_new_leader: Option<NewLeaderHook<'e>>,
    on_stopped: Option<StoppedHook<'e>>,
    stopper: Stopper,
}

impl<'e, 't> Runner<'e, 't> {
    /// How long before an unrenewed deadline the closure is told to stop (default TTL/5;
    /// at most TTL/2, so that renewals every TTL/3 never trigger it).
    pub fn stop_margin(mut self, margin: Duration) -> Result<Self> {
        if margin > self.election.ttl / 2 {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "the stop margin ({margin:?}) must be at most half the TTL ({:?})",
                    self.election.ttl
                ),
            });
        }
        self.stop_margin = margin;
        Ok(self)
    }

    /// Gives up campaigning after `timeout` ([`Error::TimedOut`]); default: no limit.
    pub fn campaign_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.campaign_timeout = timeout;
        self
    }

    /// Called once for every leader this runner sees: others while it campaigns, then
    /// itself when elected.
    pub fn on_new_leader(mut self, hook: impl FnMut(&Leader) + 'e) -> Self {
        self.on_new_leader = Some(Box::new(hook));
        self
    }

    /// Called after the closure has returned and the runner has resigned: only for a
    /// candidate that led.
    pub fn on_stopped(mut self, hook: impl FnMut(&Stopped) + 'e) -> Self {
        self.on_stopped = Some(Box::new(hook));
        self
    }

    /// A handle that stops this runner from any thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Makes `stopper` the one that stops this runner (replacing its own), for a
    /// stopper that must exist before the runner does (the C library hands one to the
    /// call that runs). A stopper serves one run at a time; once stopped it stays
    /// stopped, and a run it was stopped before returns `None` at once.
    pub fn stopped_by(mut self, stopper: &Stopper) -> Self {
        self.stopper = stopper.clone();
        self
    }

    /// Campaigns, then runs `lead` while leading (see [`Runner`]). Returns the
    /// closure's value, or `None` if [`Stopper::stop`] was called before this runner
    /// was elected. A panic in the closure resigns (the lease is dropped) and
    /// propagates, without `on_stopped`.
    pub fn run<R>(mut self, lead: impl FnOnce(&Leading<'_, 't>) -> R) -> Result<Option<R>> {
        crate::table::to_etcd!(self.election.table, t => self.run_on_etcd(t, lead));
        let election = self.election;
        let inner = election.table.shm();
        let key = Key::new(&election.name)?;
        let ttl = table::ttl_ns(election.ttl)?;
        let stopper = self.stopper.clone();
        let mut last_term = None;
        let mut hook = |slot: u32, token: u64, _: Option<&Record>| {
            if stopper.is_stopped() {
                return false;
            }
            stopper.place(Some((election.table.clone(), election.name.clone(), slot, None)));
            if last_term != Some(token) {
                last_term = Some(token);
                if let (Some(report), Some(leader)) =
                    (self.on_new_leader.as_mut(), inner.leader_now(slot, token))
                {
                    report(&leader);
                }
            }
            // A stop that came before `place` found no slot to wake: look again.
            !stopper.is_stopped()
        };
        let won = if self.stopper.is_stopped() {
            None
        } else {
            match inner.acquire_blocking(
                &key,
                ttl,
                election.options.label_word(),
                &crate::table::Patience::waiting(self.campaign_timeout),
                Some(&mut hook),
            ) {
                // With a hook, never `Ok(None)`: a shared name is refused (WrongKind).
                Ok(won) => won,
                Err(Error::TimedOut { .. }) if self.stopper.is_stopped() => None,
                Err(e) => return Err(e),
            }
        };
        let Some((slot, token, deadline)) = won else {
            self.stopper.place(None);
            return Ok(None);
        };
        let leadership = election.lead(Lease::new(election.table, slot, token, deadline))?;
        let me = inner.leader_now(slot, token);
        self.lead_and_resign(leadership, slot, me, lead)
    }

    /// [`Runner::run`] on etcd: the campaign waits on a watch, and [`Stopper::stop`]
    /// wakes it through the stopper's interrupt (a leading runner is asked to release,
    /// as in shared memory).
    #[cfg(feature = "etcd")]
    fn run_on_etcd<R>(
        mut self,
        t: &crate::etcd::EtcdTable,
        lead: impl FnOnce(&Leading<'_, 't>) -> R,
    ) -> Result<Option<R>> {
        let election = self.election;
        if self.stopper.is_stopped() {
            return Ok(None);
        }
        let interrupt = Arc::clone(&self.stopper.state.interrupt);
        let options = election.options.clone().wait(self.campaign_timeout);
        let has_hook = self.on_new_leader.is_some();
        let on_new_leader = &mut self.on_new_leader;
        let mut report = |l: &Leader| {
            if let Some(hook) = on_new_leader.as_mut() {
                hook(l);
            }
        };
        // Without a hook, other leaders cost no request (their time left).
        let seen: Option<&mut dyn FnMut(&Leader)> = if has_hook { Some(&mut report) } else { None };
        let won = t.acquire_until(&election.name, election.ttl, &options, Some(&interrupt), seen);
        let lease = match won {
            Ok(lease) => lease,
            Err(Error::TimedOut { .. }) if self.stopper.is_stopped() => return Ok(None),
            Err(e) => return Err(e),
        };
        let me = Some(lease.as_leader());
        let leadership = election.lead(Lease::on_etcd(election.table, lease))?;
        self.lead_and_resign(leadership, 0, me, lead)
    }

    /// Runs `lead` while leading, then resigns and reports (both backends).
    fn lead_and_resign<R>(
        &mut self,
        leadership: Leadership<'t>,
        slot: u32,
        me: Option<Leader>,
        lead: impl FnOnce(&Leading<'_, 't>) -> R,
    ) -> Result<Option<R>> {
        let election = self.election;
        let token = leadership.term();
        self.stopper.place(Some((
            election.table.clone(),
            election.name.clone(),
            slot,
            Some(token),
        )));
        if let (Some(report), Some(leader)) = (self.on_new_leader.as_mut(), me) {
            report(&leader);
        }
        let leading = Leading {
            leadership: &leadership,
            stopper: &self.stopper,
            margin: self.stop_margin,
            reason: Mutex::new(None),
        };
        if self.stopper.is_stopped() {
            leading.should_stop();
        }
        let value = lead(&leading);
        let reason = *leading.reason.lock().unwrap_or_else(|p| p.into_inner());
        self.stopper.place(None);
        let resigned = leadership.resign().is_ok();
        if let Some(report) = self.on_stopped.as_mut() {
            report(&Stopped { term: token, reason, resigned });
        }
        Ok(Some(value))
    }
}
