//! The chaos harness shared by `examples/chaos.rs` and `tests/chaos.rs`: a controller
//! that runs worker processes in one of several modes (patterns of use: one process per
//! worker, fork trees on an inherited table, threads, a herd on one name, a full table,
//! the fallback identity with exited main threads, or all at once) and kill -9s,
//! SIGSTOPs and SIGCONTs them at random; the workers; and the checker that reads every
//! worker's log afterwards and verifies the invariants of `DESIGN.md`.
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
mod modes;
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

/// State letter and start time (clock ticks after boot) of process `pid`, from
/// `/proc/PID/stat`.
pub(crate) fn proc_stat(pid: u32) -> Option<(u8, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let mut fields = s.rsplit_once(')')?.1.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // Field 22 overall is the 20th after the command name (state is the 1st).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
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

/// The shared record file: per name, the largest token written so far, whether a
/// shared holder wrote it, and its writer. Writes are fenced the way a real resource
/// would fence them: a write with a token smaller than the stored one is rejected.
/// The token and the shared bit are one word (`token << 1 | shared`), so that a reader
/// never pairs a token with another write's kind.
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

    /// Stores `token` (and `pid`; `shared`: written by a shared holder) unless a larger
    /// token is there: `Ok` or the larger token found, and whether a shared holder
    /// wrote it.
    pub(crate) fn write(
        &self,
        i: usize,
        token: u64,
        pid: u32,
        shared: bool,
    ) -> Result<(), (u64, bool)> {
        let (tok, who) = self.words(i);
        let mut cur = tok.load(Ordering::SeqCst);
        loop {
            if cur >> 1 > token {
                return Err((cur >> 1, cur & 1 == 1));
            }
            let new = token << 1 | shared as u64;
            match tok.compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    who.store(pid as u64, Ordering::SeqCst);
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// The token and the writer (pid) of record `i`.
    pub(crate) fn read(&self, i: usize) -> (u64, u64) {
        let (t, _, who) = self.read_kind(i);
        (t, who)
    }

    /// The token of record `i`, whether a shared holder wrote it, and the writer.
    pub(crate) fn read_kind(&self, i: usize) -> (u64, bool, u64) {
        let (tok, who) = self.words(i);
        let t = tok.load(Ordering::SeqCst);
        (t >> 1, t & 1 == 1, who.load(Ordering::SeqCst))
    }
}

// ------------------------------------------------------------------------------------
// Modes and names
// ------------------------------------------------------------------------------------

/// What a worker process does with the table: one pattern of use each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// One process, one table handle, the original loop.
    #[default]
    Classic,
    /// An opener process opens the table once and forks children (some of which fork
    /// grandchildren) that run the loop on the inherited `LeaseTable`.
    Fork,
    /// One process, several threads, each an independent worker on a clone of one
    /// `LeaseTable`.
    Threads,
    /// Every worker on one name in a blocking `acquire`; after each grant it checks that
    /// the table's holder record is its own.
    Herd,
    /// Workers bind and unbind names in a table that a filler keeps almost full.
    Full,
    /// Holder identity forced to the start-time fallback (`SHMLEASE_IDENTITY`); some
    /// workers end their main thread and go on working on a helper thread.
    Fallback,
    /// Names with `permits = N` (2 and 3, alternately): up to N holders at once, each
    /// with its own grant; blocking and non-blocking acquisition, keep-alives, and
    /// detached permits renewed and released by token.
    Permits,
    /// Shared names: each acquisition shared (most) or exclusive, by every means a
    /// permit is taken (try, wait, label, keep-alive, detached and renewed / released by
    /// token): up to 64 shared holders at once, or one exclusive holder, never both.
    Shared,
    /// Fair acquisition (`AcquireOptions::fair`) of an exclusive name and of a name with
    /// 2 permits: each waiter's place in the queue is watched from a helper thread, and
    /// the checker verifies that nobody passes a place that was live before it asked.
    Fair,
    /// Not selectable: the process that keeps a `full` table full.
    Filler,
}

impl Mode {
    /// The modes `--mode` accepts (and `mix` runs together).
    pub const SELECTABLE: [Mode; 9] = [
        Mode::Classic,
        Mode::Fork,
        Mode::Threads,
        Mode::Herd,
        Mode::Full,
        Mode::Fallback,
        Mode::Permits,
        Mode::Shared,
        Mode::Fair,
    ];
    /// Every role, in the order of the name layout.
    pub const ALL: [Mode; 10] = [
        Mode::Classic,
        Mode::Fork,
        Mode::Threads,
        Mode::Herd,
        Mode::Full,
        Mode::Filler,
        Mode::Fallback,
        Mode::Permits,
        Mode::Shared,
        Mode::Fair,
    ];

    /// Its name on the command line and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Classic => "classic",
            Mode::Fork => "fork",
            Mode::Threads => "threads",
            Mode::Herd => "herd",
            Mode::Full => "full",
            Mode::Fallback => "fallback",
            Mode::Permits => "permits",
            Mode::Shared => "shared",
            Mode::Fair => "fair",
            Mode::Filler => "filler",
        }
    }

    /// The mode called `s` (`filler` included).
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Prefix of its lease names.
    fn prefix(self) -> &'static str {
        match self {
            Mode::Classic => "chaos",
            Mode::Fork => "fork",
            Mode::Threads => "thr",
            Mode::Herd => "herd",
            Mode::Full => "full",
            Mode::Fallback => "fb",
            Mode::Permits => "perm",
            Mode::Shared => "shr",
            Mode::Fair => "fair",
            Mode::Filler => "fill",
        }
    }

    /// Lease names of the mode unless `--names` says otherwise (single-mode runs).
    fn default_names(self) -> usize {
        match self {
            Mode::Classic | Mode::Threads | Mode::Fallback => 4,
            // More names than the 8 slots of a fork run's table: binding and unbinding
            // all the time, which is where forked binders trample each other.
            Mode::Fork => 24,
            Mode::Herd => 1,
            // Rotating over more names than the free slots next to the filler's.
            Mode::Full => 12,
            // One name with 2 permits, one with 3.
            Mode::Permits => 2,
            // A couple of names: each often shared by several at once.
            Mode::Shared => 2,
            // One exclusive name, one with 2 permits.
            Mode::Fair => 2,
            Mode::Filler => 0,
        }
    }

    /// Worker units (processes the controller starts; a fork unit is a whole tree)
    /// unless `--workers` says otherwise.
    fn default_workers(self) -> usize {
        match self {
            Mode::Classic => 8,
            Mode::Fork => 2,
            Mode::Threads => 3,
            Mode::Herd | Mode::Fallback => 6,
            Mode::Full => 5,
            // More holders than the permits of both names together: every name is
            // often full, so that waiting, refusals and hand-overs happen.
            Mode::Permits => 7,
            // Enough readers that shared grants overlap on both names.
            Mode::Shared => 8,
            // Enough waiters that queues of several form behind each name.
            Mode::Fair => 7,
            Mode::Filler => 1,
        }
    }
}

