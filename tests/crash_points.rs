//! Crash at every step: a child process kills itself (SIGKILL, via the library's debug-only
//! crash points, `shmlease::fault`) at step k of create, clock rebase, name binding
//! (into an empty slot, and by evicting an idle name), grant (of a free lease, and after
//! waiting), renew, release, revoke and a release request — for every k, until the
//! operation completes.
//! After each crash another process must be able to open the table, take the lease the
//! dead one held or touched (at once when the dead holder is provable, else within its
//! TTL), get a token above every token handed out before, and still use every slot.
//!
//! Crash points exist only in debug builds, hence the `cfg`.

#![cfg(debug_assertions)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{fake_reboot, wait_for_waiter, Kid, Scratch, Watchdog};
use shmlease::fault::{self, Op};
use shmlease::{AcquireOptions, Error, LeaseKind, LeaseState, LeaseTable, TableOptions};

/// Entry point of every child process: performs `OP` with its `STEP`-th crash point
/// armed (see `crash_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    match std::env::var(common::ROLE).as_deref() {
        Ok("waiter") => waiter_child(),
        _ => crash_child(),
    }
}

const LONG: Duration = Duration::from_secs(60);
/// TTL of the leases children take: short, so that grants left without a holder record
/// (reclaimable by TTL only) cost little to wait out.
const TTL: Duration = Duration::from_millis(400);
/// A TTL the library grants with the coarse clock when the name is free: a tenth more
/// than the shortest (`common::coarse_clock_ttl`), 1.13 s where a tick is 4 ms.
fn fast_ttl() -> Duration {
    common::coarse_clock_ttl() * 11 / 10
}
/// More crash points than any operation has: the walk stops when the operation completes.
const MAX_STEPS: u32 = 40;
const CAPACITY: u32 = 8;
const NAME: &str = "victim";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// `LeaseTable::create` of a new table.
    Create,
    /// Opening a table after a (simulated) reboot, which rebases its clock.
    Rebase,
    /// Binding a new name into an empty slot (then granting it).
    BindEmpty,
    /// Binding a new name into a full table, evicting an idle name (then granting it).
    BindEvict,
    /// Granting a bound, free lease.
    GrantFree,
    /// Waiting for a lease the parent holds, then being granted it on release.
    GrantAfterWait,
    /// Renewing a held lease.
    Renew,
    /// Releasing a held lease.
    Release,
    /// Revoking the parent's detached lease while a third process waits for it.
    Revoke,
    /// Asking the holder of the parent's detached lease to release it.
    Request,
    /// The first permit of a fresh name with permits: binding its head and a seat.
    PermitBind,
    /// A permit of a name made a group just before (its head bound): turning the head
    /// into a group, taking a token from it, granting a seat.
    PermitGrant,
    /// A shared grant of a name bound just before: making it shared, taking a token
    /// from its head, granting a seat.
    SharedGrant,
    /// A fair acquirer taking its place in the queue of a name the parent holds.
    FairPlace,
    /// `GrantFree` with a TTL long enough for the coarse-clock fast path.
    GrantFreeFast,
    /// A permit on the fast path: the name a group already, the seat this process
    /// looks at first bound (by its own grant and release before the crash point is
    /// armed) and free.
    PermitGrantFast,
    /// A shared grant on the fast path, set up as `PermitGrantFast`.
    SharedGrantFast,
}

impl Scenario {
    fn op(self) -> Op {
        match self {
            Scenario::Create => Op::Create,
            Scenario::Rebase => Op::Rebase,
            Scenario::BindEmpty | Scenario::BindEvict | Scenario::PermitBind => Op::Bind,
            Scenario::PermitGrant | Scenario::SharedGrant | Scenario::FairPlace => Op::Grant,
            Scenario::GrantFree | Scenario::GrantAfterWait => Op::Grant,
            Scenario::GrantFreeFast | Scenario::PermitGrantFast | Scenario::SharedGrantFast => {
                Op::Grant
            }
            Scenario::Renew => Op::Renew,
            Scenario::Release => Op::Release,
            Scenario::Revoke => Op::Revoke,
            Scenario::Request => Op::Request,
        }
    }

