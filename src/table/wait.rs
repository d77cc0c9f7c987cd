//! Waiting for a lease to change: blocked acquisitions, and observers of a name.
//!
//! A waiter sleeps on the slot's futex word (the high half of the deadline field, see
//! [`crate::protocol::futex_value`]) after announcing itself with a flag on the grant
//! word, so that the change it waits for wakes it:
//!
//! | waiting for | woken by |
//! |---|---|
//! | the lease to be freed (`acquire`) | release, revocation, unbinding (they wake `WAITERS`); its expiry (the sleep ends at the deadline) |
//! | any change of holder (observers) | grant, release, revocation, unbinding (they wake `OBSERVERS`); expiry (likewise) |
//! | the holder's death (both) | the kernel: a [`DeathAlarm`] thread polls the holder's pidfd and wakes the futex when it exits (armed once a wait has lasted [`ALARM_AFTER`]; before then the waiter looks again by that time) |
//!
//! A dead process cannot wake anyone, so without the alarm its waiters would learn of
//! its death only by probing it again: they still do, every [`LIVENESS_RECHECK`], when
//! no alarm can be set (pidfds unsupported, or a holder identified by start time whose
//! pidfd cannot be verified). And whatever the holder, a waiter looks again at least
//! every [`LONGEST_NAP`]: a process killed between freeing a lease and waking its
//! waiters (a few instructions apart) delays them by at most that much.

use std::cell::OnceCell;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Attempt, Inner, Key};
use crate::error::{Error, Result};
use crate::identity;
use crate::info::{Label, LeaseKind};
use crate::layout::holder::Record;
use crate::options::{AcquireOptions, Interrupt, INTERRUPT_POLL};
use crate::protocol::{self, Wait};
use crate::sys;

/// How often a waiter re-checks a live-process holder when no death alarm is set.
pub(crate) const LIVENESS_RECHECK: Duration = Duration::from_millis(50);
/// How long a blocked acquisition sleeps on a live holder before it arms a death alarm
/// (which costs a thread): handoffs between processes end most waits much sooner (the
/// release wakes the waiter), and a holder that dies before then is found at most this
/// much later than with the alarm.
const ALARM_AFTER: Duration = Duration::from_millis(5);
/// How long a waiter that was woken, and then found the lease taken again by a live
/// holder, steps back (unannounced, asleep) before it looks again: long enough for a
/// holder that takes the lease in a loop to run undisturbed for a while (its cycle is
/// tens of nanoseconds), short against any wait worth announcing.
const BACK_OFF: Duration = Duration::from_micros(50);
/// A waiter looks at the lease at least this often, whoever holds it.
pub(crate) const LONGEST_NAP: Duration = Duration::from_secs(1);

