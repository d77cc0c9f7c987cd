//! Attacks on shared names: user programs that differ from the ones in
//! `tests/shared.rs` — mixed herds of shared and exclusive callers (blocking and try,
//! threads sharing a handle, forked children) checked by an oracle that asks the table
//! whether two conflicting holders were both live; exclusive holders that renew, keep
//! alive, detach and release by token on a shared name; a live exclusive lease converted
//! by the first shared acquirer; kill -9 and SIGSTOP of drainers; drainers timing out;
//! the 64-holder bound; tiny tables; start-time identities; wake-up latency; tokens
//! across kinds; garbage in heads and seats. Each test says what it attacks; six found
//! defects, since fixed (six, as of 5fb9aea: the
//! exclusive holder's `remaining`/`deadline` include the kind bits; a drain returns a
//! grant revoked, or expired while the drainer was stopped, meanwhile; a by-token call
//! names the wrong reason for a gone exclusive token; a seat with the kind bits panics
//! a shared acquirer; `get` shows a grant above the name's latest token).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{
    assert_distinct, read_u64, s, shared, table, tokens_of, touch, wait_until, write_u64, Kid,
    Scratch, SharedWords, Watchdog, HEADER_SIZE, LONG, SLOT_SIZE, TTL,
};
use shmlease::{AcquireOptions, Error, LeaseInfo, LeaseKind, LeaseState, LeaseTable, LostReason};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

/// The kind bits of a shared name's head (`GROUP | SHARED`, see `src/layout.rs`).
const KIND: u64 = (1 << 60) | (1 << 59);
/// The flag bits of a grant word's deadline half.
const FLAGS: u64 = 7 << 61;

fn grant_offset(slot: u32) -> u64 {
    HEADER_SIZE + slot as u64 * SLOT_SIZE
}

/// The deadline half of slot `slot`'s grant word.
fn deadline_bits(path: &Path, slot: u32) -> u64 {
    read_u64(path, grant_offset(slot))
}

/// The exclusive grant a shared name's info shows, if any.
fn exclusive_grant(info: &LeaseInfo) -> Option<u64> {
    info.grants.iter().find(|g| !g.shared).map(|g| g.token)
}

/// What `get` may show for a shared name whatever the churn: kind shared, distinct
/// tokens in distinct slots, at most 64 shared grants and one exclusive, and (with
/// `latest`) the name's latest token at least every token shown (see
/// `a_shared_names_latest_token_is_never_below_a_grant_it_shows` for why the herds
/// leave that out).
fn check_shared_info(info: &LeaseInfo, latest: bool) -> Result<(), String> {
    let tokens: BTreeSet<u64> = info.grants.iter().map(|g| g.token).collect();
    let slots: BTreeSet<u32> = info.grants.iter().map(|g| g.slot).collect();
    let shared = info.grants.iter().filter(|g| g.shared).count();
    let why = if info.kind != LeaseKind::Shared {
        "kind"
    } else if tokens.len() != info.grants.len() {
        "a token shown twice"
    } else if slots.len() != info.grants.len() {
        "a slot shown twice"
    } else if shared > 64 {
        "over 64 shared grants"
    } else if info.grants.len() - shared > 1 {
        "two exclusive grants"
    } else if (info.state == LeaseState::Held) == info.grants.is_empty() {
        "state and grants disagree"
    } else if latest && tokens.last().is_some_and(|t| *t > info.token) {
        "a grant above the name's latest token"
    } else {
        return Ok(());
    };
    Err(format!("{why}: {info:#?}"))
}

// ------------------------------------------------------------------------------------
// An exclusive holder on a shared name: every transition keeps the kind
// ------------------------------------------------------------------------------------

/// Attacks the kind bits and the exclusive holder's view of its own lease: an
/// exclusive lease taken on a shared name (and one converted while live by the first
/// shared acquirer) renewed, kept alive, detached, renewed and released by token, and
/// revoked; after each step the name must still be shared, and the holder's
/// `remaining()` / `deadline()` / detached deadline must be within its TTL.
#[test]
fn an_exclusive_lease_on_a_shared_name_knows_its_own_deadline() {
    let dir = Scratch::new("xdeadline");
    let table = table(&dir, 64);
    let r = table.acquire_with("doc", TTL, &shared()).unwrap();
    drop(r);
    let x = table.try_acquire("doc", TTL).unwrap();
    assert!(x.remaining() <= TTL, "remaining {:?} of a {TTL:?} lease", x.remaining());
    assert!(x.deadline() <= Instant::now() + TTL, "deadline beyond its TTL");
    let d = x.detach().unwrap();
    assert!(d.deadline <= Instant::now() + TTL, "detached deadline beyond its TTL");
    // Converted while live.
    let y = table.try_acquire("doc2", TTL).unwrap();
    assert!(matches!(table.acquire_with("doc2", TTL, &shared()), Err(Error::Held { .. })));
    assert!(y.remaining() <= TTL, "remaining {:?} after conversion", y.remaining());
}

