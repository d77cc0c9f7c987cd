//! Invariant 7, system-call half: once a name is bound and this process's identity is
//! cached, uncontended `try_acquire`, `acquire_with` (no wait; exclusive, a permit, a
//! shared grant, a fair one), `renew`, `is_valid` and `release` make no system call. A child process runs the loop 1,000 and 101,000 times
//! under `strace -f -c`; its count of system calls must not grow with the loop (one
//! call per operation would add 500,000). A `getpid` per release, as the C library once
//! made, fails it; so would a clock read that left the vDSO.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shmlease::{AcquireOptions, LeaseTable, TableOptions};

const TTL: Duration = Duration::from_secs(600);
const LOOPS: &str = "SHMLEASE_IT_SYSCALL_LOOPS";
const TABLE: &str = "SHMLEASE_IT_SYSCALL_TABLE";

/// The child: warms up, then runs the loop (only when the parent asks).
#[test]
#[ignore = "child process entry point; run by fast_path_makes_no_system_call"]
fn child_loop() {
    let (Ok(loops), Ok(path)) = (std::env::var(LOOPS), std::env::var(TABLE)) else { return };
    let loops: u64 = loops.parse().unwrap();
    let table = LeaseTable::open(Path::new(&path)).unwrap();
    let plain = AcquireOptions::new();
    // The other kinds' fast paths too: a permit, a shared grant, a fair one.
    let kinds = [
        ("pool", AcquireOptions::new().permits(2).unwrap()),
        ("db", AcquireOptions::new().shared(true)),
        ("line", AcquireOptions::new().fair(true)),
    ];
    // Warm-up: the name is bound, the identity cached, the coarse clock's tick known
    // (and each kind's head and seat bound).
    table.try_acquire("fast", TTL).unwrap().release().unwrap();
    for (name, opts) in &kinds {
        table.acquire_with(name, TTL, opts).unwrap().release().unwrap();
    }
    for _ in 0..loops {
        let lease = table.try_acquire("fast", TTL).unwrap();
        lease.renew(TTL).unwrap();
        assert!(lease.is_valid());
        lease.release().unwrap();
        let lease = table.acquire_with("fast", TTL, &plain).unwrap();
        lease.release().unwrap();
        for (name, opts) in &kinds {
            let lease = table.acquire_with(name, TTL, opts).unwrap();
            lease.renew(TTL).unwrap();
            assert!(lease.is_valid());
            lease.release().unwrap();
        }
    }
}

/// System calls the child made with `loops` rounds, as `strace -c` counts them.
fn syscalls(table: &Path, loops: u64, out: &Path) -> u64 {
    let status = Command::new("timeout")
        .args(["120", "strace", "-f", "-c", "-o"])
        .arg(out)
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_loop", "--test-threads=1"])
        .env(LOOPS, loops.to_string())
        .env(TABLE, table)
        .status()
        .expect("strace runs (apt-get install strace)");
    assert!(status.success(), "the child under strace failed: {status}");
    let summary = std::fs::read_to_string(out).unwrap();
    let total = summary
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with("total"))
        .unwrap_or_else(|| panic!("no total in strace's summary:\n{summary}"));
    total.split_whitespace().nth(3).and_then(|c| c.parse().ok()).unwrap_or_else(|| {
        panic!("unreadable total line {total:?} in:\n{summary}");
    })
}

#[test]
fn fast_path_makes_no_system_call() {
    let available = Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(available, "strace is needed for this test (apt-get install strace)");
    let dir = std::env::temp_dir().join(format!("shmlease-nosyscall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t");
    drop(LeaseTable::create(&path, &TableOptions::new().capacity(64)).unwrap());
    let few = syscalls(&path, 1_000, &dir.join("few.txt"));
    let many = syscalls(&path, 101_000, &dir.join("many.txt"));
    let _ = std::fs::remove_dir_all(&dir);
    // The same start-up and exit either way; a little slack for the test harness's
    // own thread and output.
    assert!(
        many <= few + 50,
        "100,000 more rounds made {} more system calls ({few} → {many})",
        many.saturating_sub(few)
    );
}
