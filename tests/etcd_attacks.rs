//! Attacks on the etcd backend's permits, shared leases and fair acquisition (and the
//! renewals under them), against a real three-member cluster (tests/common/etcd.rs),
//! with real client processes: exclusivity is judged from the clients' own conservative
//! validity intervals (one host, one CLOCK_MONOTONIC). Each test has a watchdog and
//! kills every process it started.

#![cfg(feature = "etcd")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::{loc, mono_ns, mono_of, table, Cluster, Setup};
use common::kinds::{check_kinds, grants_when_done, kind_options, seen_of, Seen};
use common::{say, Kid, Watchdog};
use shmlease::etcd::EtcdTable;
use shmlease::{AcquireOptions, Error, Interrupt, LeaseKind, LostReason};

const LONG: Duration = Duration::from_secs(60);

/// Puts `key` = `value` on the cluster as raw bytes (keys with a NUL, which `etcdctl`
/// cannot take on its command line): a foreign or buggy writer under the prefix.
fn raw_put(cluster: &Cluster, key: &[u8], value: &[u8]) {
    let endpoints: Vec<String> =
        cluster.hosts().split(',').map(|h| format!("http://{h}")).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect(endpoints, None).await.unwrap();
        c.put(key.to_vec(), value.to_vec(), None).await.unwrap();
    });
}

#[test]
#[ignore = "a child process's entry point, run by the other tests"]
fn child_main() {
    match std::env::var(common::ROLE).as_deref() {
        Ok("atk_hold") => std::process::exit(role_hold()),
        _ => common::run_child(),
    }
}

fn env(key: &str) -> String {
    std::env::var(format!("SHMLEASE_IT_{key}")).unwrap_or_else(|_| panic!("missing {key}"))
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(format!("SHMLEASE_IT_{key}")).unwrap_or_else(|_| default.into())
}

