//! Elections on an etcd table. As in shared memory, an election is the lease on its
//! name: candidates campaign by acquiring it (a watch on the key wakes them), the
//! leader is the key's holder and its term the key's create revision. Here: who leads,
//! the observer (one watch on the key, from the revision of one first read: it sees
//! every grant and every end, without polling), and the interrupt that stops a
//! campaigning [`crate::election::Runner`] from another thread.
//!
//! | operation | requests (round trips) |
//! |---|---|
//! | campaign | the grant (1 on a spare etcd lease, else 2); refused: a watch on the key (deletes), then the grant again |
//! | resign | the release transaction (1) |
//! | leader | one read of the name's keys, then `LeaseTimeToLive` of the leader's etcd lease (2) |
//! | observe | one read (and `LeaseTimeToLive` when someone leads), then one watch stream on the key; `LeaseTimeToLive` for each new leader reported |

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{EventType, WatchOptions, WatchStream};
use tokio::sync::Notify;

use super::keys::HolderRecord;
use super::recipe::{self, Kv};
use super::{bounded, EtcdTable, Fail};
use crate::election::{Change, Leader};
use crate::error::Result;
use crate::identity;

/// Wakes a campaign from another thread: fired once, and then fired for good.
#[derive(Debug, Default)]
pub(crate) struct CampaignStop {
    fired: AtomicBool,
    wake: Notify,
}

impl CampaignStop {
    pub(crate) fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Returns once fired (at once if it was).
    pub(crate) async fn fired(&self) {
        let woken = self.wake.notified();
        tokio::pin!(woken);
        // Registered before the flag is read: a `fire` after the read wakes it.
        woken.as_mut().enable();
        if !self.is_fired() {
            woken.await;
        }
    }
}

impl EtcdTable {
    /// Who leads the election on `name`: the holder of the live grant, while its etcd
    /// lease has time left. A dead leader leads until its TTL runs out (no host can
    /// tell that a process on another host is dead).
    pub(crate) fn leader(&self, name: &str) -> Result<Option<Leader>> {
        Ok(self.get(name)?.as_ref().and_then(Leader::from_info))
    }
}

/// The leader that the grant `kv` makes, if its etcd lease has time left.
async fn leader_of(
    c: &mut etcd_client::Client,
    kv: &Kv,
) -> std::result::Result<Option<Leader>, Fail> {
    let left = recipe::time_left(c, kv.lease).await?;
    let record = HolderRecord::decode(&kv.value);
    Ok(left.map(|l| leader(kv.create, record.as_ref(), Duration::from_secs(l.max(0) as u64))))
}

/// The leader that the grant `term`, held by `record`, makes with `remaining` left.
pub(crate) fn leader(term: u64, record: Option<&HolderRecord>, remaining: Duration) -> Leader {
    Leader {
        term,
        holder: record.map(HolderRecord::holder),
        since: record.and_then(HolderRecord::acquired_at),
        expires_at: Some(SystemTime::now() + remaining),
        remaining,
    }
}

/// What the watch of an observer brought, in order.
enum Event {
    /// The key was put (granted, renewed or rewritten).
    Put(Kv),
    /// The key was deleted at this revision (released, revoked, expired).
    Deleted(u64),
    /// The watch was cancelled: history is compacted past where it started.
    Compacted,
    /// The stream ended or failed.
    Broken,
}

/// The etcd side of an [`crate::election::Observer`]: the state of the name's key as
/// of revision `at`, kept up to date by a watch from `at + 1`, and what was last
/// reported. Every grant is a put of a new key and every end a delete, so the observer
/// counts exactly the terms it did not report ([`Change::skipped`]); after a compaction
/// (events lost) it reads again and counts them from `grants/N`'s version.
pub(crate) struct EtcdObserver {
    table: EtcdTable,
    name: String,
    /// The process that made `stream` (a forked child must not use it).
    pid: u32,
    stream: Option<WatchStream>,
    /// Whether the fields below come from a read (not at first, nor after a compaction).
    synced: bool,
    at: u64,
    /// The key, while it exists.
    live: Option<Kv>,
    /// The latest term granted (0: never).
    latest: u64,
    /// Grants so far (`grants/N`'s version, counted on by the events).
    grants: u64,
    /// Terms begun since the last report.
    begun: u64,
    /// Whether `begun` is unknown (the name's history was reset meanwhile).
    unknown: bool,
    /// The term last reported, and whether it was leading.
    last: Option<(u64, bool)>,
}

