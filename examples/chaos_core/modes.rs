//! How each mode's processes use the table: one stream of rounds (`classic`, `herd`,
//! `full`, `fallback`, `permits`, `shared`, `fair` with a queue watcher), several threads on clones of one `LeaseTable` (`threads`), a
//! helper thread that outlives the main thread (`fallback`), a fork tree on one
//! inherited `LeaseTable` (`fork`), and the filler that keeps a `full` table full.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use shmlease::{LeaseTable, Location};

use super::worker::{
    end_lease, log_grant, log_refusal, logln, run_stream, saw_other, watch_queue, Log, Round,
    WorkerEnv,
};
use super::{mono, proc_stat, Mode, Records, Rng, FILLER_TTL_MS};

/// Runs the process `w` describes, until the end of the run.
pub(crate) fn run_process(w: &WorkerEnv) {
    match w.mode {
        Mode::Fork => run_opener(w),
        Mode::Threads => run_threads(w),
        Mode::Filler => run_filler(w),
        Mode::Fallback if w.zombie && is_main_thread() => run_zombie(w),
        _ => run_single(w),
    }
}

fn open_table(w: &WorkerEnv) -> LeaseTable {
    LeaseTable::open(Location::from(w.table.as_str())).expect("opening the table")
}

fn open_records(w: &WorkerEnv) -> Records {
    Records::open(&w.dir.join("records"), w.layout.total()).expect("mapping the records")
}

fn is_main_thread() -> bool {
    // SAFETY: gettid and getpid have no preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

fn round<'a>(
    w: &WorkerEnv,
    table: &'a LeaseTable,
    records: &'a Records,
    names: &'a [(usize, String)],
    pid: u32,
) -> Round<'a> {
    Round {
        table,
        records,
        names,
        permits: names.iter().map(|(_, name)| w.layout.permits(name)).collect(),
        kinds: names.iter().map(|(_, name)| w.layout.kind(name)).collect(),
        extra_permit: w.extra_permit,
        shared_as_exclusive: w.shared_as_exclusive,
        fair: w.mode == Mode::Fair,
        barge: w.barge,
        watch: None,
        pid,
        max_ttl_ms: w.max_ttl_ms,
        lie_ns: w.lie_ns,
        herd: w.mode == Mode::Herd,
        keep_alive: true,
        quick: matches!(w.mode, Mode::Fork | Mode::Herd | Mode::Full),
        fresh_pct: if w.mode == Mode::Full { 30 } else { 0 },
        fresh_prefix: format!("fresh-w{}-", w.wid),
        fresh_next: std::cell::Cell::new(0),
    }
}

/// `classic`, `herd`, `full`, `permits`, `shared`, `fair`, and `fallback` without the
/// main-thread exit: one process, one table handle, one stream of rounds; in `fair`
/// mode, with a thread watching the queue ([`watch_queue`]), which logs to the same log.
fn run_single(w: &WorkerEnv) {
    let (table, records) = (open_table(w), open_records(w));
    let names = w.layout.of(w.mode);
    let stem = format!("w{}", w.wid);
    let mut log = Log::open(&w.dir, &stem);
    let watch = AtomicUsize::new(0);
    let mut r = round(w, &table, &records, &names, std::process::id());
    std::thread::scope(|s| {
        if w.mode == Mode::Fair {
            r.watch = Some(&watch);
            let (table, names, watch) = (&table, &names, &watch);
            let log = Log::open(&w.dir, &stem);
            s.spawn(move || watch_queue(table, names, watch, log, w.end));
        }
        run_stream(&r, &mut Rng::new(w.seed), &mut log, (w.wid, w.mode, w.end), &mut |_| {});
    });
}

/// `threads`: one table opened once; each thread an independent worker on its own
/// clone of it, with its own log `w<id>.t<k>.log`. A kill hits them all at once.
fn run_threads(w: &WorkerEnv) {
    let table = open_table(w);
    let records = open_records(w);
    let names = w.layout.of(Mode::Threads);
    let pid = std::process::id();
    let mut rng = Rng::new(w.seed);
    std::thread::scope(|s| {
        for k in 0..w.threads {
            let table = table.clone();
            let seed = rng.next_u64();
            let (records, names) = (&records, &names);
            s.spawn(move || {
                let mut log = Log::open(&w.dir, &format!("w{}.t{k}", w.wid));
                let r = round(w, &table, records, names, pid);
                run_stream(&r, &mut Rng::new(seed), &mut log, (w.wid, w.mode, w.end), &mut |_| {});
            });
        }
    });
}

