//! The lease round that every worker pattern is made of, and the log it writes. How a
//! process runs rounds (a fork tree, threads, a helper thread after the main thread
//! ended, the filler) is in `modes.rs`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shmlease::{AcquireOptions, Error, LeaseTable};

use super::{mono, run_delay, Kind, Layout, Mode, Records, Rng, FILLER_TTL_MS, WORKER_ENV};

/// Worker parameters, passed in `SHMLEASE_CHAOS_*` environment variables.
#[derive(Clone)]
pub(crate) struct WorkerEnv {
    pub wid: u64,
    pub seed: u64,
    pub dir: PathBuf,
    pub table: String,
    pub layout: Layout,
    pub mode: Mode,
    pub end: u64,
    pub parent: u32,
    pub max_ttl_ms: u64,
    /// Added to every deadline the worker believes in (fault injection).
    pub lie_ns: u64,
    /// Added to the permits a `permits` worker asks for (fault injection).
    pub extra_permit: u32,
    /// `shared`: exclusive acquisitions ask for a shared grant (fault injection).
    pub shared_as_exclusive: bool,
    /// `fair`: half the fair acquisitions are unfair (fault injection).
    pub barge: bool,
    pub threads: usize,
    pub fork_children: usize,
    /// `fallback`: end the main thread and work on a helper thread.
    pub zombie: bool,
    /// `fork`: the FIFO forked processes announce themselves on.
    pub roster: PathBuf,
}

fn env(key: &str) -> String {
    std::env::var(format!("SHMLEASE_CHAOS_{key}")).unwrap_or_default()
}

/// If this process was started as a worker, runs it and returns `true`.
pub fn maybe_run_worker() -> bool {
    let Ok(wid) = std::env::var(WORKER_ENV) else { return false };
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let parent: u32 = env("PARENT").parse().expect("parent");
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != parent {
        return true; // the controller is already gone
    }
    if env("NO_PIDFD") == "1" {
        forbid_pidfd_open();
    }
    let w = WorkerEnv {
        wid: wid.parse().expect("worker id"),
        seed: env("SEED").parse().expect("seed"),
        dir: PathBuf::from(env("DIR")),
        table: env("TABLE"),
        layout: Layout::decode(&env("LAYOUT")).expect("name layout"),
        mode: Mode::parse(&env("MODE")).expect("mode"),
        end: env("END").parse().expect("end"),
        parent,
        max_ttl_ms: env("MAX_TTL_MS").parse().expect("max ttl"),
        lie_ns: if env("FAULT") == "lie" { 20_000_000 } else { 0 },
        extra_permit: (env("FAULT") == "extra-permit") as u32,
        shared_as_exclusive: env("FAULT") == "shared-as-exclusive",
        barge: env("FAULT") == "barge",
        threads: env("THREADS").parse().unwrap_or(1),
        fork_children: env("FORK_CHILDREN").parse().unwrap_or(1),
        zombie: env("ZOMBIE") == "1",
        roster: PathBuf::from(env("ROSTER")),
    };
    super::modes::run_process(&w);
    true
}

