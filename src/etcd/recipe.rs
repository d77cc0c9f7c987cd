//! The lease protocol on etcd: every request the backend makes, each recipe a few lines
//! over one primitive — a key created only if absent, attached to an etcd lease, whose
//! create revision is the fencing token. The keys are laid out in [`super::keys`].
//!
//! | operation | requests (round trips) |
//! |---|---|
//! | grant | `Txn{ if create_rev(lease/N) = 0 then put lease/N (lease L), put grants/N else get lease/N }` on a young spare etcd lease L (1); without one, `LeaseGrant` first (2) |
//! | renew, same TTL | `LeaseKeepAlive(L)` ∥ `Txn{ if create_rev = token ∧ lease = L then put lease/N (renewed-at, lease L), get asks/N }` (1, two requests in flight; refused, with the key still live, when a renewal with another TTL moved it meanwhile: retryable) |
//! | renew, other TTL | `LeaseGrant(L')`, then `Txn{ if create_rev = token ∧ lease = L then put lease/N (lease L'), get asks/N }`, `LeaseRevoke(L)` in the background (2) |
//! | release | `Txn{ if create_rev = token then delete lease/N, put ends/N }` (1); the holder keeps L as a spare, others revoke it in the background |
//! | revoke NAME | `Range lease/N`, then the release transaction with the token found (2) |
//! | wait | `Watch lease/N` from the revision after the refusal, deletes only (no polling) |
//! | request release | `Txn{ if create_rev = token (or > 0) then put asks/N, get lease/N }` (1): grant T is asked iff mod_rev(asks/N) > T |
//!
//! **Spare etcd leases.** An etcd lease holds no key once its grant is released, so the
//! releasing holder keeps it ([`Spares`]) for its connection's next grant of the same
//! TTL, instead of revoking it and granting another. The next grant is then one
//! transaction, and counts its deadline from the spare's last refresh (its grant, or the
//! last renewal of the grant that released it), which is at most a tenth of the TTL ago:
//! older spares are dropped. So a grant and a release cost two round trips and two raft
//! writes, as etcd's own mutex on a session does, while each grant keeps a TTL of its
//! own. A refused grant keeps its lease as a spare too.
//!
//! Every refusal's `else` branch reads `lease/N`, `grants/N` and `ends/N`, so the caller
//! learns why (expired, revoked, released, taken over, never issued) without another
//! request. Replies are untrusted: a missing header, a negative revision or an odd
//! value is an error ([`Fail::Odd`]), never a panic.

use std::time::{Duration, Instant};

use etcd_client::proto::PbTxnOpResponse;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnResponse, WatchFilterType, WatchOptions,
};

use super::keys::{self, End, HolderRecord, Keys, SeatKind};
use super::Fail;
use crate::error::LostReason;
use crate::info::LeaseKind;

/// One key as read back.
#[derive(Clone, Debug)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create: u64,
    pub modified: u64,
    pub version: u64,
    pub lease: i64,
}

