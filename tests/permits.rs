//! Names with permits (`permits = N`): at most N unexpired grants at once, each with its
//! own TTL and a token unique to the name and growing; dead holders' permits reclaimed
//! at once, stopped holders' at their TTL; waiters woken when any permit frees; the
//! recorded N defended against callers who disagree. Multi-process behaviour is tested
//! with real processes (fork, kill -9, SIGSTOP).

mod common;

use std::time::Duration;

use common::{
    assert_distinct, permits, run_forking_herd, run_mixed_path_herd, s, start_churn, table, touch,
    two_permit_holders, wait_until, Kid, Scratch, SharedWords, Watchdog, LONG, TTL,
};
use shmlease::{AcquireOptions, Error, LeaseKind, LeaseState, LostReason};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

#[test]
fn n_permits_admit_n_holders_with_growing_tokens_and_refuse_the_next() {
    let dir = Scratch::new("n");
    let table = table(&dir, 64);
    let three = permits(3);
    let held: Vec<_> = (0..3).map(|_| table.acquire_with("pool", TTL, &three).unwrap()).collect();
    let tokens: Vec<u64> = held.iter().map(|l| l.token()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    match table.acquire_with("pool", TTL, &three) {
        Err(Error::Held { token, remaining, holder }) => {
            assert!(tokens.contains(&token));
            assert!(remaining > Duration::ZERO);
            assert_eq!(holder.map(|h| h.pid), Some(std::process::id()));
        }
        other => panic!("a fourth holder: {other:?}"),
    }
    // Each permit is its own grant: renewing one leaves the others as they are.
    held[1].renew(Duration::from_secs(60)).unwrap();
    let info = table.get("pool").unwrap().unwrap();
    assert_eq!(info.kind, LeaseKind::Permits(3));
    assert_eq!(info.state, LeaseState::Held);
    assert_eq!(info.token, tokens[2], "the latest token taken");
    let shown: Vec<u64> = info.grants.iter().map(|g| g.token).collect();
    assert_eq!(shown, tokens);
    assert!(info.grants.iter().all(|g| g.holder.is_some_and(|h| h.pid == std::process::id())));
    assert!(info.grants[1].remaining > Duration::from_secs(31));
    let listed: Vec<_> = table.list().unwrap().into_iter().filter(|l| l.name == "pool").collect();
    assert_eq!(listed.len(), 1, "seats are not names: {listed:?}");
    assert_eq!(listed[0].grants.len(), 3);
    // Releasing one admits one more, with a larger token than every earlier one.
    let mut held = held;
    held.remove(0).release().unwrap();
    let next = table.acquire_with("pool", TTL, &three).unwrap();
    assert!(next.token() > tokens[2]);
    assert!(matches!(table.acquire_with("pool", TTL, &three), Err(Error::Held { .. })));
    drop(next);
    drop(held);
    let info = table.get("pool").unwrap().unwrap();
    assert_eq!((info.state, info.grants.len()), (LeaseState::Free, 0));
    assert_eq!(info.kind, LeaseKind::Permits(3), "the name keeps its N while in the table");
}

#[test]
fn callers_who_disagree_about_n_are_told_the_recorded_n() {
    let dir = Scratch::new("kind");
    let table = table(&dir, 64);
    let a = table.acquire_with("gpu", TTL, &permits(4)).unwrap();
    for (asked, options) in
        [(LeaseKind::Permits(2), permits(2)), (LeaseKind::Exclusive, permits(1))]
    {
        match table.acquire_with("gpu", TTL, &options) {
            Err(Error::WrongKind { name, recorded, requested }) => {
                assert_eq!(
                    (name.as_str(), recorded, requested),
                    ("gpu", LeaseKind::Permits(4), asked)
                );
            }
            other => panic!("asked for {asked:?}: {other:?}"),
        }
    }
    let text = table.try_acquire("gpu", TTL).unwrap_err().to_string();
    assert!(text.contains("permits = 4") && text.contains("\"gpu\""), "{text}");
    // Waiting callers are told too, at once.
    let waiting = table.acquire("gpu", TTL, Some(Duration::from_secs(30)));
    assert!(matches!(waiting, Err(Error::WrongKind { .. })), "{waiting:?}");
    drop(a);
    // A live exclusive lease is never turned into a group...
    let x = table.try_acquire("solo", TTL).unwrap();
    match table.acquire_with("solo", TTL, &permits(2)) {
        Err(Error::WrongKind {
            recorded: LeaseKind::Exclusive,
            requested: LeaseKind::Permits(2),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let token = x.token();
    x.release().unwrap();
    // ...but once nobody holds it, the next user may redefine it, and tokens go on growing.
    let p = table.acquire_with("solo", TTL, &permits(2)).unwrap();
    assert!(p.token() > token);
    assert_eq!(table.get("solo").unwrap().unwrap().kind, LeaseKind::Permits(2));
    // The released exclusive grant stays released: its holder cannot touch the group.
    assert!(matches!(table.release("solo", token), Err(Error::Lost { .. })));
    assert!(table.get("solo").unwrap().unwrap().grants.len() == 1);
    // Out-of-range permit counts are refused.
    for n in [0, 256] {
        assert!(matches!(AcquireOptions::new().permits(n), Err(Error::InvalidOptions { .. })));
    }
}

#[test]
fn by_token_calls_revocation_and_requests_reach_one_permit_or_all() {
    let dir = Scratch::new("bytoken");
    let table = table(&dir, 64);
    let two = permits(2);
    let a = table.acquire_with("jobs", TTL, &two).unwrap().detach().unwrap();
    let b = table.acquire_with("jobs", TTL, &two).unwrap();
    // Detached permits are renewed and released by token, from anywhere.
    table.renew("jobs", a.token, Duration::from_secs(50)).unwrap();
    // A process-bound one by its own process only (the test of that is the exclusive
    // lease's: the seat's grant is found the same way, then the same check applies).
    table.renew("jobs", b.token(), TTL).unwrap();
    assert!(matches!(
        table.release("jobs", b.token() + 1000),
        Err(Error::Lost { reason: LostReason::NotIssued { .. }, .. })
    ));
    // A request to release reaches one holder, or each.
    assert_eq!(table.request_release("jobs", Some(b.token())).unwrap(), Some(b.token()));
    assert!(b.release_requested());
    table.release("jobs", a.token).unwrap();
    assert!(matches!(
        table.release("jobs", a.token),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    let c = table.acquire_with("jobs", TTL, &two).unwrap();
    // Revoking one token leaves the other holder alone.
    table.revoke_token("jobs", c.token()).unwrap();
    assert!(!c.is_valid());
    assert!(b.is_valid());
    assert!(matches!(c.renew(TTL), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    let d = table.acquire_with("jobs", TTL, &two).unwrap();
    // Revoking the name revokes every holder, and returns the newest token.
    assert_eq!(table.revoke("jobs").unwrap(), Some(d.token()));
    assert!(!b.is_valid() && !d.is_valid());
    assert_eq!(table.revoke("jobs").unwrap(), None);
    assert_eq!(table.get("jobs").unwrap().unwrap().state, LeaseState::Free);
}

/// Six processes (three of them forked after opening the table, sharing its handle
/// with their parent) in a blocking-acquire loop on a name with two permits: the
/// number inside never exceeds two, and every token granted is distinct.
#[test]
fn a_herd_of_processes_and_forked_children_never_exceeds_n() {
    let wd = Watchdog::new("permit_herd", LONG * 2);
    let dir = Scratch::new("herd");
    table(&dir, 32);
    let env = [("NAME", s("pool")), ("PERMITS", s(2)), ("HOLD_US", s(200)), ("RUN_MS", s(3000))];
    let (dones, tokens) = run_forking_herd(&wd, &dir, "permit_herd", 2, &env);
    // `DONE grants violations`
    let grants: u64 = dones.iter().map(|v| v[0]).sum();
    let words = SharedWords::open(&dir.path("counters"));
    assert_eq!(words.word(1).load(std::sync::atomic::Ordering::SeqCst), 0, "violations");
    assert!(grants > 50, "only {grants} grants in 3 s");
    assert_distinct(&tokens);
    assert_eq!(tokens.len() as u64, grants);
}

/// Two holders killed with SIGKILL: both permits are free at once for a caller that
/// does not wait (the holders are provably dead).
#[test]
fn dead_holders_permits_are_reclaimed_at_once() {
    let wd = Watchdog::new("permit_dead", LONG);
    let dir = Scratch::new("dead");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let (mut kids, theirs) = two_permit_holders(&wd, &path, &[]);
    assert!(matches!(table.acquire_with("pool", TTL, &permits(2)), Err(Error::Held { .. })));
    for k in &mut kids {
        k.kill();
    }
    let a = table.acquire_with("pool", TTL, &permits(2)).expect("first dead holder's permit");
    let b = table.acquire_with("pool", TTL, &permits(2)).expect("second dead holder's permit");
    assert!(a.token() > *theirs.iter().max().unwrap() && b.token() > a.token());
    assert!(table.info().counters.dead_holder_reclaims >= 2);
}

/// A holder stopped with SIGSTOP keeps its permit until its TTL runs out; a waiter then
/// gets it; the holder, resumed, learns on renewal that it lost it.
#[test]
fn a_stopped_holders_permit_expires_and_it_learns_so() {
    let wd = Watchdog::new("permit_stopped", LONG);
    let dir = Scratch::new("stopped");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let go = dir.path("go");
    let mine = table.acquire_with("pool", TTL, &permits(2)).unwrap();
    let mut kid = Kid::spawn(
        &wd,
        "stopped",
        "permit_hold",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("pool")),
            ("PERMITS", s(2)),
            ("TTL_MS", s(400)),
            ("ACTION", s("renew_after_go")),
            ("GO", s(go.display())),
        ],
    );
    kid.expect("GOT", LONG);
    kid.signal(libc::SIGSTOP);
    kid.wait_state(b'T', LONG);
    let waited = table
        .acquire_with("pool", TTL, &permits(2).wait(Some(Duration::from_secs(30))))
        .expect("the stopped holder's permit, at its TTL");
    assert!(waited.token() > mine.token());
    touch(&go);
    kid.signal(libc::SIGCONT);
    assert_eq!(kid.expect("LOST", LONG), "TakenOver", "{}", kid.transcript());
    kid.wait_ok(LONG);
}

/// A process blocked for a permit (both taken) is woken when either is released.
#[test]
fn a_blocked_acquirer_wakes_when_any_permit_frees() {
    let wd = Watchdog::new("permit_wake", LONG);
    let dir = Scratch::new("wake");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let a = table.acquire_with("pool", TTL, &permits(2)).unwrap();
    let b = table.acquire_with("pool", TTL, &permits(2)).unwrap();
    let mut kid = Kid::spawn(
        &wd,
        "waiter",
        "permit_hold",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("pool")),
            ("PERMITS", s(2)),
            ("TTL_MS", s(30_000)),
            ("WAIT_MS", s(50_000)),
            ("ACTION", s("forever")),
        ],
    );
    // Until it announces itself on a seat, it has not looked yet.
    let seat = table.get("pool").unwrap().unwrap().grants[1].slot;
    wait_until("the waiter announced itself", || common::waiters_announced(&path, seat));
    assert!(kid.lines_so_far().iter().all(|l| !l.contains("GOT")));
    b.release().unwrap();
    let got: u64 = kid.expect("GOT", LONG).parse().unwrap();
    assert!(got > a.token());
    kid.kill();
}

/// A name with three permits (four slots) in an eight-slot table that a process keeps
/// churning with fresh names: the herd is never more than three inside, and its seats
/// and head survive (or are rebound) without breaking that.
/// Four processes on a name with two permits by every path of the library at once (see
/// `run_mixed_path_herd`): never more than two inside, every token distinct.
#[test]
fn permits_by_every_path_never_exceed_n() {
    let wd = Watchdog::new("permit_paths", LONG * 2);
    let dir = Scratch::new("paths");
    table(&dir, 32);
    let env = [("NAME", s("pool")), ("PERMITS", s(2)), ("HOLD_US", s(100)), ("RUN_MS", s(3000))];
    let (dones, tokens) = run_mixed_path_herd(&wd, &dir, "permit_herd", 2, &env);
    let words = SharedWords::open(&dir.path("counters"));
    assert_eq!(words.word(1).load(std::sync::atomic::Ordering::SeqCst), 0, "violations");
    for (i, v) in dones.iter().enumerate() {
        assert!(v[0] > 20, "process {i}: only {} grants in 3 s", v[0]);
    }
    assert_distinct(&tokens);
    assert_eq!(tokens.len() as u64, dones.iter().map(|v| v[0]).sum::<u64>());
}

#[test]
fn permits_in_a_full_table_under_churn() {
    let wd = Watchdog::new("permit_full", LONG * 2);
    let dir = Scratch::new("full");
    let path = dir.path("t");
    table(&dir, 8);
    let counters = dir.path("counters");
    SharedWords::create(&counters, 2);
    let herd_env = vec![
        ("TABLE", s(path.display())),
        ("NAME", s("pool")),
        ("PERMITS", s(3)),
        ("COUNTERS", s(counters.display())),
        ("HOLD_US", s(100)),
        ("RUN_MS", s(3000)),
    ];
    let mut herd: Vec<Kid> =
        (0..4).map(|i| Kid::spawn(&wd, &format!("herd-{i}"), "permit_herd", &herd_env)).collect();
    let mut churn = start_churn(&wd, &path, 2, 11);
    for k in &mut herd {
        let done = k.expect("DONE", LONG);
        assert!(done.ends_with(" 0"), "violations: {done}\n{}", k.transcript());
        k.wait_ok(LONG);
    }
    churn.expect("DONE", LONG);
    churn.wait_ok(LONG);
    let words = SharedWords::open(&counters);
    assert_eq!(words.word(1).load(std::sync::atomic::Ordering::SeqCst), 0, "violations");
}

/// A full table whose only idle slot is the head of a name with permits (its seat bound
/// and held) answers `TableFull` to a new name, not `Busy` (the head cannot be evicted
/// before its seats; counting it as idle used up the binder's retries).
#[test]
fn a_full_table_with_a_pinned_head_answers_table_full() {
    let dir = Scratch::new("pinned");
    let table = table(&dir, 4);
    let (_a, _b) = (table.try_acquire("a", TTL).unwrap(), table.try_acquire("b", TTL).unwrap());
    let _p = table.acquire_with("p", TTL, &permits(2)).unwrap();
    assert!(matches!(table.try_acquire("c", TTL), Err(Error::TableFull { .. })));
    let q = table.acquire_with("q", TTL, &permits(2)).map(|l| l.token());
    assert!(matches!(q, Err(Error::TableFull { .. })), "{q:?}");
}
