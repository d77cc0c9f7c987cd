//! The process patterns users have, which the first release's tests never tried and a
//! review broke (issue 9): children forked after `open` sharing the inherited table, a
//! herd on one name, honest churn in a full table, a holder whose main thread has
//! exited (under the fallback identity of kernels before 6.9), an opener killed
//! mid-bind while its forked child lives, removal of a table in use. Each test failed on
//! the code before its fix.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{touch, Kid, Scratch, SharedWords, Watchdog};
use shmlease::{Error, LeaseState, LeaseTable, RemoveOptions, TableOptions};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

const LONG: Duration = Duration::from_secs(60);

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("name-{i}")).collect()
}

/// Item 1: six children forked from one opener churn through 24 names in an 8-slot
/// table with the inherited handle. Binding excludes them from each other (the table
/// lock is per lock, not per inherited descriptor): never two holders, never a grant
/// replaced under its holder. Before the fix: about 180 overlaps in 5 s.
#[test]
fn children_forked_after_open_exclude_each_other() {
    let wd = Watchdog::new("children_forked_after_open_exclude_each_other", LONG * 2);
    let dir = Scratch::new("forkchurn");
    let path = dir.path("table");
    LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let counters = dir.path("counters");
    SharedWords::create(&counters, 24);
    let mut opener = Kid::spawn(
        &wd,
        "opener",
        "fork_churn",
        &[
            ("TABLE", s(path.display())),
            ("FORKS", s(6)),
            ("NAMES", names(24).join(",")),
            ("COUNTERS", s(counters.display())),
            ("RUN_MS", s(5000)),
            ("SEED", s(7)),
        ],
    );
    let done = opener.expect("DONE", LONG);
    opener.wait_ok(LONG);
    assert_eq!(done, "0 0", "violations, children with errors\n{}", opener.transcript());
    let table = LeaseTable::open(&path).unwrap();
    assert!(table.info().counters.unbinds > 0, "no slot was reused: the test tested nothing");
}

/// Item 1, second half: an opener killed while binding (holding the table lock) does
/// not wedge binding for everyone while a child it forked earlier lives on.
#[test]
fn opener_killed_mid_bind_does_not_wedge_the_table_while_its_child_lives() {
    let wd = Watchdog::new("opener_killed_mid_bind", LONG * 2);
    let dir = Scratch::new("bindcrash");
    let path = dir.path("table");
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let go = dir.path("go");
    let mut opener = Kid::spawn(
        &wd,
        "opener",
        "bind_crash",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("new")),
            ("GO", s(go.display())),
            ("TEST_PID", s(std::process::id())),
        ],
    );
    let child: i32 = opener.expect("CHILD", LONG).parse().unwrap();
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            common::signal(self.0, libc::SIGKILL);
        }
    }
    let _child = KillOnDrop(child);
    touch(&go);
    let status = opener.wait(LONG);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert!(common::proc_state(child).is_some_and(|s| s != b'Z'), "the forked child must live");
    let lease = table
        .try_acquire("another", Duration::from_secs(5))
        .expect("binding must work although the opener died holding the table lock");
    lease.release().unwrap();
}

/// Item 1, with threads: children forked while another thread of the parent is in the
/// middle of binding a name bind names of their own, and none blocks (the watchdog
/// fails the test if one does): the table lock is no process-local mutex that a fork
/// could copy in the locked state, and the child's copy of the parent's lock descriptor
/// is closed in the child.
#[test]
fn children_forked_while_another_thread_binds_never_block() {
    let wd = Watchdog::new("fork_during_bind", LONG * 2);
    let dir = Scratch::new("forkbind");
    let path = dir.path("table");
    LeaseTable::create(&path, &TableOptions::new().capacity(4)).unwrap();
    let mut kid = Kid::spawn(
        &wd,
        "forker",
        "fork_during_bind",
        &[("TABLE", s(path.display())), ("FORKS", s(300))],
    );
    let done = kid.expect("DONE", LONG * 2);
    kid.wait_ok(LONG);
    assert_eq!(done, "300", "children that failed to bind\n{}", kid.transcript());
    assert!(!kid.transcript().contains("@@ERR"), "{}", kid.transcript());
}