/// Attacks the same transitions for what they do to the table: the kind survives
/// renew, keep-alive, request, detach, by-token renew/release, revocation; tokens keep
/// growing across kinds; every `get` passes `check_shared_info`.
#[test]
fn kind_bits_survive_every_transition_of_the_exclusive_holder() {
    let dir = Scratch::new("kindbits");
    let table = table(&dir, 64);
    let path = dir.path("t");
    let check = |what: &str| {
        let info = table.get("k").unwrap().unwrap();
        assert_eq!(info.kind, LeaseKind::Shared, "after {what}");
        check_shared_info(&info, true).unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(deadline_bits(&path, info.slot) & KIND, KIND, "after {what}");
        info
    };
    // A live exclusive lease converted by the first shared acquirer.
    let mut x = table.try_acquire("k", TTL).unwrap();
    x.keep_alive(Duration::from_secs(3)).unwrap();
    match table.acquire_with("k", TTL, &shared()) {
        Err(Error::Held { token, .. }) => assert_eq!(token, x.token()),
        other => panic!("{other:?}"),
    }
    check("conversion");
    assert!(x.is_valid());
    x.renew(TTL).unwrap();
    check("renew");
    std::thread::sleep(Duration::from_millis(1200)); // the keep-alive renews once
    assert!(x.is_valid() && x.lost().is_none());
    check("keep-alive renewal");
    assert_eq!(table.request_release("k", None).unwrap(), Some(x.token()));
    assert!(x.wait_notice(Some(LONG)).is_some());
    check("request");
    let xt = x.token();
    let d = x.detach().unwrap();
    check("detach");
    table.renew("k", d.token, TTL).unwrap();
    let info = check("renew by token");
    assert_eq!(exclusive_grant(&info), Some(xt));
    table.release("k", d.token).unwrap();
    let info = check("release by token");
    assert_eq!(info.grants.len(), 0);
    // Shared grants after it, then another exclusive one, revoked.
    let a = table.acquire_with("k", TTL, &shared()).unwrap();
    assert!(a.token() > xt);
    drop(a);
    let w = table.try_acquire("k", TTL).unwrap();
    let wt = w.token();
    assert_eq!(table.revoke("k").unwrap(), Some(wt));
    check("revoke");
    assert!(!w.is_valid());
    assert!(matches!(w.renew(TTL), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    let b = table.acquire_with("k", TTL, &shared()).unwrap();
    assert!(b.token() > wt);
    check("shared after revoke");
}

/// Attacks the reason a by-token call on a shared name gives for an exclusive token
/// that is no longer live: released, revoked or expired, as on an exclusive name — not
/// "taken over" when nothing took it.
#[test]
fn by_token_calls_on_a_shared_name_say_why_an_exclusive_token_is_gone() {
    let dir = Scratch::new("whynot");
    let table = table(&dir, 64);
    drop(table.acquire_with("n", TTL, &shared()).unwrap());
    let x = table.try_acquire("n", TTL).unwrap();
    let xt = x.token();
    x.release().unwrap();
    match table.revoke_token("n", xt) {
        Err(Error::Lost { reason: LostReason::Released, .. }) => {}
        other => panic!("revoke_token of a released exclusive token: {other:?}"),
    }
    match table.request_release("n", Some(xt)) {
        Err(Error::Lost { reason: LostReason::Released, .. }) => {}
        other => panic!("request_release of a released exclusive token: {other:?}"),
    }
}

// ------------------------------------------------------------------------------------
// Drains
// ------------------------------------------------------------------------------------

/// Attacks the end of a drain: the exclusive acquirer's grant is revoked while it waits
/// for the shared holders (here by `revoke(name)`, which also frees the last shared
/// seat and so wakes it). Its acquisition must not return that revoked grant as a
/// lease: it takes the name again (or times out).
#[test]
fn a_drainer_whose_grant_is_revoked_does_not_return_it() {
    let dir = Scratch::new("revdrain");
    let table = table(&dir, 64);
    let _wd = Watchdog::new("revdrain", LONG);
    let mut bad = Vec::new();
    for _ in 0..10 {
        let r = table.acquire_with("d", TTL, &shared()).unwrap();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let l = table
                    .acquire_with(
                        "d",
                        TTL,
                        &AcquireOptions::new().wait(Some(Duration::from_secs(5))),
                    )
                    .unwrap();
                (l.token(), l.is_valid(), table.get("d").unwrap().unwrap())
            });
            // Wait until it drains (the head shows its grant).
            wait_for_drainer(&table, "d");
            table.revoke("d").unwrap();
            let (token, valid, info) = writer.join().unwrap();
            if !valid {
                bad.push((token, info));
            }
        });
        drop(r);
        let _ = table.revoke("d");
    }
    assert!(bad.is_empty(), "acquire returned revoked grants: {bad:#?}");
}

