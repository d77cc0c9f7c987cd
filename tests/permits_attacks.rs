//! Attacks on names with permits: user programs that differ from the ones in
//! `tests/permits.rs` — herds far larger than N, threads sharing one table, forked
//! children with inherited permits, tables too small for the name's seats, exclusive
//! and permits callers racing for a free name, revocations and by-token calls racing
//! with grants, crashes inside the new transitions, start-time identities, stopped
//! waiters, lost wake-ups, and garbage in heads and seats. Each test says what it
//! attacks. Four of them found defects, since fixed (each test says which): a lost
//! wake-up of permit waiters, `TableFull` for a caller asking to wait, a name's latest
//! token shown below one of its grants', and a dead exclusive holder blocking a name's
//! redefinition with permits.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_distinct, permits, read_u64, s, start_churn, table, tokens_of, touch,
    two_permit_holders, wait_until, write_u64, Kid, Scratch, SharedWords, Watchdog, HEADER_SIZE,
    LONG, SLOT_SIZE, TTL,
};
use shmlease::{Error, LeaseInfo, LeaseKind, LeaseState, LeaseTable, TableOptions};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

/// `GROUP` in a grant word's deadline half (see `src/layout.rs`).
const GROUP: u64 = 1 << 60;

fn grant_offset(slot: u32) -> u64 {
    HEADER_SIZE + slot as u64 * SLOT_SIZE
}

fn bind_word(path: &Path, slot: u32) -> u64 {
    read_u64(path, grant_offset(slot) + 32)
}

/// The seat number in a slot's binding word.
fn seat_of(path: &Path, slot: u32) -> u8 {
    (bind_word(path, slot) >> 32) as u8
}

/// What `get`/`list` may show for a name with `n` permits, whatever the churn: at most
/// `n` grants, distinct tokens, each in a slot of its own. (The snapshot is not atomic
/// across seats: grants that never coexisted may be shown together, which is fine. A
/// grant with a token above the name's `token` is not; see
/// `the_names_latest_token_is_never_below_a_grant_it_shows`.)
fn check_group_info(info: &LeaseInfo, n: u32) -> Result<(), String> {
    if info.kind != LeaseKind::Permits(n) {
        return Err(format!("kind {:?}", info.kind));
    }
    let tokens: BTreeSet<u64> = info.grants.iter().map(|g| g.token).collect();
    let slots: BTreeSet<u32> = info.grants.iter().map(|g| g.slot).collect();
    if info.grants.len() > n as usize
        || tokens.len() != info.grants.len()
        || slots.len() != info.grants.len()
        || (info.state == LeaseState::Held) == info.grants.is_empty()
    {
        return Err(format!("{info:#?}"));
    }
    Ok(())
}