/// Item 2: a herd of four processes in a blocking-acquire loop on one name. Right after
/// every grant, the holder record names the holder (a losing granter no longer wipes
/// the winner's record). Before the fix: 6.8 % of grants had no record.
#[test]
fn a_herd_on_one_name_always_finds_the_winners_holder_record() {
    let wd = Watchdog::new("herd_holder_record", LONG * 2);
    let dir = Scratch::new("herd");
    let path = dir.path("table");
    LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let env = [("TABLE", s(path.display())), ("NAME", s("hot")), ("RUN_MS", s(3000))];
    let mut herd: Vec<Kid> =
        (0..4).map(|i| Kid::spawn(&wd, &format!("herd-{i}"), "herd", &env)).collect();
    let (mut grants, mut missing) = (0, 0);
    for k in &mut herd {
        let done = k.expect("DONE", LONG);
        k.wait_ok(LONG);
        let (g, m) = done.split_once(' ').unwrap();
        grants += g.parse::<u64>().unwrap();
        missing += m.parse::<u64>().unwrap();
        if m != "0" {
            eprintln!("{}", k.transcript());
        }
    }
    assert!(grants > 1000, "too few grants ({grants}) to mean anything");
    assert_eq!(missing, 0, "{missing} of {grants} grants had no holder record");
}

