//! The controller: starts the worker processes of every mode, learns of the ones fork
//! trees fork (from the roster FIFO), kill -9s, SIGSTOPs and SIGCONTs any of them,
//! samples the table's occupancy, and gathers what it did for the checker.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmlease::{AcquireOptions, LeaseState, LeaseTable, Location, ProcessIdentity, TableOptions};

use super::checker::check;
use super::{loadavg, mono, proc_stat, Config, Launcher, Mode, Records, Rng, RunMode};
use super::{WIND_DOWN, WORKER_ENV};

/// What the controller did to one worker process.
#[derive(Clone, Debug, Default)]
pub struct WorkerFate {
    /// Process id.
    pub pid: u32,
    /// Its pattern.
    pub mode: Mode,
    /// When it was started (for a forked process: its own clock read before it
    /// announced itself, so before anything it did).
    pub spawned: u64,
    /// (time read before SIGKILL was sent — to it, or to the ancestor whose death
    /// killed it —, time after it was seen dead).
    pub killed: Option<(u64, u64)>,
    /// Killed by its parent-death signal when this ancestor was killed.
    pub cascade: Option<u64>,
    /// When it was seen dead (any death): reaped, or its pidfd readable.
    pub reaped: Option<u64>,
    /// Exit description (when the controller, or a parent that told it, reaped it).
    pub status: Option<String>,
    /// SIGSTOP periods: (before SIGSTOP, after SIGCONT).
    pub stops: Vec<(u64, u64)>,
    /// It did not finish in time after the run and was killed.
    pub hung: bool,
    /// The worker that forked it (`fork` mode).
    pub parent: Option<u64>,
    /// `fallback`: its main thread exits early.
    pub zombie: bool,
}

impl WorkerFate {
    /// Forked by another worker (not started by the controller).
    pub fn forked(&self) -> bool {
        self.parent.is_some()
    }
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Directory with the logs.
    pub dir: PathBuf,
    /// Which modes ran.
    pub mode: String,
    /// Wall time of the chaos phase.
    pub elapsed: Duration,
    /// Load average before and after.
    pub load: (String, String),
    /// Counts (grants, kills, ...), in a stable order.
    pub counts: BTreeMap<&'static str, u64>,
    /// The same per mode (`filler` included), with the mode-specific counters.
    pub modes: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// Table occupancy samples (names bound), and the capacity.
    pub occupancy: Vec<u32>,
    /// Capacity of the table.
    pub capacity: u32,
    /// Every violation found, one line each.
    pub violations: Vec<String>,
    /// Non-fatal remarks.
    pub notes: Vec<String>,
}

impl Report {
    /// A per-mode count (0 when absent).
    pub fn mode_count(&self, mode: &str, key: &str) -> u64 {
        self.modes.get(mode).and_then(|m| m.get(key)).copied().unwrap_or(0)
    }

    /// Occupancy (percent of the capacity bound): minimum and median of the samples.
    pub fn occupancy_pct(&self) -> Option<(f64, f64)> {
        if self.occupancy.is_empty() || self.capacity == 0 {
            return None;
        }
        let mut s = self.occupancy.clone();
        s.sort_unstable();
        let pct = |n: u32| 100.0 * f64::from(n) / f64::from(self.capacity);
        Some((pct(s[0]), pct(s[s.len() / 2])))
    }

    /// The summary the example prints.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "chaos run ({}): {:.1}s, logs in {}",
            self.mode,
            self.elapsed.as_secs_f64(),
            self.dir.display()
        );
        let _ = writeln!(s, "load average before: {}  after: {}", self.load.0, self.load.1);
        for (k, v) in &self.counts {
            let _ = writeln!(s, "  {k:<34} {v}");
        }
        if let Some((min, median)) = self.occupancy_pct() {
            let _ = writeln!(
                s,
                "  table occupancy (names bound / {}) min {min:.1}%, median {median:.1}% over {} samples",
                self.capacity,
                self.occupancy.len()
            );
        }
        let _ = writeln!(s, "per mode:");
        for (mode, c) in &self.modes {
            let get = |k: &str| c.get(k).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "  {mode:<8} processes {}, grants {}, kills {} (+{} by parent death), stops {}, violations {}",
                get("processes"),
                get("grants"),
                get("kills"),
                get("killed with their parent"),
                get("stops"),
                get("violations")
            );
            for (k, v) in c {
                if matches!(
                    k.as_str(),
                    "processes"
                        | "grants"
                        | "kills"
                        | "killed with their parent"
                        | "stops"
                        | "violations"
                ) {
                    continue;
                }
                let _ = writeln!(s, "      {k:<44} {v}");
            }
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

