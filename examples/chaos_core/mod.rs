//! The chaos harness shared by `examples/chaos.rs` and `tests/chaos.rs`: a controller
//! that runs worker processes over a few lease names and kill -9s, SIGSTOPs and
//! SIGCONTs them at random; the workers; and the checker that reads every worker's log
//! afterwards and verifies the invariants of `DESIGN.md`.
//!
//! All times are `CLOCK_MONOTONIC` nanoseconds, shared by every process of the host.
//! The checker never trusts a time it cannot bound from the right side: an interval
//! it compares for overlap is always *inside* the grant's true validity (start read
//! after the acquire returned, end a lower bound of the deadline or a time read before
//! the release / before the kill), so a correct library can never produce an overlap,
//! and a refusal is only blamed on a grant when the refusing attempt *started* after an
//! upper bound of that grant's life. See `docs/chaos.md`.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod checker;
mod controller;
mod worker;

#[allow(unused_imports)]
pub use controller::{run, Report, WorkerFate};
pub use worker::maybe_run_worker;

/// Environment variable that makes a process a worker; its value is the worker id.
pub const WORKER_ENV: &str = "SHMLEASE_CHAOS_WORKER";
/// A blocked `acquire` re-checks a live-process holder's liveness this often (library).
pub const LIVENESS_RECHECK_NS: u64 = 50_000_000;
/// Bytes per record in the shared record file (one cache line per name).
const RECORD_SIZE: usize = 64;
/// Most time the controller waits for workers to finish after the run.
pub(crate) const WIND_DOWN: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------
// Small utilities
// ------------------------------------------------------------------------------------

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn mono() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time this thread spent waiting on a run queue so far (ns), if the kernel says.
pub(crate) fn run_delay() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().nth(1)?.parse().ok()
}

/// The host's 1-minute load average, as text.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A small deterministic generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    /// True with probability `pct` percent.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    /// Exponentially distributed wait (ns) for events at `rate` per second.
    pub fn exp_ns(&mut self, rate: f64) -> u64 {
        if rate <= 0.0 {
            return u64::MAX / 4;
        }
        let u = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() / rate) * 1e9) as u64
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `1500us` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

pub(crate) fn lease_name(i: usize) -> String {
    format!("chaos-{i}")
}

/// The shared record file: per name, the largest token written so far and its writer.
/// Writes are fenced the way a real resource would fence them: a write with a token
/// smaller than the stored one is rejected.
pub(crate) struct Records {
    map: memmap2::MmapRaw,
    names: usize,
}

impl Records {
    pub(crate) fn create(path: &Path, names: usize) -> std::io::Result<()> {
        let f = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        f.set_len((names * RECORD_SIZE) as u64)
    }