/// Starts `members` `pa_herd` processes on "pool" with `n` permits for 3 s, each grant
/// held `hold_us`, counting in the file `counters` of `dir` (created here); member `i`
/// has the parameters `extra(i)` besides.
fn start_herd(
    wd: &Watchdog,
    dir: &Scratch,
    members: u64,
    n: u32,
    hold_us: u64,
    extra: impl Fn(u64) -> Vec<(&'static str, String)>,
) -> Vec<Kid> {
    let counters = dir.path("counters");
    SharedWords::create(&counters, 4);
    let member = |i| {
        let mut env = vec![
            ("TABLE", s(dir.path("t").display())),
            ("NAME", s("pool")),
            ("PERMITS", s(n)),
            ("COUNTERS", s(counters.display())),
            ("HOLD_US", s(hold_us)),
            ("RUN_MS", s(3000)),
        ];
        env.extend(extra(i));
        Kid::spawn(wd, &format!("herd-{i}"), "pa_herd", &env)
    };
    (0..members).map(member).collect()
}

/// Waits for every member of a herd to end well, each with neither a violation nor an
/// order violation: the number of grants, and every token granted.
fn finish_herd(herd: &mut [Kid]) -> (u64, Vec<u64>) {
    let (mut grants, mut tokens) = (0u64, Vec::new());
    for k in herd {
        let done = k.expect("DONE", LONG);
        let v: Vec<u64> = done.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!((v[1], v[2]), (0, 0), "violations, order violations\n{}", k.transcript());
        grants += v[0];
        k.wait_ok(LONG);
        tokens.extend(tokens_of(k));
    }
    (grants, tokens)
}

/// Attacks: a herd five times larger than N (some members detaching their grants and
/// releasing them by token), inspected all along with `get` and `list`. The defence:
/// never more than N inside; every token distinct; a grant that starts after another
/// was returned gets a larger token; `get`/`list` never show more than N grants, nor a
/// token twice, nor one above the name's latest.
#[test]
fn a_herd_five_times_n_with_inspectors() {
    let wd = Watchdog::new("pa_herd", LONG * 2);
    let dir = Scratch::new("pa-herd");
    let table = table(&dir, 64);
    let n = 3u32;
    let mut herd = start_herd(&wd, &dir, 15, n, 300, |i| vec![("DETACH", s(i % 2))]);
    let mut looks = 0u64;
    while herd.iter_mut().any(|k| k.try_status().is_none()) {
        if let Some(info) = table.get("pool").unwrap() {
            check_group_info(&info, n).unwrap();
            looks += 1;
        }
        for info in table.list().unwrap() {
            assert_eq!(info.name, "pool", "seats must not be listed as names");
            check_group_info(&info, n).unwrap();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let (grants, tokens) = finish_herd(&mut herd);
    let words = SharedWords::open(&dir.path("counters"));
    assert_eq!(words.word(1).load(SeqCst), 0, "more than N inside");
    assert_eq!(words.word(3).load(SeqCst), 0, "a later grant got a smaller token");
    assert_distinct(&tokens);
    assert_eq!(tokens.len() as u64, grants);
    assert!(grants > 100 && looks > 100, "{grants} grants, {looks} looks");
}

/// Attacks: many threads of one process sharing one `LeaseTable` (and so one holder
/// identity, and the same first seat to try), blocking for permits. The defence: never
/// more than N inside, distinct tokens, tokens in the order grants were returned.
#[test]
fn threads_sharing_one_table_never_exceed_n() {
    let dir = Scratch::new("pa-threads");
    let table = table(&dir, 32);
    let inside = Arc::new(AtomicU64::new(0));
    let worst = Arc::new(AtomicU64::new(0));
    let returned = Arc::new(AtomicU64::new(0));
    let disorder = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(2);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (table, inside, worst, returned, disorder) = (
                table.clone(),
                Arc::clone(&inside),
                Arc::clone(&worst),
                Arc::clone(&returned),
                Arc::clone(&disorder),
            );
            std::thread::spawn(move || {
                let opts = permits(3).wait(Some(Duration::from_secs(5)));
                let mut tokens = Vec::new();
                while Instant::now() < end {
                    let before = returned.load(SeqCst);
                    let lease = table.acquire_with("pool", TTL, &opts).expect("permit");
                    if lease.token() <= before {
                        disorder.fetch_add(1, SeqCst);
                    }
                    returned.fetch_max(lease.token(), SeqCst);
                    worst.fetch_max(inside.fetch_add(1, SeqCst) + 1, SeqCst);
                    tokens.push(lease.token());
                    std::thread::sleep(Duration::from_micros(100));
                    inside.fetch_sub(1, SeqCst);
                    lease.release().expect("release");
                }
                tokens
            })
        })
        .collect();
    let tokens: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_distinct(&tokens);
    assert!(worst.load(SeqCst) <= 3, "{} inside", worst.load(SeqCst));
    assert_eq!(disorder.load(SeqCst), 0, "a later grant got a smaller token");
    assert!(tokens.len() > 100, "{} grants", tokens.len());
}

/// Attacks: revoke, revoke_token, request_release (all / one) and by-token renew and
/// release of other processes' grants, at random, racing with a herd taking and
/// releasing permits. The defence: every answer is a documented one (no `Corrupt`, no
/// `Busy`), a by-token call never changes another live process's grant, holders see
/// their revoked grants as `Lost { Revoked }`, and `get` stays within N.
#[test]
fn revocations_requests_and_by_token_calls_racing_with_grants() {
    let wd = Watchdog::new("pa_revoke", LONG * 2);
    let dir = Scratch::new("pa-revoke");
    let path = dir.path("t");
    let table = table(&dir, 64);
    // Revoked grants are not counted inside: only the order of tokens is checked.
    let mut herd = start_herd(&wd, &dir, 6, 3, 500, |_| vec![("REVOKED_OK", s(1))]);
    let mut revokers: Vec<Kid> = (0..2)
        .map(|i| {
            Kid::spawn(
                &wd,
                &format!("revoker-{i}"),
                "pa_revoker",
                &[
                    ("TABLE", s(path.display())),
                    ("NAME", s("pool")),
                    ("RUN_MS", s(3000)),
                    ("SEED", s(7 + i)),
                ],
            )
        })
        .collect();
    while herd.iter_mut().any(|k| k.try_status().is_none()) {
        if let Some(info) = table.get("pool").unwrap() {
            check_group_info(&info, 3).unwrap();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let (_, tokens) = finish_herd(&mut herd);
    let mut revoked = 0;
    for k in revokers.iter_mut() {
        revoked += k.expect("DONE", LONG).parse::<u64>().unwrap();
        k.wait_ok(LONG);
    }
    assert_distinct(&tokens);
    assert!(revoked > 10, "only {revoked} revocations landed");
}

/// Attacks: the conversion of a free exclusive name into a group (`make_group`) racing
/// with exclusive callers, and callers with different N racing on fresh names: every
/// 20 ms a fresh name, tried by exclusive callers and by callers with 2 and with 3
/// permits. The defence: never an exclusive holder beside any other, never holders
/// of two kinds at once, never more than N; the losers are told `WrongKind`.
#[test]
fn exclusive_and_permits_callers_racing_for_fresh_names() {
    let wd = Watchdog::new("pa_race", LONG * 2);
    let dir = Scratch::new("pa-race");
    let path = dir.path("t");
    table(&dir, 4096);
    let counters = dir.path("counters");
    let slots = 64;
    SharedWords::create(&counters, 3 * slots);
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap()
        + Duration::from_millis(800);
    let mut racers: Vec<Kid> = [1, 1, 2, 2, 3, 3]
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            Kid::spawn(
                &wd,
                &format!("racer-{i}-kind-{kind}"),
                "pa_racer",
                &[
                    ("TABLE", s(path.display())),
                    ("KIND", s(kind)),
                    ("COUNTERS", s(counters.display())),
                    ("SLOTS", s(slots)),
                    ("SLICE_MS", s(20)),
                    ("SLICES", s(150)),
                    ("EPOCH_MS", s(epoch.as_millis())),
                    ("HOLD_US", s(200)),
                ],
            )
        })
        .collect();
    let (mut grants, mut wrong) = (0u64, 0u64);
    for k in racers.iter_mut() {
        let done = k.expect("DONE", LONG);
        let v: Vec<u64> = done.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(v[2], 0, "holders of two kinds at once\n{}", k.transcript());
        grants += v[0];
        wrong += v[1];
        k.wait_ok(LONG);
    }
    assert!(grants > 300 && wrong > 50, "{grants} grants, {wrong} WrongKind: the race was not run");
}

/// Attacks: `fork()` after taking a permit. The forked child inherits the `Lease`: it
/// must be refused renew/release (directly and by token), may take a permit of its
/// own, and its drop of the inherited lease must leave the parent's grant alone. The
/// permit the child took and never released is reclaimed at once after it dies.
#[test]
fn a_forked_child_cannot_touch_an_inherited_permit() {
    let wd = Watchdog::new("pa_fork", LONG);
    let dir = Scratch::new("pa-fork");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let mut kid = Kid::spawn(
        &wd,
        "forker",
        "pa_fork_inherit",
        &[("TABLE", s(path.display())), ("NAME", s("pool")), ("PERMITS", s(3))],
    );
    let parent: u64 = kid.expect("PARENT", LONG).parse().unwrap();
    let child: u64 = kid.expect("CHILD", LONG).parse().unwrap();
    assert_eq!(kid.expect("OK", LONG).parse::<u64>().unwrap(), parent, "{}", kid.transcript());
    let info = table.get("pool").unwrap().unwrap();
    let shown: Vec<u64> = info.grants.iter().map(|g| g.token).collect();
    assert!(shown.contains(&parent), "{info:#?}");
    // The third permit is free; the dead child's is reclaimed at once; then all are taken.
    let a = table.acquire_with("pool", TTL, &permits(3)).unwrap();
    let b = table.acquire_with("pool", TTL, &permits(3)).expect("the dead child's permit");
    assert!(a.token() > child && b.token() > a.token());
    match table.acquire_with("pool", TTL, &permits(3)) {
        Err(Error::Held { .. }) => {}
        other => panic!("the parent's permit must still be held: {other:?}"),
    }
    kid.kill();
}

/// Attacks: `kill -9` at every crash point of a permit's transitions — the first grant
/// of a fresh name (binding the head, making it a group, binding a seat, taking the
/// token, granting the seat), a grant of a name already a group, a release, a
/// revocation. The defence: afterwards the name is still a group of N and all N permits
/// can be taken (what the dead process held comes back by dead-holder reclaim or by its
/// TTL).
#[test]
fn crashes_at_every_point_of_the_permit_transitions() {
    let wd = Watchdog::new("pa_crash", LONG * 4);
    let dir = Scratch::new("pa-crash");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let n = 2u32;
    let mut runs = 0;
    for (op, fresh) in
        [("grant", true), ("bind", true), ("grant", false), ("release", false), ("revoke", false)]
    {
        for step in 1..=16u32 {
            let name = format!("{op}-{fresh}-{step}");
            // A name that exists already: a group with one permit held by a live process.
            let other = (!fresh).then(|| table.acquire_with(&name, TTL, &permits(n)).unwrap());
            let mut kid = Kid::spawn(
                &wd,
                &format!("crash-{name}"),
                "pa_crash",
                &[
                    ("TABLE", s(path.display())),
                    ("NAME", s(&name)),
                    ("PERMITS", s(n)),
                    ("TTL_MS", s(300)),
                    ("OP", s(op)),
                    ("STEP", s(step)),
                ],
            );
            let status = kid.wait(LONG);
            let reached = !kid.lines_so_far().iter().any(|l| l.contains("@@NOT_REACHED"));
            if reached {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(libc::SIGKILL), "{}", kid.transcript());
                runs += 1;
            }
            drop(other);
            // Every permit of the name can be had again (waiting out a TTL if the record
            // of the dead process's grant was never written).
            let wait = permits(n).wait(Some(Duration::from_secs(20)));
            let got: Vec<_> = (0..n)
                .map(|i| {
                    table.acquire_with(&name, TTL, &wait).unwrap_or_else(|e| {
                        panic!("{name}: permit {i} after the crash: {e:?}\n{}", kid.transcript())
                    })
                })
                .collect();
            let info = table.get(&name).unwrap().unwrap();
            check_group_info(&info, n).unwrap();
            assert_eq!(info.grants.len(), n as usize, "{info:#?}");
            assert!(got[1].token() > got[0].token());
            assert!(matches!(table.try_acquire(&name, TTL), Err(Error::WrongKind { .. })));
            drop(got);
            if !reached {
                break;
            }
        }
    }
    assert!(runs > 15, "only {runs} crash points reached");
}

