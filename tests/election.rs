//! Leader election (issue 11): campaign, leadership, resign, leader, observe, request
//! release, the runner's callbacks and overrun behaviour — in one process, then with
//! real processes: a leader killed with SIGKILL is replaced before its TTL (its death
//! wakes the standby), a leader stopped past its TTL is replaced and learns it lost,
//! and five candidates with two observers under random kills, stops, revocations and
//! hand-over requests (`election_chaos`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Kid, Rng, Scratch, SharedWords, Watchdog};
use shmlease::election::{StopReason, Stopped};
use shmlease::{Error, LeaseTable, LostReason, Notice, TableOptions};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

const LONG: Duration = Duration::from_secs(60);

/// Held by the tests whose waits watch a live holder's death (a `shmlease-deathwatch`
/// thread in this process), so that `death_watch_threads_end_with_the_wait` counts only
/// its own.
static DEATH_WATCHERS: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    DEATH_WATCHERS.lock().unwrap_or_else(|p| p.into_inner())
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn table(dir: &Scratch) -> (LeaseTable, std::path::PathBuf) {
    let path = dir.path("table");
    (LeaseTable::create(&path, &TableOptions::new().capacity(16)).unwrap(), path)
}

#[test]
fn campaign_resign_and_leader() {
    let dir = Scratch::new("el-basic");
    let (t, _) = table(&dir);
    let a = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap().label("a").unwrap();
    let b = t.election("ctl").unwrap().label("b").unwrap();
    assert_eq!(a.leader().unwrap(), None, "nobody leads an election never campaigned");
    let la = a.try_campaign().unwrap();
    assert!(la.is_leader());
    let leader = b.leader().unwrap().expect("a leads");
    assert_eq!(leader.term, la.term());
    assert_eq!(leader.holder.unwrap().label.as_str(), "a");
    assert_eq!(leader.holder.unwrap().pid, std::process::id());
    assert!(leader.remaining > Duration::from_secs(20));
    match b.try_campaign() {
        Err(Error::Held { token, .. }) => assert_eq!(token, la.term()),
        other => panic!("a second candidate was not refused: {other:?}"),
    }
    assert!(matches!(b.campaign(Some(Duration::from_millis(30))), Err(Error::TimedOut { .. })));
    let term_a = la.term();
    la.resign().unwrap();
    assert_eq!(a.leader().unwrap(), None);
    let lb = b.try_campaign().unwrap();
    assert!(lb.term() > term_a, "terms strictly increase");
    drop(lb); // dropping resigns
    assert_eq!(a.leader().unwrap(), None);
}

/// Resign wakes a blocked candidate at once (it does not wait for the TTL).
#[test]
fn resign_hands_over_to_a_blocked_candidate() {
    let dir = Scratch::new("el-handover");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(600)).unwrap();
    let first = e.try_campaign().unwrap();
    let term = first.term();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| e.campaign(Some(LONG)).map(|l| l.term()));
        // Let the candidate block, then resign: with a 600 s TTL only the wake-up can
        // elect it before the watchdog-sized timeout.
        std::thread::sleep(Duration::from_millis(50));
        first.resign().unwrap();
        let next = waiter.join().unwrap().unwrap();
        assert!(next > term);
    });
}

#[test]
fn revocation_is_noticed_with_its_reason() {
    let dir = Scratch::new("el-revoke");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let l = e.try_campaign().unwrap();
    assert_eq!(t.revoke("ctl").unwrap(), Some(l.term()));
    assert!(!l.is_leader(), "is_leader is false the moment the grant is revoked");
    assert_eq!(l.wait_lost(Some(LONG)), Some(LostReason::Revoked));
    assert!(matches!(l.resign(), Err(Error::Lost { reason: LostReason::Revoked, .. })));
}