    pub(crate) fn open(path: &Path, names: usize) -> std::io::Result<Records> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let map = memmap2::MmapOptions::new().len(names * RECORD_SIZE).map_raw(&f)?;
        Ok(Records { map, names })
    }

    /// The token word and the writer word of record `i`.
    fn words(&self, i: usize) -> (&AtomicU64, &AtomicU64) {
        assert!(i < self.names);
        // SAFETY: the mapping is `names * RECORD_SIZE` bytes, shared, page aligned and
        // lives as long as `self`; record `i` (i < names) lies inside it and is 64-byte
        // aligned. Other processes only ever access these words atomically, and any bit
        // pattern is a valid `AtomicU64`.
        unsafe {
            let base = self.map.as_mut_ptr().add(i * RECORD_SIZE) as *const AtomicU64;
            (&*base, &*base.add(1))
        }
    }

    /// Stores `token` (and `pid`) unless a larger token is there: `Ok` or the larger
    /// token found.
    pub(crate) fn write(&self, i: usize, token: u64, pid: u32) -> Result<(), u64> {
        let (tok, who) = self.words(i);
        let mut cur = tok.load(Ordering::SeqCst);
        loop {
            if cur > token {
                return Err(cur);
            }
            match tok.compare_exchange(cur, token, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    who.store(pid as u64, Ordering::SeqCst);
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn read(&self, i: usize) -> (u64, u64) {
        let (tok, who) = self.words(i);
        (tok.load(Ordering::SeqCst), who.load(Ordering::SeqCst))
    }
}

// ------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------

/// The harness's knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker processes alive at any time.
    pub workers: usize,
    /// Lease names the workers fight over.
    pub names: usize,
    /// How long the chaos lasts.
    pub duration: Duration,
    /// Seed of every random choice (controller and workers).
    pub seed: u64,
    /// kill -9s per second (Poisson).
    pub kill_rate: f64,
    /// SIGSTOPs per second (Poisson); each lasts longer than the largest TTL.
    pub stop_rate: f64,
    /// Table location; default: a file in the run directory (removed afterwards).
    pub table: Option<String>,
    /// Run directory for logs; default: a fresh one under the temp directory.
    pub dir: Option<PathBuf>,
    /// Table capacity when the harness creates the table.
    pub capacity: u32,
    /// Largest TTL (ms); TTLs are uniform in 1 ms ..= this.
    pub max_ttl_ms: u64,
    /// Scheduling slack allowed on top of the 50 ms liveness re-check when a blocked
    /// waiter reclaims a killed worker's lease.
    pub reclaim_slack: Duration,
    /// Keep the run directory even when the run is clean.
    pub keep: bool,
    /// Print a progress line every this often (zero: never).
    pub progress: Duration,
    /// Fault injection, to prove the checker can fail: `lie` makes workers believe and
    /// log deadlines 20 ms later than the library granted. Empty: none.
    pub fault: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 8,
            names: 4,
            duration: Duration::from_secs(60),
            seed: 0,
            kill_rate: 2.0,
            stop_rate: 2.0,
            table: None,
            dir: None,
            capacity: 64,
            max_ttl_ms: 50,
            reclaim_slack: Duration::from_millis(200),
            keep: false,
            progress: Duration::ZERO,
            fault: String::new(),
        }
    }
}

/// How to start a worker process (the controller adds the environment).
#[derive(Clone, Debug)]
pub struct Launcher {
    /// Program to run.
    pub exe: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Usage text of the example.
pub const USAGE: &str = "\
usage: chaos [--workers P] [--names N] [--duration DUR] [--seed S]
             [--kill-rate PER_SEC] [--stop-rate PER_SEC] [--table LOCATION]
             [--dir DIR] [--capacity C] [--max-ttl-ms MS] [--reclaim-slack DUR]
             [--keep] [--progress DUR] [--fault lie]
defaults: 8 workers, 4 names, 60s, seed from the clock, 2 kills/s, 2 stops/s,
          a table file in DIR, capacity 64, TTLs 1..=50 ms, slack 200ms";

impl Config {
    /// Parses command-line flags.
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let mut c = Config { seed: mono() ^ u64::from(std::process::id()), ..Config::default() };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--keep" {
                c.keep = true;
                continue;
            }
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.into());
            }
            let v = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = |e: String| format!("bad value {v:?} for {flag}: {e}");
            let dur = |v: &str| parse_duration(v).ok_or_else(|| format!("bad duration {v:?}"));
            match flag.as_str() {
                "--workers" => c.workers = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--names" => c.names = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--duration" => c.duration = dur(v)?,
                "--seed" => c.seed = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--kill-rate" => c.kill_rate = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--stop-rate" => c.stop_rate = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--table" => c.table = Some(v.clone()),
                "--dir" => c.dir = Some(PathBuf::from(v)),
                "--capacity" => c.capacity = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--max-ttl-ms" => c.max_ttl_ms = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--reclaim-slack" => c.reclaim_slack = dur(v)?,
                "--progress" => c.progress = dur(v)?,
                "--fault" => c.fault = v.clone(),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        if c.workers == 0 || c.names == 0 || c.max_ttl_ms == 0 {
            return Err("--workers, --names and --max-ttl-ms must be positive".into());
        }
        Ok(c)
    }
}
