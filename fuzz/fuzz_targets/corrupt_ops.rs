//! Fuzz target `corrupt_ops`: a hostile neighbour scribbles on a live table while this
//! process uses it.
//!
//! Each iteration starts from a freshly created, valid table (capacity 1, 4 or 16,
//! chosen by the input) and runs the input's steps in order. A step either corrupts the
//! table through a second, independent mapping of the same file — bytes at any offset,
//! a 64-bit value (zero, all ones, a small state value, a deadline near the current
//! table time, a held lease's token, anything) into any aligned word of the header or
//! the slots, or the pristine header put back — or performs one operation on one of
//! the open tables: `try_acquire`, `acquire_with` (waiting at most 3 ms, with a label),
//! `Lease::renew`, `Lease::release`, `Lease::detach`, dropping a lease, inspecting a
//! lease (`token`, `remaining`, `is_valid`, `deadline`), `renew`, `release`,
//! `revoke`, `revoke_token` by name and token, `get`, `list`, `info`, or opening the
//! file again (up to four tables at once, over the same file). Corruption can thus
//! land between any two operations, while leases are held.
//!
//! Every call must return `Ok` or `Err` — never panic, hang, or trip the sanitizer —
//! and none may take longer than [`SLOW`] (the target panics if one does: nothing here
//! waits longer than a few milliseconds, so a slow call is a bug — once the time the
//! machine kept the thread from running is taken off, see [`stalled_ns`]). README
//! invariant 5.
//!
//! The table files and their mappings are created once per process and reset to the
//! pristine bytes at the start of each iteration.

#![no_main]

mod common;

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use common::{check, show};
use libfuzzer_sys::fuzz_target;
use shmlease::{AcquireOptions, Lease, LeaseTable, Result, TableOptions};