/// `fallback` with a main-thread exit: a helper thread works (takes, renews, releases
/// leases) while the main thread ends. The process is alive, but `/proc/PID/stat` then
/// shows state `Z`: the start-time identity must not take that for death. The helper
/// logs `M` once it has seen the `Z`, and ends the process at the end of the run.
fn run_zombie(w: &WorkerEnv) {
    let mut rng = Rng::new(w.seed);
    let seed = rng.next_u64();
    let w = w.clone();
    std::thread::spawn(move || {
        let (table, records) = (open_table(&w), open_records(&w));
        let names = w.layout.of(Mode::Fallback);
        let mut log = Log::open(&w.dir, &format!("w{}", w.wid));
        let pid = std::process::id();
        let r = round(&w, &table, &records, &names, pid);
        let mut seen = false;
        let mut watch = |log: &mut Log| {
            if !seen && proc_stat(pid).is_some_and(|s| s.0 == b'Z') {
                seen = true;
                logln!(log, "M {}", mono());
            }
        };
        run_stream(&r, &mut Rng::new(seed), &mut log, (w.wid, w.mode, w.end), &mut watch);
        std::process::exit(0);
    });
    std::thread::sleep(Duration::from_micros(rng.below(20_000)));
    // End the main thread alone. `pthread_exit` would unwind through the Rust runtime's
    // frames below us, which aborts the process (to `catch_unwind` a forced unwind is a
    // foreign exception); the `exit` system call (not `exit_group`), which is what
    // `pthread_exit` ends in, does the same without unwinding.
    // SAFETY: ends only this thread. The helper owns everything it uses, and this
    // thread's stack, never unmapped for a main thread, is never returned to.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("the main thread has exited");
}

// ------------------------------------------------------------------------------------
// fork
// ------------------------------------------------------------------------------------

/// What every process of a fork tree shares: the table opened once by the opener, the
/// record mapping, and the roster FIFO on which each forked process announces itself
/// (`wid pid parent-wid start-time mono`) before it touches anything.
struct Tree<'a> {
    w: &'a WorkerEnv,
    table: LeaseTable,
    records: Records,
    roster: File,
    names: Vec<(usize, String)>,
}

/// `fork`: the opener opens the table once, then keeps `fork_children` children forked
/// (re-forking when one dies), each running the loop on the inherited `LeaseTable`;
/// half of them fork a grandchild that does the same. The opener runs the loop too,
/// without keep-alives, so that it never has a second thread when it forks.
fn run_opener(w: &WorkerEnv) {
    let roster = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&w.roster)
        .expect("opening the roster FIFO");
    // SAFETY: F_SETFL on a descriptor we own; blocking writes from here on.
    unsafe { libc::fcntl(roster.as_raw_fd(), libc::F_SETFL, 0) };
    let tree = Tree {
        w,
        table: open_table(w),
        records: open_records(w),
        roster,
        names: w.layout.of(Mode::Fork),
    };
    let pid = std::process::id();
    let mut log = Log::open(&w.dir, &format!("w{}", w.wid));
    let mut forks = Rng::new(w.seed ^ 0xF0F0);
    let mut children: Vec<i32> = Vec::new();
    let base = (w.wid + 1) * 1_000_000;
    let mut next = 1u64;
    let mut between = |_: &mut Log| {
        reap(&mut children, false);
        while children.len() < w.fork_children && mono() < w.end && next < 100_000 {
            let wid = base + next * 10;
            next += 1;
            if let Some(p) = fork_worker(&tree, wid, w.wid, 1, forks.next_u64()) {
                children.push(p);
            }
        }
    };
    between(&mut log);
    let mut r = round(w, &tree.table, &tree.records, &tree.names, pid);
    r.keep_alive = false;
    run_stream(&r, &mut Rng::new(w.seed), &mut log, (w.wid, w.mode, w.end), &mut between);
    reap(&mut children, true);
}

