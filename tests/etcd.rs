//! The etcd backend against a real three-member cluster (tests/common/etcd.rs): the API
//! as it makes sense remotely, exclusivity and fencing among client processes judged by
//! their own conservative validity intervals (one host, one clock), dead and stopped
//! holders, faults of the members themselves (kill -9 and SIGSTOP, the leader
//! included), an unreachable cluster, TLS, user/password auth, and fork.

#![cfg(feature = "etcd")]

mod common;

use std::time::{Duration, Instant};

use common::etcd::{loc, mono_ns, mono_of, table, Cluster, Setup};
use common::kinds::{check_kinds, kind_options, seen_of, Seen};
use common::{say, Kid, Watchdog};
use shmlease::election::{Change, StopReason};
use shmlease::etcd::{EtcdLease, EtcdTable, DRIFT_PER_MILLE};
use shmlease::{
    AcquireOptions, Error, LeaseState, LeaseTable, Location, LostReason, Notice, TableOptions,
};

const LONG: Duration = Duration::from_secs(60);

#[test]
#[ignore = "a child process's entry point, run by the other tests"]
fn child_main() {
    match std::env::var(common::ROLE).as_deref() {
        Ok("etcd_contend") => std::process::exit(role_contend()),
        Ok("etcd_hold") => std::process::exit(role_hold()),
        Ok("etcd_lead") => std::process::exit(role_lead()),
        Ok("etcd_candidate") => std::process::exit(role_candidate()),
        Ok("etcd_fair") => std::process::exit(role_fair()),
        _ => common::run_child(),
    }
}

fn env(key: &str) -> String {
    std::env::var(format!("SHMLEASE_IT_{key}")).unwrap_or_else(|_| panic!("missing {key}"))
}

/// Takes `NAME` `COUNT` times, each for a short while, and reports each grant as
/// `@@grant TOKEN START END`: the monotonic times between which this process believed
/// it held the lease (from `acquire`'s return to the earlier of its deadline and the
/// moment before it released). Retries through an unavailable cluster.
fn role_contend() -> i32 {
    let location = loc(&env("LOC"));
    let name = env("NAME");
    let count: u32 = env("COUNT").parse().unwrap();
    let work = Duration::from_millis(env("WORK_MS").parse().unwrap());
    // `x` exclusive (the default), `pN` N permits, `s` shared.
    let kind = std::env::var("SHMLEASE_IT_KIND").unwrap_or_else(|_| "x".into());
    let options = kind_options(&kind).wait(Some(Duration::from_secs(30)));
    let table = loop {
        match EtcdTable::open(&location) {
            Ok(t) => break t,
            Err(Error::Unavailable { .. }) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("open: {e}"),
        }
    };
    let mut done = 0;
    while done < count {
        let begin = mono_ns();
        let lease = match table.acquire_with(&name, Duration::from_secs(2), &options) {
            Ok(l) => l,
            Err(Error::Unavailable { reason, .. }) => {
                say("unavailable", reason.replace('\n', " "));
                continue;
            }
            Err(e) => panic!("acquire: {e}"),
        };
        let start = mono_ns();
        std::thread::sleep(work);
        let end = mono_ns().min(mono_of(lease.deadline()));
        let token = lease.token();
        let released = lease.release();
        say("grant", format!("{token} {start} {end} {begin} {kind}"));
        if let Err(e) = released {
            say("release_failed", e.to_string().replace('\n', " "));
        }
        done += 1;
    }
    0
}

/// Takes `NAME` and reports `@@held TOKEN DEADLINE`; then, once the file `GO` exists,
/// renews and releases, reporting each outcome (`@@renew ...`, `@@release ...`).
fn role_hold() -> i32 {
    let table = EtcdTable::open(&loc(&env("LOC"))).unwrap();
    let ttl = Duration::from_millis(env("TTL_MS").parse().unwrap());
    let kind = std::env::var("SHMLEASE_IT_KIND").unwrap_or_else(|_| "x".into());
    let lease = table.acquire_with(&env("NAME"), ttl, &kind_options(&kind)).unwrap();
    say("held", format!("{} {}", lease.token(), mono_of(lease.deadline())));
    let go = std::path::PathBuf::from(env("GO"));
    assert!(common::wait_for_file(&go, LONG * 5), "no GO");
    say("renew", outcome(lease.renew(ttl)));
    say("release", outcome(lease.release()));
    0
}

/// Campaigns for `NAME` (TTL `TTL_MS`), reports `@@leading TERM`, then leads (its
/// keep-alive renewing) until killed.
fn role_lead() -> i32 {
    let table = LeaseTable::open(env("LOC").as_str()).unwrap();
    let ttl = Duration::from_millis(env("TTL_MS").parse().unwrap());
    let election = table.election(&env("NAME")).unwrap().ttl(ttl).unwrap().label("kid").unwrap();
    let leadership = election.campaign(Some(LONG)).unwrap();
    say("leading", leadership.term());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        assert!(leadership.is_leader(), "lost leadership: {:?}", leadership.lost());
    }
}

/// Campaigns for `NAME` `COUNT` times, leading each term for up to `HOLD_MS` (while
/// `is_leader()` says so, its keep-alive renewing), and reports each term as `@@grant
/// TERM START END`: the monotonic times between which this process believed it led
/// (from `campaign`'s return to the earlier of its own deadline and the moment before
/// it resigned). Retries through an unavailable cluster.
fn role_candidate() -> i32 {
    let location = env("LOC");
    let table = loop {
        match LeaseTable::open(location.as_str()) {
            Ok(t) => break t,
            Err(Error::Unavailable { .. }) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("open: {e}"),
        }
    };
    let count: u32 = env("COUNT").parse().unwrap();
    let hold = Duration::from_millis(env("HOLD_MS").parse().unwrap());
    let election = table.election(&env("NAME")).unwrap().ttl(Duration::from_secs(1)).unwrap();
    let mut done = 0;
    while done < count {
        let leadership = match election.campaign(Some(LONG)) {
            Ok(l) => l,
            Err(Error::Unavailable { reason, .. }) => {
                say("unavailable", reason.replace('\n', " "));
                continue;
            }
            Err(e) => panic!("campaign: {e}"),
        };
        let start = mono_ns();
        let began = Instant::now();
        while began.elapsed() < hold && leadership.is_leader() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let end = mono_ns().min(mono_of(leadership.lease().deadline()));
        let term = leadership.term();
        let resigned = leadership.resign();
        say("grant", format!("{term} {start} {end}"));
        if let Err(e) = resigned {
            say("resign_failed", e.to_string().replace('\n', " "));
        }
        done += 1;
    }
    0
}

/// Takes `NAME` fairly (waiting), reports `@@granted TOKEN`, holds it 100 ms, releases.
fn role_fair() -> i32 {
    let table = LeaseTable::open(env("LOC").as_str()).unwrap();
    let fair = AcquireOptions::new().fair(true).wait(Some(LONG));
    let lease = table.acquire_with(&env("NAME"), Duration::from_secs(2), &fair).unwrap();
    say("granted", lease.token());
    std::thread::sleep(Duration::from_millis(100));
    lease.release().unwrap();
    0
}

fn outcome(r: Result<(), Error>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(Error::Lost { reason, .. }) => format!("lost {reason:?}"),
        Err(e) => format!("error {e}"),
    }
}

/// `(token, start, end)` from a child's `@@grant` lines.
fn grants_of(kid: &Kid) -> Vec<(u64, u64, u64)> {
    kid.lines_so_far()
        .iter()
        .filter_map(|l| l.strip_prefix("@@grant "))
        .map(|rest| {
            let v: Vec<u64> = rest.split(' ').take(3).map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect()
}

/// No two validity intervals overlap, and tokens grow in the order of the grants.
fn check_exclusive(mut grants: Vec<(u64, u64, u64)>) {
    grants.sort_by_key(|g| g.1);
    for w in grants.windows(2) {
        let ((t0, _, e0), (t1, s1, _)) = (w[0], w[1]);
        assert!(
            e0 <= s1,
            "overlap: token {t0} held until {e0}, token {t1} from {s1} ({} µs)",
            (e0 - s1) / 1000
        );
        assert!(t0 < t1, "token regression: {t0} then {t1}");
    }
}

fn contenders(wd: &Watchdog, cluster: &Cluster, prefix: &str, n: usize, count: u32) -> Vec<Kid> {
    (0..n).map(|i| contender(wd, cluster, prefix, i, count, "x", 5)).collect()
}

fn contender(
    wd: &Watchdog,
    cluster: &Cluster,
    prefix: &str,
    i: usize,
    count: u32,
    kind: &str,
    work_ms: u32,
) -> Kid {
    Kid::spawn(
        wd,
        &format!("contender {i} ({kind})"),
        "etcd_contend",
        &[
            ("LOC", cluster.location(prefix)),
            ("NAME", "shared".into()),
            ("COUNT", count.to_string()),
            ("WORK_MS", work_ms.to_string()),
            ("KIND", kind.into()),
        ],
    )
}

// ------------------------------------------------------------------------------------
// The API
// ------------------------------------------------------------------------------------

#[test]
fn create_open_and_the_descriptor() {
    let _wd = Watchdog::new("create_open", LONG * 2);
    let cluster = Cluster::start("create-open", Setup::default());
    let l = loc(&cluster.location("t1"));
    assert!(matches!(EtcdTable::open(&l), Err(Error::NotFound { .. })));
    let t = EtcdTable::create(&l, &TableOptions::new().capacity(10)).unwrap();
    assert!(matches!(
        EtcdTable::create(&l, &TableOptions::new()),
        Err(Error::AlreadyExists { .. })
    ));
    let info = EtcdTable::open(&l).unwrap().info().unwrap();
    assert_eq!((info.capacity, info.format_version, info.names), (10, 1, 0));
    assert_eq!(info.creator_pid, std::process::id());
    drop(t);

    cluster.ctl(&["put", "/t2/.shmlease/table", "shmlease-etcd-table format=99"]);
    let e = EtcdTable::open(&loc(&cluster.location("t2"))).unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e}");
    cluster.ctl(&["put", "/t3/.shmlease/table", "something else"]);
    let e = EtcdTable::open(&loc(&cluster.location("t3"))).unwrap_err();
    assert!(matches!(e, Error::NotATable { .. }), "{e}");

    // Racing open_or_create from threads: one table.
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let l = loc(&cluster.location("t4"));
            std::thread::spawn(move || {
                EtcdTable::open_or_create(&l, &TableOptions::new()).map(|_| ())
            })
        })
        .collect();
    for r in racers {
        r.join().unwrap().unwrap();
    }

    // remove refuses while a lease is held, then removes everything.
    let t = table(&cluster, "t5");
    let lease = t.try_acquire("job", Duration::from_secs(5)).unwrap();
    let l5 = loc(&cluster.location("t5"));
    match EtcdTable::remove(&l5, false) {
        Err(Error::InUse { leases, .. }) => assert_eq!(leases[0].token, lease.token()),
        other => panic!("{other:?}"),
    }
    lease.release().unwrap();
    EtcdTable::remove(&l5, false).unwrap();
    assert!(matches!(EtcdTable::open(&l5), Err(Error::NotFound { .. })));
    assert_eq!(cluster.ctl(&["get", "--prefix", "/t5/"]), "");

    // With force, while a lease is held: removed, and the holder finds its lease lost.
    let t = EtcdTable::create(&l5, &TableOptions::new()).unwrap();
    let lease = t.try_acquire("job", Duration::from_secs(5)).unwrap();
    let force = shmlease::RemoveOptions::new().force(true);
    LeaseTable::remove_with(Location::Etcd(cluster.location("t5")), &force).unwrap();
    assert_eq!(cluster.ctl(&["get", "--prefix", "/t5/"]), "");
    assert!(matches!(lease.renew(Duration::from_secs(5)), Err(Error::Lost { .. })));
}