/// Attacks: dead-holder detection with the fallback identity (process start time, as
/// on kernels before 6.9), forced with `SHMLEASE_IDENTITY=start-time` in the holders.
/// The defence: both killed holders' permits are free at once for a non-waiting caller,
/// and a caller that was already blocked gets one without waiting out the TTL.
#[test]
fn start_time_holders_permits_are_reclaimed_at_once() {
    let wd = Watchdog::new("pa_start_time", LONG);
    let dir = Scratch::new("pa-start");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let (mut kids, _) = two_permit_holders(&wd, &path, &[("IDENTITY", s("start-time"))]);
    let info = table.get("pool").unwrap().unwrap();
    assert!(info.grants.iter().all(|g| g.holder.is_some()), "{info:#?}");
    // A waiter blocked before the first death.
    let waiter = {
        let table = table.clone();
        std::thread::spawn(move || {
            table
                .acquire_with("pool", TTL, &permits(2).wait(Some(Duration::from_secs(300))))
                .map(|l| l.detach().unwrap().token)
        })
    };
    wait_for_seat_waiter(&table, &path, "pool");
    kids[0].kill();
    let got = waiter.join().unwrap().expect("the blocked caller gets the dead holder's permit");
    kids[1].kill();
    let b = table.acquire_with("pool", TTL, &permits(2)).expect("second dead holder's permit");
    assert!(b.token() > got);
    assert!(table.info().counters.dead_holder_reclaims >= 2);
}