/// Who a live process is to the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The root process of worker unit `i` (replaced when it dies).
    Unit(usize),
    /// The filler (replaced when it dies).
    Filler,
    /// Forked by a worker (its opener replaces it, if alive).
    Forked,
}

enum Handle {
    /// Our child: reaped with `wait`.
    Child(Child),
    /// Forked by a worker: a pidfd, readable once it has exited.
    Pidfd(OwnedFd),
    /// Forked by a worker that was dead when the controller heard of it.
    Gone,
}

struct Proc {
    wid: u64,
    pid: u32,
    handle: Handle,
    role: Role,
    stopped_at: Option<(u64, u64)>, // (stop time, continue at)
}

impl Proc {
    fn signal(&self, sig: i32) {
        match &self.handle {
            // SAFETY: kill(2) with a pid of our own child that we have not reaped yet (so
            // the pid cannot have been reused) and a valid signal number.
            Handle::Child(_) => unsafe {
                libc::kill(self.pid as i32, sig);
            },
            // SAFETY: pidfd_send_signal on a pidfd we own (it never names a reused pid)
            // with no siginfo.
            Handle::Pidfd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            Handle::Gone => {}
        }
    }

    /// Its exit status if it has exited.
    fn try_exit(&mut self) -> Option<String> {
        match &mut self.handle {
            Handle::Child(c) => match c.try_wait() {
                Ok(Some(st)) => Some(format!("{st}")),
                _ => None,
            },
            Handle::Pidfd(fd) => readable(fd, 0).then(|| reap_pidfd(fd)),
            Handle::Gone => Some("gone".into()),
        }
    }

    /// Waits for it to exit (after a SIGKILL).
    fn wait_exit(&mut self) -> String {
        match &mut self.handle {
            Handle::Child(c) => format!("{}", c.wait().expect("reaping a worker")),
            Handle::Pidfd(fd) => {
                if readable(fd, 10_000) {
                    reap_pidfd(fd)
                } else {
                    "still alive 10 s after SIGKILL".into()
                }
            }
            Handle::Gone => "gone".into(),
        }
    }
}