/// Capacities a table is created with (capacity 1 is always full after one name).
const CAPACITIES: [u32; 3] = [1, 4, 16];
/// The names operations use; few, so that they collide in a small table.
const NAMES: [&str; 5] = [
    "a",
    "b",
    "gpu0",
    "leader",
    "a-name-that-is-sixty-four-bytes-long-xxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
/// Labels for `acquire_with`; the last one is too long and must be refused.
const LABELS: [&str; 3] = ["", "fuzz", "123456789"];
/// Steps after this many are ignored, to keep an iteration short.
const MAX_STEPS: usize = 128;
/// Leases held at once; a lease granted beyond this is dropped (released) at once.
const MAX_HELD: usize = 8;
/// Detached leases remembered (by name and token) for later renew/release/revoke.
const MAX_DETACHED: usize = 8;
/// Tables open at once over the same file (the first plus three re-opens).
const MAX_TABLES: usize = 4;
/// Longest wait of one `acquire_with`.
const MAX_WAIT: Duration = Duration::from_millis(3);
/// Total waiting allowed in one iteration; `acquire_with` waits zero once it is spent.
const WAIT_BUDGET: Duration = Duration::from_millis(10);
/// Longest a bytes-write step writes.
const MAX_WRITE: usize = 32;
/// No call may take this long: the longest wait asked for is `MAX_WAIT`. The environment
/// variable `SHMLEASE_FUZZ_SLOW_MS` sets another bound (a lower one finds the calls that
/// come closest).
const SLOW: Duration = Duration::from_secs(1);

/// Time this thread was kept from running, as far as Linux tells: its wait on the run
/// queue (`/proc/thread-self/schedstat`, second field) plus the whole machine's steal time
/// (`/proc/stat`: a hypervisor running someone else on our CPUs), in nanoseconds; 0 when
/// neither can be read. A call that took longer than [`slow`] is a bug only if it still
/// did once this is taken off: a machine that stalls for a second (a busy host, a noisy
/// neighbour) is not the library waiting longer than asked, and must not fail the run.
fn stalled_ns() -> u64 {
    let queued = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // "cpu  user nice system idle iowait irq softirq steal ...", in clock ticks.
    let stolen_ticks = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(8)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf takes a plain constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    queued.saturating_add(stolen_ticks.saturating_mul(1_000_000_000 / hz))
}

fn slow() -> Duration {
    static BOUND: OnceLock<Duration> = OnceLock::new();
    *BOUND.get_or_init(|| {
        std::env::var("SHMLEASE_FUZZ_SLOW_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(SLOW, Duration::from_millis)
    })
}

/// One iteration's input.
#[derive(Arbitrary, Debug)]
struct Input {
    /// Index into [`CAPACITIES`] (modulo its length).
    capacity: u8,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Writes `bytes` (at most [`MAX_WRITE`]) at `offset` modulo the table's size,
    /// stopping at its end; a byte at a time, so unaligned and torn values too.
    Bytes { offset: u16, bytes: Vec<u8> },
    /// Stores `value` into the 64-bit word `index` (modulo the number of words): words
    /// 0..32 are the header, then 16 words per slot.
    Word { index: u16, value: Value },
    /// Puts the pristine header back; the slots stay as they are.
    RestoreHeader,
    /// An operation on open table `table` (modulo the number open).
    Op { table: u8, op: Op },
}

/// A 64-bit value to scribble.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Zero,
    Ones,
    /// 0..=255: the grant word's FREE, REVOKED and UNBOUND, the binding states, name
    /// lengths.
    Small(u8),
    /// Table time now plus this many microseconds (negative: in the past).
    NearNow(i32),
    /// The `WAITERS` bit with a deadline.
    Waiters(u32),
    /// The token of held lease `n` (modulo the number held; 0 if none).
    Token(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ttl {
    /// 1 µs, the shortest valid TTL: expired by the next step.
    Micro,
    /// 1..=256 ms.
    Millis(u8),
    /// 30 s.
    Long,
    /// 365 days, the longest valid TTL.
    Year,
    /// Any number of nanoseconds, mostly invalid (under 1 µs or over a year).
    Nanos(u64),
}

/// A fencing token to pass to the by-name operations.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Token {
    /// Held lease `n`'s token (modulo the number held; 0 if none).
    Held(u8),
    /// Detached lease `n`'s token (likewise).
    Detached(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    TryAcquire {
        name: u8,
        ttl: Ttl,
    },
    AcquireWith {
        name: u8,
        ttl: Ttl,
        wait_us: u16,
        label: u8,
    },
    /// `Lease::renew` of held lease `lease`.
    Renew {
        lease: u8,
        ttl: Ttl,
    },
    /// `Lease::release` of held lease `lease`.
    Release {
        lease: u8,
    },
    /// `Lease::detach` of held lease `lease`; its token is remembered.
    Detach {
        lease: u8,
    },
    /// Drops held lease `lease` (which releases it).
    Drop {
        lease: u8,
    },
    /// `token`, `remaining`, `is_valid` and `deadline` of held lease `lease`.
    Inspect {
        lease: u8,
    },
    TableRenew {
        name: u8,
        token: Token,
        ttl: Ttl,
    },
    TableRelease {
        name: u8,
        token: Token,
    },
    /// `renew` of detached lease `lease` by its own name and token.
    DetachedRenew {
        lease: u8,
        ttl: Ttl,
    },
    /// `release` of detached lease `lease` by its own name and token.
    DetachedRelease {
        lease: u8,
    },
    Revoke {
        name: u8,
    },
    RevokeToken {
        name: u8,
        token: Token,
    },
    Get {
        name: u8,
    },
    List,
    Info,
    /// Opens the file again as another table (while the others stay open).
    Reopen,
}

/// A table file of one capacity, with this process's own mapping of it.
struct Scratch {
    path: PathBuf,
    map: memmap2::MmapRaw,
    /// The file's words as created.
    pristine: Vec<u64>,
}

impl Scratch {
    fn new(capacity: u32) -> Scratch {
        let path = common::private_dir().join(format!("table-{capacity}"));
        let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
            panic!("fuzz harness: {what} {}: {e}", path.display())
        };
        let table = LeaseTable::create(&path, &TableOptions::new().capacity(capacity))
            .unwrap_or_else(|e| fail("creating", &e));
        drop(table);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| fail("opening", &e));
        let map =
            memmap2::MmapOptions::new().map_raw(&file).unwrap_or_else(|e| fail("mapping", &e));
        let mut scratch = Scratch { path, map, pristine: Vec::new() };
        scratch.pristine =
            (0..scratch.words()).map(|i| scratch.word(i).load(Ordering::Relaxed)).collect();
        scratch
    }

    fn words(&self) -> usize {
        self.map.len() / 8
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.words());
        // SAFETY: in bounds (asserted), 8-byte aligned (the mapping is page aligned),
        // and the mapping lives as long as `self`. The memory is shared with other
        // mappings of the file, written only through atomics in this process.
        unsafe { &*(self.map.as_mut_ptr().add(index * 8) as *const AtomicU64) }
    }

    fn byte(&self, offset: usize) -> &AtomicU8 {
        assert!(offset < self.map.len());
        // SAFETY: as in `word`.
        unsafe { &*(self.map.as_mut_ptr().add(offset) as *const AtomicU8) }
    }

    /// Puts the first `words` words back as created.
    fn restore(&self, words: usize) {
        for (i, w) in self.pristine.iter().take(words).enumerate() {
            self.word(i).store(*w, Ordering::Relaxed);
        }
    }
}