#[test]
fn grant_hold_release_and_what_others_see() {
    let _wd = Watchdog::new("grant_hold", LONG * 2);
    let cluster = Cluster::start("grant-hold", Setup::default());
    let t = table(&cluster, "api");
    let other = table(&cluster, "api"); // another connection
    let before = Instant::now();
    let lease = t
        .acquire_with(
            "job",
            Duration::from_millis(1500),
            &AcquireOptions::new().label("w1").unwrap(),
        )
        .unwrap();
    // Whole seconds, rounded up; the holder's deadline is counted from before the
    // request and less the drift allowance.
    assert_eq!(lease.ttl(), Duration::from_secs(2));
    let max = lease.ttl() * (1000 - DRIFT_PER_MILLE) / 1000;
    assert!(lease.deadline() <= Instant::now() + max);
    assert!(lease.deadline() <= before + max + (Instant::now() - before));
    assert!(lease.is_valid());

    // The token is the key's create revision.
    let rev = cluster.ctl(&["get", "/api/.shmlease/lease/job", "-w", "fields"]);
    assert!(rev.contains(&format!("\"CreateRevision\" : {}", lease.token())), "{rev}");

    match other.try_acquire("job", Duration::from_secs(5)) {
        Err(Error::Held { token, holder: Some(h), remaining }) => {
            assert_eq!(token, lease.token());
            assert_eq!(h.pid, std::process::id());
            assert_eq!(h.label.as_str(), "w1");
            assert!(!h.host.is_empty());
            assert!(!h.detached);
            assert!(remaining <= Duration::from_secs(2));
        }
        other => panic!("{other:?}"),
    }
    let info = other.get("job").unwrap().unwrap();
    assert_eq!((info.state, info.token, info.transitions), (LeaseState::Held, lease.token(), 1));
    assert!(info.acquired_at.is_some() && info.renewed_at.is_some() && info.expires_at.is_some());

    let first = lease.token();
    lease.renew(Duration::from_secs(2)).unwrap();
    lease.renew(Duration::from_secs(4)).unwrap(); // another TTL: a new etcd lease
    assert_eq!(lease.ttl(), Duration::from_secs(4));
    assert!(lease.remaining() > Duration::from_secs(3));
    assert_eq!(other.get("job").unwrap().unwrap().token, first, "renewal keeps the token");
    lease.release().unwrap();
    let info = other.get("job").unwrap().unwrap();
    assert_eq!((info.state, info.token), (LeaseState::Free, first));

    // Tokens grow across grants, and across names (one revision counter).
    let a = other.try_acquire("job", Duration::from_secs(1)).unwrap();
    let b = other.try_acquire("other", Duration::from_secs(1)).unwrap();
    assert!(first < a.token() && a.token() < b.token());
    assert_eq!(other.get("job").unwrap().unwrap().transitions, 2);
    // A TTL under the server's minimum is granted the minimum, and said so.
    assert!(b.ttl() >= Duration::from_secs(1));
    drop(a); // released on drop
    assert_eq!(t.get("job").unwrap().unwrap().state, LeaseState::Free);
    let list = t.list().unwrap();
    let names: Vec<_> = list.iter().map(|l| (l.name.as_str(), l.state)).collect();
    assert_eq!(names, [("job", LeaseState::Free), ("other", LeaseState::Held)]);
    assert_eq!(t.info().unwrap().counters.grants, 3);
    assert_eq!(t.get("never").unwrap(), None);

    // A released grant's etcd lease is kept for the next grant; if it vanishes (revoked
    // behind the table's back), the next grant falls back to a fresh one.
    t.try_acquire("spare", Duration::from_secs(2)).unwrap().release().unwrap();
    let listed = cluster.ctl(&["lease", "list"]);
    for id in listed.lines().filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_hexdigit())) {
        let _ = std::process::Command::new("etcdctl")
            .args(["--endpoints", &cluster.hosts(), "lease", "revoke", id])
            .output();
    }
    let l = t.try_acquire("spare", Duration::from_secs(2)).unwrap();
    assert_eq!(other.get("spare").unwrap().unwrap().state, LeaseState::Held);
    l.renew(Duration::from_secs(2)).unwrap();
    assert_eq!(other.get("spare").unwrap().unwrap().token, l.token());
    l.release().unwrap();

    assert!(matches!(t.try_acquire("", Duration::from_secs(1)), Err(Error::InvalidName { .. })));
    assert!(matches!(t.try_acquire("x", Duration::ZERO), Err(Error::InvalidTtl { .. })));
}

/// Requests per method between two `rpc_counts`.
fn delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    method: &str,
) -> u64 {
    after.get(method).copied().unwrap_or(0) - before.get(method).copied().unwrap_or(0)
}

#[test]
fn round_trips_per_operation_as_documented() {
    let _wd = Watchdog::new("round_trips", LONG * 2);
    let cluster = Cluster::start("round-trips", Setup::default());
    let t = table(&cluster, "rt");
    let ttl = Duration::from_secs(10);
    // Without a spare etcd lease: LeaseGrant + Txn; the release: one Txn.
    let c0 = cluster.rpc_counts();
    t.try_acquire("job", ttl).unwrap().release().unwrap();
    let c1 = cluster.rpc_counts();
    assert_eq!((delta(&c0, &c1, "LeaseGrant"), delta(&c0, &c1, "Txn")), (1, 2), "{c0:?}\n{c1:?}");
    // With the spare the release left: one Txn each way, nothing else.
    for _ in 0..5 {
        t.try_acquire("job", ttl).unwrap().release().unwrap();
    }
    let c2 = cluster.rpc_counts();
    assert_eq!(delta(&c1, &c2, "Txn"), 10, "{c1:?}\n{c2:?}");
    for m in ["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "Range"] {
        assert_eq!(delta(&c1, &c2, m), 0, "{m}: {c1:?}\n{c2:?}");
    }
    // A renewal at the same TTL: a keep-alive and a checking Txn, in flight together.
    let lease = t.try_acquire("job", ttl).unwrap();
    let c3 = cluster.rpc_counts();
    lease.renew(ttl).unwrap();
    // A keep-alive is a stream: the server counts it once it sees the stream closed.
    let end = Instant::now() + LONG;
    let mut c4 = cluster.rpc_counts();
    while delta(&c3, &c4, "LeaseKeepAlive") == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        c4 = cluster.rpc_counts();
    }
    assert_eq!(
        (delta(&c3, &c4, "LeaseKeepAlive"), delta(&c3, &c4, "Txn")),
        (1, 1),
        "{c3:?}\n{c4:?}"
    );
    // A refused grant: one Txn (its spare lease is kept), no LeaseGrant.
    let c5 = cluster.rpc_counts();
    assert!(matches!(t.acquire("job", ttl, Some(Duration::ZERO)), Err(Error::TimedOut { .. })));
    let c6 = cluster.rpc_counts();
    assert_eq!((delta(&c5, &c6, "LeaseGrant"), delta(&c5, &c6, "Txn")), (1, 1), "{c5:?}\n{c6:?}");
    drop(lease);
}

#[test]
fn kinds_round_trips_as_documented() {
    let _wd = Watchdog::new("kinds_round_trips", LONG * 2);
    let cluster = Cluster::start("kinds-round-trips", Setup::default());
    let t = table(&cluster, "krt");
    let ttl = Duration::from_secs(10);
    let many = AcquireOptions::new().permits(128).unwrap();
    // Leaves a spare etcd lease.
    t.acquire_with("pool", ttl, &many).unwrap().release().unwrap();
    // A permit on a spare etcd lease, and its release: one Txn each.
    let c0 = cluster.rpc_counts();
    let first = t.acquire_with("pool", ttl, &many).unwrap();
    let c1 = cluster.rpc_counts();
    assert_eq!((delta(&c0, &c1, "Txn"), delta(&c0, &c1, "LeaseGrant")), (1, 0), "{c0:?}\n{c1:?}");
    // Another permit: LeaseGrant (no spare left) and one Txn, two if the seat it picked
    // at random (1 in 128) was the taken one.
    let second = t.acquire_with("pool", ttl, &many).unwrap();
    let c2 = cluster.rpc_counts();
    assert_eq!(delta(&c1, &c2, "LeaseGrant"), 1, "{c1:?}\n{c2:?}");
    assert!((1..=2).contains(&delta(&c1, &c2, "Txn")), "{c1:?}\n{c2:?}");
    first.release().unwrap();
    second.release().unwrap();
    let c3 = cluster.rpc_counts();
    assert_eq!(delta(&c2, &c3, "Txn"), 2, "{c2:?}\n{c3:?}");
    // Fair, uncontended: the queue's compare rides in the grant's one Txn.
    let fair = AcquireOptions::new().fair(true);
    t.acquire_with("line", ttl, &fair).unwrap().release().unwrap();
    let c4 = cluster.rpc_counts();
    assert_eq!(delta(&c3, &c4, "Txn"), 2, "{c3:?}\n{c4:?}");
    for m in ["LeaseGrant", "LeaseRevoke", "Range"] {
        assert_eq!(delta(&c3, &c4, m), 0, "{m}: {c3:?}\n{c4:?}");
    }
    // Fair, behind a holder: its try (1 Txn), its place (LeaseGrant, 1 Txn); first in
    // line at once, the kind's acquisition: refused (1 Txn), a watch, the grant (1 Txn);
    // its release (1 Txn), its place revoked (LeaseRevoke).
    let holder = t.try_acquire("line", ttl).unwrap();
    let c5 = cluster.rpc_counts();
    let mut gets = 0;
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            t.acquire_with("line", ttl, &fair.clone().wait(Some(LONG))).unwrap().release().unwrap()
        });
        while t.get("line").unwrap().unwrap().queue.is_empty() {
            gets += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        gets += 1;
        holder.release().unwrap();
        waiter.join().unwrap();
    });
    let c6 = cluster.rpc_counts();
    // Each `get` above: one Txn and a LeaseTimeToLive (the holder's time left).
    // (No refusal if the holder's release came before the waiter's first grant.)
    let txns = delta(&c5, &c6, "Txn");
    assert!((4 + 1 + gets..=5 + 1 + gets).contains(&txns), "{c5:?}\n{c6:?}");
    assert_eq!(delta(&c5, &c6, "LeaseGrant"), 1, "{c5:?}\n{c6:?}");
    assert_eq!(delta(&c5, &c6, "LeaseRevoke"), 1, "{c5:?}\n{c6:?}");
}