/// Attacks: a waiter stopped with SIGSTOP while permits free up. The defence: the other
/// waiter is not held up by it, and the stopped one, continued, gets the next permit
/// freed (its interrupted futex sleep must not swallow the wake-up).
#[test]
fn a_stopped_waiter_neither_blocks_others_nor_loses_its_turn() {
    let wd = Watchdog::new("pa_stopped_waiter", LONG);
    let dir = Scratch::new("pa-stopw");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let a = table.acquire_with("pool", TTL, &permits(2)).unwrap();
    let b = table.acquire_with("pool", TTL, &permits(2)).unwrap();
    let env = [
        ("TABLE", s(path.display())),
        ("NAME", s("pool")),
        ("PERMITS", s(2)),
        ("DIR", s(dir.dir.display())),
    ];
    touch(&dir.path("go-0"));
    let mut x = Kid::spawn(&wd, "stopped", "pa_round_waiter", &env);
    wait_for_seat_waiter(&table, &path, "pool");
    let mut y = Kid::spawn(&wd, "other", "pa_round_waiter", &env);
    wait_asleep(&path, table.get("pool").unwrap().unwrap().slot, &[&x, &y]);
    x.signal(libc::SIGSTOP);
    x.wait_state(b'T', LONG);
    a.release().unwrap();
    y.expect("GOT", LONG);
    b.release().unwrap();
    x.signal(libc::SIGCONT);
    x.expect("GOT", LONG);
    touch(&dir.path("end-0"));
    touch(&dir.path("stop"));
    x.wait_ok(LONG);
    y.wait_ok(LONG);
}