#[test]
fn release_request_reaches_the_leader() {
    let dir = Scratch::new("el-request");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let l = e.try_campaign().unwrap();
    assert!(!l.release_requested());
    assert_eq!(l.wait_notice(Some(Duration::from_millis(20))), None, "no notice yet");
    std::thread::scope(|scope| {
        let w = scope.spawn(|| l.wait_notice(Some(LONG)));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(t.request_release("ctl", None).unwrap(), Some(l.term()));
        assert_eq!(w.join().unwrap(), Some(Notice::ReleaseRequested));
    });
    assert!(l.release_requested());
    assert!(l.is_leader(), "a request changes nothing about who leads");
    // By token: a wrong token is refused with what is true instead.
    assert!(matches!(
        t.request_release("ctl", Some(l.term() + 1)),
        Err(Error::Lost { reason: LostReason::NotIssued { .. }, .. })
    ));
    let term = l.term();
    l.resign().unwrap();
    assert_eq!(t.request_release("ctl", None).unwrap(), None, "nothing held");
    assert!(matches!(
        t.request_release("ctl", Some(term)),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    // The next grant does not inherit the request.
    let l2 = e.try_campaign().unwrap();
    assert!(!l2.release_requested());
}

#[test]
fn observer_reports_each_change_in_order_and_counts_what_it_missed() {
    let dir = Scratch::new("el-observe");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let mut obs = e.observe();
    let first = obs.next_change(Some(Duration::ZERO)).unwrap().expect("the current state");
    assert_eq!((first.leader.is_none(), first.skipped), (true, Some(0)));
    assert_eq!(obs.next_change(Some(Duration::from_millis(20))).unwrap(), None, "no change");

    let l1 = e.try_campaign().unwrap();
    let c = obs.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!(
        (c.term, c.leader.as_ref().map(|l| l.term), c.skipped),
        (l1.term(), Some(l1.term()), Some(0))
    );
    let t1 = l1.term();
    l1.resign().unwrap();
    let c = obs.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!((c.term, c.leader, c.skipped), (t1, None, Some(0)), "the leader stepped down");

    // Three terms come and go while the observer is not looking; a fourth leads.
    for _ in 0..3 {
        e.try_campaign().unwrap().resign().unwrap();
    }
    let l5 = e.try_campaign().unwrap();
    let c = obs.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!(c.term, l5.term());
    assert_eq!(c.skipped, Some(3), "three terms were missed");
    // Missed terms followed by nobody: the last missed one is counted too.
    l5.resign().unwrap();
    assert_eq!(obs.next_change(Some(LONG)).unwrap().unwrap().skipped, Some(0));
    e.try_campaign().unwrap().resign().unwrap();
    let c = obs.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!((c.leader.is_none(), c.skipped), (true, Some(1)));
}

/// A blocked observer is woken by the grant itself, and by expiry.
#[test]
fn blocked_observer_is_woken_by_a_grant_and_by_expiry() {
    let dir = Scratch::new("el-observe-wake");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_millis(300)).unwrap();
    let mut obs = e.observe();
    obs.next_change(None).unwrap();
    std::thread::scope(|scope| {
        let h = scope.spawn(move || {
            let a = obs.next_change(Some(LONG)).unwrap().unwrap();
            let b = obs.next_change(Some(LONG)).unwrap().unwrap();
            (a, b)
        });
        std::thread::sleep(Duration::from_millis(30));
        // Take it without a keep-alive, so that it expires.
        let lease = t.try_acquire("ctl", Duration::from_millis(300)).unwrap();
        let (a, b) = h.join().unwrap();
        assert_eq!(a.leader.map(|l| l.term), Some(lease.token()));
        assert_eq!((b.term, b.leader, b.skipped), (lease.token(), None, Some(0)), "expired");
        assert!(!lease.is_valid());
    });
}

/// An observer whose name is unbound (its slot reused for other names) and bound again
/// says the count of missed terms is unknown, never zero.
#[test]
fn observer_across_a_rebinding_reports_unknown() {
    let dir = Scratch::new("el-rebind");
    let path = dir.path("table");
    let t = LeaseTable::create(&path, &TableOptions::new().capacity(2)).unwrap();
    let e = t.election("ctl").unwrap();
    let mut obs = e.observe();
    let l = e.try_campaign().unwrap();
    assert!(obs.next_change(None).unwrap().unwrap().leader.is_some());
    l.resign().unwrap();
    // Fill the table so that "ctl" (idle) is evicted, then lead it again.
    for i in 0..4 {
        t.try_acquire(&format!("other-{i}"), Duration::from_secs(30)).unwrap().release().unwrap();
    }
    let l2 = e.try_campaign().unwrap();
    let mut seen = Vec::new();
    while let Some(c) = obs.next_change(Some(Duration::from_millis(50))).unwrap() {
        seen.push(c);
    }
    let last = seen.last().expect("the new leader is reported");
    assert_eq!(last.leader.as_ref().map(|l| l.term), Some(l2.term()));
    assert!(
        seen.iter().any(|c| c.skipped.is_none()),
        "a rebinding makes the count unknown: {seen:?}"
    );
}

/// The runner's callbacks: `on_new_leader` for others while campaigning and for itself,
/// the closure, then `on_stopped` — and `on_stopped` never for a candidate that did not
/// lead.
#[test]
fn runner_callback_order() {
    let dir = Scratch::new("el-runner");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let other = e.try_campaign().unwrap();
    let other_term = other.term();
    let log = Mutex::new(Vec::<String>::new());
    let push = |s: String| log.lock().unwrap().push(s);
    std::thread::scope(|scope| {
        let r = scope.spawn(|| {
            e.runner()
                .on_new_leader(|l| push(format!("new {}", l.term)))
                .on_stopped(|s: &Stopped| {
                    push(format!("stopped {} {:?} {}", s.term, s.reason, s.resigned))
                })
                .run(|leading| {
                    push(format!("lead {}", leading.term()));
                    leading.term()
                })
        });
        std::thread::sleep(Duration::from_millis(50));
        other.resign().unwrap();
        let term = r.join().unwrap().unwrap().expect("led");
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                format!("new {other_term}"),
                format!("new {term}"),
                format!("lead {term}"),
                format!("stopped {term} None true"),
            ]
        );
    });
    // A runner stopped before it is elected: no closure, no on_stopped.
    let holder = e.try_campaign().unwrap();
    let called = AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (e, called) = (&e, &called);
        let h = scope.spawn(move || {
            let runner = e.runner().on_stopped(|_| called.store(true, Ordering::SeqCst));
            tx.send(runner.stopper()).unwrap();
            runner.run(|_| unreachable!("never elected"))
        });
        let stopper = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stopper.stop();
        h.join().unwrap()
    });
    assert!(matches!(out, Ok(None)), "{out:?}");
    assert!(!called.load(Ordering::SeqCst), "on_stopped fired for a candidate that never led");
    drop(holder);
}

