//! The C API against the Rust call it wraps, in one run (issue 15, target 3).
//!
//! Uncontended take + release of one 8-byte name, three ways, in interleaved batches so
//! that load from other processes hits all of them alike:
//! - `rust`: `table.try_acquire(name, ttl)?.release()`;
//! - `c_handle`: `shmlease_try_acquire` + `shmlease_release` + `shmlease_lease_free`
//!   (a heap-allocated handle per lease);
//! - `c_storage`: `shmlease_try_acquire_in` + `shmlease_release` on a caller-provided
//!   `shmlease_lease_storage` (no allocation), when the library has it.
//!
//! The C library is loaded with `dlopen` from `target/release/libshmlease.so` (build it
//! with `cargo build --release -p shmlease-ffi`), or from the path in
//! `SHMLEASE_BENCH_LIB` (another build, to compare), so calls go through function
//! pointers, as a C program's calls go through the PLT. Each round times one batch of each way
//! (rotating the order); reported: the median ns per take + release of each way, and the
//! median over rounds of the per-round ratio C ÷ Rust. Results also go to
//! `target/shmlease-bench/<baseline>/c_api.json`.
//!
//! Run: `cargo build --release -p shmlease-ffi && cargo bench --bench c_api`.
//! For instruction counts, run one way alone a fixed number of times:
//! `SHMLEASE_BENCH_ONLY=rust|c_handle|c_storage SHMLEASE_BENCH_ITERS=N
//! valgrind --tool=callgrind <bench binary> --bench` (BENCHMARKS.md has the recipe).
//! Under `cargo test` it does nothing.

#![cfg_attr(test, allow(dead_code))]
use std::ffi::{c_char, c_int, c_void};
use std::hint::black_box;
use std::time::{Duration, Instant};

use shmlease::{LeaseTable, Location, TableOptions};

mod common;
use common::*;

const TTL: Duration = Duration::from_secs(10);
const TTL_NS: u64 = 10_000_000_000;
const NAME: &str = "db-migr8"; // 8 bytes, as in the fastpath bench
const ROUNDS: usize = 1001;
const BATCH: u64 = 2_000;

type Open = unsafe extern "C" fn(*const c_char, *const c_void, *mut *mut c_void) -> c_int;
type Close = unsafe extern "C" fn(*mut c_void);
type TryAcquire =
    unsafe extern "C" fn(*const c_void, *const c_char, u64, *mut *mut c_void, *mut c_void) -> c_int;
type TryAcquireIn = unsafe extern "C" fn(
    *const c_void,
    *const c_char,
    u64,
    *mut c_void,
    *mut *mut c_void,
    *mut c_void,
) -> c_int;
type Release = unsafe extern "C" fn(*mut c_void) -> c_int;
type Free = unsafe extern "C" fn(*mut c_void);
type StorageSize = unsafe extern "C" fn() -> usize;

/// The C library's entry points, from `dlopen`.
struct CApi {
    open: Open,
    close: Close,
    try_acquire: TryAcquire,
    release: Release,
    free: Free,
    /// `shmlease_try_acquire_in` and the storage size, if the library has them.
    try_acquire_in: Option<(TryAcquireIn, usize)>,
}

fn load() -> Option<CApi> {
    let lib = match std::env::var_os("SHMLEASE_BENCH_LIB") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::current_exe().ok()?.parent()?.parent()?.join("libshmlease.so"),
    };
    if !lib.exists() {
        return None;
    }
    eprintln!("c_api: C library {}", lib.display());
    let path = c_string(lib.to_str().expect("utf-8 path"));
    // SAFETY: loading a library we built; its initialisers are Rust's (none that matter).
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let sym = |name: &str| {
        let n = c_string(name);
        // SAFETY: `handle` is a live library handle and `n` a C string.
        unsafe { libc::dlsym(handle, n.as_ptr()) }
    };
    let need = |name: &str| {
        let p = sym(name);
        assert!(!p.is_null(), "{name} missing from {}", lib.display());
        p
    };
    // SAFETY: the signatures match include/shmlease.h (opaque pointers, c_int status,
    // size_t for the storage size).
    unsafe {
        let try_in = sym("shmlease_try_acquire_in");
        let size = sym("shmlease_lease_storage_size");
        Some(CApi {
            open: std::mem::transmute::<*mut c_void, Open>(need("shmlease_table_open")),
            close: std::mem::transmute::<*mut c_void, Close>(need("shmlease_table_close")),
            try_acquire: std::mem::transmute::<*mut c_void, TryAcquire>(need(
                "shmlease_try_acquire",
            )),
            release: std::mem::transmute::<*mut c_void, Release>(need("shmlease_release")),
            free: std::mem::transmute::<*mut c_void, Free>(need("shmlease_lease_free")),
            try_acquire_in: (!try_in.is_null() && !size.is_null()).then(|| {
                let size = std::mem::transmute::<*mut c_void, StorageSize>(size)();
                (std::mem::transmute::<*mut c_void, TryAcquireIn>(try_in), size)
            }),
        })
    }
}

/// One way of taking and releasing the lease: runs `n` take + release pairs.
type Way<'a> = Box<dyn FnMut(u64) + 'a>;