/// Which modes a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Every worker in this mode.
    One(Mode),
    /// Every mode at once on one table: each worker unit in a mode drawn at random
    /// (every mode at least once, and a herd of several, when there are enough units).
    Mix,
}

impl RunMode {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::One(m) => m.as_str(),
            RunMode::Mix => "mix",
        }
    }
}

/// The lease names of a run: per role, a count; all roles' names in one list, in
/// `Mode::ALL` order, which indexes the record file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    counts: Vec<(Mode, usize)>,
}

impl Layout {
    /// As passed to workers: `classic:4,fork:24,...`.
    pub(crate) fn encode(&self) -> String {
        let parts: Vec<String> =
            self.counts.iter().map(|(m, n)| format!("{}:{n}", m.as_str())).collect();
        parts.join(",")
    }

    pub(crate) fn decode(s: &str) -> Option<Layout> {
        let mut counts = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (m, n) = part.split_once(':')?;
            counts.push((Mode::parse(m)?, n.parse().ok()?));
        }
        Some(Layout { counts })
    }

    /// Every name of the run, in record order.
    pub(crate) fn all(&self) -> Vec<String> {
        let mut out = Vec::new();
        for &(m, n) in &self.counts {
            out.extend((0..n).map(|i| name_of(m, i, n)));
        }
        out
    }

    /// Names of `mode`, each with its record index.
    pub(crate) fn of(&self, mode: Mode) -> Vec<(usize, String)> {
        let mut base = 0;
        for &(m, n) in &self.counts {
            if m == mode {
                return (0..n).map(|i| (base + i, name_of(m, i, n))).collect();
            }
            base += n;
        }
        Vec::new()
    }

    /// The role whose name `name` is.
    pub(crate) fn mode_of(&self, name: &str) -> Option<Mode> {
        self.counts.iter().map(|c| c.0).find(|&m| self.of(m).iter().any(|(_, n)| n == name))
    }

    /// How many names in all.
    pub fn total(&self) -> usize {
        self.counts.iter().map(|c| c.1).sum()
    }

    /// The kind the run uses `name` as (names of no role, like `full`'s fresh names,
    /// are exclusive).
    pub(crate) fn kind(&self, name: &str) -> Kind {
        let Some(mode) = self.mode_of(name) else { return Kind::Exclusive };
        let index = name
            .strip_prefix(mode.prefix())
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.parse::<usize>().ok());
        match (mode, index) {
            (Mode::Permits, Some(i)) => Kind::Permits(permits_of(i)),
            (Mode::Fair, Some(i)) if fair_permits_of(i) > 1 => Kind::Permits(fair_permits_of(i)),
            (Mode::Shared, _) => Kind::Shared,
            _ => Kind::Exclusive,
        }
    }

    /// The number of permits the run uses `name` with (1: exclusive or shared).
    pub(crate) fn permits(&self, name: &str) -> u32 {
        match self.kind(name) {
            Kind::Permits(n) => n,
            _ => 1,
        }
    }

    /// Whether `name` is acquired fairly (a `fair` mode name).
    pub(crate) fn is_fair(&self, name: &str) -> bool {
        self.mode_of(name) == Some(Mode::Fair)
    }
}

