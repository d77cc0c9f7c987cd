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
//! pointers, as a C program's calls go through the PLT. With `SHMLEASE_BENCH_BASE_LIB`
//! set to the path of a second build (an older one, say), its C ways run too, in the
//! same rounds (`c_handle@base`, `c_storage@base`): before and after in one run. Each
//! round times one batch of each way (rotating the order); reported: the median ns per
//! take + release of each way, and the median over rounds of the per-round ratio
//! C ÷ Rust. Results also go to `target/shmlease-bench/<baseline>/c_api.json`.
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

/// The C library at `lib`, if there is one.
fn load(lib: &std::path::Path) -> Option<CApi> {
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

/// A C library with the table open through it, and storage for one lease.
struct COpen {
    api: CApi,
    table: *const c_void,
    /// 16-byte aligned (more than the header asks for), zeroed; empty if the library
    /// has no storage.
    storage: Vec<u128>,
}

impl COpen {
    fn new(api: CApi, location: &std::ffi::CStr) -> COpen {
        let mut table = std::ptr::null_mut();
        // SAFETY: a valid C string, NULL options, a writable out-pointer.
        assert_eq!(unsafe { (api.open)(location.as_ptr(), std::ptr::null(), &mut table) }, 0);
        let storage = vec![0u128; api.try_acquire_in.map_or(0, |(_, size)| size.div_ceil(16))];
        COpen { api, table, storage }
    }

    /// The C ways through this library, named with `suffix`.
    fn ways<'a>(&'a mut self, suffix: &str, name: &'a std::ffi::CStr) -> Vec<(String, Way<'a>)> {
        let (c, table) = (&self.api, self.table);
        let storage = self.storage.as_mut_ptr().cast::<c_void>();
        let mut ways: Vec<(String, Way<'a>)> = vec![(
            format!("c_handle{suffix}"),
            Box::new(move |n| {
                for _ in 0..n {
                    let mut lease = std::ptr::null_mut();
                    // SAFETY: an open table, a C string, a writable out-pointer, NULL
                    // held_by; the lease returned is released and freed exactly once.
                    unsafe {
                        let rc = (c.try_acquire)(
                            table,
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
        )];
        match c.try_acquire_in {
            Some((try_in, _)) => ways.push((
                format!("c_storage{suffix}"),
                Box::new(move |n| {
                    for _ in 0..n {
                        let mut lease = std::ptr::null_mut();
                        // SAFETY: an open table that outlives the lease, a C string,
                        // storage of the size the library reports (zeroed, then only
                        // ever holding leases released here), a writable out-pointer,
                        // NULL held_by.
                        unsafe {
                            let rc = try_in(
                                table,
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
            )),
            None => eprintln!(
                "c_api: this libshmlease.so has no shmlease_try_acquire_in: \
                 c_storage{suffix} skipped"
            ),
        }
        ways
    }
}

impl Drop for COpen {
    fn drop(&mut self) {
        // SAFETY: the handle came from `open` and is closed once, after the last lease
        // taken through it was released; the library stays loaded.
        unsafe { (self.api.close)(self.table as *mut c_void) };
    }
}

fn main() {
    let only = std::env::var("SHMLEASE_BENCH_ONLY").ok();
    if !bench_mode() && only.is_none() {
        return; // under `cargo test`
    }
    let lib = match std::env::var_os("SHMLEASE_BENCH_LIB") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("the bench's own path");
            let release = exe.parent().and_then(|d| d.parent()).expect("target/release");
            release.join("libshmlease.so")
        }
    };
    let Some(c) = load(&lib) else {
        eprintln!(
            "c_api: skipped: build the C library first (cargo build --release -p shmlease-ffi)"
        );
        return;
    };
    let base = std::env::var_os("SHMLEASE_BENCH_BASE_LIB").map(|path| {
        let path = std::path::PathBuf::from(path);
        load(&path).unwrap_or_else(|| panic!("no C library at {}", path.display()))
    });
    let loc = Location::Shm(scratch_name("capi"));
    let _ = LeaseTable::remove(&loc);
    let table = LeaseTable::create(&loc, &TableOptions::new().capacity(4096)).unwrap();
    table.try_acquire(NAME, TTL).unwrap().release().unwrap(); // bind the name once
    let Location::Shm(shm_name) = &loc else { unreachable!() };
    let location = c_string(shm_name);
    let name = c_string(NAME);
    let mut mine = COpen::new(c, &location);
    let mut base = base.map(|b| COpen::new(b, &location));

    let mut ways: Vec<(String, Way<'_>)> = vec![(
        "rust".into(),
        Box::new(|n| {
            for _ in 0..n {
                table.try_acquire(black_box(NAME), TTL).unwrap().release().unwrap();
            }
        }),
    )];
    ways.extend(mine.ways("", &name));
    if let Some(base) = base.as_mut() {
        ways.extend(base.ways("@base", &name));
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
    drop((mine, base));
    drop(table);
    LeaseTable::remove(&loc).unwrap();
}

fn run(ways: &mut [(String, Way<'_>)]) {
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
        println!("  {way:<15} {ns}   ratio {ratio:.3} ({rlo:.3} .. {rhi:.3})");
        json.push(format!(
            "{{\"way\":\"{way}\",\"p25_ns\":{lo:.2},\"median_ns\":{mid:.2},\"p75_ns\":{hi:.2},\
             \"ratio_median\":{ratio:.4},\"ratio_p25\":{rlo:.4},\"ratio_p75\":{rhi:.4}}}"
        ));
    }
    let path = out_dir().join("c_api.json");
    std::fs::write(&path, format!("[{}]\n", json.join(","))).expect("writing c_api.json");
    println!("  written to {}", path.display());
}
