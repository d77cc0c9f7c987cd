//! A grant held by this process on an etcd table: renewal against its conservative
//! deadline, release (also on drop), detaching, and the keep-alive task that renews at
//! a third of the TTL and watches the key (so that a revocation is noticed at once) and
//! the name's `asks/` key (so that a request to release is).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::keys::{End, HolderRecord};
use super::recipe::{self, EtcdLeaseGrant, Spare};
use super::{bounded, holder_deadline, ttl_secs, EtcdTable, Fail};
use crate::error::{Error, LostReason, Result};
use crate::identity;
use crate::lease::{DetachedLease, Notice};

/// An exclusive, time-bound grant of a name on an etcd table, held by this process.
///
/// Dropping it releases it (one request, bounded by the location's timeout). Its
/// validity is judged on this process's clock from when the grant or last renewal was
/// *sent*, less the drift allowance ([`super::DRIFT_PER_MILLE`]), so it ends before
/// the server can expire it. As in shared memory, a `fork()`ed child that inherits it
/// may read it but not renew, release or detach it ([`Error::BoundToProcess`]), and
/// dropping it there does nothing.
pub struct EtcdLease {
    table: EtcdTable,
    name: String,
    /// The key name its keys are under: the name, or its seat (see `super::keys`).
    key_name: String,
    token: u64,
    state: Arc<State>,
    pid: u32,
    keep_alive: bool,
    finished: bool,
}

/// What the lease and its keep-alive task share.
struct State {
    base: Instant,
    /// The holder's deadline, in nanoseconds after `base`; grows with each renewal on
    /// one etcd lease, and is that lease's alone once the grant moves to another.
    deadline_ns: AtomicU64,
    /// When the etcd lease was last granted or kept alive (sent), after `base`.
    refreshed_ns: AtomicU64,
    lease_id: AtomicI64,
    granted_s: AtomicI64,
    asked_s: AtomicI64,
    record: HolderRecord,
    /// Set once the keep-alive finds the lease lost (read without a lock: a forked
    /// child may read it while a parent's thread held `lost` at the fork).
    is_lost: AtomicBool,
    /// Set once a renewal or the keep-alive's watch finds the grant asked to be
    /// released (see `recipe::ask`); never cleared: asking twice is asking once.
    requested: AtomicBool,
    lost: Mutex<Option<LostReason>>,
    changed: Condvar,
    stop: AtomicBool,
    wake: Notify,
}

impl State {
    fn deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.deadline_ns.load(Ordering::Acquire))
    }

    fn extend(&self, sent: Instant, granted_s: i64) {
        let d = holder_deadline(sent, granted_s).saturating_duration_since(self.base);
        self.deadline_ns.fetch_max(d.as_nanos() as u64, Ordering::AcqRel);
        let r = sent.saturating_duration_since(self.base).as_nanos() as u64;
        self.refreshed_ns.fetch_max(r, Ordering::AcqRel);
    }

    /// The grant moved to the etcd lease `id` of `granted_s`, kept alive from `sent`:
    /// the deadline is that lease's alone, even when it is shorter than the last one's.
    fn moved(&self, id: i64, sent: Instant, granted_s: i64) {
        self.lease_id.store(id, Ordering::Relaxed);
        self.granted_s.store(granted_s, Ordering::Relaxed);
        let d = holder_deadline(sent, granted_s).saturating_duration_since(self.base);
        self.deadline_ns.store(d.as_nanos() as u64, Ordering::Release);
        let r = sent.saturating_duration_since(self.base).as_nanos() as u64;
        self.refreshed_ns.store(r, Ordering::Release);
    }

    /// The etcd lease, as a spare once its key is gone.
    fn spare(&self) -> Spare {
        let sent = self.base + Duration::from_nanos(self.refreshed_ns.load(Ordering::Acquire));
        Spare {
            lease: EtcdLeaseGrant {
                id: self.lease_id.load(Ordering::Relaxed),
                ttl_s: self.granted_s.load(Ordering::Relaxed),
                sent,
            },
            asked_s: self.asked_s.load(Ordering::Relaxed),
        }
    }

    fn record(&self) -> HolderRecord {
        HolderRecord {
            ttl_s: self.granted_s.load(Ordering::Relaxed),
            asked_s: self.asked_s.load(Ordering::Relaxed),
            ..self.record.clone()
        }
    }

    fn report(&self, reason: LostReason) {
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        self.is_lost.store(true, Ordering::SeqCst);
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.changed.notify_all();
    }

    /// Records that the grant was asked to be released, waking whoever waits for a
    /// notice.
    fn ask(&self) {
        if self.requested.swap(true, Ordering::SeqCst) {
            return;
        }
        // Taken, so that a waiter between its check and its wait hears it.
        let _guard = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }
}

