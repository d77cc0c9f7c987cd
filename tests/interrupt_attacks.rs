//! Attacks on interruptible waits (`AcquireOptions::interrupt`) and on the fair queue's
//! place handling: checks that say stop at once, that block for long, waits of zero,
//! stopped holders, many fair waiters interrupted in random order, crowded tables.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{s, wait_until, Kid, Rng, Scratch, Watchdog, LONG, TTL};
use shmlease::{AcquireOptions, Error, Interrupt, LeaseTable, TableOptions};

#[test]
#[ignore]
fn child_main() {
    if std::env::var(common::ROLE).as_deref() == Ok("ia_fair_usr1") {
        std::process::exit(role_fair_usr1());
    }
    common::run_child();
}

static USR1: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.store(true, Ordering::Relaxed);
}

/// A fair waiter for `NAME` (forever) whose check says stop once SIGUSR1 came: reports
/// `GOT token` and `RELEASED token` (holding it `HOLD_MS`), or `INTERRUPTED`.
fn role_fair_usr1() -> i32 {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as usize) };
    let table = LeaseTable::open(std::env::var("SHMLEASE_IT_TABLE").unwrap()).unwrap();
    let name = std::env::var("SHMLEASE_IT_NAME").unwrap();
    let hold: u64 = std::env::var("SHMLEASE_IT_HOLD_MS").unwrap().parse().unwrap();
    let o = AcquireOptions::new()
        .fair(true)
        .wait(None)
        .interrupt(Interrupt::new(|| USR1.load(Ordering::Relaxed)));
    let got = table.acquire_with(&name, TTL, &o);
    match got {
        Ok(lease) => {
            common::say("GOT", lease.token());
            std::thread::sleep(Duration::from_millis(hold));
            let token = lease.token();
            lease.release().unwrap();
            common::say("RELEASED", token);
            0
        }
        Err(Error::Interrupted { .. }) => {
            common::say("INTERRUPTED", 0);
            0
        }
        Err(e) => {
            common::say("ERR", format!("{e:?}"));
            20
        }
    }
}

fn table(dir: &Scratch, capacity: u32) -> LeaseTable {
    LeaseTable::create(dir.path("t"), &TableOptions::new().capacity(capacity)).unwrap()
}

fn queue_len(table: &LeaseTable, name: &str) -> usize {
    table.get(name).unwrap().map_or(0, |i| i.queue.len())
}

fn kinds() -> [(&'static str, AcquireOptions); 6] {
    [
        ("exclusive", AcquireOptions::new()),
        ("permits", AcquireOptions::new().permits(2).unwrap()),
        ("shared", AcquireOptions::new().shared(true)),
        ("exclusive-of-shared", AcquireOptions::new()),
        ("fair", AcquireOptions::new().fair(true)),
        ("shared-fair", AcquireOptions::new().shared(true).fair(true)),
    ]
}

/// Holders of `name` that leave no room for an acquisition of `kind`.
fn block<'t>(table: &'t LeaseTable, name: &str, kind: &str) -> Vec<shmlease::Lease<'t>> {
    let shared = AcquireOptions::new().shared(true);
    match kind {
        "permits" => {
            let two = AcquireOptions::new().permits(2).unwrap();
            (0..2).map(|_| table.acquire_with(name, TTL, &two).unwrap()).collect()
        }
        "shared" | "shared-fair" => {
            drop(table.acquire_with(name, TTL, &shared).unwrap());
            vec![table.try_acquire(name, TTL).unwrap()]
        }
        // A reader that the exclusive acquirer must drain.
        "exclusive-of-shared" => vec![table.acquire_with(name, TTL, &shared).unwrap()],
        _ => vec![table.try_acquire(name, TTL).unwrap()],
    }
}

/// A check that says stop the first time it is asked, and a wait of zero or of a
/// nanosecond with a check: every kind ends at once (Interrupted, or TimedOut without
/// asking), nothing left in the queue, the holders untouched, and the name's grants as
/// they were.
#[test]
fn a_check_that_says_stop_at_once_or_no_time_to_wait_leaves_nothing_behind() {
    let _wd = Watchdog::new("ia_at_once", LONG);
    let dir = Scratch::new("ia-at-once");
    let table = table(&dir, 256);
    for (i, (kind, options)) in kinds().into_iter().enumerate() {
        for (j, wait) in
            [None, Some(Duration::ZERO), Some(Duration::from_nanos(1))].into_iter().enumerate()
        {
            let name = format!("n{i}-{j}");
            let holders = block(&table, &name, kind);
            let asked = Arc::new(AtomicU32::new(0));
            let counter = Arc::clone(&asked);
            let stop = Interrupt::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                true
            });
            let o = options.clone().wait(wait).interrupt(stop);
            match (wait, table.acquire_with(&name, TTL, &o)) {
                (None, Err(Error::Interrupted { .. })) => {
                    assert_eq!(asked.load(Ordering::Relaxed), 1, "{kind}")
                }
                (Some(_), Err(Error::TimedOut { .. })) => {}
                (_, other) => panic!("{kind} {wait:?}: {other:?}"),
            }
            let info = table.get(&name).unwrap().unwrap();
            assert!(info.queue.is_empty(), "{kind} {wait:?}: {:?}", info.queue);
            assert_eq!(info.grants.len(), holders.len(), "{kind} {wait:?}: {:?}", info.grants);
            assert!(holders.iter().all(|h| h.is_valid()), "{kind} {wait:?}");
            // What the wait held is given up: the name's next acquirer of the same
            // kind (without a check) is served once the holders leave.
            drop(holders);
            let next = table.acquire_with(&name, TTL, &options.clone().wait(Some(LONG)));
            assert!(next.is_ok(), "{kind} {wait:?}: {next:?}");
        }
    }
}

