//! Fair acquisition on etcd: a queue of *places* ordered by create revision, each
//! waiter watching only the place just ahead of it — the recipe of etcd's
//! `concurrency.Mutex` (`waitDeletes`), with the lease itself still taken by the kind's
//! own grant (`super::kinds`, `recipe::grant`), so that every grant keeps its own TTL
//! and token, and unfair acquirers keep their speed.
//!
//! # The queue
//!
//! A place is `queue/NAME\0<id>` (see [`super::keys`]): the waiter's holder record, on
//! an etcd lease of its own of [`PLACE_TTL`] that a task on the runtime thread keeps
//! alive (at a third of it) while the waiter waits — so a waiting thread that is slow,
//! or stuck in its interrupt check, keeps its place. Its *ticket* is its create
//! revision: places are served in ticket order.
//!
//! | step | actor | requests |
//! |---|---|---|
//! | try | the fair acquirer | the kind's grant `Txn`, with one more compare: no place in `queue/NAME\0…` (refused: `Held`, also when the name is free but someone waits in line) — 1 round trip, as an unfair grant |
//! | queue | a fair acquirer that waits | `LeaseGrant` (the place's lease), then `Txn{ put place; range queue }`: its ticket and the places ahead (2) |
//! | wait in line | the waiter | a watch on the deletion of the nearest place ahead, from the queue's read; when it goes, the queue read again (1) and the next nearest watched: one watcher per place, no herd |
//! | first in line | the waiter | the kind's acquisition (grant, refusal, watch, as unfair), for what is left of its time: 1 round trip if the name is free, else a refusal (1), a watch, the grant (1) |
//! | granted, gives up, interrupted | the waiter | `LeaseRevoke` of its place's lease (1): the place goes, the next waiter's watch fires |
//! | dies, is stopped | the server | the place's lease expires after [`PLACE_TTL`]: the next waiter's watch fires |
//! | its place expired (stopped past it) | the waiter | it learns from its keep-alive, and queues again at the back |
//!
//! Against etcd's `Mutex.Lock` (a session's lease, `Txn{ put waiter key; get first }`,
//! then a `Range` and a watch per older waiter, the lock being the first key): the same
//! queue and watches, plus the grant itself (1 round trip on a spare etcd lease), which
//! gives each grant its own TTL and token and lets unfair acquirers in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::election::CampaignStop;
use super::keys::HolderRecord;
use super::recipe::{self, Kv};
use super::{holder_deadline, EtcdLease, EtcdTable, Fail};
use crate::error::{Error, Result};
use crate::table::{AcquireOptions, Patience};

/// The TTL of a place in a fair queue: how long a dead or stopped waiter can hold up
/// the waiters behind it (etcd grants at least its minimum TTL).
pub const PLACE_TTL: Duration = Duration::from_secs(2);

/// A waiter's place, kept alive until dropped (which removes it).
struct Place {
    table: EtcdTable,
    lease: i64,
    ticket: u64,
    /// The places ahead when the place was taken, and the revision of that read.
    ahead: Vec<Kv>,
    revision: u64,
    /// Set once the place is known lost (its lease expired).
    lost: Arc<AtomicBool>,
    /// Fired when the place is lost or the caller's stop fires: ends the waits.
    wake: Arc<CampaignStop>,
    /// Fired on drop: ends the keep-alive task.
    done: Arc<CampaignStop>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.done.fire();
        let s = &self.table.shared;
        let id = self.lease;
        if let Ok(conn) = s.conn() {
            let mut c = conn.client();
            // Removed now, so that the waiter behind moves up at once (else it goes when
            // its lease expires).
            let _ = s.run(0, async move { Ok(c.lease_revoke(id).await.map(|_| ())?) });
        }
    }
}