/// The grants this process holds through one connection (so a forked child, which
/// connects afresh, starts with none), by token: a release by token from this very
/// process (the C library's resign) or a revocation from it ends the holder's own
/// validity before the request is sent, so that `is_valid` is false before anyone else
/// can be granted, as in shared memory. (A revocation from another process is learnt
/// by the keep-alive's watch, or at the next renewal.)
#[derive(Default)]
pub(crate) struct Holdings(Mutex<HashMap<u64, (String, Weak<State>)>>);

impl Holdings {
    fn hold(&self, name: &str, token: u64, state: &Arc<State>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(token, (name.to_owned(), Arc::downgrade(state)));
    }

    fn let_go(&self, token: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&token);
    }

    /// The grant `token` of `name` was moved by a renewal by token to the etcd lease
    /// `lease` (asked for `asked_s`): if this process holds it, its holder's validity
    /// is that lease's from now on, shorter or not.
    pub(crate) fn moved(&self, name: &str, token: u64, lease: EtcdLeaseGrant, asked_s: i64) {
        let state = {
            let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match held.get(&token) {
                Some((n, w)) if n == name => w.upgrade(),
                _ => None,
            }
        };
        if let Some(state) = state {
            state.asked_s.store(asked_s, Ordering::Relaxed);
            state.moved(lease.id, lease.sent, lease.ttl_s);
        }
    }

    /// The grant `token` of `name` is being released or revoked by token (`why`): if
    /// this process holds it, it is lost from now on (its keep-alive stops).
    pub(crate) fn ending(&self, name: &str, token: u64, why: LostReason) {
        let state = {
            let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match held.get(&token) {
                Some((n, _)) if n == name => held.remove(&token).map(|(_, w)| w),
                _ => None,
            }
        };
        if let Some(state) = state.and_then(|w| w.upgrade()) {
            state.report(why);
            state.stop.store(true, Ordering::SeqCst);
            state.wake.notify_one();
        }
    }
}

impl std::fmt::Debug for EtcdLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLease").field("name", &self.name).field("token", &self.token).finish()
    }
}

impl EtcdLease {
    pub(crate) fn new(
        table: EtcdTable,
        name: &str,
        key_name: &str,
        token: u64,
        asked_s: i64,
        lease: EtcdLeaseGrant,
        record: HolderRecord,
    ) -> EtcdLease {
        let base = lease.sent;
        let state = State {
            base,
            deadline_ns: AtomicU64::new(0),
            refreshed_ns: AtomicU64::new(0),
            lease_id: AtomicI64::new(lease.id),
            granted_s: AtomicI64::new(lease.ttl_s),
            asked_s: AtomicI64::new(asked_s),
            record,
            is_lost: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            lost: Mutex::new(None),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
        };
        state.extend(lease.sent, lease.ttl_s);
        let state = Arc::new(state);
        if let Ok(conn) = table.shared.conn.get() {
            conn.holdings().hold(key_name, token, &state);
        }
        EtcdLease {
            table,
            name: name.to_owned(),
            key_name: key_name.to_owned(),
            token,
            state,
            pid: identity::pid(),
            keep_alive: false,
            finished: false,
        }
    }

    /// Leaves the connection's [`Holdings`]: the lease is over for this process.
    fn let_go(&self) {
        if let Ok(conn) = self.table.shared.conn.get() {
            conn.holdings().let_go(self.token);
        }
    }

    fn taken_here(&self) -> bool {
        identity::pid() == self.pid
    }

    fn not_taken_here(&self) -> Error {
        Error::BoundToProcess { token: self.token, holder: Some(self.state.record.holder()) }
    }