/// The keys of every range in a transaction's responses, in order (an empty list for
/// a response that is not a range, or a key with impossible revisions).
fn ranges(resp: &TxnResponse) -> Vec<Vec<Kv>> {
    resp.0
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(PbTxnOpResponse::ResponseRange(r)) => r
                .kvs
                .iter()
                .filter(|kv| kv.create_revision > 0 && kv.mod_revision >= kv.create_revision)
                .map(|kv| Kv {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    create: kv.create_revision as u64,
                    modified: kv.mod_revision as u64,
                    version: kv.version.max(0) as u64,
                    lease: kv.lease,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The revision a transaction was applied at.
fn revision(resp: &TxnResponse) -> Result<u64, Fail> {
    match resp.header().map(|h| h.revision()) {
        Some(r) if r > 0 => Ok(r as u64),
        other => Err(Fail::Odd(format!("a transaction reply with revision {other:?}"))),
    }
}

fn first(ranges: &[Vec<Kv>], i: usize) -> Option<&Kv> {
    ranges.get(i).and_then(|r| r.first())
}

/// The three reads that say what became of a grant: `lease/N`, `grants/N`, `ends/N`.
fn story(keys: &Keys, name: &str) -> [TxnOp; 3] {
    [
        TxnOp::get(keys.lease(name), None),
        TxnOp::get(keys.grants(name), None),
        TxnOp::get(keys.ends(name), None),
    ]
}

/// What the three reads of [`story`] (at `at` in `ranges`) say about the grant `token`:
/// `None` if it is still live.
fn why_not_live(ranges: &[Vec<Kv>], at: usize, token: u64) -> Option<LostReason> {
    if first(ranges, at).is_some_and(|kv| kv.create == token) {
        return None;
    }
    let Some(grants) = first(ranges, at + 1) else { return Some(LostReason::NoSuchName) };
    let latest = grants.modified;
    Some(if token > latest {
        LostReason::NotIssued { latest }
    } else if token < latest {
        LostReason::TakenOver
    } else {
        match first(ranges, at + 2).and_then(|kv| End::decode(&kv.value)) {
            Some(End::Released(t)) if t == token => LostReason::Released,
            Some(End::Revoked(t)) if t == token => LostReason::Revoked,
            // The latest grant, gone without a release or revocation: its lease expired.
            _ => LostReason::Expired,
        }
    })
}

/// An etcd lease: its id and the TTL the server granted, and when we asked for it.
#[derive(Clone, Copy, Debug)]
pub struct EtcdLeaseGrant {
    pub id: i64,
    pub ttl_s: i64,
    pub sent: Instant,
}

async fn lease_grant(c: &mut Client, ttl_s: i64) -> Result<EtcdLeaseGrant, Fail> {
    let sent = Instant::now();
    let resp = c.lease_grant(ttl_s, None).await?;
    if !resp.error().is_empty() {
        return Err(Fail::Net(format!("the cluster refused a lease: {}", resp.error())));
    }
    // Never trust a TTL shorter than asked for: etcd only ever rounds up.
    if resp.id() == 0 || resp.ttl() < ttl_s || resp.ttl() > MAX_LEASE_TTL_S {
        return Err(Fail::Odd(format!(
            "a lease grant of {ttl_s}s answered with id {} and TTL {}s",
            resp.id(),
            resp.ttl()
        )));
    }
    Ok(EtcdLeaseGrant { id: resp.id(), ttl_s: resp.ttl(), sent })
}

/// Revokes an etcd lease in the background: it holds no key we still need, and if the
/// request is lost the lease simply expires.
pub fn revoke_later(c: &Client, id: i64) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut c = c.clone();
    async move {
        let _ = c.lease_revoke(id).await;
    }
}

/// An etcd lease that holds no key, kept for the next grant of the same TTL.
#[derive(Clone, Copy, Debug)]
pub struct Spare {
    pub lease: EtcdLeaseGrant,
    pub asked_s: i64,
}

/// The spare leases of one connection (used only on its runtime thread, so a forked
/// child, which has a connection of its own, never touches a parent's).
#[derive(Default)]
pub struct Spares(std::sync::Mutex<Vec<Spare>>);

/// At most this many spares are kept; more are revoked.
const MAX_SPARES: usize = 8;

impl Spares {
    /// A spare for `asked_s` refreshed less than a tenth of its TTL ago.
    fn take(&self, asked_s: i64) -> Option<Spare> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let young = |s: &Spare| {
            s.lease.sent.elapsed() < Duration::from_millis(s.lease.ttl_s.max(0) as u64 * 100)
        };
        v.retain(young);
        let i = v.iter().position(|s| s.asked_s == asked_s)?;
        Some(v.swap_remove(i))
    }

    /// Keeps `spare`; `false` (the caller revokes it) when there are enough.
    pub fn keep(&self, spare: Spare) -> bool {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= MAX_SPARES {
            return false;
        }
        v.push(spare);
        true
    }
}

/// What a grant asks for: the key name it creates (`NAME`, or a seat of it) and the kind
/// every other user of the name must agree on (`None`: an exclusive grant).
#[derive(Clone, Debug)]
pub struct Claim {
    pub name: String,
    pub key_name: String,
    pub kind: Option<SeatKind>,
    /// Refused while anyone waits in the name's fair queue (a fair acquirer's try).
    pub behind_queue: bool,
}

impl Claim {
    pub fn exclusive(name: &str) -> Claim {
        Claim { name: name.to_owned(), key_name: name.to_owned(), kind: None, behind_queue: false }
    }
    pub fn seat(name: &str, kind: SeatKind, i: u32) -> Claim {
        let key_name = keys::seat(name, kind, i);
        Claim { name: name.to_owned(), key_name, kind: Some(kind), behind_queue: false }
    }
}

/// A grant, or who holds the name instead.
pub enum Grant {
    /// Granted at `token`; an exclusive grant also says which shared seats were live
    /// then (it must wait for them to go: see `super::kinds`).
    Won { token: u64, lease: EtcdLeaseGrant, record: HolderRecord, shared: Vec<Vec<u8>> },
    /// `lease/NAME` is held: by this grant, at `revision`.
    Held { token: u64, lease: i64, holder: Option<HolderRecord>, revision: u64 },
    /// The seat was taken; these are the live seats of the claim's kind at `revision`.
    Seats { taken: Vec<Kv>, revision: u64 },
    /// The name is in use as another kind.
    Wrong(LeaseKind),
    /// Fair acquirers wait for the name (a claim `behind_queue` only): this one first.
    Queued { first: Kv },
}

/// Grants `claim` for `ttl_s` seconds (rounded up by the server to its minimum), on a
/// spare etcd lease if there is one.
pub async fn grant(
    c: &mut Client,
    spares: &Spares,
    keys: &Keys,
    claim: &Claim,
    ttl_s: i64,
    make_record: impl Fn(i64) -> HolderRecord,
) -> Result<Grant, Fail> {
    if let Some(spare) = spares.take(ttl_s) {
        match grant_on_spare(c, spares, keys, claim, spare, &make_record).await {
            // The spare had vanished (revoked by a by-token renewal elsewhere): afresh.
            Err(Fail::Lost(_)) => {}
            other => return other,
        }
    }
    let lease = lease_grant(c, ttl_s).await?;
    let record = make_record(lease.ttl_s);
    let resp = match c.txn(grant_txn(keys, claim, lease.id, &record)).await {
        Ok(r) => r,
        Err(e) => {
            return Err(match Fail::from(e) {
                // The etcd lease we have just been granted expired before the
                // transaction ran: the cluster is too slow (lost its quorum, elected a
                // leader) for this TTL. Nothing of ours is left behind; not a loss of a
                // grant the caller never had, but an unavailable cluster.
                Fail::Lost(_) => Fail::Net(format!(
                    "a new {ttl_s} s etcd lease expired before the grant transaction ran"
                )),
                other => {
                    tokio::spawn(revoke_later(c, lease.id));
                    other
                }
            });
        }
    };
    let spare = Spare { lease, asked_s: ttl_s };
    granted(c, spares, keys, claim, &resp, spare, record)
}

/// `create_revision = 0` over `[start, end)`: no key in the range (an empty range
/// compares as one absent key).
fn none_in((start, end): (Vec<u8>, Vec<u8>)) -> Compare {
    Compare::create_revision(start, CompareOp::Equal, 0).with_range(end)
}

fn range((start, end): (Vec<u8>, Vec<u8>), limit: i64) -> TxnOp {
    TxnOp::get(start, Some(GetOptions::new().with_range(end).with_limit(limit)))
}

/// The grant transaction of `claim`: its key created only if absent and only if no
/// other kind is in use (see `super::kinds` for the compares of each kind).
fn grant_txn(keys: &Keys, claim: &Claim, id: i64, record: &HolderRecord) -> Txn {
    let name = claim.name.as_str();
    let key = keys.lease(&claim.key_name);
    let mut when = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
    let put = [
        TxnOp::put(key, record.encode(), Some(PutOptions::new().with_lease(id))),
        TxnOp::put(keys.grants(&claim.key_name), record.encode(), None),
    ];
    let all_seats = Keys::seats_in(&keys.lease_dir(), name);
    if claim.behind_queue {
        when.push(none_in(keys.queue_of(name)));
    }
    let queue = range(keys.queue_of(name), 1);
    match claim.kind {
        None => {
            when.push(none_in(keys.seats_tagged(name, "p")));
            let shared = keys.seats_tagged(name, "s.");
            let shared =
                TxnOp::get(shared.0, Some(GetOptions::new().with_range(shared.1).with_keys_only()));
            Txn::new().when(when).and_then([put[0].clone(), put[1].clone(), shared]).or_else([
                TxnOp::get(keys.lease(name), None),
                range(all_seats, 1),
                queue,
            ])
        }
        Some(kind) => {
            when.push(Compare::create_revision(keys.lease(name), CompareOp::Equal, 0));
            match kind {
                SeatKind::Shared => when.push(none_in(keys.seats_tagged(name, "p"))),
                SeatKind::Permits(_) => {
                    // Every seat that is not one of ours: before our tag, and after it.
                    let all = keys.seats_tagged(name, "");
                    let ours = keys.seats_tagged(name, &kind.tag());
                    when.push(none_in((all.0, ours.0)));
                    when.push(none_in((ours.1, all.1)));
                }
            }
            Txn::new().when(when).and_then(put).or_else([
                TxnOp::get(keys.lease(name), None),
                range(all_seats, 0),
                queue,
            ])
        }
    }
}

/// The grant transaction on a spare, alone: the spare is young (see [`Spares::take`]),
/// and the grant's deadline counts from the spare's last refresh. A spare revoked behind
/// our back makes the transaction fail ("lease not found"): `Lost`, and the caller
/// grants afresh.
async fn grant_on_spare(
    c: &mut Client,
    spares: &Spares,
    keys: &Keys,
    claim: &Claim,
    spare: Spare,
    make_record: &impl Fn(i64) -> HolderRecord,
) -> Result<Grant, Fail> {
    let record = make_record(spare.lease.ttl_s);
    let resp = c.txn(grant_txn(keys, claim, spare.lease.id, &record)).await?;
    granted(c, spares, keys, claim, &resp, spare, record)
}

/// The kind of seat a key of `lease/` stands for, if it is a seat of `name`.
pub fn seat_kind(keys: &Keys, name: &str, kv: &Kv) -> Option<(SeatKind, u32)> {
    let key_name = Keys::name_in(&keys.lease_dir(), &kv.key)?;
    match keys::parse_seat(key_name)? {
        (n, Some(seat)) if n == name => Some(seat),
        _ => None,
    }
}

/// What a grant transaction's reply says; a refused grant keeps its lease as a spare.
fn granted(
    c: &Client,
    spares: &Spares,
    keys: &Keys,
    claim: &Claim,
    resp: &TxnResponse,
    spare: Spare,
    record: HolderRecord,
) -> Result<Grant, Fail> {
    let at = revision(resp)?;
    let r = ranges(resp);
    if resp.succeeded() {
        let shared = r.get(2).into_iter().flatten().map(|kv| kv.key.clone()).collect();
        return Ok(Grant::Won { token: at, lease: spare.lease, record, shared });
    }
    if !spares.keep(spare) {
        tokio::spawn(revoke_later(c, spare.lease.id));
    }
    let name = claim.name.as_str();
    let seats = r.get(1).map(Vec::as_slice).unwrap_or_default();
    let mut kinds = seats.iter().filter_map(|kv| seat_kind(keys, name, kv).map(|(k, _)| k));
    // (An exclusive grant is refused by permits only, never by shared seats.)
    let other = kinds.find(|k| match claim.kind {
        None => *k != SeatKind::Shared,
        mine => Some(*k) != mine,
    });
    if let (true, None, Some(place)) = (claim.behind_queue, other, first(&r, 2)) {
        if !matches!((claim.kind, first(&r, 0)), (Some(SeatKind::Permits(_)), Some(_))) {
            return Ok(Grant::Queued { first: place.clone() });
        }
    }
    match (claim.kind, first(&r, 0)) {
        // An exclusive holder: an exclusive or shared acquirer waits for it; an
        // acquirer of a permit finds the name in use as an exclusive lease.
        (None | Some(SeatKind::Shared), Some(kv)) => Ok(Grant::Held {
            token: kv.create,
            lease: kv.lease,
            holder: HolderRecord::decode(&kv.value),
            revision: at,
        }),
        // (A shared name's draining writer holds `lease/NAME` over its shared seats.)
        (Some(SeatKind::Permits(_)), Some(_)) => {
            Ok(Grant::Wrong(other.map(SeatKind::lease_kind).unwrap_or(LeaseKind::Exclusive)))
        }
        // No exclusive holder: refused for a seat of another kind.
        (_, None) if other.is_some() => {
            Ok(Grant::Wrong(other.map(SeatKind::lease_kind).unwrap_or(LeaseKind::Exclusive)))
        }
        (Some(kind), None) => Ok(Grant::Seats {
            taken: seats
                .iter()
                .filter(|kv| seat_kind(keys, name, kv).is_some_and(|(k, _)| k == kind))
                .cloned()
                .collect(),
            revision: at,
        }),
        // Refused, yet neither the name nor a seat of another kind is there.
        (None, None) => Err(Fail::Odd("a refused grant whose holder's key is missing".into())),
    }
}

/// How long the lease `id` has left, in whole seconds (`None` once it is gone).
pub async fn time_left(c: &mut Client, id: i64) -> Result<Option<i64>, Fail> {
    if id == 0 {
        return Ok(None);
    }
    let resp = c.lease_time_to_live(id, None).await?;
    if resp.ttl() > MAX_LEASE_TTL_S {
        return Err(Fail::Odd(format!("a lease's time to live of {}s", resp.ttl())));
    }
    Ok((resp.ttl() >= 0).then_some(resp.ttl()))
}

/// What [`deletions`] saw.
pub enum Deletions {
    /// Nothing before the deadline.
    None,
    /// These keys, deleted up to this revision (the last event's).
    Keys(Vec<Vec<u8>>, u64),
    /// The history after `after` is compacted away: look again.
    Compacted,
}

/// Waits for deletions of keys in `[start, end)` (only `start` if `end` is empty) after
/// revision `after`, until `deadline`: the keys of the first batch seen.
pub async fn deletions(
    c: &mut Client,
    (start, end): (Vec<u8>, Vec<u8>),
    after: u64,
    deadline: Option<tokio::time::Instant>,
) -> Result<Deletions, Fail> {
    let mut options = WatchOptions::new()
        .with_start_revision(after as i64 + 1)
        .with_filters([WatchFilterType::NoPut]);
    if !end.is_empty() {
        options = options.with_range(end);
    }
    let wait = async {
        let mut stream = c.watch(start, Some(options)).await?;
        loop {
            match stream.message().await? {
                None => return Err(Fail::Net("the watch stream ended".into())),
                Some(resp) if resp.canceled() => return Ok(Deletions::Compacted),
                Some(resp) => {
                    let gone: Vec<_> = resp
                        .events()
                        .iter()
                        .filter(|e| e.event_type() == EventType::Delete)
                        .filter_map(|e| e.kv())
                        .collect();
                    if let Some(last) = gone.iter().map(|kv| kv.mod_revision()).max() {
                        let last = u64::try_from(last)
                            .map_err(|_| Fail::Odd(format!("a deletion at revision {last}")))?;
                        let keys = gone.iter().map(|kv| kv.key().to_vec()).collect();
                        return Ok(Deletions::Keys(keys, last));
                    }
                }
            }
        }
    };
    match deadline {
        None => wait.await,
        Some(d) => match tokio::time::timeout_at(d, wait).await {
            Ok(r) => r,
            Err(_) => Ok(Deletions::None),
        },
    }
}

/// The live keys in `[start, end)` and the revision they were read at.
pub async fn live_in(
    c: &mut Client,
    (start, end): (Vec<u8>, Vec<u8>),
) -> Result<(Vec<Kv>, u64), Fail> {
    let resp = c.txn(Txn::new().and_then([range((start, end), 0)])).await?;
    let at = revision(&resp)?;
    Ok((ranges(&resp).into_iter().next().unwrap_or_default(), at))
}

/// Keeps the etcd lease `id` alive once and checks that `name` still carries `token`
/// (attached to `id`), recording the renewal and reading whether it was asked to be
/// released. Both requests are in flight at once.
pub async fn renew_same(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    token: u64,
    id: i64,
    record: &HolderRecord,
) -> Result<Renewed, Fail> {
    let sent = Instant::now();
    let key = keys.lease(name);
    let check = Txn::new()
        .when([
            Compare::create_revision(key.clone(), CompareOp::Equal, token as i64),
            // Still on the etcd lease kept alive here: a renewal with another TTL racing
            // this one may have moved it, and revokes this lease (the put would bring
            // the key back onto it, to be deleted under a holder that renewed).
            Compare::lease(key.clone(), CompareOp::Equal, id),
        ])
        .and_then([
            TxnOp::put(key, record.renewed_now().encode(), Some(PutOptions::new().with_lease(id))),
            TxnOp::get(keys.asks(name), None),
        ])
        .or_else(story(keys, name));
    let mut c2 = c.clone();
    let (alive, checked) = tokio::join!(c.lease_keep_alive(id), c2.txn(check));
    let checked = checked?;
    if !checked.succeeded() {
        return Err(not_renewed(&checked, token));
    }
    alive?;
    Ok(Renewed { sent, asked: asked(&checked, 1, token) })
}

/// What a renewal learnt besides its success.
#[derive(Clone, Copy, Debug)]
pub struct Renewed {
    /// When the keep-alive was sent (the holder's deadline counts from there).
    pub sent: Instant,
    /// Whether someone has asked the holder to release the grant (see [`ask`]).
    pub asked: bool,
}

/// Whether the read of `asks/N` at `i` of `resp` asks the grant `token` to be released:
/// the key was put after the grant was created.
fn asked(resp: &TxnResponse, i: usize, token: u64) -> bool {
    first(&ranges(resp), i).is_some_and(|kv| kv.modified > token)
}

/// Asks the holder of `name`'s live grant (only the grant `token`, when given) to
/// release it: one transaction that puts `asks/N` if the grant is live, and reads which
/// grant that was. Returns its token; `None` when nothing is held (without `token`).
pub async fn ask(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    token: Option<u64>,
) -> Result<Option<u64>, Fail> {
    let key = keys.lease(name);
    let live = match token {
        Some(t) => Compare::create_revision(key.clone(), CompareOp::Equal, t as i64),
        None => Compare::create_revision(key.clone(), CompareOp::Greater, 0),
    };
    let txn = Txn::new()
        .when([live])
        .and_then([TxnOp::put(keys.asks(name), b"asked".to_vec(), None), TxnOp::get(key, None)])
        .or_else(story(keys, name));
    let resp = c.txn(txn).await?;
    if !resp.succeeded() {
        return match token {
            None => Ok(None),
            Some(t) => Err(lost(&resp, t)),
        };
    }
    match first(&ranges(&resp), 1) {
        Some(kv) if token.unwrap_or(kv.create) == kv.create => Ok(Some(kv.create)),
        other => Err(Fail::Odd(format!(
            "a request to release {token:?} read back the grant {:?}",
            other.map(|kv| kv.create)
        ))),
    }
}

/// Why a guarded transaction on the grant `token` was refused, from its `else` reads.
fn lost(resp: &TxnResponse, token: u64) -> Fail {
    match why_not_live(&ranges(resp), 0, token) {
        Some(reason) => Fail::Lost(reason),
        // The compare failed, yet the same transaction read the grant live.
        None => Fail::Odd(format!("a refused transaction on grant {token} read it live")),
    }
}

/// Why a renewal guarded by the grant's token and etcd lease was refused: lost, or (its
/// key read live with the token) moved to another etcd lease by a renewal racing this
/// one, which renewed nothing: retryable.
fn not_renewed(resp: &TxnResponse, token: u64) -> Fail {
    if first(&ranges(resp), 0).is_some_and(|kv| kv.create == token) {
        return Fail::Net("the grant moved to another etcd lease meanwhile: renew again".into());
    }
    lost(resp, token)
}

/// Moves `name`'s grant `token` from etcd lease `old` to a new one of `ttl_s`: a renewal
/// with another TTL. The old lease is revoked once the key has moved. Also says whether
/// the grant was asked to be released.
pub async fn renew_relet(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    token: u64,
    old: i64,
    ttl_s: i64,
    record: &HolderRecord,
) -> Result<(EtcdLeaseGrant, bool), Fail> {
    let lease = lease_grant(c, ttl_s).await?;
    let key = keys.lease(name);
    let record = HolderRecord { ttl_s: lease.ttl_s, asked_s: ttl_s, ..record.renewed_now() };
    let txn = Txn::new()
        .when([
            Compare::create_revision(key.clone(), CompareOp::Equal, token as i64),
            Compare::lease(key.clone(), CompareOp::Equal, old),
        ])
        .and_then([
            TxnOp::put(key, record.encode(), Some(PutOptions::new().with_lease(lease.id))),
            TxnOp::get(keys.asks(name), None),
        ])
        .or_else(story(keys, name));
    let resp = c.txn(txn).await;
    match resp {
        Ok(r) if r.succeeded() => {
            tokio::spawn(revoke_later(c, old));
            Ok((lease, asked(&r, 1, token)))
        }
        Ok(r) => {
            tokio::spawn(revoke_later(c, lease.id));
            Err(not_renewed(&r, token))
        }
        Err(e) => {
            tokio::spawn(revoke_later(c, lease.id));
            Err(e.into())
        }
    }
}

/// Reads `name`'s live grant: its key, or why `token` is not live.
pub async fn read_grant(c: &mut Client, keys: &Keys, name: &str, token: u64) -> Result<Kv, Fail> {
    let resp = c.txn(Txn::new().and_then(story(keys, name))).await?;
    let r = ranges(&resp);
    match why_not_live(&r, 0, token) {
        None => first(&r, 0).cloned().ok_or_else(|| Fail::Odd("a grant read back empty".into())),
        Some(reason) => Err(Fail::Lost(reason)),
    }
}

/// Rewrites the holder record of the live grant `token` (detaching it).
pub async fn rewrite(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    token: u64,
    id: i64,
    record: &HolderRecord,
) -> Result<(), Fail> {
    let key = keys.lease(name);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, token as i64)])
        .and_then([TxnOp::put(key, record.encode(), Some(PutOptions::new().with_lease(id)))])
        .or_else(story(keys, name));
    let resp = c.txn(txn).await?;
    if resp.succeeded() {
        Ok(())
    } else {
        Err(lost(&resp, token))
    }
}

