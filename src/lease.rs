//! A granted lease, held by this process: renewal, release (also on drop), detaching,
//! and background keep-alive with prompt notice of loss.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, LostReason, Result};
use crate::identity;
use crate::layout::grant;
use crate::protocol;
use crate::table::{self, Inner, LeaseTable};

/// An exclusive, time-bound grant of a name, held by this process.
///
/// Dropping it releases it. It is valid until its deadline unless renewed; check
/// [`Lease::is_valid`] before acting, and pass [`Lease::token`] to any resource that can
/// reject stale holders (fencing).
///
/// A lease belongs to the process that took it. A `fork()`ed child that inherits the
/// value may read it (`token`, `is_valid`, `remaining`, `deadline`), but `renew`,
/// `release`, `detach` and `keep_alive` fail there with [`Error::BoundToProcess`],
/// `lost` and `wait_lost` return `None` at once, and dropping it does nothing: the
/// parent still holds it, renews it and releases it.
pub struct Lease<'t> {
    table: &'t LeaseTable,
    slot: u32,
    token: u64,
    /// Last deadline this process knows of (table time).
    deadline: AtomicU64,
    pid: u32,
    keep_alive: Option<Box<KeepAlive>>,
    finished: bool,
    /// The grant itself, when the table is on etcd (then the fields above hold only the
    /// token and pid).
    #[cfg(feature = "etcd")]
    etcd: Option<Box<crate::etcd::EtcdLease>>,
}

/// Sends a lease operation to the etcd backend when the lease is on etcd: `etcd!(self,
/// e => expr)` returns `expr` with `e` the `EtcdLease`; nothing without the feature.
macro_rules! on_etcd {
    ($lease:expr, $e:ident => $x:expr) => {
        #[cfg(feature = "etcd")]
        if let Some($e) = $lease.etcd.as_deref() {
            return $x;
        }
    };
}

/// The parts of a [`Lease`], for the C library. Not a stable API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawLease {
    pub slot: u32,
    pub token: u64,
    pub deadline: u64,
    pub pid: u32,
}

impl RawLease {
    /// Whether this process took the lease these parts come from, not a `fork()`ed
    /// child that inherited them: the check [`Lease`] makes, two loads once cached and
    /// no system call. Not a stable API.
    #[doc(hidden)]
    #[inline]
    pub fn taken_here(&self) -> bool {
        identity::pid() == self.pid
    }

    /// [`Lease::release`] of the lease with these parts, taken from `table` (it has no
    /// keep-alive): the same checks and the same release, from the parts themselves.
    /// No lease is rebuilt, moved or finished: moving a lease rebuilt just before
    /// copies it with wide loads of fields just stored one by one (a store-forwarding
    /// stall, ~6% of a C take + release), and going through `Lease::finish` cost the C
    /// release an out-of-line call and the checks of a keep-alive it cannot have.
    /// `None` if the parts cannot belong to `table`. Not a stable API.
    #[doc(hidden)]
    #[inline(always)]
    pub fn release(self, table: &LeaseTable) -> Option<Result<()>> {
        #[cfg(feature = "etcd")]
        if table.etcd().is_some() {
            return Some(Lease::from_raw(table, self)?.release());
        }
        if self.slot >= table.capacity() {
            return None;
        }
        if !self.taken_here() {
            return Some(Err(not_taken_here(table, self.slot, self.token)));
        }
        Some(table::release_slot(table.shm(), self.slot, self.token, self.deadline))
    }
}

/// The refusal for a process that inherited the lease in `slot` with `token` (by
/// `fork`). Given the parts themselves: a `RawLease` (24 bytes) is passed in memory,
/// which cost `RawLease::release` five stores before its CAS, though it never comes here
/// in the process that took the lease.
#[cold]
#[inline(never)]
fn not_taken_here(table: &LeaseTable, slot: u32, token: u64) -> Error {
    let holder = table.shm().current_holder(slot, token);
    Error::BoundToProcess { token, holder }
}

/// What [`Lease::wait_notice`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Someone asked the holder to release the lease (it is still held).
    ReleaseRequested,
    /// The lease is lost, for this reason.
    Lost(LostReason),
}