/// Waits until a waiter has announced itself on a seat of `name` (permit waiters
/// announce themselves on every held seat).
fn wait_for_seat_waiter(table: &LeaseTable, path: &Path, name: &str) {
    wait_until(&format!("a waiter announced itself on a seat of {name}"), || {
        let info = table.get(name).unwrap().unwrap();
        info.grants.iter().any(|g| common::waiters_announced(path, g.slot))
    });
}

/// The address range of the mapping of `path` in process `pid`.
fn mapping_of(pid: i32, path: &Path) -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let path = path.to_str()?;
    maps.lines().filter(|l| l.ends_with(path)).find_map(|l| {
        let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
        Some((u64::from_str_radix(lo, 16).ok()?, u64::from_str_radix(hi, 16).ok()?))
    })
}

/// Byte offset, in a table file, of the futex word that waiters for a seat sleep on
/// (the low half of the header's seat-event count).
const SEAT_EVENTS_OFFSET: u64 = 112;

/// Whether some thread of `pid` is asleep in `futex` on the word that waiters for a
/// permit sleep on (the table's seat-event count; `_head`: the name's head, which is
/// where they slept before that count existed).
fn asleep_on(pid: i32, path: &Path, _head: u32) -> bool {
    let Some((base, _)) = mapping_of(pid, path) else { return false };
    let word = base + SEAT_EVENTS_OFFSET;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| {
        let sys = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
        let mut f = sys.split_whitespace();
        f.next() == Some("202")
            && f.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                == Some(word)
    })
}

/// Waits until every one of `kids` sleeps waiting for a permit.
fn wait_asleep(path: &Path, head: u32, kids: &[&Kid]) {
    wait_until("the waiters went to sleep", || kids.iter().all(|k| asleep_on(k.pid(), path, head)));
}