/// Item 4: under the fallback identity (start time, as on kernels before 6.9), a holder
/// whose main thread has exited while another thread renews is alive: its lease is
/// never taken (before the fix it was judged dead at once). Once it is killed, it is
/// reclaimed at once.
#[test]
fn a_holder_whose_main_thread_exited_is_alive_under_the_fallback_identity() {
    let wd = Watchdog::new("main_thread_exited", LONG * 2);
    let dir = Scratch::new("mainexit");
    let path = dir.path("table");
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let mut kid = Kid::spawn(
        &wd,
        "holder",
        "main_exits",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("job")),
            ("TTL_MS", s(30_000)),
            ("RUN_MS", s(600_000)),
            ("IDENTITY", s("start-time")),
        ],
    );
    // The two lines come from two processes, in either order.
    let (mut pid, mut token) = (None, None);
    while pid.is_none() || token.is_none() {
        match kid.expect_any(&["CHILD", "READY"], LONG) {
            (k, v) if k == "CHILD" => pid = Some(v.parse::<i32>().unwrap()),
            (_, v) => token = Some(v.parse::<u64>().unwrap()),
        }
    }
    let (pid, token) = (pid.unwrap(), token.unwrap());
    // The main thread is gone: the process shows Z.
    let start = Instant::now();
    while common::proc_state(pid) != Some(b'Z') {
        assert!(start.elapsed() < LONG, "the holder's main thread never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    let info = table.get("job").unwrap().unwrap();
    let holder = info.holder.expect("holder record");
    assert!(matches!(holder.identity, shmlease::ProcessIdentity::StartTime(_)), "{holder:?}");
    for _ in 0..50 {
        match table.try_acquire("job", Duration::from_secs(1)) {
            Err(Error::Held { token: t, .. }) => assert_eq!(t, token),
            other => panic!("a live holder's lease was taken: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    common::signal(pid, libc::SIGKILL);
    kid.wait_ok(LONG);
    let lease = table
        .try_acquire("job", Duration::from_secs(1))
        .expect("a killed holder's lease must be reclaimable at once");
    assert!(lease.token() > token);
    assert_eq!(table.info().counters.dead_holder_reclaims, 1);
}

/// Item 3: binding new names in a full table while other processes honestly rotate
/// their names (release one, take another) ends in a grant, Held, TableFull or Busy,
/// never Corrupt. Before the fix about 1 % of binds said "a slot keeps changing faster
/// than any lease holder could".
#[test]
fn honest_churn_in_a_full_table_is_never_reported_as_corruption() {
    let wd = Watchdog::new("full_table_churn", LONG * 2);
    let dir = Scratch::new("fullchurn");
    let path = dir.path("table");
    LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let run = [("TABLE", s(path.display())), ("RUN_MS", s(3000)), ("NAMES", s("unused"))];
    // Two rotators keep 3 leases each on fresh names, releasing one and binding a new
    // one, over and over; two binders each bind a fresh name on every try and hold it
    // for one round. Every bind must evict an idle name, and the only idle names are
    // the ones the others just bound or released.
    let mut kids: Vec<Kid> = (0..4)
        .map(|i| {
            let mut env = run.to_vec();
            let hold = if i < 2 { 3 } else { 1 };
            env.extend([("FRESH", s(1)), ("HOLD", s(hold)), ("SEED", s(i + 1))]);
            Kid::spawn(&wd, &format!("rotator-{i}"), "rotate", &env)
        })
        .collect();
    for k in &mut kids {
        let done = k.expect("DONE", LONG);
        k.wait_ok(LONG);
        let (_, errors) = done.split_once(' ').unwrap();
        assert_eq!(errors, "0", "unexpected errors\n{}", k.transcript());
    }
    let table = LeaseTable::open(&path).unwrap();
    assert!(table.info().counters.unbinds > 100, "the table was not churned: {:?}", table.info());
}

/// Item 7: between `unshare(CLONE_NEWTIME)` and `exec`, `/proc/self/timens_offsets`
/// shows the children's offset, not the caller's own. In the initial namespace the
/// caller's offset is zero whatever the file says: a lease the host holds looks held
/// (before the fix the caller took the file's week of offset, and the lease looked
/// expired: two holders). In any other namespace the caller's offset is published
/// nowhere, and opening is refused.
#[test]
fn a_process_between_unshare_and_exec_of_a_time_namespace_never_misreads_its_clock() {
    let wd = Watchdog::new("timens_unshared", LONG);
    let dir = Scratch::new("timensmid");
    let path = dir.path("table");
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let _held = table.try_acquire("host", Duration::from_secs(30)).unwrap();
    let env = [("TABLE", s(path.display())), ("OFFSET_S", s(7 * 86400)), ("HOST_HELD", s("host"))];
    let keys = ["REFUSED", "AGREES", "ERR", "NO_TIMENS"];
    let mut kid = Kid::spawn(&wd, "unsharer", "timens_unshared", &env);
    let (key, value) = kid.expect_any(&keys, LONG);
    kid.wait(LONG);
    match key.as_str() {
        "NO_TIMENS" => eprintln!("skipped: time namespaces cannot be made here ({value})"),
        "AGREES" => {}
        _ => panic!("{key} {value}\n{}", kid.transcript()),
    }
    // The same from inside a time namespace (see processes.rs, role_timens).
    let mut nested = env.to_vec();
    nested.push(("INNER", s("timens_unshared")));
    let mut kid = Kid::spawn(&wd, "nested", "timens", &nested);
    let (key, value) = kid.expect_any(&keys, LONG);
    kid.wait(LONG);
    match key.as_str() {
        "NO_TIMENS" => eprintln!("skipped: time namespaces cannot be made here ({value})"),
        "REFUSED" => assert!(value.contains("unshared its time namespace"), "{value}"),
        _ => panic!("{key} {value}\n{}", kid.transcript()),
    }
}

/// Item 5: a table with a live grant is not removed (naming the holder); with force it
/// is. A table whose grants all ended is removed.
#[test]
fn remove_refuses_a_table_with_live_leases() {
    let dir = Scratch::new("rmlive");
    let path = dir.path("table");
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let lease = table.try_acquire("busy", Duration::from_secs(30)).unwrap();
    match LeaseTable::remove(&path) {
        Err(Error::InUse { leases, .. }) => {
            assert_eq!(leases.len(), 1);
            assert_eq!(leases[0].name, "busy");
            assert_eq!(leases[0].holder.unwrap().pid, std::process::id());
        }
        other => panic!("a table in use was removed: {other:?}"),
    }
    assert!(path.exists());
    lease.release().unwrap();
    let expired = table.try_acquire("short", Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(!expired.is_valid());
    LeaseTable::remove(&path).expect("no live grant left");
    assert!(!path.exists());
    drop(expired);

    let table = LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let _held = table.try_acquire("busy", Duration::from_secs(30)).unwrap();
    LeaseTable::remove_with(&path, &RemoveOptions::new().force(true)).unwrap();
    assert!(!path.exists());

    // Another version's table (or a damaged one) cannot be read, so whether it is in
    // use cannot be told: removed only with force.
    drop(LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap());
    let version = common::read_u64(&path, 8);
    common::write_u64(&path, 8, version + 1);
    match LeaseTable::remove(&path) {
        Err(Error::Incompatible { reason, .. }) => {
            assert!(reason.contains("not removed"), "{reason}")
        }
        other => panic!("an unreadable table was removed: {other:?}"),
    }
    assert!(path.exists());
    LeaseTable::remove_with(&path, &RemoveOptions::new().force(true)).unwrap();
    assert!(!path.exists());
}

/// Items 9 and 10: by-token calls on another live process's bound lease are refused,
/// naming it; on a detached lease they work; the reasons for failures are true.
#[test]
fn by_token_calls_refuse_bound_leases_and_say_what_is_true() {
    let wd = Watchdog::new("by_token", LONG);
    let dir = Scratch::new("bytoken");
    let path = dir.path("table");
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(8)).unwrap();
    let mut holder = Kid::spawn(
        &wd,
        "holder",
        "hold",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("bound")),
            ("TTL_MS", s(60_000)),
            ("ACTION", s("forever")),
        ],
    );
    let token: u64 = holder.expect("READY", LONG).parse().unwrap();
    for result in [
        table.release("bound", token),
        table.renew("bound", token, Duration::from_secs(1)).map(|_| ()),
    ] {
        match result {
            Err(Error::BoundToProcess { token: t, holder: Some(h) }) => {
                assert_eq!(t, token);
                assert_eq!(h.pid as i32, holder.pid());
            }
            other => panic!("a by-token call on a live process's lease: {other:?}"),
        }
    }
    assert_eq!(table.get("bound").unwrap().unwrap().state, LeaseState::Held);
    // The administrator's way still works.
    table.revoke_token("bound", token).unwrap();
    holder.signal(libc::SIGKILL);
    holder.wait(LONG);

    // Truthful reasons.
    use shmlease::LostReason;
    let lost = |r: shmlease::Result<()>| match r {
        Err(Error::Lost { reason, .. }) => reason,
        other => panic!("expected Lost, got {other:?}"),
    };
    let ttl = Duration::from_secs(1);
    assert_eq!(lost(table.renew("never-was", 5, ttl).map(|_| ())), LostReason::NoSuchName);
    assert_eq!(lost(table.release("never-was", 5)), LostReason::NoSuchName);
    assert_eq!(lost(table.revoke_token("never-was", 5)), LostReason::NoSuchName);
    let detached = table.try_acquire("d", ttl).unwrap().detach().unwrap();
    let latest = detached.token;
    assert_eq!(lost(table.release("d", latest + 9)), LostReason::NotIssued { latest });
    assert_eq!(lost(table.revoke_token("d", latest + 9)), LostReason::NotIssued { latest });
    assert_eq!(lost(table.revoke_token("d", latest - 1)), LostReason::TakenOver);
    table.renew("d", latest, ttl).expect("a detached lease is renewable by token");
    table.release("d", latest).expect("a detached lease is releasable by token");
    assert_eq!(lost(table.revoke_token("d", latest)), LostReason::Released);
    assert_eq!(lost(table.release("d", latest)), LostReason::Released);
    let again = table.try_acquire("d", ttl).unwrap();
    assert_eq!(lost(table.release("d", latest)), LostReason::TakenOver);
    drop(again);
    let _ = Path::new("");
}