/// A lease turned loose from its process by [`Lease::detach`]: it lives until its
/// deadline unless renewed or released, by anyone, with [`LeaseTable::renew`] and
/// [`LeaseTable::release`] and this token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetachedLease {
    /// The fencing token of the grant.
    pub token: u64,
    /// When it expires unless renewed.
    pub deadline: Instant,
}

impl std::fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("slot", &self.slot).field("token", &self.token).finish()
    }
}

impl<'t> Lease<'t> {
    #[inline]
    pub(crate) fn new(table: &'t LeaseTable, slot: u32, token: u64, deadline: u64) -> Self {
        Lease {
            table,
            slot,
            token,
            deadline: AtomicU64::new(deadline),
            pid: identity::pid(),
            keep_alive: None,
            finished: false,
            #[cfg(feature = "etcd")]
            etcd: None,
        }
    }

    /// [`Lease::release`] of an etcd grant, out of the shared-memory fast path.
    #[cfg(feature = "etcd")]
    #[cold]
    #[inline(never)]
    fn release_on_etcd(mut self) -> Result<()> {
        self.finished = true;
        match self.etcd.take() {
            Some(e) => e.release(),
            None => Ok(()),
        }
    }

    /// A lease on an etcd table.
    #[cfg(feature = "etcd")]
    pub(crate) fn on_etcd(table: &'t LeaseTable, lease: crate::etcd::EtcdLease) -> Self {
        Lease {
            table,
            slot: 0,
            token: lease.token(),
            deadline: AtomicU64::new(0),
            pid: identity::pid(),
            keep_alive: None,
            finished: false,
            etcd: Some(Box::new(lease)),
        }
    }