impl EtcdTable {
    /// A fair acquisition (see the module docs).
    pub(crate) fn acquire_fair(
        &self,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
        stop: Option<&Arc<CampaignStop>>,
    ) -> Result<EtcdLease> {
        let unfair = AcquireOptions { fair: false, ..options.clone() };
        // One try that does not pass the queue.
        let try_only = AcquireOptions { wait: None, ..unfair.clone() };
        match self.acquire_kind(name, ttl, &try_only, true, None, None) {
            Err(Error::Held { .. }) if options.wait.is_some() => {}
            other => return other,
        }
        let patience = Patience::of(options);
        loop {
            let place = self.take_place(name, options, stop)?;
            let (mut ahead, mut revision) = (place.ahead.clone(), place.revision);
            // Wait for every place ahead to go, watching the nearest one.
            while let Some(next) = ahead.iter().max_by_key(|kv| kv.create) {
                let left = patience.left()?;
                if left.is_zero() || place.wake.is_fired() {
                    let holder = HolderRecord::decode(&next.value).map(|r| r.holder());
                    if place.lost.load(Ordering::SeqCst) && !stop.is_some_and(|i| i.is_fired()) {
                        break;
                    }
                    return Err(Error::TimedOut {
                        waited: patience.waited(),
                        token: next.create,
                        holder,
                    });
                }
                let key = (next.key.clone(), Vec::new());
                if self.sleep_until_deleted(key, revision, left, Some(&place.wake))? {
                    let s = &self.shared;
                    let (keys, n, mut c) = (s.keys.clone(), name.to_owned(), s.conn()?.client());
                    let ticket = place.ticket;
                    (ahead, revision) =
                        s.run(0, async move { recipe::ahead_of(&mut c, &keys, &n, ticket).await })?;
                }
            }
            if place.lost.load(Ordering::SeqCst) {
                continue; // stopped past the place's TTL: to the back of the queue
            }
            // First in line: the kind's own acquisition, for what is left of the wait.
            let nested = patience.nested(&unfair);
            match self.acquire_kind(name, ttl, &nested, false, Some(&place.wake), None) {
                Err(Error::TimedOut { .. })
                    if place.lost.load(Ordering::SeqCst) && !stop.is_some_and(|i| i.is_fired()) => {
                }
                other => return other,
            }
        }
    }

    /// Takes a place in `name`'s queue and starts keeping it alive.
    fn take_place(
        &self,
        name: &str,
        options: &AcquireOptions,
        stop: Option<&Arc<CampaignStop>>,
    ) -> Result<Place> {
        let s = &self.shared;
        let ttl_s = super::ttl_secs(PLACE_TTL)?;
        let (host, label) = (s.host, options.label);
        let make = move |granted| HolderRecord::me(host, label, false, ttl_s, granted);
        let id = super::kinds::random_u64();
        let (keys, n, mut c) = (s.keys.clone(), name.to_owned(), s.conn()?.client());
        let (lease, ticket, ahead) =
            s.run(0, async move { recipe::enqueue(&mut c, &keys, &n, id, ttl_s, make).await })?;
        let (lost, wake, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(CampaignStop::default()),
            Arc::new(CampaignStop::default()),
        );
        let mut c = s.conn()?.client();
        let (l, w, d, stop) =
            (Arc::clone(&lost), Arc::clone(&wake), Arc::clone(&done), stop.cloned());
        s.conn()?.spawn(async move {
            let interval = Duration::from_millis(lease.ttl_s.max(1) as u64 * 1000 / 3);
            let mut deadline = holder_deadline(lease.sent, lease.ttl_s);
            let mut next = tokio::time::Instant::now() + interval;
            loop {
                let caller = async {
                    match &stop {
                        Some(i) => i.fired().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = d.fired() => return,
                    () = caller => return w.fire(),
                    () = tokio::time::sleep_until(next) => {}
                }
                let sent = Instant::now();
                let kept =
                    super::bounded(interval, recipe::keep_alive_once(&mut c, lease.id)).await;
                match kept {
                    Ok(()) => {
                        deadline = holder_deadline(sent, lease.ttl_s);
                        next = tokio::time::Instant::now() + interval;
                    }
                    Err(Fail::Lost(_)) => break,
                    Err(_) if Instant::now() >= deadline => break,
                    Err(_) => next = tokio::time::Instant::now() + Duration::from_millis(200),
                }
            }
            l.store(true, Ordering::SeqCst);
            w.fire();
        });
        Ok(Place {
            table: self.clone(),
            lease: lease.id,
            ticket,
            revision: ticket,
            ahead,
            lost,
            wake,
            done,
        })
    }
}