/// Wakes a slot's futex when a given process exits: a thread blocked in `poll` on the
/// process's pidfd and on an eventfd that this value pokes when dropped, which ends the
/// thread; the drop then joins it (at once: it only has to return from `poll`), so that
/// no thread of the library outlives the wait that started it — a program that exits
/// right after its wait leaves nothing running (valgrind saw the thread's memory as lost).
#[derive(Debug)]
pub(crate) struct DeathAlarm {
    /// The holder record the alarm watches.
    record: Record,
    /// Set (before the wake-up) once the process has exited.
    fired: Arc<AtomicBool>,
    /// An eventfd the thread polls besides the pidfd (shared with it).
    cancel: Arc<OwnedFd>,
    /// The process whose thread watches: in a child forked since, the thread does not
    /// exist, and the eventfd is the parent's.
    pid: u32,
    /// The watching thread (joined on drop, in the process that started it).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DeathAlarm {
    fn drop(&mut self) {
        // A forked child's copy must not stop the parent's thread.
        if self.pid == identity::pid() {
            sys::poke(&self.cancel);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl DeathAlarm {
    /// An alarm for the process `record` describes, on slot `index` of `inner`; `None`
    /// when it cannot be set (see [`identity::death_watch`]), or the thread cannot start.
    fn arm(inner: &Arc<Inner>, index: u32, record: &Record) -> Option<DeathAlarm> {
        let pidfd = identity::death_watch(record)?;
        let cancel = Arc::new(sys::eventfd().ok()?);
        let polled = Arc::clone(&cancel);
        let inner = Arc::clone(inner);
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let thread = sys::with_signals_blocked(|| {
            std::thread::Builder::new().name("shmlease-deathwatch".into()).spawn(move || {
                if sys::wait_exit_or_poke(&pidfd, &polled) {
                    flag.store(true, Ordering::Release);
                    // The liveness cache may have seen the process alive a moment ago.
                    identity::forget_alive();
                    inner.wake(index);
                }
            })
        })
        .ok()?;
        let pid = identity::pid();
        Some(DeathAlarm { record: *record, fired, cancel, pid, thread: Some(thread) })
    }

    /// Keeps `alarm` watching the live-process holder `record` of slot `index` (arming
    /// a new one when the holder changed), or disarms it for any other holder. Returns
    /// whether an alarm now watches the holder.
    pub(crate) fn keep(
        alarm: &mut Option<DeathAlarm>,
        inner: &Arc<Inner>,
        index: u32,
        record: Option<&Record>,
    ) -> bool {
        let wanted = record.filter(|r| !r.detached && r.pidns == identity::me().pidns);
        match (wanted, alarm.as_ref()) {
            (None, _) => {
                *alarm = None;
                false
            }
            (Some(r), Some(a))
                if a.record == *r
                    && !a.fired.load(Ordering::Acquire)
                    && a.pid == identity::pid() =>
            {
                true
            }
            (Some(r), _) => {
                *alarm = DeathAlarm::arm(inner, index, r);
                alarm.is_some()
            }
        }
    }
}

/// How long a waiter may sleep before looking again: until the grant's `deadline`
/// (table time) at most, within the caller's `left`, and no longer than a
/// liveness re-check when the holder is a live process that no alarm watches.
pub(crate) fn nap(
    now: u64,
    deadline: u64,
    left: Duration,
    unwatched_live_holder: bool,
) -> Duration {
    let nap = Duration::from_nanos(deadline.saturating_sub(now)).min(left).min(LONGEST_NAP);
    if unwatched_live_holder {
        nap.min(LIVENESS_RECHECK)
    } else {
        nap
    }
}

/// What a wait may spend: when it started (read at the first need: a grant that does not
/// wait reads no clock for it), how long it may last, and the caller's [`Interrupt`].
/// Every wait of the table asks it, each time it wakes, how long it may sleep.
pub(crate) struct Patience<'o> {
    start: OnceCell<Instant>,
    /// As [`AcquireOptions::wait`](crate::AcquireOptions::wait): `None`, no wait.
    wait: Option<Option<Duration>>,
    interrupt: Option<&'o Interrupt>,
}

impl<'o> Patience<'o> {
    /// The patience `options` ask for.
    pub(crate) fn of(options: &'o AcquireOptions) -> Patience<'o> {
        Patience {
            start: OnceCell::new(),
            wait: options.wait,
            interrupt: options.interrupt.as_ref(),
        }
    }

    /// A wait of up to `timeout` (forever with `None`), not interruptible.
    pub(crate) fn waiting(timeout: Option<Duration>) -> Patience<'static> {
        Patience { start: OnceCell::new(), wait: Some(timeout), interrupt: None }
    }

    /// Whether the caller waits at all.
    pub(crate) fn waits(&self) -> bool {
        self.wait.is_some()
    }

    /// Whether the caller gave the wait an interrupt check.
    pub(crate) fn interruptible(&self) -> bool {
        self.interrupt.is_some()
    }

    /// How long the wait has lasted.
    pub(crate) fn waited(&self) -> Duration {
        self.start.get_or_init(Instant::now).elapsed()
    }

    /// How long the caller may sleep before looking again: zero once its time is up (at
    /// once for a caller that does not wait), at most [`INTERRUPT_POLL`] when it has an
    /// interrupt, which is asked first: [`Error::Interrupted`] when it says stop.
    pub(crate) fn left(&self) -> Result<Duration> {
        let left = match self.wait {
            None => return Ok(Duration::ZERO),
            Some(None) => Duration::MAX,
            Some(Some(t)) => t.saturating_sub(self.waited()),
        };
        match self.interrupt {
            Some(i) if !left.is_zero() => {
                // A check that panics ends the wait as one that says stop, so that the
                // wait gives up what it holds; the panic then goes on from the caller's
                // frame (see `resume_check_panic`).
                let asked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| i.asked()))
                    .unwrap_or_else(|payload| {
                        CHECK_PANIC.with(|p| p.set(Some(payload)));
                        true
                    });
                if asked {
                    return Err(Error::Interrupted { waited: self.waited() });
                }
                Ok(left.min(INTERRUPT_POLL))
            }
            _ => Ok(left),
        }
    }