#[test]
fn election_round_trips_as_documented() {
    let _wd = Watchdog::new("election_round_trips", LONG * 2);
    let cluster = Cluster::start("election-round-trips", Setup::default());
    let location = cluster.location("ert");
    let t = LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap();
    let ttl = Duration::from_secs(30);
    let only = |before: &std::collections::BTreeMap<String, u64>,
                after: &std::collections::BTreeMap<String, u64>,
                expected: &[(&str, u64)]| {
        for m in ["Txn", "Range", "LeaseGrant", "LeaseRevoke", "LeaseTimeToLive", "LeaseKeepAlive"]
        {
            let want = expected.iter().find(|(e, _)| *e == m).map_or(0, |(_, n)| *n);
            assert_eq!(delta(before, after, m), want, "{m}: {before:?}\n{after:?}");
        }
    };
    let election = t.election("sched").unwrap().ttl(ttl).unwrap();
    // A first grant leaves a spare etcd lease behind.
    election.try_campaign().unwrap().resign().unwrap();
    // Campaign on the spare: one Txn (the keep-alive's first renewal is a third of the
    // TTL away); resign: one Txn.
    let c0 = cluster.rpc_counts();
    let leadership = election.campaign(Some(LONG)).unwrap();
    let c1 = cluster.rpc_counts();
    only(&c0, &c1, &[("Txn", 1)]);
    // Who leads: one read and the leader's time left.
    let leader = election.leader().unwrap().unwrap();
    assert_eq!(leader.term, leadership.term());
    let c2 = cluster.rpc_counts();
    only(&c1, &c2, &[("Txn", 1), ("LeaseTimeToLive", 1)]);
    // A request to release, with or without the token: one Txn each.
    assert_eq!(t.request_release("sched", None).unwrap(), Some(leadership.term()));
    assert_eq!(
        t.request_release("sched", Some(leadership.term())).unwrap(),
        Some(leadership.term())
    );
    let c3 = cluster.rpc_counts();
    only(&c2, &c3, &[("Txn", 2)]);
    assert_eq!(leadership.wait_notice(Some(LONG)), Some(Notice::ReleaseRequested));
    let c4 = cluster.rpc_counts();
    leadership.resign().unwrap();
    let c5 = cluster.rpc_counts();
    only(&c4, &c5, &[("Txn", 1)]);
    // An observer: one read at first, then the watch alone; nobody leads, so no
    // LeaseTimeToLive.
    let mut observer = election.observe();
    assert!(observer.next_change(Some(LONG)).unwrap().unwrap().leader.is_none());
    let c6 = cluster.rpc_counts();
    only(&c5, &c6, &[("Txn", 1)]);
}

