//! Kinds of names (issue 12): the cost of a permit, a shared grant and a fair
//! acquisition against an exclusive lease, and how processes holding one name at once
//! (permits, shared) scale, against process-shared `pthread_rwlock` read locks and
//! `flock(LOCK_SH)` on the same machine.
//!
//! - `uncontended`: one process, `acquire_with` + `release` of one name, exclusive
//!   (`try_acquire`), with 2 permits, with 8 permits, shared, and fair (exclusive);
//!   15 rounds of 200,000 operations,
//!   the kinds interleaved round by round so that machine noise hits them alike;
//!   medians, and each permit kind as a ratio of the exclusive lease in the same run.
//! - `scaling`: one process, then two processes (pinned to different CPUs), each in a
//!   loop of acquire + release for 1 s; total operations per second, median of 7
//!   rounds, and the two-process figure as a ratio of the one-process one. Subjects: a
//!   name with 2 permits (each process can hold one), a shared name (shared grants), an
//!   exclusive name (contended by
//!   design: the reference for "does not scale"), a process-shared `pthread_rwlock`
//!   read lock, and `flock(LOCK_SH)` on one file (each process its own descriptor).
//!
//! Not a criterion benchmark: it prints a table and writes
//! `target/shmlease-bench/<baseline>/kinds.json`. Run: `cargo bench --bench kinds`.
//! Under `cargo test` it does nothing.

#![cfg_attr(test, allow(dead_code))]
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use shmlease::{AcquireOptions, LeaseTable, RemoveOptions, TableOptions};

mod common;
use common::*;

const TTL: Duration = Duration::from_secs(600);
const OPS: u32 = 200_000;
const ROUNDS: usize = 15;
const SCALE_ROUNDS: usize = 7;
const SCALE_RUN: Duration = Duration::from_secs(1);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// ns per acquire + release of `name` with `opts`, over `OPS` operations.
fn round(table: &LeaseTable, name: &str, opts: &AcquireOptions) -> f64 {
    let start = Instant::now();
    for _ in 0..OPS {
        let lease = table.acquire_with(black_box(name), TTL, opts).unwrap();
        lease.release().unwrap();
    }
    start.elapsed().as_nanos() as f64 / OPS as f64
}

fn uncontended(table: &LeaseTable, json: &mut Vec<String>) {
    let kinds = [
        ("exclusive", "x", AcquireOptions::new()),
        ("permits_2", "p2", AcquireOptions::new().permits(2).unwrap()),
        ("permits_8", "p8", AcquireOptions::new().permits(8).unwrap()),
        ("shared", "sh", AcquireOptions::new().shared(true)),
        ("fair", "fa", AcquireOptions::new().fair(true)),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for (_, name, opts) in &kinds {
        round(table, name, opts); // warm up, bind the names and seats
    }
    for _ in 0..ROUNDS {
        for (i, (_, name, opts)) in kinds.iter().enumerate() {
            samples[i].push(round(table, name, opts));
        }
    }
    let base = median(samples[0].clone());
    println!("uncontended acquire+release, one process (median of {ROUNDS} x {OPS}):");
    for (i, (label, _, _)) in kinds.iter().enumerate() {
        let m = median(samples[i].clone());
        println!("  {label:<12} {m:8.1} ns   {:.2}x exclusive", m / base);
        json.push(format!("\"uncontended_{label}_ns\": {m:.1}"));
    }
}

/// Something two processes can do in a loop at once.
#[derive(Clone, Copy)]
enum Subject {
    Permits2,
    Shared,
    Exclusive,
    RwlockRead,
    FlockShared,
}

impl Subject {
    fn label(self) -> &'static str {
        match self {
            Subject::Permits2 => "permits_2",
            Subject::Shared => "shared",
            Subject::Exclusive => "exclusive",
            Subject::RwlockRead => "pthread_rwlock_rd",
            Subject::FlockShared => "flock_LOCK_SH",
        }
    }
}

/// The shared state of a scaling run: a process-shared rwlock and a counter per
/// process, in one `MAP_SHARED` file.
struct Arena {
    shm: Shm,
}

const RWLOCK_AT: usize = 0;
const COUNT_AT: usize = 256;

impl Arena {
    fn new() -> Arena {
        let shm = Shm::create(&shm_path(&scratch_name("permits-arena")), 4096);
        // SAFETY: the rwlock lives in our fresh mapping, suitably aligned, and is
        // initialised once here, before any process uses it.
        unsafe {
            let mut attr: libc::pthread_rwlockattr_t = std::mem::zeroed();
            libc::pthread_rwlockattr_init(&mut attr);
            libc::pthread_rwlockattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_rwlock_init(shm.at(RWLOCK_AT), &attr);
        }
        Arena { shm }
    }

