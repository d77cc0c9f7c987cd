//! The etcd backend (feature `etcd`): the same leases on an etcd cluster, for processes
//! spread over several hosts. A table is a key prefix on the cluster, named by a
//! location `etcd://HOST:PORT[,HOST:PORT…]/PREFIX` (`etcds://` for TLS; see
//! [`EtcdLocation`]).
//!
//! ```no_run
//! use shmlease::etcd::{EtcdLocation, EtcdTable};
//! use shmlease::TableOptions;
//! use std::time::Duration;
//!
//! let location = EtcdLocation::parse("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/jobs")?;
//! let table = EtcdTable::open_or_create(&location, &TableOptions::new())?;
//! let mut lease = table.acquire("nightly-report", Duration::from_secs(10), Some(Duration::from_secs(30)))?;
//! lease.keep_alive(Duration::from_secs(10))?;
//! let token = lease.token(); // the key's create revision: grows across the whole cluster
//! // ... work, checking lease.is_valid() / lease.lost() ...
//! lease.release()?;
//! # let _ = token;
//! # Ok::<(), shmlease::Error>(())
//! ```
//!
//! # Semantics, against the shared-memory backend
//!
//! | | shared memory | etcd |
//! |---|---|---|
//! | grant | one CAS on the slot | one transaction creating `lease/NAME` only if absent, attached to a spare etcd lease that an earlier release left (1 round trip); without a spare, `LeaseGrant` first (2) |
//! | fencing token | grows per name (a clock reading) | the key's create revision: grows per name *and* across the cluster |
//! | TTL | any, 1 µs ..= 365 days, exact | whole seconds, rounded up, at least the server's minimum (about 2 s with default settings); [`EtcdLease::ttl`] reports the TTL granted |
//! | holder's deadline | the slot's deadline, one clock | counted from when the etcd lease was granted or last kept alive (the request's *sending*), less [`DRIFT_PER_MILLE`] ‰ of the TTL: [`EtcdLease::is_valid`] turns false before the server can expire the lease on any clock whose rate is within 1% of the server's. On a spare lease, that refresh is at most a tenth of the TTL old, so a fresh grant's `remaining()` is between 0.89 and 0.99 of the TTL |
//! | renew | CAS on the deadline | `LeaseKeepAlive` ∥ a transaction checking the key still carries the token (1 round trip); another TTL moves the key to a new etcd lease (2) |
//! | release | CAS | a transaction deleting the key if it carries the token (1); the holder keeps the etcd lease as a spare (others' releases revoke it in the background) |
//! | revoke | anyone, holder sees it at once in `is_valid` | anyone; the holder learns at its next renewal, at once with a keep-alive (it watches the key); from the holder's own process, before the request is sent |
//! | blocking acquire | futex, woken on release | watch on the key (deletes only), no polling |
//! | dead holder | reclaimed at once when provably dead (pidfd) | **TTL only**: no host can tell whether a process on another host is dead |
//! | cluster unreachable, no quorum | — | requests fail with [`Error::Unavailable`] after the location's `timeout`; a held lease stays valid until its own deadline and is lost then |
//! | by-token `renew`/`release` | detached leases, any process on the host | detached leases, any process on any host |
//! | holder | pid, identity, label | the same, and its host |
//! | transitions | per slot binding | every grant of the name since the table was created |
//! | capacity | slots | recorded in the descriptor, not enforced: etcd has no slots (it keeps three small keys per name ever used) |
//! | mode, owner checks | file mode, owner | not applicable: use etcd's users and roles (`user=`), TLS client certificates |
//! | counters (`info`) | kept in the header | `grants` only (the sum of transitions); the others read 0 |
//! | request to release | a bit in the grant word | a transaction putting `asks/NAME` if the grant is live (1 round trip); the holder learns at once with a keep-alive (it watches that key), else at its next renewal |
//! | permits, shared | head and seat slots | a seat key per grant (`lease/NAME\0p<N>.<i>`, `lease/NAME\0s.<i>`), created by the grant's one transaction; token = its create revision (see `kinds`) |
//! | kind of a name | recorded until the slot is reused | **what the live keys say**, checked by every grant's compares: `WrongKind` while a grant of another kind is live, any kind once none is |
//! | exclusive grant of a shared name | takes the head, waits for shared holders to leave | the same: made over the live shared seats, which keep new ones out, and returned once their keys are gone |
//! | fair | place slots (2 s TTL), ticket counter | places `queue/NAME\0<id>` on etcd leases of their own, ticket = create revision, each waiter watching the one ahead (see `fair`); a dead or stopped waiter ahead is passed over at its place's TTL only; no 127-waiter limit |
//! | elections on a shared name | refused (`WrongKind`) | not refused: the campaign drains the shared holders and leads |
//! | elections | the lease on the name; observe sleeps on the slot's futex | the same lease; term = create revision; campaign waits on a watch; observe follows one watch on the key, every change seen; a dead leader leads until its TTL runs out |
//!
//! # Fork
//!
//! A child forked after `open` may use the inherited [`EtcdTable`] for everything: its
//! first request connects afresh (the parent's connection is left untouched; see
//! `conn`). An [`EtcdLease`] it inherited stays the parent's, as in shared memory: the
//! child may read it, but `renew`, `release`, `detach` and `keep_alive` fail with
//! [`Error::BoundToProcess`], and dropping it does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, LostReason, Result};
use crate::info::{GrantInfo, Host, LeaseInfo, LeaseKind, LeaseState, TableInfo};
use crate::options::TableOptions;
use crate::table::AcquireOptions;

