//! Multi-process tests: real child processes (this test binary re-executed in a role)
//! contend for leases, get killed, stopped and forked, race to create a table, and wake
//! each other up. Each test fails if the invariant it names breaks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{touch, wait_for_waiter, Kid, Scratch, SharedWords, Watchdog};
use shmlease::{Error, LeaseState, LeaseTable, RemoveOptions, TableOptions};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

const LONG: Duration = Duration::from_secs(60);

fn new_table(path: &Path) -> LeaseTable {
    LeaseTable::create(path, &TableOptions::new().capacity(64)).unwrap()
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn hold_env(table: &Path, name: &str, ttl_ms: u64, action: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TABLE", s(table.display())),
        ("NAME", s(name)),
        ("TTL_MS", s(ttl_ms)),
        ("ACTION", s(action)),
    ]
}

fn wait_env(table: &Path, name: &str, ttl_ms: u64, timeout_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("TABLE", s(table.display())),
        ("NAME", s(name)),
        ("TTL_MS", s(ttl_ms)),
        ("TIMEOUT_MS", s(timeout_ms)),
    ]
}

/// Parses a waiter's `GOT token elapsed_ms`.
fn got(kid: &mut Kid) -> (u64, Duration) {
    let line = kid.expect("GOT", LONG);
    let (t, ms) = line.split_once(' ').unwrap();
    (t.parse().unwrap(), Duration::from_millis(ms.parse().unwrap()))
}

