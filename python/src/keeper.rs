//! The keeper: one thread per process that starts the library's keep-alive for each
//! lease that is still held when its first renewal falls due (a third of its TTL).
//!
//! Starting a keep-alive means starting a thread (tens of microseconds), which would
//! make a short `with table.lease(...)` block many times slower than the lease itself.
//! Most leases taken from Python end long before a third of their TTL; those never get
//! a thread. A lease registers here (a map insert under a mutex, no system call in the
//! steady state) and cancels on release; the keeper sleeps until the earliest one is due.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crate::lease::LeaseCell;
use crate::process;

/// A registration: when it is due (monotonic ns) and a unique id.
pub type Key = (u64, u64);

struct Plan {
    due: BTreeMap<Key, Weak<LeaseCell>>,
    /// When the keeper thread will look next (`u64::MAX`: only when woken); a lease due
    /// earlier must wake it.
    wake_at: u64,
    running: bool,
}

/// One process's keeper.
pub struct Keeper {
    /// The `process::generation` it belongs to.
    generation: u64,
    plan: Mutex<Plan>,
    changed: Condvar,
    ids: AtomicU64,
}

/// The keeper of this process. Only locked by threads attached to Python (so never
/// held across a `fork()` made by Python, which holds the interpreter meanwhile).
static CURRENT: Mutex<Option<Arc<Keeper>>> = Mutex::new(None);

fn current() -> Arc<Keeper> {
    let mut slot = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    let generation = process::generation();
    match slot.as_ref() {
        Some(k) if k.generation == generation => return Arc::clone(k),
        // A parent's keeper, inherited by fork(): its thread does not exist here and
        // its mutex may have been held at the fork. Left alone (leaked), never touched.
        Some(_) => std::mem::forget(slot.take()),
        None => {}
    }
    let keeper = Arc::new(Keeper {
        generation,
        plan: Mutex::new(Plan { due: BTreeMap::new(), wake_at: u64::MAX, running: false }),
        changed: Condvar::new(),
        ids: AtomicU64::new(0),
    });
    *slot = Some(Arc::clone(&keeper));
    keeper
}

/// Leases whose first renewal is due sooner than this get their keep-alive at once:
/// the keeper's clock is coarse (a few ms), and such holds are not that short anyway.
pub const SOONEST: Duration = Duration::from_millis(30);

/// How long the keeper thread stays without anything to do before it ends.
const IDLE: Duration = Duration::from_secs(1);

/// `CLOCK_MONOTONIC_COARSE` in ns: a few ms of resolution are plenty to schedule
/// renewals at least 30 ms away, and it costs a fraction of the precise clock.
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock exists on Linux ≥ 2.6.32.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE) failed");
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Registers `cell`, due `after` from now. Returns the keeper and the key to cancel
/// the registration with.
pub fn register(cell: &Arc<LeaseCell>, after: Duration) -> (Arc<Keeper>, Key) {
    let keeper = current();
    let due = now_ns().saturating_add(after.as_nanos().min(u64::MAX as u128) as u64);
    let key = (due, keeper.ids.fetch_add(1, Ordering::Relaxed));
    let mut plan = keeper.plan.lock().unwrap_or_else(|p| p.into_inner());
    plan.due.insert(key, Arc::downgrade(cell));
    if !plan.running {
        plan.running = true;
        plan.wake_at = u64::MAX;
        let k = Arc::clone(&keeper);
        let spawned =
            std::thread::Builder::new().name("shmlease-keeper".into()).spawn(move || run(&k));
        if spawned.is_err() {
            // Retried at the next registration; this lease renews only if the caller does.
            plan.running = false;
        }
    } else if due < plan.wake_at {
        keeper.changed.notify_one();
    }
    drop(plan);
    (keeper, key)
}

impl Keeper {
    /// Cancels a registration (nothing if it already ran). Nothing in a forked child
    /// either: the keeper is the parent's, its mutex may have been held at the fork.
    pub fn cancel(&self, key: Key) {
        if self.generation != process::generation() {
            return;
        }
        let mut plan = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        plan.due.remove(&key);
    }
}

fn run(keeper: &Keeper) {
    let mut plan = keeper.plan.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = now_ns();
        let mut ready = Vec::new();
        while let Some(entry) = plan.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            ready.push(entry.remove());
        }
        if !ready.is_empty() {
            drop(plan);
            for cell in ready.iter().filter_map(Weak::upgrade) {
                cell.start_keep_alive();
            }
            // Dropped here, not under the lock: the last reference releases the lease.
            drop(ready);
            plan = keeper.plan.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        match plan.due.first_key_value().map(|(k, _)| k.0) {
            Some(due) => {
                plan.wake_at = due;
                // Rounded up to the clock's resolution, so as not to wake before `due`.
                let nap = Duration::from_nanos(due - now) + Duration::from_millis(4);
                plan = keeper.changed.wait_timeout(plan, nap).unwrap_or_else(|p| p.into_inner()).0;
            }
            None => {
                // Idle: the thread ends after a while, so that a process that no
                // longer holds leases has no thread of ours (fork() warns about threads).
                plan.wake_at = u64::MAX;
                let (p, idle) =
                    keeper.changed.wait_timeout(plan, IDLE).unwrap_or_else(|p| p.into_inner());
                plan = p;
                if idle.timed_out() && plan.due.is_empty() {
                    plan.running = false;
                    return;
                }
            }
        }
    }
}
