//! Interruptible waits (`AcquireOptions::interrupt`): a waiting acquisition of every
//! kind ends with `Interrupted` soon after its check says stop, having given up what it
//! held while waiting (a fair queue's place, an exclusive acquirer's hold on a shared
//! name); and a check that never says stop changes nothing — in particular, a waiting
//! exclusive acquirer of a shared name keeps shared acquirers out for the whole wait,
//! although the wait wakes every 50 ms to ask.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Scratch, Watchdog};
use shmlease::{AcquireOptions, Error, Interrupt, LeaseTable, TableOptions, INTERRUPT_POLL};

const LONG: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(30);

fn table(dir: &Scratch) -> LeaseTable {
    LeaseTable::create(dir.path("t"), &TableOptions::new().capacity(256)).unwrap()
}

/// A check that says stop once `flag` is set, counting how often it is asked.
fn flag_check(flag: &Arc<AtomicBool>, asked: &Arc<AtomicU32>) -> Interrupt {
    let (flag, asked) = (Arc::clone(flag), Arc::clone(asked));
    Interrupt::new(move || {
        asked.fetch_add(1, Ordering::Relaxed);
        flag.load(Ordering::Relaxed)
    })
}

/// Waits until `done` holds, or panics after `LONG`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let end = Instant::now() + LONG;
    while !done() {
        assert!(Instant::now() < end, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// For each kind: a wait without a time limit, held up by a holder that stays, ends
/// with `Interrupted` once its check says stop (asked again and again before that: the
/// wait polls), and the holders are untouched, nothing left in the queue.
#[test]
fn every_kind_of_wait_ends_when_its_check_says_stop() {
    let _wd = Watchdog::new("interrupt_kinds", LONG);
    let dir = Scratch::new("int-kinds");
    let table = table(&dir);
    let kinds: [(&str, AcquireOptions); 5] = [
        ("exclusive", AcquireOptions::new()),
        ("permits", AcquireOptions::new().permits(2).unwrap()),
        ("shared", AcquireOptions::new().shared(true)),
        ("fair", AcquireOptions::new().fair(true)),
        ("shared-fair", AcquireOptions::new().shared(true).fair(true)),
    ];
    for (i, (kind, options)) in kinds.into_iter().enumerate() {
        let name = format!("n{i}");
        // Holders that leave no room: an exclusive one (for shared: refused shared
        // grants), or every permit.
        let holders: Vec<_> = match kind {
            "permits" => {
                (0..2).map(|_| table.acquire_with(&name, TTL, &options).unwrap()).collect()
            }
            "shared" | "shared-fair" => {
                // Make the name shared, then hold it exclusively.
                drop(table.acquire_with(&name, TTL, &AcquireOptions::new().shared(true)).unwrap());
                vec![table.try_acquire(&name, TTL).unwrap()]
            }
            _ => vec![table.try_acquire(&name, TTL).unwrap()],
        };
        let (flag, asked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let waiting = options.wait(None).interrupt(flag_check(&flag, &asked));
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                wait_until("asked twice", || asked.load(Ordering::Relaxed) >= 2);
                flag.store(true, Ordering::Relaxed);
            });
            table.acquire_with(&name, TTL, &waiting)
        });
        match got {
            Err(Error::Interrupted { .. }) => {}
            other => panic!("{kind}: {other:?}"),
        }
        for h in &holders {
            assert!(h.is_valid(), "{kind}: a holder lost its lease");
        }
        let info = table.get(&name).unwrap().unwrap();
        assert!(info.queue.is_empty(), "{kind}: a place left in the queue: {:?}", info.queue);
        assert_eq!(info.grants.len(), holders.len(), "{kind}: {:?}", info.grants);
    }
}

/// A check is asked only while waiting: never by an acquisition that does not wait, nor
/// by one granted at once.
#[test]
fn a_check_is_not_asked_when_nothing_waits() {
    let dir = Scratch::new("int-nowait");
    let table = table(&dir);
    let (flag, asked) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
    let stop_now = flag_check(&flag, &asked);
    let free = table
        .acquire_with("a", TTL, &AcquireOptions::new().wait(None).interrupt(stop_now.clone()))
        .unwrap();
    match table.acquire_with("a", TTL, &AcquireOptions::new().interrupt(stop_now)) {
        Err(Error::Held { token, .. }) => assert_eq!(token, free.token()),
        other => panic!("{other:?}"),
    }
    assert_eq!(asked.load(Ordering::Relaxed), 0);
}