/// Ends the grant `token` of `name`, as `end` says (released or revoked). The grant's
/// etcd lease, now without a key, goes to `keep` if given (a holder's own release:
/// see [`Spares`]), else is revoked in the background.
pub async fn end(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    end: End,
    keep: Option<(&Spares, Spare)>,
) -> Result<(), Fail> {
    let token = end.token();
    let key = keys.lease(name);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, token as i64)])
        .and_then([
            TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key())),
            TxnOp::put(keys.ends(name), end.encode(), None),
        ])
        .or_else(story(keys, name));
    let resp = c.txn(txn).await?;
    if !resp.succeeded() {
        return Err(lost(&resp, token));
    }
    let lease = resp.0.responses.first().and_then(|op| match &op.response {
        Some(PbTxnOpResponse::ResponseDeleteRange(d)) => d.prev_kvs.first().map(|kv| kv.lease),
        _ => None,
    });
    if let Some(id) = lease.filter(|id| *id != 0) {
        match keep {
            Some((spares, spare)) if spare.lease.id == id && spares.keep(spare) => {}
            _ => {
                tokio::spawn(revoke_later(c, id));
            }
        }
    }
    Ok(())
}

/// Everything a table knows of one name: `lease/N`, `grants/N`, `ends/N`.
#[derive(Default)]
pub struct Story {
    pub live: Option<Kv>,
    pub grants: Option<Kv>,
    pub end: Option<End>,
}

