//! Child roles for the election tests (`tests/election.rs`): a candidate that campaigns
//! through a [`Runner`](shmlease::election::Runner) and acts on a shared record while
//! leading, checking invariant 10 as it goes; an observer that reports every change.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{env, env_ms, env_or, open_table, say, Kid, SharedWords};

const LONG: Duration = Duration::from_secs(60);

/// Campaigns on `NAME` with TTL `TTL_MS` until `RUN_MS` have passed, again and again.
/// While leading, it acts on the shared record `RECORD` (word 0: the highest term that
/// ever acted) with fencing: `fetch_max(term)`. Seeing a higher term there means a
/// later term was granted, so this one is over: if [`Leading::is_leader`] is still true
/// after that read, two leaders overlap — a violation. Reports `TERM t` when elected
/// (before acting), `FENCED t` when its write was refused by a higher term,
/// `STOPPED t reason resigned` from `on_stopped`, and `DONE violations` at the end.
///
/// [`Leading::is_leader`]: shmlease::election::Leading::is_leader
pub fn role_candidate() -> i32 {
    let table = open_table();
    let ttl = env_ms("TTL_MS");
    let election = table
        .election(&env("NAME"))
        .unwrap()
        .ttl(ttl)
        .unwrap()
        .label(&format!("c{}", std::process::id() % 100_000))
        .unwrap();
    let record = SharedWords::open(Path::new(&env("RECORD")));
    let end = Instant::now() + env_ms("RUN_MS");
    let mut violations = 0u64;
    while Instant::now() < end {
        let mut last_seen = 0u64;
        let runner = election
            .runner()
            .campaign_timeout(Some(Duration::from_millis(200)))
            .on_new_leader(|leader| {
                // Leaders are reported in increasing term order.
                if leader.term <= last_seen {
                    eprintln!("on_new_leader went back: {} after {last_seen}", leader.term);
                }
                last_seen = leader.term;
            })
            .on_stopped(|stopped| {
                say(
                    "STOPPED",
                    format!("{} {:?} {}", stopped.term, stopped.reason, stopped.resigned),
                )
            });
        let ran = runner.run(|leading| {
            let term = leading.term();
            say("TERM", term);
            let mut bad = 0u64;
            while Instant::now() < end {
                // Act only while leading, as a real leader would; a stop (SIGSTOP) may
                // land anywhere, also between this check and the write.
                if !leading.is_leader() {
                    say("LOSTWHILE", term);
                    break;
                }
                let before = record.word(0).fetch_max(term, Ordering::SeqCst);
                if before > term {
                    // Fenced: a later term has acted, so ours must be over now.
                    if leading.is_leader() {
                        eprintln!("term {term} still leads after term {before} acted");
                        bad += 1;
                    }
                    say("FENCED", term);
                    break;
                }
                if leading.should_stop().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            bad
        });
        match ran {
            Ok(Some(bad)) => violations += bad,
            Ok(None) => {}
            Err(shmlease::Error::TimedOut { .. }) => {}
            Err(e) => {
                eprintln!("campaign failed: {e}");
                return 20;
            }
        }
    }
    say("DONE", violations);
    0
}

/// Observes `NAME` until `RUN_MS` have passed; reports every change as
/// `CHANGE term leading skipped` (`skipped` is `-` when unknown).
pub fn role_observer() -> i32 {
    let table = open_table();
    let election = table.election(&env("NAME")).unwrap();
    let mut observer = election.observe();
    let end = Instant::now() + env_ms("RUN_MS");
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match observer.next_change(Some(left)) {
            Ok(Some(change)) => say(
                "CHANGE",
                format!(
                    "{} {} {}",
                    change.term,
                    change.leader.is_some() as u8,
                    change.skipped.map_or("-".to_owned(), |n| n.to_string())
                ),
            ),
            Ok(None) => break,
            Err(e) => {
                eprintln!("observe failed: {e}");
                return 20;
            }
        }
    }
    say("DONE", 0);
    0
}