/// Takes `NAME` (kind `KIND`, TTL `TTL_MS`, waiting up to `WAIT_MS`, fairly with
/// `FAIR=1`) `COUNT` times; reports `@@got TOKEN` at once, holds it `HOLD_MS`, renewing
/// every `RENEW_MS` (stopping at the first failed renewal), releases it, and reports
/// `@@grant TOKEN START END BEGIN KIND`: the monotonic times between which it believed
/// it held the grant (from the acquisition's return to the earlier of its deadline and
/// the moment it stopped). A refusal for another kind is retried (`@@wrong`), an
/// unreachable cluster too.
fn role_hold() -> i32 {
    let location = loc(&env("LOC"));
    let name = env("NAME");
    let kind = env_or("KIND", "x");
    let ttl = Duration::from_millis(env_or("TTL_MS", "2000").parse().unwrap());
    let hold = Duration::from_millis(env_or("HOLD_MS", "50").parse().unwrap());
    let renew = Duration::from_millis(env_or("RENEW_MS", "500").parse().unwrap());
    let wait = Duration::from_millis(env_or("WAIT_MS", "30000").parse().unwrap());
    let count: u32 = env_or("COUNT", "1").parse().unwrap();
    let fair = env_or("FAIR", "0") == "1";
    let options = kind_options(&kind).wait(Some(wait)).fair(fair);
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
        let lease = match table.acquire_with(&name, ttl, &options) {
            Ok(l) => l,
            Err(Error::WrongKind { .. }) => {
                say("wrong", "");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(Error::Unavailable { reason, .. }) => {
                say("unavailable", reason.replace('\n', " "));
                continue;
            }
            Err(e) => {
                say("failed", e.to_string().replace('\n', " "));
                return 3;
            }
        };
        let start = mono_ns();
        say("got", lease.token());
        let began = Instant::now();
        while began.elapsed() < hold {
            std::thread::sleep(renew.min(hold.saturating_sub(began.elapsed())));
            if began.elapsed() >= hold {
                break;
            }
            if let Err(e) = lease.renew(ttl) {
                say("renew_failed", e.to_string().replace('\n', " "));
                break;
            }
        }
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

fn holder(
    wd: &Watchdog,
    cluster: &Cluster,
    prefix: &str,
    label: &str,
    env: &[(&str, &str)],
) -> Kid {
    let mut all: Vec<(&str, String)> = vec![("LOC", cluster.location(prefix))];
    all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    Kid::spawn(wd, label, "atk_hold", &all)
}

/// Polls `what` until it holds (within `LONG`).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + LONG;
    while !done() {
        assert!(Instant::now() < end, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `f` on a thread and returns what it returns, or panics if it has not returned
/// within `limit` (a spin or a hang).
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

// ------------------------------------------------------------------------------------
// Untrusted keys under the prefix
// ------------------------------------------------------------------------------------

/// A key under `lease/NAME\0` that is no seat (written by a foreign or buggy client)
/// keeps a permit or shared grant out. The acquirer must say so (an error), not retry
/// its grant forever without waiting (a busy loop on the cluster, even for a try).
#[test]
fn a_foreign_key_among_the_seats_is_an_error_not_a_busy_loop() {
    let _wd = Watchdog::new("foreign_seat", LONG * 2);
    let cluster = Cluster::start("atk-foreign", Setup::default());
    let t = table(&cluster, "fk");
    let ttl = Duration::from_secs(2);
    // After the permits' tag (refuses every permit), before it (and inside the "p"
    // range that refuses shared seats), and a seat index out of range for its N.
    raw_put(&cluster, b"/fk/.shmlease/lease/pool\0zz", b"junk");
    raw_put(&cluster, b"/fk/.shmlease/lease/rw\0p1.0", b"junk");
    raw_put(&cluster, b"/fk/.shmlease/lease/big\0p2.9", b"junk");
    let cases: [(&str, AcquireOptions); 4] = [
        ("pool", AcquireOptions::new().permits(2).unwrap()),
        ("rw", AcquireOptions::new().shared(true)),
        ("big", AcquireOptions::new().permits(3).unwrap()),
        ("pool", AcquireOptions::new().permits(2).unwrap().wait(Some(Duration::from_secs(1)))),
    ];
    for (name, options) in cases {
        let t = t.clone();
        let got =
            within(&format!("a grant of {name} over a foreign key"), Duration::from_secs(15), {
                move || t.acquire_with(name, ttl, &options).map(|l| l.token())
            });
        assert!(got.is_err(), "{name}: granted over a foreign key: {got:?}");
    }
    // The name's own readers neither panic nor hang on it.
    for name in ["pool", "rw", "big"] {
        let _ = t.get(name).unwrap();
    }
    let _ = t.list().unwrap();
    // A permit of p2 ignores a key that is not one of its seats only if it is not in
    // the way of its compares: p2.9 sorts among p2's own seats.
    let two = AcquireOptions::new().permits(2).unwrap();
    drop(t.acquire_with("big", ttl, &two).unwrap());
}

/// Garbage values and odd keys in every directory: readers error or skip, never panic,
/// and grants go on.
#[test]
fn garbage_under_the_prefix_is_read_without_a_panic() {
    let _wd = Watchdog::new("garbage", LONG * 2);
    let cluster = Cluster::start("atk-garbage", Setup::default());
    let t = table(&cluster, "gb");
    let ttl = Duration::from_secs(2);
    let two = AcquireOptions::new().permits(2).unwrap();
    let held = t.acquire_with("n", ttl, &two).unwrap();
    let base = b"/gb/.shmlease/".to_vec();
    let key = |dir: &str, rest: &[u8]| [base.as_slice(), dir.as_bytes(), rest].concat();
    let garbage: [(Vec<u8>, &[u8]); 13] = [
        (key("lease/", b"n\0s.3"), b"\xff\xfe"),
        (key("lease/", b"\xff\xfe"), b"holder pid=1"),
        (key("lease/", b"n\0p2.0\0s.1"), b"x"),
        (key("grants/", b"n\0p2.1"), b"holder ttl=-9 acquired=18446744073709551615"),
        (key("grants/", b"ghost"), b"\x00"),
        (key("ends/", b"n\0p2.0"), b"released 18446744073709551615"),
        (key("ends/", b"ghost"), b"revoked -1"),
        (key("queue/", b"n"), b"holder"),
        (key("queue/", b"n\0zz"), b"\xff"),
        (key("queue/", b"\0"), b""),
        (key("asks/", b"n\0p2.0"), b"?"),
        (key("lease/", b""), b"empty name"),
        (key("", b"lease"), b"not a dir"),
    ];
    for (k, v) in garbage {
        raw_put(&cluster, &k, v);
    }
    let info = t.get("n").unwrap().expect("n");
    assert!(info.grants.iter().any(|g| g.token == held.token()), "{info:?}");
    for l in t.list().unwrap() {
        let _ = format!("{l:?}");
    }
    let _ = t.get("ghost").unwrap();
    let _ = t.info().unwrap();
    // The holder keeps renewing; a by-token operation on a garbage seat fails cleanly.
    held.renew(ttl).unwrap();
    assert!(t.release("n", 1).is_err());
    assert!(t.revoke_token("n", 2).is_err());
    drop(held);
}

// ------------------------------------------------------------------------------------
// Renewals racing each other
// ------------------------------------------------------------------------------------

/// A renewal to a shorter TTL moves the key to a shorter etcd lease: the holder's own
/// validity must shrink with it, or it believes itself valid after the server expired
/// its key and someone else was granted the name.
#[test]
fn a_renewal_to_a_shorter_ttl_shortens_the_holders_validity() {
    let _wd = Watchdog::new("renew_shorter", LONG * 2);
    let cluster = Cluster::start("atk-shorter", Setup::default());
    let t = table(&cluster, "rs");
    let other = EtcdTable::open(&loc(&cluster.location("rs"))).unwrap();
    let lease = t.acquire("r", Duration::from_secs(8), Some(LONG)).unwrap();
    lease.renew(Duration::from_secs(2)).unwrap();
    let deadline = mono_of(lease.deadline());
    // Not renewed again: its key expires with the 2 s etcd lease.
    let (next, granted) = granted_to(&other, "r");
    assert!(next.token() > lease.token());
    assert_no_longer_valid(&lease, deadline, granted);
}

/// `name`, granted to `other` (waiting as long as it takes), and when (monotonic ns).
fn granted_to(other: &EtcdTable, name: &str) -> (shmlease::etcd::EtcdLease, u64) {
    let next = other.acquire(name, Duration::from_secs(2), Some(LONG)).unwrap();
    (next, mono_ns())
}

/// The holder of `lease`, whose own deadline is `deadline`, no longer believes itself
/// valid at `granted`, when its name was granted to another client (invariants 1, 11).
#[track_caller]
fn assert_no_longer_valid(lease: &shmlease::etcd::EtcdLease, deadline: u64, granted: u64) {
    assert!(
        deadline <= granted && !lease.is_valid(),
        "the holder believes itself valid for {:?} more while the name is granted to another",
        Duration::from_nanos(deadline.saturating_sub(granted))
    );
}

/// Two renewals of one grant at once, one with its own TTL (a keep-alive, the same
/// etcd lease) and one with another (moving the key to a new etcd lease and revoking
/// the old one): both succeed, so the holder believes itself valid for seconds — then
/// nobody else may be granted the name before its deadline. A same-TTL renewal whose
/// write lands after the move puts the key back on the old etcd lease, which the move
/// then revokes, deleting the key under a holder that believes itself valid.
#[test]
fn renewals_with_two_ttls_at_once_never_leave_a_valid_holder_without_its_key() {
    let _wd = Watchdog::new("renew_race", LONG * 3);
    let cluster = Cluster::start("atk-renew", Setup::default());
    let t = table(&cluster, "rr");
    let other = EtcdTable::open(&loc(&cluster.location("rr"))).unwrap();
    let (short, long) = (Duration::from_secs(2), Duration::from_secs(3));
    let mut rng = common::Rng::new(0x5eed);
    let mut both_ok = 0;
    let started = Instant::now();
    for round in 0..150 {
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
        let lease = t.acquire("r", short, Some(LONG)).unwrap();
        let delay = Duration::from_micros(rng.below(12_000));
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| lease.renew(long));
            let b = s.spawn(|| {
                std::thread::sleep(delay);
                lease.renew(short)
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        if a.is_ok() && b.is_ok() {
            both_ok += 1;
            // Let the background revocation of the old etcd lease land.
            std::thread::sleep(Duration::from_millis(30));
            assert!(lease.is_valid());
            let intruder = other.try_acquire("r", short);
            assert!(
                !(intruder.is_ok() && lease.is_valid()),
                "round {round} (delay {delay:?}): another client was granted the name while \
                 its holder, both of whose renewals succeeded, is valid for {:?}",
                lease.remaining()
            );
        }
        drop(lease);
    }
    assert!(both_ok > 10, "the renewals rarely both succeeded ({both_ok})");
}

// ------------------------------------------------------------------------------------
// Draining shared holders
// ------------------------------------------------------------------------------------

/// An exclusive acquirer draining shared holders is stopped (SIGSTOP) past its TTL:
/// its key expires, a shared holder leaves meanwhile and a new one gets in. Resumed, it
/// must not return its old grant (nor any grant while a shared holder is valid).
#[test]
fn a_drainer_stopped_past_its_ttl_never_overlaps_a_shared_holder() {
    let wd = Watchdog::new("drain_stopped", LONG * 3);
    let cluster = Cluster::start("atk-drain", Setup::default());
    let t = table(&cluster, "dr");
    let s = |label: &str, hold: &str| {
        holder(&wd, &cluster, "dr", label, &[("NAME", "rw"), ("KIND", "s"), ("HOLD_MS", hold)])
    };
    let mut first = s("shared 1", "3000");
    first.expect("got", LONG);
    let mut drainer = holder(
        &wd,
        &cluster,
        "dr",
        "drainer",
        &[("NAME", "rw"), ("KIND", "x"), ("HOLD_MS", "300")],
    );
    wait_until("the drainer holds the name's key", || {
        t.get("rw").unwrap().is_some_and(|i| i.grants.iter().any(|g| !g.shared))
    });
    drainer.signal(libc::SIGSTOP);
    drainer.wait_state(b'T', LONG);
    // A shared acquirer now waits for the drainer's key; it gets in once that expires.
    let mut second = s("shared 2", "2500");
    second.expect("got", LONG);
    first.wait_ok(LONG);
    std::thread::sleep(Duration::from_millis(500));
    drainer.signal(libc::SIGCONT);
    let mut third = s("shared 3", "300");
    drainer.wait_ok(LONG);
    second.wait_ok(LONG);
    third.wait_ok(LONG);
    let mut all = Vec::new();
    for k in [&first, &second, &drainer, &third] {
        all.extend(seen_of(k));
    }
    assert_eq!(all.len(), 4, "{all:?}");
    check_kinds(&all);
}

/// The same through a kill -9 of the cluster's leader while the drain goes on, with a
/// stream of shared holders and two drainers.
#[test]
fn draining_through_a_leader_kill_keeps_shared_and_exclusive_apart() {
    let wd = Watchdog::new("drain_leader", LONG * 4);
    let mut cluster = Cluster::start("atk-drainlead", Setup::default());
    drop(table(&cluster, "dl"));
    let mut kids: Vec<Kid> = (0..3)
        .map(|i| {
            let env = [("NAME", "rw"), ("KIND", "s"), ("HOLD_MS", "400"), ("COUNT", "8")];
            holder(&wd, &cluster, "dl", &format!("shared {i}"), &env)
        })
        .collect();
    kids[0].expect("got", LONG);
    for i in 0..2 {
        let env = [("NAME", "rw"), ("KIND", "x"), ("HOLD_MS", "200"), ("COUNT", "2")];
        kids.push(holder(&wd, &cluster, "dl", &format!("drainer {i}"), &env));
    }
    std::thread::sleep(Duration::from_millis(700));
    let leader = cluster.wait_leader(LONG);
    cluster.kill(leader);
    std::thread::sleep(Duration::from_millis(1500));
    cluster.restart(leader);
    let all = grants_when_done(&mut kids, LONG * 2);
    assert_eq!(all.iter().filter(|g| g.kind == "x").count(), 4, "{all:?}");
    check_kinds(&all);
}

/// A drainer that gives up (no wait, a timeout, an interrupt) leaves nothing behind: a
/// shared acquirer is granted at once afterwards, not after the drainer's TTL.
#[test]
fn a_drainer_that_gives_up_leaves_the_name_open_to_shared_holders() {
    let _wd = Watchdog::new("drain_gives_up", LONG * 2);
    let cluster = Cluster::start("atk-giveup", Setup::default());
    let t = table(&cluster, "gu");
    let other = EtcdTable::open(&loc(&cluster.location("gu"))).unwrap();
    let ttl = Duration::from_secs(5);
    let shared = AcquireOptions::new().shared(true);
    let reader = other.acquire_with("rw", ttl, &shared).unwrap();
    let fired = Arc::new(AtomicBool::new(false));
    let check = {
        let fired = Arc::clone(&fired);
        Interrupt::new(move || fired.load(Ordering::SeqCst))
    };
    let attempts: [(&str, AcquireOptions); 3] = [
        ("no wait", AcquireOptions::new()),
        ("timeout", AcquireOptions::new().wait(Some(Duration::from_millis(800)))),
        ("interrupt", AcquireOptions::new().wait(None).interrupt(check)),
    ];
    for (what, options) in attempts {
        let firing = (what == "interrupt").then(|| {
            let fired = Arc::clone(&fired);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(800));
                fired.store(true, Ordering::SeqCst);
            })
        });
        let got = t.acquire_with("rw", ttl, &options);
        match (what, &got) {
            ("no wait", Err(Error::Held { .. }))
            | ("timeout", Err(Error::TimedOut { .. }))
            | ("interrupt", Err(Error::Interrupted { .. })) => {}
            _ => panic!("{what}: {got:?}"),
        }
        drop(got);
        if let Some(f) = firing {
            f.join().unwrap();
        }
        // At once: the drainer's key is gone, nothing waits for its TTL.
        let late = other.acquire_with("rw", ttl, &shared);
        assert!(late.is_ok(), "{what}: a shared grant refused after the drainer gave up: {late:?}");
        assert!(reader.is_valid());
        let info = t.get("rw").unwrap().unwrap();
        assert!(info.grants.iter().all(|g| g.shared), "{what}: {info:?}");
    }
    drop(reader);
}

// ------------------------------------------------------------------------------------
// Kinds and permits against each other
// ------------------------------------------------------------------------------------

/// Clients asking one name for 2 permits, 3 permits, shared and exclusive grants at
/// once: at any instant the live grants are of one kind, within its count.
#[test]
fn clients_with_different_kinds_and_counts_on_one_name_never_mix() {
    let wd = Watchdog::new("mixed_kinds", LONG * 4);
    let cluster = Cluster::start("atk-mixed", Setup::default());
    drop(table(&cluster, "mx"));
    let mut kids: Vec<Kid> = ["p2", "p2", "p2", "p3", "p3", "p3", "p3", "s", "s", "x"]
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let env = [("NAME", "mix"), ("KIND", *kind), ("HOLD_MS", "40"), ("COUNT", "6")];
            holder(&wd, &cluster, "mx", &format!("{kind} {i}"), &env)
        })
        .collect();
    let all = grants_when_done(&mut kids, LONG * 3);
    assert_eq!(all.len(), 60);
    check_kinds(&all);
}