impl std::fmt::Debug for EtcdObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdObserver")
            .field("name", &self.name)
            .field("at", &self.at)
            .field("last", &self.last)
            .finish()
    }
}

impl EtcdObserver {
    pub(crate) fn new(table: &EtcdTable, name: &str) -> EtcdObserver {
        EtcdObserver {
            table: table.clone(),
            name: name.to_owned(),
            pid: identity::pid(),
            stream: None,
            synced: false,
            at: 0,
            live: None,
            latest: 0,
            grants: 0,
            begun: 0,
            unknown: false,
            last: None,
        }
    }

    /// Waits for the next change (the first call reports the state at once), at most
    /// `timeout` (`Ok(None)` then). A failing cluster is an error; the observer stays
    /// usable, and the next call goes on from where this one stopped.
    pub(crate) fn next_change(&mut self, timeout: Option<Duration>) -> Result<Option<Change>> {
        crate::table::Key::new(&self.name)?;
        if self.pid != identity::pid() {
            // Inherited through fork: the stream runs on the parent's connection.
            std::mem::forget(self.stream.take());
            self.pid = identity::pid();
        }
        let until = timeout.and_then(|t| Instant::now().checked_add(t)); // too far: forever
        loop {
            if !self.synced {
                self.sync()?;
            }
            if let Some(change) = self.change()? {
                return Ok(Some(change));
            }
            if !self.wait(until)? {
                return Ok(None);
            }
        }
    }

    /// Reads the name's keys, counting the grants since the last read.
    fn sync(&mut self) -> Result<()> {
        let s = &self.table.shared;
        let (keys, n, mut c) = (s.keys.clone(), self.name.clone(), s.conn()?.client());
        let (story, at) = s.run(0, async move { recipe::story_at(&mut c, &keys, &n).await })?;
        let grants = story.grants.as_ref().map_or(0, |kv| kv.version);
        let changed =
            story.live.as_ref().map(|kv| kv.create) != self.live.as_ref().map(|kv| kv.create);
        if self.last.is_some() {
            if grants < self.grants {
                self.unknown = true; // the table was removed and made again
            }
            self.begun +=
                grants.saturating_sub(self.grants).max(u64::from(changed && story.live.is_some()));
        }
        self.grants = grants;
        self.latest = story.grants.as_ref().map_or(0, |kv| kv.modified);
        self.latest = self.latest.max(story.live.as_ref().map_or(0, |kv| kv.create));
        self.live = story.live;
        self.at = at;
        self.synced = true;
        Ok(())
    }

    /// The change from what was last reported to the state as of `at`, if it is one.
    fn change(&mut self) -> Result<Option<Change>> {
        if let (Some(kv), Some((term, _))) = (&self.live, self.last) {
            if kv.create == term {
                return Ok(None); // the term reported (a renewal, or its expiry is on its way)
            }
        }
        let (term, leader) = match &self.live {
            Some(kv) => {
                let s = &self.table.shared;
                let (term, kv, mut c) = (kv.create, kv.clone(), s.conn()?.client());
                let leader = s.run(0, async move { leader_of(&mut c, &kv).await })?;
                (term, leader)
            }
            None => (self.latest, None),
        };
        let leading = leader.is_some();
        let skipped = match self.last {
            None => Some(0),
            Some((last, was_leading)) => {
                let new = self.begun.max(u64::from(term != last));
                if !leading && new == 0 && !was_leading {
                    return Ok(None);
                }
                // The current term, when it leads, is reported; the others were missed.
                let missed = if leading { new - 1 } else { new };
                (!self.unknown).then(|| u32::try_from(missed).unwrap_or(u32::MAX))
            }
        };
        self.last = Some((term, leading));
        self.begun = 0;
        self.unknown = false;
        Ok(Some(Change { term, leader, skipped }))
    }