    fn count(&self, i: usize) -> &AtomicU64 {
        // SAFETY: in bounds and aligned (checked by `at`); only ever used atomically.
        unsafe { &*self.shm.at::<AtomicU64>(COUNT_AT + i * 64) }
    }
}

/// One process's loop: operations done in `SCALE_RUN`.
fn work(subject: Subject, table: &LeaseTable, arena: &Arena, file: &std::path::Path) -> u64 {
    let opts = AcquireOptions::new().permits(2).unwrap();
    let shared = AcquireOptions::new().shared(true);
    let flock_file = lock_file(file);
    let rw: *mut libc::pthread_rwlock_t = arena.shm.at(RWLOCK_AT);
    let end = Instant::now() + SCALE_RUN;
    let mut n = 0u64;
    while Instant::now() < end {
        for _ in 0..256 {
            match subject {
                Subject::Permits2 => {
                    // Both processes may hold a permit at once: never refused here.
                    let lease = table.acquire_with("scale-p2", TTL, &opts).unwrap();
                    lease.release().unwrap();
                    n += 1;
                }
                Subject::Shared => {
                    let lease = table.acquire_with("scale-sh", TTL, &shared).unwrap();
                    lease.release().unwrap();
                    n += 1;
                }
                Subject::Exclusive => {
                    if let Ok(lease) = table.try_acquire("scale-x", TTL) {
                        lease.release().unwrap();
                        n += 1;
                    }
                }
                Subject::RwlockRead => {
                    // SAFETY: a process-shared rwlock initialised in the shared mapping.
                    unsafe {
                        libc::pthread_rwlock_rdlock(rw);
                        libc::pthread_rwlock_unlock(rw);
                    }
                    n += 1;
                }
                Subject::FlockShared => {
                    flock(&flock_file, libc::LOCK_SH);
                    flock(&flock_file, libc::LOCK_UN);
                    n += 1;
                }
            }
        }
    }
    n
}

/// Total operations per second of `procs` processes (1 or 2) doing `subject` at once.
fn scale_round(
    subject: Subject,
    procs: usize,
    table: &LeaseTable,
    arena: &Arena,
    file: &std::path::Path,
) -> f64 {
    let mut kids = Vec::new();
    for p in 1..procs {
        arena.count(p).store(0, SeqCst);
        // SAFETY: this program is single-threaded here; the child only runs `work` on
        // state inherited from the parent, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            pin_to_cpu(other_cpu());
            let n = work(subject, table, arena, file);
            arena.count(p).store(n, SeqCst);
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        kids.push(pid);
    }
    pin_to_cpu(0);
    let mine = work(subject, table, arena, file);
    let mut total = mine;
    for (p, pid) in kids.into_iter().enumerate() {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        total += arena.count(p + 1).load(SeqCst);
    }
    total as f64 / SCALE_RUN.as_secs_f64()
}

fn scaling(table: &LeaseTable, json: &mut Vec<String>) {
    let arena = Arena::new();
    let file = shm_path(&scratch_name("permits-flock"));
    std::fs::write(&file, b"").unwrap();
    println!(
        "two processes at once vs one (ops/s, median of {SCALE_ROUNDS} rounds of {SCALE_RUN:?}):"
    );
    for subject in [
        Subject::Permits2,
        Subject::Shared,
        Subject::Exclusive,
        Subject::RwlockRead,
        Subject::FlockShared,
    ] {
        let mut one = Vec::new();
        let mut two = Vec::new();
        for _ in 0..SCALE_ROUNDS {
            one.push(scale_round(subject, 1, table, &arena, &file));
            two.push(scale_round(subject, 2, table, &arena, &file));
        }
        let (one, two) = (median(one), median(two));
        println!(
            "  {:<18} 1 proc {:>12.0}   2 procs {:>12.0}   {:.2}x",
            subject.label(),
            one,
            two,
            two / one
        );
        json.push(format!("\"scale_{}_1\": {one:.0}", subject.label()));
        json.push(format!("\"scale_{}_2\": {two:.0}", subject.label()));
    }
    let _ = std::fs::remove_file(&file);
}

fn main() {
    if !bench_mode() {
        return;
    }
    let path = shm_path(&scratch_name("kinds"));
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(1024)).unwrap();
    let mut json = Vec::new();
    uncontended(&table, &mut json);
    scaling(&table, &mut json);
    let out = out_dir().join("kinds.json");
    std::fs::write(&out, format!("{{\n  {}\n}}\n", json.join(",\n  "))).unwrap();
    println!("wrote {}", out.display());
    LeaseTable::remove_with(&path, &RemoveOptions::new().force(true)).unwrap();
}