mod conn;
mod election;
mod fair;
mod keys;
mod kinds;
mod lease;
mod location;
mod recipe;

pub(crate) use election::{CampaignStop, EtcdObserver};
pub use lease::EtcdLease;
pub use location::EtcdLocation;

use conn::{Conn, ConnSlot};
use keys::{Descriptor, End, HolderRecord, Keys, SeatKind};
use recipe::Grant;

/// The clock-rate allowance: a holder's deadline is the TTL less this many thousandths
/// of it, counted from when the request was sent.
pub const DRIFT_PER_MILLE: u32 = 10;

/// Why a request failed, before it is told to the caller as an [`Error`].
#[derive(Debug)]
pub(crate) enum Fail {
    /// No answer, no quorum, a broken connection: retryable.
    Net(String),
    /// Authentication or authorization refused.
    Denied(String),
    /// The location's settings cannot work (files unreadable, bad arguments).
    Config(String),
    /// A reply that makes no sense (untrusted input).
    Odd(String),
    /// The grant is not live.
    Lost(LostReason),
}

impl From<etcd_client::Error> for Fail {
    fn from(e: etcd_client::Error) -> Fail {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(s) => {
                let msg = s.message().to_owned();
                match i32::from(s.code()) {
                    // PermissionDenied, Unauthenticated, and etcd's authentication
                    // refusals sent as InvalidArgument ("authentication failed", "user
                    // name is empty", "invalid auth token").
                    7 | 16 => Fail::Denied(msg),
                    3 if ["authentication failed", "user name", "auth token", "permission"]
                        .iter()
                        .any(|m| msg.contains(m)) =>
                    {
                        Fail::Denied(msg)
                    }
                    // NotFound: the etcd lease is gone, so is every key attached to it.
                    5 if msg.contains("lease not found") => Fail::Lost(LostReason::Expired),
                    _ => Fail::Net(msg),
                }
            }
            E::LeaseKeepAliveError(m) if m.contains("not found") => Fail::Lost(LostReason::Expired),
            E::InvalidArgs(m) => Fail::Config(m),
            E::InvalidUri(u) => Fail::Config(u.to_string()),
            other => Fail::Net(other.to_string()),
        }
    }
}

impl Fail {
    pub(crate) fn into_error(self, location: &str, token: u64) -> Error {
        let location = location.to_owned();
        match self {
            Fail::Net(reason) => Error::Unavailable { location, reason },
            Fail::Denied(reason) => Error::Permission { location, reason },
            Fail::Config(reason) => {
                Error::InvalidOptions { reason: format!("{location}: {reason}") }
            }
            Fail::Odd(reason) => Error::Corrupt {
                location,
                reason: format!("the cluster sent an impossible reply ({reason})"),
            },
            Fail::Lost(reason) => Error::Lost { token, reason },
        }
    }
}

/// Bounds `fut` by `limit`, as a [`Fail::Net`].
pub(crate) async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, Fail>>,
) -> std::result::Result<T, Fail> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(Fail::Net(format!("no answer within {limit:?}"))))
}

/// The TTL to ask etcd for: whole seconds, rounded up.
pub(crate) fn ttl_secs(ttl: Duration) -> Result<i64> {
    crate::table::ttl_ns(ttl)?;
    Ok(ttl.as_secs() as i64 + i64::from(ttl.subsec_nanos() > 0))
}

/// Where a holder's validity ends: `ttl_s` seconds after `sent`, less the drift
/// allowance.
pub(crate) fn holder_deadline(sent: Instant, ttl_s: i64) -> Instant {
    let ms = (ttl_s.max(0) as u64).saturating_mul(1000 - DRIFT_PER_MILLE as u64);
    sent + Duration::from_millis(ms)
}