    /// The options of a wait nested in this one: `options`, waiting for what is left of
    /// this wait's time (from its start, so the nested wait ends when this one would).
    pub(crate) fn nested(&self, options: &AcquireOptions) -> AcquireOptions {
        let wait = self.wait.map(|t| t.map(|t| t.saturating_sub(self.waited())));
        AcquireOptions { wait, ..options.clone() }
    }
}

std::thread_local! {
    /// The panic of an interrupt check, caught so that its wait could give up what it
    /// held; resumed by [`resume_check_panic`].
    static CHECK_PANIC: std::cell::Cell<Option<Box<dyn std::any::Any + Send>>> =
        const { std::cell::Cell::new(None) };
}

/// Where an acquisition returns to its caller: goes on with the panic of an interrupt
/// check that ended this thread's wait (`granted` is then `Interrupted`), if one did.
#[inline(always)]
pub(crate) fn resume_check_panic<T>(granted: &Result<T>) {
    #[cold]
    fn resume() {
        if let Some(payload) = CHECK_PANIC.with(|p| p.take()) {
            std::panic::resume_unwind(payload);
        }
    }
    if let Err(Error::Interrupted { .. }) = granted {
        resume();
    }
}

/// Called by a blocked acquisition each time it finds the lease held: the slot, the
/// token of the grant that holds it and its holder record. Returning `false` ends the
/// wait (with [`Error::TimedOut`]). With a hook, the waiter also observes the slot, so
/// that a grant to somebody else wakes it too (to report the new holder).
pub(crate) type HeldHook<'h> = &'h mut dyn FnMut(u32, u64, Option<&Record>) -> bool;

impl Inner {
    /// Blocks until the lease on `key` is granted or `patience` runs out (or `hook` ends
    /// the wait). `None` when the name stopped being shared while an exclusive grant of
    /// it was being taken (see `table::shared`): start over.
    pub(crate) fn acquire_blocking(
        self: &Arc<Inner>,
        key: &Key,
        ttl: u64,
        label: Label,
        patience: &Patience<'_>,
        mut hook: Option<HeldHook<'_>>,
    ) -> Result<Option<(u32, u64, u64)>> {
        let mut alarm = None;
        let mut sleeping_since = None;
        let mut woken = false;
        loop {
            let (index, bound_as, token, record) = match self.attempt(key, ttl, label)? {
                Attempt::Won { slot, token, deadline } => return Ok(Some((slot, token, deadline))),
                Attempt::Held { slot, bound_as, token, holder, .. } => {
                    (slot, bound_as, token, holder)
                }
                // An exclusive grant of a shared name (waiting for its shared holders),
                // unless the waiter needs an exclusive lease's observation (elections).
                Attempt::Shared { slot, .. } => {
                    if hook.is_some() {
                        return Err(self.wrong_kind(
                            key,
                            slot,
                            LeaseKind::Shared,
                            LeaseKind::Exclusive,
                        ));
                    }
                    return self.grant_exclusive_of_shared(key, ttl, label, patience);
                }
            };
            let go_on = hook.as_mut().map_or(true, |h| h(index, token, record.as_ref()));
            let left = if go_on { patience.left()? } else { Duration::ZERO };
            if left.is_zero() {
                let holder = self.holder_of(index, record);
                return Err(Error::TimedOut { waited: patience.waited(), token, holder });
            }
            let live = record.is_some_and(|r| !r.detached && r.pidns == identity::me().pidns);
            // Woken (by a release, mostly), and the lease taken again before we could:
            // its holder takes it in a loop. Step back for a moment without announcing
            // ourselves, then look again: announced at once, every release of the holder
            // would cost it a wake-up call, and us another wake-up that loses the race
            // again. Two processes taking one name in a loop went from a third of a
            // robust mutex's throughput to more than it (BENCHMARKS.md, "Contention").
            // A sleep, not a spin: it costs no CPU. A waiter asleep is still woken by
            // the release; only what it does once it finds it lost is changed.
            if woken && live && hook.is_none() {
                woken = false;
                std::thread::sleep(BACK_OFF.min(left));
                continue;
            }
            let now = self.now();
            if let Wait::Sleep { mut futex_expect, deadline, .. } =
                protocol::announce_waiter(self.slot(index), bound_as, now)
            {
                if hook.is_some() {
                    match protocol::announce_observer(self.slot(index), bound_as) {
                        Some(o) => futex_expect = protocol::futex_value(o.word),
                        None => continue,
                    }
                }
                // The death alarm (a thread, a pidfd, an eventfd: tens of microseconds) is
                // armed only once the wait has lasted `ALARM_AFTER`: most waits for a
                // live holder end sooner, woken by its release. Until then naps end by
                // that time, and a holder that died meanwhile is found by the look that
                // follows.
                let first_sleep = *sleeping_since.get_or_insert_with(Instant::now);
                let early = ALARM_AFTER.checked_sub(first_sleep.elapsed());
                let watched =
                    early.is_none() && DeathAlarm::keep(&mut alarm, self, index, record.as_ref());
                let mut nap = nap(now, deadline, left, live && !watched);
                if let (Some(early), true) = (early, live) {
                    nap = nap.min(early);
                }
                self.sleep(index, futex_expect, nap);
                woken = true;
            }
        }
    }
}