/// Whether a pidfd is readable (its process has exited) within `ms`.
fn readable(fd: &OwnedFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n == 1 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// Reaps an exited forked process if it is ours to reap (orphans come to us: we are a
/// child subreaper); else its parent does, and its status is unknown here.
fn reap_pidfd(fd: &OwnedFd) -> String {
    // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(P_PIDFD) on a pidfd we own, with a valid siginfo pointer.
    let r = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    // SAFETY: after a successful waitid for an exited child, si_pid and si_status are
    // the fields the kernel filled in.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if r == 0 && pid != 0 {
        if info.si_code == libc::CLD_EXITED {
            format!("exit status: {status}")
        } else {
            format!("signal: {status}")
        }
    } else {
        "exited (reaped by its parent)".into()
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; a non-negative result is a new
    // descriptor that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: see above.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The nearest ancestor of `wid` that the controller killed (or that died of such a
/// kill), and the time read before that SIGKILL: `wid` dies after it.
fn ancestor_kill(fates: &BTreeMap<u64, WorkerFate>, wid: u64) -> Option<(u64, u64)> {
    let mut p = fates.get(&wid)?.parent;
    while let Some(a) = p {
        let f = fates.get(&a)?;
        if let Some((t, _)) = f.killed {
            return Some((f.cascade.unwrap_or(a), t));
        }
        p = f.parent;
    }
    None
}

/// The modes of the worker units: all the same; or for `mix`, every mode once (in a
/// random order), then `fork` once more, the herd three more times, `permits` three
/// more times, `shared` and `fair` twice more (as in their own modes: two trees, a herd
/// of one is no herd, one holder at a time never fills a name with 2 permits, nor
/// shares a name, nor queues), then modes other than `fork` (a
/// fork unit is already a tree of about seven processes) at random.
fn unit_modes(cfg: &Config, rng: &mut Rng) -> Vec<Mode> {
    match cfg.mode {
        RunMode::One(m) => vec![m; cfg.units()],
        RunMode::Mix => {
            let mut all = Mode::SELECTABLE.to_vec();
            for i in (1..all.len()).rev() {
                all.swap(i, rng.below(i as u64 + 1) as usize);
            }
            all.extend([Mode::Fork, Mode::Herd, Mode::Herd, Mode::Herd]);
            all.extend([Mode::Permits, Mode::Permits, Mode::Permits]);
            all.extend([Mode::Shared, Mode::Shared, Mode::Fair, Mode::Fair]);
            let others: Vec<Mode> =
                Mode::SELECTABLE.into_iter().filter(|&m| m != Mode::Fork).collect();
            (0..cfg.units())
                .map(|i| {
                    all.get(i)
                        .copied()
                        .unwrap_or_else(|| others[rng.below(others.len() as u64) as usize])
                })
                .collect()
        }
    }
}

/// The controller's state during a run.
struct Ctl<'a> {
    cfg: &'a Config,
    launcher: &'a Launcher,
    dir: PathBuf,
    table_loc: String,
    layout: String,
    roster_path: PathBuf,
    roster: Option<File>,
    roster_buf: Vec<u8>,
    end: u64,
    rng: Rng,
    units: Vec<Mode>,
    fates: BTreeMap<u64, WorkerFate>,
    procs: Vec<Proc>,
    next_wid: u64,
    /// Pids of our live children, for the watchdog.
    live: Arc<Mutex<Vec<u32>>>,
    counts: BTreeMap<&'static str, u64>,
    per_mode: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

impl Ctl<'_> {
    fn count(&mut self, k: &'static str) {
        *self.counts.entry(k).or_default() += 1;
    }

    fn bump(&mut self, m: Mode, k: &str) {
        *self.per_mode.entry(m.as_str()).or_default().entry(k.to_string()).or_default() += 1;
    }

    /// Starts a worker process in `mode`.
    fn spawn(&mut self, role: Role, mode: Mode) {
        let wid = self.next_wid;
        self.next_wid += 1;
        let cfg = self.cfg;
        let zombie = mode == Mode::Fallback && self.rng.pct(cfg.zombie_pct);
        let err = File::create(self.dir.join(format!("w{wid}.err"))).expect("worker stderr file");
        let mut cmd = Command::new(&self.launcher.exe);
        cmd.args(&self.launcher.args)
            .env(WORKER_ENV, wid.to_string())
            .env("SHMLEASE_CHAOS_SEED", self.rng.next_u64().to_string())
            .env("SHMLEASE_CHAOS_DIR", &self.dir)
            .env("SHMLEASE_CHAOS_TABLE", &self.table_loc)
            .env("SHMLEASE_CHAOS_LAYOUT", &self.layout)
            .env("SHMLEASE_CHAOS_MODE", mode.as_str())
            .env("SHMLEASE_CHAOS_END", self.end.to_string())
            .env("SHMLEASE_CHAOS_PARENT", std::process::id().to_string())
            .env("SHMLEASE_CHAOS_MAX_TTL_MS", cfg.max_ttl_ms.to_string())
            .env("SHMLEASE_CHAOS_FAULT", &cfg.fault)
            .env("SHMLEASE_CHAOS_THREADS", cfg.threads.to_string())
            .env("SHMLEASE_CHAOS_FORK_CHILDREN", cfg.fork_children.to_string())
            .env("SHMLEASE_CHAOS_ZOMBIE", if zombie { "1" } else { "0" })
            .env("SHMLEASE_CHAOS_ROSTER", &self.roster_path)
            .env_remove("SHMLEASE_IDENTITY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        if mode == Mode::Fallback {
            // The library's fallback holder identity (process start time), as on
            // kernels without pidfd inodes.
            cmd.env("SHMLEASE_IDENTITY", "start-time");
            if cfg.no_pidfd {
                cmd.env("SHMLEASE_CHAOS_NO_PIDFD", "1");
            }
        }
        let child = cmd.spawn().expect("starting a worker");
        let pid = child.id();
        self.live.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        self.fates.insert(
            wid,
            WorkerFate { pid, mode, spawned: mono(), zombie, ..WorkerFate::default() },
        );
        self.procs.push(Proc { wid, pid, handle: Handle::Child(child), role, stopped_at: None });
        self.bump(mode, "processes");
        if zombie {
            self.bump(mode, "processes whose main thread exits");
        }
    }

    /// Replaces a dead unit root or filler (not after the end of the run).
    fn replace(&mut self, role: Role) {
        if mono() >= self.end {
            return;
        }
        match role {
            Role::Unit(i) => self.spawn(role, self.units[i]),
            Role::Filler => self.spawn(role, Mode::Filler),
            Role::Forked => {}
        }
    }

    /// Whether `wid` is doomed: an ancestor was killed, so its parent-death signal is
    /// on its way (or has arrived). Such a process is never picked for a kill or a stop:
    /// its death could come before the time we would record.
    fn doomed(&self, wid: u64) -> bool {
        ancestor_kill(&self.fates, wid).is_some()
    }

    /// Records the death of `p` that we saw but did not cause with our own SIGKILL,
    /// and replaces it if it was a unit root or the filler.
    fn died(&mut self, p: &Proc, status: String, now: u64) {
        self.live.lock().unwrap_or_else(|l| l.into_inner()).retain(|&q| q != p.pid);
        let cascade = ancestor_kill(&self.fates, p.wid);
        let f = self.fates.get_mut(&p.wid).expect("fate");
        f.reaped = Some(now);
        f.status = Some(status);
        if let Some((t_stop, _)) = p.stopped_at {
            f.stops.push((t_stop, now));
        }
        let mode = f.mode;
        if let Some((ancestor, t)) = cascade {
            f.killed = Some((t, now));
            f.cascade = Some(ancestor);
            self.count("killed with their parent (PR_SET_PDEATHSIG)");
            self.bump(mode, "killed with their parent");
        } else if now < self.end {
            self.count("workers that exited early");
            self.bump(mode, "exited early");
        }
        self.replace(p.role);
    }

    /// Takes in the forked processes announced on the roster since the last call.
    fn read_roster(&mut self) {
        let Some(r) = self.roster.as_mut() else { return };
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            self.roster_buf.extend_from_slice(&chunk[..n]);
        }
        while let Some(nl) = self.roster_buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.roster_buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let f: Vec<u64> = text.split_whitespace().filter_map(|s| s.parse().ok()).collect();
            let &[wid, pid, parent, start_ticks, t] = f.as_slice() else {
                self.count("unparsable roster lines");
                continue;
            };
            let pid = pid as u32;
            // The pid is only ours if the process there started when ours said it did.
            let fd = pidfd_open(pid).filter(|_| proc_stat(pid).is_some_and(|s| s.1 == start_ticks));
            let fate = WorkerFate {
                pid,
                mode: Mode::Fork,
                spawned: t,
                parent: Some(parent),
                ..WorkerFate::default()
            };
            self.fates.insert(wid, fate);
            self.bump(Mode::Fork, "processes");
            self.bump(
                Mode::Fork,
                if parent < 1_000_000 { "forked children" } else { "forked grandchildren" },
            );
            match fd {
                Some(fd) => self.procs.push(Proc {
                    wid,
                    pid,
                    handle: Handle::Pidfd(fd),
                    role: Role::Forked,
                    stopped_at: None,
                }),
                None => {
                    // Already gone by the time we looked (or its pid reused since).
                    let p = Proc {
                        wid,
                        pid,
                        handle: Handle::Gone,
                        role: Role::Forked,
                        stopped_at: None,
                    };
                    self.died(&p, "gone before the controller saw it".into(), mono());
                }
            }
        }
    }

    /// Notices the processes that died on their own (or of a parent's death).
    fn poll_exits(&mut self, children_too: bool) {
        let mut i = 0;
        while i < self.procs.len() {
            let p = &mut self.procs[i];
            if !children_too && matches!(p.handle, Handle::Child(_)) {
                i += 1;
                continue;
            }
            match p.try_exit() {
                Some(st) => {
                    let p = self.procs.swap_remove(i);
                    self.died(&p, st, mono());
                }
                None => i += 1,
            }
        }
    }

    /// SIGKILLs a random live process (not a doomed one) and waits for its death.
    fn kill_one(&mut self) {
        let candidates: Vec<usize> =
            (0..self.procs.len()).filter(|&i| !self.doomed(self.procs[i].wid)).collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.rng.below(candidates.len() as u64) as usize];
        let mut p = self.procs.swap_remove(i);
        let t_sent = mono();
        p.signal(libc::SIGKILL);
        let st = p.wait_exit();
        let t_dead = mono();
        self.live.lock().unwrap_or_else(|l| l.into_inner()).retain(|&q| q != p.pid);
        let f = self.fates.get_mut(&p.wid).expect("fate");
        f.killed = Some((t_sent, t_dead));
        f.reaped = Some(t_dead);
        f.status = Some(st);
        if let Some((t_stop, _)) = p.stopped_at {
            f.stops.push((t_stop, t_dead));
        }
        let mode = f.mode;
        self.count("kills (SIGKILL)");
        self.bump(mode, "kills");
        self.replace(p.role);
    }

    /// SIGSTOPs a random running process for longer than any TTL.
    fn stop_one(&mut self) {
        let candidates: Vec<usize> = (0..self.procs.len())
            .filter(|&i| self.procs[i].stopped_at.is_none() && !self.doomed(self.procs[i].wid))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.rng.below(candidates.len() as u64) as usize];
        let max_ttl_ns = self.cfg.max_ttl_ms * 1_000_000;
        let mut pause = self.rng.range(max_ttl_ns + 5_000_000, 4 * max_ttl_ns + 5_000_000);
        let mode = self.fates[&self.procs[i].wid].mode;
        if mode == Mode::Fair && self.rng.pct(20) {
            // Past the TTL of a place in a fair queue: the waiter loses its place.
            let place = shmlease::PLACE_TTL.as_nanos() as u64;
            pause = self.rng.range(place + 100_000_000, place + 1_000_000_000);
            self.count("long stops (SIGSTOP > place TTL, fair)");
        }
        let p = &mut self.procs[i];
        let t = mono();
        p.signal(libc::SIGSTOP);
        p.stopped_at = Some((t, t + pause));
        self.count("stops (SIGSTOP > max TTL)");
        self.bump(mode, "stops");
    }

    /// Counts, per mode, the holder identities the table records for live leases (so
    /// that a run shows which identity the library really used, e.g. `fallback`'s).
    fn sample_identities(&mut self, table: &LeaseTable) {
        let Ok(list) = table.list() else { return };
        let grants =
            list.into_iter().filter(|i| i.state == LeaseState::Held).flat_map(|i| i.grants);
        for grant in grants {
            let Some(h) = grant.holder.filter(|h| !h.detached) else { continue };
            let Some(p) = self.procs.iter().find(|p| p.pid == h.pid) else { continue };
            let mode = self.fates[&p.wid].mode;
            let kind = match h.identity {
                ProcessIdentity::StartTime(_) => "holder identity sampled: start time",
                ProcessIdentity::PidfdInode(_) => "holder identity sampled: pidfd inode",
                _ => "holder identity sampled: unknown",
            };
            self.bump(mode, kind);
        }
    }

    /// SIGCONTs the stopped processes whose stop is over (all of them, with `all`).
    fn continue_due(&mut self, now: u64, all: bool) {
        for p in self.procs.iter_mut() {
            if let Some((t_stop, cont_at)) = p.stopped_at {
                if all || now >= cont_at {
                    p.signal(libc::SIGCONT);
                    self.fates.get_mut(&p.wid).expect("fate").stops.push((t_stop, mono()));
                    p.stopped_at = None;
                }
            }
        }
    }
}