/// Emulates, in this process, a kernel without `pidfd_open` (before 5.3): a seccomp
/// filter makes the call fail with ENOSYS, so the library must identify this process,
/// and judge others dead or alive, from `/proc` alone (the start-time identity).
fn forbid_pidfd_open() {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let (ld, jeq, ret) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    let mut prog = [
        op(ld, 4, 0, 0),     // seccomp_data.arch
        op(jeq, ARCH, 1, 0), // another ABI: allow
        op(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
        op(ld, 0, 0, 0), // seccomp_data.nr
        op(jeq, libc::SYS_pidfd_open as u32, 0, 1),
        op(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32, 0, 0),
        op(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers; PR_SET_SECCOMP reads
    // the filter program, which outlives the call (the kernel copies it).
    let ok = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) == 0
    };
    assert!(ok, "installing the seccomp filter: {}", std::io::Error::last_os_error());
}

/// A worker's append-only log: one `write` per line, no buffering, so a kill -9 loses
/// at most the line being written.
pub(crate) struct Log(File);

impl Log {
    /// Opens (appending) `DIR/STEM.log`.
    pub(crate) fn open(dir: &Path, stem: &str) -> Log {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{stem}.log")))
            .expect("opening the worker log");
        Log(file)
    }

    pub(crate) fn line(&mut self, s: std::fmt::Arguments<'_>) {
        let mut text = String::with_capacity(96);
        let _ = text.write_fmt(s);
        text.push('\n');
        self.0.write_all(text.as_bytes()).expect("writing the worker log");
    }
}

macro_rules! logln {
    ($log:expr, $($arg:tt)*) => { $log.line(format_args!($($arg)*)) };
}
pub(crate) use logln;

pub(crate) fn holder_fields(h: &Option<shmlease::Holder>) -> (u32, u8) {
    match h {
        Some(h) => (h.pid, h.detached as u8),
        None => (0, 2),
    }
}

/// One word for an error's kind, as logged.
pub(crate) fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Held { .. } => "held",
        Error::TimedOut { .. } => "timeout",
        Error::Lost { .. } => "lost",
        Error::TableFull { .. } => "full",
        Error::Busy { .. } => "busy",
        Error::Corrupt { .. } => "corrupt",
        Error::Io { .. } => "io",
        Error::WrongKind { .. } => "wrong-kind",
        _ => "other",
    }
}

/// Logs a refused or failed acquire that started at `t_a`: `R` for a refusal by a
/// holder (`Held`, `TimedOut`), `Q` for the refusals a crowded table may give
/// (`TableFull`, `Busy`), `E` for anything else.
pub(crate) fn log_refusal(log: &mut Log, name: &str, e: &Error, t_a: u64) {
    let t_e = mono();
    match e {
        Error::Held { token, holder, .. } => {
            let (hp, hd) = holder_fields(holder);
            logln!(log, "R {name} {token} {hp} {hd} held {t_a} {t_e}");
        }
        Error::TimedOut { token, holder, .. } => {
            let (hp, hd) = holder_fields(holder);
            logln!(log, "R {name} {token} {hp} {hd} timeout {t_a} {t_e}");
        }
        Error::TableFull { .. } | Error::Busy { .. } => {
            let msg = e.to_string().replace('\n', " ");
            logln!(log, "Q {name} {} {t_a} {t_e} {msg}", error_kind(e));
        }
        other => {
            let msg = other.to_string().replace('\n', " ");
            logln!(log, "E {name} {t_a} {t_e} {} {msg}", error_kind(other));
        }
    }
}

/// The resolution of `CLOCK_MONOTONIC_COARSE` (a timer tick), as the library reads it.
fn coarse_tick_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_getres(CLOCK_MONOTONIC_COARSE)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Logs a grant that returned at `g` for an attempt started at `t_a`: its token and
/// the bounds of its deadline. Returns the deadline's lower bound.
pub(crate) fn log_grant(
    log: &mut Log,
    name: &str,
    lease: &shmlease::Lease<'_>,
    tag: &str,
    ttl_ns: u64,
    (t_a, g, rd): (u64, u64, u64),
    lie_ns: u64,
) -> u64 {
    let rem = lease.remaining().as_nanos() as u64;
    let token = lease.token();
    // Lower bound of the deadline: if the lease still had time left when `remaining`
    // read the clock (after g), it lasts at least until g + rem; and unless the grant
    // may have read the coarse clock, its clock read came after t_a. (A grant of a
    // free name with a TTL of 256 coarse ticks or more reads `CLOCK_MONOTONIC_COARSE`,
    // which lags by a tick or more: its deadline may come before t_a + ttl. Bounding
    // those by t_a + ttl made the checker see overlaps of up to 7 ms that were not.)
    // Upper bound: the grant's clock read came before g.
    let mut d_lo = if ttl_ns >= 256 * coarse_tick_ns() { 0 } else { t_a + ttl_ns };
    if rem > 0 {
        d_lo = d_lo.max(g + rem);
    }
    d_lo += lie_ns;
    let d_hi = g + ttl_ns + lie_ns;
    logln!(log, "G {name} {token} {tag} {ttl_ns} {t_a} {g} {d_lo} {d_hi} {rd}");
    d_lo
}