/// The exclusive acquirer of a shared name, waiting with a check that never says stop,
/// blocks new shared grants for its whole wait (its hold on the name lasts across the
/// wait's wake-ups); interrupted, it lets them in at once.
#[test]
fn a_waiting_exclusive_acquirer_keeps_its_precedence_until_interrupted() {
    let _wd = Watchdog::new("interrupt_precedence", LONG);
    let dir = Scratch::new("int-prec");
    let table = table(&dir);
    let shared = AcquireOptions::new().shared(true);
    let reader = table.acquire_with("db", TTL, &shared).unwrap();
    let (flag, asked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let writer = AcquireOptions::new().wait(None).interrupt(flag_check(&flag, &asked));
    let got = std::thread::scope(|s| {
        let waiter = s.spawn(|| table.acquire_with("db", TTL, &writer));
        // The writer holds the head (waiting for the reader): shared grants refused,
        // through at least ten of its wake-ups.
        wait_until("the writer waits", || {
            matches!(table.acquire_with("db", TTL, &shared), Err(Error::Held { .. }))
        });
        let from = asked.load(Ordering::Relaxed);
        wait_until("ten more wake-ups", || asked.load(Ordering::Relaxed) >= from + 10);
        // Tried again and again through them, a shared acquisition never gets in.
        for _ in 0..20 {
            match table.acquire_with("db", TTL, &shared) {
                Err(Error::Held { .. }) => {}
                other => panic!("a shared grant while an exclusive acquirer waits: {other:?}"),
            }
            std::thread::sleep(INTERRUPT_POLL / 4);
        }
        flag.store(true, Ordering::Relaxed);
        waiter.join().unwrap()
    });
    assert!(matches!(got, Err(Error::Interrupted { .. })), "{got:?}");
    // Given up: shared holders come in at once, beside the reader that stayed.
    let second = table.acquire_with("db", TTL, &shared).unwrap();
    assert!(reader.is_valid() && second.is_valid());
    assert_eq!(table.get("db").unwrap().unwrap().grants.len(), 2);
}

/// A fair waiter keeps its place through its wake-ups (the one behind it is not served
/// first), and an interrupted one gives its place up at once: the one behind it is
/// served next.
#[test]
fn an_interrupted_fair_waiter_leaves_the_queue_and_the_next_is_served() {
    let _wd = Watchdog::new("interrupt_fair", LONG);
    let dir = Scratch::new("int-fair");
    let table = table(&dir);
    let holder = table.try_acquire("printer", TTL).unwrap();
    let (flag, asked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let first = AcquireOptions::new().fair(true).wait(None).interrupt(flag_check(&flag, &asked));
    let second = AcquireOptions::new().fair(true).wait(Some(LONG));
    let queue_len = || table.get("printer").unwrap().map_or(0, |i| i.queue.len());
    std::thread::scope(|s| {
        let a = s.spawn(|| table.acquire_with("printer", TTL, &first));
        wait_until("the first in line", || queue_len() == 1);
        let b = s.spawn(|| table.acquire_with("printer", TTL, &second));
        wait_until("the second in line", || queue_len() == 2);
        let from = asked.load(Ordering::Relaxed);
        wait_until("wake-ups", || asked.load(Ordering::Relaxed) >= from + 5);
        assert_eq!(queue_len(), 2, "a place lost across wake-ups");
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(a.join().unwrap(), Err(Error::Interrupted { .. })));
        wait_until("one left in line", || queue_len() == 1);
        drop(holder);
        let lease = b.join().unwrap().unwrap();
        assert!(lease.is_valid());
    });
}

/// A check that panics: the panic reaches the caller of `acquire_with`, after the wait
/// gave up what it held (the exclusive acquirer's hold on a shared name, a fair place),
/// so the name is not held up by a wait that no longer exists.
#[test]
fn a_panicking_check_reaches_the_caller_after_the_wait_let_go() {
    let _wd = Watchdog::new("interrupt_panic", LONG);
    let dir = Scratch::new("int-panic");
    let table = table(&dir);
    let shared = AcquireOptions::new().shared(true);
    let reader = table.acquire_with("db", TTL, &shared).unwrap();
    let asked = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&asked);
    let bomb = Interrupt::new(move || {
        if counter.fetch_add(1, Ordering::Relaxed) >= 3 {
            panic!("check exploded");
        }
        false
    });
    for options in [
        AcquireOptions::new().wait(None).interrupt(bomb.clone()),
        AcquireOptions::new().fair(true).wait(None).interrupt(bomb.clone()),
    ] {
        asked.store(0, Ordering::Relaxed);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table.acquire_with("db", TTL, &options).map(|l| l.token())
        }));
        let payload = caught.expect_err("the check's panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"check exploded"));
        // Let go: a shared grant comes at once, and nobody is left in line.
        let second = table.acquire_with("db", TTL, &shared).unwrap();
        let info = table.get("db").unwrap().unwrap();
        assert!(info.queue.is_empty(), "{:?}", info.queue);
        assert_eq!(info.grants.len(), 2);
        drop(second);
    }
    assert!(reader.is_valid());
}