/// Runs the chaos with `cfg`, starting workers with `launcher`, then checks everything.
pub fn run(cfg: &Config, launcher: &Launcher) -> Report {
    if let Err(e) = cfg.validate() {
        panic!("bad chaos configuration: {e}");
    }
    let dir = match &cfg.dir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("shmlease-chaos-{}-{}", std::process::id(), mono()))
        }
    };
    std::fs::create_dir_all(&dir).expect("creating the run directory");
    let layout = cfg.layout();
    let all_names = layout.all();
    let own_table = cfg.table.is_none();
    let table_loc = cfg.table.clone().unwrap_or_else(|| dir.join("table").display().to_string());
    let opts = TableOptions::new().capacity(cfg.capacity());
    let table = LeaseTable::open_or_create(Location::from(table_loc.as_str()), &opts)
        .expect("creating the table");
    Records::create(&dir.join("records"), all_names.len()).expect("creating the record file");
    let mut report = Report {
        dir: dir.clone(),
        mode: cfg.mode.as_str().into(),
        load: (loadavg(), String::new()),
        capacity: table.capacity(),
        ..Report::default()
    };

    // Fork trees announce each forked process on a FIFO; the orphans of a killed
    // opener come to us (child subreaper), so that we can reap them.
    let forks = cfg.modes().contains(&Mode::Fork);
    let roster_path = dir.join("roster");
    let mut roster = None;
    if forks {
        let c = CString::new(roster_path.as_os_str().as_bytes()).expect("roster path");
        // SAFETY: mkfifo with a NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            panic!("mkfifo {}: {}", roster_path.display(), std::io::Error::last_os_error());
        }
        let r = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&roster_path)
            .expect("opening the roster FIFO");
        roster = Some(r);
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes a flag and has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    }

    // Watchdog: if the run overstays, kill every worker we started and abort (forked
    // workers die with their parents: parent-death signals all the way down).
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
                        // SAFETY: kill(2) of a child we have not reaped.
                        unsafe { libc::kill(p as i32, libc::SIGKILL) };
                    }
                    eprintln!("chaos: watchdog: run exceeded {limit:?}; aborting");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }

    let mut rng = Rng::new(cfg.seed);
    let units = unit_modes(cfg, &mut rng);
    let start = mono();
    let end = start + cfg.duration.as_nanos() as u64;
    let mut ctl = Ctl {
        cfg,
        launcher,
        dir: dir.clone(),
        table_loc: table_loc.clone(),
        layout: layout.encode(),
        roster_path,
        roster,
        roster_buf: Vec::new(),
        end,
        rng,
        units: units.clone(),
        fates: BTreeMap::new(),
        procs: Vec::new(),
        next_wid: 0,
        live,
        counts: BTreeMap::new(),
        per_mode: BTreeMap::new(),
    };
    for (i, &m) in units.iter().enumerate() {
        ctl.spawn(Role::Unit(i), m);
    }
    if cfg.has_filler() {
        ctl.spawn(Role::Filler, Mode::Filler);
    }
    let mut next_kill = start + ctl.rng.exp_ns(cfg.kill_rate);
    let mut next_stop = start + ctl.rng.exp_ns(cfg.stop_rate);
    let mut next_poll = start;
    let mut next_sample = start;
    let mut warmed = false;
    let mut next_progress = start + cfg.progress.as_nanos() as u64;
    loop {
        let now = mono();
        if now >= end {
            break;
        }
        ctl.continue_due(now, false);
        ctl.read_roster();
        // Deaths we did not cause: forked processes every round (their deaths must be
        // seen promptly: that is when their leases become reclaimable), our children
        // every 10 ms (panics, errors).
        let children_too = now >= next_poll;
        if children_too {
            next_poll = now + 10_000_000;
        }
        ctl.poll_exits(children_too);
        if now >= next_kill {
            next_kill = now + ctl.rng.exp_ns(cfg.kill_rate);
            ctl.kill_one();
        }
        if now >= next_stop {
            next_stop = now + ctl.rng.exp_ns(cfg.stop_rate);
            ctl.stop_one();
        }
        if now >= next_sample {
            // From the moment the filler has filled the table (without one: after 1 s).
            next_sample = now + 100_000_000;
            let names = table.info().names;
            warmed |= if cfg.has_filler() {
                names as usize >= cfg.fill()
            } else {
                now >= start + 1_000_000_000
            };
            if warmed {
                report.occupancy.push(names);
            }
            ctl.sample_identities(&table);
        }
        if cfg.progress > Duration::ZERO && now >= next_progress {
            next_progress = now + cfg.progress.as_nanos() as u64;
            let c = |k: &str| ctl.counts.get(k).copied().unwrap_or(0);
            eprintln!(
                "chaos: {:>5.0}s/{:.0}s processes {} kills {} stops {} load {}",
                (now - start) as f64 / 1e9,
                cfg.duration.as_secs_f64(),
                ctl.procs.len(),
                c("kills (SIGKILL)"),
                c("stops (SIGSTOP > max TTL)"),
                loadavg()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Wind down: continue everyone, let them finish their round and exit.
    ctl.continue_due(mono(), true);
    let give_up = mono() + WIND_DOWN.as_nanos() as u64;
    while !ctl.procs.is_empty() {
        ctl.read_roster();
        ctl.poll_exits(true);
        if mono() > give_up {
            for mut p in std::mem::take(&mut ctl.procs) {
                p.signal(libc::SIGKILL);
                let st = p.wait_exit();
                let f = ctl.fates.get_mut(&p.wid).expect("fate");
                f.reaped = Some(mono());
                f.status = Some(st);
                f.hung = true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let all_gone = mono();
    report.elapsed = Duration::from_nanos(all_gone - start);
    done.store(true, Ordering::SeqCst);
    if forks {
        // Orphans that died before they could announce themselves are ours to reap
        // (every child we started ourselves is reaped by now).
        // SAFETY: waitpid with a null status pointer; prctl takes a flag.
        unsafe {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0);
        }
        let _ = std::fs::remove_file(&ctl.roster_path);
    }
    let fates = std::mem::take(&mut ctl.fates);
    report.counts.insert("workers started", fates.len() as u64);
    for k in ["kills (SIGKILL)", "stops (SIGSTOP > max TTL)", "workers that exited early"] {
        report.counts.insert(k, 0);
    }
    report.counts.extend(std::mem::take(&mut ctl.counts));
    report.modes = std::mem::take(&mut ctl.per_mode);

    // Final state: once every worker is gone and the longest TTL has passed, no name
    // may still be held, every permit of a name is free (N grants at once for a name
    // with N permits), and a fresh grant must carry a token above all seen before (the
    // smallest of the N is recorded).
    std::thread::sleep(Duration::from_nanos(cfg.longest_ttl_ns()) + Duration::from_millis(20));
    let mut final_tokens = HashMap::new();
    let final_state = |report: &mut Report, name: &str, text: String| {
        report.violations.push(format!("final-state: {text}"));
        if let Some(m) = layout.mode_of(name) {
            let c = report.modes.entry(m.as_str()).or_default();
            *c.entry("violations".into()).or_default() += 1;
            *c.entry("violations: final-state".into()).or_default() += 1;
        }
    };
    for name in &all_names {
        match table.get(name) {
            Ok(Some(info)) if info.state == LeaseState::Held => final_state(
                &mut report,
                name,
                format!(
                    "{name} still held (token {}, holder {:?}, remaining {:?}) after every worker is gone and {} ms passed",
                    info.token, info.holder, info.remaining, cfg.longest_ttl_ns() / 1_000_000
                ),
            ),
            Ok(_) => {}
            Err(e) => final_state(&mut report, name, format!("get({name}) failed: {e}")),
        }
        let permits = layout.permits(name);
        let opts = AcquireOptions::new().permits(permits).expect("permits of the layout");
        let mut held = Vec::new();
        for k in 0..permits {
            match table.acquire_with(name, Duration::from_millis(10), &opts) {
                Ok(l) => held.push(l),
                Err(e) => {
                    let what =
                        format!("acquiring permit {} of {permits} of {name} failed: {e}", k + 1);
                    final_state(&mut report, name, what);
                    break;
                }
            }
        }
        if let Some(min) = held.iter().map(|l| l.token()).min() {
            final_tokens.insert(name.clone(), min);
        }
        for l in held {
            let _ = l.release();
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
            "worker {wid} mode {} pid {} parent {:?} spawned {} killed {:?} cascade {:?} reaped {:?} status {:?} hung {} zombie {} stops {:?}",
            f.mode.as_str(), f.pid, f.parent, f.spawned, f.killed, f.cascade, f.reaped, f.status, f.hung, f.zombie, f.stops
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