// ------------------------------------------------------------------------------------
// Garbage
// ------------------------------------------------------------------------------------

/// Attacks the seat path with garbage: a seat of a shared name whose grant word carries
/// the head's kind bits (a scribbler wrote them; no shmlease transition does). A shared
/// acquirer must get an error or reclaim it — never panic.
#[test]
fn a_seat_with_the_kind_bits_is_an_error_not_a_panic() {
    let dir = Scratch::new("seatkind");
    let table = table(&dir, 64);
    let path = dir.path("t");
    let r = table.acquire_with("g", TTL, &shared()).unwrap();
    let seat = table.get("g").unwrap().unwrap().grants[0].slot;
    drop(r);
    let free = deadline_bits(&path, seat);
    for junk in [KIND, KIND | 12345, KIND | (1 << 40), KIND | FLAGS | ((1 << 58) - 1)] {
        write_u64(&path, grant_offset(seat), junk);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table.acquire_with("g", TTL, &shared()).map(|l| l.token())
        }));
        assert!(got.is_ok(), "shared acquire panicked on seat word {junk:#x}");
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table.try_acquire("g", TTL).map(|l| l.token())
        }));
        assert!(got.is_ok(), "exclusive acquire panicked on seat word {junk:#x}");
        write_u64(&path, grant_offset(seat), free);
    }
}

// ------------------------------------------------------------------------------------
// Herds
// ------------------------------------------------------------------------------------