fn main() {
    let only = std::env::var("SHMLEASE_BENCH_ONLY").ok();
    if !bench_mode() && only.is_none() {
        return; // under `cargo test`
    }
    let Some(c) = load() else {
        eprintln!(
            "c_api: skipped: build the C library first (cargo build --release -p shmlease-ffi)"
        );
        return;
    };
    let loc = Location::Shm(scratch_name("capi"));
    let _ = LeaseTable::remove(&loc);
    let table = LeaseTable::create(&loc, &TableOptions::new().capacity(4096)).unwrap();
    table.try_acquire(NAME, TTL).unwrap().release().unwrap(); // bind the name once
    let Location::Shm(shm_name) = &loc else { unreachable!() };
    let location = c_string(shm_name);
    let name = c_string(NAME);
    let mut ctable = std::ptr::null_mut();
    // SAFETY: valid C strings, NULL options, a writable out-pointer.
    assert_eq!(unsafe { (c.open)(location.as_ptr(), std::ptr::null(), &mut ctable) }, 0);
    let ctable = ctable as *const c_void;
    // Storage for the lease, 16-byte aligned (more than the header asks for).
    let mut storage = vec![0u128; c.try_acquire_in.map_or(0, |(_, size)| size.div_ceil(16))];
    let storage = storage.as_mut_ptr().cast::<c_void>();
    let (c, name) = (&c, &name);

    let mut ways: Vec<(&str, Way<'_>)> = vec![
        (
            "rust",
            Box::new(|n| {
                for _ in 0..n {
                    table.try_acquire(black_box(NAME), TTL).unwrap().release().unwrap();
                }
            }),
        ),
        (
            "c_handle",
            Box::new(|n| {
                for _ in 0..n {
                    let mut lease = std::ptr::null_mut();
                    // SAFETY: an open table, a C string, a writable out-pointer, NULL
                    // held_by; the lease returned is released and freed exactly once.
                    unsafe {
                        let rc = (c.try_acquire)(
                            ctable,
                            black_box(name.as_ptr()),
                            TTL_NS,
                            &mut lease,
                            std::ptr::null_mut(),
                        );
                        assert_eq!(rc, 0);
                        assert_eq!((c.release)(lease), 0);
                        (c.free)(lease);
                    }
                }
            }),
        ),
    ];
    if let Some((try_in, _)) = c.try_acquire_in {
        ways.push((
            "c_storage",
            Box::new(move |n| {
                for _ in 0..n {
                    let mut lease = std::ptr::null_mut();
                    // SAFETY: an open table that outlives the lease, a C string, storage
                    // of the size the library reports (zeroed, then only ever holding
                    // leases released here), a writable out-pointer, NULL held_by.
                    unsafe {
                        let rc = try_in(
                            ctable,
                            black_box(name.as_ptr()),
                            TTL_NS,
                            storage,
                            &mut lease,
                            std::ptr::null_mut(),
                        );
                        assert_eq!(rc, 0);
                        assert_eq!((c.release)(lease), 0);
                    }
                }
            }),
        ));
    } else {
        eprintln!("c_api: this libshmlease.so has no shmlease_try_acquire_in: c_storage skipped");
    }

    if let Some(only) = only {
        // One way alone, for callgrind.
        let iters = std::env::var("SHMLEASE_BENCH_ITERS").ok().and_then(|s| s.parse().ok());
        let (_, way) = ways.iter_mut().find(|(n, _)| *n == only).expect("no such way");
        way(iters.unwrap_or(100_000));
    } else {
        run(&mut ways);
    }
    drop(ways);
    // SAFETY: the handle came from `open` and is closed once; the library stays loaded.
    unsafe { (c.close)(ctable as *mut c_void) };
    drop(table);
    LeaseTable::remove(&loc).unwrap();
}

fn run(ways: &mut [(&str, Way<'_>)]) {
    for (_, way) in ways.iter_mut() {
        way(BATCH); // warm-up
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for round in 0..ROUNDS {
        for k in 0..ways.len() {
            let i = (round + k) % ways.len();
            let start = Instant::now();
            (ways[i].1)(BATCH);
            ns[i].push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
    };
    println!(
        "c_api: {ROUNDS} rounds of {BATCH} take + release per way, interleaved; \
         ns per take + release (p25 / median / p75), ratio to rust (median of per-round ratios)"
    );
    let mut json = Vec::new();
    for (i, (way, _)) in ways.iter().enumerate() {
        let (lo, mid, hi) = median(&ns[i]);
        let ratios: Vec<f64> = ns[i].iter().zip(&ns[0]).map(|(c, r)| c / r).collect();
        let (rlo, ratio, rhi) = median(&ratios);
        let ns = format!("{lo:7.1} / {mid:7.1} / {hi:7.1} ns");
        println!("  {way:<10} {ns}   ratio {ratio:.3} ({rlo:.3} .. {rhi:.3})");
        json.push(format!(
            "{{\"way\":\"{way}\",\"p25_ns\":{lo:.2},\"median_ns\":{mid:.2},\"p75_ns\":{hi:.2},\
             \"ratio_median\":{ratio:.4},\"ratio_p25\":{rlo:.4},\"ratio_p75\":{rhi:.4}}}"
        ));
    }
    let path = out_dir().join("c_api.json");
    std::fs::write(&path, format!("[{}]\n", json.join(","))).expect("writing c_api.json");
    println!("  written to {}", path.display());
}
