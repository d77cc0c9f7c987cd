//! Permits and shared leases on etcd: each grant is a *seat*, a key created only if
//! absent as an exclusive grant's is, under a key name of its own (`NAME\0p<N>.<i>`,
//! `NAME\0s.<i>`; see [`super::keys`]). A seat is renewed, released, revoked, watched
//! and asked to release exactly as an exclusive name's key (`super::lease`, `recipe`),
//! so this file is only about which seat to create and when to give up or wait.
//!
//! # The kind of a name
//!
//! There is no kind record: the kind of a name is what its live keys say. Every grant's
//! transaction (`recipe::grant_txn`) carries the compares that keep the kinds apart, so
//! kinds are agreed by every client in the same transaction that grants:
//!
//! | grant | compares (all in the grant's one `Txn`) | refused by, and the answer |
//! |---|---|---|
//! | exclusive `lease/NAME` | `lease/NAME` absent; no key in `lease/NAME\0p…` (permits) | a holder: `Held`; a permit: `WrongKind(Permits(N))`. Live shared seats do not refuse it: the grant is made and *drains* them (below) |
//! | permit `i` of `N` | the seat absent; `lease/NAME` absent; no seat in `NAME\0` but `NAME\0p<N>.…` | an exclusive holder: `WrongKind(Exclusive)`; another kind's seat: `WrongKind`; the seat taken: try a free one, else wait |
//! | shared seat `i` | the seat absent; `lease/NAME` absent; no permit seat | an exclusive holder (or one draining): wait for it; a permit: `WrongKind`; the seat taken: as for permits |
//!
//! So the kind lives as long as a grant of it: a name with permits whose permits have
//! all ended (released, revoked, expired) is free for any kind, where shared memory
//! keeps the kind until the name's slot is reused.
//!
//! # States and transitions of one name
//!
//! | state | keys under `lease/` | left by (actor) |
//! |---|---|---|
//! | free | none | any grant (acquirer) |
//! | exclusive | `NAME` | release, revocation (anyone), expiry (the server) |
//! | permits(N) | 1..=N of `NAME\0p<N>.<i>` | the last seat's end: free |
//! | shared | 1..=64 of `NAME\0s.<i>` | an exclusive grant: draining; the last seat's end: free |
//! | draining | `NAME` and shared seats | the last shared seat's end: exclusive (the acquirer returns its grant); the acquirer giving up (timeout, interrupt, no wait): its release, back to shared |
//!
//! While draining no shared seat can be created (`lease/NAME` refuses it), so the
//! exclusive acquirer, which watches the deletions of the seats it saw in its own grant
//! transaction (from that transaction's revision: none can be missed), is never starved
//! by a stream of shared acquirers. It keeps its grant alive meanwhile (renewing at a
//! third of the TTL) and returns it only once every seat it saw is deleted: a shared
//! holder's validity ends before the server deletes its key (see the holder's deadline
//! in `super`), so a shared and an exclusive grant are never *returned* for overlapping
//! times.
//!
//! # Round trips
//!
//! | operation | round trips |
//! |---|---|
//! | permit or shared grant, a free seat guessed | 1 `Txn` on a spare etcd lease (else `LeaseGrant` first: 2) |
//! | the guessed seat taken | the refusal reads every seat of the name: 1 more `Txn` on a seat seen free |
//! | every seat taken | the refusal's reads, then a watch on the name's seats `[lease/NAME\0, lease/NAME\x01)` (deletes only) from its revision; every deletion wakes every waiter, who tries again |
//! | a shared grant while an exclusive holds (or drains) | a watch on `lease/NAME` (deletes only) from the refusal's revision |
//! | exclusive grant of a shared name | 1 `Txn` (which also reads the shared seats), then the watch until they are gone |
//! | renew, release, keep-alive of a seat | as an exclusive grant's |
//! | by-token renew/release/revoke/request of a seat | 1 more read, to find the seat of the token |
//! | `get` | 1 read of the name and its seats, and a `LeaseTimeToLive` per live grant (in parallel) |
//!
//! A seat's token is its key's create revision, so the tokens of a name's grants are
//! distinct and grow across seats, kinds and the whole cluster.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keys::{HolderRecord, Keys, SeatKind};
use super::recipe::{self, Claim, Deletions, Grant};
use super::{election::CampaignStop, ttl_secs, EtcdLease, EtcdTable, Fail};
use crate::error::{Error, Result};
use crate::table::{AcquireOptions, Patience};

/// A number that differs between callers (not a secret): the clock, the pid and a
/// per-process counter, mixed.
pub(crate) fn random_u64() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x =
        nanos ^ (u64::from(crate::identity::pid()) << 32) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A seat index to try first: spread over the seats, so that acquirers that start
/// together rarely pick the same one.
fn guess(seats: u32) -> u32 {
    (random_u64() % u64::from(seats.max(1))) as u32
}