/// A closure that overruns a hand-over request keeps the leadership (renewed, nobody
/// else elected) until it returns; the runner resigns only then.
#[test]
fn runner_overrun_after_a_request_keeps_leadership_until_return() {
    let dir = Scratch::new("el-overrun");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_millis(300)).unwrap();
    let stopped = Mutex::new(None);
    let out = std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            e.runner().on_stopped(|s| *stopped.lock().unwrap() = Some(*s)).run(|leading| {
                assert_eq!(leading.wait_stop(Some(LONG)), Some(StopReason::Requested));
                // Overrun: three TTLs past the request, still leading throughout.
                let end = Instant::now() + Duration::from_millis(900);
                while Instant::now() < end {
                    assert!(leading.is_leader(), "leadership lapsed during the overrun");
                    std::thread::sleep(Duration::from_millis(10));
                }
                leading.term()
            })
        });
        while e.leader().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let term = t.request_release("ctl", None).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(450));
        assert!(matches!(e.try_campaign(), Err(Error::Held { token, .. }) if token == term));
        (term, h.join().unwrap().unwrap().unwrap())
    });
    assert_eq!(out.0, out.1);
    let s = stopped.lock().unwrap().expect("on_stopped");
    assert_eq!((s.term, s.reason, s.resigned), (out.0, Some(StopReason::Requested), true));
    assert!(e.leader().unwrap().is_none(), "resigned after the closure returned");
}

/// A closure still running when its leadership is revoked hears `Lost`, and the runner
/// reports it did not resign (there was nothing left to resign).
#[test]
fn runner_reports_a_loss_to_the_closure() {
    let dir = Scratch::new("el-runner-lost");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let stopped = Mutex::new(None);
    let revoked = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let r = revoked.clone();
        let h = scope.spawn(|| {
            e.runner().on_stopped(|s| *stopped.lock().unwrap() = Some(*s)).run(move |leading| {
                let reason = leading.wait_stop(Some(LONG));
                assert!(r.load(Ordering::SeqCst));
                assert!(!leading.is_leader());
                reason
            })
        });
        while e.leader().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        revoked.store(true, Ordering::SeqCst);
        t.revoke("ctl").unwrap();
        let reason = h.join().unwrap().unwrap().unwrap();
        assert_eq!(reason, Some(StopReason::Lost(LostReason::Revoked)));
    });
    let s = stopped.lock().unwrap().expect("on_stopped: it led");
    assert_eq!((s.reason, s.resigned), (Some(StopReason::Lost(LostReason::Revoked)), false));
}

