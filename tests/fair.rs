//! Fair acquisition: fair acquirers are granted a name in the order they arrived
//! (announced to the test one after another: each is in the queue before the next one
//! starts), for every kind of name; a waiter in the middle of the queue that dies, is
//! stopped, or times out is passed over; a fair caller that does not wait does not pass
//! the queue. Real processes, kill -9 and SIGSTOP.

mod common;

use std::time::Duration;

use common::{permits, s, shared, table, wait_until, Kid, Scratch, Watchdog, LONG, TTL};
use shmlease::{AcquireOptions, Error, LeaseTable};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

/// Starts fair waiters on `name` one after another, each once the previous one has its
/// place in the queue (so the arrival order is known): `(kind, wait_ms)` each.
fn queue_up(
    wd: &Watchdog,
    table: &LeaseTable,
    path: &std::path::Path,
    name: &str,
    waiters: &[(&str, u64)],
) -> Vec<Kid> {
    let mut kids = Vec::new();
    for (i, (kind, wait_ms)) in waiters.iter().enumerate() {
        let kid = Kid::spawn(
            wd,
            &format!("w{i}"),
            "fair_wait",
            &[
                ("TABLE", s(path.display())),
                ("NAME", s(name)),
                ("KIND", s(kind)),
                ("WAIT_MS", s(wait_ms)),
                ("HOLD_MS", s(30)),
            ],
        );
        kids.push(kid);
        wait_until(&format!("waiter {i} took its place"), || {
            table.get(name).unwrap().map_or(0, |info| info.queue.len()) > i
        });
    }
    kids
}

/// The order in which `kids` were granted (by their grant tokens).
fn grant_order(kids: &mut [Kid]) -> Vec<usize> {
    let mut got: Vec<(u64, usize)> = kids
        .iter_mut()
        .enumerate()
        .map(|(i, k)| (k.expect("GOT", LONG).parse().unwrap(), i))
        .collect();
    for k in kids.iter_mut() {
        k.wait_ok(LONG);
    }
    got.sort();
    got.into_iter().map(|(_, i)| i).collect()
}

#[test]
fn fair_waiters_are_granted_in_arrival_order() {
    let wd = Watchdog::new("fair_order", LONG * 2);
    let dir = Scratch::new("order");
    let path = dir.path("t");
    let table = table(&dir, 64);
    let held = table.try_acquire("printer", TTL).unwrap();
    let mut kids = queue_up(&wd, &table, &path, "printer", &[("exclusive", 60_000); 5]);
    let info = table.get("printer").unwrap().unwrap();
    assert!(info.queue.windows(2).all(|w| w[0].ticket < w[1].ticket));
    let pids: Vec<u32> = info.queue.iter().map(|q| q.holder.unwrap().pid).collect();
    assert_eq!(pids, kids.iter().map(|k| k.pid() as u32).collect::<Vec<_>>(), "queue order");
    drop(held);
    assert_eq!(grant_order(&mut kids), vec![0, 1, 2, 3, 4]);
    assert!(table.get("printer").unwrap().unwrap().queue.is_empty());
}

#[test]
fn a_fair_caller_that_does_not_wait_does_not_pass_the_queue() {
    let wd = Watchdog::new("fair_try", LONG);
    let dir = Scratch::new("try");
    let path = dir.path("t");
    let table = table(&dir, 64);
    let held = table.try_acquire("printer", TTL).unwrap();
    let mut kids = queue_up(&wd, &table, &path, "printer", &[("exclusive", 60_000)]);
    let fair_try = AcquireOptions::new().fair(true);
    assert!(matches!(table.acquire_with("printer", TTL, &fair_try), Err(Error::Held { .. })));
    drop(held);
    kids[0].expect("GOT", LONG);
    kids[0].wait_ok(LONG);
    // Queue empty again: a fair try takes a free name at once.
    table.acquire_with("printer", TTL, &fair_try).unwrap();
}

