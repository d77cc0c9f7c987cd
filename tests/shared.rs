//! Shared names: up to 64 shared holders or one exclusive holder, never both; each with
//! its own TTL and token, tokens growing across both kinds; a waiting exclusive
//! acquirer blocks new shared grants; dead holders of either kind reclaimed at once,
//! stopped ones at their TTL. Multi-process behaviour with real processes.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::{
    assert_distinct, permits, run_forking_herd, run_mixed_path_herd, s, shared, table, touch,
    wait_until, Kid, Scratch, SharedWords, Watchdog, LONG, TTL,
};
use shmlease::{AcquireOptions, Error, LeaseKind, LeaseState};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

#[test]
fn sixty_four_shared_holders_or_one_exclusive_never_both() {
    let dir = Scratch::new("basic");
    let table = table(&dir, 256);
    let readers: Vec<_> =
        (0..64).map(|_| table.acquire_with("cat", TTL, &shared()).unwrap()).collect();
    let tokens: Vec<u64> = readers.iter().map(|l| l.token()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]));
    assert!(matches!(table.acquire_with("cat", TTL, &shared()), Err(Error::Held { .. })), "a 65th");
    match table.try_acquire("cat", TTL) {
        Err(Error::Held { token, holder, .. }) => {
            assert!(tokens.contains(&token), "names a shared holder");
            assert_eq!(holder.map(|h| h.pid), Some(std::process::id()));
        }
        other => panic!("exclusive beside shared holders: {other:?}"),
    }
    let info = table.get("cat").unwrap().unwrap();
    assert_eq!(
        (info.kind, info.state, info.grants.len()),
        (LeaseKind::Shared, LeaseState::Held, 64)
    );
    assert!(info.grants.iter().all(|g| g.shared));
    drop(readers);
    let writer = table.try_acquire("cat", TTL).unwrap();
    assert!(writer.token() > *tokens.last().unwrap());
    assert!(matches!(table.acquire_with("cat", TTL, &shared()), Err(Error::Held { .. })));
    let info = table.get("cat").unwrap().unwrap();
    assert_eq!(info.grants.len(), 1);
    assert!(!info.grants[0].shared && info.grants[0].token == writer.token());
    writer.renew(TTL).unwrap();
    let wt = writer.token();
    writer.release().unwrap();
    let r = table.acquire_with("cat", TTL, &shared()).unwrap();
    assert!(r.token() > wt);
    assert_eq!(table.get("cat").unwrap().unwrap().kind, LeaseKind::Shared);
}