impl EtcdTable {
    /// A grant of a permit or a shared seat of `name` (see the module docs).
    pub(crate) fn acquire_seat(
        &self,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
        kind: SeatKind,
        behind_queue: bool,
        stop: Option<&Arc<CampaignStop>>,
    ) -> Result<EtcdLease> {
        let ttl_s = ttl_secs(ttl)?;
        let s = &self.shared;
        let (host, label) = (s.host, options.label);
        let make = move |granted| HolderRecord::me(host, label, false, ttl_s, granted);
        let patience = Patience::of(options);
        let mut pick = guess(kind.seats());
        loop {
            let claim = Claim { behind_queue, ..Claim::seat(name, kind, pick) };
            let (keys, c, spares) = (s.keys.clone(), s.conn()?.client(), s.conn()?.spares());
            let cl = claim.clone();
            let attempt = s.run(0, async move {
                let mut c = c;
                recipe::grant(&mut c, &spares, &keys, &cl, ttl_s, make).await
            })?;
            // What to watch: the exclusive holder's key, or (every seat held) the seats.
            let mut watch = (s.keys.lease(name), Vec::new());
            let (token, lease_id, holder, revision) = match attempt {
                Grant::Won { token, lease, record, .. } => {
                    return Ok(EtcdLease::new(
                        self.clone(),
                        name,
                        &claim.key_name,
                        token,
                        ttl_s,
                        lease,
                        record,
                    ));
                }
                Grant::Wrong(recorded) => {
                    return Err(Error::WrongKind {
                        name: name.to_owned(),
                        recorded,
                        requested: kind.lease_kind(),
                    })
                }
                Grant::Held { token, lease, holder, revision } => (token, lease, holder, revision),
                // (Only a fair acquirer's try, which does not wait.)
                Grant::Queued { first } => {
                    (first.create, 0, HolderRecord::decode(&first.value), first.modified)
                }
                Grant::Seats { taken, revision } => {
                    let held: HashSet<u32> = taken
                        .iter()
                        .filter_map(|kv| recipe::seat_kind(&s.keys, name, kv).map(|(_, i)| i))
                        .collect();
                    // Refused, yet the seat tried reads free and no other kind is in the
                    // way: a key among the name's seats that is no seat (untrusted), which
                    // would refuse every try alike.
                    if !held.contains(&pick) {
                        let odd = format!("a key among the seats of {name:?} that is no seat");
                        return Err(Fail::Odd(odd).into_error(&s.text, 0));
                    }
                    let n = kind.seats();
                    if let Some(free) = (0..n).map(|k| (pick + k) % n).find(|i| !held.contains(i)) {
                        pick = free;
                        continue;
                    }
                    // Every seat held: the oldest grant stands for them.
                    watch = Keys::seats_in(&s.keys.lease_dir(), name);
                    let Some(oldest) = taken.iter().min_by_key(|kv| kv.create) else {
                        return Err(Fail::Odd("every seat held, and none read".into())
                            .into_error(&s.text, 0));
                    };
                    (oldest.create, oldest.lease, HolderRecord::decode(&oldest.value), revision)
                }
            };
            let holder_info = holder.as_ref().map(|h| h.holder());
            if !patience.waits() {
                let remaining = self.seconds_left(lease_id)?;
                return Err(Error::Held { token, remaining, holder: holder_info });
            }
            let left = patience.left()?;
            if left.is_zero() || stop.is_some_and(|i| i.is_fired()) {
                return Err(Error::TimedOut {
                    waited: patience.waited(),
                    token,
                    holder: holder_info,
                });
            }
            self.sleep_until_deleted(watch, revision, left, stop)?;
        }
    }

    /// The key name of the seat of `name` that had the grant `token` (see
    /// [`recipe::seat_of`]).
    pub(crate) fn seat_of(&self, name: &str, token: u64) -> Result<Option<String>> {
        let s = &self.shared;
        let (keys, n, mut c) = (s.keys.clone(), name.to_owned(), s.conn()?.client());
        s.run(token, async move { recipe::seat_of(&mut c, &keys, &n, token).await })
    }

    /// Time left of an etcd lease, in whole seconds (zero once gone).
    pub(crate) fn seconds_left(&self, id: i64) -> Result<Duration> {
        let s = &self.shared;
        let mut c = s.conn()?.client();
        let left = s.run(0, async move { recipe::time_left(&mut c, id).await })?;
        Ok(Duration::from_secs(left.unwrap_or(0).max(0) as u64))
    }