/// A lease table on an etcd cluster: a key prefix. Cheap to clone (clones share the
/// connection) and safe to use from many threads.
#[derive(Clone)]
pub struct EtcdTable {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) location: EtcdLocation,
    pub(crate) text: String,
    /// The location, as the backend-neutral API gives it back.
    pub(crate) as_location: crate::options::Location,
    /// Leases taken apart by `Lease::into_raw` (the C library), by token, until
    /// `Lease::from_raw` takes them back.
    parked: std::sync::Mutex<std::collections::HashMap<u64, EtcdLease>>,
    pub(crate) keys: Keys,
    conn: ConnSlot,
    descriptor: Descriptor,
    pub(crate) host: Host,
}

impl std::fmt::Debug for EtcdTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTable").field("location", &self.shared.text).finish()
    }
}

impl Shared {
    pub(crate) fn conn(&self) -> Result<&Conn> {
        self.conn.get().map_err(|f| f.into_error(&self.text, 0))
    }

    /// Runs `fut` (bounded by the location's timeout) on the backend's runtime.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        token: u64,
        fut: impl std::future::Future<Output = std::result::Result<T, Fail>> + Send + 'static,
    ) -> Result<T> {
        let limit = self.location.timeout;
        self.conn()?.run(bounded(limit, fut)).map_err(|f| f.into_error(&self.text, token))
    }
}

fn connect(location: &EtcdLocation) -> Result<Conn> {
    Conn::connect(location).map_err(|f| f.into_error(&location.to_string(), 0))
}

fn read_descriptor(conn: &Conn, location: &EtcdLocation) -> Result<Option<Descriptor>> {
    let text = location.to_string();
    let key = Keys::new(&location.prefix).descriptor();
    let mut c = conn.client();
    let got = conn
        .run(bounded(location.timeout, async move { Ok(c.get(key, None).await?) }))
        .map_err(|f| f.into_error(&text, 0))?;
    let Some(kv) = got.kvs().first() else { return Ok(None) };
    let d = Descriptor::decode(kv.value()).ok_or_else(|| Error::NotATable {
        location: text.clone(),
        reason: "its descriptor key does not describe a shmlease table".into(),
    })?;
    if d.format != keys::FORMAT_VERSION {
        return Err(Error::Incompatible {
            location: text,
            reason: format!(
                "format version {} (this library reads {})",
                d.format,
                keys::FORMAT_VERSION
            ),
        });
    }
    Ok(Some(d))
}

impl EtcdTable {
    fn from_parts(location: &EtcdLocation, conn: Conn, descriptor: Descriptor) -> EtcdTable {
        EtcdTable {
            shared: Arc::new(Shared {
                text: location.to_string(),
                keys: Keys::new(&location.prefix),
                conn: ConnSlot::new(conn, location.clone()),
                descriptor,
                host: conn::host_name(),
                as_location: crate::options::Location::Etcd(location.to_string()),
                parked: Default::default(),
                location: location.clone(),
            }),
        }
    }