    fn parse(s: &str) -> Scenario {
        Scenario::ALL.into_iter().find(|c| format!("{c:?}") == s).expect("known scenario")
    }

    /// The TTL the child asks for.
    fn ttl(self) -> Duration {
        match self {
            Scenario::GrantFreeFast | Scenario::PermitGrantFast | Scenario::SharedGrantFast => {
                fast_ttl()
            }
            _ => TTL,
        }
    }

    const ALL: [Scenario; 17] = [
        Scenario::GrantFreeFast,
        Scenario::PermitGrantFast,
        Scenario::SharedGrantFast,
        Scenario::SharedGrant,
        Scenario::FairPlace,
        Scenario::PermitBind,
        Scenario::PermitGrant,
        Scenario::Create,
        Scenario::Rebase,
        Scenario::BindEmpty,
        Scenario::BindEvict,
        Scenario::GrantFree,
        Scenario::GrantAfterWait,
        Scenario::Renew,
        Scenario::Release,
        Scenario::Revoke,
        Scenario::Request,
    ];
}

fn env(key: &str) -> String {
    std::env::var(format!("SHMLEASE_IT_{key}")).unwrap_or_else(|_| panic!("{key} not set"))
}

/// Prints a report line for the parent.
fn report(key: &str, value: impl std::fmt::Display) {
    println!("{}{key} {value}", common::MARK);
}

/// The child: sets up what the operation needs, arms the crash point, performs the
/// operation, and reports `DONE` if it completed (the step was past its last point).
/// Leases it holds at the end are left held, for the parent to reclaim from the dead.
fn crash_child() {
    let scenario = Scenario::parse(&env("SCENARIO"));
    let step: u32 = env("STEP").parse().unwrap();
    let path = env("TABLE");
    // `OP=GrantFast`: only the fast path's grant CAS has points (see `fast_path_taken`).
    let op = match std::env::var("SHMLEASE_IT_OP").as_deref() {
        Ok("GrantFast") => Op::GrantFast,
        _ => scenario.op(),
    };
    let arm = || fault::arm(op, step);
    let token = match scenario {
        Scenario::Create => {
            arm();
            LeaseTable::create(&path, &TableOptions::new().capacity(CAPACITY)).unwrap();
            0
        }
        Scenario::Rebase => {
            arm();
            LeaseTable::open(&path).unwrap();
            0
        }
        Scenario::BindEmpty
        | Scenario::BindEvict
        | Scenario::GrantFree
        | Scenario::GrantFreeFast
        | Scenario::GrantAfterWait => {
            let table = LeaseTable::open(&path).unwrap();
            arm();
            let lease = if scenario == Scenario::GrantAfterWait {
                table.acquire(NAME, TTL, Some(LONG))
            } else {
                table.try_acquire(NAME, scenario.ttl())
            };
            let lease = lease.unwrap();
            let token = lease.token();
            std::mem::forget(lease);
            token
        }
        Scenario::Renew | Scenario::Release => {
            let table = LeaseTable::open(&path).unwrap();
            let lease = table.try_acquire(NAME, TTL).unwrap();
            let token = lease.token();
            report("HELD", token);
            arm();
            if scenario == Scenario::Renew {
                lease.renew(TTL).unwrap();
                std::mem::forget(lease);
            } else {
                lease.release().unwrap();
            }
            token
        }
        Scenario::Revoke => {
            let table = LeaseTable::open(&path).unwrap();
            arm();
            table.revoke(NAME).unwrap().expect("the parent's lease was held")
        }
        Scenario::Request => {
            let table = LeaseTable::open(&path).unwrap();
            arm();
            table.request_release(NAME, None).unwrap().expect("the parent's lease was held")
        }
        Scenario::SharedGrant => {
            let table = LeaseTable::open(&path).unwrap();
            arm();
            let lease = table.acquire_with(NAME, TTL, &AcquireOptions::new().shared(true)).unwrap();
            let token = lease.token();
            std::mem::forget(lease);
            token
        }
        Scenario::FairPlace => {
            let table = LeaseTable::open(&path).unwrap();
            arm();
            let fair = AcquireOptions::new().fair(true).wait(Some(LONG));
            let lease = table.acquire_with(NAME, TTL, &fair).unwrap();
            let token = lease.token();
            std::mem::forget(lease);
            token
        }
        Scenario::PermitBind | Scenario::PermitGrant => {
            let table = LeaseTable::open(&path).unwrap();
            arm();
            let lease = table.acquire_with(NAME, TTL, &two_permits()).unwrap();
            let token = lease.token();
            std::mem::forget(lease);
            token
        }
        Scenario::PermitGrantFast | Scenario::SharedGrantFast => {
            let table = LeaseTable::open(&path).unwrap();
            let opts = if scenario == Scenario::SharedGrantFast {
                AcquireOptions::new().shared(true)
            } else {
                two_permits()
            };
            // Binds the seat this process looks at first; the grant after it is the one
            // the fast path makes, in that seat.
            let first = table.acquire_with(NAME, TTL, &opts).unwrap();
            report("HELD", first.token());
            first.release().unwrap();
            arm();
            let lease = table.acquire_with(NAME, scenario.ttl(), &opts).unwrap();
            let token = lease.token();
            std::mem::forget(lease);
            token
        }
    };
    report("DONE", token);
}

