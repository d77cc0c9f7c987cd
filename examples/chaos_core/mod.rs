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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmlease::{AcquireOptions, Error, LeaseState, LeaseTable, Location, TableOptions};

/// Environment variable that makes a process a worker; its value is the worker id.
pub const WORKER_ENV: &str = "SHMLEASE_CHAOS_WORKER";
/// A blocked `acquire` re-checks a live-process holder's liveness this often (library).
pub const LIVENESS_RECHECK_NS: u64 = 50_000_000;
/// Bytes per record in the shared record file (one cache line per name).
const RECORD_SIZE: usize = 64;
/// Most time the controller waits for workers to finish after the run.
const WIND_DOWN: Duration = Duration::from_secs(30);

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
fn run_delay() -> Option<u64> {
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

fn lease_name(i: usize) -> String {
    format!("chaos-{i}")
}

/// The shared record file: per name, the largest token written so far and its writer.
/// Writes are fenced the way a real resource would fence them: a write with a token
/// smaller than the stored one is rejected.
struct Records {
    map: memmap2::MmapRaw,
    names: usize,
}

impl Records {
    fn create(path: &Path, names: usize) -> std::io::Result<()> {
        let f = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        f.set_len((names * RECORD_SIZE) as u64)
    }

    fn open(path: &Path, names: usize) -> std::io::Result<Records> {
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
    fn write(&self, i: usize, token: u64, pid: u32) -> Result<(), u64> {
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

    fn read(&self, i: usize) -> (u64, u64) {
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

// ------------------------------------------------------------------------------------
// Worker
// ------------------------------------------------------------------------------------

/// Worker parameters, passed in `SHMLEASE_CHAOS_*` environment variables.
struct WorkerEnv {
    wid: u64,
    seed: u64,
    dir: PathBuf,
    table: String,
    names: usize,
    end: u64,
    parent: u32,
    max_ttl_ms: u64,
    /// Added to every deadline the worker believes in (fault injection).
    lie_ns: u64,
}

fn env(key: &str) -> String {
    std::env::var(format!("SHMLEASE_CHAOS_{key}")).unwrap_or_default()
}

/// If this process was started as a worker, runs it and returns `true`.
pub fn maybe_run_worker() -> bool {
    let Ok(wid) = std::env::var(WORKER_ENV) else { return false };
    let w = WorkerEnv {
        wid: wid.parse().expect("worker id"),
        seed: env("SEED").parse().expect("seed"),
        dir: PathBuf::from(env("DIR")),
        table: env("TABLE"),
        names: env("NAMES").parse().expect("names"),
        end: env("END").parse().expect("end"),
        parent: env("PARENT").parse().expect("parent"),
        max_ttl_ms: env("MAX_TTL_MS").parse().expect("max ttl"),
        lie_ns: if env("FAULT") == "lie" { 20_000_000 } else { 0 },
    };
    run_worker(&w);
    true
}

/// A worker's append-only log: one `write` per line, no buffering, so a kill -9 loses
/// at most the line being written.
struct Log(File);

impl Log {
    fn line(&mut self, s: std::fmt::Arguments<'_>) {
        let mut text = String::with_capacity(96);
        let _ = text.write_fmt(s);
        text.push('\n');
        self.0.write_all(text.as_bytes()).expect("writing the worker log");
    }
}

macro_rules! logln {
    ($log:expr, $($arg:tt)*) => { $log.line(format_args!($($arg)*)) };
}

fn holder_fields(h: &Option<shmlease::Holder>) -> (u32, u8) {
    match h {
        Some(h) => (h.pid, h.detached as u8),
        None => (0, 2),
    }
}

fn run_worker(w: &WorkerEnv) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != w.parent {
        return; // the controller is already gone
    }
    let pid = std::process::id();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(w.dir.join(format!("w{}.log", w.wid)))
        .expect("opening the worker log");
    let mut log = Log(file);
    let table = LeaseTable::open(Location::from(w.table.as_str())).expect("opening the table");
    let records = Records::open(&w.dir.join("records"), w.names).expect("mapping the records");
    let names: Vec<String> = (0..w.names).map(lease_name).collect();
    let mut rng = Rng::new(w.seed);
    logln!(log, "B {} {} {}", w.wid, pid, mono());
    while mono() < w.end {
        one_round(&table, &records, &names, &mut rng, &mut log, w, pid);
        if rng.pct(30) {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
    }
    logln!(log, "Z {}", mono());
}

/// Logs an observation of our record holding another writer's token. That is legitimate
/// only if our grant was over by then. It was certainly not over (a violation) if
/// `is_valid()`, called after the record was read, still says ours; or if our clock,
/// read after the record was, is still before a lower bound of our deadline (nobody
/// revokes in this harness, we did not release, and we are alive).
fn saw_other(
    log: &mut Log,
    name: &str,
    token: u64,
    seen: u64,
    writer: u64,
    lease: &shmlease::Lease<'_>,
    d_lo: u64,
) {
    let t_c = mono(); // read after the record was
    let valid = lease.is_valid();
    let early = t_c < d_lo;
    let v = (valid || early || seen < token) as u8;
    logln!(
        log,
        "C {name} {token} {seen} {writer} {t_c} {d_lo} {} {} {v}",
        valid as u8,
        early as u8
    );
}

fn one_round(
    table: &LeaseTable,
    records: &Records,
    names: &[String],
    rng: &mut Rng,
    log: &mut Log,
    w: &WorkerEnv,
    pid: u32,
) {
    let max_ttl_ms = w.max_ttl_ms;
    let ni = rng.below(names.len() as u64) as usize;
    let name = names[ni].as_str();
    let ttl_ns = rng.range(1_000, max_ttl_ms * 1_000) * 1_000;
    let ttl = Duration::from_nanos(ttl_ns);
    let mode = rng.below(100);
    let wait = Duration::from_millis(rng.below(101));
    let (mode_tag, waits) = match mode {
        0..=44 => ("try", false),
        45..=89 => ("wait", true),
        _ => ("label", true),
    };
    let rd0 = if waits { run_delay() } else { None };
    let t_a = mono();
    let result = match mode_tag {
        "try" => table.try_acquire(name, ttl),
        "wait" => table.acquire(name, ttl, Some(wait)),
        _ => AcquireOptions::new()
            .wait(Some(wait))
            .label(&format!("p{pid}"))
            .and_then(|o| table.acquire_with(name, ttl, &o)),
    };
    let lease = match result {
        Ok(l) => l,
        Err(e) => {
            let t_e = mono();
            match e {
                Error::Held { token, holder, .. } => {
                    let (hp, hd) = holder_fields(&holder);
                    logln!(log, "R {name} {token} {hp} {hd} held {t_a} {t_e}");
                }
                Error::TimedOut { token, holder, .. } => {
                    let (hp, hd) = holder_fields(&holder);
                    logln!(log, "R {name} {token} {hp} {hd} timeout {t_a} {t_e}");
                }
                other => {
                    let msg = other.to_string().replace('\n', " ");
                    logln!(log, "E {name} {t_a} {t_e} {msg}");
                }
            }
            return;
        }
    };
    let g = mono();
    let rem = lease.remaining().as_nanos() as u64;
    let rd = match (rd0, if waits { run_delay() } else { None }) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let token = lease.token();
    // Lower bound of the deadline: the grant's clock read came after t_a; and if the
    // lease still had time left when `remaining` read the clock (after g), it lasts at
    // least until g + rem. Upper bound: that clock read came before g.
    let mut d_lo = t_a + ttl_ns;
    if rem > 0 {
        d_lo = d_lo.max(g + rem);
    }
    d_lo += w.lie_ns;
    let d_hi = g + ttl_ns + w.lie_ns;
    logln!(log, "G {name} {token} {mode_tag} {ttl_ns} {t_a} {g} {d_lo} {d_hi} {rd}");

    let mut lease = lease;
    let keep_alive = rng.pct(10);
    if keep_alive {
        logln!(log, "K {name} {token} {ttl_ns} {}", mono());
        if let Err(e) = lease.keep_alive(ttl) {
            logln!(log, "E {name} {} {} keep_alive: {e}", mono(), mono());
        }
    }
    let mut lost = false;
    let saw = |seen: u64, writer: u64, lease: &shmlease::Lease<'_>, d_lo: u64, log: &mut Log| {
        saw_other(log, name, token, seen, writer, lease, d_lo)
    };
    match records.write(ni, token, pid) {
        Ok(()) => {}
        Err(seen) => {
            let (_, writer) = records.read(ni);
            saw(seen, writer, &lease, d_lo, log);
            lost = true;
        }
    }
    let chunks = rng.range(1, 3);
    for _ in 0..chunks {
        if lost {
            break;
        }
        let work = match rng.below(100) {
            0..=59 => rng.below(ttl_ns / 2 + 1),
            60..=84 => rng.range(ttl_ns / 2, ttl_ns),
            _ => rng.range(ttl_ns, ttl_ns * 2),
        };
        std::thread::sleep(Duration::from_nanos(work));
        let (seen, writer) = records.read(ni);
        if seen != token {
            saw(seen, writer, &lease, d_lo, log);
            lost = true;
            break;
        }
        if keep_alive {
            if let Some(why) = lease.lost() {
                logln!(log, "L {name} {token} {} {why:?}", mono());
                lost = true;
            }
        } else if rng.pct(30) {
            let ttl2_ns = rng.range(1_000, max_ttl_ms * 1_000) * 1_000;
            let t_i = mono();
            logln!(log, "N {name} {token} {ttl2_ns} {t_i}");
            match lease.renew(Duration::from_nanos(ttl2_ns)) {
                Ok(()) => {
                    let t_r = mono();
                    let rem = lease.remaining().as_nanos() as u64;
                    let mut lo = t_i + ttl2_ns;
                    if rem > 0 {
                        lo = lo.max(t_r + rem);
                    }
                    d_lo = lo + w.lie_ns;
                    logln!(log, "D {name} {token} ok {t_r} {d_lo} {}", t_r + ttl2_ns + w.lie_ns);
                }
                Err(e) => {
                    let t_r = mono();
                    let why = match e {
                        Error::Lost { reason, .. } => format!("{reason:?}"),
                        other => format!("error:{}", other.to_string().replace(' ', "_")),
                    };
                    logln!(log, "D {name} {token} lost {t_r} {why}");
                    lost = true;
                }
            }
        }
    }
    // Read back just before leaving.
    if !lost {
        let (seen, writer) = records.read(ni);
        if seen != token {
            saw(seen, writer, &lease, d_lo, log);
        }
    }
    let ending = match rng.below(100) {
        0..=44 => "release",
        45..=59 => "drop",
        60..=69 if !keep_alive => "forget",
        70..=79 => "detach",
        _ if keep_alive => "release",
        _ => "expire",
    };
    if ending == "expire" {
        while lease.is_valid() {
            std::thread::sleep(lease.remaining() + Duration::from_micros(100));
        }
    }
    logln!(log, "X {name} {token} {ending} {}", mono());
    let result = match ending {
        "release" => match lease.release() {
            Ok(()) => "ok".to_string(),
            Err(Error::Lost { reason, .. }) => format!("lost:{reason:?}"),
            Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
        },
        "detach" => match lease.detach() {
            Ok(_) => "ok".to_string(),
            Err(Error::Lost { reason, .. }) => format!("lost:{reason:?}"),
            Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
        },
        "forget" => {
            std::mem::forget(lease);
            "ok".to_string()
        }
        _ => {
            drop(lease);
            "ok".to_string()
        }
    };
    logln!(log, "Y {name} {token} {ending} {result} {}", mono());
}

// ------------------------------------------------------------------------------------
// Controller
// ------------------------------------------------------------------------------------

/// What the controller did to one worker process.
#[derive(Clone, Debug, Default)]
pub struct WorkerFate {
    /// Process id.
    pub pid: u32,
    /// When it was started.
    pub spawned: u64,
    /// (time read before SIGKILL was sent, time after it was reaped).
    pub killed: Option<(u64, u64)>,
    /// When it was reaped (any death).
    pub reaped: Option<u64>,
    /// Exit description when it was not killed by us.
    pub status: Option<String>,
    /// SIGSTOP periods: (before SIGSTOP, after SIGCONT).
    pub stops: Vec<(u64, u64)>,
    /// It did not finish in time after the run and was killed.
    pub hung: bool,
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Directory with the logs.
    pub dir: PathBuf,
    /// Wall time of the chaos phase.
    pub elapsed: Duration,
    /// Load average before and after.
    pub load: (String, String),
    /// Counts (grants, kills, ...), in a stable order.
    pub counts: BTreeMap<&'static str, u64>,
    /// Every violation found, one line each.
    pub violations: Vec<String>,
    /// Non-fatal remarks.
    pub notes: Vec<String>,
}

impl Report {
    /// The summary the example prints.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "chaos run: {:.1}s, logs in {}",
            self.elapsed.as_secs_f64(),
            self.dir.display()
        );
        let _ = writeln!(s, "load average before: {}  after: {}", self.load.0, self.load.1);
        for (k, v) in &self.counts {
            let _ = writeln!(s, "  {k:<34} {v}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            *kinds.entry(v.split(':').next().unwrap_or("")).or_default() += 1;
        }
        for (k, n) in kinds {
            let _ = writeln!(s, "  violations of kind {k:<21} {n}");
        }
        let shown = self.violations.len().min(50);
        for v in &self.violations[..shown] {
            let _ = writeln!(s, "VIOLATION: {v}");
        }
        if self.violations.len() > shown {
            let _ = writeln!(s, "... and {} more", self.violations.len() - shown);
        }
        let _ = writeln!(s, "violations: {}", self.violations.len());
        s
    }
}

struct Running {
    wid: u64,
    child: Child,
    stopped_at: Option<(u64, u64)>, // (stop time, continue at)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of our own child that we have not reaped yet (so the
    // pid cannot have been reused) and a valid signal number.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Runs the chaos with `cfg`, starting workers with `launcher`, then checks everything.
pub fn run(cfg: &Config, launcher: &Launcher) -> Report {
    let dir = match &cfg.dir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("shmlease-chaos-{}-{}", std::process::id(), mono()))
        }
    };
    std::fs::create_dir_all(&dir).expect("creating the run directory");
    let own_table = cfg.table.is_none();
    let table_loc = cfg.table.clone().unwrap_or_else(|| dir.join("table").display().to_string());
    let opts = TableOptions::new().capacity(cfg.capacity);
    let table = LeaseTable::open_or_create(Location::from(table_loc.as_str()), &opts)
        .expect("creating the table");
    Records::create(&dir.join("records"), cfg.names).expect("creating the record file");
    let mut report =
        Report { dir: dir.clone(), load: (loadavg(), String::new()), ..Report::default() };

    // Watchdog: if the run overstays, kill every worker and abort.
    let live: Arc<Mutex<Vec<u32>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let limit = cfg.duration + WIND_DOWN + Duration::from_secs(60);
    {
        let (live, done) = (Arc::clone(&live), Arc::clone(&done));
        std::thread::spawn(move || {
            let end = mono() + limit.as_nanos() as u64;
            while !done.load(Ordering::SeqCst) {
                if mono() > end {
                    for &p in live.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                        signal(p, libc::SIGKILL);
                    }
                    eprintln!("chaos: watchdog: run exceeded {limit:?}; aborting");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }

    let mut rng = Rng::new(cfg.seed);
    let start = mono();
    let end = start + cfg.duration.as_nanos() as u64;
    let mut fates: BTreeMap<u64, WorkerFate> = BTreeMap::new();
    let mut next_wid = 0u64;
    let spawn = |wid: u64, fates: &mut BTreeMap<u64, WorkerFate>, rng: &mut Rng| -> Running {
        let err = File::create(dir.join(format!("w{wid}.err"))).expect("worker stderr file");
        let child = Command::new(&launcher.exe)
            .args(&launcher.args)
            .env(WORKER_ENV, wid.to_string())
            .env("SHMLEASE_CHAOS_SEED", rng.next_u64().to_string())
            .env("SHMLEASE_CHAOS_DIR", &dir)
            .env("SHMLEASE_CHAOS_TABLE", &table_loc)
            .env("SHMLEASE_CHAOS_NAMES", cfg.names.to_string())
            .env("SHMLEASE_CHAOS_END", end.to_string())
            .env("SHMLEASE_CHAOS_PARENT", std::process::id().to_string())
            .env("SHMLEASE_CHAOS_MAX_TTL_MS", cfg.max_ttl_ms.to_string())
            .env("SHMLEASE_CHAOS_FAULT", &cfg.fault)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("starting a worker");
        let pid = child.id();
        live.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        fates.insert(wid, WorkerFate { pid, spawned: mono(), ..WorkerFate::default() });
        Running { wid, child, stopped_at: None }
    };
    let forget_pid =
        |pid: u32| live.lock().unwrap_or_else(|p| p.into_inner()).retain(|&p| p != pid);

    let mut running: Vec<Running> = Vec::new();
    for _ in 0..cfg.workers {
        running.push(spawn(next_wid, &mut fates, &mut rng));
        next_wid += 1;
    }
    let max_ttl_ns = cfg.max_ttl_ms * 1_000_000;
    let mut next_kill = start + rng.exp_ns(cfg.kill_rate);
    let mut next_stop = start + rng.exp_ns(cfg.stop_rate);
    let mut next_poll = start;
    let mut next_progress = start + cfg.progress.as_nanos() as u64;
    let (mut kills, mut stops, mut early_exits) = (0u64, 0u64, 0u64);
    loop {
        let now = mono();
        if now >= end {
            break;
        }
        // Continue workers whose stop is over.
        for r in running.iter_mut() {
            if let Some((t_stop, cont_at)) = r.stopped_at {
                if now >= cont_at {
                    signal(r.child.id(), libc::SIGCONT);
                    fates.get_mut(&r.wid).unwrap().stops.push((t_stop, mono()));
                    r.stopped_at = None;
                }
            }
        }
        // Workers that died on their own (panics, errors): record, replace.
        if now >= next_poll {
            next_poll = now + 10_000_000;
            let mut i = 0;
            while i < running.len() {
                if let Ok(Some(st)) = running[i].child.try_wait() {
                    let r = running.swap_remove(i);
                    let f = fates.get_mut(&r.wid).unwrap();
                    f.reaped = Some(mono());
                    f.status = Some(format!("{st}"));
                    if let Some((t_stop, _)) = r.stopped_at {
                        f.stops.push((t_stop, mono()));
                    }
                    forget_pid(r.child.id());
                    early_exits += 1;
                    running.push(spawn(next_wid, &mut fates, &mut rng));
                    next_wid += 1;
                } else {
                    i += 1;
                }
            }
        }
        if now >= next_kill && !running.is_empty() {
            next_kill = now + rng.exp_ns(cfg.kill_rate);
            let i = rng.below(running.len() as u64) as usize;
            let mut r = running.swap_remove(i);
            let pid = r.child.id();
            let t_sent = mono();
            signal(pid, libc::SIGKILL);
            let st = r.child.wait().expect("reaping a killed worker");
            let t_reaped = mono();
            forget_pid(pid);
            let f = fates.get_mut(&r.wid).unwrap();
            f.killed = Some((t_sent, t_reaped));
            f.reaped = Some(t_reaped);
            f.status = Some(format!("{st}"));
            if let Some((t_stop, _)) = r.stopped_at {
                f.stops.push((t_stop, t_reaped));
            }
            kills += 1;
            running.push(spawn(next_wid, &mut fates, &mut rng));
            next_wid += 1;
        }
        if now >= next_stop {
            next_stop = now + rng.exp_ns(cfg.stop_rate);
            let candidates: Vec<usize> =
                (0..running.len()).filter(|&i| running[i].stopped_at.is_none()).collect();
            if !candidates.is_empty() {
                let i = candidates[rng.below(candidates.len() as u64) as usize];
                let r = &mut running[i];
                let t = mono();
                signal(r.child.id(), libc::SIGSTOP);
                let pause = rng.range(max_ttl_ns + 5_000_000, 4 * max_ttl_ns + 5_000_000);
                r.stopped_at = Some((t, t + pause));
                stops += 1;
            }
        }
        if cfg.progress > Duration::ZERO && now >= next_progress {
            next_progress = now + cfg.progress.as_nanos() as u64;
            eprintln!(
                "chaos: {:>5.0}s/{:.0}s kills {kills} stops {stops} load {}",
                (now - start) as f64 / 1e9,
                cfg.duration.as_secs_f64(),
                loadavg()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Wind down: continue everyone, let them finish their round and exit.
    for r in running.iter_mut() {
        if let Some((t_stop, _)) = r.stopped_at.take() {
            signal(r.child.id(), libc::SIGCONT);
            fates.get_mut(&r.wid).unwrap().stops.push((t_stop, mono()));
        }
    }
    let give_up = mono() + WIND_DOWN.as_nanos() as u64;
    for mut r in running {
        let f = fates.get_mut(&r.wid).unwrap();
        loop {
            match r.child.try_wait() {
                Ok(Some(st)) => {
                    f.reaped = Some(mono());
                    f.status = Some(format!("{st}"));
                    break;
                }
                _ if mono() > give_up => {
                    signal(r.child.id(), libc::SIGKILL);
                    let st = r.child.wait().expect("reaping a hung worker");
                    f.reaped = Some(mono());
                    f.status = Some(format!("{st}"));
                    f.hung = true;
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        forget_pid(r.child.id());
    }
    let all_gone = mono();
    report.elapsed = Duration::from_nanos(all_gone - start);
    done.store(true, Ordering::SeqCst);

    report.counts.insert("workers started", fates.len() as u64);
    report.counts.insert("kills (SIGKILL)", kills);
    report.counts.insert("stops (SIGSTOP > max TTL)", stops);
    report.counts.insert("workers that exited early", early_exits);

    // Final state: once every worker is gone and the longest TTL has passed, no name
    // may still be held, and a fresh grant must carry a token above all seen before.
    std::thread::sleep(Duration::from_nanos(max_ttl_ns) + Duration::from_millis(20));
    let mut final_tokens = HashMap::new();
    for i in 0..cfg.names {
        let name = lease_name(i);
        match table.get(&name) {
            Ok(Some(info)) if info.state == LeaseState::Held => report.violations.push(format!(
                "final-state: {name} still held (token {}, holder {:?}, remaining {:?}) after every worker is gone and {} ms passed",
                info.token, info.holder, info.remaining, cfg.max_ttl_ms
            )),
            Ok(_) => {}
            Err(e) => report.violations.push(format!("final-state: get({name}) failed: {e}")),
        }
        match table.try_acquire(&name, Duration::from_millis(10)) {
            Ok(l) => {
                final_tokens.insert(name.clone(), l.token());
                let _ = l.release();
            }
            Err(e) => {
                report.violations.push(format!("final-state: try_acquire({name}) failed: {e}"))
            }
        }
    }
    let info = table.info();
    report.counts.insert("library: expired reclaims", info.counters.expired_reclaims);
    report.counts.insert("library: dead-holder reclaims", info.counters.dead_holder_reclaims);
    report.counts.insert("library: corrupt reclaims", info.counters.corrupt_reclaims);
    report.counts.insert("library: names bound", info.counters.binds);
    report.counts.insert("library: names unbound (slot reuse)", info.counters.unbinds);
    drop(table);

    let mut events = String::new();
    for (wid, f) in &fates {
        let _ = writeln!(
            events,
            "worker {wid} pid {} spawned {} killed {:?} reaped {:?} status {:?} hung {} stops {:?}",
            f.pid, f.spawned, f.killed, f.reaped, f.status, f.hung, f.stops
        );
    }
    let _ = std::fs::write(dir.join("controller.log"), events);
    check(cfg, &dir, &fates, &final_tokens, &mut report);
    let _ = std::fs::write(dir.join("summary.txt"), report.summary());
    report.load.1 = loadavg();
    if own_table {
        let _ = LeaseTable::remove(Location::from(table_loc.as_str()));
    }
    if report.violations.is_empty() && !cfg.keep && cfg.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report
}

// ------------------------------------------------------------------------------------
// Checker
// ------------------------------------------------------------------------------------

/// One grant, as reconstructed from its worker's log.
#[derive(Clone, Debug)]
struct Grant {
    wid: u64,
    name: String,
    token: u64,
    mode: String,
    ttl: u64,
    /// Attempt start, and return of the acquire.
    t_a: u64,
    g: u64,
    /// Lower bound of the current deadline (after renewals).
    d_lo: u64,
    /// A renewal was announced but its outcome never logged: (intent time, ttl).
    pending: Option<(u64, u64)>,
    /// Upper bound of every deadline this grant ever had (`u64::MAX`: unbounded yet).
    d_hi: u64,
    keep_alive: bool,
    /// Ending action and the time read before it.
    ending: Option<(String, u64)>,
    /// Time after the release / drop returned (the grant is over by then).
    freed_at: Option<u64>,
    released_ok: bool,
    run_delay: u64,
}

impl Grant {
    /// A lower bound of the time the grant stopped being valid.
    fn end_lo(&self, death_lo: Option<u64>) -> u64 {
        let mut e = self.d_lo;
        if let Some((t_i, ttl)) = self.pending {
            e = e.min(t_i + ttl);
        }
        if let Some((how, t)) = &self.ending {
            if how == "release" || how == "drop" || how == "expire" {
                e = e.min(*t);
            }
        }
        if let Some(d) = death_lo {
            e = e.min(d);
        }
        e
    }
}

struct Refusal {
    wid: u64,
    name: String,
    token: u64,
    holder_pid: u32,
    /// 0: live-process holder record, 1: detached, 2: no record.
    holder_kind: u8,
    kind: String,
    t_a: u64,
    t_e: u64,
}

fn num(f: Option<&&str>) -> Option<u64> {
    f.and_then(|s| s.parse().ok())
}

fn check(
    cfg: &Config,
    dir: &Path,
    fates: &BTreeMap<u64, WorkerFate>,
    final_tokens: &HashMap<String, u64>,
    report: &mut Report,
) {
    let max_ttl = cfg.max_ttl_ms * 1_000_000;
    let mut grants: Vec<Grant> = Vec::new();
    let mut refusals: Vec<Refusal> = Vec::new();
    let mut c: BTreeMap<&'static str, u64> = BTreeMap::new();
    let bump = |c: &mut BTreeMap<&'static str, u64>, k: &'static str| *c.entry(k).or_default() += 1;
    let mut v = Vec::new();
    let mut exited: HashMap<u64, u64> = HashMap::new();

    for (&wid, fate) in fates {
        // Exit status and stderr: nobody may panic or fail.
        let err = std::fs::read_to_string(dir.join(format!("w{wid}.err"))).unwrap_or_default();
        if !err.trim().is_empty() {
            v.push(format!(
                "worker-failed: worker {wid} (pid {}) wrote to stderr: {}",
                fate.pid,
                err.trim()
            ));
        }
        if fate.hung {
            v.push(format!(
                "worker-failed: worker {wid} (pid {}) did not finish within {WIND_DOWN:?} after the run",
                fate.pid
            ));
        } else if fate.killed.is_none() && fate.status.as_deref() != Some("exit status: 0") {
            v.push(format!(
                "worker-failed: worker {wid} (pid {}) ended with {:?}",
                fate.pid, fate.status
            ));
        }
        let text = std::fs::read_to_string(dir.join(format!("w{wid}.log"))).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        if complete.len() + 1 < text.len() {
            bump(&mut c, "torn log lines (killed mid-write)");
        }
        let mut open: HashMap<(String, u64), usize> = HashMap::new();
        let first = grants.len();
        for line in complete.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let key = || (f[1].to_string(), f[2].parse::<u64>().unwrap_or(0));
            match f[0] {
                "G" if f.len() >= 10 => {
                    let g = Grant {
                        wid,
                        name: f[1].into(),
                        token: num(f.get(2)).unwrap_or(0),
                        mode: f[3].into(),
                        ttl: num(f.get(4)).unwrap_or(0),
                        t_a: num(f.get(5)).unwrap_or(0),
                        g: num(f.get(6)).unwrap_or(0),
                        d_lo: num(f.get(7)).unwrap_or(0),
                        pending: None,
                        d_hi: num(f.get(8)).unwrap_or(u64::MAX),
                        keep_alive: false,
                        ending: None,
                        freed_at: None,
                        released_ok: false,
                        run_delay: num(f.get(9)).unwrap_or(0),
                    };
                    open.insert(key(), grants.len());
                    grants.push(g);
                    bump(&mut c, "grants");
                }
                "R" if f.len() >= 8 => {
                    refusals.push(Refusal {
                        wid,
                        name: f[1].into(),
                        token: num(f.get(2)).unwrap_or(0),
                        holder_pid: num(f.get(3)).unwrap_or(0) as u32,
                        holder_kind: num(f.get(4)).unwrap_or(2) as u8,
                        kind: f[5].into(),
                        t_a: num(f.get(6)).unwrap_or(0),
                        t_e: num(f.get(7)).unwrap_or(0),
                    });
                    bump(
                        &mut c,
                        if f[5] == "held" { "refusals: held" } else { "refusals: timed out" },
                    );
                }
                "E" => {
                    bump(&mut c, "unexpected errors");
                    let benign = line.contains("full") && cfg.capacity < cfg.names as u32;
                    if !benign {
                        v.push(format!("unexpected-error: worker {wid}: {line}"));
                    }
                }
                "K" => {
                    if let Some(&i) = open.get(&key()) {
                        grants[i].keep_alive = true;
                        grants[i].d_hi = u64::MAX;
                        bump(&mut c, "keep-alives");
                    }
                }
                "N" if f.len() >= 5 => {
                    if let Some(&i) = open.get(&key()) {
                        grants[i].pending =
                            Some((num(f.get(4)).unwrap_or(0), num(f.get(3)).unwrap_or(0)));
                    }
                }
                "D" if f.len() >= 5 => {
                    if let Some(&i) = open.get(&key()) {
                        let gr = &mut grants[i];
                        gr.pending = None;
                        if f[3] == "ok" && f.len() >= 7 {
                            gr.d_lo = num(f.get(5)).unwrap_or(0);
                            if gr.d_hi != u64::MAX {
                                gr.d_hi = gr.d_hi.max(num(f.get(6)).unwrap_or(u64::MAX));
                            }
                            bump(&mut c, "renewals");
                        } else {
                            bump(&mut c, "renewals refused (lost)");
                        }
                    }
                }
                "C" if f.len() >= 10 => {
                    if f[9] != "1" {
                        bump(&mut c, "record taken over after own expiry (legit)");
                    } else {
                        v.push(format!(
                            "in-lease-overwrite: worker {wid}: record of {} overwritten by token {} (pid {}) while token {} still held it (clock {} < deadline lower bound {}: {}, is_valid(): {})",
                            f[1], f[3], f[4], f[2], f[5], f[6], f[8] == "1", f[7] == "1"
                        ));
                    }
                }
                "L" => bump(&mut c, "keep-alive reported loss"),
                "X" if f.len() >= 5 => {
                    if let Some(&i) = open.get(&key()) {
                        grants[i].ending = Some((f[3].into(), num(f.get(4)).unwrap_or(0)));
                    }
                }
                "Y" if f.len() >= 6 => {
                    if let Some(i) = open.remove(&key()) {
                        let gr = &mut grants[i];
                        let t = num(f.get(5)).unwrap_or(0);
                        match f[3] {
                            "release" | "drop" | "expire" => gr.freed_at = Some(t),
                            _ => {}
                        }
                        gr.released_ok = f[3] == "release" && f[4] == "ok";
                        bump(
                            &mut c,
                            match (f[3], f[4]) {
                                ("release", "ok") => "endings: released",
                                ("release", _) => "endings: release found it lost",
                                ("drop", _) => "endings: dropped",
                                ("forget", _) => "endings: forgotten (mem::forget)",
                                ("detach", _) => "endings: detached",
                                _ => "endings: let expire, then dropped",
                            },
                        );
                    }
                }
                "Z" => {
                    exited.insert(wid, num(f.get(1)).unwrap_or(0));
                }
                "B" => {}
                _ => bump(&mut c, "unparsable log lines"),
            }
        }
        // Deadlines we could not follow (a keep-alive thread renewing in the background,
        // a renewal whose outcome was never logged because the worker was killed) are
        // bounded by the worker's death: nothing renews after it.
        let death_hi = fate.reaped.unwrap_or(u64::MAX);
        for gr in &mut grants[first..] {
            if gr.d_hi == u64::MAX || gr.pending.is_some() {
                let ttl = gr.pending.map_or(gr.ttl, |p| p.1).max(gr.ttl);
                let bound = death_hi.saturating_add(ttl);
                gr.d_hi = if gr.d_hi == u64::MAX { bound } else { gr.d_hi.max(bound) };
            }
        }
    }

    // A lower bound of each worker's death: before we sent SIGKILL, or its last words.
    let death_lo = |wid: u64| -> Option<u64> {
        let f = &fates[&wid];
        match f.killed {
            Some(k) => Some(k.0),
            None => Some(exited.get(&wid).copied().unwrap_or(f.spawned)),
        }
    };

    // 1. Exclusivity: validity intervals of one name never overlap.
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in grants.iter().enumerate() {
        by_name.entry(g.name.as_str()).or_default().push(i);
    }
    for (name, idx) in &by_name {
        let mut iv: Vec<(u64, u64, usize)> = idx
            .iter()
            .map(|&i| (grants[i].g, grants[i].end_lo(death_lo(grants[i].wid)), i))
            .filter(|(s, e, _)| s < e)
            .collect();
        iv.sort();
        let mut best: Option<(u64, usize)> = None;
        for &(s, e, i) in &iv {
            if let Some((pe, pi)) = best {
                if s < pe {
                    let (a, b) = (&grants[pi], &grants[i]);
                    v.push(format!(
                        "overlap: on {name}: token {} (worker {}, valid [{}, {}]) and token {} (worker {}, valid from {} to {}) overlap by {} ns",
                        a.token, a.wid, a.g, pe, b.token, b.wid, s, e, pe.min(e) - s
                    ));
                }
            }
            match best {
                Some((pe, _)) if pe >= e => {}
                _ => best = Some((e, i)),
            }
        }
    }

    // 2. Fencing: tokens strictly increase in grant order, never repeat, and the final
    //    grant is above all of them.
    for (name, idx) in &by_name {
        let mut sorted: Vec<usize> = idx.clone();
        sorted.sort_by_key(|&i| grants[i].token);
        for w in sorted.windows(2) {
            if grants[w[0]].token == grants[w[1]].token {
                v.push(format!(
                    "token-reuse: token {} of {name} handed out twice (workers {} and {})",
                    grants[w[0]].token, grants[w[0]].wid, grants[w[1]].wid
                ));
            }
        }
        // X returned before Y's attempt began, so X was granted first: token X < token Y.
        let mut suffix_min_g: Vec<(u64, usize)> = vec![(u64::MAX, usize::MAX); sorted.len() + 1];
        for k in (0..sorted.len()).rev() {
            let gi = sorted[k];
            suffix_min_g[k] = suffix_min_g[k + 1].min((grants[gi].g, gi));
        }
        for (k, &y) in sorted.iter().enumerate() {
            let (min_g, x) = suffix_min_g[k + 1];
            if min_g < grants[y].t_a && grants[x].token > grants[y].token {
                v.push(format!(
                    "token-order: on {name}: token {} (worker {}) was granted before token {} (worker {}) was even asked for",
                    grants[x].token, grants[x].wid, grants[y].token, grants[y].wid
                ));
            }
        }
        if let (Some(&last), Some(&fin)) = (sorted.last(), final_tokens.get(*name)) {
            if fin <= grants[last].token {
                v.push(format!(
                    "token-order: final grant of {name} has token {fin}, not above {}",
                    grants[last].token
                ));
            }
        }
    }

    // 3. Reclaim: a refusal may only name a grant that could still be live when the
    //    refusing attempt started: before its deadline's upper bound, before it was
    //    released, and (for a live-process holder record) before its process was reaped.
    let by_token: HashMap<(&str, u64), usize> =
        grants.iter().enumerate().map(|(i, g)| ((g.name.as_str(), g.token), i)).collect();
    let pid_worker = |pid: u32, at: u64| -> Option<u64> {
        fates.iter().filter(|(_, f)| f.pid == pid && f.spawned <= at).map(|(&w, _)| w).next_back()
    };
    for r in &refusals {
        let gi = by_token.get(&(r.name.as_str(), r.token)).copied();
        let holder_wid = match gi {
            Some(i) => Some(grants[i].wid),
            None if r.holder_pid != 0 => pid_worker(r.holder_pid, r.t_a),
            None => None,
        };
        let mut avail = u64::MAX;
        let mut why = String::new();
        if let Some(i) = gi {
            let g = &grants[i];
            if g.d_hi < avail {
                avail = g.d_hi;
                why = "its deadline had certainly passed".into();
            }
            if let Some(t) = g.freed_at {
                if t < avail {
                    avail = t;
                    why = "it had been released".into();
                }
            }
        } else if let Some(w) = holder_wid {
            // Grant not logged: its worker was killed right after acquiring.
            if let Some(t) = fates[&w].reaped {
                avail = t + max_ttl;
                why = "its unlogged holder was dead for longer than the largest TTL".into();
            }
        } else {
            bump(&mut c, "refusals naming an unlogged grant");
        }
        if r.holder_kind == 0 {
            if let Some(w) = holder_wid {
                if let Some(t) = fates[&w].reaped {
                    if t < avail {
                        avail = t;
                        why = format!(
                            "its holder (pid {}, worker {w}) had been reaped",
                            r.holder_pid
                        );
                    }
                }
            }
        }
        if r.t_a > avail {
            v.push(format!(
                "stale-refusal: worker {} was refused {} ({}) at {} by token {}, but {why} at {avail} ({} us earlier)",
                r.wid, r.name, r.kind, r.t_a, r.token, (r.t_a - avail) / 1000
            ));
        }
    }

    // 4. Reclaims: a grant taken over without having been released. When the holder was
    //    killed, measure how long its lease lay unused after it became available (the
    //    holder reaped, or its deadline's upper bound). A waiter blocked since before
    //    that must get it within the 50 ms liveness re-check (which also covers a
    //    deadline shortened by a renewal while it slept) plus slack, minus the time it
    //    spent waiting for a CPU; a waiter that was itself stopped is excused.
    let (mut lat_max, mut lat_sum, mut lat_n) = (0i64, 0i64, 0u64);
    let (mut wlat_max, mut wlat_n) = (0i64, 0u64);
    for (name, idx) in &by_name {
        let mut sorted: Vec<usize> = idx.clone();
        sorted.sort_by_key(|&i| grants[i].token);
        for w in sorted.windows(2) {
            let (p, q) = (&grants[w[0]], &grants[w[1]]);
            let dropped = p.ending.as_ref().is_some_and(|e| e.0 == "drop" || e.0 == "expire");
            if p.released_ok || (dropped && p.freed_at.is_some_and(|t| t <= q.g)) {
                continue;
            }
            bump(&mut c, "reclaims (taken without a release)");
            let fate = &fates[&p.wid];
            let detached = p.ending.as_ref().is_some_and(|e| e.0 == "detach");
            let mut avail = p.d_hi;
            if let Some((t_kill, t_reaped)) = fate.killed {
                if !p.freed_at.is_some_and(|t| t <= t_kill) && p.d_hi > t_kill {
                    bump(&mut c, "reclaims of a lease live at its holder's kill");
                    if !detached {
                        avail = avail.min(t_reaped);
                    }
                    // From the SIGKILL to the next grant of the name.
                    let lat = q.g.saturating_sub(t_kill) as i64;
                    lat_max = lat_max.max(lat);
                    lat_sum += lat;
                    lat_n += 1;
                    if q.g < p.d_lo {
                        bump(&mut c, "...of which before its deadline (dead)");
                    }
                }
            }
            if q.mode != "try" && q.t_a <= avail {
                let stopped = fates[&q.wid].stops.iter().any(|&(a, b)| a < q.g && b > q.t_a);
                if !stopped {
                    let lat = q.g as i64 - avail as i64 - q.run_delay as i64;
                    wlat_max = wlat_max.max(lat);
                    wlat_n += 1;
                    let bound = LIVENESS_RECHECK_NS + cfg.reclaim_slack.as_nanos() as u64;
                    if lat > bound as i64 {
                        v.push(format!(
                            "slow-reclaim: of {name}: token {} (worker {}) was available by {avail}; waiter worker {} (waiting since {}) got it only {} ms later (bound {} ms, run-queue time {} ms already deducted)",
                            p.token, p.wid, q.wid, q.t_a, lat / 1_000_000, bound / 1_000_000, q.run_delay / 1_000_000
                        ));
                    }
                }
            }
        }
    }
    c.insert("kill-to-reclaim time: max (ms)", (lat_max.max(0) / 1_000_000) as u64);
    c.insert(
        "kill-to-reclaim time: mean (us)",
        if lat_n > 0 { (lat_sum / lat_n as i64).max(0) as u64 / 1000 } else { 0 },
    );
    c.insert("reclaims by an already-blocked waiter", wlat_n);
    c.insert(
        "blocked-waiter latency past availability: max (ms)",
        (wlat_max.max(0) / 1_000_000) as u64,
    );

    for (k, n) in c {
        report.counts.insert(k, n);
    }
    report.violations.extend(v);
}