#[test]
fn kinds_do_not_mix_and_a_live_exclusive_holder_becomes_the_shared_names() {
    let dir = Scratch::new("kinds");
    let table = table(&dir, 64);
    // An exclusive holder when the first shared acquirer comes stays the holder.
    let x = table.try_acquire("doc", TTL).unwrap();
    assert!(matches!(table.acquire_with("doc", TTL, &shared()), Err(Error::Held { .. })));
    assert_eq!(table.get("doc").unwrap().unwrap().kind, LeaseKind::Shared);
    assert!(x.is_valid());
    x.renew(TTL).unwrap();
    let xt = x.token();
    x.release().unwrap();
    let r = table.acquire_with("doc", TTL, &shared()).unwrap();
    assert!(r.token() > xt);
    // Permits and shared do not mix, either way.
    match table.acquire_with("doc", TTL, &permits(2)) {
        Err(Error::WrongKind {
            recorded: LeaseKind::Shared,
            requested: LeaseKind::Permits(2),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let _p = table.acquire_with("pool", TTL, &permits(2)).unwrap();
    match table.acquire_with("pool", TTL, &shared()) {
        Err(Error::WrongKind {
            recorded: LeaseKind::Permits(2),
            requested: LeaseKind::Shared,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        permits(2).shared(true),
        o if matches!(table.acquire_with("x", TTL, &o), Err(Error::InvalidOptions { .. }))
    ));
}

#[test]
fn revocation_requests_and_by_token_calls_reach_each_kind_of_holder() {
    let dir = Scratch::new("revoke");
    let table = table(&dir, 64);
    let a = table.acquire_with("r", TTL, &shared()).unwrap();
    let b = table.acquire_with("r", TTL, &shared()).unwrap().detach().unwrap();
    table.renew("r", b.token, TTL).unwrap();
    assert_eq!(table.request_release("r", Some(a.token())).unwrap(), Some(a.token()));
    assert!(a.release_requested());
    table.revoke_token("r", a.token()).unwrap();
    assert!(!a.is_valid());
    table.release("r", b.token).unwrap();
    let w = table.try_acquire("r", TTL).unwrap();
    assert_eq!(table.revoke("r").unwrap(), Some(w.token()));
    assert!(!w.is_valid());
    let c = table.acquire_with("r", TTL, &shared()).unwrap();
    let d = table.acquire_with("r", TTL, &shared()).unwrap();
    assert_eq!(table.revoke("r").unwrap(), Some(d.token()));
    assert!(!c.is_valid() && !d.is_valid());
    assert_eq!(table.revoke("r").unwrap(), None);
}

/// An exclusive acquirer that waits for shared holders in vain times out (and gives the
/// name back: shared acquirers get in at once).
#[test]
fn an_exclusive_wait_for_shared_holders_times_out() {
    let dir = Scratch::new("timeout");
    let table = table(&dir, 64);
    let r = table.acquire_with("t", TTL, &shared()).unwrap();
    let wait = AcquireOptions::new().wait(Some(Duration::from_millis(200)));
    match table.acquire_with("t", TTL, &wait) {
        Err(Error::TimedOut { token, .. }) => assert_eq!(token, r.token()),
        other => panic!("{other:?}"),
    }
    table.acquire_with("t", TTL, &shared()).unwrap();
}

/// A waiting exclusive acquirer blocks new shared grants while the shared holders it
/// waits for leave, and gets the name once they have.
#[test]
fn a_waiting_exclusive_acquirer_blocks_new_shared_grants() {
    let dir = Scratch::new("prefer");
    let table = table(&dir, 64);
    let r1 = table.acquire_with("w", TTL, &shared()).unwrap();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            table.acquire_with("w", TTL, &AcquireOptions::new().wait(Some(LONG))).map(|l| l.token())
        });
        // Once it drains, the head shows its grant: new shared acquirers are refused.
        wait_until("the exclusive acquirer started waiting", || {
            match table.acquire_with("w", TTL, &shared()) {
                Err(Error::Held { token, .. }) if token > r1.token() => true,
                Ok(_) | Err(Error::Held { .. }) => false,
                Err(e) => panic!("{e:?}"),
            }
        });
        assert!(!writer.is_finished());
        drop(r1);
        let token = writer.join().unwrap().unwrap();
        assert!(token > 0);
    });
}

/// Six processes (three forked after opening the table, sharing its handle) on one
/// shared name, mostly shared with an exclusive acquisition one time in five: never an
/// exclusive holder beside anyone, shared holders at once, every token distinct.
#[test]
fn a_mixed_herd_never_puts_an_exclusive_holder_beside_another() {
    let wd = Watchdog::new("shared_herd", LONG * 2);
    let dir = Scratch::new("herd");
    table(&dir, 128);
    let env = [("NAME", s("db")), ("HOLD_US", s(300)), ("RUN_MS", s(3000)), ("WRITE_EVERY", s(5))];
    let (dones, tokens) = run_forking_herd(&wd, &dir, "shared_herd", 3, &env);
    // `DONE shared exclusive violations`
    let (reads, writes): (u64, u64) =
        (dones.iter().map(|v| v[0]).sum(), dones.iter().map(|v| v[1]).sum());
    let words = SharedWords::open(&dir.path("counters"));
    assert_eq!(words.word(2).load(SeqCst), 0, "violations");
    assert!(reads > 20 && writes > 5, "{reads} shared, {writes} exclusive grants");
    assert_distinct(&tokens);
}