/// The story of one name, and the revision it was read at.
pub async fn story_at(c: &mut Client, keys: &Keys, name: &str) -> Result<(Story, u64), Fail> {
    let resp = c.txn(Txn::new().and_then(story(keys, name))).await?;
    let r = ranges(&resp);
    let story = Story {
        live: first(&r, 0).cloned(),
        grants: first(&r, 1).cloned(),
        end: first(&r, 2).and_then(|kv| End::decode(&kv.value)),
    };
    Ok((story, revision(&resp)?))
}

/// The stories of every name, in one read (one consistent revision), sorted by name;
/// seats (see [`super::keys`]) are stories of their own, under their key names.
pub async fn stories(c: &mut Client, keys: &Keys) -> Result<Stories, Fail> {
    let dirs = [keys.lease_dir(), keys.grants_dir(), keys.ends_dir(), keys.queue_dir()];
    let ops: Vec<TxnOp> =
        dirs.iter().map(|d| TxnOp::get(d.clone(), Some(GetOptions::new().with_prefix()))).collect();
    let resp = c.txn(Txn::new().and_then(ops)).await?;
    Ok(collect(&dirs, &ranges(&resp)))
}

/// Stories by key name, and the fair queues' places.
pub type Stories = (Vec<(String, Story)>, Vec<Kv>);