/// How the run uses a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One holder at a time.
    Exclusive,
    /// Up to N holders at once.
    Permits(u32),
    /// Up to 64 shared holders at once, or one exclusive holder.
    Shared,
}

/// Permits of the `i`-th name of `permits` mode: 2, 3, 2, 3, ...
pub(crate) fn permits_of(i: usize) -> u32 {
    2 + (i % 2) as u32
}

/// Permits of the `i`-th name of `fair` mode: 1 (exclusive), 2, 1, 2, ...
pub(crate) fn fair_permits_of(i: usize) -> u32 {
    1 + (i % 2) as u32
}

/// Most shared holders of a name at once (`shmlease::layout::MAX_SHARED`).
pub const MAX_SHARED: usize = 64;

fn name_of(m: Mode, i: usize, n: usize) -> String {
    if n == 1 && m == Mode::Herd {
        m.prefix().to_string()
    } else {
        format!("{}-{i}", m.prefix())
    }
}

// ------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------

/// The harness's knobs. `None` means "the mode's default" (see `docs/chaos.md`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Which pattern(s) the workers follow.
    pub mode: RunMode,
    /// Worker units alive at any time (a fork unit is a tree of processes).
    pub workers: Option<usize>,
    /// Lease names of the mode (single-mode runs; `mix` uses every mode's default).
    pub names: Option<usize>,
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
    pub capacity: Option<u32>,
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
    /// log deadlines 20 ms later than the library granted; `extra-permit` makes
    /// `permits` workers ask the library for one permit more than the checker allows
    /// (a library that admits one holder too many); `shared-as-exclusive` makes `shared`
    /// workers that mean to take an exclusive grant take a shared one (and log it as
    /// exclusive: a library that lets an exclusive holder in beside shared ones);
    /// `barge` makes `fair` workers acquire unfairly half of the time while logging a
    /// fair acquisition (a library whose fair waiters can be passed). Empty: none.
    pub fault: String,
    /// Threads per process in `threads` mode.
    pub threads: usize,
    /// Children an opener keeps forked in `fork` mode (each forks a grandchild half the
    /// time).
    pub fork_children: usize,
    /// Names the filler holds (`full`: capacity - 4; `mix`: 3/4 of the capacity).
    pub fill: Option<usize>,
    /// Percentage of `fallback` workers whose main thread exits.
    pub zombie_pct: u64,
    /// `fallback`: also emulate a kernel without `pidfd_open` in the fallback workers
    /// (a seccomp filter makes it fail), so that the start-time identity is the only
    /// one, even in a library that does not know `SHMLEASE_IDENTITY`.
    pub no_pidfd: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: RunMode::One(Mode::Classic),
            workers: None,
            names: None,
            duration: Duration::from_secs(60),
            seed: 0,
            kill_rate: 2.0,
            stop_rate: 2.0,
            table: None,
            dir: None,
            capacity: None,
            max_ttl_ms: 50,
            reclaim_slack: Duration::from_millis(200),
            keep: false,
            progress: Duration::ZERO,
            fault: String::new(),
            threads: 4,
            fork_children: 4,
            fill: None,
            zombie_pct: 50,
            no_pidfd: false,
        }
    }
}