/// The exclusive acquirer of a shared name whose check blocks (a Python signal handler
/// that runs long, a GIL held by another thread) for twice its TTL: its hold on the
/// name must be kept renewed meanwhile — no shared grant may start while it waits.
#[test]
fn a_drain_keeps_its_hold_while_its_check_blocks() {
    let _wd = Watchdog::new("ia_drain_block", LONG);
    let dir = Scratch::new("ia-drain-block");
    let table = table(&dir, 256);
    let shared = AcquireOptions::new().shared(true);
    let reader = table.acquire_with("db", TTL, &shared).unwrap();
    let ttl = Duration::from_millis(300);
    let (stop, asked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let (flag, counter) = (Arc::clone(&stop), Arc::clone(&asked));
    let check = Interrupt::new(move || {
        if counter.fetch_add(1, Ordering::Relaxed) == 3 {
            std::thread::sleep(2 * ttl + Duration::from_millis(200));
        }
        flag.load(Ordering::Relaxed)
    });
    let writer = AcquireOptions::new().wait(None).interrupt(check);
    let got_in = std::thread::scope(|s| {
        let w = s.spawn(|| table.acquire_with("db", ttl, &writer).map(|l| l.token()));
        wait_until("the writer waits", || {
            matches!(table.acquire_with("db", TTL, &shared), Err(Error::Held { .. }))
        });
        let mut got_in = Vec::new();
        // Through the blocked check and a while after it.
        while asked.load(Ordering::Relaxed) < 15 {
            if let Ok(l) = table.acquire_with("db", TTL, &shared) {
                got_in.push(l.token());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(w.join().unwrap(), Err(Error::Interrupted { .. })));
        got_in
    });
    assert!(reader.is_valid());
    assert!(got_in.is_empty(), "shared grants started while the writer waited: {got_in:?}");
}

/// A fair waiter behind another, whose check blocks for longer than a place's TTL:
/// it must keep its place (the waiter that arrived after it must not be served first).
#[test]
fn a_fair_waiter_keeps_its_place_while_its_check_blocks() {
    let _wd = Watchdog::new("ia_fair_block", LONG);
    let dir = Scratch::new("ia-fair-block");
    let table = table(&dir, 256);
    let holder = table.try_acquire("printer", TTL).unwrap();
    let fair = AcquireOptions::new().fair(true).wait(Some(LONG));
    let asked = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&asked);
    let blocked = Arc::new(AtomicBool::new(false));
    let b2 = Arc::clone(&blocked);
    let check = Interrupt::new(move || {
        if counter.fetch_add(1, Ordering::Relaxed) == 3 {
            b2.store(true, Ordering::Relaxed);
            std::thread::sleep(shmlease::PLACE_TTL + Duration::from_millis(1500));
            b2.store(false, Ordering::Relaxed);
        }
        false
    });
    let order = Mutex::new(Vec::new());
    let second_o = fair.clone().interrupt(check);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let l = table.acquire_with("printer", TTL, &fair).unwrap();
            order.lock().unwrap().push("first");
            l
        });
        wait_until("first in line", || queue_len(&table, "printer") == 1);
        let second = s.spawn(|| {
            let l = table.acquire_with("printer", TTL, &second_o).unwrap();
            order.lock().unwrap().push("second");
            drop(l);
        });
        wait_until("second in line", || queue_len(&table, "printer") == 2);
        let third = s.spawn(|| {
            let l = table.acquire_with("printer", TTL, &fair).unwrap();
            order.lock().unwrap().push("third");
            drop(l);
        });
        wait_until("third in line", || queue_len(&table, "printer") == 3);
        wait_until("the check blocks", || blocked.load(Ordering::Relaxed));
        drop(holder);
        let l = first.join().unwrap();
        wait_until("the check is back", || !blocked.load(Ordering::Relaxed));
        drop(l);
        second.join().unwrap();
        third.join().unwrap();
    });
    assert_eq!(*order.lock().unwrap(), ["first", "second", "third"]);
}

