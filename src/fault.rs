//! Crash points, for tests that kill a process at every step of an operation.
//!
//! Each operation that writes shared state passes a numbered sequence of crash points
//! (one before or after every store or CAS that another process could observe). A test
//! child calls [`arm`]`(op, k)` and then performs `op`: at the `k`-th point of `op` it
//! passes, the process kills itself with `SIGKILL` — no destructors, no unwinding, the
//! kernel drops its locks — exactly like `kill -9` landing between two instructions of
//! interest. If the operation finishes first, `op` has fewer than `k` points.
//! `tests/crash_points.rs` walks `k = 1, 2, …` for every operation and checks that
//! another process can then use the table and reclaim what the dead one held.
//!
//! Crash points exist only in debug builds (`debug_assertions`), where each costs one
//! relaxed load; release builds compile them to nothing and have no [`arm`].

/// The operations that have crash points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// Creating a table file (`LeaseTable::create`, `open_or_create`).
    Create = 1,
    /// Rebasing the table's clock after a reboot (on open).
    Rebase = 2,
    /// Binding a name to a slot, including unbinding an idle name to make room.
    Bind = 3,
    /// Granting a lease (any acquisition), and announcing a waiter.
    Grant = 4,
    /// Renewing a lease.
    Renew = 5,
    /// Releasing a lease.
    Release = 6,
    /// Revoking a lease.
    Revoke = 7,
    /// Requesting the release of a lease.
    Request = 8,
    /// The CAS of a grant on the coarse-clock fast path (`protocol::try_grant_free`):
    /// its two points count as `Grant` points too. Armed alone, it tells a test that a
    /// grant took the fast path (the process dies) or not (it lives).
    GrantFast = 9,
}

#[cfg(all(debug_assertions, not(loom)))]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use super::Op;

    /// `op << 32 | points left before the crash`, or 0 until armed.
    static ARMED: AtomicU64 = AtomicU64::new(0);

    /// Kills this process at the `step`-th crash point of `op` (1-based) it passes from
    /// now on. Test-only; exists in debug builds only.
    pub fn arm(op: Op, step: u32) {
        assert!(step > 0, "crash points are numbered from 1");
        ARMED.store((op as u64) << 32 | step as u64, Relaxed);
    }

    #[inline(always)]
    pub(crate) fn point(op: Op) {
        let armed = ARMED.load(Relaxed);
        if armed != 0 && (armed >> 32) as u32 == op as u32 {
            passed();
        }
    }

    /// A point of the fast path's grant CAS: of `Grant`, and of `GrantFast`.
    #[inline(always)]
    pub(crate) fn fast_grant_point() {
        let armed = ARMED.load(Relaxed);
        let op = (armed >> 32) as u32;
        if armed != 0 && (op == Op::Grant as u32 || op == Op::GrantFast as u32) {
            passed();
        }
    }

    /// Counts a point of the armed operation; kills the process at the last one. (A test
    /// child arms once and then runs the operation: nothing re-arms concurrently.)
    #[cold]
    #[inline(never)]
    fn passed() {
        if ARMED.fetch_sub(1, Relaxed) as u32 != 1 {
            return;
        }
        // SAFETY: raise(3) takes a plain signal number. SIGKILL cannot be caught, so this
        // does not return.
        unsafe { libc::raise(libc::SIGKILL) };
        unreachable!("SIGKILL returned");
    }
}

#[cfg(all(debug_assertions, not(loom)))]
pub use armed::arm;

#[cfg(all(debug_assertions, not(loom)))]
pub(crate) use armed::{fast_grant_point, point};

/// A crash point (release builds: nothing).
#[cfg(not(all(debug_assertions, not(loom))))]
#[inline(always)]
pub(crate) fn point(_: Op) {}

/// A crash point of the fast path's grant CAS (release builds: nothing).
#[cfg(not(all(debug_assertions, not(loom))))]
#[inline(always)]
pub(crate) fn fast_grant_point() {}