/// The values of `--fault` (the empty string: none).
pub const FAULTS: [&str; 5] = ["", "lie", "extra-permit", "shared-as-exclusive", "barge"];

/// Lease TTL of the filler (renewed by a keep-alive every third of it).
pub const FILLER_TTL_MS: u64 = 1_000;

impl Config {
    /// Worker units.
    pub fn units(&self) -> usize {
        self.workers.unwrap_or(match self.mode {
            RunMode::One(m) => m.default_workers(),
            RunMode::Mix => 20,
        })
    }

    /// Table capacity.
    pub fn capacity(&self) -> u32 {
        self.capacity.unwrap_or(match self.mode {
            RunMode::One(Mode::Fork) => 8,
            RunMode::Mix => 64,
            _ => 64,
        })
    }

    /// The modes the run's units can have.
    pub fn modes(&self) -> Vec<Mode> {
        match self.mode {
            RunMode::One(m) => vec![m],
            RunMode::Mix => Mode::SELECTABLE.to_vec(),
        }
    }

    /// Whether a filler keeps the table nearly full.
    pub fn has_filler(&self) -> bool {
        self.modes().contains(&Mode::Full)
    }

    /// Names the filler holds.
    pub fn fill(&self) -> usize {
        if !self.has_filler() {
            return 0;
        }
        let c = self.capacity() as usize;
        self.fill.unwrap_or(match self.mode {
            RunMode::Mix => c * 3 / 4,
            _ => c.saturating_sub(4),
        })
    }

    /// The names of the run.
    pub fn layout(&self) -> Layout {
        let mut counts = Vec::new();
        for m in Mode::ALL {
            let n = match (self.mode, m) {
                (_, Mode::Filler) => self.fill(),
                (_, Mode::Herd) if self.modes().contains(&m) => 1,
                (RunMode::One(one), _) if one == m => self.names.unwrap_or(m.default_names()),
                (RunMode::Mix, _) => m.default_names(),
                _ => 0,
            };
            if n > 0 {
                counts.push((m, n));
            }
        }
        Layout { counts }
    }

