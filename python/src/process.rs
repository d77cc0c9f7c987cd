//! Which process this is, cheaply: the pid is cached and forgotten in a `fork()`ed
//! child (by a `pthread_atfork` handler, which sees every fork made through libc,
//! `os.fork()` and `multiprocessing` included), so that the hot paths make no system call.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);
static PID_KNOWN: AtomicBool = AtomicBool::new(false);
/// Forks seen so far in this process's ancestry (bumped in each child).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// This process's pid.
#[inline]
pub fn pid() -> u32 {
    if PID_KNOWN.load(Ordering::Acquire) {
        return PID.load(Ordering::Relaxed);
    }
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    PID_KNOWN.store(true, Ordering::Release);
    pid
}

/// Changes in each `fork()`ed child: what was made before it belongs to the parent.
#[inline]
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

extern "C" fn in_child() {
    // Only atomic stores: a child of a multi-threaded process may do little else.
    PID_KNOWN.store(false, Ordering::Release);
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Installs the fork handler (once per process; children inherit it).
pub fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `in_child` is an `extern "C" fn()` that lives for the whole program
        // (this library is never unloaded: CPython does not unload extension modules)
        // and only stores to atomics, which is safe in a child after fork.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        assert_eq!(rc, 0, "pthread_atfork failed");
    });
}