    /// Waits for events until `until` and applies them; `false` once `until` has
    /// passed with nothing new.
    fn wait(&mut self, until: Option<Instant>) -> Result<bool> {
        let s = &self.table.shared;
        let conn = s.conn()?;
        let (mut c, stream) = (conn.client(), self.stream.take());
        let (key, from, limit) = (s.keys.lease(&self.name), self.at as i64 + 1, s.location.timeout);
        let deadline = until.map(tokio::time::Instant::from_std);
        let (stream, events) = conn
            .run(async move {
                let mut stream = match stream {
                    Some(w) => w,
                    None => {
                        let options = WatchOptions::new().with_start_revision(from);
                        bounded(limit, async { Ok(c.watch(key, Some(options)).await?) }).await?
                    }
                };
                let mut events = Vec::new();
                // The first message as long as asked, then whatever else is there already.
                let mut message = match deadline {
                    None => stream.message().await,
                    Some(d) => match tokio::time::timeout_at(d, stream.message()).await {
                        Ok(m) => m,
                        Err(_) => return Ok((Some(stream), events)),
                    },
                };
                loop {
                    if !collect(message, &mut events) {
                        return Ok((None, events));
                    }
                    match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                        Ok(m) => message = m,
                        Err(_) => return Ok((Some(stream), events)),
                    }
                }
            })
            .map_err(|f| f.into_error(&s.text, 0))?;
        self.stream = stream;
        let news = !events.is_empty();
        for event in events {
            match event {
                Event::Put(kv) if kv.modified > self.at => {
                    self.at = kv.modified;
                    if self.live.as_ref().map(|l| l.create) != Some(kv.create) {
                        if kv.create <= self.latest {
                            let reason = format!(
                                "a watch reported a new grant {} after grant {}",
                                kv.create, self.latest
                            );
                            return Err(Fail::Odd(reason).into_error(&s.text, 0));
                        }
                        self.begun += 1;
                        self.grants += 1;
                        self.latest = self.latest.max(kv.create);
                    }
                    self.live = Some(kv);
                }
                Event::Deleted(at) if at > self.at => {
                    self.at = at;
                    self.live = None;
                }
                Event::Put(_) | Event::Deleted(_) => {} // already applied (untrusted)
                Event::Compacted => self.synced = false,
                Event::Broken => {
                    // Watch again from `at` (a member went away): after a pause, so
                    // that an unreachable cluster is not hammered.
                    let pause = Duration::from_millis(100);
                    std::thread::sleep(match until {
                        Some(u) => pause.min(u.saturating_duration_since(Instant::now())),
                        None => pause,
                    });
                }
            }
        }
        Ok(news || until.map_or(true, |u| Instant::now() < u))
    }
}

impl Drop for EtcdObserver {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else { return };
        // Dropped where it runs, on its connection's runtime; a forked child's copy runs
        // on the parent's connection: left alone.
        match self.table.shared.conn.get() {
            Ok(conn) if self.pid == identity::pid() => conn.spawn(async move { drop(stream) }),
            _ => std::mem::forget(stream),
        }
    }
}

/// Adds what a watch message brings to `events`; `false` when the stream is over.
fn collect(
    message: std::result::Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    events: &mut Vec<Event>,
) -> bool {
    let resp = match message {
        Ok(Some(resp)) => resp,
        Ok(None) | Err(_) => {
            events.push(Event::Broken);
            return false;
        }
    };
    if resp.canceled() {
        events.push(if resp.compact_revision() > 0 { Event::Compacted } else { Event::Broken });
        return false;
    }
    for e in resp.events() {
        let Some(kv) = e.kv() else { continue };
        let (create, modified) = (kv.create_revision(), kv.mod_revision());
        match e.event_type() {
            EventType::Put if create > 0 && modified >= create => events.push(Event::Put(Kv {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                create: create as u64,
                modified: modified as u64,
                version: kv.version().max(0) as u64,
                lease: kv.lease(),
            })),
            EventType::Delete if modified > 0 => events.push(Event::Deleted(modified as u64)),
            // Impossible revisions: a broken stream, watched again from what is known.
            _ => {
                events.push(Event::Broken);
                return false;
            }
        }
    }
    true
}