/// Runs `procs` herd processes (`tests/common/shared_attacks.rs`, `role_sa_herd`) on a
/// table of `capacity` slots with the extra parameters `env`; checks that none saw a
/// violation or a token below one returned before its acquisition started, that
/// tokens are distinct per name, and that every `get` during the run passes
/// `check_shared_info`. Returns the total number of acquisitions.
fn run_herd(test: &str, capacity: u32, procs: usize, threads: usize, env: &[(&str, &str)]) -> u64 {
    let dir = Scratch::new(test);
    let table = table(&dir, capacity);
    let words = dir.path("words");
    SharedWords::create(&words, common_cells());
    let wd = Watchdog::new(test, Duration::from_secs(120));
    let fork = env.iter().any(|(k, v)| *k == "FORK" && *v == "1");
    let per_proc = threads * if fork { 2 } else { 1 };
    let names: Vec<String> = env
        .iter()
        .find(|(k, _)| *k == "NAMES")
        .map(|(_, v)| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| vec!["herd".to_owned()]);
    let mut kids: Vec<Kid> = (0..procs)
        .map(|i| {
            let mut e = vec![
                ("TABLE", s(dir.path("t").display())),
                ("NAME", s(&names[0])),
                ("WORDS", s(words.display())),
                ("THREADS", s(threads)),
                ("CELL", s(i * per_proc)),
            ];
            e.extend(env.iter().map(|(k, v)| (*k, s(v))));
            Kid::spawn(&wd, &format!("herd{i}"), "sa_herd", &e)
        })
        .collect();
    // Watch the names while the herd runs.
    let mut bad_info = Vec::new();
    while kids.iter_mut().any(|k| k.try_status().is_none()) {
        for n in &names {
            if let Ok(Some(info)) = table.get(n) {
                if info.kind == LeaseKind::Shared {
                    if let Err(e) = check_shared_info(&info, false) {
                        bad_info.push(e);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut total = 0;
    let mut tokens: Vec<u64> = Vec::new();
    for k in &mut kids {
        k.wait_ok(LONG);
        for done in k.reports("DONE") {
            let v: Vec<u64> = done.split(' ').map(|x| x.parse().unwrap()).collect();
            total += v[0];
            assert_eq!(v[1], 0, "violations\n{}", k.transcript());
        }
        tokens.extend(tokens_of(k));
    }
    let w = SharedWords::open(&words);
    assert_eq!(w.word(0).load(SeqCst), 0, "conflicting holders both live");
    assert_eq!(w.word(2).load(SeqCst), 0, "a token below one returned before it started");
    if names.len() == 1 {
        assert_distinct(&tokens);
    }
    assert!(bad_info.is_empty(), "get showed: {}", bad_info.join("\n"));
    assert!(total > 0);
    eprintln!("{test}: {total} acquisitions, {} tokens", tokens.len());
    total
}

fn common_cells() -> usize {
    8 + 256
}

/// Attacks mutual exclusion between kinds with a big, varied herd: 5 processes, each
/// with 3 threads sharing its handle and a forked child with 3 more (30 members),
/// exclusive 1 in 4, try 30% of the time, short TTLs (expiries mid-hold happen),
/// keep-alives, renewals. Conflicting holders must never be both live.
#[test]
fn a_big_mixed_herd_never_has_conflicting_live_holders() {
    run_herd(
        "bigherd",
        256,
        5,
        3,
        &[
            ("FORK", "1"),
            ("RUN_MS", "4000"),
            ("WRITE_EVERY", "4"),
            ("TRY_PCT", "30"),
            ("KEEPALIVE_PCT", "20"),
            ("TTL_MS", "150"),
            ("HOLD_US", "3000"),
            ("WAIT_MS", "300"),
        ],
    );
}

/// The same herd with start-time identities (`SHMLEASE_IDENTITY=start-time`), mostly
/// shared (exclusive 1 in 12).
#[test]
fn a_herd_with_start_time_identities_never_has_conflicting_live_holders() {
    run_herd(
        "stherd",
        256,
        4,
        4,
        &[
            ("IDENTITY", "start-time"),
            ("RUN_MS", "3000"),
            ("WRITE_EVERY", "12"),
            ("TRY_PCT", "20"),
            ("KEEPALIVE_PCT", "10"),
            ("TTL_MS", "2000"),
            ("HOLD_US", "500"),
            ("WAIT_MS", "2000"),
        ],
    );
}

/// Attacks binding under pressure: three shared names and churn in a table with 8
/// slots (three heads leave room for 5 seats in all), so seats are bound, evicted and
/// re-bound all the time; callers may see `TableFull`, never a violation.
#[test]
fn a_herd_on_a_tiny_table_never_has_conflicting_live_holders() {
    run_herd(
        "tinyherd",
        8,
        4,
        3,
        &[
            ("NAMES", "a,b,c"),
            ("RUN_MS", "3000"),
            ("WRITE_EVERY", "5"),
            ("TRY_PCT", "40"),
            ("TTL_MS", "500"),
            ("HOLD_US", "1000"),
            ("WAIT_MS", "200"),
        ],
    );
}

/// Attacks `get` on a shared name under churn: threads take and release shared grants
/// while `get` runs; the name's latest token (`LeaseInfo::token`) must never be below a
/// token among the grants it shows (the same defect was fixed for permits).
#[test]
fn a_shared_names_latest_token_is_never_below_a_grant_it_shows() {
    let dir = Scratch::new("latest");
    let table = table(&dir, 128);
    let _wd = Watchdog::new("latest", LONG);
    let stop = AtomicU64::new(0);
    let mut bad = None;
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while stop.load(SeqCst) == 0 {
                    if let Ok(l) = table.acquire_with("churn", TTL, &shared()) {
                        drop(l);
                    }
                }
            });
        }
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end && bad.is_none() {
            if let Ok(Some(info)) = table.get("churn") {
                // Just bound, not yet made shared (an instant before the first shared
                // grant): a free exclusive name.
                if info.kind == LeaseKind::Exclusive && info.grants.is_empty() {
                    continue;
                }
                if let Err(e) = check_shared_info(&info, true) {
                    bad = Some(e);
                }
            }
        }
        stop.store(1, SeqCst);
    });
    assert!(bad.is_none(), "{}", bad.unwrap());
}

// ------------------------------------------------------------------------------------
// Drainers killed, stopped, timing out
// ------------------------------------------------------------------------------------

fn hold_env(
    dir: &Scratch,
    name: &str,
    shared: bool,
    ttl_ms: u64,
    action: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("TABLE", s(dir.path("t").display())),
        ("NAME", s(name)),
        ("SHARED", s(if shared { 1 } else { 0 })),
        ("TTL_MS", s(ttl_ms)),
        ("ACTION", s(action)),
        ("GO", s(dir.path("go").display())),
    ]
}

/// Waits until `get` shows an exclusive grant of `name` (a drainer holds the head).
fn wait_for_drainer(table: &LeaseTable, name: &str) -> u64 {
    let mut drainer = None;
    wait_until("a drainer showed up", || {
        drainer = table.get(name).unwrap().as_ref().and_then(exclusive_grant);
        drainer.is_some()
    });
    drainer.unwrap()
}