    fn inner(&self) -> &'t Inner {
        self.table.shm()
    }

    /// Whether this process took the lease (not a child that inherited it by `fork`).
    #[inline]
    fn taken_here(&self) -> bool {
        identity::pid() == self.pid
    }

    /// The refusal for a process that inherited the lease.
    #[cold]
    fn not_taken_here(&self) -> Error {
        not_taken_here(self.table, self.slot, self.token)
    }

    /// The fencing token: larger than every token handed out for this name before.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// When the grant expires unless renewed.
    pub fn deadline(&self) -> Instant {
        on_etcd!(self, e => e.deadline());
        Instant::now() + self.remaining()
    }

    /// Time left before the grant expires (zero once lost).
    pub fn remaining(&self) -> Duration {
        on_etcd!(self, e => e.remaining());
        let inner = self.inner();
        let now = inner.now();
        let word = inner.slot(self.slot).grant.load(crate::sync::Ordering::Acquire);
        if grant::token(word) != self.token
            || protocol::classify(grant::deadline_bits(word), now) != protocol::Observed::Held
        {
            return Duration::ZERO;
        }
        Duration::from_nanos(grant::deadline(word) - now)
    }

    /// Why this grant is no longer the live one, read from the table now (`None` while
    /// it is): what the keep-alive will report, before it has.
    pub(crate) fn loss_now(&self) -> Option<LostReason> {
        // On etcd, the holder's own deadline is all it can tell without a request.
        on_etcd!(self, e => e.lost().or((!e.is_valid()).then_some(LostReason::Expired)));
        let inner = self.inner();
        let word = inner.slot(self.slot).grant.load(crate::sync::Ordering::Acquire);
        let lost = protocol::check_ours(word, self.token, inner.now()).err()?;
        Some(table::lost_reason(lost).unwrap_or(LostReason::Expired))
    }

    /// Whether this grant is still the live one: not expired, revoked or taken over.
    pub fn is_valid(&self) -> bool {
        on_etcd!(self, e => e.is_valid());
        let inner = self.inner();
        let word = inner.slot(self.slot).grant.load(crate::sync::Ordering::Acquire);
        grant::token(word) == self.token
            && protocol::classify(grant::deadline_bits(word), inner.now())
                == protocol::Observed::Held
    }

    /// Extends the grant to `ttl` from now. Fails with [`Error::Lost`] if the grant is
    /// gone (it expired before this call, was revoked, or was taken over).
    pub fn renew(&self, ttl: Duration) -> Result<()> {
        on_etcd!(self, e => e.renew(ttl));
        let ttl = table::ttl_ns(ttl)?;
        if !self.taken_here() {
            return Err(self.not_taken_here());
        }
        let inner = self.inner();
        let now = inner.now();
        match protocol::renew(inner.slot(self.slot), self.token, now, ttl) {
            Ok(deadline) => {
                self.deadline.store(deadline, Ordering::Relaxed);
                inner.count_sampled(table::counter::RENEWALS, now);
                Ok(())
            }
            Err(l) => Err(table::lost(self.token, l, inner.location(), self.slot)),
        }
    }

    /// Releases the grant, waking anyone waiting for it. Fails with [`Error::Lost`] if
    /// it was already gone (then nothing is changed).
    #[inline(always)]
    pub fn release(#[allow(unused_mut)] mut self) -> Result<()> {
        #[cfg(feature = "etcd")]
        if self.etcd.is_some() {
            return self.release_on_etcd();
        }
        if !self.taken_here() {
            let refusal = self.not_taken_here();
            drop(self); // does nothing in this process
            return Err(refusal);
        }
        if self.keep_alive.is_some() {
            // Consumed without running `Drop` again (it would only find the lease
            // finished); `finish` takes the keep-alive, the only field that owns anything.
            return std::mem::ManuallyDrop::new(self).finish();
        }
        // The common case, inlined into the caller, from the fields alone: taking the
        // lease's address (as `finish` does) made the caller store them and read them
        // back wider, a store-forwarding stall.
        let (inner, slot, token) = (self.inner(), self.slot, self.token);
        let hint = self.deadline.load(Ordering::Relaxed);
        // Owns nothing now (no keep-alive; an etcd lease went elsewhere above).
        std::mem::forget(self);
        table::release_slot(inner, slot, token, hint)
    }

    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        let stopped = self.keep_alive.take().map(|k| k.stop());
        let released = table::release_slot(
            self.inner(),
            self.slot,
            self.token,
            self.deadline.load(Ordering::Relaxed),
        );
        if let Some(stopped) = stopped {
            // A release that succeeded woke the thread itself (its watch announced it):
            // a second wake-up would be a system call for nothing.
            stopped.join(self.inner(), self.slot, released.is_err());
        }
        released
    }

    /// Turns this lease into a detached one: it no longer belongs to this process (it
    /// is not released on drop nor reclaimed when this process dies) and lasts until
    /// its deadline unless someone renews or releases it by name and token.
    pub fn detach(mut self) -> Result<DetachedLease> {
        #[cfg(feature = "etcd")]
        if let Some(e) = self.etcd.take() {
            self.finished = true;
            return e.detach();
        }
        if !self.taken_here() {
            return Err(self.not_taken_here());
        }
        self.finished = true;
        let stopped = self.keep_alive.take().map(|k| k.stop());
        let detached = table::detach_slot(self.inner(), self.slot, self.token);
        if let Some(stopped) = stopped {
            stopped.join(self.inner(), self.slot, true);
        }
        detached
    }

    /// Starts renewing the lease in the background, to `ttl` every `ttl / 3`.
    ///
    /// The background thread also watches the slot, so a revocation or takeover is
    /// noticed at once, not at the next renewal; learn of it with [`Lease::lost`] or
    /// [`Lease::wait_lost`]. Renewal stops the moment the lease is released, detached
    /// or dropped. Calling it again replaces the previous keep-alive.
    pub fn keep_alive(&mut self, ttl: Duration) -> Result<()> {
        #[cfg(feature = "etcd")]
        if let Some(e) = self.etcd.as_deref_mut() {
            return e.keep_alive(ttl);
        }
        let ttl = table::ttl_ns(ttl)?;
        if !self.taken_here() {
            return Err(self.not_taken_here());
        }
        if let Some(k) = self.keep_alive.take() {
            k.stop().join(self.inner(), self.slot, true);
        }
        let shared = Arc::new(Shared::default());
        let thread = {
            let inner = Arc::clone(self.table.shm());
            let shared = Arc::clone(&shared);
            let (slot, token) = (self.slot, self.token);
            crate::sys::with_signals_blocked(|| {
                std::thread::Builder::new()
                    .name("shmlease-keepalive".into())
                    .spawn(move || renew_loop(&inner, slot, token, ttl, &shared))
            })
            .map_err(|e| Error::io("starting the keep-alive thread", e))?
        };
        self.keep_alive = Some(Box::new(KeepAlive { shared, thread: Some(thread), pid: self.pid }));
        Ok(())
    }

    /// Takes the lease apart without releasing it, for the C library, which keeps the
    /// parts in its own handle. Not a stable API. Inlined, as [`Lease::from_raw`]:
    /// taking apart a lease just built then costs nothing.
    #[doc(hidden)]
    #[inline]
    pub fn into_raw(mut self) -> RawLease {
        self.finished = true;
        #[cfg(feature = "etcd")]
        if let (Some(e), Some(t)) = (self.etcd.take(), self.table.etcd()) {
            // The etcd grant waits in its table until `from_raw` takes it back.
            let raw = RawLease { slot: 0, token: e.token(), deadline: 0, pid: self.pid };
            t.park(*e);
            return raw;
        }
        if let Some(k) = self.keep_alive.take() {
            k.stop().join(self.inner(), self.slot, true);
        }
        RawLease {
            slot: self.slot,
            token: self.token,
            deadline: self.deadline.load(Ordering::Relaxed),
            pid: self.pid,
        }
    }

    /// Rebuilds a lease from [`Lease::into_raw`] parts taken from the same `table`;
    /// `None` if the parts cannot belong to it. Not a stable API.
    #[doc(hidden)]
    #[inline]
    pub fn from_raw(table: &'t LeaseTable, raw: RawLease) -> Option<Lease<'t>> {
        #[cfg(feature = "etcd")]
        if let Some(t) = table.etcd() {
            return t.unpark(raw.token).map(|e| Lease::on_etcd(table, e));
        }
        (raw.slot < table.capacity()).then(|| Lease {
            table,
            slot: raw.slot,
            token: raw.token,
            deadline: AtomicU64::new(raw.deadline),
            pid: raw.pid,
            keep_alive: None,
            finished: false,
            #[cfg(feature = "etcd")]
            etcd: None,
        })
    }

    /// Why the lease was lost, if the keep-alive has noticed (always `None` without a
    /// keep-alive: use [`Lease::is_valid`]).
    pub fn lost(&self) -> Option<LostReason> {
        on_etcd!(self, e => e.lost());
        if !self.taken_here() {
            return None; // the keep-alive thread and its state are the parent's
        }
        self.keep_alive
            .as_ref()
            .and_then(|k| *k.shared.lost.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Blocks until the keep-alive notices the lease is lost (returning why), or until
    /// `timeout` passes (returning `None`). Without a keep-alive, returns `None` at once.
    pub fn wait_lost(&self, timeout: Option<Duration>) -> Option<LostReason> {
        on_etcd!(self, e => e.wait_lost(timeout));
        match self.wait_until(timeout, false)? {
            Notice::Lost(reason) => Some(reason),
            Notice::ReleaseRequested => None,
        }
    }

    /// Whether someone has asked the holder to release this lease
    /// ([`LeaseTable::request_release`]) while it is still held. One atomic load; no
    /// keep-alive needed — except on etcd, where the holder learns of a request at once
    /// with a keep-alive (it watches for requests), else at its next renewal. `false`
    /// once the lease is lost (see [`Lease::lost`]).
    pub fn release_requested(&self) -> bool {
        // On etcd: learnt by the keep-alive's watch, or at the next renewal.
        on_etcd!(self, e => e.release_requested());
        let inner = self.inner();
        protocol::release_requested(inner.slot(self.slot), self.token, inner.now()) == Ok(true)
    }

    /// Blocks until the keep-alive notices that the lease is lost or that its release
    /// was requested (a loss wins when both are true), or until `timeout` passes
    /// (`None`). Without a keep-alive, or in a process that inherited the lease, returns
    /// `None` at once. Level-triggered: once a release has been requested, every call
    /// returns [`Notice::ReleaseRequested`] at once until the lease is lost; to wait for
    /// the loss after that, use [`Lease::wait_lost`].
    pub fn wait_notice(&self, timeout: Option<Duration>) -> Option<Notice> {
        on_etcd!(self, e => e.wait_notice(timeout));
        self.wait_until(timeout, true)
    }

    fn wait_until(&self, timeout: Option<Duration>, requests: bool) -> Option<Notice> {
        if !self.taken_here() {
            return None;
        }
        let k = self.keep_alive.as_ref()?;
        let guard = k.shared.lost.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = guard;
        loop {
            if let Some(reason) = *guard {
                return Some(Notice::Lost(reason));
            }
            if requests && k.shared.requested.load(Ordering::SeqCst) {
                return Some(Notice::ReleaseRequested);
            }
            match deadline {
                None => guard = k.shared.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    guard = k
                        .shared
                        .changed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        #[cfg(feature = "etcd")]
        if self.etcd.is_some() {
            return; // the `EtcdLease` field releases itself when it is dropped
        }
        if !self.taken_here() {
            // Inherited through fork(): the parent's lease, and its keep-alive thread
            // does not exist here. Leave both alone.
            if let Some(k) = self.keep_alive.take() {
                std::mem::forget(k);
            }
            return;
        }
        let _ = self.finish();
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    lost: Mutex<Option<LostReason>>,
    /// Set once the keep-alive has seen a request to release.
    requested: AtomicBool,
    changed: Condvar,
}

struct KeepAlive {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

impl KeepAlive {
    /// Tells the thread to stop. It can no longer renew once the grant is released (its
    /// renewal CAS expects a held grant), and it exits at its next wake-up: the caller
    /// releases, detaches or replaces the lease, wakes the slot, then joins the thread
    /// with [`Stopped::join`], so that no thread of the library outlives the lease (a
    /// program exiting right after its release left one running, which valgrind
    /// reported as "possibly lost").
    fn stop(mut self) -> Stopped {
        self.shared.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take();
        // Inherited through fork(): the parent's thread, which does not exist here.
        Stopped(thread.filter(|_| identity::me().pid == self.pid))
    }
}

/// A keep-alive thread told to stop, to join once its slot has been woken.
#[must_use = "join the thread once the slot is woken"]
struct Stopped(Option<JoinHandle<()>>);

impl Stopped {
    /// Wakes slot `index` of `inner` (if `wake`: the caller did not change the grant
    /// word, or changed it without waking) and waits for the thread to exit. Prompt when
    /// the grant word has just changed (a release: the thread's futex wait cannot miss
    /// it); otherwise a wake-up that arrives just before the thread sleeps is missed, and
    /// the thread exits at the end of its nap (at most 100 ms).
    fn join(self, inner: &Inner, index: u32, wake: bool) {
        if let Some(thread) = self.0 {
            if wake {
                inner.wake(index);
            }
            let _ = thread.join();
        }
    }
}

fn renew_loop(inner: &Inner, slot: u32, token: u64, ttl: u64, shared: &Shared) {
    let interval = (ttl / 3).max(1);
    let mut next = inner.now() + interval;
    let report = |l: protocol::Lost| {
        if !shared.stop.load(Ordering::SeqCst) {
            // Interference (a scribbled slot) is reported as expiry: the grant is gone.
            let reason = table::lost_reason(l).unwrap_or(LostReason::Expired);
            *shared.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            shared.changed.notify_all();
        }
    };
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = inner.now();
        if now >= next {
            match protocol::renew(inner.slot(slot), token, now, ttl) {
                Ok(_) => {
                    inner.count_sampled(table::counter::RENEWALS, now);
                    next = now + interval;
                }
                Err(l) => return report(l),
            }
        }
        match protocol::watch(inner.slot(slot), token, now) {
            Ok(expect) => {
                // After the watch, so that a request made before it is seen here and
                // one made after it finds the waiters bit set and wakes us.
                if !shared.requested.load(Ordering::SeqCst)
                    && protocol::release_requested(inner.slot(slot), token, now) == Ok(true)
                {
                    // Under the lock, so that a waiter between its check and its wait
                    // hears it.
                    let _guard = shared.lost.lock().unwrap_or_else(|p| p.into_inner());
                    shared.requested.store(true, Ordering::SeqCst);
                    shared.changed.notify_all();
                    continue;
                }
                // Woken by release, revoke, or a waiter's takeover; else at renewal time.
                // Capped so that a stop request is noticed even without a wake-up.
                let nap =
                    Duration::from_nanos(next.saturating_sub(now)).min(Duration::from_millis(100));
                inner.sleep(slot, expect, nap);
            }
            Err(l) => return report(l),
        }
    }
}