/// Tokens grow across seats and kinds of one name of 64 bytes (the longest), with the
/// longest seat suffixes; by-token operations reach the right seat, from any client.
#[test]
fn tokens_grow_across_seats_and_kinds_of_a_64_byte_name() {
    let _wd = Watchdog::new("long_names", LONG * 2);
    let cluster = Cluster::start("atk-long", Setup::default());
    let t = table(&cluster, "ln");
    let other = EtcdTable::open(&loc(&cluster.location("ln"))).unwrap();
    let ttl = Duration::from_secs(3);
    let name = "n".repeat(64);
    assert!(matches!(t.try_acquire(&"n".repeat(65), ttl), Err(Error::InvalidName { .. })));
    let many = AcquireOptions::new().permits(128).unwrap();
    let mut tokens = Vec::new();
    let seats: Vec<_> = (0..5).map(|_| t.acquire_with(&name, ttl, &many).unwrap()).collect();
    tokens.extend(seats.iter().map(|l| l.token()));
    let info = other.get(&name).unwrap().unwrap();
    assert_eq!(info.kind, LeaseKind::Permits(128));
    assert_eq!(info.grants.len(), 5);
    // From another client of this process: by token, the seat of that token only.
    other.release(&name, seats[1].token()).unwrap();
    other.revoke_token(&name, seats[2].token()).unwrap();
    assert!(matches!(seats[1].renew(ttl), Err(Error::Lost { reason: LostReason::Released, .. })));
    assert!(matches!(seats[2].renew(ttl), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    assert!(seats[3].renew(ttl).is_ok() && seats[4].renew(ttl).is_ok());
    let mut seats = seats.into_iter();
    let detached = seats.next().unwrap().detach().unwrap();
    other.renew(&name, detached.token, ttl).unwrap();
    other.release(&name, detached.token).unwrap();
    assert!(matches!(
        other.release(&name, detached.token),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    drop(seats);
    let shared = t.acquire_with(&name, ttl, &AcquireOptions::new().shared(true)).unwrap();
    tokens.push(shared.token());
    drop(shared);
    let x = t.acquire(&name, ttl, Some(LONG)).unwrap();
    tokens.push(x.token());
    drop(x);
    let fair = t.acquire_with(&name, ttl, &many.clone().fair(true)).unwrap();
    tokens.push(fair.token());
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

// ------------------------------------------------------------------------------------
// Fair queues
// ------------------------------------------------------------------------------------

/// A herd of fair waiters, two killed with SIGKILL and one stopped while in line: the
/// live ones are served in arrival order, one at a time; the stopped one, resumed,
/// after them.
#[test]
fn a_fair_herd_with_killed_and_stopped_waiters_is_served_in_arrival_order() {
    let wd = Watchdog::new("fair_herd", LONG * 3);
    let cluster = Cluster::start("atk-herd", Setup::default());
    let t = table(&cluster, "fh");
    let holder_lease = t.acquire("q", Duration::from_secs(10), Some(LONG)).unwrap();
    let mut kids = Vec::new();
    for i in 0..8 {
        let env = [("NAME", "q"), ("FAIR", "1"), ("HOLD_MS", "60"), ("WAIT_MS", "60000")];
        kids.push(holder(&wd, &cluster, "fh", &format!("waiter {i}"), &env));
        wait_until("the waiter queued", || t.get("q").unwrap().unwrap().queue.len() > i);
    }
    let queue = t.get("q").unwrap().unwrap().queue;
    let ticket_of = |pid: i32| {
        queue.iter().find(|p| p.holder.is_some_and(|h| h.pid == pid as u32)).map(|p| p.ticket)
    };
    let tickets: Vec<u64> = kids.iter().map(|k| ticket_of(k.pid()).expect("queued")).collect();
    assert!(tickets.windows(2).all(|w| w[0] < w[1]), "{tickets:?}");
    let (killed, stopped) = ([1usize, 4], 6usize);
    for &k in &killed {
        kids[k].kill();
    }
    kids[stopped].signal(libc::SIGSTOP);
    kids[stopped].wait_state(b'T', LONG);
    holder_lease.release().unwrap();
    let mut served: Vec<(u64, Seen)> = Vec::new();
    for (i, k) in kids.iter_mut().enumerate() {
        if killed.contains(&i) || i == stopped {
            continue;
        }
        k.wait_ok(LONG);
        served.extend(seen_of(k).into_iter().map(|g| (tickets[i], g)));
    }
    kids[stopped].signal(libc::SIGCONT);
    kids[stopped].wait_ok(LONG);
    let late = seen_of(&kids[stopped]);
    served.sort_by_key(|(ticket, _)| *ticket);
    let tokens: Vec<u64> = served.iter().map(|(_, g)| g.token).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "served out of arrival order: {served:?}");
    assert!(late.iter().all(|g| tokens.iter().all(|t| g.token > *t)), "{late:?} {served:?}");
    let mut all: Vec<Seen> = served.into_iter().map(|(_, g)| g).collect();
    all.extend(late);
    check_kinds(&all);
    assert!(t.get("q").unwrap().unwrap().queue.is_empty());
}

/// A fair wait interrupted (while in line, and while first in line on a shared name
/// being drained) leaves the queue at once and holds nothing.
#[test]
fn an_interrupted_fair_wait_leaves_its_place_and_holds_nothing() {
    let _wd = Watchdog::new("fair_interrupt", LONG * 2);
    let cluster = Cluster::start("atk-fairint", Setup::default());
    let t = table(&cluster, "fi");
    let other = EtcdTable::open(&loc(&cluster.location("fi"))).unwrap();
    let ttl = Duration::from_secs(5);
    let shared = AcquireOptions::new().shared(true);
    for (name, held, asked) in [
        ("ex", AcquireOptions::new(), AcquireOptions::new()),
        ("rw", shared.clone(), AcquireOptions::new()),
    ] {
        let h = other.acquire_with(name, ttl, &held).unwrap();
        let started = Instant::now();
        let check = Interrupt::new(move || started.elapsed() > Duration::from_millis(900));
        let options = asked.fair(true).wait(None).interrupt(check);
        let got = t.acquire_with(name, ttl, &options);
        assert!(matches!(got, Err(Error::Interrupted { .. })), "{name}: {got:?}");
        let info = t.get(name).unwrap().unwrap();
        assert!(info.queue.is_empty(), "{name}: a place left behind: {info:?}");
        assert!(info.grants.iter().all(|g| g.token == h.token()), "{name}: {info:?}");
        drop(h);
        // Nothing left in the way: the next fair acquirer is served at once.
        let next = other.acquire_with(name, ttl, &held.clone().fair(true));
        assert!(next.is_ok(), "{name}: {next:?}");
    }
}

/// Fair waiters (exclusive and shared) through a kill -9 of the cluster's leader, while
/// they take their places and wait in line: exclusivity holds, and every waiter is
/// served in the end (a waiter whose wait failed on the unavailable cluster queues
/// again).
#[test]
fn fair_waiters_through_a_leader_kill_stay_apart_and_are_all_served() {
    let wd = Watchdog::new("fair_leader", LONG * 4);
    let mut cluster = Cluster::start("atk-fairlead", Setup::default());
    drop(table(&cluster, "fl"));
    let mut kids: Vec<Kid> = ["x", "s", "x", "s", "x", "s"]
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let env = [
                ("NAME", "line"),
                ("KIND", *kind),
                ("FAIR", "1"),
                ("HOLD_MS", "80"),
                ("COUNT", "5"),
            ];
            holder(&wd, &cluster, "fl", &format!("fair {kind} {i}"), &env)
        })
        .collect();
    kids[0].expect("got", LONG);
    let leader = cluster.wait_leader(LONG);
    cluster.kill(leader);
    std::thread::sleep(Duration::from_millis(1500));
    cluster.restart(leader);
    let all = grants_when_done(&mut kids, LONG * 2);
    assert_eq!(all.len(), 30, "{all:?}");
    check_kinds(&all);
}

/// A renewal by token, with another TTL, of a grant this very process holds (allowed:
/// the C library's by-token calls) moves its key to a new etcd lease: the holder's own
/// validity must follow the move.
#[test]
fn a_renewal_by_token_from_the_holding_process_moves_the_holders_validity_too() {
    let _wd = Watchdog::new("renew_by_token_here", LONG * 2);
    let cluster = Cluster::start("atk-bytoken", Setup::default());
    let t = table(&cluster, "bt");
    let other = EtcdTable::open(&loc(&cluster.location("bt"))).unwrap();
    let lease = t.acquire("r", Duration::from_secs(8), Some(LONG)).unwrap();
    let returned = t.renew("r", lease.token(), Duration::from_secs(2)).unwrap();
    let (next, granted) = granted_to(&other, "r");
    assert!(next.token() > lease.token() && mono_of(returned) <= granted);
    assert_no_longer_valid(&lease, mono_of(lease.deadline()), granted);
}

/// Waits of any length, `Duration::MAX` among them, are waits (none overflows a clock):
/// an exclusive acquisition, a shared one behind an exclusive holder, a permit, a fair
/// one, each ended by its interrupt check; and the holder's own `wait_lost` and
/// `wait_notice`, which return at once once the lease is released.
#[test]
fn waits_of_any_length_never_overflow_a_clock() {
    let _wd = Watchdog::new("long_waits", LONG * 2);
    let cluster = Cluster::start("atk-long", Setup::default());
    let t = table(&cluster, "lw");
    let ttl = Duration::from_secs(5);
    let endless = Some(Duration::MAX);
    let held = t.acquire_with("x", ttl, &AcquireOptions::new()).unwrap();
    let pool = [
        t.acquire_with("p", ttl, &AcquireOptions::new().permits(2).unwrap()).unwrap(),
        t.acquire_with("p", ttl, &AcquireOptions::new().permits(2).unwrap()).unwrap(),
    ];
    let cases: [(&str, AcquireOptions); 4] = [
        ("x", AcquireOptions::new()),
        ("x", AcquireOptions::new().shared(true)),
        ("p", AcquireOptions::new().permits(2).unwrap()),
        ("x", AcquireOptions::new().fair(true)),
    ];
    for (name, options) in cases {
        let began = Instant::now();
        let stop = Interrupt::new(move || began.elapsed() > Duration::from_millis(300));
        let options = options.wait(endless).interrupt(stop);
        let t = t.clone();
        let got =
            within(&format!("an endless wait for {name}"), Duration::from_secs(20), move || {
                t.acquire_with(name, ttl, &options).map(|l| l.token())
            });
        assert!(matches!(got, Err(Error::Interrupted { .. })), "{name}: {got:?}");
    }
    assert_eq!(held.wait_lost(Some(Duration::from_millis(1))), None);
    drop(pool);
    assert!(held.release().is_ok());
    let mut again = t.acquire_with("x", ttl, &AcquireOptions::new()).unwrap();
    again.keep_alive(ttl).unwrap();
    let t2 = t.clone();
    let ended = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        t2.revoke("x").unwrap();
    });
    assert_eq!(again.wait_lost(endless), Some(LostReason::Revoked));
    ended.join().unwrap();
    assert!(again.wait_notice(endless).is_some());
}