fn scratch(capacity: u8) -> &'static Scratch {
    static SCRATCH: [OnceLock<Scratch>; CAPACITIES.len()] = [const { OnceLock::new() }; 3];
    let i = capacity as usize % CAPACITIES.len();
    SCRATCH[i].get_or_init(|| Scratch::new(CAPACITIES[i]))
}

/// CLOCK_MONOTONIC in nanoseconds: table time of a freshly created table (whose time
/// base is zero), outside a time namespace.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

fn name(n: u8) -> &'static str {
    NAMES[n as usize % NAMES.len()]
}

fn ttl(t: Ttl) -> Duration {
    match t {
        Ttl::Micro => Duration::from_micros(1),
        Ttl::Millis(n) => Duration::from_millis(n as u64 + 1),
        Ttl::Long => Duration::from_secs(30),
        Ttl::Year => Duration::from_secs(365 * 86400),
        Ttl::Nanos(n) => Duration::from_nanos(n),
    }
}

/// The leases of one iteration.
struct State<'t> {
    /// Held leases, with the index of their name.
    held: Vec<(u8, Lease<'t>)>,
    /// Detached leases: name index and token.
    detached: Vec<(u8, u64)>,
    wait_left: Duration,
}

impl<'t> State<'t> {
    fn pick(&self, n: u8) -> Option<usize> {
        (!self.held.is_empty()).then(|| n as usize % self.held.len())
    }

    fn detached(&self, n: u8) -> Option<&(u8, u64)> {
        (!self.detached.is_empty()).then(|| &self.detached[n as usize % self.detached.len()])
    }

    fn token(&self, t: Token) -> u64 {
        match t {
            Token::Held(n) => self.pick(n).map_or(0, |i| self.held[i].1.token()),
            Token::Detached(n) => self.detached(n).map_or(0, |d| d.1),
            Token::Raw(v) => v,
        }
    }

    fn value(&self, v: Value) -> u64 {
        match v {
            Value::Zero => 0,
            Value::Ones => u64::MAX,
            Value::Small(n) => n as u64,
            Value::NearNow(us) => monotonic_ns().wrapping_add_signed(us as i64 * 1000),
            Value::Waiters(d) => 1 << 63 | d as u64,
            Value::Token(n) => self.token(Token::Held(n)),
            Value::Raw(v) => v,
        }
    }

    fn keep(&mut self, name: u8, granted: Result<Lease<'t>>) {
        match granted {
            Ok(lease) => {
                show(&lease);
                if self.held.len() < MAX_HELD {
                    self.held.push((name, lease));
                }
            }
            Err(e) => check::<()>(&Err(e)),
        }
    }