/// Four processes on one shared name by every path of the library at once (see
/// `run_mixed_path_herd`: shared grants on the fast path and on the precise one, with
/// inline and portable 128-bit instructions), mostly shared, exclusive one time in
/// five: never an exclusive holder beside anyone, every token distinct.
#[test]
fn shared_grants_by_every_path_never_meet_an_exclusive_holder() {
    let wd = Watchdog::new("shared_paths", LONG * 2);
    let dir = Scratch::new("paths");
    table(&dir, 128);
    let env = [("NAME", s("db")), ("HOLD_US", s(100)), ("RUN_MS", s(3000)), ("WRITE_EVERY", s(5))];
    let (dones, tokens) = run_mixed_path_herd(&wd, &dir, "shared_herd", 3, &env);
    let words = SharedWords::open(&dir.path("counters"));
    assert_eq!(words.word(2).load(SeqCst), 0, "violations");
    for (i, v) in dones.iter().enumerate() {
        assert!(v[0] > 20 && v[1] > 5, "process {i}: {} shared, {} exclusive grants", v[0], v[1]);
    }
    assert_distinct(&tokens);
}

/// Four threads on one table handle, on one shared name and one name with two permits,
/// each mostly on the fast path (30 s TTLs) and now and then exclusive on the shared
/// name: never more than two permit holders inside, never an exclusive holder beside
/// anyone on the shared name, every token of each name distinct.
#[test]
fn threads_on_one_handle_keep_both_kinds_apart() {
    let dir = Scratch::new("threads");
    let table = table(&dir, 128);
    let (pool, readers, writers) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let bad = AtomicU64::new(0);
    let tokens: std::sync::Mutex<(Vec<u64>, Vec<u64>)> = Default::default();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (table, pool, readers, writers, bad, tokens) =
                (&table, &pool, &readers, &writers, &bad, &tokens);
            scope.spawn(move || {
                let two = permits(2).wait(Some(LONG));
                let sh = shared().wait(Some(LONG));
                let ex = AcquireOptions::new().wait(Some(LONG));
                let (mut mine_p, mut mine_s) = (Vec::new(), Vec::new());
                for i in 0..3_000u64 {
                    let lease = table.acquire_with("pool", TTL, &two).unwrap();
                    mine_p.push(lease.token());
                    if pool.fetch_add(1, SeqCst) >= 2 {
                        bad.fetch_add(1, SeqCst);
                    }
                    pool.fetch_sub(1, SeqCst);
                    lease.release().unwrap();
                    let write = (i + t) % 10 == 0;
                    let lease =
                        table.acquire_with("db", TTL, if write { &ex } else { &sh }).unwrap();
                    mine_s.push(lease.token());
                    let (mine, other) = if write { (writers, readers) } else { (readers, writers) };
                    let before = mine.fetch_add(1, SeqCst);
                    if other.load(SeqCst) > 0 || (write && before > 0) {
                        bad.fetch_add(1, SeqCst);
                    }
                    mine.fetch_sub(1, SeqCst);
                    lease.release().unwrap();
                }
                let mut all = tokens.lock().unwrap();
                all.0.extend(mine_p);
                all.1.extend(mine_s);
            });
        }
    });
    assert_eq!(bad.load(SeqCst), 0, "kinds mixed or too many inside");
    let (p, s) = tokens.into_inner().unwrap();
    assert_eq!((p.len(), s.len()), (12_000, 12_000));
    assert_distinct(&p);
    assert_distinct(&s);
}

fn hold(
    wd: &Watchdog,
    path: &std::path::Path,
    label: &str,
    shared: bool,
    ttl_ms: u64,
    action: &str,
    go: &std::path::Path,
) -> Kid {
    Kid::spawn(
        wd,
        label,
        "shared_hold",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("db")),
            ("SHARED", s(shared as u8)),
            ("TTL_MS", s(ttl_ms)),
            ("ACTION", s(action)),
            ("GO", s(go.display())),
        ],
    )
}