    /// The fencing token: the create revision of the lease's key, larger than every
    /// token handed out for this name (and every revision of the cluster) before.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TTL etcd granted (whole seconds, at least what was asked and at least the
    /// server's minimum): how long others may have to wait after this holder dies.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.state.granted_s.load(Ordering::Relaxed).max(0) as u64)
    }

    /// This holder, as the leader of the election on its name.
    pub(crate) fn as_leader(&self) -> crate::election::Leader {
        super::election::leader(self.token, Some(&self.state.record()), self.remaining())
    }

    /// When this holder's validity ends unless renewed (conservative, see the type).
    pub fn deadline(&self) -> Instant {
        self.state.deadline()
    }

    /// Time left before the validity ends (zero once lost).
    pub fn remaining(&self) -> Duration {
        if self.state.is_lost.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        self.state.deadline().saturating_duration_since(Instant::now())
    }

    /// Whether this holder may still act on its token: before its deadline, and not
    /// found lost by the keep-alive. (Without a keep-alive, a revocation is only learnt
    /// at the next renewal: see the semantics table.)
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// Extends the grant to `ttl` from now (etcd rounds it like a grant's). Fails with
    /// [`Error::Lost`] if the grant is gone or this holder's deadline has passed, and
    /// with [`Error::Unavailable`] if the cluster did not answer in time (the lease
    /// then stays valid until its deadline).
    pub fn renew(&self, ttl: Duration) -> Result<()> {
        let ttl_s = ttl_secs(ttl)?;
        if !self.taken_here() {
            return Err(self.not_taken_here());
        }
        let s = &self.table.shared;
        let fut = renew_future(
            self.table.clone(),
            self.key_name.clone(),
            self.token,
            ttl_s,
            Arc::clone(&self.state),
        );
        s.conn.get().and_then(|conn| conn.run(fut)).map_err(|f| f.into_error(&s.text, self.token))
    }

    /// Releases the grant, waking anyone waiting for it. Fails with [`Error::Lost`] if
    /// it was already gone, or if this holder's deadline had passed (the key is still
    /// deleted if it was ours, so that the name is free sooner).
    pub fn release(mut self) -> Result<()> {
        if !self.taken_here() {
            self.finished = true;
            return Err(self.not_taken_here());
        }
        self.finish()
    }

    fn stop_keep_alive(&mut self) {
        if self.keep_alive {
            self.keep_alive = false;
            self.state.stop.store(true, Ordering::SeqCst);
            self.state.wake.notify_one();
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        self.stop_keep_alive();
        self.let_go();
        let expired = Instant::now() >= self.state.deadline();
        let s = &self.table.shared;
        let (keys, name, token) = (s.keys.clone(), self.key_name.clone(), self.token);
        let conn = s.conn()?;
        let (mut c, spares, spare) = (conn.client(), conn.spares(), self.state.spare());
        let ended = s.run(token, async move {
            let keep = Some((&*spares, spare));
            recipe::end(&mut c, &keys, &name, End::Released(token), keep).await
        });
        match ended {
            Ok(()) if expired => Err(Error::Lost { token, reason: LostReason::Expired }),
            other => other,
        }
    }

    /// Turns this lease into a detached one: not released on drop, renewable and
    /// releasable by anyone with its name and token ([`EtcdTable::renew`],
    /// [`EtcdTable::release`]) until its deadline.
    pub fn detach(mut self) -> Result<DetachedLease> {
        if !self.taken_here() {
            self.finished = true;
            return Err(self.not_taken_here());
        }
        self.finished = true;
        self.stop_keep_alive();
        self.let_go();
        let s = &self.table.shared;
        let record = HolderRecord { detached: true, ..self.state.record() };
        let (keys, name, token) = (s.keys.clone(), self.key_name.clone(), self.token);
        let id = self.state.lease_id.load(Ordering::Relaxed);
        let mut c = s.conn()?.client();
        s.run(
            token,
            async move { recipe::rewrite(&mut c, &keys, &name, token, id, &record).await },
        )?;
        Ok(DetachedLease { token, deadline: self.state.deadline() })
    }

    /// Starts renewing in the background, to `ttl` every `ttl / 3`, and watching the
    /// key, so that a revocation or takeover is noticed at once; learn of a loss with
    /// [`EtcdLease::lost`] or [`EtcdLease::wait_lost`]. If the cluster stops answering,
    /// the loss is reported at this holder's deadline at the latest.
    pub fn keep_alive(&mut self, ttl: Duration) -> Result<()> {
        let ttl_s = ttl_secs(ttl)?;
        if !self.taken_here() {
            return Err(self.not_taken_here());
        }
        self.stop_keep_alive();
        let fresh = Arc::new(State {
            base: self.state.base,
            deadline_ns: AtomicU64::new(self.state.deadline_ns.load(Ordering::Acquire)),
            refreshed_ns: AtomicU64::new(self.state.refreshed_ns.load(Ordering::Acquire)),
            lease_id: AtomicI64::new(self.state.lease_id.load(Ordering::Relaxed)),
            granted_s: AtomicI64::new(self.state.granted_s.load(Ordering::Relaxed)),
            asked_s: AtomicI64::new(self.state.asked_s.load(Ordering::Relaxed)),
            record: self.state.record.clone(),
            is_lost: AtomicBool::new(self.state.is_lost.load(Ordering::SeqCst)),
            requested: AtomicBool::new(self.state.requested.load(Ordering::SeqCst)),
            lost: Mutex::new(*self.state.lost.lock().unwrap_or_else(|p| p.into_inner())),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.state = fresh;
        self.table.shared.conn()?.holdings().hold(&self.key_name, self.token, &self.state);
        let (table, name, token, state) =
            (self.table.clone(), self.key_name.clone(), self.token, Arc::clone(&self.state));
        self.table.shared.conn()?.spawn(keep_alive_task(table, name, token, ttl_s, state));
        self.keep_alive = true;
        Ok(())
    }

    /// Why the lease was lost, if the keep-alive has noticed (always `None` without a
    /// keep-alive, and in a forked child).
    pub fn lost(&self) -> Option<LostReason> {
        if !self.taken_here() || !self.state.is_lost.load(Ordering::SeqCst) {
            return None;
        }
        *self.state.lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until the keep-alive notices the lease is lost (returning why), or until
    /// `timeout` passes (`None`). Without a keep-alive, returns `None` at once.
    pub fn wait_lost(&self, timeout: Option<Duration>) -> Option<LostReason> {
        match self.wait_until(timeout, false)? {
            Notice::Lost(reason) => Some(reason),
            Notice::ReleaseRequested => None,
        }
    }

    /// Whether someone asked this holder to release the grant
    /// ([`EtcdTable::request_release`]) while it is valid. Learnt at once by a
    /// keep-alive (it watches the name's `asks/` key), else at the next renewal, as a
    /// revocation is; `false` once the lease is lost.
    pub fn release_requested(&self) -> bool {
        self.state.requested.load(Ordering::SeqCst) && self.is_valid()
    }

    /// Blocks until the keep-alive notices that the lease is lost or that its release
    /// was requested (a loss wins when both are true), or until `timeout` passes
    /// (`None`). Without a keep-alive, or in a forked child, returns at once what is
    /// known. Level-triggered, as [`crate::Lease::wait_notice`].
    pub fn wait_notice(&self, timeout: Option<Duration>) -> Option<Notice> {
        self.wait_until(timeout, true)
    }

    fn wait_until(&self, timeout: Option<Duration>, requests: bool) -> Option<Notice> {
        let known = || match self.lost() {
            Some(reason) => Some(Notice::Lost(reason)),
            None if requests && self.release_requested() => Some(Notice::ReleaseRequested),
            None => None,
        };
        if !self.taken_here() || !self.keep_alive {
            return known();
        }
        let until = timeout.and_then(|t| Instant::now().checked_add(t)); // too far: forever
        let mut guard = self.state.lost.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(reason) = *guard {
                return Some(Notice::Lost(reason));
            }
            if requests && self.state.requested.load(Ordering::SeqCst) {
                return Some(Notice::ReleaseRequested);
            }
            guard = match until {
                None => self.state.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
                Some(u) => {
                    let left = u.checked_duration_since(Instant::now())?;
                    self.state
                        .changed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        if self.finished || !self.taken_here() {
            return; // a forked child's copy: the parent's lease, left alone
        }
        let _ = self.finish();
    }
}

/// One renewal of `token` for `ttl_s`, bounded by the location's timeout and by this
/// holder's deadline, past which the grant is reported lost.
async fn renew_future(
    table: EtcdTable,
    name: String,
    token: u64,
    ttl_s: i64,
    state: Arc<State>,
) -> std::result::Result<(), Fail> {
    let expired = || Fail::Lost(LostReason::Expired);
    let left = state.deadline().saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(expired());
    }
    let s = &table.shared;
    let limit = s.location.timeout.min(left);
    let mut c = s.conn.get()?.client();
    let record = state.record();
    let id = state.lease_id.load(Ordering::Relaxed);
    let result = if record.same_ttl(ttl_s) {
        bounded(limit, recipe::renew_same(&mut c, &s.keys, &name, token, id, &record)).await.map(
            |renewed| {
                // (Unless a renewal with another TTL moved the grant meanwhile: this
                // kept alive a lease the grant is no longer on.)
                if state.lease_id.load(Ordering::Relaxed) == id {
                    state.extend(renewed.sent, record.ttl_s);
                }
                if renewed.asked {
                    state.ask();
                }
            },
        )
    } else {
        bounded(limit, recipe::renew_relet(&mut c, &s.keys, &name, token, id, ttl_s, &record))
            .await
            .map(|(lease, asked)| {
                state.asked_s.store(ttl_s, Ordering::Relaxed);
                state.moved(lease.id, lease.sent, lease.ttl_s);
                if asked {
                    state.ask();
                }
            })
    };
    match result {
        Err(Fail::Net(_)) if Instant::now() >= state.deadline() => Err(expired()),
        other => other,
    }
}

/// Renews at a third of the TTL and watches the key (and the name's `asks/` key, on the
/// same watch stream) until stopped or lost.
async fn keep_alive_task(
    table: EtcdTable,
    name: String,
    token: u64,
    ttl_s: i64,
    state: Arc<State>,
) {
    use etcd_client::{EventType, WatchOptions};
    let interval = Duration::from_millis((ttl_s.max(1) as u64) * 1000 / 3);
    let retry = Duration::from_millis(200).min(interval);
    let key = table.shared.keys.lease(&name);
    let asks = table.shared.keys.asks(&name);
    // At the same TTL, the first renewal comes a third of it after the last refresh
    // (a fresh grant costs no renewal at once); another TTL is taken at once.
    let refreshed = state.base + Duration::from_nanos(state.refreshed_ns.load(Ordering::Acquire));
    let mut next = tokio::time::Instant::now();
    if state.record().same_ttl(ttl_s) {
        next = next.max(tokio::time::Instant::from_std(refreshed + interval));
    }
    let mut watch: Option<etcd_client::WatchStream> = None;
    let mut watch_again = tokio::time::Instant::now();
    let mut from = token as i64 + 1;
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = tokio::time::Instant::now();
        let deadline = tokio::time::Instant::from_std(state.deadline());
        if now >= deadline {
            return state.report(LostReason::Expired);
        }
        if watch.is_none() && now >= watch_again {
            let options = WatchOptions::new().with_start_revision(from);
            let mut c = match table.shared.conn.get() {
                Ok(conn) => conn.client(),
                Err(_) => return,
            };
            let limit = table.shared.location.timeout.min(deadline - now);
            let asks_from = WatchOptions::new().with_start_revision(from);
            watch = bounded(limit, async {
                let mut w = c.watch(key.clone(), Some(options)).await?;
                w.watch(asks.clone(), Some(asks_from)).await?;
                Ok(w)
            })
            .await
            .ok();
            watch_again = tokio::time::Instant::now() + retry;
        }
        let message = async {
            match watch.as_mut() {
                Some(w) => w.message().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep_until(next.min(deadline)) => {
                if tokio::time::Instant::now() >= deadline {
                    return state.report(LostReason::Expired);
                }
                let sent = tokio::time::Instant::now();
                match renew_future(table.clone(), name.clone(), token, ttl_s, Arc::clone(&state)).await {
                    Ok(()) => next = sent + interval,
                    Err(Fail::Lost(reason)) => return state.report(reason),
                    // Unreachable, or refused for now: try again soon, until the deadline.
                    Err(_) => next = tokio::time::Instant::now() + retry,
                }
            }
            msg = message => match msg {
                Ok(Some(resp)) if resp.canceled() => {
                    // Compacted past our revision: watch from what is left; the
                    // renewals' check covers the gap.
                    from = from.max(resp.compact_revision());
                    watch = None;
                }
                Ok(Some(resp)) => {
                    let mut gone = false;
                    for e in resp.events() {
                        let kv = e.kv();
                        if kv.is_some_and(|kv| kv.key() == asks.as_slice()) {
                            // Put after the grant was created: a request to release it.
                            if kv.is_some_and(|kv| kv.mod_revision() as u64 > token) {
                                state.ask();
                            }
                            continue;
                        }
                        // On the lease key (or unknown: then assumed so, and re-read).
                        gone |= match e.event_type() {
                            EventType::Delete => true,
                            EventType::Put => kv.is_some_and(|kv| kv.create_revision() as u64 != token),
                        };
                    }
                    if gone {
                        let mut c = match table.shared.conn.get() {
                            Ok(conn) => conn.client(),
                            Err(_) => return,
                        };
                        let keys = &table.shared.keys;
                        let limit = table.shared.location.timeout;
                        let reason = match bounded(limit, recipe::read_grant(&mut c, keys, &name, token)).await {
                            Err(Fail::Lost(reason)) => reason,
                            // The key was deleted: whatever the reads say, the grant is over.
                            _ => LostReason::Revoked,
                        };
                        return state.report(reason);
                    }
                }
                _ => watch = None,
            },
        }
    }
}