/// Attacks a drainer's death: a process draining the name (waiting for a shared holder
/// in another process) is killed with SIGKILL. Shared acquirers must get in at once
/// (its death is provable), without waiting for its TTL; an exclusive try must name
/// the shared holder, not the dead drainer.
#[test]
fn a_killed_drainer_lets_shared_acquirers_in_at_once() {
    for identity in ["", "start-time"] {
        let dir = Scratch::new("killdrain");
        let table = table(&dir, 64);
        let wd = Watchdog::new("killdrain", LONG);
        let mut e = hold_env(&dir, "k", true, 30_000, "forever");
        e.push(("IDENTITY", s(identity)));
        let mut reader = Kid::spawn(&wd, "reader", "sa_hold", &e);
        let rt: u64 = reader.expect("GOT", LONG).split(' ').next().unwrap().parse().unwrap();
        let mut e = hold_env(&dir, "k", false, 30_000, "forever");
        e.push(("WAIT_MS", s(60_000)));
        e.push(("IDENTITY", s(identity)));
        let mut drainer = Kid::spawn(&wd, "drainer", "sa_hold", &e);
        drainer.expect("START", LONG);
        let dt = wait_for_drainer(&table, "k");
        assert!(
            matches!(table.acquire_with("k", TTL, &shared()), Err(Error::Held { token, .. }) if token == dt)
        );
        drainer.kill();
        let r = table.acquire_with("k", TTL, &shared()).expect("shared after the drainer died");
        assert!(r.token() > dt);
        match table.try_acquire("k", TTL).map(|l| l.token()) {
            Err(Error::Held { token, .. }) => assert!(token == rt || token == r.token()),
            other => panic!("{identity}: exclusive beside shared holders: {other:?}"),
        }
        drop(r);
    }
}