/// Campaigns on `NAME` (TTL `TTL_MS`), reports `TERM t`, then holds leadership until
/// killed, or, with `UNTIL_REQUEST=1`, until a hand-over is requested (then reports
/// `REQUESTED t` and resigns, then with `LINGER=1` lives on until killed).
pub fn role_leader() -> i32 {
    let table = open_table();
    let election = table.election(&env("NAME")).unwrap().ttl(env_ms("TTL_MS")).unwrap();
    let leadership = election.campaign(None).unwrap();
    say("TERM", leadership.term());
    if env_or("UNTIL_REQUEST", "0") == "1" {
        match leadership.wait_notice(None) {
            Some(shmlease::Notice::ReleaseRequested) => {
                say("REQUESTED", leadership.term());
                leadership.resign().unwrap();
                say("RESIGNED", 0);
                if env_or("LINGER", "0") == "1" {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            other => {
                eprintln!("unexpected notice {other:?}");
                return 21;
            }
        }
        return 0;
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Like a C program: SIGPIPE at its default disposition (a Rust binary ignores it).
/// Campaigns on `NAME` once, reports `TERM t`, resigns and exits.
pub fn role_standby_default_sigpipe() -> i32 {
    // SAFETY: signal(2) with a valid signal number and SIG_DFL.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let table = open_table();
    let election = table.election(&env("NAME")).unwrap();
    let leadership = election.campaign(Some(Duration::from_secs(60))).unwrap();
    say("TERM", leadership.term());
    leadership.resign().unwrap();
    0
}

/// What [`check_run`] found.
pub struct RunChecked {
    /// Every term a candidate reported winning.
    pub terms: std::collections::BTreeSet<u64>,
    /// Observer reports that said they skipped terms.
    pub skips: u32,
    /// Observer reports with terms known to lie between them and the one before.
    pub gaps: u32,
}

/// The parent's side of a run of [`role_candidate`]s (`running`, still alive, and
/// `finished`, killed) and [`role_observer`]s: waits for each to end, asserts that no
/// candidate saw a violation, that no term was granted twice, that every observer's
/// terms only grow, and that every count of skipped terms covers the terms known to
/// lie between two reports (`each_observer_saw_something`: that each reported).
pub fn check_run(
    running: &mut [Kid],
    finished: &[Kid],
    observers: &mut [Kid],
    each_observer_saw_something: bool,
) -> RunChecked {
    let mut out = RunChecked { terms: Default::default(), skips: 0, gaps: 0 };
    for k in running.iter_mut() {
        assert_eq!(k.expect("DONE", LONG), "0", "violations\n{}", k.transcript());
        k.wait_ok(LONG);
    }
    for k in running.iter().chain(finished) {
        for line in k.lines_so_far() {
            if let Some(v) = line.strip_prefix("@@TERM ") {
                assert!(out.terms.insert(v.parse::<u64>().unwrap()), "term {v} granted twice");
            }
        }
    }
    let terms = &out.terms;
    for k in observers.iter_mut() {
        k.expect("DONE", LONG);
        k.wait_ok(LONG);
        let mut last: Option<u64> = None;
        for line in k.lines_so_far() {
            let Some(v) = line.strip_prefix("@@CHANGE ") else { continue };
            let f: Vec<&str> = v.split(' ').collect();
            let (term, leading): (u64, bool) = (f[0].parse().unwrap(), f[1] == "1");
            if let Some(prev) = last {
                assert!(term >= prev, "{}: term went back: {term} after {prev}", k.label);
                // Terms granted after `prev` up to `term` (that one too if it is over):
                // the observer's count must cover every one we know of. (A candidate
                // killed between its grant and its report leaves a term we do not
                // know: the observer may count more, never fewer.)
                let known = terms.range(prev + 1..term.max(prev + 1)).count() as u64
                    + (!leading && term > prev && terms.contains(&term)) as u64;
                out.gaps += (known > 0) as u32;
                if let Ok(n) = f[2].parse::<u64>() {
                    out.skips += (n > 0) as u32;
                    assert!(
                        n >= known,
                        "{}: {known} terms between {prev} and {term}, observer said {n}",
                        k.label
                    );
                }
            }
            last = Some(term);
        }
        if each_observer_saw_something {
            assert!(last.is_some(), "{} saw nothing", k.label);
        }
    }
    out
}
