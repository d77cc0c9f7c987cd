//! The fast path of shmlease, measured side by side with its physical limit and with
//! every peer a user would otherwise pick, in one criterion run (issue 5, parts 1-2).
//!
//! Group `ours`: uncontended `try_acquire` + `release` by name (8- and 64-byte names),
//! `renew`, `is_valid`, `remaining`, `get`, `list` over 1,000 leases, a refused
//! `try_acquire`, and the C API's `try_acquire` + `release` + `lease_free` (loaded with
//! `dlopen` from `target/release/libshmlease.so` when it has been built with
//! `cargo build --release -p shmlease-ffi`; skipped with a note otherwise).
//!
//! Group `baseline`: bare `clock_gettime` (MONOTONIC and MONOTONIC_COARSE), a bare CAS
//! acquire + CAS release on shared memory, clock read + CAS acquire + CAS release with
//! a 64-bit and a 128-bit word (the physical limit of a TTL lease), clock + one CAS
//! (the limit of `renew`), a robust process-shared pthread mutex, a process-shared POSIX
//! semaphore, `flock(2)` and fcntl OFD locks. Everything lives in `MAP_SHARED` memory
//! or files in `/dev/shm`, as a lease table does.
//!
//! Run: `cargo bench --bench fastpath` (see BENCHMARKS.md).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::Duration;

use criterion::Criterion;
use portable_atomic::AtomicU128;
use shmlease::{Error, LeaseTable, Location, TableOptions};

mod common;
use common::*;

const TTL: Duration = Duration::from_secs(10);
const TTL_NS: u64 = 10_000_000_000;
const NAME: &str = "db-migr8"; // 8 bytes
const LONG_NAME: &str = "a-64-byte-lease-name-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

fn ours(c: &mut Criterion) {
    let loc = Location::Shm(scratch_name("fast"));
    let _ = LeaseTable::remove(&loc);
    let table = LeaseTable::create(&loc, &TableOptions::new().capacity(4096)).unwrap();
    // Bind the names once (binding is the slow path, done once per name).
    table.try_acquire(NAME, TTL).unwrap().release().unwrap();
    table.try_acquire(LONG_NAME, TTL).unwrap().release().unwrap();
    assert_eq!(LONG_NAME.len(), 64);

    let mut g = c.benchmark_group("ours");
    g.bench_function("try_acquire+release", |b| {
        b.iter(|| table.try_acquire(black_box(NAME), TTL).unwrap().release().unwrap())
    });
    g.bench_function("try_acquire+release_64B_name", |b| {
        b.iter(|| table.try_acquire(black_box(LONG_NAME), TTL).unwrap().release().unwrap())
    });
    {
        // Held (and renewed) for an hour: these benchmarks run for longer than `TTL`.
        let hold = Duration::from_secs(3600);
        let lease = table.try_acquire(NAME, hold).unwrap();
        g.bench_function("renew", |b| b.iter(|| lease.renew(black_box(hold)).unwrap()));
        g.bench_function("is_valid", |b| b.iter(|| black_box(&lease).is_valid()));
        g.bench_function("remaining", |b| b.iter(|| black_box(&lease).remaining()));
        g.bench_function("get", |b| b.iter(|| table.get(black_box(NAME)).unwrap()));
        g.bench_function("try_acquire_refused_held", |b| {
            b.iter(|| match table.try_acquire(black_box(NAME), TTL) {
                Err(Error::Held { token, .. }) => token,
                other => panic!("expected Held, got {other:?}"),
            })
        });
        lease.release().unwrap();
    }
    refused_by_other_process(&mut g, &table);
    ffi_bench(&mut g, &loc);
    g.finish();
    drop(table);
    LeaseTable::remove(&loc).unwrap();

    // list over 1,000 held leases in a 2,048-slot table (list scans every slot).
    let loc = Location::Shm(scratch_name("list"));
    let _ = LeaseTable::remove(&loc);
    let table = LeaseTable::create(&loc, &TableOptions::new().capacity(2048)).unwrap();
    let held: Vec<_> = (0..1000)
        .map(|i| table.try_acquire(&format!("lease-{i}"), Duration::from_secs(3600)).unwrap())
        .collect();
    let mut g = c.benchmark_group("ours");
    g.bench_function("list_1000_leases", |b| {
        b.iter(|| {
            let l = table.list().unwrap();
            debug_assert_eq!(l.len(), 1000);
            l
        })
    });
    g.finish();
    drop(held);
    drop(table);
    LeaseTable::remove(&loc).unwrap();
}