/// Attacks a stopped drainer: SIGSTOP while it drains. Its grant is not renewed, so it
/// expires at its TTL and frees the name for shared acquirers; once continued, the
/// drainer takes the name again (when the shared holders leave) and its lease is valid.
#[test]
fn a_stopped_drainer_frees_the_name_at_its_ttl_and_recovers() {
    let dir = Scratch::new("stopdrain");
    let table = table(&dir, 64);
    let wd = Watchdog::new("stopdrain", LONG);
    let reader = table.acquire_with("p", TTL, &shared()).unwrap();
    let mut e = hold_env(&dir, "p", false, 400, "release_on_go");
    e.push(("WAIT_MS", s(30_000)));
    let mut drainer = Kid::spawn(&wd, "drainer", "sa_hold", &e);
    drainer.expect("START", LONG);
    let dt = wait_for_drainer(&table, "p");
    drainer.signal(libc::SIGSTOP);
    drainer.wait_state(b'T', LONG);
    let end = Instant::now() + LONG;
    let r2 = loop {
        match table.acquire_with("p", TTL, &shared()) {
            Ok(l) => break l,
            Err(Error::Held { token, .. }) => assert_eq!(token, dt),
            Err(e) => panic!("{e:?}"),
        }
        assert!(Instant::now() < end, "a stopped drainer's grant never expired");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(r2.token() > dt);
    // Every shared holder leaves before it runs again: its next scan finds none.
    drop(reader);
    drop(r2);
    drainer.signal(libc::SIGCONT);
    let got = drainer.expect("GOT", LONG);
    let mut it = got.split(' ');
    let t: u64 = it.next().unwrap().parse().unwrap();
    assert!(t > dt, "the continued drainer returned its lost grant: {got}");
    assert_eq!(it.next(), Some("true"), "the continued drainer's lease is valid");
    touch(&dir.path("go"));
    drainer.expect("RELEASED", LONG);
    drainer.wait_ok(LONG);
}

/// Attacks a drain that times out: the exclusive acquirer must release the head at
/// once, and shared acquirers waiting meanwhile (blocked in other processes) must be
/// woken then, not at some later look. Latency is printed, not asserted; each waiter
/// must get in while the drainer's own timeout is the only thing that changed.
#[test]
fn a_drainer_timing_out_lets_waiting_shared_acquirers_in() {
    let dir = Scratch::new("timeoutdrain");
    let table = table(&dir, 64);
    let wd = Watchdog::new("timeoutdrain", LONG);
    // Seats bound beforehand, so the waiters need no table lock to get in.
    let bound: Vec<_> = (0..4).map(|_| table.acquire_with("t", TTL, &shared()).unwrap()).collect();
    let reader = bound.into_iter().next().unwrap();
    let drainer = std::thread::scope(|scope| {
        let d = scope.spawn(|| {
            let r = table.acquire_with(
                "t",
                TTL,
                &AcquireOptions::new().wait(Some(Duration::from_millis(1500))),
            );
            (r.map(|l| l.token()), Instant::now())
        });
        wait_for_drainer(&table, "t");
        let mut waiters: Vec<Kid> = (0..3)
            .map(|i| {
                let mut e = hold_env(&dir, "t", true, 30_000, "exit");
                e.push(("WAIT_MS", s(30_000)));
                Kid::spawn(&wd, &format!("waiter{i}"), "sa_hold", &e)
            })
            .collect();
        for w in &mut waiters {
            w.expect("START", LONG);
        }
        let (r, timed_out_at) = d.join().unwrap();
        assert!(matches!(r, Err(Error::TimedOut { .. }) | Err(Error::Held { .. })), "{r:?}");
        for w in &mut waiters {
            w.expect("GOT", LONG);
            eprintln!(
                "{} got in {:?} after the drainer timed out",
                w.label,
                timed_out_at.elapsed()
            );
        }
        for w in &mut waiters {
            w.wait_ok(LONG);
        }
        timed_out_at
    });
    let _ = drainer;
    drop(reader);
}

/// Attacks the 64-holder bound with processes: 64 shared holders in this process, a
/// 65th acquirer in another waits, and gets in when one of the 64 leaves; an exclusive
/// try meanwhile is refused.
#[test]
fn a_sixty_fifth_shared_acquirer_waits_and_gets_in_when_one_leaves() {
    let dir = Scratch::new("sixtyfive");
    let table = table(&dir, 128);
    let wd = Watchdog::new("sixtyfive", LONG);
    let mut holders: Vec<_> =
        (0..64).map(|_| table.acquire_with("b", TTL, &shared()).unwrap()).collect();
    let mut e = hold_env(&dir, "b", true, 30_000, "forever");
    e.push(("WAIT_MS", s(30_000)));
    let mut late = Kid::spawn(&wd, "65th", "sa_hold", &e);
    late.expect("START", LONG);
    // It announces itself on the seats before sleeping.
    let slots: Vec<u32> = table.get("b").unwrap().unwrap().grants.iter().map(|g| g.slot).collect();
    wait_until("the 65th announced itself", || {
        slots.iter().all(|&sl| common::waiters_announced(&dir.path("t"), sl))
    });
    assert!(late.lines_so_far().iter().all(|l| !l.contains("@@GOT")), "a 65th holder");
    assert!(matches!(table.try_acquire("b", TTL), Err(Error::Held { .. })));
    let left = holders.remove(17);
    let t0 = Instant::now();
    left.release().unwrap();
    late.expect("GOT", LONG);
    eprintln!("the 65th got in {:?} after a seat freed", t0.elapsed());
    assert!(matches!(table.acquire_with("b", TTL, &shared()), Err(Error::Held { .. })));
}

// ------------------------------------------------------------------------------------
// Crash points
// ------------------------------------------------------------------------------------

/// Attacks every crash point of the shared transitions: a child dies (SIGKILL) at step
/// k of a shared grant, an exclusive grant of a shared name, the conversion of a live
/// exclusive lease, a shared acquisition refused by a drainer, shared and exclusive
/// releases, and a revocation; k = 1, 2, … until the operation finishes first. After
/// each death, `get` must pass `check_shared_info`, and (the dead child's grants being
/// reclaimable at once, or at their 300 ms TTL when its record was not yet written) a
/// shared and then an exclusive acquisition must succeed, each within a bounded wait.
#[test]
fn every_crash_point_of_the_shared_transitions_leaves_a_usable_name() {
    let _wd0 = Watchdog::new("crash", Duration::from_secs(300));
    for op in [
        "shared",
        "exclusive",
        "convert",
        "withdraw",
        "release_shared",
        "release_exclusive",
        "revoke",
    ] {
        let mut finished = false;
        for step in 1..=40u32 {
            let dir = Scratch::new("crash");
            let table = table(&dir, 64);
            let wd = Watchdog::new("crash-step", LONG);
            let mut pre = Vec::new();
            match op {
                "convert" => pre.push(table.try_acquire("c", Duration::from_millis(300)).unwrap()),
                "revoke" | "shared" | "release_shared" | "release_exclusive" => {
                    drop(table.acquire_with("c", TTL, &shared()).unwrap());
                }
                "exclusive" => drop(table.acquire_with("c", TTL, &shared()).unwrap()),
                _ => {}
            }
            let _held = match op {
                "revoke" => vec![
                    table.acquire_with("c", TTL, &shared()).unwrap(),
                    table.acquire_with("c", TTL, &shared()).unwrap(),
                ],
                _ => Vec::new(),
            };
            let drainer = (op == "withdraw").then(|| {
                // A shared holder in another process, and a drainer here.
                let mut e = hold_env(&dir, "c", true, 30_000, "forever");
                e.push(("IDENTITY", s("")));
                let mut r = Kid::spawn(&wd, "reader", "sa_hold", &e);
                r.expect("GOT", LONG);
                r
            });
            std::thread::scope(|scope| {
                let draining = drainer.as_ref().map(|_| {
                    scope.spawn(|| {
                        let _ = table.acquire_with(
                            "c",
                            Duration::from_millis(300),
                            &AcquireOptions::new().wait(Some(Duration::from_millis(400))),
                        );
                    })
                });
                if draining.is_some() {
                    wait_for_drainer(&table, "c");
                }
                let mut kid = Kid::spawn(
                    &wd,
                    &format!("{op}@{step}"),
                    "sa_crash",
                    &[
                        ("TABLE", s(dir.path("t").display())),
                        ("NAME", s("c")),
                        ("OP", s(op)),
                        ("STEP", s(step)),
                        ("TTL_MS", s(300)),
                    ],
                );
                let status = kid.wait(LONG);
                if status.code() == Some(0) {
                    assert!(
                        kid.lines_so_far().iter().any(|l| l.contains("@@DONE")),
                        "{op}@{step}: {}",
                        kid.transcript()
                    );
                    finished = true;
                }
                if let Some(d) = draining {
                    d.join().unwrap();
                }
            });
            drop(drainer);
            drop(_held);
            drop(pre);
            if let Some(info) = table.get("c").unwrap() {
                if info.kind == LeaseKind::Shared {
                    check_shared_info(&info, true).unwrap_or_else(|e| panic!("{op}@{step}: {e}"));
                }
            }
            let wait = AcquireOptions::new().wait(Some(Duration::from_secs(10)));
            let r = table
                .acquire_with("c", TTL, &wait.clone().shared(true))
                .unwrap_or_else(|e| panic!("{op}@{step}: shared after the crash: {e:?}"));
            drop(r);
            let x = table
                .acquire_with("c", TTL, &wait)
                .unwrap_or_else(|e| panic!("{op}@{step}: exclusive after the crash: {e:?}"));
            assert!(x.is_valid());
            drop(x);
            if finished {
                eprintln!("{op}: {step} steps");
                break;
            }
        }
        assert!(finished, "{op} has more than 40 crash points?");
    }
}

// ------------------------------------------------------------------------------------
// Garbage in the head, elections, wake-ups
// ------------------------------------------------------------------------------------

/// Attacks the head with garbage: both kind bits with junk deadlines (corrupt, expired,
/// flags, a would-be permit count, all ones) and junk tokens, with and without seats.
/// Every operation must return (watchdog), never panic; a corrupt or expired head's
/// exclusive grant is reclaimed by the next exclusive acquirer, and afterwards both
/// kinds work.
#[test]
fn garbage_in_a_shared_head_is_an_error_or_reclaimed_never_a_panic() {
    let _wd = Watchdog::new("garbagehead", LONG);
    let junks = [
        KIND | ((1 << 59) - 1),
        KIND | 3,
        KIND | FLAGS | 4,
        KIND | 0xff,
        u64::MAX,
        KIND | (1 << 58),
    ];
    for junk in junks {
        for token in [0u64, 1, u64::MAX - 1] {
            let dir = Scratch::new("garbagehead");
            let table = table(&dir, 64);
            let path = dir.path("t");
            let r = table.acquire_with("g", TTL, &shared()).unwrap();
            let head = table.get("g").unwrap().unwrap().slot;
            write_u64(&path, grant_offset(head), junk);
            write_u64(&path, grant_offset(head) + 8, token);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = table.get("g");
                let _ = table.list();
                let a = table.acquire_with("g", TTL, &shared()).map(|l| l.token());
                let b = table.try_acquire("g", TTL).map(|l| l.token());
                let _ = table.revoke("g");
                let _ = table.request_release("g", None);
                let _ = table.revoke_token("g", token);
                let _ = table.renew("g", token, TTL);
                let _ = table.release("g", token);
                (a, b)
            }));
            let (a, b) = outcome.unwrap_or_else(|_| panic!("panic on head {junk:#x}/{token:#x}"));
            eprintln!("head {junk:#x} token {token:#x}: shared {a:?}, exclusive {b:?}");
            drop(r);
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                table.acquire_with("g", TTL, &shared()).map(|l| l.token())
            }));
            assert!(again.is_ok(), "panic after garbage {junk:#x}");
        }
    }
}