/// Logs an observation of our record holding another writer's token. That is legitimate
/// only if our grant was over by then. It was certainly not over (a violation) if
/// `is_valid()`, called after the record was read, still says ours; or if our clock,
/// read after the record was, is still before a lower bound of our deadline (nobody
/// revokes in this harness, we did not release, and we are alive).
pub(crate) fn saw_other(
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

/// What a stream of rounds works on, and how.
pub(crate) struct Round<'a> {
    pub table: &'a LeaseTable,
    pub records: &'a Records,
    /// The names it picks from, with their record index.
    pub names: &'a [(usize, String)],
    /// The permits of each of `names` (1: exclusive or shared).
    pub permits: Vec<u32>,
    /// The kind of each of `names`.
    pub kinds: Vec<Kind>,
    /// Added to the permits asked for (fault injection: `extra-permit`).
    pub extra_permit: u32,
    /// `shared`: exclusive acquisitions ask for a shared grant (fault injection).
    pub shared_as_exclusive: bool,
    /// `fair`: acquire fairly (mostly), telling `watch` which name is being waited for.
    pub fair: bool,
    /// `fair`: half the fair acquisitions are unfair (fault injection).
    pub barge: bool,
    /// `fair`: 1 + the index in `names` of the name an acquisition is under way for
    /// (0: none), read by the process's queue watcher ([`watch_queue`]).
    pub watch: Option<&'a std::sync::atomic::AtomicUsize>,
    pub pid: u32,
    pub max_ttl_ms: u64,
    pub lie_ns: u64,
    /// Herd: always a blocking `acquire`, and the holder-record check after each grant.
    pub herd: bool,
    /// Whether grants may start a keep-alive (a thread): not in a process that forks.
    pub keep_alive: bool,
    /// Short holds, mostly released at once: more grants, binds and hand-overs per
    /// second (`fork`, `herd`, `full`, where the races are in granting and binding).
    pub quick: bool,
    /// Percentage of rounds on a fresh name (`full`): one never used before, which must
    /// be bound, evicting an idle name. Fresh names have no record.
    pub fresh_pct: u64,
    /// Fresh names are this prefix and a counter.
    pub fresh_prefix: String,
    pub fresh_next: std::cell::Cell<u64>,
}