/// Attacks: the wake-up of blocked acquirers. Two waiters sleep on a name with 128
/// permits, all held by detached grants (so that nothing but a wake-up or the 1 s nap
/// ends a sleep); a request to release wakes both (they look again and go back to
/// sleep), and at a random moment during that, two permits are released. The head's
/// futex word only says "waiters announced" or not: one waiter announcing itself on
/// the head after the release cleared the flag puts back the value another waiter is
/// about to sleep on (ABA), and that one then sleeps with a permit free. Counted: rounds
/// where, once one waiter has its permit, the other is found still asleep (now: on the
/// table's seat-event count; before the fix: on the head's futex word), with a permit
/// free, on every look for 300 ms. Before the fix: 17 lost rounds in 4,000 on a 2-core
/// machine, each served by the waiter's 1 s nap. 2,000 rounds by default (`PA_ROUNDS`,
/// `PA_SPREAD_US` tune the run).
#[test]
fn no_waiter_sleeps_through_a_free_permit() {
    let wd = Watchdog::new("pa_lost_wakeup", Duration::from_secs(600));
    let dir = Scratch::new("pa-lost");
    let path = dir.path("t");
    let table = table(&dir, 1024);
    let n = 128u32;
    let detached = |table: &LeaseTable| {
        table.acquire_with("pool", Duration::from_secs(600), &permits(n)).unwrap().detach().unwrap()
    };
    let mut mine: Vec<u64> = (0..n).map(|_| detached(&table).token).collect();
    let head = table.get("pool").unwrap().unwrap().slot;
    let env = [
        ("TABLE", s(path.display())),
        ("NAME", s("pool")),
        ("PERMITS", s(n)),
        ("DIR", s(dir.dir.display())),
    ];
    let mut kids: Vec<Kid> =
        (0..2).map(|i| Kid::spawn(&wd, &format!("w{i}"), "pa_round_waiter", &env)).collect();
    let rounds: u32 = std::env::var("PA_ROUNDS").map_or(2000, |v| v.parse().unwrap());
    let spread: u64 = std::env::var("PA_SPREAD_US").map_or(1000, |v| v.parse().unwrap());
    let mut rng = common::Rng::new(5);
    let (mut lost, mut latencies) = (0u32, Vec::new());
    for r in 0..rounds {
        touch(&dir.path(&format!("go-{r}")));
        wait_asleep(&path, head, &[&kids[0], &kids[1]]);
        // The two lowest seats this process holds: the waiters look at seats in order.
        let info = table.get("pool").unwrap().unwrap();
        let mut by_seat: Vec<(u8, u64)> = info
            .grants
            .iter()
            .filter(|g| mine.contains(&g.token))
            .map(|g| (seat_of(&path, g.slot), g.token))
            .collect();
        by_seat.sort();
        table.request_release("pool", None).unwrap();
        // Sleep, not spin: the two waiters need both cores to race each other.
        std::thread::sleep(Duration::from_micros(rng.below(spread)));
        let released = Instant::now();
        for &(_, t) in &by_seat[..2] {
            table.release("pool", t).unwrap();
            mine.retain(|m| *m != t);
        }
        let got = |k: &Kid| k.lines_so_far().iter().any(|l| l.contains(&format!("@@GOT {r} ")));
        let first = loop {
            if let Some(i) = (0..2).find(|&i| got(&kids[i])) {
                break i;
            }
            assert!(released.elapsed() < LONG, "round {r}: nobody got a permit");
            std::thread::sleep(Duration::from_micros(200));
        };
        let other = &kids[1 - first];
        let mut asleep_since: Option<Instant> = None;
        loop {
            if got(other) {
                break;
            }
            let free = table.get("pool").unwrap().unwrap().grants.len() < n as usize;
            if free && asleep_on(other.pid(), &path, head) {
                let since = *asleep_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    lost += 1;
                    eprintln!("round {r}: {} asleep with a permit free", other.label);
                    // Its nap (1 s) ends it; wait for that.
                    while !got(other) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    break;
                }
            } else {
                asleep_since = None;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        latencies.push(released.elapsed());
        touch(&dir.path(&format!("end-{r}")));
        for k in kids.iter_mut() {
            k.expect("RELEASED", LONG);
        }
        mine.push(detached(&table).token);
        mine.push(detached(&table).token);
    }
    touch(&dir.path("stop"));
    for k in kids.iter_mut() {
        k.wait_ok(LONG);
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100];
    eprintln!(
        "both waiters served after the release: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; lost wake-ups: {lost}/{rounds}",
        pct(50),
        pct(90),
        pct(99),
        pct(100)
    );
    assert_eq!(lost, 0, "waiters slept through a free permit in {lost} of {rounds} rounds");
}

/// Attacks: scribbled heads — N = 0, 1 and 300 (which does not fit the 8-bit field),
/// garbage above N, a head flag on a seat, a seat numbered beyond N, a corrupt
/// deadline on a seat. The defence: errors (`Corrupt`, `WrongKind`) or reclaims, never
/// a panic or a hang, and `get`/`list`/`info`/`revoke`/by-token calls all answer. (A
/// group bit without a well-formed head is a corrupt deadline: reclaimed.)
#[test]
fn garbage_in_heads_and_seats_gives_errors_or_reclaims() {
    let wd = Watchdog::new("pa_garbage", LONG);
    let dir = Scratch::new("pa-garbage");
    let path = dir.path("t");
    let table = table(&dir, 64);
    let every_call = |name: &str| {
        let _ = table.try_acquire(name, TTL);
        let _ = table.acquire_with(name, TTL, &permits(2));
        let _ = table.acquire_with(name, TTL, &permits(2).wait(Some(Duration::from_millis(50))));
        let _ = table.acquire(name, TTL, Some(Duration::from_millis(50)));
        let _ = table.get(name);
        let _ = table.list();
        let _ = table.info();
        let _ = table.revoke(name);
        let _ = table.revoke_token(name, 12345);
        let _ = table.request_release(name, None);
        let _ = table.request_release(name, Some(12345));
        let _ = table.renew(name, 12345, TTL);
        let _ = table.release(name, 12345);
    };
    for (i, bits) in [GROUP, GROUP | 1, GROUP | 300, GROUP | 1 << 40 | 2].into_iter().enumerate() {
        let name = format!("bad-head-{i}");
        drop(table.acquire_with(&name, TTL, &permits(2)).unwrap());
        let head = table.get(&name).unwrap().unwrap().slot;
        write_u64(&path, grant_offset(head), bits);
        match table.acquire_with(&name, TTL, &permits(2)) {
            Ok(_) | Err(Error::Corrupt { .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
        write_u64(&path, grant_offset(head), bits);
        match table.try_acquire(&name, TTL) {
            Ok(_) | Err(Error::Corrupt { .. } | Error::WrongKind { .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
        every_call(&name);
    }
    // A seat whose grant word was scribbled into a head: the name's other seat still
    // works, or the call says the table is corrupt; never a panic.
    let a = table.acquire_with("seat-head", TTL, &permits(2)).unwrap();
    let b = table.acquire_with("seat-head", TTL, &permits(2)).unwrap();
    let seat = table.get("seat-head").unwrap().unwrap().grants[1].slot;
    drop(b);
    write_u64(&path, grant_offset(seat), GROUP | 2);
    every_call("seat-head");
    drop(a);
    // A seat numbered beyond N, and one with an impossible deadline.
    let a = table.acquire_with("seats", TTL, &permits(2)).unwrap();
    let b = table.acquire_with("seats", TTL, &permits(2)).unwrap();
    let info = table.get("seats").unwrap().unwrap();
    let slot_of = |t: u64| info.grants.iter().find(|g| g.token == t).unwrap().slot;
    let (sa, sb) = (slot_of(a.token()), slot_of(b.token()));
    std::mem::forget(a);
    let bw = bind_word(&path, sa);
    write_u64(&path, grant_offset(sa) + 32, bw & !(0xff << 32) | 200 << 32);
    write_u64(&path, grant_offset(sb), (1 << 59) - 1);
    let c = table.acquire_with("seats", TTL, &permits(2)).expect("the free seat, rebound");
    let d = table.acquire_with("seats", TTL, &permits(2)).expect("the corrupt seat, reclaimed");
    assert!(d.token() > c.token());
    drop(b);
    check_group_info(&table.get("seats").unwrap().unwrap(), 2).unwrap();
    every_call("seats");
    drop(wd);
}

/// Attacks: tables too small for a name's head and seats. Capacity 1: the head alone
/// fills it, so no permit can be had (`TableFull`), and the idle head gives way to
/// another name. The defence: errors, never a hang or a panic, and the table stays
/// usable.
#[test]
fn tables_too_small_for_the_seats_answer_table_full() {
    let dir = Scratch::new("pa-tiny");
    let table = table(&dir, 1);
    for options in [permits(2), permits(2).wait(Some(Duration::from_millis(200)))] {
        match table.acquire_with("pool", TTL, &options) {
            Err(Error::TableFull { capacity: 1 }) => {}
            other => panic!("{other:?}"),
        }
    }
    let x = table.try_acquire("other", TTL).expect("the idle head makes room");
    assert!(matches!(table.acquire_with("pool", TTL, &permits(2)), Err(Error::TableFull { .. })));
    drop(x);
    let table = LeaseTable::create(dir.path("t2"), &TableOptions::new().capacity(3)).unwrap();
    let a = table.acquire_with("pool", TTL, &permits(5)).unwrap();
    let b = table.acquire_with("pool", TTL, &permits(5)).unwrap();
    match table.acquire_with("pool", TTL, &permits(5)) {
        Err(Error::TableFull { .. } | Error::Held { .. }) => {}
        other => panic!("{other:?}"),
    }
    drop(a);
    let c = table.acquire_with("pool", TTL, &permits(5)).unwrap();
    assert!(c.token() > b.token());
    check_group_info(&table.get("pool").unwrap().unwrap(), 5).unwrap();
}

/// Attacks: a blocking caller in a table with room for fewer seats than N (capacity 3,
/// N = 5: a head and two seats). Both seats are held; the caller asked to wait, and a
/// permit is released 300 ms later. The defence expected: it waits and gets that
/// permit (the name has bound seats that will free), as it would in a larger table.
#[test]
fn a_waiting_caller_in_a_table_smaller_than_n_waits_for_a_bound_seat() {
    let dir = Scratch::new("pa-tiny-wait");
    let table = table(&dir, 3);
    let a = table.acquire_with("pool", TTL, &permits(5)).unwrap();
    let _b = table.acquire_with("pool", TTL, &permits(5)).unwrap();
    let waiter = {
        let table = table.clone();
        std::thread::spawn(move || {
            table
                .acquire_with("pool", TTL, &permits(5).wait(Some(Duration::from_secs(30))))
                .map(|l| l.detach().unwrap().token)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let token = a.token();
    a.release().unwrap();
    let got = waiter.join().unwrap().expect("the waiting caller gets the released permit");
    assert!(got > token);
}

/// Attacks: a name whose head and seats fill the table exactly (capacity N + 1) while
/// another process keeps binding fresh names, so idle seats and the head are evicted
/// and rebound in the middle of acquisitions. The defence: never more than N inside,
/// tokens distinct and in return order; the only refusals are the honest `TableFull`.
#[test]
fn a_table_of_exactly_n_plus_one_slots_under_churn() {
    let wd = Watchdog::new("pa_exact", LONG * 2);
    let dir = Scratch::new("pa-exact");
    table(&dir, 4);
    let mut herd = start_herd(&wd, &dir, 4, 3, 200, |_| vec![("FULL_OK", s(1))]);
    let mut churn = start_churn(&wd, &dir.path("t"), 1, 3);
    let (_, tokens) = finish_herd(&mut herd);
    let done = churn.expect("DONE", LONG);
    assert!(done.ends_with(" 0"), "churn errors: {done}\n{}", churn.transcript());
    churn.wait_ok(LONG);
    assert_distinct(&tokens);
    assert!(tokens.len() > 50, "{} grants", tokens.len());
}

/// Attacks: `get` while a herd takes permits. `LeaseInfo::token` of a name with permits
/// is documented as the latest token taken, yet the head is read before the seats, so
/// a grant taken in between is shown with a token above it.
#[test]
fn the_names_latest_token_is_never_below_a_grant_it_shows() {
    let wd = Watchdog::new("pa_latest", LONG);
    let dir = Scratch::new("pa-latest");
    let table = table(&dir, 64);
    let mut herd = start_herd(&wd, &dir, 6, 3, 100, |_| vec![]);
    let mut bad = None;
    while herd.iter_mut().any(|k| k.try_status().is_none()) {
        if let Some(info) = table.get("pool").unwrap() {
            if info.grants.iter().any(|g| g.token > info.token) && bad.is_none() {
                bad = Some(info);
            }
        }
    }
    for k in &mut herd {
        k.wait_ok(LONG);
    }
    assert!(bad.is_none(), "{bad:#?}");
}

/// Attacks: a name whose exclusive holder was killed with SIGKILL (long TTL), then
/// wanted with permits. An exclusive caller would reclaim it at once (the holder is
/// provably dead); a caller with permits is told `WrongKind { recorded: Exclusive }`
/// until the dead holder's TTL runs out, because `make_group` refuses any `Held` word
/// without asking whether its holder is dead.
#[test]
fn a_dead_exclusive_holders_name_can_be_redefined_with_permits_at_once() {
    let wd = Watchdog::new("pa_dead_exclusive", LONG);
    let dir = Scratch::new("pa-dead-x");
    let path = dir.path("t");
    let table = table(&dir, 32);
    let mut kid = Kid::spawn(
        &wd,
        "holder",
        "hold",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("pool")),
            ("TTL_MS", s(600_000)),
            ("ACTION", s("forever")),
        ],
    );
    kid.expect("READY", LONG);
    kid.kill();
    let got = table.acquire_with("pool", TTL, &permits(2));
    assert!(got.is_ok(), "permits on a dead holder's exclusive name: {got:?}");
}
