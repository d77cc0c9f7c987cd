//! Across processes (issue 5, part 3): handoff latency and two-process throughput.
//!
//! **Handoff latency**: two processes ping-pong one lock. In each round the holder waits
//! until the other process has announced it is about to block and is really asleep in
//! the kernel (its `/proc/PID/stat` state is `S`), stores `CLOCK_MONOTONIC` in shared
//! memory and releases; the other, blocked in `acquire` (or `pthread_mutex_lock`, or
//! `flock(LOCK_EX)`), reads the clock as soon as it holds the lock and records the
//! difference. Reported as p50/p90/p99/p99.9/max for a shmlease lease (blocking
//! `acquire`), a robust process-shared pthread mutex, and `flock(2)`; each with the two
//! processes pinned to different CPUs (`cross_core`) and to the same CPU (`same_core`),
//! because on this VM the two placements differ by an order of magnitude (waking an
//! idle virtual CPU costs ~20 µs).
//!
//! **Throughput**: two processes, each looping for one second over take + release:
//! on one name (`try_acquire`, refused attempts counted apart; and blocking `acquire`),
//! on two different names (no false sharing: it should be twice one process alone),
//! and a robust pthread mutex for comparison; the two processes on different CPUs.
//!
//! The second process is this same program, re-executed with `SHMLEASE_BENCH_CHILD` set.
//! Not a criterion benchmark: it prints a table and writes
//! `target/shmlease-bench/<baseline>/handoff.json`. Run:
//! `cargo bench --bench handoff` (optionally `-- --save-baseline NAME`). Under
//! `cargo test` it does nothing.

// Registered with `harness = false`; if a checkout lacks that entry, cargo builds this
// file as a libtest bench, where `main` is unused: that must not fail the lint run.
#![cfg_attr(test, allow(dead_code))]
use std::fs::File;
use std::io::Read;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use shmlease::{Error, Lease, LeaseTable, Location, TableOptions};

mod common;
use common::*;

const TTL: Duration = Duration::from_secs(10);
const NAME: &str = "handoff";
const ROUNDS: u64 = 3000;
const TPUT_TIME: Duration = Duration::from_secs(1);
const SHM_LEN: usize = 4096 + ROUNDS as usize * 8;

/// The shared control block (offsets into the `Shm`).
struct Shared<'a> {
    shm: &'a Shm,
}

impl Shared<'_> {
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 32);
        // SAFETY: 64-byte spaced words inside the first 2 KiB of the mapping, aligned;
        // an atomic is valid for any bytes; the mapping outlives `self`.
        unsafe { &*self.shm.at::<AtomicU64>(i * 64) }
    }
    /// Round announcements: `r + 1` once the acquirer of round `r` is about to block.
    fn announced(&self) -> &AtomicU64 {
        self.word(0)
    }
    /// The releaser's clock just before it released.
    fn t0(&self) -> &AtomicU64 {
        self.word(1)
    }
    /// Throughput: start flag, then per process (0 = parent, 1 = child) ok and refused.
    fn go(&self) -> &AtomicU64 {
        self.word(2)
    }
    fn ok(&self, me: usize) -> &AtomicU64 {
        self.word(3 + me)
    }
    fn refused(&self, me: usize) -> &AtomicU64 {
        self.word(5 + me)
    }
    fn ready(&self) -> &AtomicU64 {
        self.word(7)
    }
    /// `r + 1` once the acquirer of round `r` holds the lock.
    fn acquired(&self) -> &AtomicU64 {
        self.word(8)
    }
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.shm.at(2048)
    }
    fn result(&self, round: u64) -> &AtomicU64 {
        assert!(round < ROUNDS);
        // SAFETY: inside the results array after the first 4 KiB, 8-byte aligned.
        unsafe { &*self.shm.at::<AtomicU64>(4096 + round as usize * 8) }
    }
}

/// A lock both processes can block on.
trait Lock {
    fn lock(&mut self);
    fn unlock(&mut self);
}

struct LeaseLock<'t> {
    table: &'t LeaseTable,
    name: String,
    held: Option<Lease<'t>>,
}

impl Lock for LeaseLock<'_> {
    fn lock(&mut self) {
        self.held = Some(self.table.acquire(&self.name, TTL, None).unwrap());
    }
    fn unlock(&mut self) {
        self.held.take().unwrap().release().unwrap();
    }
}