#[test]
fn stop_margin_must_leave_room_for_renewals() {
    let dir = Scratch::new("el-margin");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(3)).unwrap();
    assert!(matches!(
        e.runner().stop_margin(Duration::from_secs(2)),
        Err(Error::InvalidOptions { .. })
    ));
    assert!(e.runner().stop_margin(Duration::from_millis(1500)).is_ok());
}

// ------------------------------------------------------------------------------------
// Real processes
// ------------------------------------------------------------------------------------

/// A leader killed with SIGKILL is replaced long before its TTL: the standby, blocked
/// in `campaign`, is woken by the death (and takes over a provably dead holder's grant).
#[test]
fn killed_leader_is_replaced_before_its_ttl() {
    let _serial = serial();
    let wd = Watchdog::new("killed_leader_is_replaced_before_its_ttl", LONG * 2);
    let dir = Scratch::new("el-kill");
    let (t, path) = table(&dir);
    let env = [("TABLE", s(path.display())), ("NAME", s("ctl")), ("TTL_MS", s(600_000))];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
    let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
    let e = t.election("ctl").unwrap();
    std::thread::scope(|scope| {
        let standby = scope.spawn(|| e.campaign(Some(LONG)));
        common::wait_for_waiter(&t, &path, "ctl", LONG);
        leader.signal(libc::SIGKILL);
        leader.wait(LONG);
        let l = standby.join().unwrap().expect("the standby is elected well before the 600 s TTL");
        assert!(l.term() > term);
    });
    assert!(t.info().counters.dead_holder_reclaims >= 1);
}

/// A leader stopped past its TTL is replaced; when it runs again it is no longer the
/// leader and its keep-alive reports the loss.
#[test]
fn stopped_leader_is_replaced_and_learns_it_lost() {
    let _serial = serial();
    let wd = Watchdog::new("stopped_leader_is_replaced_and_learns_it_lost", LONG * 2);
    let dir = Scratch::new("el-stop");
    let (t, path) = table(&dir);
    let env = [("TABLE", s(path.display())), ("NAME", s("ctl")), ("TTL_MS", s(300))];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
    let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
    leader.signal(libc::SIGSTOP);
    leader.wait_state(b'T', LONG);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let l = e.campaign(Some(LONG)).unwrap();
    assert!(l.term() > term);
    leader.signal(libc::SIGCONT);
    // Its renewal now fails: the holder is us, with the higher term.
    std::thread::sleep(Duration::from_millis(200));
    assert!(l.is_leader(), "the resumed leader's keep-alive did not take the lease back");
    leader.signal(libc::SIGKILL);
    leader.wait(LONG);
}

/// A leader that waits for a hand-over request resigns when asked, and the blocked
/// standby is elected at once.
#[test]
fn requested_hand_over_between_processes() {
    let _serial = serial();
    let wd = Watchdog::new("requested_hand_over_between_processes", LONG * 2);
    let dir = Scratch::new("el-req-proc");
    let (t, path) = table(&dir);
    let env = [
        ("TABLE", s(path.display())),
        ("NAME", s("ctl")),
        ("TTL_MS", s(600_000)),
        ("UNTIL_REQUEST", s(1)),
    ];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
    let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
    let e = t.election("ctl").unwrap();
    std::thread::scope(|scope| {
        let standby = scope.spawn(|| e.campaign(Some(LONG)));
        common::wait_for_waiter(&t, &path, "ctl", LONG);
        assert_eq!(t.request_release("ctl", Some(term)).unwrap(), Some(term));
        assert_eq!(leader.expect("REQUESTED", LONG), term.to_string());
        let l = standby.join().unwrap().unwrap();
        assert!(l.term() > term);
    });
    leader.wait_ok(LONG);
}