    /// Sleeps until a key in `range` is deleted after `revision` (`true`), `left`
    /// passes (at most), or `stop` fires (`false`). A broken watch (a member went away)
    /// is slept off for a moment, so that an unreachable cluster is not hammered, and
    /// a compacted history: `true`, the caller looks again.
    pub(crate) fn sleep_until_deleted(
        &self,
        range: (Vec<u8>, Vec<u8>),
        revision: u64,
        left: Duration,
        stop: Option<&Arc<CampaignStop>>,
    ) -> Result<bool> {
        let s = &self.shared;
        // Too far to say (`Duration::MAX` among them): forever.
        let until = tokio::time::Instant::now().checked_add(left);
        let mut c = s.conn()?.client();
        let stop = stop.cloned();
        // Not bounded by the request timeout: the watch waits as long as asked.
        let woke = s.conn()?.run(async move {
            let deleted = recipe::deletions(&mut c, range, revision, until);
            match stop {
                Some(i) => tokio::select! {
                    r = deleted => r,
                    () = i.fired() => Ok(Deletions::None),
                },
                None => deleted.await,
            }
        });
        match woke {
            Ok(Deletions::None) => Ok(false),
            Ok(_) => Ok(true),
            Err(Fail::Net(_)) => {
                std::thread::sleep(Duration::from_millis(100));
                Ok(true)
            }
            Err(f) => Err(f.into_error(&s.text, 0)),
        }
    }

    /// Waits, holding the exclusive grant `lease` of a shared name, until every shared
    /// seat in `pending` (read in the grant's own transaction, at revision `token`) is
    /// deleted, renewing `lease` at a third of its TTL. `Ok(None)`: the grant was lost
    /// meanwhile (revoked, expired), and the caller starts over. Giving up (timeout,
    /// interrupt, no wait) releases the grant, by dropping it.
    pub(crate) fn drain(
        &self,
        lease: EtcdLease,
        pending: Vec<Vec<u8>>,
        ttl: Duration,
        patience: &Patience<'_>,
        stop: Option<&Arc<CampaignStop>>,
    ) -> Result<Option<EtcdLease>> {
        let s = &self.shared;
        let own = s.keys.lease(lease.name());
        let range = s.keys.name_and_seats(lease.name());
        let mut pending: HashSet<Vec<u8>> = pending.into_iter().collect();
        let mut from = lease.token();
        let third = lease.ttl() / 3;
        let mut renew_at = Instant::now() + third;
        while !pending.is_empty() {
            let left = match patience.left() {
                Ok(left) if !left.is_zero() && !stop.is_some_and(|i| i.is_fired()) => left,
                Ok(_) if patience.waits() => {
                    return Err(self.drain_refusal(&pending, patience, true))
                }
                Ok(_) => return Err(self.drain_refusal(&pending, patience, false)),
                Err(e) => return Err(e),
            };
            let until = (Instant::now() + left.min(Duration::from_secs(3600))).min(renew_at);
            let tokio_until = tokio::time::Instant::from_std(until);
            let (mut c, r) = (s.conn()?.client(), range.clone());
            let seen = s
                .conn()?
                .run(async move { recipe::deletions(&mut c, r, from, Some(tokio_until)).await });
            match seen {
                Ok(Deletions::Keys(keys, last)) => {
                    from = from.max(last);
                    if keys.contains(&own) {
                        return Ok(None);
                    }
                    for k in keys {
                        pending.remove(&k);
                    }
                }
                Ok(Deletions::None) => {}
                Ok(Deletions::Compacted) => {
                    // Read again what is left: shared seats can only have gone since.
                    let (mut c, r) = (s.conn()?.client(), range.clone());
                    let (live, at) = s.run(0, async move { recipe::live_in(&mut c, r).await })?;
                    if !live.iter().any(|kv| kv.key == own && kv.create == lease.token()) {
                        return Ok(None);
                    }
                    let now: HashSet<Vec<u8>> = live.into_iter().map(|kv| kv.key).collect();
                    pending.retain(|k| now.contains(k));
                    from = at;
                }
                Err(Fail::Net(_)) => std::thread::sleep(Duration::from_millis(100)),
                Err(f) => return Err(f.into_error(&s.text, 0)),
            }
            if Instant::now() >= renew_at {
                match lease.renew(ttl) {
                    Ok(()) => renew_at = Instant::now() + third,
                    Err(Error::Lost { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Some(lease))
    }

    /// Why an exclusive acquirer gave up draining: a shared holder is still there.
    fn drain_refusal(
        &self,
        pending: &HashSet<Vec<u8>>,
        patience: &Patience<'_>,
        waited: bool,
    ) -> Error {
        let s = &self.shared;
        let read = pending.iter().min().cloned().and_then(|key| {
            let mut c = s.conn().ok()?.client();
            s.run(0, async move {
                let resp = c.get(key, None).await?;
                Ok(resp.kvs().first().map(|kv| {
                    (
                        kv.create_revision().max(0) as u64,
                        kv.lease(),
                        HolderRecord::decode(kv.value()),
                    )
                }))
            })
            .ok()
            .flatten()
        });
        let (token, id, record) = read.unwrap_or((0, 0, None));
        let holder = record.map(|r| r.holder());
        if waited {
            Error::TimedOut { waited: patience.waited(), token, holder }
        } else {
            let remaining = self.seconds_left(id).unwrap_or_default();
            Error::Held { token, remaining, holder }
        }
    }
}