/// A refused `try_acquire` when another, live process holds the lease: the acquirer
/// then checks whether that holder is provably dead (pidfd or /proc probe) each time.
fn refused_by_other_process(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    table: &LeaseTable,
) {
    const OTHER: &str = "held-by-other";
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: this benchmark process is single-threaded here (criterion 0.5 without
    // rayon); the child only takes a lease, writes one byte and sleeps until killed.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let lease = table.try_acquire(OTHER, Duration::from_secs(3600)).unwrap();
        // SAFETY: writing one byte from a live buffer to our pipe end.
        unsafe { libc::write(fds[1], [1u8].as_ptr().cast(), 1) };
        loop {
            std::thread::sleep(Duration::from_secs(3600));
            black_box(&lease);
        }
    }
    let mut byte = [0u8];
    // SAFETY: reading one byte into a live buffer from our pipe end.
    assert_eq!(unsafe { libc::read(fds[0], byte.as_mut_ptr().cast(), 1) }, 1);
    g.bench_function("try_acquire_refused_held_by_other_process", |b| {
        b.iter(|| match table.try_acquire(black_box(OTHER), TTL) {
            Err(Error::Held { token, .. }) => token,
            other => panic!("expected Held, got {other:?}"),
        })
    });
    // SAFETY: killing and reaping the child we forked; closing our pipe ends.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    // Take the dead child's lease back, so that the table can be removed (it refuses
    // while a grant is held): the child's "alive" verdict is reused for a millisecond.
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match table.try_acquire(OTHER, TTL) {
            Ok(l) => break l.release().unwrap(),
            Err(Error::Held { .. }) if std::time::Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("the killed child's lease was not reclaimed: {e}"),
        }
    }
}