    /// Runs `op` on `table` (not `Reopen`, which needs the table list).
    fn run(&mut self, table: &'t LeaseTable, op: Op) {
        match op {
            Op::TryAcquire { name: n, ttl: t } => self.keep(n, table.try_acquire(name(n), ttl(t))),
            Op::AcquireWith { name: n, ttl: t, wait_us, label } => {
                let wait = Duration::from_micros(wait_us as u64).min(MAX_WAIT).min(self.wait_left);
                self.wait_left -= wait;
                match AcquireOptions::new().wait(Some(wait)).label(LABELS[label as usize % 3]) {
                    Ok(options) => self.keep(n, table.acquire_with(name(n), ttl(t), &options)),
                    Err(e) => check::<()>(&Err(e)),
                }
            }
            Op::Renew { lease, ttl: t } => {
                if let Some(i) = self.pick(lease) {
                    check(&self.held[i].1.renew(ttl(t)));
                }
            }
            Op::Release { lease } => {
                if let Some(i) = self.pick(lease) {
                    check(&self.held.swap_remove(i).1.release());
                }
            }
            Op::Detach { lease } => {
                if let Some(i) = self.pick(lease) {
                    let (n, lease) = self.held.swap_remove(i);
                    let detached = lease.detach();
                    check(&detached);
                    if let Ok(d) = detached {
                        if self.detached.len() == MAX_DETACHED {
                            self.detached.remove(0);
                        }
                        self.detached.push((n, d.token));
                    }
                }
            }
            Op::Drop { lease } => {
                if let Some(i) = self.pick(lease) {
                    drop(self.held.swap_remove(i));
                }
            }
            Op::Inspect { lease } => {
                if let Some(i) = self.pick(lease) {
                    let l = &self.held[i].1;
                    show(&(l.token(), l.remaining(), l.is_valid(), l.deadline(), l.lost()));
                }
            }
            Op::TableRenew { name: n, token, ttl: t } => {
                check(&table.renew(name(n), self.token(token), ttl(t)))
            }
            Op::DetachedRenew { lease, ttl: t } => {
                if let Some(&(n, token)) = self.detached(lease) {
                    check(&table.renew(name(n), token, ttl(t)));
                }
            }
            Op::DetachedRelease { lease } => {
                if let Some(&(n, token)) = self.detached(lease) {
                    check(&table.release(name(n), token));
                }
            }
            Op::TableRelease { name: n, token } => {
                check(&table.release(name(n), self.token(token)))
            }
            Op::Revoke { name: n } => check(&table.revoke(name(n))),
            Op::RevokeToken { name: n, token } => {
                check(&table.revoke_token(name(n), self.token(token)))
            }
            Op::Get { name: n } => check(&table.get(name(n))),
            Op::List => check(&table.list()),
            Op::Info => show(&table.info()),
            Op::Reopen => unreachable!("handled by the caller"),
        }
    }
}

fuzz_target!(|input: Input| {
    let s = scratch(input.capacity);
    s.restore(s.words());
    // Declared before the leases, which borrow them, so dropped after them.
    let tables: [OnceCell<LeaseTable>; MAX_TABLES] = Default::default();
    match LeaseTable::open(&s.path) {
        Ok(t) => {
            let _ = tables[0].set(t);
        }
        Err(e) => panic!("a pristine table does not open: {e}"),
    }
    let mut state = State { held: Vec::new(), detached: Vec::new(), wait_left: WAIT_BUDGET };
    // Read once per iteration (not per call, which would slow the fuzzer down): a stall
    // anywhere in the iteration excuses a slow call, which errs on the side of passing.
    let stalled_before = stalled_ns();
    for step in input.steps.iter().take(MAX_STEPS) {
        match *step {
            Step::Bytes { offset, ref bytes } => {
                let start = offset as usize % s.map.len();
                for (i, b) in bytes.iter().take(MAX_WRITE).enumerate() {
                    if start + i < s.map.len() {
                        s.byte(start + i).store(*b, Ordering::Relaxed);
                    }
                }
            }
            Step::Word { index, value } => {
                let v = state.value(value);
                s.word(index as usize % s.words()).store(v, Ordering::Relaxed);
            }
            Step::RestoreHeader => s.restore(256 / 8),
            Step::Op { table, op } => {
                let began = Instant::now();
                if let Op::Reopen = op {
                    let opened = LeaseTable::open(&s.path);
                    check(&opened);
                    if let (Ok(t), Some(free)) = (opened, tables.iter().find(|c| c.get().is_none()))
                    {
                        let _ = free.set(t);
                    }
                } else {
                    let open = tables.iter().filter(|c| c.get().is_some()).count();
                    if let Some(t) = tables[table as usize % open].get() {
                        state.run(t, op);
                    }
                }
                let took = began.elapsed();
                if took >= slow() {
                    let stalled = Duration::from_nanos(stalled_ns().saturating_sub(stalled_before));
                    assert!(
                        took.saturating_sub(stalled) < slow(),
                        "{op:?} took {took:?}, of which the machine stalled this thread for {stalled:?}"
                    );
                }
            }
        }
    }
});