/// Five candidates and two observers under random faults: the leader killed with
/// SIGKILL (and replaced by a new candidate), stopped with SIGSTOP past its TTL,
/// revoked, or asked to hand over. Every leader acts on a shared record with fencing
/// and checks that no later term acted while it still leads (zero violations); terms
/// are unique and increasing; each observer's terms increase, and the terms granted
/// between two of its reports are never more than it said it skipped.
/// `SHMLEASE_ELECTION_CHAOS_MS` sets the length (default 30 s).
#[test]
fn election_chaos() {
    let run_ms: u64 = std::env::var("SHMLEASE_ELECTION_CHAOS_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let wd = Watchdog::new("election_chaos", Duration::from_millis(run_ms) + LONG * 2);
    let dir = Scratch::new("el-chaos");
    let (t, path) = table(&dir);
    let record = dir.path("record");
    SharedWords::create(&record, 8);
    let ttl_ms = 250u64;
    let env = |left: u64| {
        vec![
            ("TABLE", s(path.display())),
            ("NAME", s("ctl")),
            ("TTL_MS", s(ttl_ms)),
            ("RECORD", s(record.display())),
            ("RUN_MS", s(left)),
        ]
    };
    let start = Instant::now();
    let left = || run_ms.saturating_sub(start.elapsed().as_millis() as u64);
    let mut candidates: Vec<Kid> = (0..5)
        .map(|i| Kid::spawn(&wd, &format!("candidate-{i}"), "candidate", &env(run_ms)))
        .collect();
    let mut observers: Vec<Kid> = (0..2)
        .map(|i| Kid::spawn(&wd, &format!("observer-{i}"), "observer", &env(run_ms + 500)))
        .collect();
    let mut finished: Vec<Kid> = Vec::new();
    let e = t.election("ctl").unwrap();
    let mut rng = Rng::new(0x5eed);
    let mut faults = [0u32; 5];
    let mut spawned = 5;
    let mut stopped_observer: Option<(usize, Instant)> = None;
    while left() > 1_000 {
        std::thread::sleep(Duration::from_millis(50 + rng.below(150)));
        if let Some((o, until)) = stopped_observer {
            if Instant::now() >= until {
                observers[o].signal(libc::SIGCONT);
                stopped_observer = None;
            }
        } else if rng.chance(10) {
            // An observer that falls behind: terms come and go while it is stopped.
            let o = rng.below(2) as usize;
            observers[o].signal(libc::SIGSTOP);
            let until = Instant::now() + Duration::from_millis(500 + rng.below(1000));
            stopped_observer = Some((o, until));
            faults[4] += 1;
        }
        let Some(leader) = e.leader().unwrap() else { continue };
        let Some(pid) = leader.holder.map(|h| h.pid as i32) else { continue };
        let Some(i) = candidates.iter().position(|k| k.pid() == pid) else { continue };
        match rng.below(4) {
            0 => {
                candidates[i].signal(libc::SIGKILL);
                let mut dead = candidates.swap_remove(i);
                dead.wait(LONG);
                finished.push(dead);
                spawned += 1;
                candidates.push(Kid::spawn(
                    &wd,
                    &format!("candidate-{spawned}"),
                    "candidate",
                    &env(left()),
                ));
                faults[0] += 1;
            }
            1 => {
                candidates[i].signal(libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(ttl_ms + 50 + rng.below(100)));
                candidates[i].signal(libc::SIGCONT);
                faults[1] += 1;
            }
            2 => {
                let _ = t.revoke_token("ctl", leader.term);
                faults[2] += 1;
            }
            _ => {
                let _ = t.request_release("ctl", Some(leader.term));
                faults[3] += 1;
            }
        }
    }
    if let Some((o, _)) = stopped_observer {
        observers[o].signal(libc::SIGCONT);
    }
    let common::RunChecked { terms, skips, gaps } =
        common::check_run(&mut candidates, &finished, &mut observers, true);
    eprintln!(
        "election_chaos: {} terms in {run_ms} ms; faults: {} kills, {} stops, {} revocations, {} requests, {} observer stops; {} observer reports with skipped terms ({gaps} with known gaps)",
        terms.len(),
        faults[0],
        faults[1],
        faults[2],
        faults[3],
        faults[4],
        skips
    );
    assert!(terms.len() > 10, "too few terms to mean anything: {}", terms.len());
}

/// With no candidate to take over, a killed leader's grant stands until its TTL, but
/// `leader` says nobody leads and a blocked observer is woken by the death itself.
#[test]
fn a_dead_leader_leads_no_more() {
    let _serial = serial();
    let wd = Watchdog::new("a_dead_leader_leads_no_more", LONG * 2);
    let dir = Scratch::new("el-dead");
    let (t, path) = table(&dir);
    let env = [("TABLE", s(path.display())), ("NAME", s("ctl")), ("TTL_MS", s(600_000))];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
    let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
    let e = t.election("ctl").unwrap();
    assert_eq!(e.leader().unwrap().map(|l| l.term), Some(term));
    let mut obs = e.observe();
    assert!(obs.next_change(None).unwrap().unwrap().leader.is_some());
    std::thread::scope(|scope| {
        let h = scope.spawn(move || obs.next_change(Some(LONG)));
        std::thread::sleep(Duration::from_millis(50));
        leader.signal(libc::SIGKILL);
        leader.wait(LONG);
        let c = h.join().unwrap().unwrap().expect("woken by the death, long before the TTL");
        assert_eq!((c.term, c.leader, c.skipped), (term, None, Some(0)));
    });
    assert_eq!(e.leader().unwrap(), None);
    assert_eq!(t.get("ctl").unwrap().unwrap().token, term, "the grant itself stands");
}

/// The thread that turns a holder's death into a wake-up ends with the wait it served,
/// even when a child forked during the wait holds a copy of its cancel pipe, and the
/// holder lives on.
#[test]
fn death_watch_threads_end_with_the_wait() {
    let _serial = serial();
    let wd = Watchdog::new("death_watch_threads_end_with_the_wait", LONG * 2);
    let dir = Scratch::new("el-alarm");
    let (t, path) = table(&dir);
    let env = [
        ("TABLE", s(path.display())),
        ("NAME", s("ctl")),
        ("TTL_MS", s(600_000)),
        ("UNTIL_REQUEST", s(1)),
        ("LINGER", s(1)),
    ];
    let mut holder = Kid::spawn(&wd, "holder", "leader", &env);
    let term: u64 = holder.expect("TERM", LONG).parse().unwrap();
    let watchers = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|c| c.trim() == "shmlease-deathw")
            .count()
    };
    let e = t.election("ctl").unwrap();
    let child = std::thread::scope(|scope| {
        let standby = scope.spawn(|| e.campaign(Some(LONG)));
        common::wait_for_waiter(&t, &path, "ctl", LONG);
        // It announces itself, then arms the watch, then sleeps.
        let end = Instant::now() + LONG;
        while watchers() != 1 {
            assert!(Instant::now() < end, "a blocked campaign does not watch the live holder");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A child forked during the wait, which lives on.
        // SAFETY: fork(2) has no preconditions; the child only sleeps and leaves with _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: prctl/sleep/_exit take plain integers.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::sleep(60);
                libc::_exit(0);
            }
        }
        t.request_release("ctl", Some(term)).unwrap();
        holder.expect("RESIGNED", LONG);
        assert!(standby.join().unwrap().unwrap().term() > term);
        child
    });
    let end = Instant::now() + LONG;
    while watchers() != 0 {
        assert!(Instant::now() < end, "the death-watch thread outlived its wait");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    holder.signal(libc::SIGKILL);
    holder.wait(LONG);
}

/// A standby with SIGPIPE at its default disposition (as in any C program) survives the
/// end of its death watch, whether the watched holder died (the watch's thread gone)
/// or not. (The watch was once cancelled through a pipe, whose reader had gone by then:
/// SIGPIPE killed the elected standby.)
#[test]
fn standby_with_default_sigpipe_survives_its_death_watch() {
    let _serial = serial();
    let wd = Watchdog::new("standby_with_default_sigpipe_survives_its_death_watch", LONG * 2);
    let dir = Scratch::new("el-sigpipe");
    let (t, path) = table(&dir);
    let env = [("TABLE", s(path.display())), ("NAME", s("ctl")), ("TTL_MS", s(600_000))];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
    let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
    let mut standby = Kid::spawn(&wd, "standby", "standby_default_sigpipe", &env);
    common::wait_for_waiter(&t, &path, "ctl", LONG);
    std::thread::sleep(Duration::from_millis(20)); // let it arm its watch and sleep
    leader.signal(libc::SIGKILL);
    leader.wait(LONG);
    let next: u64 = standby.expect("TERM", LONG).parse().unwrap();
    assert!(next > term);
    standby.wait_ok(LONG);
}
