//! Invariant 7, allocation half: once a name is bound and this process's identity is
//! cached, uncontended `try_acquire`, `acquire_with` (a permit, a shared grant, a fair
//! one), `renew` and `release` allocate nothing. A counting
//! global allocator (this test binary's only test, so no other thread allocates) checks
//! it. (The other half, no system call, is `tests/no_syscall.rs`.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shmlease::{AcquireOptions, LeaseTable, TableOptions};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn fast_path_allocates_nothing() {
    let path = std::env::temp_dir().join(format!("shmlease-noalloc-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(64)).unwrap();
    let ttl = Duration::from_secs(10);
    // Warm up: binds the name (slow path) and caches this process's identity.
    table.try_acquire("fast", ttl).unwrap().release().unwrap();

    // The other kinds' fast paths too: a permit, a shared grant, a fair one.
    let kinds = [
        ("pool", AcquireOptions::new().permits(2).unwrap()),
        ("db", AcquireOptions::new().shared(true)),
        ("line", AcquireOptions::new().fair(true)),
    ];
    for (name, opts) in &kinds {
        table.acquire_with(name, ttl, opts).unwrap().release().unwrap();
    }

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..1_000 {
        let lease = table.try_acquire("fast", ttl).unwrap();
        lease.renew(ttl).unwrap();
        assert!(lease.is_valid());
        lease.release().unwrap();
        for (name, opts) in &kinds {
            let lease = table.acquire_with(name, ttl, opts).unwrap();
            lease.renew(ttl).unwrap();
            assert!(lease.is_valid());
            lease.release().unwrap();
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    drop(table);
    LeaseTable::remove(&path).unwrap();
    assert_eq!(allocations, 0, "the fast path allocated {allocations} times in 1,000 rounds");
}