/// A process waiting for `NAME`; reports `GOT token` when it has it, then releases it.
fn waiter_child() {
    let table = LeaseTable::open(env("TABLE")).unwrap();
    let lease = table.acquire(NAME, LONG, Some(LONG)).unwrap();
    report("GOT", lease.token());
    lease.release().unwrap();
}

fn two_permits() -> AcquireOptions {
    AcquireOptions::new().permits(2).unwrap()
}

fn new_table(path: &Path) -> LeaseTable {
    LeaseTable::create(path, &TableOptions::new().capacity(CAPACITY)).unwrap()
}

/// Takes and releases `name`; returns the token.
fn churn(table: &LeaseTable, name: &str) -> u64 {
    let lease = table.try_acquire(name, LONG).unwrap_or_else(|e| panic!("{name}: {e}"));
    let token = lease.token();
    lease.release().unwrap();
    token
}

/// One crash of one scenario at step `step`. Returns `false` once the operation
/// completed without reaching the step.
fn crash_once(wd: &Watchdog, scenario: Scenario, step: u32) -> bool {
    crash_once_at(wd, scenario, step, None)
}

/// [`crash_once`], with the crash point counted among `op`'s points when given.
fn crash_once_at(wd: &Watchdog, scenario: Scenario, step: u32, op: Option<Op>) -> bool {
    let what = format!("{scenario:?} step {step}");
    let dir = Scratch::new(&format!("crash-{scenario:?}-{step}"));
    let path = dir.path("table");
    let table = match scenario {
        Scenario::Create => None,
        _ => Some(new_table(&path)),
    };
    // The highest token handed out for NAME that the parent knows of.
    let mut seen = 0u64;
    // A lease the parent holds while the child runs.
    let mut parent_lease = None;
    let mut waiter = None;
    match (scenario, &table) {
        (Scenario::Rebase, Some(t)) => {
            // A lease held far into the future, then a reboot: the deadline is void.
            let lease = t.try_acquire(NAME, Duration::from_secs(3600)).unwrap();
            seen = lease.token();
            lease.detach().unwrap();
            fake_reboot(&path, 0);
        }
        (Scenario::BindEvict, Some(t)) => {
            for i in 0..CAPACITY {
                churn(t, &format!("idle-{i}"));
            }
        }
        (Scenario::GrantFree | Scenario::GrantFreeFast, Some(t)) => seen = churn(t, NAME),
        (Scenario::PermitGrant | Scenario::SharedGrant, Some(t)) => seen = churn(t, NAME),
        (Scenario::FairPlace, Some(t)) => {
            let lease = t.try_acquire(NAME, LONG).unwrap();
            seen = lease.token();
            parent_lease = Some(lease);
        }
        (Scenario::GrantAfterWait, Some(t)) => {
            let lease = t.try_acquire(NAME, LONG).unwrap();
            seen = lease.token();
            parent_lease = Some(lease);
        }
        (Scenario::Request, Some(t)) => {
            let lease = t.try_acquire(NAME, Duration::from_secs(3600)).unwrap();
            seen = lease.token();
            lease.detach().unwrap();
        }
        (Scenario::Revoke, Some(t)) => {
            // Detached: a waiter cannot watch a detached holder's liveness, so only a
            // wake-up (or its own periodic look) gets it out of its sleep.
            let lease = t.try_acquire(NAME, Duration::from_secs(3600)).unwrap();
            seen = lease.token();
            lease.detach().unwrap();
            let kid = Kid::spawn(wd, "waiter", "waiter", &[("TABLE", path.display().to_string())]);
            wait_for_waiter(t, &path, NAME, LONG);
            waiter = Some(kid);
        }
        _ => {}
    }

    let mut kid = Kid::spawn(
        wd,
        &what,
        "crash",
        &[
            ("TABLE", path.display().to_string()),
            ("SCENARIO", format!("{scenario:?}")),
            ("STEP", step.to_string()),
            ("OP", op.map_or(String::new(), |o| format!("{o:?}"))),
        ],
    );
    if let (Scenario::FairPlace, Some(t), true) = (scenario, &table, parent_lease.is_some()) {
        // Release once the child has its place (or has died trying).
        let end = Instant::now() + LONG;
        while t.get(NAME).unwrap().unwrap().queue.is_empty() && kid.try_status().is_none() {
            assert!(Instant::now() < end, "{what}: the child never queued");
            std::thread::sleep(Duration::from_millis(1));
        }
        parent_lease.take().unwrap().release().unwrap();
    }
    if let (Scenario::GrantAfterWait, Some(t), Some(lease)) =
        (scenario, &table, parent_lease.take())
    {
        // Release once the child waits (or has died trying).
        let slot = t.get(NAME).unwrap().unwrap().slot;
        let end = Instant::now() + LONG;
        while !common::waiters_announced(&path, slot) && kid.try_status().is_none() {
            assert!(Instant::now() < end, "{what}: the child never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        lease.release().unwrap();
    }
    let status = kid.wait(LONG);
    let completed = match (status.code(), status.signal()) {
        (Some(0), _) => true,
        (None, Some(libc::SIGKILL)) => false,
        _ => panic!("{what}: child ended with {status:?}\n{}", kid.transcript()),
    };
    for line in kid.lines_so_far() {
        for key in ["HELD", "DONE"] {
            if let Some(v) = line.strip_prefix(&format!("{}{key} ", common::MARK)) {
                seen = seen.max(v.trim().parse().unwrap());
            }
        }
    }

    match scenario {
        Scenario::Create => {
            // Never a half-made table: either nothing, or a table that opens.
            if path.exists() {
                LeaseTable::open(&path)
                    .unwrap_or_else(|e| panic!("{what}: left a file that is not a table: {e}"));
            }
            let names: Vec<_> = std::fs::read_dir(&dir.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "table")
                .collect();
            assert!(names.is_empty(), "{what}: left files behind: {names:?}");
            let table =
                LeaseTable::open_or_create(&path, &TableOptions::new().capacity(CAPACITY)).unwrap();
            recover(&what, &table, seen, kid.pid());
        }
        Scenario::Revoke => {
            let table = LeaseTable::open(&path).unwrap();
            // Finish what the dead revoker may not have done; then the waiter must get
            // the lease without waiting out the revoked grant's hour.
            let before = table.get(NAME).unwrap().unwrap();
            if before.state == LeaseState::Held {
                assert_eq!(table.revoke(NAME).unwrap(), Some(seen), "{what}");
            }
            let mut waiter = waiter.take().unwrap();
            let got: u64 = waiter.expect("GOT", Duration::from_secs(20)).parse().unwrap();
            assert!(got > seen, "{what}: token {got} after {seen}");
            waiter.wait_ok(LONG);
            recover(&what, &table, got, kid.pid());
        }
        Scenario::Request => {
            let table = LeaseTable::open(&path).unwrap();
            // A request changes nothing about who holds the lease, even half made; the
            // next request (or revocation) of the same grant works.
            let info = table.get(NAME).unwrap().unwrap();
            assert_eq!((info.state, info.token), (LeaseState::Held, seen), "{what}");
            assert_eq!(table.request_release(NAME, Some(seen)).unwrap(), Some(seen), "{what}");
            assert_eq!(table.revoke(NAME).unwrap(), Some(seen), "{what}");
            recover(&what, &table, seen, kid.pid());
        }
        Scenario::PermitBind | Scenario::PermitGrant | Scenario::PermitGrantFast => {
            let table = LeaseTable::open(&path)
                .unwrap_or_else(|e| panic!("{what}: table unusable after the crash: {e}"));
            recover_permits(&what, &table, seen, scenario.ttl());
        }
        Scenario::SharedGrant | Scenario::SharedGrantFast => {
            let table = LeaseTable::open(&path)
                .unwrap_or_else(|e| panic!("{what}: table unusable after the crash: {e}"));
            recover_shared(&what, &table, seen, scenario.ttl());
        }
        Scenario::FairPlace => {
            let table = LeaseTable::open(&path)
                .unwrap_or_else(|e| panic!("{what}: table unusable after the crash: {e}"));
            // The dead waiter's place (if it got one) holds nobody up: a fair acquirer
            // that waits gets the name (freed by the parent, or taken by the child
            // before it died and reclaimable as a dead holder's or at its TTL).
            let fair = AcquireOptions::new().fair(true).wait(Some(TTL + Duration::from_secs(5)));
            let lease =
                table.acquire_with(NAME, LONG, &fair).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(lease.token() > seen, "{what}");
            assert!(
                table.get(NAME).unwrap().unwrap().queue.is_empty(),
                "{what}: a dead place is shown"
            );
            drop(lease);
            recover(&what, &table, seen, kid.pid());
        }
        _ => {
            let table = LeaseTable::open(&path)
                .unwrap_or_else(|e| panic!("{what}: table unusable after the crash: {e}"));
            recover_within(&what, &table, seen, kid.pid(), scenario.ttl());
        }
    }
    !completed
}

/// After a crash during a shared grant: two shared grants and then an exclusive one
/// can be had (at once, or once a grant the crash left without a holder record
/// expires), tokens above `seen`, the name shared.
fn recover_shared(what: &str, table: &LeaseTable, seen: u64, ttl: Duration) {
    table.list().unwrap_or_else(|e| panic!("{what}: list: {e}"));
    let wait = Some(ttl + Duration::from_secs(5));
    let shared = AcquireOptions::new().shared(true).wait(wait);
    let a = table.acquire_with(NAME, LONG, &shared).unwrap_or_else(|e| panic!("{what}: {e}"));
    let b = table.acquire_with(NAME, LONG, &shared).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(a.token() > seen && b.token() > a.token(), "{what}");
    assert_eq!(table.get(NAME).unwrap().unwrap().kind, LeaseKind::Shared, "{what}");
    drop((a, b));
    let x = table
        .acquire_with(NAME, LONG, &AcquireOptions::new().wait(wait))
        .unwrap_or_else(|e| panic!("{what}: exclusive: {e}"));
    assert!(x.token() > seen, "{what}");
}

/// After a crash during a permit's acquisition: both permits of `NAME` can be taken (at
/// once, or once the dead process's grant without a holder record expires), with
/// distinct tokens above `seen`; the name is a group of two (or, if the crash came
/// before its head became one, still free to become one); every slot still binds, and
/// the name's tokens keep growing across its eviction.
fn recover_permits(what: &str, table: &LeaseTable, seen: u64, ttl: Duration) {
    table.list().unwrap_or_else(|e| panic!("{what}: list: {e}"));
    let wait = two_permits().wait(Some(ttl + Duration::from_secs(5)));
    let a = table.acquire_with(NAME, LONG, &wait).unwrap_or_else(|e| panic!("{what}: {e}"));
    let b = table.acquire_with(NAME, LONG, &wait).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        a.token() > seen && b.token() > a.token(),
        "{what}: {} {} after {seen}",
        a.token(),
        b.token()
    );
    let info = table.get(NAME).unwrap().unwrap();
    assert_eq!((info.kind, info.grants.len()), (LeaseKind::Permits(2), 2), "{what}: {info:?}");
    assert!(
        matches!(table.acquire_with(NAME, LONG, &two_permits()), Err(Error::Held { .. })),
        "{what}"
    );
    let last = b.token();
    drop((a, b));
    for i in 0..=CAPACITY {
        churn(table, &format!("after-{i}"));
    }
    let again = table.acquire_with(NAME, LONG, &two_permits()).unwrap();
    assert!(again.token() > last, "{what}: token {} after {last}", again.token());
}

/// After a crash: `NAME` can be taken (at once unless a live-looking grant without a
/// holder record forces waiting out its TTL), with a token above `seen`, every slot can
/// still be bound, and tokens keep growing.
fn recover(what: &str, table: &LeaseTable, seen: u64, dead: i32) {
    recover_within(what, table, seen, dead, TTL)
}

/// [`recover`] after a crash in a grant of `ttl`.
fn recover_within(what: &str, table: &LeaseTable, seen: u64, dead: i32, ttl: Duration) {
    table.list().unwrap_or_else(|e| panic!("{what}: list: {e}"));
    // Before `get`, so that `looked.elapsed()` covers the time from get's clock reading.
    let looked = Instant::now();
    let before = table.get(NAME).unwrap();
    let lease = match table.try_acquire(NAME, LONG) {
        Ok(lease) => {
            if let Some(b) = before.as_ref().filter(|b| b.state == LeaseState::Held) {
                // Taken early only from a provably dead holder, or once expired.
                assert!(
                    b.holder.is_some()
                        || looked.elapsed() + Duration::from_millis(1) >= b.remaining,
                    "{what}: took a live grant with no holder record: {b:?}"
                );
            }
            lease
        }
        Err(Error::Held { remaining, holder, .. }) => {
            // Only a grant whose holder record the crash prevented (or wiped) may hold out,
            // and only until its deadline.
            assert!(
                holder.is_none(),
                "{what}: a dead holder (pid {dead}) was not recognised: {holder:?}"
            );
            assert!(remaining <= ttl, "{what}: held for {remaining:?}, beyond its TTL");
            table
                .acquire(NAME, LONG, Some(remaining + Duration::from_secs(5)))
                .unwrap_or_else(|e| panic!("{what}: not reclaimed after its TTL: {e}"))
        }
        Err(e) => panic!("{what}: {e}"),
    };
    let floor = seen.max(before.map_or(0, |b| b.token));
    assert!(lease.token() > floor, "{what}: token {} not above {floor}", lease.token());
    let mut last = lease.token();
    lease.release().unwrap();
    // Every slot still binds: more names than slots forces evictions through all of them.
    for i in 0..=CAPACITY {
        churn(table, &format!("after-{i}"));
    }
    let again = churn(table, NAME);
    assert!(again > last, "{what}: token {again} after {last}");
    last = again;
    for info in table.list().unwrap() {
        assert_ne!(info.state, LeaseState::Held, "{what}: {} still held", info.name);
        if info.name == NAME {
            assert_eq!(info.token, last);
        }
    }
}

/// Walks every crash point of `scenario`; returns how many it has.
fn walk(scenario: Scenario) -> u32 {
    let wd = Watchdog::new(&format!("crash points of {scenario:?}"), Duration::from_secs(300));
    for step in 1..=MAX_STEPS {
        if !crash_once(&wd, scenario, step) {
            eprintln!("{scenario:?}: {} crash points, each survived", step - 1);
            return step - 1;
        }
    }
    panic!("{scenario:?} has more than {MAX_STEPS} crash points");
}

// Each operation must have at least the crash points its code has today (fewer means
// they were removed, and the test would silently cover less).

#[test]
fn crash_at_every_step_of_a_shared_grant() {
    assert!(walk(Scenario::SharedGrant) >= 8);
}

#[test]
fn crash_at_every_step_of_taking_a_place_in_a_fair_queue() {
    assert!(walk(Scenario::FairPlace) >= 5);
}

#[test]
fn crash_at_every_step_of_binding_a_permits_head_and_seat() {
    assert!(walk(Scenario::PermitBind) >= 12);
}

#[test]
fn crash_at_every_step_of_a_permit_grant() {
    assert!(walk(Scenario::PermitGrant) >= 8);
}

#[test]
fn crash_at_every_step_of_a_grant_on_the_fast_path() {
    assert!(walk(Scenario::GrantFreeFast) >= 5);
}

#[test]
fn crash_at_every_step_of_a_permit_grant_on_the_fast_path() {
    assert!(walk(Scenario::PermitGrantFast) >= 6);
}

#[test]
fn crash_at_every_step_of_a_shared_grant_on_the_fast_path() {
    assert!(walk(Scenario::SharedGrantFast) >= 6);
}

/// The fast-path scenarios take the fast path (a child armed at the fast path's first
/// grant point dies, and the table recovers), and their slow twins do not (it lives): so
/// the walks above cover both paths.
#[test]
fn the_fast_path_scenarios_take_the_fast_path_and_the_others_do_not() {
    let wd = Watchdog::new("fast path taken", Duration::from_secs(120));
    let fast = Some(Op::GrantFast);
    for scenario in [Scenario::GrantFreeFast, Scenario::PermitGrantFast, Scenario::SharedGrantFast]
    {
        assert!(crash_once_at(&wd, scenario, 1, fast), "{scenario:?}: not on the fast path");
    }
    for scenario in [Scenario::GrantFree, Scenario::PermitGrant, Scenario::SharedGrant] {
        assert!(!crash_once_at(&wd, scenario, 1, fast), "{scenario:?}: on the fast path");
    }
}

#[test]
fn crash_at_every_step_of_create() {
    assert!(walk(Scenario::Create) >= 7);
}

#[test]
fn crash_at_every_step_of_a_rebase_after_reboot() {
    assert!(walk(Scenario::Rebase) >= 4);
}

#[test]
fn crash_at_every_step_of_binding_a_name() {
    assert!(walk(Scenario::BindEmpty) >= 7);
}

#[test]
fn crash_at_every_step_of_binding_by_eviction() {
    assert!(walk(Scenario::BindEvict) >= 12);
}

#[test]
fn crash_at_every_step_of_a_grant() {
    assert!(walk(Scenario::GrantFree) >= 5);
}

#[test]
fn crash_at_every_step_of_a_grant_after_waiting() {
    assert!(walk(Scenario::GrantAfterWait) >= 6);
}

#[test]
fn crash_at_every_step_of_renew() {
    assert!(walk(Scenario::Renew) >= 3);
}

#[test]
fn crash_at_every_step_of_release() {
    assert!(walk(Scenario::Release) >= 2);
}

#[test]
fn crash_at_every_step_of_a_release_request() {
    assert!(walk(Scenario::Request) >= 2);
}

#[test]
fn crash_at_every_step_of_revoke() {
    assert!(walk(Scenario::Revoke) >= 2);
}