/// Shared holders killed with SIGKILL do not hold an exclusive acquirer up, and an
/// exclusive holder killed does not hold shared acquirers up: both are provably dead.
#[test]
fn dead_holders_of_either_kind_are_passed_over_at_once() {
    let wd = Watchdog::new("shared_dead", LONG);
    let dir = Scratch::new("dead");
    let path = dir.path("t");
    let table = table(&dir, 64);
    let go = dir.path("go");
    let mut readers: Vec<Kid> =
        (0..2).map(|i| hold(&wd, &path, &format!("r{i}"), true, 600_000, "forever", &go)).collect();
    for r in &mut readers {
        r.expect("GOT", LONG);
    }
    assert!(matches!(table.try_acquire("db", TTL), Err(Error::Held { .. })));
    for r in &mut readers {
        r.kill();
    }
    let w = table.try_acquire("db", TTL).expect("the dead shared holders do not count");
    // Nor are they shown beside it: their grants were ended.
    let info = table.get("db").unwrap().unwrap();
    assert_eq!(info.grants.len(), 1, "{info:#?}");
    assert!(!info.grants[0].shared);
    drop(w);
    let mut writer = hold(&wd, &path, "w", false, 600_000, "forever", &go);
    writer.expect("GOT", LONG);
    assert!(matches!(table.acquire_with("db", TTL, &shared()), Err(Error::Held { .. })));
    writer.kill();
    table.acquire_with("db", TTL, &shared()).expect("the dead exclusive holder does not count");
}

/// A stopped shared holder holds an exclusive acquirer up until its TTL runs out, not
/// longer; resumed, it learns on renewal that its grant is gone.
#[test]
fn a_stopped_shared_holder_is_waited_out_and_learns_so() {
    let wd = Watchdog::new("shared_stopped", LONG);
    let dir = Scratch::new("stopped");
    let path = dir.path("t");
    let table = table(&dir, 64);
    let go = dir.path("go");
    let mut r = hold(&wd, &path, "r", true, 400, "renew_after_go", &go);
    r.expect("GOT", LONG);
    r.signal(libc::SIGSTOP);
    r.wait_state(b'T', LONG);
    let w = table
        .acquire_with("db", TTL, &AcquireOptions::new().wait(Some(Duration::from_secs(30))))
        .expect("the stopped shared holder's TTL ran out");
    touch(&go);
    r.signal(libc::SIGCONT);
    let lost = r.expect_any(&["LOST", "RENEWED"], LONG);
    assert_eq!(lost.0, "LOST", "{}", r.transcript());
    r.wait_ok(LONG);
    assert!(w.is_valid());
}

/// An election has one leader: on a name in use with permits or shared, asking who
/// leads, observing, and campaigning are refused (before, `leader()` reported the
/// latest permit as a leader with no holder).
#[test]
fn elections_refuse_names_with_permits_or_shared_holders() {
    let dir = Scratch::new("election");
    let table = table(&dir, 64);
    let _p = table.acquire_with("pool", TTL, &permits(2)).unwrap();
    let _r = table.acquire_with("cat", TTL, &shared()).unwrap();
    for (name, kind) in [("pool", LeaseKind::Permits(2)), ("cat", LeaseKind::Shared)] {
        let election = table.election(name).unwrap();
        let wrong = |r: Result<(), Error>| match r {
            Err(Error::WrongKind { recorded, requested: LeaseKind::Exclusive, .. }) => {
                assert_eq!(recorded, kind)
            }
            other => panic!("{name}: {other:?}"),
        };
        wrong(election.leader().map(drop));
        wrong(election.observe().next_change(Some(Duration::from_millis(10))).map(drop));
        wrong(election.try_campaign().map(drop));
        wrong(election.campaign(Some(Duration::from_millis(10))).map(drop));
    }
    // The shared name's holder was not disturbed.
    assert!(_r.is_valid());
}