/// Attacks elections on shared names: campaigning, asking for the leader and observing
/// are refused with `WrongKind`; a leader whose name becomes shared while it leads
/// keeps its lease, and observers are told the name is no election.
#[test]
fn elections_on_shared_names_are_refused() {
    let dir = Scratch::new("elect");
    let table = table(&dir, 64);
    let r = table.acquire_with("e", TTL, &shared()).unwrap();
    let e = table.election("e").unwrap();
    assert!(matches!(e.try_campaign(), Err(Error::WrongKind { .. })));
    assert!(matches!(e.campaign(Some(Duration::from_millis(100))), Err(Error::WrongKind { .. })));
    assert!(matches!(e.leader(), Err(Error::WrongKind { .. })));
    assert!(matches!(
        e.observe().next_change(Some(Duration::from_millis(100))),
        Err(Error::WrongKind { .. })
    ));
    drop(r);
    assert!(matches!(e.try_campaign(), Err(Error::WrongKind { .. })), "a shared name stays shared");
    // A leader converted by a shared acquirer.
    let f = table.election("f").unwrap();
    let lead = f.try_campaign().unwrap();
    assert!(matches!(table.acquire_with("f", TTL, &shared()), Err(Error::Held { .. })));
    assert!(lead.lease().is_valid());
    assert!(matches!(f.leader(), Err(Error::WrongKind { .. })));
    assert!(matches!(
        f.observe().next_change(Some(Duration::from_millis(100))),
        Err(Error::WrongKind { .. })
    ));
    drop(lead);
}