#[test]
fn expiry_revocation_and_stale_holders() {
    let _wd = Watchdog::new("expiry_revocation", LONG * 2);
    let cluster = Cluster::start("expiry", Setup::default());
    let t = table(&cluster, "exp");
    let other = table(&cluster, "exp");

    // Expiry: the TTL alone frees the name; the stale holder learns it is lost.
    let lease = t.try_acquire("job", Duration::from_secs(1)).unwrap();
    let deadline = lease.deadline();
    let next = other.acquire("job", Duration::from_secs(1), Some(LONG)).unwrap();
    assert!(Instant::now() >= deadline, "granted before the holder's own deadline");
    assert!(!lease.is_valid());
    assert!(next.token() > lease.token());
    assert!(matches!(
        lease.renew(Duration::from_secs(1)),
        Err(Error::Lost { reason: LostReason::Expired, .. })
    ));
    assert!(matches!(lease.release(), Err(Error::Lost { .. })));
    assert!(matches!(
        other.renew("job", next.token() - 1, Duration::from_secs(1)),
        Err(Error::Lost { reason: LostReason::TakenOver, .. })
    ));
    assert!(matches!(
        other.release("job", next.token() + 1000),
        Err(Error::Lost { reason: LostReason::NotIssued { .. }, .. })
    ));
    drop(next);

    // Revocation by anyone: the holder's renewal and release are refused, saying why.
    let lease = t.try_acquire("rev", Duration::from_secs(30)).unwrap();
    assert_eq!(other.revoke("rev").unwrap(), Some(lease.token()));
    assert_eq!(other.revoke("rev").unwrap(), None);
    assert_eq!(other.get("rev").unwrap().unwrap().state, LeaseState::Revoked);
    match lease.renew(Duration::from_secs(30)) {
        Err(Error::Lost { reason: LostReason::Revoked, token }) => assert_eq!(token, lease.token()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(lease.release(), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    let again = other.try_acquire("rev", Duration::from_secs(30)).unwrap();
    assert!(matches!(
        t.revoke_token("rev", again.token() - 1),
        Err(Error::Lost { reason: LostReason::TakenOver, .. })
    ));
    t.revoke_token("rev", again.token()).unwrap();
    assert!(matches!(again.release(), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    assert!(matches!(
        t.revoke_token("nothing", 5),
        Err(Error::Lost { reason: LostReason::NoSuchName, .. })
    ));
}

#[test]
fn detached_leases_by_name_and_token_from_another_client() {
    let _wd = Watchdog::new("detached", LONG * 2);
    let cluster = Cluster::start("detached", Setup::default());
    let t = table(&cluster, "det");
    let other = table(&cluster, "det");
    let bound = t.try_acquire("bound", Duration::from_secs(10)).unwrap();
    // A lease bound to a process may be renewed by token from that same process.
    other.renew("bound", bound.token(), Duration::from_secs(10)).unwrap();
    let d = t.try_acquire("job", Duration::from_secs(2)).unwrap().detach().unwrap();
    let info = other.get("job").unwrap().unwrap();
    assert!(info.holder.unwrap().detached);
    // The detached lease outlives the value that took it, and anyone may renew it.
    std::thread::sleep(Duration::from_millis(1500));
    let until = other.renew("job", d.token, Duration::from_secs(2)).unwrap();
    assert!(until > Instant::now());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(other.get("job").unwrap().unwrap().state, LeaseState::Held);
    other.renew("job", d.token, Duration::from_secs(5)).unwrap(); // another TTL
    other.release("job", d.token).unwrap();
    assert!(matches!(
        t.release("job", d.token),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    bound.release().unwrap();
}

#[test]
fn a_release_by_token_is_not_refused_by_renewals_racing_it() {
    // Renewals rewrite the key (its renewed-at time): a release by token must not take
    // that for a lost grant (`shmlease run` releases by token while its keep-alive runs).
    let _wd = Watchdog::new("release_race", LONG * 2);
    let cluster = Cluster::start("release-race", Setup::default());
    let t = table(&cluster, "race");
    for round in 0..5 {
        let d = t.try_acquire("job", Duration::from_secs(5)).unwrap().detach().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renewer = {
            let (t, stop) = (t.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match t.renew("job", d.token, Duration::from_secs(5)) {
                        Ok(_) => n += 1,
                        Err(Error::Lost { .. }) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                n
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let released = t.release("job", d.token);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let renewals = renewer.join().unwrap();
        assert!(released.is_ok(), "round {round}, after {renewals} renewals: {released:?}");
    }
}

#[test]
fn blocking_acquire_wakes_on_release_and_times_out() {
    let _wd = Watchdog::new("blocking", LONG * 2);
    let cluster = Cluster::start("blocking", Setup::default());
    let t = table(&cluster, "blk");
    let lease = t.try_acquire("job", Duration::from_secs(30)).unwrap();
    let token = lease.token();

    let start = Instant::now();
    match t.acquire("job", Duration::from_secs(5), Some(Duration::from_millis(700))) {
        Err(Error::TimedOut { waited, token: held, holder }) => {
            assert!(waited >= Duration::from_millis(700));
            assert_eq!(held, token);
            assert_eq!(holder.unwrap().pid, std::process::id());
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(700));

    let waiter = {
        let t = t.clone();
        std::thread::spawn(move || {
            let l = t.acquire("job", Duration::from_secs(5), Some(LONG)).unwrap();
            (Instant::now(), l.token())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let released = Instant::now();
    lease.release().unwrap();
    let (got, next) = waiter.join().unwrap();
    assert!(got >= released && next > token);

    // A revocation wakes a waiter too.
    let holder = t.try_acquire("job2", Duration::from_secs(30)).unwrap();
    let waiter = {
        let t = t.clone();
        std::thread::spawn(move || t.acquire("job2", Duration::from_secs(5), None).unwrap().token())
    };
    std::thread::sleep(Duration::from_millis(300));
    t.revoke("job2").unwrap();
    assert!(waiter.join().unwrap() > holder.token());

    // An interrupt check ends a wait without a time limit, asked again and again first
    // (the watch is cut into polls), and the holder keeps its lease.
    let held = t.try_acquire("job3", Duration::from_secs(30)).unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&asked);
    let check = shmlease::Interrupt::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 4
    });
    let options = AcquireOptions::new().wait(None).interrupt(check);
    match t.acquire_with("job3", Duration::from_secs(5), &options) {
        Err(Error::Interrupted { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 5);
    assert_eq!(t.get("job3").unwrap().unwrap().token, held.token());
    assert!(held.is_valid());
}

#[test]
fn keep_alive_holds_past_the_ttl_and_reports_revocation_at_once() {
    let _wd = Watchdog::new("keep_alive", LONG * 2);
    let cluster = Cluster::start("keepalive", Setup::default());
    let t = table(&cluster, "ka");
    let other = table(&cluster, "ka");
    let mut lease = t.try_acquire("job", Duration::from_secs(1)).unwrap();
    lease.keep_alive(Duration::from_secs(1)).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        assert!(lease.is_valid(), "lost after {:?}: {:?}", start.elapsed(), lease.lost());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(other.try_acquire("job", Duration::from_secs(1)), Err(Error::Held { .. })));
    assert!(
        other.get("job").unwrap().unwrap().renewed_at
            > other.get("job").unwrap().unwrap().acquired_at
    );
    other.revoke("job").unwrap();
    assert_eq!(lease.wait_lost(Some(LONG)), Some(LostReason::Revoked));
    assert!(!lease.is_valid());

    // Released: the keep-alive stops, and nothing renews the name afterwards.
    let mut lease = t.try_acquire("job", Duration::from_secs(1)).unwrap();
    lease.keep_alive(Duration::from_secs(1)).unwrap();
    lease.release().unwrap();
    let next = other.try_acquire("job", Duration::from_secs(1)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(other.get("job").unwrap().unwrap().token, next.token());
}

#[test]
fn an_unreachable_cluster_fails_renewals_and_loses_the_lease_at_its_deadline() {
    let _wd = Watchdog::new("unreachable", LONG * 2);
    let mut cluster = Cluster::start("unreachable", Setup::default());
    let t = EtcdTable::open_or_create(
        &loc(&(cluster.location("un") + "?timeout=500ms")),
        &TableOptions::new(),
    )
    .unwrap();
    let mut lease = t.try_acquire("job", Duration::from_secs(2)).unwrap();
    let plain = t.try_acquire("plain", Duration::from_secs(2)).unwrap();
    lease.keep_alive(Duration::from_secs(2)).unwrap();
    for i in 0..3 {
        cluster.pause(i);
    }
    match plain.renew(Duration::from_secs(2)) {
        Err(Error::Unavailable { .. }) | Err(Error::Lost { reason: LostReason::Expired, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(lease.wait_lost(Some(LONG)), Some(LostReason::Expired));
    let lost_at = Instant::now();
    assert!(lost_at >= lease.deadline());
    assert!(!lease.is_valid());
    std::thread::sleep(plain.deadline().saturating_duration_since(Instant::now()));
    assert!(!plain.is_valid());
    assert!(matches!(
        plain.renew(Duration::from_secs(2)),
        Err(Error::Lost { reason: LostReason::Expired, .. })
    ));
    assert!(matches!(t.get("job"), Err(Error::Unavailable { .. })));
    for i in 0..3 {
        cluster.resume(i);
    }
    cluster.wait_healthy(LONG);
    // Back: the name is free once the server has expired it.
    let again = t.acquire("job", Duration::from_secs(2), Some(LONG)).unwrap();
    assert!(again.token() > 0);
}

// ------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------

#[test]
fn contention_from_processes_is_exclusive_with_growing_tokens() {
    let wd = Watchdog::new("contention", LONG * 3);
    let cluster = Cluster::start("contention", Setup::default());
    drop(table(&cluster, "con"));
    let mut kids = contenders(&wd, &cluster, "con", 4, 15);
    let mut all = Vec::new();
    for k in &mut kids {
        k.wait_ok(LONG * 2);
        let g = grants_of(k);
        assert_eq!(g.len(), 15, "{}", k.transcript());
        all.extend(g);
    }
    check_exclusive(all);
}

#[test]
fn exclusivity_check_catches_an_overlap() {
    // The checker of the contention tests fails on what it must catch.
    let overlap = std::panic::catch_unwind(|| check_exclusive(vec![(1, 0, 10), (2, 5, 20)]));
    assert!(overlap.is_err());
    let regression = std::panic::catch_unwind(|| check_exclusive(vec![(2, 0, 10), (1, 10, 20)]));
    assert!(regression.is_err());
    check_exclusive(vec![(1, 0, 10), (2, 10, 20)]);
}

#[test]
fn a_holder_killed_with_sigkill_is_reclaimed_after_its_ttl() {
    let wd = Watchdog::new("sigkill", LONG * 2);
    let cluster = Cluster::start("sigkill", Setup::default());
    let t = table(&cluster, "kill");
    let go = cluster.dir().join("never");
    let mut kid = Kid::spawn(
        &wd,
        "holder",
        "etcd_hold",
        &[
            ("LOC", cluster.location("kill")),
            ("NAME", "job".into()),
            ("TTL_MS", "2000".into()),
            ("GO", go.display().to_string()),
        ],
    );
    let held = kid.expect("held", LONG);
    let (token, deadline): (u64, u64) = {
        let v: Vec<u64> = held.split(' ').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    };
    kid.signal(libc::SIGKILL);
    kid.wait(LONG);
    // No early reclaim across hosts: held until the TTL runs out.
    assert!(matches!(t.try_acquire("job", Duration::from_secs(2)), Err(Error::Held { .. })));
    let next = t.acquire("job", Duration::from_secs(2), Some(LONG)).unwrap();
    assert!(mono_ns() >= deadline, "reclaimed before the dead holder's own deadline");
    assert!(next.token() > token);
    assert_eq!(t.get("job").unwrap().unwrap().holder.unwrap().pid, std::process::id());
}

#[test]
fn a_holder_stopped_past_its_ttl_finds_its_renewal_and_release_lost() {
    let wd = Watchdog::new("sigstop", LONG * 2);
    let cluster = Cluster::start("sigstop", Setup::default());
    let t = table(&cluster, "stop");
    let go = cluster.dir().join("go");
    let mut kid = Kid::spawn(
        &wd,
        "holder",
        "etcd_hold",
        &[
            ("LOC", cluster.location("stop")),
            ("NAME", "job".into()),
            ("TTL_MS", "1000".into()),
            ("GO", go.display().to_string()),
        ],
    );
    let held = kid.expect("held", LONG);
    let token: u64 = held.split(' ').next().unwrap().parse().unwrap();
    kid.signal(libc::SIGSTOP);
    kid.wait_state(b'T', LONG);
    let next = t.acquire("job", Duration::from_secs(5), Some(LONG)).unwrap();
    assert!(next.token() > token);
    common::touch(&go);
    kid.signal(libc::SIGCONT);
    assert!(kid.expect("renew", LONG).starts_with("lost"), "{}", kid.transcript());
    assert!(kid.expect("release", LONG).starts_with("lost"), "{}", kid.transcript());
    kid.wait_ok(LONG);
    // The new holder was never disturbed.
    next.renew(Duration::from_secs(5)).unwrap();
    assert_eq!(t.get("job").unwrap().unwrap().token, next.token());
}

#[test]
fn member_faults_during_contention_keep_exclusivity_and_tokens() {
    let wd = Watchdog::new("member_faults", LONG * 5);
    let mut cluster = Cluster::start("faults", Setup::default());
    drop(table(&cluster, "flt"));
    let mut kids = contenders(&wd, &cluster, "flt", 4, 40);
    let progress = |kids: &[Kid]| kids.iter().map(|k| grants_of(k).len()).sum::<usize>();
    let wait_progress = |kids: &[Kid], more: usize| {
        let from = progress(kids);
        let end = Instant::now() + LONG;
        while progress(kids) < from + more && kids.iter().any(|k| grants_of(k).len() < 40) {
            assert!(Instant::now() < end, "no progress with a quorum");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_progress(&kids, 5);
    // kill -9 of the leader; progress with the other two; back.
    let leader = cluster.wait_leader(LONG);
    cluster.kill(leader);
    wait_progress(&kids, 5);
    cluster.restart(leader);
    cluster.wait_healthy(LONG);
    // SIGSTOP of the (new) leader: the others elect another one.
    let leader = cluster.wait_leader(LONG);
    cluster.pause(leader);
    wait_progress(&kids, 5);
    cluster.resume(leader);
    // kill -9 of a follower, then of a second member: no quorum, no progress…
    let follower = (0..3).find(|i| Some(*i) != cluster.leader()).unwrap();
    cluster.kill(follower);
    wait_progress(&kids, 3);
    let second = (0..3).find(|i| *i != follower).unwrap();
    cluster.kill(second);
    std::thread::sleep(Duration::from_secs(2));
    // …until a quorum is back.
    cluster.restart(follower);
    cluster.restart(second);
    cluster.wait_healthy(LONG);
    let mut all = Vec::new();
    for k in &mut kids {
        k.wait_ok(LONG * 3);
        all.extend(grants_of(k));
    }
    assert_eq!(all.len(), 160);
    check_exclusive(all);
}

// ------------------------------------------------------------------------------------
// Permits and shared leases
// ------------------------------------------------------------------------------------

#[test]
fn the_kinds_check_catches_excess_overlap_and_token_disorder() {
    let g =
        |token, start, end, begin, kind: &str| Seen { token, start, end, begin, kind: kind.into() };
    let three = vec![g(1, 0, 10, 0, "p2"), g(2, 1, 10, 0, "p2"), g(3, 2, 10, 0, "p2")];
    assert!(std::panic::catch_unwind(|| check_kinds(&three)).is_err());
    check_kinds(&three[..2]);
    let mixed = vec![g(1, 0, 10, 0, "s"), g(2, 5, 20, 0, "x")];
    assert!(std::panic::catch_unwind(|| check_kinds(&mixed)).is_err());
    let disorder = vec![g(5, 0, 10, 0, "p2"), g(4, 20, 30, 11, "p2")];
    assert!(std::panic::catch_unwind(|| check_kinds(&disorder)).is_err());
    let twice = vec![g(5, 0, 10, 0, "p2"), g(5, 20, 30, 0, "p2")];
    assert!(std::panic::catch_unwind(|| check_kinds(&twice)).is_err());
    check_kinds(&[g(1, 0, 10, 0, "s"), g(2, 5, 20, 0, "s"), g(3, 20, 30, 19, "x")]);
}

#[test]
fn permits_from_processes_never_exceed_n_through_a_leader_kill() {
    let wd = Watchdog::new("permits_contention", LONG * 5);
    let mut cluster = Cluster::start("permits", Setup::default());
    drop(table(&cluster, "prm"));
    let mut kids: Vec<Kid> =
        (0..5).map(|i| contender(&wd, &cluster, "prm", i, 16, "p2", 20)).collect();
    let progress = |kids: &[Kid]| kids.iter().map(|k| seen_of(k).len()).sum::<usize>();
    let wait_progress = |kids: &[Kid], more: usize| {
        let from = progress(kids);
        let end = Instant::now() + LONG;
        while progress(kids) < from + more && progress(kids) < 80 {
            assert!(Instant::now() < end, "no progress with a quorum");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_progress(&kids, 8);
    let leader = cluster.wait_leader(LONG);
    cluster.kill(leader);
    wait_progress(&kids, 8);
    cluster.restart(leader);
    cluster.wait_healthy(LONG);
    let mut all = Vec::new();
    for k in &mut kids {
        k.wait_ok(LONG * 3);
        let got = seen_of(k);
        assert_eq!(got.len(), 16, "{}", k.transcript());
        all.extend(got);
    }
    check_kinds(&all);
    // Two at once did happen: the permits were used, not taken in turns.
    let overlapping = all
        .iter()
        .any(|a| all.iter().any(|b| a.token != b.token && a.start < b.end && b.start < a.end));
    assert!(overlapping, "never two holders at once: the test did not contend");
}

#[test]
fn shared_grants_never_overlap_an_exclusive_one_and_do_not_starve_it() {
    let wd = Watchdog::new("shared_contention", LONG * 5);
    let cluster = Cluster::start("shared", Setup::default());
    drop(table(&cluster, "shr"));
    // Three streams of shared holders that overlap each other: without its drain
    // keeping new shared grants out, the name would never be free for the exclusive.
    let mut readers: Vec<Kid> =
        (0..3).map(|i| contender(&wd, &cluster, "shr", i, 100_000, "s", 150)).collect();
    let started = Instant::now();
    while readers.iter().map(|k| seen_of(k).len()).sum::<usize>() < 6 {
        assert!(started.elapsed() < LONG, "no shared grants");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut writer = contender(&wd, &cluster, "shr", 9, 3, "x", 50);
    writer.wait_ok(LONG * 2);
    for r in &mut readers {
        assert!(r.try_status().is_none(), "a shared stream ended: {}", r.transcript());
    }
    let mut all = seen_of(&writer);
    assert_eq!(all.len(), 3, "{}", writer.transcript());
    for r in &mut readers {
        r.signal(libc::SIGKILL);
        r.wait(LONG);
        all.extend(seen_of(r));
    }
    check_kinds(&all);
}

#[test]
fn a_permit_holder_killed_with_sigkill_is_reclaimed_after_its_ttl() {
    let wd = Watchdog::new("permit_sigkill", LONG * 2);
    let cluster = Cluster::start("permitkill", Setup::default());
    let t = table(&cluster, "pk");
    let two = AcquireOptions::new().permits(2).unwrap();
    let mine = t.acquire_with("pool", Duration::from_secs(5), &two).unwrap();
    let go = cluster.dir().join("never");
    let mut kid = Kid::spawn(
        &wd,
        "holder",
        "etcd_hold",
        &[
            ("LOC", cluster.location("pk")),
            ("NAME", "pool".into()),
            ("TTL_MS", "2000".into()),
            ("GO", go.display().to_string()),
            ("KIND", "p2".into()),
        ],
    );
    let held = kid.expect("held", LONG);
    let v: Vec<u64> = held.split(' ').map(|x| x.parse().unwrap()).collect();
    let (token, deadline) = (v[0], v[1]);
    kid.signal(libc::SIGKILL);
    kid.wait(LONG);
    assert!(matches!(
        t.acquire_with("pool", Duration::from_secs(2), &two),
        Err(Error::Held { .. })
    ));
    let next =
        t.acquire_with("pool", Duration::from_secs(2), &two.clone().wait(Some(LONG))).unwrap();
    assert!(mono_ns() >= deadline, "reclaimed before the dead holder's own deadline");
    assert!(next.token() > token && token > mine.token());
    let info = t.get("pool").unwrap().unwrap();
    let tokens: Vec<u64> = info.grants.iter().map(|g| g.token).collect();
    assert_eq!(tokens, vec![mine.token(), next.token()]);
}

#[test]
fn a_stopped_fair_waiter_is_passed_over_after_its_place_ttl_and_queues_again() {
    let wd = Watchdog::new("fair_stopped", LONG * 3);
    let cluster = Cluster::start("fairstop", Setup::default());
    let location = cluster.location("fq");
    let t = LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap();
    let ttl = Duration::from_secs(2);
    let holder = t.try_acquire("q", ttl).unwrap();
    let queued = |n: usize| {
        let end = Instant::now() + LONG;
        while t.get("q").unwrap().unwrap().queue.len() < n {
            assert!(Instant::now() < end, "no {n} waiters queued");
            std::thread::sleep(Duration::from_millis(10));
        }
        t.get("q").unwrap().unwrap().queue
    };
    let env = [("LOC", location.clone()), ("NAME", "q".to_string())];
    let mut first = Kid::spawn(&wd, "first waiter", "etcd_fair", &env);
    let ticket = queued(1)[0].ticket;
    let mut second = Kid::spawn(&wd, "second waiter", "etcd_fair", &env);
    queued(2);
    first.signal(libc::SIGSTOP);
    first.wait_state(b'T', LONG);
    drop(holder);
    // The name is free, but someone waits in line: a fair try does not pass the queue
    // (judged only while the stopped waiter's place is still there), an unfair one may.
    let fair_try = t.acquire_with("q", ttl, &AcquireOptions::new().fair(true));
    if t.get("q").unwrap().unwrap().queue.iter().any(|p| p.ticket == ticket) {
        assert!(matches!(fair_try, Err(Error::Held { .. })), "{fair_try:?}");
    }
    drop(fair_try);
    // The second waiter is served once the stopped one's place has expired.
    let token: u64 = second.expect("granted", LONG).parse().unwrap();
    second.wait_ok(LONG);
    first.signal(libc::SIGCONT);
    let again: u64 = first.expect("granted", LONG).parse().unwrap();
    first.wait_ok(LONG);
    assert!(
        again > token,
        "the resumed waiter ({again}) was served before the one behind it ({token})"
    );
}

// ------------------------------------------------------------------------------------
// Elections and requests to release
// ------------------------------------------------------------------------------------

/// Changes from `observer` until one shows `term` leading; checks that terms never go
/// back and returns every change seen.
fn changes_until_leader(observer: &mut shmlease::election::Observer<'_>, term: u64) -> Vec<Change> {
    let mut seen: Vec<Change> = Vec::new();
    loop {
        let change = observer.next_change(Some(LONG)).unwrap().expect("no change in time");
        if let Some(last) = seen.last() {
            assert!(change.term >= last.term, "terms went back: {seen:?} then {change:?}");
        }
        let done = change.leader.as_ref().is_some_and(|l| l.term == term);
        seen.push(change);
        if done {
            return seen;
        }
    }
}

/// Terms begun that `changes` account for (reported as leading, or counted as skipped)
/// after the term `from`.
fn terms_accounted(changes: &[Change], from: u64) -> u64 {
    let mut last = from;
    let mut n = 0;
    for c in changes {
        n += u64::from(c.skipped.expect("an unknown count"));
        if c.leader.is_some() && c.term > last {
            n += 1;
        }
        last = last.max(c.term);
    }
    n
}

#[test]
fn an_election_hands_over_at_once_on_resign_and_observers_see_every_change() {
    let _wd = Watchdog::new("election", LONG * 2);
    let cluster = Cluster::start("election", Setup::default());
    let location = cluster.location("el");
    let a = LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap();
    let b = LeaseTable::open(location.as_str()).unwrap();
    let o = LeaseTable::open(location.as_str()).unwrap();
    // A long TTL: nothing here may wait for an expiry.
    let ttl = Duration::from_secs(30);
    let ea = a.election("sched").unwrap().ttl(ttl).unwrap().label("a").unwrap();
    let eb = b.election("sched").unwrap().ttl(ttl).unwrap().label("b").unwrap();
    let mut observer = o.election("sched").unwrap().observe();
    let first = observer.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!(first, Change { term: 0, leader: None, skipped: Some(0) });
    assert_eq!(observer.next_change(Some(Duration::from_millis(200))).unwrap(), None);
    assert!(ea.leader().unwrap().is_none());

    let la = ea.try_campaign().unwrap();
    assert!(la.is_leader());
    let leader = eb.leader().unwrap().unwrap();
    assert_eq!((leader.term, leader.holder.unwrap().label.as_str()), (la.term(), "a".into()));
    assert!(leader.remaining > Duration::ZERO && leader.expires_at.is_some());
    assert!(matches!(eb.try_campaign(), Err(Error::Held { .. })));
    let seen = changes_until_leader(&mut observer, la.term());
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].skipped, Some(0));

    // b campaigns; a resigns: b is elected by the release, not by an expiry.
    let (term_a, term_b) = std::thread::scope(|s| {
        let campaign = s.spawn(|| eb.campaign(Some(LONG)).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let term_a = la.term();
        la.resign().unwrap();
        let lb = campaign.join().unwrap();
        // The resignation deleted a's key (so it had not expired), and b took over.
        assert!(lb.is_leader() && lb.term() > term_a);
        assert!(matches!(
            a.request_release("sched", Some(term_a)),
            Err(Error::Lost { reason: LostReason::TakenOver, .. })
        ));
        let seen = changes_until_leader(&mut observer, lb.term());
        assert_eq!(terms_accounted(&seen, term_a), 1, "{seen:?}");
        let term_b = lb.term();
        lb.resign().unwrap();
        (term_a, term_b)
    });
    let ended = observer.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!(ended, Change { term: term_b, leader: None, skipped: Some(0) });
    assert!(term_b > term_a);
    assert!(eb.leader().unwrap().is_none());

    // An observer that looks away while three terms go by accounts for all of them.
    let mut last = 0;
    for _ in 0..3 {
        let l = ea.try_campaign().unwrap();
        last = l.term();
        l.resign().unwrap();
    }
    let held = ea.try_campaign().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let seen = changes_until_leader(&mut observer, held.term());
    assert_eq!(terms_accounted(&seen, term_b), 4, "{seen:?}");
    assert!(held.term() > last);
    // The runner: on_new_leader hears the leader it waits behind, then itself.
    let stopper = shmlease::election::Stopper::default();
    let heard = std::sync::Mutex::new(Vec::new());
    let ran = std::thread::scope(|s| {
        let run = s.spawn(|| {
            eb.runner()
                .stopped_by(&stopper)
                .on_new_leader(|l| heard.lock().unwrap().push(l.term))
                .run(|leading| (leading.term(), leading.wait_stop(Some(LONG))))
                .unwrap()
        });
        let heard_n = |n: usize| {
            let end = Instant::now() + LONG;
            while heard.lock().unwrap().len() < n && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        heard_n(1); // it waits behind `held`
        held.resign().unwrap();
        heard_n(2);
        stopper.stop();
        run.join().unwrap()
    });
    let (term, reason) = ran.unwrap();
    assert_eq!(reason, Some(StopReason::Stopped));
    let heard = heard.into_inner().unwrap();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert!(heard[0] < term && heard[1] == term, "{heard:?} then {term}");
    assert!(eb.leader().unwrap().is_none(), "the runner resigned");
}

#[test]
fn an_observer_behind_a_compacted_history_counts_the_terms_it_missed() {
    let _wd = Watchdog::new("observer_compaction", LONG * 2);
    let cluster = Cluster::start("observer-compaction", Setup::default());
    let location = cluster.location("oc");
    let t = LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap();
    let election = t.election("sched").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let mut observer = election.observe();
    assert_eq!(observer.next_change(Some(LONG)).unwrap().unwrap().leader, None);
    // Three terms, then a fourth that leads; then the history the observer would watch
    // from is compacted away.
    for _ in 0..3 {
        election.try_campaign().unwrap().resign().unwrap();
    }
    let leadership = election.try_campaign().unwrap();
    let put = cluster.ctl(&["put", "/oc-marker", "x", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&put).unwrap();
    let revision = v["header"]["revision"].as_u64().unwrap().to_string();
    cluster.ctl(&["compact", &revision]);
    // It reads again (one Txn: a watch alone would need none), and counts the grants
    // in between from grants/NAME's version.
    let before = cluster.rpc_counts();
    let change = observer.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!(delta(&before, &cluster.rpc_counts(), "Txn"), 1);
    assert_eq!(change.leader.as_ref().map(|l| l.term), Some(leadership.term()));
    assert_eq!(change.skipped, Some(3), "{change:?}");
}

#[test]
fn a_request_to_release_reaches_the_holder() {
    let _wd = Watchdog::new("request", LONG * 2);
    let cluster = Cluster::start("request", Setup::default());
    let location = cluster.location("rq");
    let a = LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap();
    let b = LeaseTable::open(location.as_str()).unwrap();
    let ttl = Duration::from_secs(30);
    assert_eq!(b.request_release("job", None).unwrap(), None);
    assert!(matches!(
        b.request_release("job", Some(5)),
        Err(Error::Lost { reason: LostReason::NoSuchName, .. })
    ));

    // With a keep-alive: learnt at once, through its watch.
    let mut lease = a.try_acquire("job", ttl).unwrap();
    lease.keep_alive(ttl).unwrap();
    let token = lease.token();
    assert!(!lease.release_requested());
    assert_eq!(lease.wait_notice(Some(Duration::from_millis(300))), None);
    assert_eq!(b.request_release("job", None).unwrap(), Some(token));
    assert_eq!(lease.wait_notice(Some(LONG)), Some(Notice::ReleaseRequested));
    assert!(lease.release_requested() && lease.is_valid());
    // Asking twice is asking once; another token is refused, saying why.
    assert_eq!(b.request_release("job", Some(token)).unwrap(), Some(token));
    assert!(matches!(
        b.request_release("job", Some(token + 1000)),
        Err(Error::Lost { reason: LostReason::NotIssued { .. }, .. })
    ));
    lease.release().unwrap();
    assert_eq!(b.request_release("job", None).unwrap(), None);
    assert!(matches!(
        b.request_release("job", Some(token)),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));

    // A later grant is not asked by a request to an earlier one; without a keep-alive
    // a request is learnt at the next renewal.
    let lease = a.try_acquire("job", ttl).unwrap();
    assert!(!lease.release_requested());
    assert_eq!(b.request_release("job", None).unwrap(), Some(lease.token()));
    lease.renew(ttl).unwrap();
    assert!(lease.release_requested());
    assert_eq!(lease.wait_notice(None), Some(Notice::ReleaseRequested));
    drop(lease);

    // A leader asked to hand over: its runner's closure hears it, then it resigns.
    let election = a.election("sched").unwrap().ttl(ttl).unwrap();
    let observer_table = LeaseTable::open(location.as_str()).unwrap();
    let (reason, term) = std::thread::scope(|s| {
        let run = s.spawn(|| {
            election.runner().run(|l| (l.wait_stop(Some(LONG)), l.term())).unwrap().unwrap()
        });
        let watcher = observer_table.election("sched").unwrap();
        let mut observer = watcher.observe();
        let term = loop {
            match observer.next_change(Some(LONG)).unwrap().unwrap().leader {
                Some(l) => break l.term,
                None => continue,
            }
        };
        assert_eq!(b.request_release("sched", None).unwrap(), Some(term));
        let ended = observer.next_change(Some(LONG)).unwrap().unwrap();
        assert_eq!((ended.term, ended.leader), (term, None));
        run.join().unwrap()
    });
    assert_eq!(reason, Some(StopReason::Requested));
    assert!(matches!(
        b.request_release("sched", Some(term)),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));

    // A runner stopped while it campaigns gives up at once.
    let holder = b.election("sched").unwrap().ttl(ttl).unwrap().try_campaign().unwrap();
    let stopper = shmlease::election::Stopper::default();
    let gave_up = std::thread::scope(|s| {
        let run = s.spawn(|| election.runner().stopped_by(&stopper).run(|_| ()).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        stopper.stop();
        run.join().unwrap()
    });
    assert_eq!(gave_up, None);
    assert!(holder.is_leader());
}

#[test]
fn a_leader_killed_with_sigkill_is_followed_after_its_ttl_with_a_larger_term() {
    let wd = Watchdog::new("leader_sigkill", LONG * 2);
    let cluster = Cluster::start("leader-kill", Setup::default());
    let location = cluster.location("lk");
    let t = LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap();
    let mut kid = Kid::spawn(
        &wd,
        "leader",
        "etcd_lead",
        &[("LOC", location.clone()), ("NAME", "sched".into()), ("TTL_MS", "2000".into())],
    );
    let old: u64 = kid.expect("leading", LONG).parse().unwrap();
    let election = t.election("sched").unwrap().ttl(Duration::from_secs(2)).unwrap();
    assert_eq!(election.leader().unwrap().unwrap().term, old);
    let mut observer = election.observe();
    let first = observer.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!(first.leader.map(|l| l.term), Some(old));
    kid.signal(libc::SIGKILL);
    kid.wait(LONG);
    // No early reclaim across hosts: the dead leader leads until its TTL runs out.
    assert!(matches!(election.try_campaign(), Err(Error::Held { .. })));
    let mine = election.campaign(Some(LONG)).unwrap();
    assert!(mine.term() > old);
    assert!(matches!(
        t.request_release("sched", Some(old)),
        Err(Error::Lost { reason: LostReason::TakenOver, .. })
    ));
    let seen = changes_until_leader(&mut observer, mine.term());
    assert_eq!(terms_accounted(&seen, old), 1, "{seen:?}");
    assert_eq!(
        seen.last().unwrap().leader.as_ref().unwrap().holder.unwrap().pid,
        std::process::id()
    );
}

#[test]
fn member_faults_during_an_election_never_give_two_leaders_at_once() {
    let wd = Watchdog::new("election_faults", LONG * 5);
    let mut cluster = Cluster::start("election-faults", Setup::default());
    let location = cluster.location("ef");
    drop(LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap());
    const COUNT: u32 = 12;
    let mut kids: Vec<Kid> = (0..3)
        .map(|i| {
            Kid::spawn(
                &wd,
                &format!("candidate {i}"),
                "etcd_candidate",
                &[
                    ("LOC", location.clone()),
                    ("NAME", "sched".into()),
                    ("COUNT", COUNT.to_string()),
                    ("HOLD_MS", "500".into()),
                ],
            )
        })
        .collect();
    let progress = |kids: &[Kid]| kids.iter().map(|k| grants_of(k).len()).sum::<usize>();
    let wait_progress = |kids: &[Kid], more: usize| {
        let from = progress(kids);
        let end = Instant::now() + LONG;
        while progress(kids) < from + more
            && kids.iter().any(|k| grants_of(k).len() < COUNT as usize)
        {
            assert!(Instant::now() < end, "no progress with a quorum");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_progress(&kids, 3);
    // kill -9 of the cluster's leader while a term runs, then back.
    let leader = cluster.wait_leader(LONG);
    cluster.kill(leader);
    wait_progress(&kids, 3);
    cluster.restart(leader);
    cluster.wait_healthy(LONG);
    // SIGSTOP of the (new) leader member: the others elect another one.
    let leader = cluster.wait_leader(LONG);
    cluster.pause(leader);
    wait_progress(&kids, 3);
    cluster.resume(leader);
    // kill -9 of a follower member.
    let follower = (0..3).find(|i| Some(*i) != cluster.leader()).unwrap();
    cluster.kill(follower);
    wait_progress(&kids, 3);
    cluster.restart(follower);
    cluster.wait_healthy(LONG);
    let mut all = Vec::new();
    for k in &mut kids {
        k.wait_ok(LONG * 3);
        all.extend(grants_of(k));
    }
    assert_eq!(all.len(), 3 * COUNT as usize);
    // No two candidates believed they led at overlapping times; terms only grew.
    check_exclusive(all);
}

// ------------------------------------------------------------------------------------
// Security and fork
// ------------------------------------------------------------------------------------

#[test]
fn tls_with_client_certificates() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl is needed to make the test certificates (apt-get install openssl)");
    }
    let _wd = Watchdog::new("tls", LONG * 2);
    let cluster = Cluster::start("tls", Setup { tls: true, ..Setup::default() });
    let t = table(&cluster, "sec");
    let lease = t.try_acquire("job", Duration::from_secs(2)).unwrap();
    assert_eq!(t.get("job").unwrap().unwrap().token, lease.token());
    lease.release().unwrap();

    let certs = cluster.certs.as_ref().unwrap();
    // The wrong CA: the servers are not trusted.
    let wrong = cluster
        .location("sec")
        .replace(&certs.ca.display().to_string(), &certs.other_ca.display().to_string());
    let e = EtcdTable::open(&loc(&(wrong + "&timeout=2s"))).unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. } | Error::Permission { .. }), "{e}");
    // No client certificate: the servers refuse us.
    let anonymous = format!("etcds://{}/sec?ca={}&timeout=2s", cluster.hosts(), certs.ca.display());
    assert!(EtcdTable::open(&loc(&anonymous)).is_err());
    // Plain text against TLS servers.
    let plain = format!("etcd://{}/sec?timeout=2s", cluster.hosts());
    assert!(EtcdTable::open(&loc(&plain)).is_err());
}

#[test]
fn user_and_password_auth() {
    let _wd = Watchdog::new("auth", LONG * 2);
    let mut cluster = Cluster::start("auth", Setup::default());
    cluster.enable_auth("app", "s3cret", "authed");
    let pw = cluster.dir().join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let good = format!("{}?user=app&password_file={}", cluster.location("authed"), pw.display());
    let t = EtcdTable::open_or_create(&loc(&good), &TableOptions::new()).unwrap();
    t.try_acquire("job", Duration::from_secs(2)).unwrap().release().unwrap();

    std::fs::write(&pw, "wrong\n").unwrap();
    let e = EtcdTable::open(&loc(&good)).unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    // Anonymous, or outside the user's prefix: refused.
    let e = EtcdTable::open(&loc(&cluster.location("authed"))).unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let outside =
        format!("{}?user=app&password_file={}", cluster.location("elsewhere"), pw.display());
    let e = EtcdTable::open_or_create(&loc(&outside), &TableOptions::new()).unwrap_err();
    assert!(matches!(e, Error::Permission { .. }), "{e}");
}

#[test]
fn a_forked_child_uses_the_table_and_leaves_the_parents_lease_alone() {
    let _wd = Watchdog::new("fork", LONG * 2);
    let cluster = Cluster::start("fork", Setup::default());
    let t = table(&cluster, "fork");
    let lease = t.try_acquire("parent", Duration::from_secs(10)).unwrap();
    // SAFETY: the child only runs this test's code and then _exits; it never returns
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fork_child(&t, &lease)))
                .unwrap_or(99);
        std::mem::forget(lease);
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    let end = Instant::now() + LONG;
    loop {
        // SAFETY: waitpid on our own child, into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if Instant::now() > end {
            common::signal(pid, libc::SIGKILL);
            panic!("the forked child hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
    // The parent's connection and lease are intact.
    lease.renew(Duration::from_secs(10)).unwrap();
    let info = t.get("parent").unwrap().unwrap();
    assert_eq!((info.state, info.token), (LeaseState::Held, lease.token()));
    assert!(matches!(t.try_acquire("child", Duration::from_secs(1)), Err(Error::Held { .. })));
    lease.release().unwrap();
}

/// In the forked child: the table works (over a connection of its own); the parent's
/// lease can be read but not renewed, released or detached. Exit code 0 when all holds.
fn fork_child(t: &EtcdTable, parent: &EtcdLease) -> i32 {
    let mine = match t.try_acquire("child", Duration::from_secs(10)) {
        Ok(l) => l,
        Err(_) => return 1,
    };
    if !matches!(parent.renew(Duration::from_secs(10)), Err(Error::BoundToProcess { .. })) {
        return 2;
    }
    if !parent.is_valid() || parent.token() == 0 {
        return 3;
    }
    if t.get("parent").ok().flatten().map(|i| i.state) != Some(LeaseState::Held) {
        return 4;
    }
    // Kept: the parent checks that it is held by this child's pid... then it is gone.
    let token = mine.token();
    mine.detach().map(|_| ()).unwrap_or(());
    if t.get("child").ok().flatten().map(|i| i.token) != Some(token) {
        return 5;
    }
    0
}

// ------------------------------------------------------------------------------------
// One API above both backends
// ------------------------------------------------------------------------------------

/// The behaviour every backend shares, through `LeaseTable` alone: run on a
/// shared-memory table and on an etcd table, so that a difference is a failure here or
/// a row of the semantics table (docs/etcd.md), never a surprise.
fn conformance(t: &LeaseTable, other: &LeaseTable) {
    let ttl = Duration::from_secs(2);
    let lease = t.acquire_with("job", ttl, &AcquireOptions::new().label("c1").unwrap()).unwrap();
    assert!(lease.is_valid() && lease.remaining() > Duration::ZERO);
    match other.try_acquire("job", ttl) {
        Err(Error::Held { token, holder: Some(h), .. }) => {
            assert_eq!(
                (token, h.pid, h.label.as_str()),
                (lease.token(), std::process::id(), "c1".into())
            );
        }
        r => panic!("{r:?}"),
    }
    let info = other.get("job").unwrap().unwrap();
    assert_eq!((info.state, info.token), (LeaseState::Held, lease.token()));
    lease.renew(ttl).unwrap();
    let first = lease.token();
    lease.release().unwrap();
    assert_eq!(other.get("job").unwrap().unwrap().state, LeaseState::Free);

    let mut second = other.acquire("job", ttl, Some(LONG)).unwrap();
    assert!(second.token() > first);
    second.keep_alive(ttl).unwrap();
    assert_eq!(t.revoke("job").unwrap(), Some(second.token()));
    assert_eq!(second.wait_lost(Some(LONG)), Some(LostReason::Revoked));
    assert!(matches!(second.renew(ttl), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    drop(second);
    assert_eq!(other.get("job").unwrap().unwrap().state, LeaseState::Revoked);

    let d = t.try_acquire("detached", ttl).unwrap().detach().unwrap();
    assert!(other.get("detached").unwrap().unwrap().holder.unwrap().detached);
    other.renew("detached", d.token, ttl).unwrap();
    other.release("detached", d.token).unwrap();
    assert!(matches!(
        other.release("detached", d.token),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    assert!(matches!(
        other.renew("never", 7, ttl),
        Err(Error::Lost { reason: LostReason::NoSuchName, .. })
    ));

    let raw = t.try_acquire("raw", ttl).unwrap().into_raw();
    let back = shmlease::Lease::from_raw(t, raw).unwrap();
    assert!(back.is_valid());
    back.release().unwrap();

    let names: Vec<_> = t.list().unwrap().into_iter().map(|l| l.name).collect();
    for n in ["job", "detached", "raw"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    assert!(t.info().counters.grants >= 4);
    assert!(matches!(t.try_acquire("", ttl), Err(Error::InvalidName { .. })));

    // By token, from the holding process itself: its validity ends before the call
    // returns (before anyone else can be granted).
    let own = t.try_acquire("own", ttl).unwrap();
    t.release("own", own.token()).unwrap();
    assert!(!own.is_valid());
    let mut own = t.try_acquire("own", ttl).unwrap();
    own.keep_alive(ttl).unwrap();
    t.revoke_token("own", own.token()).unwrap();
    assert!(!own.is_valid());
    assert_eq!(own.wait_lost(Some(LONG)), Some(LostReason::Revoked));
    drop(own);

    // Elections and requests to release.
    let election = t.election("el").unwrap().ttl(ttl).unwrap().label("c1").unwrap();
    let watcher = other.election("el").unwrap();
    let mut observer = watcher.observe();
    assert_eq!(
        observer.next_change(Some(LONG)).unwrap(),
        Some(Change { term: 0, leader: None, skipped: Some(0) })
    );
    assert!(watcher.leader().unwrap().is_none());
    let leadership = election.try_campaign().unwrap();
    assert!(leadership.is_leader());
    let leader = watcher.leader().unwrap().unwrap();
    assert_eq!(
        (leader.term, leader.holder.unwrap().label.as_str()),
        (leadership.term(), "c1".into())
    );
    assert!(matches!(watcher.try_campaign(), Err(Error::Held { .. })));
    let change = observer.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!((change.leader.map(|l| l.term), change.skipped), (Some(leadership.term()), Some(0)));
    assert_eq!(other.request_release("el", None).unwrap(), Some(leadership.term()));
    assert_eq!(leadership.wait_notice(Some(LONG)), Some(Notice::ReleaseRequested));
    assert!(leadership.release_requested());
    let term = leadership.term();
    leadership.resign().unwrap();
    assert_eq!(
        observer.next_change(Some(LONG)).unwrap(),
        Some(Change { term, leader: None, skipped: Some(0) })
    );
    assert!(watcher.leader().unwrap().is_none());
    assert_eq!(other.request_release("el", None).unwrap(), None);
    assert!(matches!(
        other.request_release("el", Some(term)),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    // A resignation by term (the C library's), from the leading process: not leading
    // from before the call returns.
    let leadership = election.try_campaign().unwrap();
    t.release("el", leadership.term()).unwrap();
    assert!(!leadership.is_leader());
    assert!(matches!(leadership.resign(), Err(Error::Lost { .. })));
}

/// Permits and shared leases, as both backends must agree on them.
fn kinds_conformance(t: &LeaseTable, other: &LeaseTable) {
    let ttl = Duration::from_secs(3);
    let two = AcquireOptions::new().permits(2).unwrap();
    let a = t.acquire_with("pool", ttl, &two).unwrap();
    let b = other.acquire_with("pool", ttl, &two).unwrap();
    assert!(b.token() > a.token());
    assert!(matches!(t.acquire_with("pool", ttl, &two), Err(Error::Held { .. })));
    let wrong = |r: Result<shmlease::Lease<'_>, Error>, recorded, requested| match r {
        Err(Error::WrongKind { recorded: r, requested: q, .. }) => {
            assert_eq!((r, q), (recorded, requested))
        }
        r => panic!("{r:?}"),
    };
    use shmlease::LeaseKind::{Exclusive, Permits, Shared};
    wrong(other.try_acquire("pool", ttl), Permits(2), Exclusive);
    let three = AcquireOptions::new().permits(3).unwrap();
    wrong(other.acquire_with("pool", ttl, &three), Permits(2), Permits(3));
    wrong(other.acquire_with("pool", ttl, &shared_options()), Permits(2), Shared);
    let info = other.get("pool").unwrap().unwrap();
    assert_eq!((info.kind, info.state), (Permits(2), LeaseState::Held));
    let tokens: Vec<u64> = info.grants.iter().map(|g| g.token).collect();
    assert_eq!(tokens, vec![a.token(), b.token()]);
    assert!(info.grants.iter().all(|g| g.holder.unwrap().pid == std::process::id()));
    assert!(other.list().unwrap().iter().any(|l| l.name == "pool" && l.grants.len() == 2));
    // By token, from the holding process: that permit only.
    other.release("pool", b.token()).unwrap();
    assert!(!b.is_valid() && a.is_valid());
    drop(b);
    let c = other.acquire_with("pool", ttl, &two).unwrap();
    assert!(c.token() > a.token());
    assert_eq!(t.revoke("pool").unwrap(), Some(c.token()));
    assert!(matches!(a.renew(ttl), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    assert!(matches!(c.renew(ttl), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    drop((a, c));
    // An exclusive lease that is live is never turned into permits.
    let x = t.try_acquire("solo", ttl).unwrap();
    wrong(other.acquire_with("solo", ttl, &two), Exclusive, Permits(2));
    drop(x);

    let r1 = t.acquire_with("rw", ttl, &shared_options()).unwrap();
    let r2 = other.acquire_with("rw", ttl, &shared_options()).unwrap();
    assert!(r2.token() > r1.token());
    assert!(matches!(other.try_acquire("rw", ttl), Err(Error::Held { .. })));
    let info = t.get("rw").unwrap().unwrap();
    assert_eq!(info.kind, Shared);
    assert!(info.grants.len() == 2 && info.grants.iter().all(|g| g.shared));
    wrong(other.acquire_with("rw", ttl, &two), Shared, Permits(2));
    // A waiting exclusive acquirer keeps new shared grants out, and gets the name
    // once both shared holders have left.
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| other.acquire("rw", ttl, Some(LONG)).map(|l| l.token()));
        let end = Instant::now() + LONG;
        loop {
            match t.acquire_with("rw", ttl, &shared_options()) {
                Err(Error::Held { .. }) => break,
                Ok(late) => drop(late), // the writer has not taken the name yet
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < end, "the exclusive acquirer never kept shared ones out");
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..5 {
            let late = t.acquire_with("rw", ttl, &shared_options());
            assert!(matches!(late, Err(Error::Held { .. })), "a shared grant while draining");
        }
        r1.renew(ttl).unwrap();
        drop(r1);
        assert!(!writer.is_finished(), "granted (or failed) with a shared holder left");
        drop(r2);
        let token = writer.join().unwrap().unwrap();
        assert!(token > 0);
    });
}

/// Fair acquisition, as both backends must agree on it: waiters that have taken their
/// places in a known order are granted in that order.
fn fair_conformance(t: &LeaseTable, other: &LeaseTable) {
    let ttl = Duration::from_secs(3);
    let fair = AcquireOptions::new().fair(true);
    // Uncontended, a fair acquisition is an ordinary one.
    drop(t.acquire_with("line", ttl, &fair).unwrap());
    let holder = t.try_acquire("line", ttl).unwrap();
    assert!(matches!(other.acquire_with("line", ttl, &fair), Err(Error::Held { .. })));
    let order = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let (order, fair) = (&order, fair.clone().wait(Some(LONG)));
                let w = scope.spawn(move || {
                    let lease = other.acquire_with("line", ttl, &fair).unwrap();
                    order.lock().unwrap().push((i, lease.token()));
                    std::thread::sleep(Duration::from_millis(30));
                });
                let end = Instant::now() + LONG;
                while t.get("line").unwrap().unwrap().queue.len() < i + 1 {
                    assert!(Instant::now() < end, "waiter {i} never queued");
                    std::thread::sleep(Duration::from_millis(5));
                }
                w
            })
            .collect();
        // Waiting longer than a place's TTL keeps the places (their waiters renew them).
        std::thread::sleep(Duration::from_millis(2500));
        let queue = t.get("line").unwrap().unwrap().queue;
        assert_eq!(queue.len(), 3, "{queue:?}");
        assert!(queue.windows(2).all(|w| w[0].ticket < w[1].ticket), "{queue:?}");
        assert_eq!(queue[0].holder.unwrap().pid, std::process::id());
        drop(holder);
        for w in waiters {
            w.join().unwrap();
        }
    });
    let order = order.into_inner().unwrap();
    assert_eq!(order.iter().map(|o| o.0).collect::<Vec<_>>(), vec![0, 1, 2], "{order:?}");
    assert!(order.windows(2).all(|w| w[0].1 < w[1].1));
    assert!(t.get("line").unwrap().unwrap().queue.is_empty());
    // Fair on a name with permits: arrival order too, each waiting for a permit.
    let two = AcquireOptions::new().permits(2).unwrap().fair(true);
    let (a, b) =
        (t.acquire_with("fp", ttl, &two).unwrap(), t.acquire_with("fp", ttl, &two).unwrap());
    assert!(matches!(other.acquire_with("fp", ttl, &two), Err(Error::Held { .. })));
    std::thread::scope(|scope| {
        let w = scope.spawn(|| {
            other.acquire_with("fp", ttl, &two.clone().wait(Some(LONG))).map(|l| l.token())
        });
        let end = Instant::now() + LONG;
        while t.get("fp").unwrap().unwrap().queue.is_empty() {
            assert!(Instant::now() < end, "never queued");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(a);
        assert!(w.join().unwrap().unwrap() > b.token());
    });
    // A fair wait that times out leaves the queue.
    let fair_short = fair.clone().wait(Some(Duration::from_millis(300)));
    let h = t.try_acquire("line", ttl).unwrap();
    assert!(matches!(other.acquire_with("line", ttl, &fair_short), Err(Error::TimedOut { .. })));
    assert!(t.get("line").unwrap().unwrap().queue.is_empty());
    drop(h);
}

fn shared_options() -> AcquireOptions {
    AcquireOptions::new().shared(true)
}

#[test]
fn one_api_over_both_backends() {
    let _wd = Watchdog::new("conformance", LONG * 2);
    let scratch = common::Scratch::new("conformance");
    let path = scratch.path("table");
    let shm = LeaseTable::create(&path, &TableOptions::new().capacity(16)).unwrap();
    conformance(&shm, &LeaseTable::open(&path).unwrap());
    kinds_conformance(&shm, &LeaseTable::open(&path).unwrap());
    fair_conformance(&shm, &LeaseTable::open(&path).unwrap());

    let cluster = Cluster::start("conformance", Setup::default());
    let location = cluster.location("conf");
    let t = LeaseTable::open_or_create(location.as_str(), &TableOptions::new()).unwrap();
    assert_eq!(t.location(), &shmlease::Location::Etcd(location.clone()));
    assert!(matches!(
        LeaseTable::create(location.as_str(), &TableOptions::new()),
        Err(Error::AlreadyExists { .. })
    ));
    conformance(&t, &LeaseTable::open(location.as_str()).unwrap());
    kinds_conformance(&t, &LeaseTable::open(location.as_str()).unwrap());
    fair_conformance(&t, &LeaseTable::open(location.as_str()).unwrap());
    drop(t);
    let e = LeaseTable::open("etcd://127.0.0.1:1/x?timeout=300ms").unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(matches!(LeaseTable::open("etcd://nowhere"), Err(Error::InvalidOptions { .. })));
}

#[test]
fn the_cli_on_an_etcd_table() {
    let _wd = Watchdog::new("cli", LONG * 2);
    let cluster = Cluster::start("cli", Setup::default());
    let location = cluster.location("cli");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shmlease"))
            .arg("-t")
            .arg(&location)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(cli(&["create"]).0, Some(0), "{:?}", cli(&["create"]));
    let (code, token, err) = cli(&["acquire", "job", "--ttl", "5s", "--label", "cli"]);
    assert_eq!(code, Some(0), "{err}");
    let token = token.trim().to_owned();
    let (_, ls, _) = cli(&["ls"]);
    assert!(ls.contains("job") && ls.contains(&token), "{ls}");
    let (code, _, _) = cli(&["acquire", "job", "--ttl", "5s"]);
    assert_ne!(code, Some(0));
    assert_eq!(cli(&["renew", "job", "--token", &token, "--ttl", "5s"]).0, Some(0));
    assert_eq!(cli(&["release", "job", "--token", &token]).0, Some(0));
    // `run` holds the lease while CMD runs, with SHMLEASE_TOKEN exported.
    let (code, out, err) =
        cli(&["run", "job", "--ttl", "2s", "--", "sh", "-c", "echo got $SHMLEASE_TOKEN"]);
    assert_eq!(
        code,
        Some(0),
        "{err}\n{}",
        cluster.ctl(&["get", "--prefix", "/cli", "-w", "fields"])
    );
    let got: u64 = out.trim().strip_prefix("got ").unwrap().parse().unwrap();
    assert!(got > token.parse::<u64>().unwrap());
    let (code, info, err) = cli(&["info"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(info.contains("etcd"), "{info}");

    // Permits, shared and fair, as on a segment.
    let permit =
        |label: &str| cli(&["acquire", "pool", "--ttl", "10s", "--permits", "2", "--label", label]);
    let (code, a, err) = permit("a");
    assert_eq!(code, Some(0), "{err}");
    let (code, b, err) = permit("b");
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = permit("c");
    assert_ne!(code, Some(0), "a third permit of two: {err}");
    let (code, _, err) = cli(&["acquire", "pool", "--ttl", "5s"]);
    assert_eq!(code, Some(65), "an exclusive lease of a name with permits: {err}");
    let (_, ls, _) = cli(&["ls"]);
    assert!(ls.contains("2 of 2 permits"), "{ls}");
    assert_eq!(cli(&["release", "pool", "--token", a.trim()]).0, Some(0));
    let (code, out, err) = cli(&[
        "run",
        "pool",
        "--permits",
        "2",
        "--ttl",
        "2s",
        "--",
        "sh",
        "-c",
        "echo got $SHMLEASE_TOKEN",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let got: u64 = out.trim().strip_prefix("got ").unwrap().parse().unwrap();
    assert!(got > b.trim().parse::<u64>().unwrap());
    assert_eq!(cli(&["revoke", "pool"]).0, Some(0));
    for args in [["--shared"], ["--fair"]] {
        let mut run = vec!["run", "kinds"];
        run.extend(args);
        run.extend(["--ttl", "2s", "--", "true"]);
        let (code, _, err) = cli(&run);
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
}

#[test]
fn the_cli_leads_observes_and_asks_on_an_etcd_table() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let _wd = Watchdog::new("cli_election", LONG * 2);
    let cluster = Cluster::start("cli-election", Setup::default());
    let location = cluster.location("cle");
    let shmlease = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shmlease"));
        c.arg("-t").arg(&location);
        c
    };
    let cli = |args: &[&str]| {
        let out = shmlease().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(cli(&["create"]).0, Some(0));
    let (code, out, err) = cli(&["leader", "sched"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("nobody leads"), "{out}");

    // An observer, started before anyone leads: its first line is the state at start.
    let mut observer = common::etcd::Guarded::spawn(
        shmlease().args(["observe", "sched", "--json", "--count", "3"]).stdout(Stdio::piped()),
    );
    let mut lines = std::io::BufReader::new(observer.0.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!((first["leading"].as_bool(), first["term"].as_u64()), (Some(false), Some(0)));

    // `run` is a candidate; asked to release, it passes SIGTERM to CMD and resigns.
    let mut run = common::etcd::Guarded::spawn(shmlease().args([
        "run",
        "sched",
        "--ttl",
        "5s",
        "--label",
        "cli",
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.05; done",
    ]));
    let end = Instant::now() + LONG;
    let term = loop {
        let (code, out, err) = cli(&["leader", "sched", "--json"]);
        if code == Some(0) {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["label"].as_str(), Some("cli"), "{out}");
            break v["term"].as_u64().unwrap();
        }
        assert!(Instant::now() < end, "nobody leads: {out}{err}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, out, err) = cli(&["request-release", "sched"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), term.to_string());
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "run ended with {status:?}");
    let (code, out, _) = cli(&["leader", "sched"]);
    assert_eq!(code, Some(1));
    assert!(out.contains(&format!("the last term was {term}")), "{out}");

    let rest: Vec<serde_json::Value> =
        lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!((rest[0]["leading"].as_bool(), rest[0]["term"].as_u64()), (Some(true), Some(term)));
    assert_eq!((rest[1]["leading"].as_bool(), rest[1]["term"].as_u64()), (Some(false), Some(term)));
    assert_eq!(observer.0.wait().unwrap().code(), Some(0));
}

/// The C program of `the_c_library_elects_and_asks_on_an_etcd_table`: the same calls as
/// on a segment (ffi/tests/c/election.c), on the location it is given.
const ELECTION_C: &str = r#"
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

#define WAIT (60 * (int64_t)SEC)

int main(int argc, char **argv) {
    CHECK(argc == 2);
    shmlease_table *t = NULL;
    OK(shmlease_table_open_or_create(argv[1], NULL, &t));
    shmlease_leader who;
    OK(shmlease_leader_get(t, "sched", &who));
    CHECK(!who.elected && who.term == 0);
    shmlease_observer *o = NULL;
    OK(shmlease_observer_open(t, "sched", &o));
    shmlease_change c;
    OK(shmlease_observer_next(o, WAIT, &c));
    CHECK(!c.leader.elected && c.leader.term == 0 && c.skipped == 0);

    shmlease_leadership *l = NULL;
    OK(shmlease_try_campaign(t, "sched", 30 * SEC, "c", &l, NULL));
    uint64_t term = 0;
    OK(shmlease_leadership_term(l, &term));
    bool leading = false;
    OK(shmlease_leadership_is_leader(l, &leading));
    CHECK(leading);
    OK(shmlease_leader_get(t, "sched", &who));
    CHECK(who.elected && who.term == term && who.remaining_ns > 0);
    shmlease_leadership *other = NULL;
    shmlease_held_by by;
    EXPECT(shmlease_try_campaign(t, "sched", 30 * SEC, "d", &other, &by), SHMLEASE_HELD);
    CHECK(by.token == term && other == NULL);
    OK(shmlease_observer_next(o, WAIT, &c));
    CHECK(c.leader.elected && c.leader.term == term && c.skipped == 0);

    uint64_t asked = 0;
    OK(shmlease_request_release(t, "sched", &asked));
    CHECK(asked == term);
    shmlease_notice n;
    OK(shmlease_leadership_wait_notice(l, WAIT, &n));
    CHECK(n == SHMLEASE_NOTICE_RELEASE_REQUESTED);
    bool requested = false;
    OK(shmlease_leadership_release_requested(l, &requested));
    CHECK(requested);
    EXPECT(shmlease_request_release_token(t, "sched", term + 1000), SHMLEASE_LOST);

    OK(shmlease_resign(l));
    OK(shmlease_leadership_is_leader(l, &leading));
    CHECK(!leading);
    OK(shmlease_leadership_wait_notice(l, WAIT, &n));
    CHECK(n == SHMLEASE_NOTICE_LOST_RELEASED);
    OK(shmlease_observer_next(o, WAIT, &c));
    CHECK(!c.leader.elected && c.leader.term == term && c.skipped == 0);
    OK(shmlease_leader_get(t, "sched", &who));
    CHECK(!who.elected && who.term == term);
    shmlease_leadership_free(l);
    shmlease_observer_close(o);
    shmlease_table_close(t);
    printf("@@term %llu\n", (unsigned long long)term);
    return 0;
}
"#;

/// The C library built with the `etcd` feature (same cargo, profile and target
/// directory as this test), copied into `dir` so that a build without the feature
/// meanwhile (ffi/tests/c_programs.rs makes one) cannot swap it under the program.
fn c_library_with_etcd(dir: &std::path::Path) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args(["build", "-p", "shmlease-ffi", "--features", "etcd", "--target-dir"]);
    cargo.arg(profile.parent().expect("target"));
    if profile.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = cargo.current_dir(repo).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lib = dir.join("libshmlease.so");
    std::fs::copy(profile.join("libshmlease.so"), &lib).unwrap();
    lib
}

/// Compiles `source` against the C library built with the feature and runs it on the
/// table `prefix` of `cluster`; its stdout, once it has exited with success.
fn c_program_on_etcd(cluster: &Cluster, prefix: &str, source: &str) -> String {
    let dir = cluster.dir().join(prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let lib = c_library_with_etcd(&dir);
    let src = dir.join("program.c");
    std::fs::write(&src, source).unwrap();
    let exe = dir.join("program");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let gcc = std::process::Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg("-I")
        .arg(repo.join("include"))
        .arg("-I")
        .arg(repo.join("ffi/tests/c"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .output()
        .unwrap();
    assert!(gcc.status.success(), "{}", String::from_utf8_lossy(&gcc.stderr));
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = common::etcd::Guarded::spawn(
        std::process::Command::new(&exe)
            .arg(cluster.location(prefix))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap()),
    );
    let status = child.0.wait().unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(status.success(), "{stdout}{}", std::fs::read_to_string(&err).unwrap());
    stdout
}

#[test]
fn the_c_library_elects_and_asks_on_an_etcd_table() {
    let _wd = Watchdog::new("c_election", LONG * 5);
    let cluster = Cluster::start("c-election", Setup::default());
    let stdout = c_program_on_etcd(&cluster, "c", ELECTION_C);
    let term: u64 = stdout.trim().strip_prefix("@@term ").unwrap().parse().unwrap();
    // What C did, Rust sees: the term ended by its resignation.
    let t = LeaseTable::open(cluster.location("c").as_str()).unwrap();
    let info = t.get("sched").unwrap().unwrap();
    assert_eq!((info.token, info.state), (term, LeaseState::Free));
}

#[test]
fn the_c_library_takes_permits_shared_and_fair_grants_on_an_etcd_table() {
    let _wd = Watchdog::new("c_kinds", LONG * 5);
    let cluster = Cluster::start("c-kinds", Setup::default());
    let stdout = c_program_on_etcd(&cluster, "ck", KINDS_C);
    let tokens: Vec<u64> = stdout
        .trim()
        .strip_prefix("@@pool ")
        .unwrap()
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    // What C left, Rust sees: a detached permit, by its token.
    let t = LeaseTable::open(cluster.location("ck").as_str()).unwrap();
    let info = t.get("pool").unwrap().unwrap();
    assert_eq!(info.kind, shmlease::LeaseKind::Permits(2));
    assert_eq!(info.grants.iter().map(|g| g.token).collect::<Vec<_>>(), vec![tokens[1]]);
    t.release("pool", tokens[1]).unwrap();
}

const KINDS_C: &str = r#"
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc == 2);
    shmlease_table *t = NULL;
    OK(shmlease_table_open_or_create(argv[1], NULL, &t));
    shmlease_acquire_options two = {0};
    two.permits = 2;
    shmlease_lease *a = NULL, *b = NULL, *c = NULL;
    shmlease_held_by by;
    OK(shmlease_acquire_with(t, "pool", 30 * SEC, &two, &a, NULL));
    OK(shmlease_acquire_with(t, "pool", 30 * SEC, &two, &b, NULL));
    CHECK(token_of(b) > token_of(a));
    EXPECT(shmlease_acquire_with(t, "pool", 30 * SEC, &two, &c, &by), SHMLEASE_HELD);
    CHECK(c == NULL);
    EXPECT(shmlease_try_acquire(t, "pool", 30 * SEC, &c, NULL), SHMLEASE_WRONG_KIND);
    shmlease_grant grants[4];
    size_t n = 0;
    OK(shmlease_get_grants(t, "pool", grants, 4, &n));
    CHECK(n == 2 && grants[0].token == token_of(a) && grants[1].token == token_of(b));
    OK(shmlease_release(a));
    shmlease_lease_free(a);
    // A fair wait for a permit, granted at once (one is free, nobody in line).
    shmlease_acquire_options fair = two;
    fair.fair = true;
    fair.timeout_ns = 60 * (int64_t)SEC;
    OK(shmlease_acquire_with(t, "pool", 30 * SEC, &fair, &c, NULL));
    CHECK(token_of(c) > token_of(b));
    OK(shmlease_lease_detach(c, NULL));

    shmlease_acquire_options reader = {0};
    reader.shared = true;
    shmlease_lease *r1 = NULL, *r2 = NULL, *w = NULL;
    OK(shmlease_acquire_with(t, "rw", 30 * SEC, &reader, &r1, NULL));
    OK(shmlease_acquire_with(t, "rw", 30 * SEC, &reader, &r2, NULL));
    EXPECT(shmlease_try_acquire(t, "rw", 30 * SEC, &w, &by), SHMLEASE_HELD);
    OK(shmlease_get_grants(t, "rw", grants, 4, &n));
    CHECK(n == 2 && grants[0].shared && grants[1].shared);
    shmlease_lease_free(r1);
    shmlease_lease_free(r2);
    OK(shmlease_try_acquire(t, "rw", 30 * SEC, &w, NULL));
    shmlease_lease_free(w);

    printf("@@pool %llu %llu\n", (unsigned long long)token_of(b), (unsigned long long)token_of(c));
    shmlease_lease_free(b);
    shmlease_lease_free(c);
    shmlease_table_close(t);
    return 0;
}
"#;