struct MutexLock(*mut libc::pthread_mutex_t);

impl Lock for MutexLock {
    fn lock(&mut self) {
        // SAFETY: initialised by the parent in the shared mapping, which stays mapped.
        unsafe { robust_lock(self.0) }
    }
    fn unlock(&mut self) {
        // SAFETY: as above; we hold it.
        unsafe { robust_unlock(self.0) }
    }
}

struct FlockLock(File);

impl Lock for FlockLock {
    fn lock(&mut self) {
        flock(&self.0, libc::LOCK_EX);
    }
    fn unlock(&mut self) {
        flock(&self.0, libc::LOCK_UN);
    }
}

/// Whether thread `pid` (a process's main thread) is asleep (state `S`).
fn sleeping(pid: u32) -> bool {
    let mut s = String::new();
    if File::open(format!("/proc/{pid}/stat")).and_then(|mut f| f.read_to_string(&mut s)).is_err() {
        return false;
    }
    s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('S'))
}

/// One side of the handoff ping-pong. Process 0 holds the lock on entry and releases
/// in even rounds; process 1 acquires round 0 first and releases in odd rounds.
fn pingpong(me: u64, lock: &mut dyn Lock, sh: &Shared<'_>, other: u32) {
    let record = |r: u64| {
        let t1 = mono_ns();
        sh.result(r).store(t1.saturating_sub(sh.t0().load(Acquire)), Relaxed);
        sh.acquired().store(r + 1, Release);
    };
    let mut r = 0;
    if me == 1 {
        sh.announced().store(1, Release);
        lock.lock();
        record(0);
        r = 1;
    }
    loop {
        // Releaser of round r, holding the lock.
        while sh.announced().load(Acquire) != r + 1 || !sleeping(other) {
            std::thread::yield_now();
        }
        sh.t0().store(mono_ns(), Release);
        lock.unlock();
        if r + 1 >= ROUNDS {
            break;
        }
        // Let the other process take it before queueing up again (else this process
        // would simply take the free lock back).
        while sh.acquired().load(Acquire) != r + 1 {
            std::thread::yield_now();
        }
        sh.announced().store(r + 2, Release);
        lock.lock();
        record(r + 1);
        r += 2;
        if r >= ROUNDS {
            lock.unlock();
            break;
        }
    }
}

