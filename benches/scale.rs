//! How shmlease scales with the table (issue 5, part 4): create and open time, and the
//! cost of `try_acquire` + `release`, for 1,000, 65,536 and 1,000,000 slots at 10%, 50%
//! and 90% occupancy; bytes per slot.
//!
//! Occupancy means that many names bound and *held* (by this process). The measured
//! operation then takes and releases *other* names, bound beforehand and free (a random
//! 5% of the names bound at that occupancy, so that their probe lengths are typical),
//! chosen at random from a pre-generated list (one contiguous string of fixed-width
//! names, read in order, so that the harness adds no cache miss of its own):
//!
//! - `random`: all of those names (5% of the capacity, at least 16), so that at a million
//!   slots each operation touches a slot that is normally not in any cache — the honest
//!   cost for a process that uses many names;
//! - `hot64`: 64 of them, so that the slots stay cached and only the table's own work
//!   (hashing, probing past held slots) grows with capacity and occupancy.
//!
//! Create/open times and bytes per slot are measured by a plain loop (median of 7) and
//! written to `target/shmlease-bench/<baseline>/scale.json`; the acquire costs are
//! criterion benchmarks (group `scale_random`, `scale_hot64`), next to
//! `scale_random_limit`: clock + 128-bit CAS acquire + release on randomly chosen
//! 128-byte slots of a shared array as large as the table (the hardware's limit for
//! the `random` case).
//!
//! Run: `cargo bench --bench scale`. Under `cargo test` it does nothing.

// Registered with `harness = false`; if a checkout lacks that entry, cargo builds this
// file as a libtest bench, where `main` is unused: that must not fail the lint run.
#![cfg_attr(test, allow(dead_code))]
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use shmlease::{Lease, LeaseTable, Location, TableOptions};

mod common;
use common::*;

const TTL: Duration = Duration::from_secs(600);
const CAPACITIES: [u32; 3] = [1_000, 65_536, 1_000_000];
const OCCUPANCIES: [u32; 3] = [10, 50, 90];
const INDEX_LIST: usize = 1 << 16;
/// Every name is this long (`name-` and seven digits).
const NAME_WIDTH: usize = 12;

fn name_of(i: usize) -> String {
    let name = format!("name-{i:07}");
    debug_assert_eq!(name.len(), NAME_WIDTH);
    name
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Create and open times, bytes per slot; returns a JSON fragment per capacity.
fn create_open(json: &mut String) {
    for (n, &cap) in CAPACITIES.iter().enumerate() {
        let loc = Location::Shm(scratch_name(&format!("create-{cap}")));
        let _ = LeaseTable::remove(&loc);
        let opts = TableOptions::new().capacity(cap);
        let (mut creates, mut opens) = (Vec::new(), Vec::new());
        let mut size = 0;
        for _ in 0..7 {
            let t = Instant::now();
            let table = LeaseTable::create(&loc, &opts).unwrap();
            creates.push(t.elapsed());
            size =
                std::fs::metadata(shm_path(&scratch_name(&format!("create-{cap}")))).unwrap().len();
            let t = Instant::now();
            let opened = LeaseTable::open(&loc).unwrap();
            opens.push(t.elapsed());
            // First use of an untouched table faults its pages in: worth knowing too.
            drop(opened);
            drop(table);
            LeaseTable::remove(&loc).unwrap();
        }
        let (c, o) = (median(creates), median(opens));
        let per_slot = size as f64 / cap as f64;
        println!(
            "scale: capacity {cap:>9}: create {:>10.3} ms, open {:>8.3} ms, file {size} bytes = {per_slot:.3} bytes/slot",
            c.as_secs_f64() * 1e3,
            o.as_secs_f64() * 1e3
        );
        let _ = write!(
            json,
            "{}{{\"capacity\":{cap},\"create_ns\":{},\"open_ns\":{},\"file_bytes\":{size},\"bytes_per_slot\":{per_slot}}}",
            if n > 0 { "," } else { "" },
            c.as_nanos(),
            o.as_nanos()
        );
    }
}

fn acquire_costs(c: &mut Criterion) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for &cap in &CAPACITIES {
        let loc = Location::Shm(scratch_name(&format!("scale-{cap}")));
        let _ = LeaseTable::remove(&loc);
        let table = LeaseTable::create(&loc, &TableOptions::new().capacity(cap)).unwrap();
        let pool_n = (cap as usize / 20).max(16);
        let mut held: Vec<Option<Lease<'_>>> = Vec::new();
        for &occ in &OCCUPANCIES {
            // Bind and hold occupancy + 5% names, then let go of a random 5% of them:
            // the measured names are a fair sample of the table's probe lengths (names
            // bound early sit at their home slot; names bound late probe furthest).
            let target = cap as usize * occ as usize / 100 + pool_n;
            let t = Instant::now();
            while held.len() < target {
                held.push(Some(table.try_acquire(&name_of(held.len()), TTL).unwrap()));
            }
            let mut all: Vec<u32> = (0..held.len() as u32).collect();
            for i in 0..pool_n {
                let j = i + rng.below(all.len() - i);
                all.swap(i, j);
            }
            let pool = &all[..pool_n];
            for &i in pool {
                held[i as usize] = None; // released
            }
            eprintln!(
                "scale: {cap} slots at {occ}% held ({} held, {pool_n} free names measured), filled in {:.2} s",
                held.len() - pool_n,
                t.elapsed().as_secs_f64()
            );
            let hot_n = pool_n.min(64);
            // The access sequences, pre-generated as one contiguous string of
            // fixed-width names read in order: the harness itself then misses no
            // cache, and every miss measured is the table's.
            let random_seq: String =
                (0..INDEX_LIST).map(|_| name_of(pool[rng.below(pool_n)] as usize)).collect();
            let hot_seq: String =
                (0..INDEX_LIST).map(|_| name_of(pool[rng.below(hot_n)] as usize)).collect();
            for (group, seq) in [("scale_random", &random_seq), ("scale_hot64", &hot_seq)] {
                let mut g = c.benchmark_group(group);
                g.bench_function(BenchmarkId::new(format!("occupancy_{occ}pct"), cap), |b| {
                    let mut i = 0usize;
                    b.iter(|| {
                        let at = (i & (INDEX_LIST - 1)) * NAME_WIDTH;
                        let name = &seq[at..at + NAME_WIDTH];
                        i = i.wrapping_add(1);
                        table.try_acquire(black_box(name), TTL).unwrap().release().unwrap()
                    })
                });
                g.finish();
            }
            for &i in pool {
                held[i as usize] = Some(table.try_acquire(&name_of(i as usize), TTL).unwrap());
            }
        }
        drop(held);
        drop(table);
        LeaseTable::remove(&loc).unwrap();
        random_limit(c, cap, pool_n, &mut rng);
    }
}