    /// Creates the table: records its descriptor (format version, options, creator)
    /// under the prefix. Fails with [`Error::AlreadyExists`] if it is there.
    pub fn create(location: &EtcdLocation, options: &TableOptions) -> Result<EtcdTable> {
        options.validate_for_create()?;
        let conn = connect(location)?;
        let text = location.to_string();
        let d = Descriptor::new(options.get_capacity(), conn::host_name());
        let key = Keys::new(&location.prefix).descriptor();
        let value = d.encode();
        let mut c = conn.client();
        let created = conn
            .run(bounded(location.timeout, async move {
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::create_revision(
                        key.clone(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then([etcd_client::TxnOp::put(key, value, None)]);
                Ok(c.txn(txn).await?.succeeded())
            }))
            .map_err(|f| f.into_error(&text, 0))?;
        if !created {
            return Err(Error::AlreadyExists { location: text });
        }
        Ok(EtcdTable::from_parts(location, conn, d))
    }

    /// Opens the table; [`Error::NotFound`] if the prefix holds no descriptor,
    /// [`Error::Incompatible`] or [`Error::NotATable`] if it holds another one.
    pub fn open(location: &EtcdLocation) -> Result<EtcdTable> {
        let conn = connect(location)?;
        match read_descriptor(&conn, location)? {
            Some(d) => Ok(EtcdTable::from_parts(location, conn, d)),
            None => Err(Error::NotFound { location: location.to_string() }),
        }
    }

    /// Opens the table, creating it first if needed. Any number of clients may race.
    pub fn open_or_create(location: &EtcdLocation, options: &TableOptions) -> Result<EtcdTable> {
        loop {
            match EtcdTable::open(location) {
                Err(Error::NotFound { .. }) => {}
                other => return other,
            }
            match EtcdTable::create(location, options) {
                Err(Error::AlreadyExists { .. }) => {}
                other => return other,
            }
        }
    }

    /// Deletes the table (every key under `PREFIX/.shmlease/`), in one transaction that
    /// refuses with [`Error::InUse`] while any lease is held — unless `force`: then live
    /// holders find their lease gone at their next renewal (its key, carrying their
    /// revision, is deleted with the rest), as after a revocation.
    pub fn remove(location: &EtcdLocation, force: bool) -> Result<()> {
        let table = EtcdTable::open(location)?;
        let keys = table.shared.keys.clone();
        let mut c = table.shared.conn()?.client();
        let removed = table.shared.run(0, async move {
            let delete = etcd_client::TxnOp::delete(
                keys.all(),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            );
            let none_held =
                etcd_client::Compare::version(keys.lease_dir(), etcd_client::CompareOp::Equal, 0)
                    .with_prefix();
            let txn = etcd_client::Txn::new();
            let txn = if force { txn } else { txn.when([none_held]) }.and_then([delete]);
            Ok(c.txn(txn).await?.succeeded())
        })?;
        if removed {
            return Ok(());
        }
        let leases = table.list()?.into_iter().filter(|l| l.state == LeaseState::Held).collect();
        Err(Error::InUse { location: table.shared.text.clone(), leases })
    }

    /// The location, as written.
    pub fn location(&self) -> &EtcdLocation {
        &self.shared.location
    }

    pub(crate) fn as_location(&self) -> &crate::options::Location {
        &self.shared.as_location
    }

    /// The capacity recorded at creation (not enforced on etcd).
    pub fn capacity(&self) -> u32 {
        self.shared.descriptor.capacity
    }

    /// Keeps `lease` for [`EtcdTable::unpark`] (the C library's handles).
    pub(crate) fn park(&self, lease: EtcdLease) {
        let mut parked = self.shared.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.insert(lease.token(), lease);
    }

    /// Takes back the lease [`EtcdTable::park`] kept.
    pub(crate) fn unpark(&self, token: u64) -> Option<EtcdLease> {
        self.shared.parked.lock().unwrap_or_else(|p| p.into_inner()).remove(&token)
    }

    /// Takes the lease on `name` for `ttl` (see the semantics table for how etcd rounds
    /// it) if nobody holds it; never waits. Fails with [`Error::Held`] if someone does.
    pub fn try_acquire(&self, name: &str, ttl: Duration) -> Result<EtcdLease> {
        self.acquire_with(name, ttl, &AcquireOptions::new())
    }

    /// Takes the lease on `name`, waiting up to `timeout` (forever with `None`) through
    /// a watch on its key: woken by the holder's release, a revocation or its expiry.
    pub fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        timeout: Option<Duration>,
    ) -> Result<EtcdLease> {
        self.acquire_with(name, ttl, &AcquireOptions::new().wait(timeout))
    }

    /// Takes a lease with every option: waiting, label.
    pub fn acquire_with(
        &self,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
    ) -> Result<EtcdLease> {
        self.acquire_until(name, ttl, options, None, None)
    }

    /// [`EtcdTable::acquire_with`], also giving up ([`Error::TimedOut`]) once `stop`
    /// fires, and telling `seen` of each other leader found on the way (one request
    /// more for each: its time left): an election's campaign.
    pub(crate) fn acquire_until(
        &self,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
        stop: Option<&Arc<CampaignStop>>,
        seen: Option<&mut dyn FnMut(&crate::election::Leader)>,
    ) -> Result<EtcdLease> {
        crate::table::Key::new(name)?;
        if options.fair {
            return self.acquire_fair(name, ttl, options, stop);
        }
        self.acquire_kind(name, ttl, options, false, stop, seen)
    }

    /// [`EtcdTable::acquire_until`] of the kind `options` ask for, unfair; `behind_queue`:
    /// refused (as `Held`) while anyone waits in the name's fair queue.
    pub(crate) fn acquire_kind(
        &self,
        name: &str,
        ttl: Duration,
        options: &AcquireOptions,
        behind_queue: bool,
        stop: Option<&Arc<CampaignStop>>,
        mut seen: Option<&mut dyn FnMut(&crate::election::Leader)>,
    ) -> Result<EtcdLease> {
        if options.permits > 1 {
            let kind = SeatKind::Permits(options.permits);
            return self.acquire_seat(name, ttl, options, kind, behind_queue, stop);
        }
        if options.shared {
            return self.acquire_seat(name, ttl, options, SeatKind::Shared, behind_queue, stop);
        }
        let ttl_s = ttl_secs(ttl)?;
        let s = &self.shared;
        let (host, label) = (s.host, options.label);
        let make = move |granted| HolderRecord::me(host, label, false, ttl_s, granted);
        let patience = crate::table::Patience::of(options);
        let mut last_seen = None;
        let claim = recipe::Claim { behind_queue, ..recipe::Claim::exclusive(name) };
        loop {
            let (keys, cl, mut c) = (s.keys.clone(), claim.clone(), s.conn()?.client());
            let spares = s.conn()?.spares();
            let attempt =
                s.run(
                    0,
                    async move { recipe::grant(&mut c, &spares, &keys, &cl, ttl_s, make).await },
                )?;
            let (token, lease, holder, revision) = match attempt {
                Grant::Won { token, lease, record, shared } => {
                    let lease =
                        EtcdLease::new(self.clone(), name, name, token, ttl_s, lease, record);
                    if shared.is_empty() {
                        return Ok(lease);
                    }
                    // A shared name's shared holders: wait for them to go (see `kinds`).
                    match self.drain(lease, shared, ttl, &patience, stop)? {
                        Some(lease) => return Ok(lease),
                        None => continue,
                    }
                }
                Grant::Held { token, lease, holder, revision } => (token, lease, holder, revision),
                // (Only a fair acquirer's try, which does not wait.)
                Grant::Queued { first } => {
                    (first.create, 0, HolderRecord::decode(&first.value), first.modified)
                }
                Grant::Wrong(recorded) => {
                    return Err(Error::WrongKind {
                        name: name.to_owned(),
                        recorded,
                        requested: LeaseKind::Exclusive,
                    })
                }
                Grant::Seats { .. } => {
                    return Err(Fail::Odd("an exclusive grant refused by seats".into())
                        .into_error(&s.text, 0))
                }
            };
            if let Some(seen) = seen.as_mut().filter(|_| last_seen != Some(token)) {
                last_seen = Some(token);
                let mut c = s.conn()?.client();
                let left = s.run(0, async move { recipe::time_left(&mut c, lease).await })?;
                if let Some(secs) = left {
                    let remaining = Duration::from_secs(secs.max(0) as u64);
                    let leader = election::leader(token, holder.as_ref(), remaining);
                    seen(&leader);
                }
            }
            let holder = holder.map(|h| h.holder());
            if !patience.waits() {
                let remaining = self.seconds_left(lease)?;
                return Err(Error::Held { token, remaining, holder });
            }
            // Within the caller's time, and no longer than its interrupt may go unasked.
            let left = patience.left()?;
            if left.is_zero() || stop.is_some_and(|i| i.is_fired()) {
                return Err(Error::TimedOut { waited: patience.waited(), token, holder });
            }
            self.sleep_until_deleted((s.keys.lease(name), Vec::new()), revision, left, stop)?;
        }
    }

    /// `op` on the key name of `name`'s grant `token`: `name` itself, else (when `op`
    /// finds it lost there) the seat whose live key or latest grant carries `token`
    /// (one more read: see `kinds`).
    fn on_grant<T>(&self, name: &str, token: u64, op: impl Fn(&str) -> Result<T>) -> Result<T> {
        crate::table::Key::new(name)?;
        match op(name) {
            Err(e @ Error::Lost { .. }) => match self.seat_of(name, token)? {
                Some(seat) => op(&seat),
                None => Err(e),
            },
            other => other,
        }
    }

    /// Finds the live grant `token` under `key_name` and checks that the caller may act
    /// on it by token: it must be detached, or held by this very process.
    fn by_token(&self, key_name: &str, token: u64) -> Result<recipe::Kv> {
        let s = &self.shared;
        let (keys, n, mut c) = (s.keys.clone(), key_name.to_owned(), s.conn()?.client());
        let kv = s.run(token, async move { recipe::read_grant(&mut c, &keys, &n, token).await })?;
        let record = HolderRecord::decode(&kv.value);
        if let Some(r) = record.filter(|r| !r.detached && !r.is_me(&s.host)) {
            return Err(Error::BoundToProcess { token, holder: Some(r.holder()) });
        }
        Ok(kv)
    }

    /// Extends the grant of `name` with `token` — for detached leases, from any process
    /// on any host. Returns this caller's conservative deadline for it.
    pub fn renew(&self, name: &str, token: u64, ttl: Duration) -> Result<Instant> {
        let ttl_s = ttl_secs(ttl)?;
        let kv = self.on_grant(name, token, |n| Ok((n.to_owned(), self.by_token(n, token)?)));
        let (key_name, kv) = kv?;
        let s = &self.shared;
        let record = HolderRecord::decode(&kv.value).unwrap_or_default();
        let (keys, n, mut c) = (s.keys.clone(), key_name, s.conn()?.client());
        if record.same_ttl(ttl_s) {
            let id = kv.lease;
            let renewed = s.run(token, async move {
                recipe::renew_same(&mut c, &keys, &n, token, id, &record).await
            })?;
            Ok(holder_deadline(renewed.sent, ttl_s))
        } else {
            let moved = n.clone();
            let (lease, _) = s.run(token, async move {
                recipe::renew_relet(&mut c, &keys, &n, token, kv.lease, ttl_s, &record).await
            })?;
            // A grant of this very process: its holder's validity follows the key.
            s.conn()?.holdings().moved(&moved, token, lease, ttl_s);
            Ok(holder_deadline(lease.sent, lease.ttl_s))
        }
    }

    /// Ends the grant of `name` with `token` — for detached leases, from any process on
    /// any host. Fails like [`EtcdTable::renew`].
    pub fn release(&self, name: &str, token: u64) -> Result<()> {
        // Once checked, the check holds: a grant never goes from detached back to bound,
        // nor changes holder without changing token; renewals rewrite its key meanwhile.
        let key_name =
            self.on_grant(name, token, |n| self.by_token(n, token).map(|_| n.to_owned()))?;
        let s = &self.shared;
        // A lease of this very process ends here first, before anyone else can take it.
        s.conn()?.holdings().ending(&key_name, token, LostReason::Released);
        let (keys, mut c) = (s.keys.clone(), s.conn()?.client());
        s.run(token, async move {
            recipe::end(&mut c, &keys, &key_name, End::Released(token), None).await
        })
    }

    /// Revokes whatever grants `name` has (an exclusive one, or every permit or shared
    /// grant). Returns the latest token revoked, or `None` if nothing was held. Holders
    /// learn on their next renewal (at once with a keep-alive, which watches the key).
    pub fn revoke(&self, name: &str) -> Result<Option<u64>> {
        crate::table::Key::new(name)?;
        let mut done = None;
        // A new grant between the read and the revocation: revoke that one too.
        loop {
            let live = self.live_grants(name)?;
            if live.is_empty() {
                return Ok(done);
            }
            for (key_name, token) in live {
                match self.revoke_at(&key_name, token) {
                    Ok(()) => done = done.max(Some(token)),
                    Err(Error::Lost { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if done.is_some() {
                return Ok(done);
            }
        }
    }

    /// The live grants of `name` and of its seats: key name and token of each.
    fn live_grants(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let s = &self.shared;
        let (keys, n, mut c) = (s.keys.clone(), name.to_owned(), s.conn()?.client());
        let (all, _) = s.run(0, async move { recipe::stories_of(&mut c, &keys, &n).await })?;
        Ok(all.into_iter().filter_map(|(k, st)| st.live.map(|kv| (k, kv.create))).collect())
    }

    /// Revokes the grant of `name` only if its token is `token`; otherwise fails with
    /// [`Error::Lost`] saying what is true instead.
    pub fn revoke_token(&self, name: &str, token: u64) -> Result<()> {
        self.on_grant(name, token, |n| self.revoke_at(n, token))
    }

    fn revoke_at(&self, key_name: &str, token: u64) -> Result<()> {
        let s = &self.shared;
        // A lease of this very process ends here first, before anyone else can take it.
        s.conn()?.holdings().ending(key_name, token, LostReason::Revoked);
        let (keys, n, mut c) = (s.keys.clone(), key_name.to_owned(), s.conn()?.client());
        s.run(token, async move { recipe::end(&mut c, &keys, &n, End::Revoked(token), None).await })
    }

    /// Asks the holder of `name`'s live grant (with `token`, of that grant only) to
    /// release it: one transaction putting the name's `asks/` key if the grant is
    /// live. The holder learns at once with a keep-alive (it watches that key), else at
    /// its next renewal. Returns the token asked, or `None` if nothing is held (without
    /// `token`); with `token`, a grant that is not the live one fails with
    /// [`Error::Lost`] saying why. Asking twice is asking once. Without `token`, a name
    /// with permits or shared grants has every holder asked (the latest token returned).
    pub fn request_release(&self, name: &str, token: Option<u64>) -> Result<Option<u64>> {
        crate::table::Key::new(name)?;
        let ask = |n: &str, token: Option<u64>| {
            let s = &self.shared;
            let (keys, n, mut c) = (s.keys.clone(), n.to_owned(), s.conn()?.client());
            s.run(token.unwrap_or(0), async move { recipe::ask(&mut c, &keys, &n, token).await })
        };
        if let Some(t) = token {
            return self.on_grant(name, t, |n| ask(n, Some(t)));
        }
        match ask(name, None)? {
            Some(t) => Ok(Some(t)),
            None => {
                let mut asked = None;
                for (key_name, t) in self.live_grants(name)? {
                    match ask(&key_name, Some(t)) {
                        Ok(got) => asked = asked.max(got),
                        Err(Error::Lost { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(asked)
            }
        }
    }

    /// The lease on `name`, if the table has ever granted it.
    pub fn get(&self, name: &str) -> Result<Option<LeaseInfo>> {
        crate::table::Key::new(name)?;
        let s = &self.shared;
        let (keys, n, mut c) = (s.keys.clone(), name.to_owned(), s.conn()?.client());
        let all = s.run(0, async move { recipe::stories_of(&mut c, &keys, &n).await })?;
        Ok(self.infos(all)?.into_iter().find(|i| i.name == name))
    }

    /// The stories of names and seats, as one [`LeaseInfo`] per name (asking the time
    /// left of every live grant at once).
    fn infos(&self, (all, places): recipe::Stories) -> Result<Vec<LeaseInfo>> {
        let ids: Vec<i64> =
            all.iter().filter_map(|(_, st)| st.live.as_ref().map(|kv| kv.lease)).collect();
        let left: std::collections::HashMap<i64, Option<i64>> =
            ids.iter().copied().zip(self.time_left(ids.clone())?).collect();
        let mut by_name: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
        for (key_name, story) in &all {
            // A seat suffix that does not parse is not ours: left out (untrusted).
            if let Some((name, seat)) = keys::parse_seat(key_name) {
                by_name.entry(name).or_default().push((seat, story));
            }
        }
        let mut infos: Vec<LeaseInfo> =
            by_name.into_iter().map(|(name, parts)| info_of_name(name, &parts, &left)).collect();
        let queue_dir = self.shared.keys.queue_dir();
        for kv in &places {
            let Some(place) = Keys::name_in(&queue_dir, &kv.key) else { continue };
            let Some((name, _)) = place.split_once('\0') else { continue };
            if let Some(info) = infos.iter_mut().find(|i| i.name == name) {
                info.queue.push(crate::info::QueuedInfo {
                    ticket: kv.create,
                    holder: HolderRecord::decode(&kv.value).map(|r| r.holder()),
                    expires_at: None,
                    slot: 0,
                });
            }
        }
        for info in &mut infos {
            info.queue.sort_by_key(|q| q.ticket);
        }
        Ok(infos)
    }

    /// Time left (whole seconds) of each etcd lease, all asked at once.
    fn time_left(&self, ids: Vec<i64>) -> Result<Vec<Option<i64>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let s = &self.shared;
        let c = s.conn()?.client();
        s.run(0, async move {
            let asks: Vec<_> = ids
                .into_iter()
                .map(|id| {
                    let mut c = c.clone();
                    tokio::spawn(async move { recipe::time_left(&mut c, id).await })
                })
                .collect();
            let mut out = Vec::new();
            for a in asks {
                out.push(a.await.map_err(|e| Fail::Net(e.to_string()))??);
            }
            Ok(out)
        })
    }

    /// Every name the table has granted, by name, whatever its state.
    pub fn list(&self) -> Result<Vec<LeaseInfo>> {
        let s = &self.shared;
        let (keys, mut c) = (s.keys.clone(), s.conn()?.client());
        let all = s.run(0, async move { recipe::stories(&mut c, &keys).await })?;
        self.infos(all)
    }

    /// Facts about the table (one read of every key).
    pub fn info(&self) -> Result<TableInfo> {
        let all = self.list()?;
        let mut info = self.descriptor_info();
        info.names = all.len() as u32;
        info.held = all.iter().filter(|l| l.state == LeaseState::Held).count() as u32;
        info.counters.grants = all.iter().map(|l| l.transitions).sum();
        Ok(info)
    }

    /// What the descriptor read at open says, without counts.
    pub(crate) fn descriptor_info(&self) -> TableInfo {
        let d = &self.shared.descriptor;
        TableInfo {
            location: self.shared.as_location.clone(),
            format_version: d.format,
            capacity: d.capacity,
            names: 0,
            held: 0,
            size_bytes: 0,
            slot_size: 0,
            boot_id: String::new(),
            clock: "etcd lease TTL",
            creator_pid: d.creator_pid,
            creator_uid: d.creator_uid,
            created_at: std::time::UNIX_EPOCH + Duration::from_millis(d.created_ms),
            counters: Default::default(),
        }
    }
}

/// One name's stories, its own and its seats', as one [`LeaseInfo`]; `left` has the
/// time left of each live grant's etcd lease. The kind is the live seats' (else the
/// latest grant's): etcd keeps no other record of it (see `kinds`).
fn info_of_name(
    name: &str,
    parts: &[(Option<(SeatKind, u32)>, &recipe::Story)],
    left: &std::collections::HashMap<i64, Option<i64>>,
) -> LeaseInfo {
    let left_of =
        |st: &recipe::Story| st.live.as_ref().and_then(|kv| left.get(&kv.lease).copied().flatten());
    let each: Vec<(Option<SeatKind>, LeaseInfo)> = parts
        .iter()
        .map(|(seat, st)| (seat.map(|s| s.0), info_of(name, st, left_of(st))))
        .collect();
    let live_kind = each.iter().find(|(k, i)| k.is_some() && i.state == LeaseState::Held);
    let latest = each.iter().max_by_key(|(_, i)| i.token);
    let kind = match live_kind.or(latest) {
        Some((Some(k), _)) => *k,
        // An exclusive name (or one whose latest grant was exclusive).
        _ => {
            let own = each.iter().find(|(k, _)| k.is_none()).map(|(_, i)| i.clone());
            return own.unwrap_or_else(|| info_of(name, &recipe::Story::default(), None));
        }
    };
    let mine = |k: &Option<SeatKind>| match (kind, k) {
        (_, Some(k)) => *k == kind,
        // A shared name's exclusive holder is one of its grants.
        (SeatKind::Shared, None) => true,
        (SeatKind::Permits(_), None) => false,
    };
    let (latest_token, latest_info) = each
        .iter()
        .filter(|(k, _)| mine(k))
        .map(|(_, i)| (i.token, i))
        .max_by_key(|(t, _)| *t)
        .unwrap_or((0, &each[0].1));
    let mut info = LeaseInfo {
        name: name.to_owned(),
        token: latest_token,
        state: latest_info.state,
        holder: None,
        acquired_at: None,
        renewed_at: None,
        expires_at: None,
        remaining: Duration::ZERO,
        transitions: each.iter().filter(|(k, _)| mine(k)).map(|(_, i)| i.transitions).sum(),
        slot: 0,
        kind: kind.lease_kind(),
        grants: Vec::new(),
        queue: Vec::new(),
    };
    for (k, i) in each.iter().filter(|(k, i)| mine(k) && i.state == LeaseState::Held) {
        if k.is_none() {
            info.holder = i.holder;
        }
        info.grants.extend(
            i.grants
                .iter()
                .map(|g| GrantInfo { shared: *k == Some(SeatKind::Shared), ..g.clone() }),
        );
    }
    info.grants.sort_by_key(|g| g.token);
    if let Some(longest) = info.grants.iter().map(|g| g.remaining).max() {
        info.state = LeaseState::Held;
        info.remaining = longest;
        info.expires_at = info.grants.iter().filter_map(|g| g.expires_at).max();
    }
    info
}

/// A name's story as a [`LeaseInfo`]; `left` is the live grant's etcd lease time left.
fn info_of(name: &str, story: &recipe::Story, left: Option<i64>) -> LeaseInfo {
    let now = std::time::SystemTime::now();
    let latest = story.grants.as_ref();
    let (token, state, record, remaining) = match (&story.live, left) {
        (Some(kv), Some(secs)) => (
            kv.create,
            LeaseState::Held,
            HolderRecord::decode(&kv.value),
            Duration::from_secs(secs.max(0) as u64),
        ),
        // The key outlived its etcd lease by a moment: expired.
        (Some(kv), None) => {
            (kv.create, LeaseState::Expired, HolderRecord::decode(&kv.value), Duration::ZERO)
        }
        (None, _) => {
            let token = latest.map(|kv| kv.modified).unwrap_or(0);
            let state = match story.end {
                Some(End::Released(t)) if t == token => LeaseState::Free,
                Some(End::Revoked(t)) if t == token => LeaseState::Revoked,
                _ => LeaseState::Expired,
            };
            (token, state, latest.and_then(|kv| HolderRecord::decode(&kv.value)), Duration::ZERO)
        }
    };
    let mut info = LeaseInfo {
        name: name.to_owned(),
        token,
        state,
        holder: record.as_ref().map(|r| r.holder()),
        acquired_at: record.as_ref().and_then(|r| r.acquired_at()),
        renewed_at: record.as_ref().and_then(|r| r.renewed_at()),
        expires_at: (state == LeaseState::Held).then(|| now + remaining),
        remaining,
        transitions: latest.map(|kv| kv.version).unwrap_or(0),
        slot: 0,
        kind: LeaseKind::Exclusive,
        grants: Vec::new(),
        queue: Vec::new(),
    };
    if state == LeaseState::Held {
        info.grants.push(GrantInfo {
            token,
            holder: info.holder,
            acquired_at: info.acquired_at,
            renewed_at: info.renewed_at,
            expires_at: info.expires_at,
            remaining,
            slot: 0,
            shared: false,
        });
    }
    info
}