/// Keeps a grant renewed from a helper thread while the waiting thread does something
/// that may take long: a fair waiter's place for its whole wait, a draining exclusive
/// acquirer's hold on a shared name while it waits. The waiting thread also runs the
/// caller's [`Interrupt`] check, which may block for as long as it likes (a Python signal
/// handler, a GIL held elsewhere): what the wait holds must not lapse meanwhile. The
/// thread renews the grant with `token` in slot `slot` to `ttl` every `every`, until
/// stopped (joined, in the process that started it: a forked child's copy does nothing)
/// or the grant is gone. If the thread cannot start, nothing is renewed: the waiter is
/// then treated like a stopped one.
pub(crate) struct Renewer {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<Option<u64>>>,
    pid: u32,
}

impl Renewer {
    /// Starts renewing.
    pub(crate) fn start(
        inner: &Arc<Inner>,
        slot: u32,
        token: u64,
        ttl: u64,
        every: Duration,
    ) -> Renewer {
        type Stop = (std::sync::Mutex<bool>, std::sync::Condvar);
        let stop: Arc<Stop> = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (inner, signal) = (Arc::clone(inner), Arc::clone(&stop));
        let thread = sys::with_signals_blocked(|| {
            std::thread::Builder::new().name("shmlease-renew".into()).spawn(move || {
                let (lock, cvar) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                let mut deadline = None;
                while !*stopped {
                    let (s, _) =
                        cvar.wait_timeout(stopped, every).unwrap_or_else(|e| e.into_inner());
                    stopped = s;
                    if *stopped {
                        break;
                    }
                    match protocol::renew(inner.slot(slot), token, inner.now(), ttl) {
                        Ok(d) => deadline = Some(d),
                        Err(_) => break, // gone: nothing more to renew
                    }
                }
                deadline
            })
        });
        Renewer { stop, thread: thread.ok(), pid: identity::pid() }
    }

    /// Stops and joins the thread: the deadline it last renewed the grant to, if any.
    pub(crate) fn stop(&mut self) -> Option<u64> {
        if self.pid != identity::pid() {
            return None; // a forked child's copy: the thread is the parent's
        }
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.1.notify_all();
        self.thread.take().and_then(|r| r.join().unwrap_or(None))
    }
}

impl Drop for Renewer {
    /// However the wait ends (a panic too: a grant renewed for ever would hold up the
    /// name for as long as the process lives).
    fn drop(&mut self) {
        self.stop();
    }
}