/// The stories of `name` and of each of its seats, in one read.
pub async fn stories_of(c: &mut Client, keys: &Keys, name: &str) -> Result<Stories, Fail> {
    let dirs = [keys.lease_dir(), keys.grants_dir(), keys.ends_dir(), keys.queue_dir()];
    let ops: Vec<TxnOp> = dirs
        .iter()
        .map(|d| range(([d.as_slice(), name.as_bytes()].concat(), Keys::seats_in(d, name).1), 0))
        .collect();
    let resp = c.txn(Txn::new().and_then(ops)).await?;
    Ok(collect(&dirs, &ranges(&resp)))
}

fn collect(dirs: &[Vec<u8>; 4], r: &[Vec<Kv>]) -> Stories {
    let mut by_name: std::collections::BTreeMap<String, Story> = Default::default();
    let empty = Vec::new();
    for (i, dir) in dirs.iter().enumerate().take(3) {
        for kv in r.get(i).unwrap_or(&empty) {
            let Some(name) = Keys::name_in(dir, &kv.key) else { continue };
            let s = by_name.entry(name.to_owned()).or_default();
            match i {
                0 => s.live = Some(kv.clone()),
                1 => s.grants = Some(kv.clone()),
                _ => s.end = End::decode(&kv.value),
            }
        }
    }
    // A name is known once granted: ends/N without grants/N is debris.
    let known = by_name.into_iter().filter(|(_, s)| s.grants.is_some() || s.live.is_some());
    (known.collect(), r.get(3).cloned().unwrap_or_default())
}