/// Invariants 1 and 2 under contention: five processes hammer two names for two
/// seconds. A holder's record in a separate shared file is never overwritten while it
/// holds; each process sees strictly increasing tokens per name; every token is above
/// the one the previous holder recorded; no token is handed out twice. Every other
/// process is forced onto portable-atomic's 128-bit operations (`SHMLEASE_ATOMICS`),
/// so both paths work on the same words at once.
#[test]
fn exclusivity_and_fencing_across_processes() {
    const KIDS: usize = 5;
    let wd = Watchdog::new("exclusivity_and_fencing_across_processes", Duration::from_secs(120));
    let dir = Scratch::new("hammer");
    let path = dir.path("table");
    let records = dir.path("records");
    let go = dir.path("go");
    let table = new_table(&path);
    SharedWords::create(&records, 4);
    let names = ["alpha", "beta"];
    let mut kids: Vec<Kid> = (0..KIDS)
        .map(|i| {
            Kid::spawn(
                &wd,
                &format!("hammer-{i}"),
                "hammer",
                &[
                    ("TABLE", s(path.display())),
                    ("RECORDS", s(records.display())),
                    ("NAMES", names.join(",")),
                    ("RUN_MS", s(2000)),
                    ("GO", s(go.display())),
                    ("INDEX", s(i)),
                    ("ATOMICS", s(if i % 2 == 1 { "portable" } else { "inline" })),
                ],
            )
        })
        .collect();
    let inline_here = shmlease::sync::inline_128();
    for (i, k) in kids.iter_mut().enumerate() {
        k.expect("READY", LONG);
        let inline = k.expect("INLINE128", LONG) == "true";
        // Forced portable on odd kids; the others run what this machine runs.
        assert_eq!(inline, i % 2 == 0 && inline_here, "kid {i}'s 128-bit path");
    }
    touch(&go);
    let mut all: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
    let mut grants_by_kid = Vec::new();
    for (i, k) in kids.iter_mut().enumerate() {
        let result = common::parse_kv(&k.expect("RESULT", LONG));
        assert_eq!(result["violations"], 0, "{}", k.transcript());
        if result["paused"] > 0 {
            eprintln!("{}: {} grants not checked after a 10 s pause", k.label, result["paused"]);
        }
        grants_by_kid.push(result["grants"]);
        for _ in names {
            let line = k.expect("TOKENS", LONG);
            let (name, list) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let name = names.iter().find(|n| **n == name).expect("known name");
            let toks: Vec<u64> =
                list.split(',').filter(|t| !t.is_empty()).map(|t| t.parse().unwrap()).collect();
            assert!(
                toks.windows(2).all(|w| w[0] < w[1]),
                "{name}: tokens of kid {i} not increasing"
            );
            all.entry(name).or_default().extend(toks.into_iter().map(|t| (t, i)));
        }
        k.wait_ok(LONG);
    }
    for name in names {
        let toks = all.get(name).cloned().unwrap_or_default();
        let distinct: BTreeSet<u64> = toks.iter().map(|(t, _)| *t).collect();
        assert_eq!(distinct.len(), toks.len(), "{name}: a token was handed out twice");
        let holders: BTreeSet<usize> = toks.iter().map(|(_, k)| *k).collect();
        assert!(toks.len() >= 10, "{name}: only {} grants in 2 s of hammering", toks.len());
        assert!(holders.len() >= 2, "{name}: only one process ever got it");
        // Nobody holds it now; the last grant's token is the largest handed out.
        let info = table.get(name).unwrap().unwrap();
        assert_ne!(info.state, LeaseState::Held);
        assert_eq!(info.token, *distinct.last().unwrap());
        let records = SharedWords::open(&records);
        let i = names.iter().position(|n| *n == name).unwrap();
        assert_eq!(records.word(2 * i).load(std::sync::atomic::Ordering::SeqCst), info.token);
    }
    eprintln!("grants per process: {grants_by_kid:?}");
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// Invariant 4: a SIGKILLed holder's process-bound lease is reclaimable at once, by a
/// waiter blocked in `acquire` and by a plain `try_acquire`, long before its 60 s TTL,
/// and is counted as a dead-holder reclaim.
#[test]
fn killed_holder_is_reclaimed_before_its_ttl() {
    killed_holder_is_reclaimed(Identity::Best);
}

/// The same, with the holders recording the fallback identity of kernels before 6.9
/// (start time from /proc), which the prober then checks through /proc.
#[test]
fn killed_holder_is_reclaimed_before_its_ttl_under_the_fallback_identity() {
    killed_holder_is_reclaimed(Identity::StartTime);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Identity {
    Best,
    StartTime,
}

fn hold_env_as(
    table: &Path,
    name: &str,
    ttl_ms: u64,
    action: &str,
    identity: Identity,
) -> Vec<(&'static str, String)> {
    let mut env = hold_env(table, name, ttl_ms, action);
    if identity == Identity::StartTime {
        env.push(("IDENTITY", s("start-time")));
    }
    env
}

fn killed_holder_is_reclaimed(identity: Identity) {
    let wd = Watchdog::new(&format!("killed_holder_{identity:?}"), Duration::from_secs(120));
    let dir = Scratch::new(&format!("kill9-{identity:?}"));
    let path = dir.path("table");
    let table = new_table(&path);
    let name = "gpu0";
    let hold_env = |t: &Path, n: &str, ttl: u64, a: &str| hold_env_as(t, n, ttl, a, identity);

    // 1. A blocked waiter in another process gets it once the holder is killed.
    let mut holder = Kid::spawn(&wd, "holder", "hold", &hold_env(&path, name, 60_000, "forever"));
    let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
    match table.try_acquire(name, LONG) {
        Err(Error::Held { token, holder: Some(h), .. }) => {
            assert_eq!(token, token0);
            assert_eq!(h.pid as i32, holder.pid());
            assert!(!h.detached);
            if identity == Identity::StartTime {
                assert!(matches!(h.identity, shmlease::ProcessIdentity::StartTime(_)), "{h:?}");
            }
        }
        other => panic!("a live holder's lease was not refused: {other:?}"),
    }
    let before = table.info().counters.dead_holder_reclaims;
    let mut waiter = Kid::spawn(&wd, "waiter", "wait", &wait_env(&path, name, 10_000, 30_000));
    waiter.expect("WAITING", LONG);
    wait_for_waiter(&table, &path, name, LONG);
    holder.signal(libc::SIGKILL);
    let status = holder.wait(LONG);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    let (token1, waited) = got(&mut waiter);
    waiter.wait_ok(LONG);
    assert!(token1 > token0, "token did not grow: {token1} after {token0}");
    assert!(
        waited < Duration::from_secs(30),
        "the waiter got the lease only after {waited:?}: the dead holder was not noticed"
    );
    let after = table.info().counters.dead_holder_reclaims;
    assert!(after > before, "dead_holder_reclaims did not increase ({before} -> {after})");

    // 2. The test process itself takes it with try_acquire after a kill -9.
    let mut holder = Kid::spawn(&wd, "holder2", "hold", &hold_env(&path, name, 60_000, "forever"));
    let token2: u64 = holder.expect("READY", LONG).parse().unwrap();
    assert!(token2 > token1);
    assert!(matches!(table.try_acquire(name, LONG), Err(Error::Held { .. })));
    holder.signal(libc::SIGKILL);
    holder.wait(LONG);
    let lease =
        table.try_acquire(name, LONG).expect("a dead holder's lease must be reclaimable at once");
    assert!(lease.token() > token2);
    assert_eq!(table.info().counters.dead_holder_reclaims, after + 1);
    lease.release().unwrap();

    // 3. A holder that merely exits (without releasing) is dead too.
    let mut holder = Kid::spawn(&wd, "holder3", "hold", &hold_env(&path, name, 60_000, "exit"));
    let token3: u64 = holder.expect("READY", LONG).parse().unwrap();
    holder.wait_ok(LONG);
    let lease =
        table.try_acquire(name, LONG).expect("an exited holder's lease must be reclaimable");
    assert!(lease.token() > token3);
    lease.release().unwrap();
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// A detached lease is bound to its TTL only: after its process is gone it is still
/// refused until the TTL runs out, then reclaimable (as an expiry, not a dead holder).
#[test]
fn detached_lease_outlives_its_process_until_ttl() {
    let wd =
        Watchdog::new("detached_lease_outlives_its_process_until_ttl", Duration::from_secs(120));
    let dir = Scratch::new("detached");
    let path = dir.path("table");
    let table = new_table(&path);
    let name = "nightly";
    let mut env = hold_env(&path, name, 3_000, "exit");
    env.push(("DETACH", s(1)));
    let mut holder = Kid::spawn(&wd, "holder", "hold", &env);
    let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
    holder.wait_ok(LONG);
    let before = table.info().counters;

    let info = table.get(name).unwrap().unwrap();
    assert_eq!(info.token, token0);
    let h = info.holder.expect("holder recorded");
    assert!(h.detached, "the holder record does not say detached: {h:?}");
    if info.remaining > Duration::from_millis(500) {
        // Well before the TTL: must be refused although the taker's process is gone.
        match table.try_acquire(name, LONG) {
            Err(Error::Held { token, holder, .. }) => {
                assert_eq!(token, token0);
                assert!(holder.is_some_and(|h| h.detached));
            }
            other => panic!("a detached lease was reclaimed before its TTL: {other:?}"),
        }
    } else {
        eprintln!("machine too slow to check the before-TTL refusal ({:?} left)", info.remaining);
    }
    // After the TTL it is grantable (poll: no assumption about how fast we run).
    std::thread::sleep(info.remaining);
    let end = Instant::now() + LONG;
    let lease = loop {
        match table.try_acquire(name, LONG) {
            Ok(l) => break l,
            Err(Error::Held { .. }) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("detached lease not reclaimable after its TTL: {e}"),
        }
    };
    assert!(lease.token() > token0);
    let after = table.info().counters;
    assert_eq!(after.expired_reclaims, before.expired_reclaims + 1);
    assert_eq!(after.dead_holder_reclaims, before.dead_holder_reclaims);
    lease.release().unwrap();
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// Invariant 3 with a real pause: a holder SIGSTOPped past its 200 ms TTL is taken over;
/// after SIGCONT its renew and release report `Error::Lost` (and its keep-alive, when it
/// has one, reports the loss), and the new holder's grant is untouched.
#[test]
fn stopped_holder_past_ttl_is_lost_after_sigcont() {
    let wd =
        Watchdog::new("stopped_holder_past_ttl_is_lost_after_sigcont", Duration::from_secs(120));
    let dir = Scratch::new("sigstop");
    let path = dir.path("table");
    let table = new_table(&path);
    for keepalive in [false, true] {
        let name = if keepalive { "with-keepalive" } else { "plain" };
        let go = dir.path(&format!("go-{name}"));
        let mut env = hold_env(&path, name, 200, "stale");
        env.push(("GO", s(go.display())));
        env.push(("KEEPALIVE", s(keepalive as u8)));
        let mut holder = Kid::spawn(&wd, name, "hold", &env);
        let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
        holder.signal(libc::SIGSTOP);
        holder.wait_state(b'T', LONG);
        // A stopped process is alive: no early reclaim; it is taken once its TTL passes.
        let end = Instant::now() + LONG;
        let lease = loop {
            match table.try_acquire(name, LONG) {
                Ok(l) => break l,
                Err(Error::Held { .. }) if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("{name}: not reclaimable after the TTL: {e}"),
            }
        };
        assert!(lease.token() > token0);
        holder.signal(libc::SIGCONT);
        touch(&go);
        let status = holder.wait(LONG);
        assert_eq!(
            status.code(),
            Some(0),
            "{name}: stale holder check failed\n{}",
            holder.transcript()
        );
        assert!(lease.is_valid(), "{name}: the stale holder disturbed the new grant");
        let info = table.get(name).unwrap().unwrap();
        assert_eq!((info.token, info.state), (lease.token(), LeaseState::Held));
        lease.release().unwrap();
    }
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// Creation race: eight processes call `open_or_create` on the same fresh path at the
/// same moment; all succeed and all use one and the same table.
#[test]
fn concurrent_open_or_create_yields_one_table() {
    const KIDS: usize = 8;
    let wd = Watchdog::new("concurrent_open_or_create_yields_one_table", Duration::from_secs(180));
    let dir = Scratch::new("race");
    for round in 0..3 {
        let path = dir.path(&format!("table-{round}"));
        let go = dir.path(&format!("go-{round}"));
        let mut kids: Vec<Kid> = (0..KIDS)
            .map(|i| {
                Kid::spawn(
                    &wd,
                    &format!("creator-{round}-{i}"),
                    "race_create",
                    &[("TABLE", s(path.display())), ("GO", s(go.display())), ("INDEX", s(i))],
                )
            })
            .collect();
        for k in &mut kids {
            k.expect("READY", LONG);
        }
        touch(&go);
        let mut seen = BTreeSet::new();
        let mut tokens = BTreeMap::new();
        for (i, k) in kids.iter_mut().enumerate() {
            let r = k.expect("RESULT", LONG);
            k.wait_ok(LONG);
            let f: Vec<u64> = r.split(' ').map(|x| x.parse().unwrap()).collect();
            seen.insert((f[0], f[1], f[2]));
            tokens.insert(format!("proc-{i}"), f[3]);
        }
        assert_eq!(seen.len(), 1, "round {round}: processes saw different tables: {seen:?}");
        let table = LeaseTable::open(&path).unwrap();
        assert_eq!(table.capacity(), 64);
        let list = table.list().unwrap();
        let listed: BTreeMap<String, u64> = list
            .iter()
            .filter(|l| l.state == LeaseState::Held)
            .map(|l| (l.name.clone(), l.token))
            .collect();
        assert_eq!(listed, tokens, "round {round}: list() does not show every process's lease");
        assert_eq!(table.info().names, KIDS as u32);
        drop(table);
        // The children's detached leases outlive them.
        LeaseTable::remove_with(&path, &RemoveOptions::new().force(true)).unwrap();
    }
}

/// A blocked `acquire` in one process is woken by a release in another: the waiter gets
/// the lease long before the holder's TTL (60 s) would end, and before its own 30 s
/// timeout. The holder is detached, so the waiter has no liveness polling to fall back
/// on: only the wake-up can get it there.
#[test]
fn blocked_acquire_is_woken_by_release_in_another_process() {
    let wd = Watchdog::new("blocked_acquire_is_woken_by_release", Duration::from_secs(120));
    let dir = Scratch::new("wake-release");
    let path = dir.path("table");
    let go = dir.path("go");
    let table = new_table(&path);
    let name = "db-migration";
    let mut env = hold_env(&path, name, 60_000, "release_on_go");
    env.push(("DETACH", s(1)));
    env.push(("GO", s(go.display())));
    let mut holder = Kid::spawn(&wd, "holder", "hold", &env);
    let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
    let mut waiter = Kid::spawn(&wd, "waiter", "wait", &wait_env(&path, name, 10_000, 30_000));
    waiter.expect("WAITING", LONG);
    wait_for_waiter(&table, &path, name, LONG);
    touch(&go);
    holder.expect("RELEASED", LONG);
    holder.wait_ok(LONG);
    let (token1, waited) = got(&mut waiter);
    waiter.wait_ok(LONG);
    assert!(token1 > token0);
    assert!(waited < Duration::from_secs(30), "waiter got the lease only after {waited:?}");
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// A revocation from a third process (this one) wakes a waiter blocked behind a
/// detached 60 s lease held by a process that has exited.
#[test]
fn blocked_acquire_is_woken_by_revoke_from_a_third_process() {
    let wd = Watchdog::new("blocked_acquire_is_woken_by_revoke", Duration::from_secs(120));
    let dir = Scratch::new("wake-revoke");
    let path = dir.path("table");
    let table = new_table(&path);
    let name = "leader";
    let mut env = hold_env(&path, name, 60_000, "exit");
    env.push(("DETACH", s(1)));
    let mut holder = Kid::spawn(&wd, "holder", "hold", &env);
    let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
    holder.wait_ok(LONG);
    let revocations = table.info().counters.revocations;
    let mut waiter = Kid::spawn(&wd, "waiter", "wait", &wait_env(&path, name, 10_000, 30_000));
    waiter.expect("WAITING", LONG);
    wait_for_waiter(&table, &path, name, LONG);
    assert_eq!(table.revoke(name).unwrap(), Some(token0));
    let (token1, waited) = got(&mut waiter);
    waiter.wait_ok(LONG);
    assert!(token1 > token0);
    assert!(waited < Duration::from_secs(30), "waiter got the lease only after {waited:?}");
    assert_eq!(table.info().counters.revocations, revocations + 1);
    // The revoked detached grant is lost for anyone presenting its token.
    assert!(matches!(table.renew(name, token0, LONG), Err(Error::Lost { .. })));
    assert!(matches!(table.release(name, token0), Err(Error::Lost { .. })));
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// A `fork()`ed child that inherits a `Lease` can read it but not renew or release it
/// (`BoundToProcess`), and does not release it when dropping it.
#[test]
fn forked_child_does_not_release_parents_lease() {
    let wd = Watchdog::new("forked_child_does_not_release_parents_lease", Duration::from_secs(60));
    let dir = Scratch::new("fork");
    let path = dir.path("table");
    let table = new_table(&path);
    let mut kid =
        Kid::spawn(&wd, "forker", "fork", &[("TABLE", s(path.display())), ("NAME", s("forked"))]);
    kid.expect("DONE", LONG);
    kid.wait_ok(LONG);
    let info = table.get("forked").unwrap().unwrap();
    assert_eq!(info.state, LeaseState::Free);
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

fn churners(wd: &Watchdog, path: &Path, names: &[String], round: u64, run_ms: u64) -> Vec<Kid> {
    (0..3)
        .map(|i| {
            Kid::spawn(
                wd,
                &format!("churn-{round}-{i}"),
                "churn",
                &[
                    ("TABLE", s(path.display())),
                    ("NAMES", names.join(",")),
                    ("SEED", s(round * 10 + i + 1)),
                    ("TTL_MS", s(3000)),
                    ("RUN_MS", s(run_ms)),
                    // One of the three records the fallback identity (start time).
                    ("IDENTITY", s(if i == 1 { "start-time" } else { "best" })),
                ],
            )
        })
        .collect()
}

/// Invariant 6 under contention, without crashes: three processes churning through
/// more names than the table has slots (so names are bound and unbound all the time)
/// never see an error other than Held, TableFull or Lost (they revoke each other).
#[test]
fn churn_through_more_names_than_slots() {
    let wd = Watchdog::new("churn_through_more_names_than_slots", Duration::from_secs(120));
    let dir = Scratch::new("churn");
    let path = dir.path("table");
    LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let names: Vec<String> = (0..14).map(|i| format!("n{i}")).collect();
    let mut kids = churners(&wd, &path, &names, 0, 2000);
    for k in &mut kids {
        k.expect("DONE", LONG);
        k.wait_ok(LONG);
        assert!(!k.transcript().contains("@@ERR"), "unexpected error\n{}", k.transcript());
    }
    let table = LeaseTable::open(&path).unwrap();
    let info = table.info();
    assert!(info.counters.unbinds > 0, "no slot was ever reused: {info:?}");
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// Invariant 4 (and 6): processes churning through more names than the table has slots
/// (binding, unbinding, granting, releasing, keeping) are SIGKILLed at random moments,
/// round after round. Afterwards the table still works: it opens, every name is
/// acquirable — at once when its holder is provably dead, else within its 3 s TTL (a
/// process killed between its grant and writing its holder record cannot be proven
/// dead) — tokens keep growing per name, and no process saw an error other than Held,
/// TableFull or Lost.
#[test]
fn kill9_at_random_points_leaves_a_usable_table() {
    let wd =
        Watchdog::new("kill9_at_random_points_leaves_a_usable_table", Duration::from_secs(300));
    let dir = Scratch::new("kill9-churn");
    let path = dir.path("table");
    LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let names: Vec<String> = (0..14).map(|i| format!("n{i}")).collect();
    let mut rng = common::Rng::new(0x0c0f_fee0);
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut unprovable = 0;
    for round in 0..15u64 {
        let mut kids = churners(&wd, &path, &names, round, 60_000);
        for k in &mut kids {
            k.expect("READY", LONG);
        }
        let mut dead = BTreeSet::new();
        for k in &mut kids {
            std::thread::sleep(Duration::from_micros(rng.below(60_000)));
            k.signal(libc::SIGKILL);
            dead.insert(k.pid() as u32);
        }
        for k in &mut kids {
            k.wait(LONG);
            assert!(
                !k.transcript().contains("@@ERR"),
                "round {round}: a churning process saw an unexpected error\n{}",
                k.transcript()
            );
        }
        let table = LeaseTable::open(&path).expect("the table must still open");
        for name in &names {
            let before = table.get(name).unwrap().map_or(0, |i| i.token);
            let lease = match table.try_acquire(name, LONG) {
                Ok(l) => l,
                Err(Error::Held { holder: Some(h), .. }) if dead.contains(&h.pid) => {
                    panic!("round {round}: {name} is held by dead pid {}: not reclaimed", h.pid)
                }
                Err(Error::Held { holder: None, .. }) => {
                    unprovable += 1;
                    table
                        .acquire(name, LONG, Some(Duration::from_secs(30)))
                        .unwrap_or_else(|e| panic!("round {round}: {name} not reclaimable: {e:?}"))
                }
                Err(e) => panic!("round {round}: {name} not acquirable: {e:?}"),
            };
            let prev = last.get(name).copied().unwrap_or(0).max(before);
            assert!(
                lease.token() > prev,
                "round {round}: {name}: token {} after {prev}",
                lease.token()
            );
            last.insert(name.clone(), lease.token());
            lease.release().unwrap();
        }
        let info = table.info();
        assert_eq!(info.held, 0, "round {round}: {info:?}");
        assert!(info.names <= 8);
    }
    eprintln!("{unprovable} leases had no holder record and waited for their TTL");
    LeaseTable::remove(&path).unwrap();
}

/// Invariant 4, crash in the middle of unbinding, made deterministic: a process that
/// unbinds an idle name to reuse its slot first retires the slot (grant word deadline
/// = UNBOUND) and then tombstones it (binding word). Killed between the two, it leaves
/// the slot still bound to the name with an UNBOUND grant. Every other process must
/// still be able to use that name (and tokens must keep growing).
#[test]
fn name_left_mid_unbind_by_a_killed_process_stays_usable() {
    let dir = Scratch::new("mid-unbind");
    let path = dir.path("table");
    let table = new_table(&path);
    table.try_acquire("a", LONG).unwrap().release().unwrap();
    let info = table.get("a").unwrap().unwrap();
    let grant = common::HEADER_SIZE + info.slot as u64 * common::SLOT_SIZE;
    // What protocol::retire's CAS leaves: deadline UNBOUND (2), token unchanged.
    common::write_u64(&path, grant, 2);
    assert_eq!(common::read_u64(&path, grant + 8), info.token);
    let lease = table.try_acquire("a", LONG).expect("a name left mid-unbind must stay usable");
    assert!(lease.token() > info.token);
    lease.release().unwrap();
    assert_eq!(table.revoke("a").unwrap(), None);
    let again = LeaseTable::open(&path).unwrap();
    again.try_acquire("a", LONG).unwrap().release().unwrap();
}

/// Invariant 4, crash in the middle of binding, made deterministic: a binder killed
/// after marking a slot BINDING leaves it so; the name (and the slot) stay usable and
/// the name's tokens keep growing.
#[test]
fn name_left_mid_bind_by_a_killed_process_stays_usable() {
    let dir = Scratch::new("mid-bind");
    let path = dir.path("table");
    let table = new_table(&path);
    table.try_acquire("a", LONG).unwrap().release().unwrap();
    let info = table.get("a").unwrap().unwrap();
    let bind = common::HEADER_SIZE + info.slot as u64 * common::SLOT_SIZE + 32;
    let word = common::read_u64(&path, bind);
    assert_eq!(word & 3, 2, "expected a BOUND slot");
    common::write_u64(&path, bind, (word & !3) | 1); // BINDING
    assert_eq!(table.get("a").unwrap(), None);
    let lease = table.try_acquire("a", LONG).expect("a name left mid-bind must stay usable");
    assert!(lease.token() > info.token);
    lease.release().unwrap();
    let again = LeaseTable::open(&path).unwrap();
    again.try_acquire("a", LONG).unwrap().release().unwrap();
    assert_eq!(again.list().unwrap().len(), 1);
}

/// Invariant 4 for creation: a process SIGKILLed at a random point while creating tables
/// never leaves a half-initialised table at a table's path: every table that appeared
/// opens and works, and the path it was creating when killed can be created or opened.
#[test]
fn kill9_during_creation_never_leaves_a_broken_table() {
    let wd = Watchdog::new(
        "kill9_during_creation_never_leaves_a_broken_table",
        Duration::from_secs(300),
    );
    let dir = Scratch::new("kill9-create");
    let mut rng = common::Rng::new(0xc4ea_7e00);
    for round in 0..8 {
        let sub = dir.path(&format!("round-{round}"));
        std::fs::create_dir(&sub).unwrap();
        let mut kid = Kid::spawn(
            &wd,
            &format!("creator-{round}"),
            "create_loop",
            &[("DIR", s(sub.display()))],
        );
        kid.expect("READY", LONG);
        std::thread::sleep(Duration::from_micros(rng.below(50_000)));
        kid.signal(libc::SIGKILL);
        kid.wait(LONG);
        assert!(!kid.transcript().contains("@@ERR"), "{}", kid.transcript());
        let mut created = 0;
        for entry in std::fs::read_dir(&sub).unwrap() {
            let entry = entry.unwrap();
            let file_name = entry.file_name().into_string().unwrap();
            if file_name.starts_with('.') {
                continue; // a fallback temporary, never at a table's path
            }
            let table = LeaseTable::open(entry.path())
                .unwrap_or_else(|e| panic!("round {round}: {file_name} is broken: {e:?}"));
            assert_eq!(table.capacity(), 2048);
            table.try_acquire("x", LONG).unwrap().release().unwrap();
            created += 1;
        }
        assert!(created >= 1);
        // The next path (the one it was working on, perhaps) is usable.
        let next = sub.join(format!("t-{created}"));
        let table = LeaseTable::open_or_create(&next, &TableOptions::new().capacity(2048)).unwrap();
        table.try_acquire("x", LONG).unwrap().release().unwrap();
    }
}

/// A waiter blocked behind a detached lease (no holder to probe, nobody releasing) is
/// woken by the lease's expiry: it gets the lease after the deadline, not before, and
/// without running into its own 30 s timeout.
#[test]
fn blocked_acquire_wakes_at_expiry_of_a_detached_lease() {
    let wd = Watchdog::new("blocked_acquire_wakes_at_expiry", Duration::from_secs(120));
    let dir = Scratch::new("wake-expiry");
    let path = dir.path("table");
    let table = new_table(&path);
    let name = "cron";
    let mut env = hold_env(&path, name, 1_500, "exit");
    env.push(("DETACH", s(1)));
    let mut holder = Kid::spawn(&wd, "holder", "hold", &env);
    let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
    holder.wait_ok(LONG);
    let (t0, remaining) = (Instant::now(), table.get(name).unwrap().unwrap().remaining);
    let mut waiter = Kid::spawn(&wd, "waiter", "wait", &wait_env(&path, name, 10_000, 30_000));
    let (token1, waited) = got(&mut waiter);
    let seen_after = t0.elapsed();
    waiter.wait_ok(LONG);
    assert!(token1 > token0);
    assert!(
        seen_after >= remaining,
        "the waiter got the lease {seen_after:?} after a check that found {remaining:?} left"
    );
    assert!(waited < Duration::from_secs(30), "waiter got the lease only after {waited:?}");
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// A keep-alive holds a short (1 s) lease against other processes for 2.5 TTLs,
/// and reports at once when another process revokes it.
#[test]
fn keep_alive_holds_against_other_processes_and_reports_revocation() {
    let wd = Watchdog::new("keep_alive_holds_against_other_processes", Duration::from_secs(120));
    let dir = Scratch::new("keepalive");
    let path = dir.path("table");
    let table = new_table(&path);
    let name = "worker";
    let mut env = hold_env(&path, name, 1_000, "watch");
    env.push(("KEEPALIVE", s(1)));
    let mut holder = Kid::spawn(&wd, "holder", "hold", &env);
    let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
    let end = Instant::now() + Duration::from_millis(2500);
    let mut tries = 0;
    while Instant::now() < end {
        match table.try_acquire(name, LONG) {
            Err(Error::Held { token, .. }) => assert_eq!(token, token0),
            other => panic!("a kept-alive lease was taken: {other:?}"),
        }
        tries += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(tries > 0);
    assert_eq!(table.revoke(name).unwrap(), Some(token0));
    assert_eq!(holder.expect("LOST", LONG), "Revoked");
    holder.wait_ok(LONG);
    let lease = table.try_acquire(name, LONG).unwrap();
    assert!(lease.token() > token0);
    lease.release().unwrap();
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// Time namespaces: a process whose CLOCK_MONOTONIC runs 1000 s ahead (a container with
/// its own time namespace) must see the host's 60 s lease as held for at most 60 s (not
/// as long expired — that would break exclusivity), and the host must see its 60 s
/// lease as held for at most 60 s (not for 1060 s).
#[test]
fn process_in_another_time_namespace_agrees_on_deadlines() {
    let wd = Watchdog::new("process_in_another_time_namespace", Duration::from_secs(120));
    let dir = Scratch::new("timens");
    let path = dir.path("table");
    let go = dir.path("go");
    let table = new_table(&path);
    let ttl = Duration::from_secs(60);
    let host = table.try_acquire("host-held", ttl).unwrap();
    let mut kid = Kid::spawn(
        &wd,
        "timens",
        "timens",
        &[
            ("TABLE", s(path.display())),
            ("OFFSET_S", s(1000)),
            ("INNER", s("timens_probe")),
            ("TTL_MS", s(ttl.as_millis())),
            ("HOST_HELD", s("host-held")),
            ("NS_HELD", s("ns-held")),
            ("GO", s(go.display())),
        ],
    );
    let (key, offsets) = kid.expect_any(&["OFFSETS", "NO_TIMENS"], LONG);
    if key == "NO_TIMENS" {
        kid.wait(LONG);
        eprintln!("skipped: cannot create a time namespace here: {offsets}");
        return;
    }
    assert!(offsets.starts_with("monotonic 1000"), "inner child not in the namespace: {offsets}");
    let token: u64 = kid.expect("READY", LONG).parse().unwrap();
    let info = table.get("ns-held").unwrap().unwrap();
    assert_eq!((info.token, info.state), (token, LeaseState::Held));
    assert!(info.remaining <= ttl, "the host sees {:?} left of a {ttl:?} lease", info.remaining);
    assert!(matches!(table.try_acquire("ns-held", ttl), Err(Error::Held { .. })));
    touch(&go);
    kid.wait_ok(LONG);
    assert!(host.is_valid());
    host.release().unwrap();
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// Invariant 5 with real concurrency: while five processes hammer a table, this process
/// scribbles garbage over its slots. The hammering processes may see errors, lost and
/// even stolen leases (garbage can do that), but none of them panics, crashes or hangs.
#[test]
fn garbage_from_another_process_never_crashes_its_users() {
    use std::os::unix::fs::FileExt;
    let wd = Watchdog::new("garbage_from_another_process", Duration::from_secs(240));
    let dir = Scratch::new("scribble");
    let path = dir.path("table");
    let records = dir.path("records");
    let go = dir.path("go");
    drop(LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap());
    SharedWords::create(&records, 12);
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut kids: Vec<Kid> = (0..5)
        .map(|i| {
            Kid::spawn(
                &wd,
                &format!("victim-{i}"),
                "hammer",
                &[
                    ("TABLE", s(path.display())),
                    ("RECORDS", s(records.display())),
                    ("NAMES", names.join(",")),
                    ("RUN_MS", s(2000)),
                    ("WAIT_MS", s(300)),
                    ("GO", s(go.display())),
                    ("INDEX", s(i)),
                ],
            )
        })
        .collect();
    for k in &mut kids {
        k.expect("READY", LONG);
    }
    touch(&go);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut rng = common::Rng::new(0x5c21_bb1e);
    let end = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < end {
        let slot = 256 + rng.below(8) * 128;
        let offset = slot + rng.below(16) * 8;
        let value = match rng.below(5) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 + rng.below(3),
            3 => rng.below(1 << 45),
            _ => rng.next(),
        };
        file.write_all_at(&value.to_ne_bytes(), offset).unwrap();
        std::thread::sleep(Duration::from_micros(200 + rng.below(2000)));
    }
    for k in &mut kids {
        let status = k.wait(Duration::from_secs(120));
        assert!(
            matches!(status.code(), Some(0 | 3)),
            "{}: status {status:?} (a panic is 101, a crash a signal)\n{}",
            k.label,
            k.transcript()
        );
        assert!(k.transcript().contains("@@RESULT"), "{}", k.transcript());
    }
}