    /// Largest TTL any worker asks for (ns).
    pub fn longest_ttl_ns(&self) -> u64 {
        let filler = if self.has_filler() { FILLER_TTL_MS } else { 0 };
        self.max_ttl_ms.max(filler) * 1_000_000
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
usage: chaos [--mode classic|fork|threads|herd|full|fallback|permits|shared|fair|mix]
             [--workers P] [--names N] [--duration DUR] [--seed S]
             [--kill-rate PER_SEC] [--stop-rate PER_SEC] [--table LOCATION]
             [--dir DIR] [--capacity C] [--max-ttl-ms MS] [--reclaim-slack DUR]
             [--threads T] [--fork-children K] [--fill F] [--zombie-pct PCT]
             [--no-pidfd] [--keep] [--progress DUR]
             [--fault lie|extra-permit|shared-as-exclusive|barge]
defaults: mode classic, 60s, seed from the clock, 2 kills/s, 2 stops/s, a table file
          in DIR, TTLs 1..=50 ms, slack 200ms; per mode (see docs/chaos.md):
          workers/names/capacity classic 8/4/64, fork 2/24/8, threads 3/4/64 with 4
          threads, herd 6/1/64, full 5/12/64 plus a filler holding capacity-4 names,
          fallback 6/4/64 (50% end their main thread), permits 7/2/64 (names with
          2 and 3 permits), shared 8/2/64 (shared and exclusive grants), fair 7/2/64
          (an exclusive name and one with 2 permits, acquired fairly); mix: 20 units
          (each mode once, 1 more fork, 3 more herd, 3 more permits, 2 more shared,
          2 more fair, the rest random but fork), every mode's names in one table of
          64 with a filler holding 3/4 of it";

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
            if flag == "--no-pidfd" {
                c.no_pidfd = true;
                continue;
            }
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.into());
            }
            let v = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = |e: String| format!("bad value {v:?} for {flag}: {e}");
            let dur = |v: &str| parse_duration(v).ok_or_else(|| format!("bad duration {v:?}"));
            match flag.as_str() {
                "--mode" => {
                    c.mode = match v.as_str() {
                        "mix" => RunMode::Mix,
                        m => match Mode::parse(m) {
                            Some(m) if m != Mode::Filler => RunMode::One(m),
                            _ => return Err(bad("no such mode".into())),
                        },
                    }
                }
                "--workers" => c.workers = Some(v.parse().map_err(|e| bad(format!("{e}")))?),
                "--names" => c.names = Some(v.parse().map_err(|e| bad(format!("{e}")))?),
                "--duration" => c.duration = dur(v)?,
                "--seed" => c.seed = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--kill-rate" => c.kill_rate = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--stop-rate" => c.stop_rate = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--table" => c.table = Some(v.clone()),
                "--dir" => c.dir = Some(PathBuf::from(v)),
                "--capacity" => c.capacity = Some(v.parse().map_err(|e| bad(format!("{e}")))?),
                "--max-ttl-ms" => c.max_ttl_ms = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--reclaim-slack" => c.reclaim_slack = dur(v)?,
                "--progress" => c.progress = dur(v)?,
                "--fault" => c.fault = v.clone(),
                "--threads" => c.threads = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--fork-children" => {
                    c.fork_children = v.parse().map_err(|e| bad(format!("{e}")))?
                }
                "--fill" => c.fill = Some(v.parse().map_err(|e| bad(format!("{e}")))?),
                "--zombie-pct" => c.zombie_pct = v.parse().map_err(|e| bad(format!("{e}")))?,
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Rejects knob values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.units() == 0 || self.max_ttl_ms == 0 || self.names == Some(0) {
            return Err("--workers, --names and --max-ttl-ms must be positive".into());
        }
        if self.threads == 0 || self.fork_children == 0 {
            return Err("--threads and --fork-children must be positive".into());
        }
        if self.has_filler() && self.fill() >= self.capacity() as usize {
            return Err(format!(
                "--fill {} leaves no free slot in a table of {}",
                self.fill(),
                self.capacity()
            ));
        }
        if !FAULTS.contains(&self.fault.as_str()) {
            return Err(format!("unknown fault {:?} (one of {:?})", self.fault, &FAULTS[1..]));
        }
        Ok(())
    }
}