/// The key name of the seat of `name` whose live key was created at `token`, or whose
/// latest grant was `token`: where a by-token operation on a seat's grant goes.
pub async fn seat_of(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    token: u64,
) -> Result<Option<String>, Fail> {
    let (lease_dir, grants_dir) = (keys.lease_dir(), keys.grants_dir());
    let txn = Txn::new().and_then([
        range(Keys::seats_in(&lease_dir, name), 0),
        range(Keys::seats_in(&grants_dir, name), 0),
    ]);
    let r = ranges(&c.txn(txn).await?);
    let live = r.first().into_iter().flatten().find(|kv| kv.create == token);
    let latest = r.get(1).into_iter().flatten().find(|kv| kv.modified == token);
    Ok(live
        .and_then(|kv| Keys::name_in(&lease_dir, &kv.key))
        .or_else(|| latest.and_then(|kv| Keys::name_in(&grants_dir, &kv.key)))
        .map(str::to_owned))
}

/// Takes a place in `name`'s fair queue: an etcd lease of `ttl_s` (`LeaseGrant`), then
/// one transaction putting the place on it and reading the whole queue. Returns the
/// lease, the place's ticket (its create revision) and the places ahead of it.
pub async fn enqueue(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    id: u64,
    ttl_s: i64,
    make_record: impl Fn(i64) -> HolderRecord,
) -> Result<(EtcdLeaseGrant, u64, Vec<Kv>), Fail> {
    let lease = lease_grant(c, ttl_s).await?;
    let put = TxnOp::put(
        keys.place(name, id),
        make_record(lease.ttl_s).encode(),
        Some(PutOptions::new().with_lease(lease.id)),
    );
    let resp = match c.txn(Txn::new().and_then([put, range(keys.queue_of(name), 0)])).await {
        Ok(r) => r,
        Err(e) => {
            tokio::spawn(revoke_later(c, lease.id));
            return Err(e.into());
        }
    };
    let ticket = revision(&resp)?;
    let ahead = ranges(&resp).into_iter().nth(1).unwrap_or_default();
    Ok((lease, ticket, ahead.into_iter().filter(|kv| kv.create < ticket).collect()))
}

/// The places of `name`'s queue ahead of `ticket`, and the revision read at.
pub async fn ahead_of(
    c: &mut Client,
    keys: &Keys,
    name: &str,
    ticket: u64,
) -> Result<(Vec<Kv>, u64), Fail> {
    let (all, at) = live_in(c, keys.queue_of(name)).await?;
    Ok((all.into_iter().filter(|kv| kv.create < ticket).collect(), at))
}

/// Keeps the etcd lease `id` alive once: `Lost` once it is gone. (`lease_keep_alive`
/// returns once the server has answered the first keep-alive, and refuses an answer
/// with no TTL left: "lease not found", which is `Lost(Expired)`.)
pub async fn keep_alive_once(c: &mut Client, id: i64) -> Result<(), Fail> {
    c.lease_keep_alive(id).await?;
    Ok(())
}

/// etcd's longest lease TTL (its `MaxLeaseTTL`, 9,000,000,000 s): a reply with more is
/// not from a real server, and more could overflow the clocks it is added to (a
/// holder's deadline, `expires_at`).
const MAX_LEASE_TTL_S: i64 = 9_000_000_000;