/// Attacks wake-ups across kinds, with processes: (a) shared waiters blocked behind an
/// exclusive holder, when it releases; (b) a draining exclusive acquirer, when the last
/// shared holder (in another process) releases. Each round's latency is printed; a
/// wake-up the waiter only found at its next look would show as one near the waiter's
/// nap (50 ms with a live holder, up to 1 s else). Asserted: every waiter gets in.
#[test]
fn wake_ups_across_kinds_reach_waiters_in_other_processes() {
    let dir = Scratch::new("wakeups");
    let table = table(&dir, 64);
    let wd = Watchdog::new("wakeups", Duration::from_secs(120));
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for round in 0..8 {
        // (a) an exclusive holder here, 2 shared waiters in other processes.
        let x = table.try_acquire("w", TTL).unwrap();
        let mut kids: Vec<Kid> = (0..2)
            .map(|i| {
                let mut e = hold_env(&dir, "w", true, 30_000, "release_on_go");
                e.push(("WAIT_MS", s(30_000)));
                Kid::spawn(&wd, &format!("r{round}.{i}"), "sa_hold", &e)
            })
            .collect();
        for k in &mut kids {
            k.expect("START", LONG);
        }
        let head = table.get("w").unwrap().unwrap().slot;
        wait_until("the waiters announced themselves", || {
            common::waiters_announced(&dir.path("t"), head)
        });
        std::thread::sleep(Duration::from_millis(20)); // both asleep, most likely
        let t0 = Instant::now();
        x.release().unwrap();
        for k in &mut kids {
            k.expect("GOT", LONG);
        }
        worst.0 = worst.0.max(t0.elapsed());
        // (b) a drainer here, waiting for the two shared holders in the kids.
        std::thread::scope(|scope| {
            let d = scope.spawn(|| {
                let l =
                    table.acquire_with("w", TTL, &AcquireOptions::new().wait(Some(LONG))).unwrap();
                let at = Instant::now();
                drop(l);
                at
            });
            wait_for_drainer(&table, "w");
            std::thread::sleep(Duration::from_millis(20));
            let _ = std::fs::remove_file(dir.path("go"));
            touch(&dir.path("go"));
            let mut released = Instant::now();
            for k in &mut kids {
                k.expect("RELEASED", LONG);
                released = Instant::now();
            }
            let got = d.join().unwrap();
            worst.1 = worst.1.max(got.saturating_duration_since(released));
        });
        for k in &mut kids {
            k.wait_ok(LONG);
        }
        let _ = std::fs::remove_file(dir.path("go"));
    }
    eprintln!(
        "worst wake-up: shared waiters after an exclusive release {:?}; drainer after the last shared release ≤ {:?}",
        worst.0, worst.1
    );
}