/// The physical limit of the `random` case: clock read + 128-bit CAS acquire + CAS
/// release on a randomly chosen 128-byte slot of a `MAP_SHARED` array as large as the
/// table, over the same number of distinct slots as the `random` pool.
fn random_limit(c: &mut Criterion, cap: u32, pool_n: usize, rng: &mut XorShift) {
    use portable_atomic::AtomicU128;
    use std::sync::atomic::Ordering::*;
    let path = shm_path(&scratch_name(&format!("limit-{cap}")));
    let len = cap as usize * 128;
    let shm = Shm::create(&path, len);
    let slots: Vec<u32> = (0..pool_n).map(|_| rng.below(cap as usize) as u32).collect();
    let idx: Vec<u32> = (0..INDEX_LIST).map(|_| slots[rng.below(pool_n)]).collect();
    // SAFETY: every slot index is below `cap`, so each 16-byte word lies inside the
    // mapping, 128-byte aligned; atomics are valid for any bytes.
    let word = |i: u32| unsafe { &*shm.at::<AtomicU128>(i as usize * 128) };
    for i in 0..cap {
        word(i).store(0, Relaxed); // fault every page in, as a used table is
    }
    let mut g = c.benchmark_group("scale_random_limit");
    g.bench_function(BenchmarkId::new("clock+CAS128", cap), |b| {
        let mut i = 0usize;
        b.iter(|| {
            let w = word(idx[i & (INDEX_LIST - 1)]);
            i = i.wrapping_add(1);
            let now = mono_ns();
            let cur = w.load(Acquire);
            assert!((cur as u64) <= now);
            let token = ((cur >> 64) as u64 + 1).max(now) as u128;
            let new = token << 64 | (now + 1_000_000_000) as u128;
            let won = w.compare_exchange(cur, new, AcqRel, Acquire).is_ok();
            let freed = w.compare_exchange(new, token << 64, AcqRel, Acquire).is_ok();
            black_box(won & freed)
        })
    });
    g.finish();
}

fn main() {
    if !bench_mode() {
        println!("scale: nothing to do outside `cargo bench`");
        return;
    }
    let mut json = String::from("{\"create_open\":[");
    create_open(&mut json);
    json.push_str("]}");
    let out = out_dir().join("scale.json");
    std::fs::write(&out, json).unwrap();
    eprintln!("scale: wrote {}", out.display());
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    acquire_costs(&mut c);
    c.final_summary();
}