/// Reaps dead children (all of them, waiting, with `all`).
fn reap(children: &mut Vec<i32>, all: bool) {
    while !children.is_empty() {
        let mut status = 0;
        let flags = if all { 0 } else { libc::WNOHANG };
        // SAFETY: waitpid with a valid status pointer.
        let p = unsafe { libc::waitpid(-1, &mut status, flags) };
        if p > 0 {
            children.retain(|&c| c != p);
        } else if p == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Forks a worker `wid` of the tree (depth 1: a child, which may fork a grandchild;
/// depth 2: a grandchild). In the parent: the child's pid.
fn fork_worker(tree: &Tree<'_>, wid: u64, parent_wid: u64, depth: u32, seed: u64) -> Option<i32> {
    // SAFETY: getpid has no preconditions.
    let ppid = unsafe { libc::getpid() };
    // SAFETY: the caller is single-threaded (the opener never starts a thread; a child
    // forks its grandchild before it starts any), so the child inherits no lock held
    // by another thread.
    match unsafe { libc::fork() } {
        0 => {
            // A panic must never unwind into the parent's frames copied above us.
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                forked_worker(tree, wid, parent_wid, ppid, depth, seed)
            })) {
                Ok(()) => 0,
                Err(_) => 101,
            };
            // SAFETY: _exit ends the process without running the parent's atexit
            // handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        p if p > 0 => Some(p),
        _ => None,
    }
}

fn forked_worker(tree: &Tree<'_>, wid: u64, parent_wid: u64, ppid: i32, depth: u32, seed: u64) {
    let w = tree.w;
    // Die with the parent, like every process of the harness; and if the parent is
    // already gone (we would miss its death signal), leave at once.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; getppid has no
    // preconditions.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: as above.
    if unsafe { libc::getppid() } != ppid {
        return;
    }
    let pid = std::process::id();
    let start = proc_stat(pid).map_or(0, |s| s.1);
    let line = format!("{wid} {pid} {parent_wid} {start} {}\n", mono());
    if (&tree.roster).write_all(line.as_bytes()).is_err() {
        return; // the controller is gone
    }
    if let Ok(err) = File::create(w.dir.join(format!("w{wid}.err"))) {
        // SAFETY: dup2 onto our own stderr.
        unsafe { libc::dup2(err.as_raw_fd(), 2) };
    }
    let mut log = Log::open(&w.dir, &format!("w{wid}"));
    let mut rng = Rng::new(seed);
    let mut kids = Vec::new();
    if depth == 1 && rng.pct(50) {
        if let Some(p) = fork_worker(tree, wid + 1, wid, 2, rng.next_u64()) {
            kids.push(p);
        }
    }
    // No more forks from here on: keep-alive threads are fine.
    let r = round(w, &tree.table, &tree.records, &tree.names, pid);
    run_stream(&r, &mut rng, &mut log, (wid, Mode::Fork, w.end), &mut |_| reap(&mut kids, false));
    reap(&mut kids, true);
}

// ------------------------------------------------------------------------------------
// The filler
// ------------------------------------------------------------------------------------

/// Keeps its names held (TTL `FILLER_TTL_MS`, renewed by keep-alives) so that the table
/// stays almost full; reacquires any it loses, and, after being killed, everything its
/// predecessor held (whose holder is then provably dead). Its grants are logged and
/// checked like everyone's.
fn run_filler(w: &WorkerEnv) {
    let (table, records) = (open_table(w), open_records(w));
    let names = w.layout.of(Mode::Filler);
    let pid = std::process::id();
    let mut log = Log::open(&w.dir, &format!("w{}", w.wid));
    let ttl_ns = FILLER_TTL_MS * 1_000_000;
    let ttl = Duration::from_nanos(ttl_ns);
    logln!(log, "B {} {pid} {} {}", w.wid, mono(), w.mode.as_str());
    let mut held: Vec<Option<(shmlease::Lease<'_>, u64)>> = names.iter().map(|_| None).collect();
    while mono() < w.end {
        for (slot, (ni, name)) in held.iter_mut().zip(&names) {
            match slot.take() {
                None => {
                    let t_a = mono();
                    match table.try_acquire(name, ttl) {
                        Ok(mut lease) => {
                            let g = mono();
                            let d_lo = log_grant(
                                &mut log,
                                name,
                                &lease,
                                "fill",
                                ttl_ns,
                                (t_a, g, 0),
                                w.lie_ns,
                            );
                            let token = lease.token();
                            logln!(log, "K {name} {token} {ttl_ns} {}", mono());
                            if let Err(e) = lease.keep_alive(ttl) {
                                let t = mono();
                                let kind = super::worker::error_kind(&e);
                                logln!(log, "E {name} {t} {t} {kind} keep_alive: {e}");
                            }
                            match records.write(*ni, token, pid, false).map_err(|e| e.0) {
                                Ok(()) => *slot = Some((lease, d_lo)),
                                Err(seen) => {
                                    let (_, writer) = records.read(*ni);
                                    saw_other(&mut log, name, token, seen, writer, &lease, d_lo);
                                    end_lease(&mut log, name, lease, "drop");
                                }
                            }
                        }
                        Err(e) => log_refusal(&mut log, name, &e, t_a),
                    }
                }
                Some((lease, d_lo)) => {
                    let token = lease.token();
                    let (seen, writer) = records.read(*ni);
                    if let Some(why) = lease.lost() {
                        logln!(log, "L {name} {token} {} {why:?}", mono());
                        end_lease(&mut log, name, lease, "drop");
                    } else if seen != token {
                        saw_other(&mut log, name, token, seen, writer, &lease, d_lo);
                        end_lease(&mut log, name, lease, "drop");
                    } else {
                        *slot = Some((lease, d_lo));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (slot, (_, name)) in held.iter_mut().zip(&names) {
        if let Some((lease, _)) = slot.take() {
            end_lease(&mut log, name, lease, "release");
        }
    }
    logln!(log, "Z {}", mono());
}