/// Runs rounds until `end`, logging to `log` (begin line `B`, end line `Z`); calls
/// `between` after every round.
pub(crate) fn run_stream(
    r: &Round<'_>,
    rng: &mut Rng,
    log: &mut Log,
    (wid, mode, end): (u64, Mode, u64),
    between: &mut dyn FnMut(&mut Log),
) {
    logln!(log, "B {wid} {} {} {}", r.pid, mono(), mode.as_str());
    while mono() < end {
        if r.fresh_pct > 0 && rng.pct(30) {
            rotate_burst(r, rng, log);
        } else {
            one_round(r, rng, log);
        }
        between(log);
        if rng.pct(30) {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
    }
    logln!(log, "Z {}", mono());
}

/// `full`: a burst of rotation without pause (the pattern of a review's reproduction):
/// keep 1–3 leases on fresh names, releasing one and binding a new one on every try, so
/// that every bind must evict an idle name, and the only idle names are the ones others
/// just bound or released.
fn rotate_burst(r: &Round<'_>, rng: &mut Rng, log: &mut Log) {
    let hold = rng.range(1, 3) as usize;
    // Long enough that nothing expires during the burst: the free slots stay held,
    // and a bind has nothing to evict but what was just released.
    let ttl_ns = FILLER_TTL_MS * 1_000_000;
    let ttl = Duration::from_nanos(ttl_ns);
    let mut held: Vec<(String, shmlease::Lease<'_>)> = Vec::new();
    let mut full = 0;
    // Up to 100 tries; the third `TableFull` ends the burst (the table has no room).
    for _ in 0..rng.range(20, 100) {
        if full == 3 {
            break;
        }
        if held.len() >= hold {
            let (name, lease) = held.swap_remove(rng.below(held.len() as u64) as usize);
            end_lease(log, &name, lease, "release");
        }
        let n = r.fresh_next.get();
        r.fresh_next.set(n + 1);
        let name = format!("{}{n}", r.fresh_prefix);
        let t_a = mono();
        match r.table.try_acquire(&name, ttl) {
            Ok(lease) => {
                let g = mono();
                log_grant(log, &name, &lease, "try", ttl_ns, (t_a, g, 0), r.lie_ns);
                held.push((name, lease));
            }
            Err(e) => {
                full += matches!(e, shmlease::Error::TableFull { .. }) as u32;
                log_refusal(log, &name, &e, t_a);
            }
        }
    }
    for (name, lease) in held {
        end_lease(log, &name, lease, "release");
    }
}

/// Herd: right after a grant, whether the table names us as the holder. Only
/// meaningful if the lease was valid both before and after the read (`v0`, `v1`).
fn herd_check(r: &Round<'_>, log: &mut Log, name: &str, lease: &shmlease::Lease<'_>) {
    let token = lease.token();
    let t0 = mono();
    let v0 = lease.is_valid();
    let info = r.table.get(name);
    let v1 = lease.is_valid();
    let t1 = mono();
    let (seen, hp, hd, state) = match &info {
        Ok(Some(i)) => {
            let (hp, hd) = holder_fields(&i.holder);
            (i.token, hp, hd, i.state.as_str())
        }
        Ok(None) => (0, 0, 2, "unbound"),
        Err(_) => (0, 0, 2, "error"),
    };
    logln!(log, "H {name} {token} {} {} {seen} {hp} {hd} {state} {t0} {t1}", v0 as u8, v1 as u8);
}

/// `permits`: right after a grant, what the table says of the name: its number of
/// permits, how many live grants it lists, and ours among them (its slot, its holder).
/// Only meaningful if the lease was valid both before and after the read (`v0`, `v1`).
/// The slot tells the checker which seat the grant is in.
fn permit_check(r: &Round<'_>, log: &mut Log, name: &str, lease: &shmlease::Lease<'_>) {
    let token = lease.token();
    let t0 = mono();
    let v0 = lease.is_valid();
    let info = r.table.get(name);
    let v1 = lease.is_valid();
    let t1 = mono();
    let (kind, live, ours) = match &info {
        Ok(Some(i)) => {
            (i.kind.permits(), i.grants.len(), i.grants.iter().find(|g| g.token == token))
        }
        Ok(None) => (0, 0, None),
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            logln!(log, "E {name} {t0} {t1} {} get: {msg}", error_kind(e));
            return;
        }
    };
    let (slot, (hp, hd)) = match ours {
        Some(g) => (i64::from(g.slot), holder_fields(&g.holder)),
        None => (-1, (0, 2)),
    };
    logln!(
        log,
        "P {name} {token} {} {} {kind} {live} {slot} {hp} {hd} {t0} {t1}",
        v0 as u8,
        v1 as u8
    );
}

/// `shared`: right after a grant, what the table says of the name: its kind, and our
/// grant among the live ones (its slot, whether shared, its holder). Only meaningful if
/// the lease was valid both before and after the read (`v0`, `v1`). The slot tells the
/// checker which seat (or the head, for an exclusive grant) the grant is in. (Other
/// grants listed beside an exclusive one prove nothing: a shared acquirer that lost
/// the race withdraws its seat, and a snapshot may show it for a moment.)
fn shared_check(r: &Round<'_>, log: &mut Log, name: &str, lease: &shmlease::Lease<'_>) {
    let token = lease.token();
    let t0 = mono();
    let v0 = lease.is_valid();
    let info = r.table.get(name);
    let v1 = lease.is_valid();
    let t1 = mono();
    let (kind, ours) = match &info {
        Ok(Some(i)) => (i.kind.as_str(), i.grants.iter().find(|g| g.token == token)),
        Ok(None) => ("unbound", None),
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            logln!(log, "E {name} {t0} {t1} {} get: {msg}", error_kind(e));
            return;
        }
    };
    let (slot, shared, (hp, hd)) = match ours {
        Some(g) => (i64::from(g.slot), g.shared as u8, holder_fields(&g.holder)),
        None => (-1, 2, (0, 2)),
    };
    logln!(
        log,
        "S {name} {token} {} {} {kind} {slot} {shared} {hp} {hd} {t0} {t1}",
        v0 as u8,
        v1 as u8
    );
}