/// One side of a throughput run: take + release as often as possible for TPUT_TIME.
fn throughput(me: usize, kind: &str, table: &LeaseTable, sh: &Shared<'_>) {
    let name = if kind == "lease_two_names" { format!("tput-{me}") } else { "tput".to_string() };
    sh.ready().fetch_add(1, AcqRel);
    while sh.go().load(Acquire) == 0 {
        std::hint::spin_loop();
    }
    let (mut ok, mut refused) = (0u64, 0u64);
    let start = Instant::now();
    let mut n = 0u32;
    loop {
        match kind {
            "lease_try_one_name" | "lease_two_names" | "lease_solo" => {
                match table.try_acquire(&name, TTL) {
                    Ok(l) => {
                        l.release().unwrap();
                        ok += 1;
                    }
                    Err(Error::Held { .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            "lease_acquire_one_name" => {
                table.acquire(&name, TTL, None).unwrap().release().unwrap();
                ok += 1;
            }
            "mutex_one" => {
                // SAFETY: initialised by the parent in the shared mapping.
                unsafe {
                    robust_lock(sh.mutex());
                    robust_unlock(sh.mutex());
                }
                ok += 1;
            }
            _ => unreachable!("{kind}"),
        }
        n += 1;
        if n % 256 == 0 && start.elapsed() >= TPUT_TIME {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    sh.ok(me).store((ok as f64 / secs) as u64, Release);
    sh.refused(me).store((refused as f64 / secs) as u64, Release);
}

fn child_main(role: String) {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let shm = Shm::open(std::path::Path::new(&env("SHMLEASE_BENCH_SHM")), SHM_LEN);
    let sh = Shared { shm: &shm };
    let parent: u32 = env("SHMLEASE_BENCH_PARENT").parse().unwrap();
    pin_to_cpu(env("SHMLEASE_BENCH_CPU").parse().unwrap());
    let table = LeaseTable::open(Location::Shm(env("SHMLEASE_BENCH_TABLE"))).unwrap();
    match role.as_str() {
        "handoff_lease" => {
            let mut l = LeaseLock { table: &table, name: NAME.into(), held: None };
            pingpong(1, &mut l, &sh, parent);
        }
        "handoff_mutex" => pingpong(1, &mut MutexLock(sh.mutex()), &sh, parent),
        "handoff_flock" => {
            let f = lock_file(std::path::Path::new(&env("SHMLEASE_BENCH_LOCKFILE")));
            pingpong(1, &mut FlockLock(f), &sh, parent);
        }
        kind => throughput(1, kind, &table, &sh),
    }
}

struct Parent {
    shm: Shm,
    table_name: String,
    lock_path: std::path::PathBuf,
}

impl Parent {
    fn spawn(&self, role: &str, cpu: usize) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .env("SHMLEASE_BENCH_CHILD", role)
            .env("SHMLEASE_BENCH_CPU", cpu.to_string())
            .env("SHMLEASE_BENCH_SHM", shm_path(&scratch_name("handoff")))
            .env("SHMLEASE_BENCH_PARENT", std::process::id().to_string())
            .env("SHMLEASE_BENCH_TABLE", &self.table_name)
            .env("SHMLEASE_BENCH_LOCKFILE", &self.lock_path)
            .spawn()
            .expect("spawning the second process")
    }

    fn reset(&self) {
        let sh = Shared { shm: &self.shm };
        for i in 0..9 {
            sh.word(i).store(0, Release);
        }
    }

    /// Runs one handoff experiment; returns the sorted latencies.
    fn handoff(&self, role: &str, lock: &mut dyn Lock, child_cpu: usize) -> Vec<u64> {
        self.reset();
        let sh = Shared { shm: &self.shm };
        lock.lock();
        let mut child = self.spawn(role, child_cpu);
        pingpong(0, lock, &sh, child.id());
        assert!(child.wait().unwrap().success(), "{role}: child failed");
        let mut v: Vec<u64> = (0..ROUNDS).map(|r| sh.result(r).load(Acquire)).collect();
        v.sort_unstable();
        v
    }

    /// Runs one throughput experiment with both processes (or the parent alone for
    /// `lease_solo`); returns (ok/s, refused/s) per process.
    fn throughput(&self, kind: &str, table: &LeaseTable) -> [(u64, u64); 2] {
        self.reset();
        let sh = Shared { shm: &self.shm };
        let child = (kind != "lease_solo").then(|| self.spawn(kind, other_cpu()));
        let want = if child.is_some() { 1 } else { 0 };
        while sh.ready().load(Acquire) < want {
            std::thread::yield_now();
        }
        sh.go().store(1, Release);
        throughput(0, kind, table, &sh);
        if let Some(mut c) = child {
            assert!(c.wait().unwrap().success(), "{kind}: child failed");
        }
        [0, 1].map(|p| (sh.ok(p).load(Acquire), sh.refused(p).load(Acquire)))
    }
}

fn summary(v: &[u64]) -> String {
    let quantiles: Vec<String> = (0..=200)
        .map(|i| i as f64 / 2.0)
        .chain([99.9, 99.99])
        .map(|p| format!("[{p},{}]", percentile(v, p)))
        .collect();
    format!(
        "{{\"n\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"quantiles\":[{}]}}",
        v.len(),
        percentile(v, 50.0),
        percentile(v, 90.0),
        percentile(v, 99.0),
        percentile(v, 99.9),
        v.last().copied().unwrap_or(0),
        quantiles.join(",")
    )
}

fn main() {
    if let Ok(role) = std::env::var("SHMLEASE_BENCH_CHILD") {
        return child_main(role);
    }
    if !bench_mode() {
        println!("handoff: nothing to do outside `cargo bench`");
        return;
    }
    let table_name = scratch_name("handoff-table");
    let loc = Location::Shm(table_name.clone());
    let _ = LeaseTable::remove(&loc);
    let table = LeaseTable::create(&loc, &TableOptions::new().capacity(64)).unwrap();
    let parent = Parent {
        shm: Shm::create(&shm_path(&scratch_name("handoff")), SHM_LEN),
        table_name,
        lock_path: shm_path(&scratch_name("handoff-lock")),
    };
    // SAFETY: unused, aligned shared memory, before the child exists.
    unsafe { robust_mutex_init(parent.shm.at(2048)) };
    let lock_file_handle = lock_file(&parent.lock_path);

    if std::env::var_os("SHMLEASE_TPUT_ONLY").is_some() {
        // Blocking `acquire` on one name against the robust mutex, alternating, 5 runs
        // each: the "Contention" figures of BENCHMARKS.md (issue 15).
        pin_to_cpu(0);
        let (mut ours, mut mutex) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let [(a, _), (b, _)] = parent.throughput("lease_acquire_one_name", &table);
            ours.push(a + b);
            let [(a, _), (b, _)] = parent.throughput("mutex_one", &table);
            mutex.push(a + b);
            println!(
                "lease_acquire_one_name {:>12}   mutex_one {:>12}",
                ours.last().unwrap(),
                mutex.last().unwrap()
            );
        }
        ours.sort_unstable();
        mutex.sort_unstable();
        println!(
            "medians: lease {} /s, mutex {} /s, ratio {:.2}",
            ours[2],
            mutex[2],
            ours[2] as f64 / mutex[2] as f64
        );
        drop(table);
        LeaseTable::remove(&loc).unwrap();
        return;
    }
    let mut json = String::from("{\"handoff\":{");
    println!("handoff latency over {ROUNDS} rounds (ns):");
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "mechanism_placement", "p50", "p90", "p99", "p99.9", "max"
    );
    let experiments: [(&str, &str); 3] =
        [("lease", "handoff_lease"), ("robust_mutex", "handoff_mutex"), ("flock", "handoff_flock")];
    // Process A stays on CPU 0; process B on the other CPU (cross-core: B's CPU is idle
    // while B sleeps, so the wake-up includes waking that CPU) or on CPU 0 too
    // (same-core: A yields its CPU to B).
    pin_to_cpu(0);
    let mut first = true;
    for (placement, child_cpu) in [("cross_core", other_cpu()), ("same_core", 0)] {
        for (mech, role) in experiments {
            let label = format!("{mech}_{placement}");
            let v = match mech {
                "lease" => {
                    let mut l = LeaseLock { table: &table, name: NAME.into(), held: None };
                    parent.handoff(role, &mut l, child_cpu)
                }
                "robust_mutex" => {
                    parent.handoff(role, &mut MutexLock(parent.shm.at(2048)), child_cpu)
                }
                _ => {
                    let f = lock_file_handle.try_clone().unwrap();
                    parent.handoff(role, &mut FlockLock(f), child_cpu)
                }
            };
            println!(
                "{label:<26} {:>9} {:>9} {:>9} {:>9} {:>9}",
                percentile(&v, 50.0),
                percentile(&v, 90.0),
                percentile(&v, 99.0),
                percentile(&v, 99.9),
                v.last().unwrap()
            );
            json.push_str(&format!("{}\"{label}\":{}", if first { "" } else { "," }, summary(&v)));
            first = false;
        }
    }
    json.push_str("},\"throughput\":{");
    println!("\nthroughput, {} s per run (operations per second):", TPUT_TIME.as_secs_f64());
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>14}",
        "workload", "process A", "process B", "total", "refused total"
    );
    let kinds = [
        "lease_solo",
        "lease_try_one_name",
        "lease_acquire_one_name",
        "lease_two_names",
        "mutex_one",
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let [(a, ra), (b, rb)] = parent.throughput(kind, &table);
        println!("{kind:<24} {a:>12} {b:>12} {:>12} {:>14}", a + b, ra + rb);
        json.push_str(&format!(
            "{}\"{kind}\":{{\"a\":{a},\"b\":{b},\"total\":{},\"refused\":{}}}",
            if i > 0 { "," } else { "" },
            a + b,
            ra + rb
        ));
    }
    json.push_str("}}");
    let out = out_dir().join("handoff.json");
    std::fs::write(&out, json).unwrap();
    eprintln!("handoff: wrote {}", out.display());
    drop(table);
    LeaseTable::remove(&loc).unwrap();
    let _ = std::fs::remove_file(&parent.lock_path);
}