/// A fair wait, and an exclusive one, on a name whose holder is a stopped process: the
/// check ends them (the stopped holder keeps its lease), no place left behind.
#[test]
fn a_wait_for_a_stopped_holder_ends_on_its_check() {
    let wd = Watchdog::new("ia_stopped", LONG);
    let dir = Scratch::new("ia-stopped");
    let table = table(&dir, 256);
    let path = dir.path("t");
    let mut kid = Kid::spawn(
        &wd,
        "holder",
        "hold",
        &[
            ("TABLE", s(path.display())),
            ("NAME", s("job")),
            ("TTL_MS", s(20_000)),
            ("ACTION", s("forever")),
        ],
    );
    let token: u64 = kid.expect("READY", LONG).parse().unwrap();
    kid.signal(libc::SIGSTOP);
    kid.wait_state(b'T', LONG);
    for options in [AcquireOptions::new(), AcquireOptions::new().fair(true)] {
        let (flag, asked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let (f, a) = (Arc::clone(&flag), Arc::clone(&asked));
        let o = options.wait(None).interrupt(Interrupt::new(move || {
            a.fetch_add(1, Ordering::Relaxed);
            f.load(Ordering::Relaxed)
        }));
        std::thread::scope(|s| {
            let w = s.spawn(|| table.acquire_with("job", TTL, &o).map(|l| l.token()));
            wait_until("asked", || asked.load(Ordering::Relaxed) >= 3);
            flag.store(true, Ordering::Relaxed);
            let got = w.join().unwrap();
            assert!(matches!(got, Err(Error::Interrupted { .. })), "{got:?}");
        });
        let info = table.get("job").unwrap().unwrap();
        assert!(info.queue.is_empty(), "{:?}", info.queue);
        assert_eq!(info.token, token);
    }
    kid.signal(libc::SIGCONT);
    kid.kill();
}

/// Eight fair waiters line up; a random half are interrupted, in random order; the
/// others are served in arrival order, each once, and no place is left behind.
#[test]
fn fair_waiters_interrupted_in_random_order_leave_the_rest_in_order() {
    let _wd = Watchdog::new("ia_random", LONG);
    let dir = Scratch::new("ia-random");
    let table = table(&dir, 256);
    for seed in 1..=3u64 {
        let name = format!("q{seed}");
        let mut rng = Rng::new(seed);
        let mut holder = Some(table.try_acquire(&name, TTL).unwrap());
        let n = 8;
        let flags: Vec<_> = (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let served = Mutex::new(Vec::new());
        let tokens = Mutex::new(Vec::new());
        let granted = AtomicU64::new(0);
        std::thread::scope(|s| {
            let mut waiters = Vec::new();
            for (i, flag) in flags.iter().enumerate() {
                let f = Arc::clone(flag);
                let o = AcquireOptions::new()
                    .fair(true)
                    .wait(Some(LONG))
                    .interrupt(Interrupt::new(move || f.load(Ordering::Relaxed)));
                let (table, name, served, tokens, granted) =
                    (&table, &name, &served, &tokens, &granted);
                waiters.push(s.spawn(move || match table.acquire_with(name, TTL, &o) {
                    Ok(l) => {
                        assert_eq!(granted.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        served.lock().unwrap().push(i);
                        tokens.lock().unwrap().push(l.token());
                        std::thread::sleep(Duration::from_millis(5));
                        granted.fetch_sub(1, Ordering::SeqCst);
                        true
                    }
                    Err(Error::Interrupted { .. }) => false,
                    Err(e) => panic!("waiter {i}: {e}"),
                }));
                wait_until("in line", || queue_len(table, name) == i + 1);
            }
            let mut gone: Vec<usize> = (0..n).collect();
            // Shuffle, keep half.
            for k in (1..gone.len()).rev() {
                gone.swap(k, rng.below(k as u64 + 1) as usize);
            }
            gone.truncate(n / 2);
            for (k, &i) in gone.iter().enumerate() {
                flags[i].store(true, Ordering::Relaxed);
                if k == gone.len() / 2 {
                    drop(holder.take()); // released mid-way: some are served meanwhile
                }
                std::thread::sleep(Duration::from_millis(rng.below(30)));
            }
            drop(holder.take());
            let results: Vec<bool> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
            let served = served.lock().unwrap().clone();
            let expect: Vec<usize> = (0..n).filter(|i| results[*i]).collect();
            // Everyone not interrupted was served, once, in arrival order; an interrupted
            // one may have been served before its flag was seen.
            let survivors: Vec<usize> = (0..n).filter(|i| !gone.contains(i)).collect();
            for i in &survivors {
                assert!(results[*i], "seed {seed}: waiter {i} not served");
            }
            assert_eq!(served, expect, "seed {seed}: served out of arrival order");
        });
        let t = tokens.lock().unwrap().clone();
        assert!(t.windows(2).all(|w| w[0] < w[1]), "seed {seed}: tokens {t:?}");
        assert_eq!(queue_len(&table, &name), 0, "seed {seed}: places left behind");
    }
}

/// Seven waiting processes in line: three are interrupted (SIGUSR1, in random order),
/// one is killed, one is stopped past its place's TTL and continued (it queues again,
/// at the back). Everyone left is served once, in the order of its place; nothing is
/// left in the queue.
#[test]
fn waiting_processes_interrupted_killed_and_stopped_leave_the_rest_in_order() {
    let wd = Watchdog::new("ia_procs", LONG);
    let dir = Scratch::new("ia-procs");
    let table = table(&dir, 256);
    let path = dir.path("t");
    let holder = table.try_acquire("q", TTL).unwrap();
    let mut kids: Vec<Kid> = Vec::new();
    for i in 0..7 {
        let env = [("TABLE", s(path.display())), ("NAME", s("q")), ("HOLD_MS", s(20))];
        kids.push(Kid::spawn(&wd, &format!("w{i}"), "ia_fair_usr1", &env));
        wait_until("in line", || queue_len(&table, "q") == i + 1);
    }
    let mut rng = Rng::new(11);
    let mut interrupted = vec![1usize, 3, 5];
    for k in (1..interrupted.len()).rev() {
        interrupted.swap(k, rng.below(k as u64 + 1) as usize);
    }
    for &i in &interrupted {
        kids[i].signal(libc::SIGUSR1);
        assert_eq!(kids[i].expect("INTERRUPTED", LONG), "0", "{}", kids[i].transcript());
    }
    kids[4].kill();
    kids[2].signal(libc::SIGSTOP);
    kids[2].wait_state(b'T', LONG);
    // Its place lapses (2 s); the dead one's is passed over.
    wait_until("two left in line", || queue_len(&table, "q") == 2);
    kids[2].signal(libc::SIGCONT);
    wait_until("it queued again", || queue_len(&table, "q") == 3);
    drop(holder);
    let mut served = Vec::new();
    for i in [0usize, 6, 2] {
        let got: u64 = kids[i].expect("GOT", LONG).parse().unwrap();
        kids[i].expect("RELEASED", LONG);
        kids[i].wait_ok(LONG);
        served.push(got);
    }
    assert!(served.windows(2).all(|w| w[0] < w[1]), "not served in line order: {served:?}");
    for &i in &interrupted {
        kids[i].wait_ok(LONG);
        assert!(kids[i].reports("GOT").is_empty(), "{}", kids[i].transcript());
    }
    assert_eq!(queue_len(&table, "q"), 0);
}

/// A crowded table (8 slots): fair waiters take places until none can be bound; the
/// next fair acquirer fails at once (no hang, no place counted); interrupted, the
/// waiters' places are given back and the table holds seven other names again.
#[test]
fn fair_places_in_a_crowded_table() {
    let _wd = Watchdog::new("ia_crowded", LONG);
    let dir = Scratch::new("ia-crowded");
    let table = table(&dir, 8);
    let holder = table.try_acquire("a", TTL).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    let o = AcquireOptions::new()
        .fair(true)
        .wait(None)
        .interrupt(Interrupt::new(move || f.load(Ordering::Relaxed)));
    std::thread::scope(|s| {
        let mut waiters = Vec::new();
        for i in 0..7 {
            waiters.push(s.spawn(|| table.acquire_with("a", TTL, &o).map(|l| l.token())));
            wait_until("in line", || queue_len(&table, "a") == i + 1);
        }
        // No slot left for a place: refused at once, whatever the wait.
        for wait in [None, Some(Duration::from_millis(100))] {
            match table.acquire_with("a", TTL, &o.clone().wait(wait)) {
                Err(Error::TableFull { .. } | Error::Busy { .. }) => {}
                other => panic!("{wait:?}: {other:?}"),
            }
        }
        // Nor for another name.
        assert!(matches!(table.try_acquire("b", TTL), Err(Error::TableFull { .. })));
        flag.store(true, Ordering::Relaxed);
        for w in waiters {
            assert!(matches!(w.join().unwrap(), Err(Error::Interrupted { .. })));
        }
    });
    assert_eq!(queue_len(&table, "a"), 0);
    drop(holder);
    let others: Vec<_> =
        (0..8).map(|i| table.try_acquire(&format!("o{i}"), TTL).unwrap()).collect();
    assert_eq!(others.len(), 8);
    drop(others);
    // And the fair path still works: with nobody queued, at once.
    let l = table.acquire_with("a", TTL, &AcquireOptions::new().fair(true).wait(None)).unwrap();
    assert!(l.is_valid());
}