/// The waiter in the middle is killed, stopped, or times out: the one behind it is
/// granted next, without the middle one ever being granted first.
#[test]
fn a_dead_stopped_or_timed_out_waiter_in_the_middle_is_passed_over() {
    let wd = Watchdog::new("fair_middle", LONG * 3);
    for how in ["kill", "stop", "timeout"] {
        let dir = Scratch::new(&format!("middle-{how}"));
        let path = dir.path("t");
        let table = table(&dir, 64);
        let held = table.try_acquire("printer", TTL).unwrap();
        let middle_wait = if how == "timeout" { 400 } else { 60_000 };
        let mut kids = queue_up(
            &wd,
            &table,
            &path,
            "printer",
            &[("exclusive", 60_000), ("exclusive", middle_wait), ("exclusive", 60_000)],
        );
        match how {
            "kill" => {
                kids[1].kill();
            }
            "stop" => {
                kids[1].signal(libc::SIGSTOP);
                kids[1].wait_state(b'T', LONG);
            }
            _ => assert_eq!(kids[1].expect("TIMEDOUT", LONG), "0"),
        }
        drop(held);
        let first: u64 = kids[0].expect("GOT", LONG).parse().unwrap();
        let third: u64 = kids[2].expect("GOT", LONG).parse().unwrap();
        assert!(third > first, "{how}: the third waiter came before the first");
        kids[0].wait_ok(LONG);
        kids[2].wait_ok(LONG);
        if how == "stop" {
            // Continued, it lost its place and takes a new one: granted last.
            kids[1].signal(libc::SIGCONT);
            let late: u64 = kids[1].expect("GOT", LONG).parse().unwrap();
            assert!(late > third, "the stopped waiter was served before the third");
            kids[1].wait_ok(LONG);
        }
        if how == "timeout" {
            kids[1].wait_ok(LONG);
        }
    }
}

/// Fairness for every kind: permits freed one at a time go to waiters in arrival
/// order; on a shared name, a fair exclusive waiter queued ahead of a fair shared one
/// goes first (the shared one does not pass it), and the shared one next.
#[test]
fn arrival_order_holds_for_permits_and_across_shared_and_exclusive() {
    let wd = Watchdog::new("fair_kinds", LONG * 2);
    let dir = Scratch::new("kinds");
    let path = dir.path("t");
    let table = table(&dir, 128);
    let two = permits(2);
    let a = table.acquire_with("pool", TTL, &two).unwrap();
    let b = table.acquire_with("pool", TTL, &two).unwrap();
    let mut kids = queue_up(&wd, &table, &path, "pool", &[("permits:2", 60_000); 3]);
    drop(a);
    drop(b);
    assert_eq!(grant_order(&mut kids), vec![0, 1, 2]);

    let r = table.acquire_with("doc", TTL, &shared()).unwrap();
    let mut kids =
        queue_up(&wd, &table, &path, "doc", &[("exclusive", 60_000), ("shared", 60_000)]);
    drop(r);
    assert_eq!(grant_order(&mut kids), vec![0, 1]);
}

/// A fair exclusive acquirer first in line for a shared name keeps the name's head while
/// it waits for the shared holders (it used to wait in 0.5 s slices, giving the head up
/// between them, which let a waiting shared acquirer in ahead of it).
#[test]
fn a_fair_exclusive_acquirer_keeps_shared_acquirers_out_while_it_waits() {
    let dir = Scratch::new("fair-writer");
    let table = table(&dir, 128);
    let r1 = table.acquire_with("doc", TTL, &shared()).unwrap();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let fair = AcquireOptions::new().fair(true).wait(Some(LONG));
            table.acquire_with("doc", TTL, &fair).map(|l| l.token())
        });
        // Until the writer holds the head (draining), a shared try still gets in.
        wait_until("the fair writer started draining", || {
            table.get("doc").unwrap().unwrap().grants.iter().any(|g| !g.shared)
        });
        let waited =
            table.acquire_with("doc", TTL, &shared().wait(Some(Duration::from_millis(1500))));
        assert!(
            matches!(waited, Err(Error::TimedOut { .. })),
            "a shared acquirer passed: {waited:?}"
        );
        drop(r1);
        assert!(writer.join().unwrap().is_ok());
    });
}

/// A fair waiter in a table with no slot left for its place is told so (`TableFull`),
/// not that the queue is full; with a slot free again it queues and is granted.
#[test]
fn a_fair_waiter_without_a_slot_for_its_place_is_told_the_table_is_full() {
    let _wd = Watchdog::new("fair_full_table", LONG);
    let dir = Scratch::new("full");
    let capacity = 8;
    let table = table(&dir, capacity);
    let held = table.try_acquire("printer", TTL).unwrap();
    let mut fillers: Vec<_> =
        (1..capacity).map(|i| table.try_acquire(&format!("f{i}"), TTL).unwrap()).collect();
    let fair = AcquireOptions::new().fair(true).wait(Some(Duration::from_millis(100)));
    match table.acquire_with("printer", TTL, &fair) {
        Err(Error::TableFull { capacity: c }) => assert_eq!(c, capacity),
        other => panic!("expected TableFull, got {other:?}"),
    }
    // One slot free: the waiter's place fits, and it is granted once the holder leaves.
    fillers.pop().unwrap().release().unwrap();
    let fair = AcquireOptions::new().fair(true).wait(Some(LONG));
    let lease = std::thread::scope(|scope| {
        scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            held.release().unwrap();
        });
        table.acquire_with("printer", TTL, &fair).unwrap()
    });
    assert!(table.get("printer").unwrap().unwrap().queue.is_empty());
    lease.release().unwrap();
}