/// The C API through `dlopen`, so that this crate need not link the ffi crate (which
/// builds only a cdylib and a staticlib).
fn ffi_bench(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    loc: &Location,
) {
    use std::ffi::{c_char, c_int, c_void};
    type Open = unsafe extern "C" fn(*const c_char, *const c_void, *mut *mut c_void) -> c_int;
    type Close = unsafe extern "C" fn(*mut c_void);
    type TryAcquire = unsafe extern "C" fn(
        *const c_void,
        *const c_char,
        u64,
        *mut *mut c_void,
        *mut c_void,
    ) -> c_int;
    type Release = unsafe extern "C" fn(*mut c_void) -> c_int;
    type Free = unsafe extern "C" fn(*mut c_void);

    let Some(lib) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("libshmlease.so")))
        .filter(|p| p.exists())
    else {
        eprintln!(
            "note: ffi/try_acquire+release skipped: build the C library first \
             (cargo build --release -p shmlease-ffi)"
        );
        return;
    };
    let path = c_string(lib.to_str().expect("utf-8 path"));
    // SAFETY: loading a library we built; its initialisers are Rust's (none that matter).
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        eprintln!("note: ffi benchmark skipped: dlopen({}) failed", lib.display());
        return;
    }
    let sym = |name: &str| {
        let n = c_string(name);
        // SAFETY: `handle` is a live library handle and `n` a C string.
        let p = unsafe { libc::dlsym(handle, n.as_ptr()) };
        assert!(!p.is_null(), "{name} missing from {}", lib.display());
        p
    };
    // SAFETY: the signatures match include/shmlease.h (opaque pointers, c_int status).
    let (open, close, try_acquire, release, free) = unsafe {
        (
            std::mem::transmute::<*mut c_void, Open>(sym("shmlease_table_open")),
            std::mem::transmute::<*mut c_void, Close>(sym("shmlease_table_close")),
            std::mem::transmute::<*mut c_void, TryAcquire>(sym("shmlease_try_acquire")),
            std::mem::transmute::<*mut c_void, Release>(sym("shmlease_release")),
            std::mem::transmute::<*mut c_void, Free>(sym("shmlease_lease_free")),
        )
    };
    let Location::Shm(shm_name) = loc else { unreachable!() };
    let location = c_string(shm_name);
    let name = c_string(NAME);
    let mut table = std::ptr::null_mut();
    // SAFETY: valid C strings, NULL options, a writable out-pointer.
    let rc = unsafe { open(location.as_ptr(), std::ptr::null(), &mut table) };
    assert_eq!(rc, 0, "shmlease_table_open failed");
    g.bench_function("ffi_try_acquire+release+free", |b| {
        b.iter(|| {
            let mut lease = std::ptr::null_mut();
            // SAFETY: an open table, a C string, a writable out-pointer, NULL held_by.
            let rc = unsafe {
                try_acquire(
                    table,
                    black_box(name.as_ptr()),
                    TTL_NS,
                    &mut lease,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(rc, 0);
            // SAFETY: `lease` is the live handle just returned; freed exactly once.
            unsafe {
                assert_eq!(release(lease), 0);
                free(lease);
            }
        })
    });
    // SAFETY: the handle came from `open` and is closed once; the library stays loaded.
    unsafe { close(table) };
}

fn baselines(c: &mut Criterion) {
    let shm = Shm::create(&shm_path(&scratch_name("base")), 4096);
    // SAFETY: offsets 0 and 128 lie inside the zero-filled mapping, aligned (checked by
    // `at`); atomics are valid for any bytes; the mapping outlives the references.
    let (w64, w128) = unsafe { (&*shm.at::<AtomicU64>(0), &*shm.at::<AtomicU128>(128)) };
    let mutex = shm.at::<libc::pthread_mutex_t>(256);
    let sem = shm.at::<libc::sem_t>(512);
    // SAFETY: unused, aligned shared memory.
    unsafe {
        robust_mutex_init(mutex);
        shared_sem_init(sem);
    }
    assert!(AtomicU128::is_lock_free());

    let mut g = c.benchmark_group("baseline");
    g.bench_function("clock_gettime_MONOTONIC", |b| b.iter(mono_ns));
    g.bench_function("clock_gettime_MONOTONIC_COARSE", |b| {
        b.iter(|| clock_ns(libc::CLOCK_MONOTONIC_COARSE))
    });
    g.bench_function("CAS64_acquire+release", |b| {
        b.iter(|| {
            let won = w64.compare_exchange(0, 1, AcqRel, Acquire).is_ok();
            let freed = w64.compare_exchange(1, 0, AcqRel, Acquire).is_ok();
            black_box(won & freed)
        })
    });
    // The physical limit of a TTL lease: read the clock, read the word and check that it
    // is expired/free, CAS it to now + ttl, CAS it back to free.
    g.bench_function("clock+CAS64_acquire+release", |b| {
        b.iter(|| {
            let now = mono_ns();
            let cur = w64.load(Acquire);
            assert!(cur <= now);
            let deadline = now + TTL_NS;
            let won = w64.compare_exchange(cur, deadline, AcqRel, Acquire).is_ok();
            let freed = w64.compare_exchange(deadline, 0, AcqRel, Acquire).is_ok();
            black_box(won & freed)
        })
    });
    // The same with shmlease's word: (deadline, token) in one 128-bit CAS.
    g.bench_function("clock+CAS128_acquire+release", |b| {
        b.iter(|| {
            let now = mono_ns();
            let cur = w128.load(Acquire);
            assert!((cur as u64) <= now);
            let token = ((cur >> 64) as u64 + 1).max(now) as u128;
            let new = token << 64 | (now + TTL_NS) as u128;
            let won = w128.compare_exchange(cur, new, AcqRel, Acquire).is_ok();
            let freed = w128.compare_exchange(new, token << 64, AcqRel, Acquire).is_ok();
            black_box(won & freed)
        })
    });
    // The limit of renew: clock read, read the word, one CAS extending the deadline.
    g.bench_function("clock+CAS64_renew", |b| {
        w64.store(1, Release);
        b.iter(|| {
            let now = mono_ns();
            let cur = w64.load(Acquire);
            black_box(w64.compare_exchange(cur, now + TTL_NS, AcqRel, Acquire).is_ok())
        });
        w64.store(0, Release);
    });
    g.bench_function("clock+CAS128_renew", |b| {
        w128.store(7 << 64 | 1, Release);
        b.iter(|| {
            let now = mono_ns();
            let cur = w128.load(Acquire);
            let new = cur & !(u64::MAX as u128) | (now + TTL_NS) as u128;
            black_box(w128.compare_exchange(cur, new, AcqRel, Acquire).is_ok())
        });
        w128.store(0, Release);
    });
    g.bench_function("robust_pthread_mutex_lock+unlock", |b| {
        // SAFETY: an initialised, mapped mutex, locked and unlocked by this thread.
        b.iter(|| unsafe {
            robust_lock(mutex);
            robust_unlock(mutex);
        })
    });
    g.bench_function("posix_sem_wait+post", |b| {
        // SAFETY: an initialised, mapped semaphore of value 1.
        b.iter(|| unsafe {
            libc::sem_wait(sem);
            libc::sem_post(sem);
        })
    });
    let lock_path = shm_path(&scratch_name("lockfile"));
    let file = lock_file(&lock_path);
    g.bench_function("flock_EX+UN", |b| {
        b.iter(|| {
            flock(&file, libc::LOCK_EX);
            flock(&file, libc::LOCK_UN);
        })
    });
    g.bench_function("fcntl_OFD_lock+unlock", |b| {
        b.iter(|| {
            assert!(ofd_lock(&file, libc::F_OFD_SETLK, libc::F_WRLCK));
            assert!(ofd_lock(&file, libc::F_OFD_SETLK, libc::F_UNLCK));
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&lock_path);
}

/// `SHMLEASE_COUNT=OP fastpath --bench`: runs `OP` 100,000 times outside criterion and
/// exits, for instruction counts per operation under
/// `valgrind --tool=callgrind --toggle-collect=fastpath::count_loop*` (see BENCHMARKS.md,
/// "Below the precise-clock limit"). OP: `acquire+release`, `renew`, `is_valid`,
/// `limit64` (clock + load + CAS64 + CAS64), `limit64_renew` (clock + load + one CAS).
fn counted(op: &str) {
    let n = std::env::var("SHMLEASE_COUNT_N").map_or(100_000, |n| n.parse().unwrap());
    let loc = Location::Shm(scratch_name("count"));
    let _ = LeaseTable::remove(&loc);
    let table = LeaseTable::create(&loc, &TableOptions::new().capacity(4096)).unwrap();
    table.try_acquire(NAME, TTL).unwrap().release().unwrap();
    let shm = Shm::create(&shm_path(&scratch_name("count-base")), 4096);
    // SAFETY: offset 0 lies inside the zero-filled mapping, aligned; the mapping
    // outlives the reference.
    let w64 = unsafe { &*shm.at::<AtomicU64>(0) };
    let hold = Duration::from_secs(3600);
    match op {
        "acquire+release" => {
            count_loop(n, || table.try_acquire(black_box(NAME), TTL).unwrap().release().unwrap())
        }
        "renew" | "is_valid" => {
            let lease = table.try_acquire(NAME, hold).unwrap();
            if op == "renew" {
                count_loop(n, || lease.renew(black_box(hold)).unwrap());
            } else {
                count_loop(n, || assert!(black_box(&lease).is_valid()));
            }
            lease.release().unwrap();
        }
        "limit64" => count_loop(n, || {
            let now = mono_ns();
            let cur = w64.load(Acquire);
            assert!(cur <= now);
            let deadline = now + TTL_NS;
            let won = w64.compare_exchange(cur, deadline, AcqRel, Acquire).is_ok();
            let freed = w64.compare_exchange(deadline, 0, AcqRel, Acquire).is_ok();
            black_box(won & freed);
        }),
        "limit64_renew" => count_loop(n, || {
            let now = mono_ns();
            let cur = w64.load(Acquire);
            black_box(w64.compare_exchange(cur, now + TTL_NS, AcqRel, Acquire).is_ok());
        }),
        _ => panic!("unknown SHMLEASE_COUNT operation {op:?}"),
    }
    drop(table);
    LeaseTable::remove(&loc).unwrap();
}

/// `SHMLEASE_RATIO=1 fastpath --bench`: our fast path and its limits, measured in
/// alternating rounds (so that a change in the machine's load hits both sides alike),
/// printed as medians over the rounds and the median of the per-round ratios: the
/// numbers of "Below the precise-clock limit" in BENCHMARKS.md.
fn ratios() {
    const ROUNDS: usize = 301;
    const PER_ROUND: u32 = 20_000;
    let loc = Location::Shm(scratch_name("ratio"));
    let _ = LeaseTable::remove(&loc);
    let table = LeaseTable::create(&loc, &TableOptions::new().capacity(4096)).unwrap();
    table.try_acquire(NAME, TTL).unwrap().release().unwrap();
    let shm = Shm::create(&shm_path(&scratch_name("ratio-base")), 4096);
    // SAFETY: offsets 0 and 128 lie inside the zero-filled mapping, aligned; the mapping
    // outlives the references.
    let (w64, w64r) = unsafe { (&*shm.at::<AtomicU64>(0), &*shm.at::<AtomicU64>(128)) };
    // The library's own 128-bit word (inline `cmpxchg16b` where the CPU allows it).
    // SAFETY: as above, at offsets 256 and 384.
    let (w128, w128r) = unsafe {
        (&*shm.at::<shmlease::sync::AtomicU128>(256), &*shm.at::<shmlease::sync::AtomicU128>(384))
    };
    w128r.store(7 << 64 | 1, Release);
    let hold = Duration::from_secs(3600);
    let lease = table.try_acquire("renewed", hold).unwrap();
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..PER_ROUND {
            f();
        }
        start.elapsed().as_nanos() as f64 / PER_ROUND as f64
    };
    type Case<'a> = (&'static str, Box<dyn FnMut() + 'a>);
    let mut cases: Vec<Case<'_>> = vec![
        (
            "ours/try_acquire+release",
            Box::new(|| table.try_acquire(black_box(NAME), TTL).unwrap().release().unwrap()),
        ),
        (
            "limit/clock+CAS64_acquire+release",
            Box::new(|| {
                let now = mono_ns();
                let cur = w64.load(Acquire);
                assert!(cur <= now);
                let deadline = now + TTL_NS;
                let won = w64.compare_exchange(cur, deadline, AcqRel, Acquire).is_ok();
                let freed = w64.compare_exchange(deadline, 0, AcqRel, Acquire).is_ok();
                black_box(won & freed);
            }),
        ),
        (
            "floor/coarse+CAS128_acquire+release",
            Box::new(|| {
                let now = clock_ns(libc::CLOCK_MONOTONIC_COARSE);
                let cur = w128.load(Acquire);
                assert!((cur as u64) <= now);
                let token = ((cur >> 64) as u64 + 1).max(now) as u128;
                let new = token << 64 | (now + TTL_NS) as u128;
                let won = w128.compare_exchange(cur, new, AcqRel, Acquire).is_ok();
                let freed = w128.compare_exchange(new, token << 64, AcqRel, Acquire).is_ok();
                black_box(won & freed);
            }),
        ),
        ("ours/renew", Box::new(|| lease.renew(black_box(hold)).unwrap())),
        (
            "limit/clock+CAS64_renew",
            Box::new(|| {
                let now = mono_ns();
                let cur = w64r.load(Acquire);
                black_box(w64r.compare_exchange(cur, now + TTL_NS, AcqRel, Acquire).is_ok());
            }),
        ),
        (
            "floor/clock+CAS128_renew",
            Box::new(|| {
                let now = mono_ns();
                let cur = w128r.load(Acquire);
                let new = cur & !(u64::MAX as u128) | (now + TTL_NS) as u128;
                black_box(w128r.compare_exchange(cur, new, AcqRel, Acquire).is_ok());
            }),
        ),
    ];
    let mut times = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in cases.iter_mut().enumerate() {
            times[i].push(time(f.as_mut()));
        }
    }
    let names: Vec<&str> = cases.iter().map(|(name, _)| *name).collect();
    drop(cases);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = |a: usize, b: usize, times: &[Vec<f64>]| {
        let mut r: Vec<f64> = times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect();
        median(&mut r)
    };
    let (r_acq, r_renew) = (ratio(0, 1, &times), ratio(3, 4, &times));
    for (name, t) in names.iter().zip(times.iter_mut()) {
        println!("{name:36} median {:7.2} ns", median(t));
    }
    println!("ratio try_acquire+release / limit: {r_acq:.3} (median of {ROUNDS} rounds)");
    println!("ratio renew / limit:               {r_renew:.3}");
    lease.release().unwrap();
    drop(table);
    LeaseTable::remove(&loc).unwrap();
}

/// The measured loop of [`counted`] (not inlined, so callgrind can collect just it).
#[inline(never)]
fn count_loop(n: u64, mut f: impl FnMut()) {
    for _ in 0..n {
        f();
    }
}

fn main() {
    if let Ok(op) = std::env::var("SHMLEASE_COUNT") {
        return counted(&op);
    }
    if std::env::var_os("SHMLEASE_RATIO").is_some() {
        return ratios();
    }
    let mut c = config();
    baselines(&mut c);
    ours(&mut c);
    c.final_summary();
}