/// `fair`: the queue watcher, a thread of every `fair` process. While the main thread is
/// in a fair acquisition (`watch` names it), it reads the name's queue again and again
/// and logs the place this process holds in it, if any:
/// `W name ticket s e rem`, where the `get` began at `s` and returned at `e`, and the
/// place's deadline was at least `rem` ns after `s` (its `expires_at` less the wall
/// clock read after the `get`). The checker chains these observations into intervals
/// over which the place was certainly live.
pub(crate) fn watch_queue(
    table: &LeaseTable,
    names: &[(usize, String)],
    watch: &std::sync::atomic::AtomicUsize,
    mut log: Log,
    end: u64,
) {
    let pid = std::process::id();
    while mono() < end {
        let k = watch.load(std::sync::atomic::Ordering::SeqCst);
        if k == 0 {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let name = names[k - 1].1.as_str();
        let s = mono();
        let info = table.get(name);
        let e = mono();
        let wall = std::time::SystemTime::now();
        if let Ok(Some(info)) = info {
            let ours = info.queue.iter().find(|q| q.holder.as_ref().is_some_and(|h| h.pid == pid));
            if let Some(q) = ours {
                let rem = q
                    .expires_at
                    .and_then(|x| x.duration_since(wall).ok())
                    .map_or(0, |d| d.as_nanos() as u64);
                logln!(log, "W {name} {} {s} {e} {rem}", q.ticket);
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// How long a chunk of work lasts (ns) for a grant of `ttl_ns`: mostly well inside the
/// TTL, sometimes past it (then the grant may be lost meanwhile).
fn work_ns(quick: bool, rng: &mut Rng, ttl_ns: u64) -> u64 {
    match (quick, rng.below(100)) {
        (true, 0..=69) => rng.below(ttl_ns / 4 + 1),
        (true, 70..=94) => rng.range(ttl_ns / 4, ttl_ns),
        (false, 0..=59) => rng.below(ttl_ns / 2 + 1),
        (false, 60..=84) => rng.range(ttl_ns / 2, ttl_ns),
        _ => rng.range(ttl_ns, ttl_ns * 2),
    }
}

/// One grant's life: acquire, write the fenced record, work in chunks (reading the
/// record back, renewing or polling the keep-alive), read back, end it one of five ways.
/// On a name with permits, the grant is one of N: there is no record to write (N
/// holders share the name; the checker checks each seat from the log instead), the
/// table's view is checked after the grant, and a detached permit lives on by its token
/// ([`by_token`]).
pub(crate) fn one_round(r: &Round<'_>, rng: &mut Rng, log: &mut Log) {
    let (table, records, pid) = (r.table, r.records, r.pid);
    let max_ttl_ms = r.max_ttl_ms;
    let fresh_name;
    let (k, name, permits, kind) = if r.fresh_pct > 0 && rng.pct(r.fresh_pct) {
        let n = r.fresh_next.get();
        r.fresh_next.set(n + 1);
        fresh_name = format!("{}{n}", r.fresh_prefix);
        (None, fresh_name.as_str(), 1, Kind::Exclusive)
    } else {
        let k = rng.below(r.names.len() as u64) as usize;
        (Some(k), r.names[k].1.as_str(), r.permits[k], r.kinds[k])
    };
    // The fenced record: exclusive names, and shared names (written by exclusive
    // holders, read back by everyone).
    let ni = k.map(|k| r.names[k].0).filter(|_| !matches!(kind, Kind::Permits(_)));
    // `shared`: most grants shared, the rest exclusive. `fair`: most acquisitions
    // fair, the rest not (barging past the queue, which is allowed).
    let shared = kind == Kind::Shared && rng.pct(70);
    let fair = r.fair && rng.pct(85);
    let ttl_ns = rng.range(1_000, max_ttl_ms * 1_000) * 1_000;
    let ttl = Duration::from_nanos(ttl_ns);
    let mode = rng.below(100);
    let wait = if r.herd {
        Duration::from_millis(rng.range(50, 1000))
    } else if fair {
        // Long enough to wait through a queue of several.
        Duration::from_millis(rng.range(50, 1500))
    } else {
        Duration::from_millis(rng.below(101))
    };
    let (base_tag, waits) = match mode {
        _ if r.herd => ("wait", true),
        0..=9 if fair => ("try", false),
        _ if fair && mode < 85 => ("wait", true),
        0..=44 => ("try", false),
        45..=89 => ("wait", true),
        _ => ("label", true),
    };
    // The tag says what was asked for: `shared-…` a shared grant, `fair-…` a fair one.
    let tag_buf;
    let mode_tag = match (shared, fair) {
        (true, _) => {
            tag_buf = format!("shared-{base_tag}");
            tag_buf.as_str()
        }
        (_, true) => {
            tag_buf = format!("fair-{base_tag}");
            tag_buf.as_str()
        }
        _ => base_tag,
    };
    // Fault injection: what the library is really asked for.
    let ask_shared = shared || (kind == Kind::Shared && r.shared_as_exclusive);
    let ask_fair = fair && !(r.barge && rng.pct(50));
    if let (true, Some(watch), Some(k)) = (fair && waits, r.watch, k) {
        watch.store(k + 1, std::sync::atomic::Ordering::SeqCst);
    }
    let rd0 = if waits { run_delay() } else { None };
    let t_a = mono();
    let result = if kind != Kind::Exclusive || r.fair {
        let opts = if permits > 1 {
            AcquireOptions::new().permits(permits + r.extra_permit)
        } else {
            Ok(AcquireOptions::new())
        };
        opts.and_then(|o| {
            let o = o.shared(ask_shared).fair(ask_fair);
            let o = if waits { o.wait(Some(wait)) } else { o };
            let o = if base_tag == "label" { o.label(&format!("p{pid}"))? } else { o };
            table.acquire_with(name, ttl, &o)
        })
    } else {
        match mode_tag {
            "try" => table.try_acquire(name, ttl),
            "wait" => table.acquire(name, ttl, Some(wait)),
            _ => AcquireOptions::new()
                .wait(Some(wait))
                .label(&format!("p{pid}"))
                .and_then(|o| table.acquire_with(name, ttl, &o)),
        }
    };
    if let Some(watch) = r.watch {
        watch.store(0, std::sync::atomic::Ordering::SeqCst);
    }
    let lease = match result {
        Ok(l) => l,
        Err(e) => return log_refusal(log, name, &e, t_a),
    };
    let g = mono();
    let rd = match (rd0, if waits { run_delay() } else { None }) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let token = lease.token();
    let mut d_lo = log_grant(log, name, &lease, mode_tag, ttl_ns, (t_a, g, rd), r.lie_ns);
    if r.herd {
        herd_check(r, log, name, &lease);
    }
    if permits > 1 {
        permit_check(r, log, name, &lease);
    }
    if kind == Kind::Shared {
        shared_check(r, log, name, &lease);
    }

    let mut lease = lease;
    let keep_alive = r.keep_alive && rng.pct(10);
    if keep_alive {
        logln!(log, "K {name} {token} {ttl_ns} {}", mono());
        if let Err(e) = lease.keep_alive(ttl) {
            let t = mono();
            logln!(log, "E {name} {t} {t} {} keep_alive: {e}", error_kind(&e));
        }
    }
    let mut lost = false;
    let saw = |seen: u64, writer: u64, lease: &shmlease::Lease<'_>, d_lo: u64, log: &mut Log| {
        saw_other(log, name, token, seen, writer, lease, d_lo)
    };
    // Another writer's token in the record: for an exclusive grant, any other; for a
    // shared one, a larger one written by an exclusive holder (one that came after
    // ours). Shared holders write too, so that a stale exclusive holder's late write is
    // fenced off by the shared holders' tokens as by an exclusive holder's.
    let foreign = |(seen, by_shared): (u64, bool)| {
        if shared {
            seen > token && !by_shared
        } else {
            seen != token
        }
    };
    let read = |i: usize| {
        let (t, s, w) = records.read_kind(i);
        ((t, s), w)
    };
    if let Some(Err(seen)) = ni.map(|i| records.write(i, token, pid, shared)) {
        if foreign(seen) {
            let (_, writer) = records.read(ni.unwrap_or_default());
            saw(seen.0, writer, &lease, d_lo, log);
            lost = true;
        }
    }
    let chunks = if r.quick { 1 } else { rng.range(1, 3) };
    for _ in 0..chunks {
        if lost {
            break;
        }
        std::thread::sleep(Duration::from_nanos(work_ns(r.quick, rng, ttl_ns)));
        let (seen, writer) = ni.map_or(((token, shared), 0), read);
        if foreign(seen) {
            saw(seen.0, writer, &lease, d_lo, log);
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
                    d_lo = lo + r.lie_ns;
                    logln!(log, "D {name} {token} ok {t_r} {d_lo} {}", t_r + ttl2_ns + r.lie_ns);
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
        let (seen, writer) = ni.map_or(((token, shared), 0), read);
        if foreign(seen) {
            saw(seen.0, writer, &lease, d_lo, log);
        }
    }
    let ending = match (r.quick, rng.below(100)) {
        (false, 0..=44) | (true, 0..=59) => "release",
        (false, 45..=59) | (true, 60..=69) => "drop",
        (false, 60..=69) | (true, 70..=74) if !keep_alive => "forget",
        (false, 70..=79) | (true, 75..=79) => "detach",
        _ if keep_alive => "release",
        _ => "expire",
    };
    if ending == "expire" {
        while lease.is_valid() {
            std::thread::sleep(lease.remaining() + Duration::from_micros(100));
        }
    }
    if end_lease(log, name, lease, ending) && ending == "detach" && kind != Kind::Exclusive {
        by_token(r, rng, log, name, token, ttl_ns);
    }
}

/// `permits`: a detached permit lives on by its name and token alone, as it would in a
/// process that was handed them: 1–3 chunks of work, each followed (70 %) by
/// `table.renew(name, token, ttl)` — the lookup of the seat holding that token — then,
/// 60 % of the time, `table.release(name, token)`; else it is left to expire. Renewals
/// log `N` / `D` and the release `X` / `Y` (`release-token`), like a lease's own.
fn by_token(r: &Round<'_>, rng: &mut Rng, log: &mut Log, name: &str, token: u64, ttl_ns: u64) {
    let mut ttl_ns = ttl_ns;
    for _ in 0..rng.range(1, 3) {
        std::thread::sleep(Duration::from_nanos(work_ns(false, rng, ttl_ns)));
        if !rng.pct(70) {
            continue;
        }
        let ttl2_ns = rng.range(1_000, r.max_ttl_ms * 1_000) * 1_000;
        let t_i = mono();
        logln!(log, "N {name} {token} {ttl2_ns} {t_i}");
        let result = r.table.renew(name, token, Duration::from_nanos(ttl2_ns));
        let t_r = mono();
        match result {
            // The deadline the call returns is an `Instant` computed after the library's
            // clock read, so it bounds nothing from below: intent time + TTL does.
            Ok(_) => {
                let (lo, hi) = (t_i + ttl2_ns + r.lie_ns, t_r + ttl2_ns + r.lie_ns);
                logln!(log, "D {name} {token} ok {t_r} {lo} {hi}");
                ttl_ns = ttl2_ns;
            }
            Err(Error::Lost { reason, .. }) => {
                logln!(log, "D {name} {token} lost {t_r} {reason:?}");
                return;
            }
            Err(e) => {
                // Our own detached grant is never another process's to refuse.
                let msg = e.to_string().replace('\n', " ");
                logln!(log, "D {name} {token} lost {t_r} error:{}", msg.replace(' ', "_"));
                logln!(log, "E {name} {t_i} {t_r} {} renew by token: {msg}", error_kind(&e));
                return;
            }
        }
    }
    if rng.pct(60) {
        logln!(log, "X {name} {token} release-token {}", mono());
        let result = match r.table.release(name, token) {
            Ok(()) => "ok".to_string(),
            Err(Error::Lost { reason, .. }) => format!("lost:{reason:?}"),
            Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
        };
        logln!(log, "Y {name} {token} release-token {result} {}", mono());
    }
}

/// Ends a grant with `ending` (`release`, `detach`, `forget`, `drop`, `expire`): the
/// `X` line before, the `Y` line with the outcome after. Returns whether the ending
/// succeeded (a release or a detach can find the lease lost).
pub(crate) fn end_lease(
    log: &mut Log,
    name: &str,
    lease: shmlease::Lease<'_>,
    ending: &str,
) -> bool {
    let token = lease.token();
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
    result == "ok"
}
