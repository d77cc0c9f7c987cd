//! Helpers shared by the integration tests: unique scratch directories, child processes
//! that re-execute the current test binary in a "role", a watchdog that keeps a broken
//! test from hanging, raw access to table files, and the child roles themselves.
//!
//! A child is started as `current_exe() child_main --exact --ignored --nocapture` with
//! its role and parameters in `SHMLEASE_IT_*` environment variables; every test binary
//! that spawns children has an `#[ignore]`d `child_main` test that calls [`run_child`].
//! Children report to the parent with lines containing `@@KEY value` on stdout, and
//! with their exit code.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

mod election;
mod fair;
#[allow(unused_imports)] // only the election tests check runs
pub use election::{check_run, RunChecked};
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
pub mod kinds;
mod patterns;
mod permits;
mod permits_attacks;
pub mod procs;
mod shared;
mod shared_attacks;
use std::time::{Duration, Instant, SystemTime};

use shmlease::{AcquireOptions, Error, LeaseTable, TableOptions};

/// Environment variable naming the role a child runs.
pub const ROLE: &str = "SHMLEASE_IT_ROLE";
/// Prefix of every report line a child prints.
pub const MARK: &str = "@@";
/// Byte offset of slot 0 in a table file.
pub const HEADER_SIZE: u64 = 256;
/// Bytes per slot.
pub const SLOT_SIZE: u64 = 128;
/// Bit of a grant word's deadline half that says "a waiter sleeps on this slot".
pub const WAITERS_BIT: u64 = 1 << 63;

// ------------------------------------------------------------------------------------
// Scratch directories
// ------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, unique to this process and test, removed
/// (with everything in it) on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "shmlease-it-{}-{}-{}",
            std::process::id(),
            test,
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()
                % 1_000_000
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------------------
// Watchdog
// ------------------------------------------------------------------------------------

/// Kills every registered child and fails the whole test process if the test it guards
/// has not finished after `limit`. Dropping it (at the end of the test, or while a
/// failing test unwinds) disarms it.
pub struct Watchdog {
    stop: Option<Sender<()>>,
    pids: Arc<Mutex<Vec<i32>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(test: &str, limit: Duration) -> Watchdog {
        let (stop, stopped) = mpsc::channel::<()>();
        let pids: Arc<Mutex<Vec<i32>>> = Arc::default();
        let test = test.to_owned();
        let thread = {
            let pids = Arc::clone(&pids);
            std::thread::spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
                    eprintln!(
                        "WATCHDOG: test {test} still running after {limit:?}: killing its children"
                    );
                    for pid in pids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                        procs::kill_tree(*pid as u32);
                    }
                    // Give the test a moment to fail on its own (with a better message)
                    // now that its children are gone; then fail the whole process.
                    if let Err(RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(Duration::from_secs(10))
                    {
                        eprintln!("WATCHDOG: test {test} hangs: aborting the test process");
                        std::process::exit(101);
                    }
                }
            })
        };
        Watchdog { stop: Some(stop), pids, thread: Some(thread) }
    }

    fn register(&self, pid: i32) {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
    }

    fn unregister(&self, pid: i32) {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| *p != pid);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; a stale pid at worst yields ESRCH.
    unsafe { libc::kill(pid, sig) };
}

/// The state letter of `pid` in `/proc/PID/stat` (`R`, `S`, `T`, `Z`, ...).
pub fn proc_state(pid: i32) -> Option<u8> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    rest.split_ascii_whitespace().next()?.bytes().next()
}

// ------------------------------------------------------------------------------------
// Children
// ------------------------------------------------------------------------------------

/// A child process running a role of this test binary. Killed and reaped on drop if it
/// is still running, with every process it started.
pub struct Kid {
    pub label: String,
    child: Child,
    pids: Arc<Mutex<Vec<i32>>>,
    lines: Receiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

fn pump(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    tx: Option<Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
}

impl Kid {
    /// Starts `role` with `env` (names without the `SHMLEASE_IT_` prefix).
    pub fn spawn(wd: &Watchdog, label: &str, role: &str, env: &[(&str, String)]) -> Kid {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["child_main", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        procs::default_signals(&mut cmd);
        for (k, v) in env {
            cmd.env(format!("SHMLEASE_IT_{k}"), v);
            // The library's own knob (see src/identity.rs), passed as it is.
            if *k == "IDENTITY" {
                cmd.env("SHMLEASE_IDENTITY", v);
            }
            // Likewise the choice of 128-bit instructions (see src/sync.rs).
            if *k == "ATOMICS" {
                cmd.env("SHMLEASE_ATOMICS", v);
            }
        }
        let mut child = cmd.spawn().expect("spawning a child test process");
        wd.register(child.id() as i32);
        let (tx, lines) = mpsc::channel();
        let stdout: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        pump(child.stdout.take().unwrap(), Arc::clone(&stdout), Some(tx));
        pump(child.stderr.take().unwrap(), Arc::clone(&stderr), None);
        Kid {
            label: label.to_owned(),
            child,
            pids: Arc::clone(&wd.pids),
            lines,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the child printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        let out = self.stdout.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        let err = self.stderr.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        format!("--- {} (pid {}) stdout:\n{out}\n--- stderr:\n{err}\n---", self.label, self.pid())
    }

    /// The child's exit status if it has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.reaped(s);
            }
        }
        self.status
    }

    /// Every line the child printed on stdout so far.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What follows the key of every report line so far whose key ends with `key` (so
    /// `DONE` finds a forked child's `child-DONE` too), in the order printed.
    pub fn reports(&self, key: &str) -> Vec<String> {
        let lines = self.lines_so_far();
        let reports = lines.iter().filter_map(|line| line.split(MARK).nth(1));
        let keyed = reports.map(|r| r.split_once(' ').unwrap_or((r, "")));
        keyed.filter(|(k, _)| k.ends_with(key)).map(|(_, value)| value.to_owned()).collect()
    }

    /// Waits for a report line `@@KEY ...` and returns what follows `KEY `.
    pub fn expect(&mut self, key: &str, timeout: Duration) -> String {
        self.expect_any(&[key], timeout).1
    }

    /// Waits for a report line `@@KEY ...` with any of `keys`; returns the key and what
    /// follows it.
    pub fn expect_any(&mut self, keys: &[&str], timeout: Duration) -> (String, String) {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    for key in keys {
                        let pat = format!("{MARK}{key}");
                        if let Some(pos) = line.find(&pat) {
                            let rest = &line[pos + pat.len()..];
                            if rest.is_empty() || rest.starts_with(' ') {
                                return (key.to_string(), rest.trim().to_owned());
                            }
                        }
                    }
                }
                Err(e) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "{}: no `{MARK}{keys:?}` line within {timeout:?} ({e:?}; exit status {status:?})\n{}",
                        self.label,
                        self.transcript()
                    );
                }
            }
        }
    }

    /// Waits (polling, with a deadline) for the child to exit; kills it and panics on
    /// timeout.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.reaped(s);
                // Let the output pumps drain what the child printed last.
                std::thread::sleep(Duration::from_millis(20));
                return s;
            }
            if Instant::now() >= end {
                procs::kill_tree(self.pid() as u32);
                let s = self.child.wait().ok();
                if let Some(s) = s {
                    self.reaped(s);
                }
                panic!("{}: did not exit within {timeout:?}\n{}", self.label, self.transcript());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the child and asserts that it exited with code 0.
    pub fn wait_ok(&mut self, timeout: Duration) {
        let s = self.wait(timeout);
        assert_eq!(s.code(), Some(0), "{}: exit status {s:?}\n{}", self.label, self.transcript());
    }

    fn reaped(&mut self, s: ExitStatus) {
        self.status = Some(s);
        let pid = self.pid();
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| *p != pid);
    }

    /// Kills the child with SIGKILL (`kill -9`) and reaps it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait(LONG);
    }

    /// Sends a signal (only while the child is not yet reaped, so never to a reused pid).
    pub fn signal(&self, sig: i32) {
        assert!(self.status.is_none(), "{} was already reaped", self.label);
        signal(self.pid(), sig);
    }

    /// Waits until `/proc` shows the child in state `state`.
    pub fn wait_state(&self, state: u8, timeout: Duration) {
        let end = Instant::now() + timeout;
        while proc_state(self.pid()) != Some(state) {
            assert!(
                Instant::now() < end,
                "{} did not reach state {} within {timeout:?}",
                self.label,
                state as char
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.status.is_none() {
            procs::kill_tree(self.pid() as u32);
            if let Ok(s) = self.child.wait() {
                self.reaped(s);
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// Shorthands of the tests of names with permits, shared names and fair acquisition
// ------------------------------------------------------------------------------------

/// How long one step of a test may take before it fails: a child's report or exit, or
/// a state the test waits for.
pub const LONG: Duration = Duration::from_secs(60);
/// A TTL that outlives the test: for leases not meant to expire.
pub const TTL: Duration = Duration::from_secs(30);

/// A value for a child's environment.
pub fn s(v: impl ToString) -> String {
    v.to_string()
}

/// Acquisition options for a name with `n` permits.
pub fn permits(n: u32) -> AcquireOptions {
    AcquireOptions::new().permits(n).unwrap()
}

/// Acquisition options for a shared grant.
pub fn shared() -> AcquireOptions {
    AcquireOptions::new().shared(true)
}

/// A fresh table of `capacity` slots, in the file `t` of `dir`.
pub fn table(dir: &Scratch, capacity: u32) -> LeaseTable {
    LeaseTable::create(dir.path("t"), &TableOptions::new().capacity(capacity)).unwrap()
}

/// Runs a herd of `role` on the table file `t` of `dir` with the parameters `env`,
/// counting in the file `counters` of `dir` (`words` words, created here): three
/// members, the second and third forking a twin (`FORK=1`) that shares their table
/// handle, so six processes. Waits for every one to end well, each with a `DONE` report
/// (`child-DONE` from a twin) whose last number, its violations, is 0. Returns the
/// numbers of every `DONE` report, and every token granted.
pub fn run_forking_herd(
    wd: &Watchdog,
    dir: &Scratch,
    role: &str,
    words: usize,
    env: &[(&str, String)],
) -> (Vec<Vec<u64>>, Vec<u64>) {
    let members = (0..3).map(|i| (format!("herd-{i}"), vec![("FORK", s((i > 0) as u8))]));
    run_herd(wd, dir, role, words, env, members.collect())
}

/// Runs one `role` process per member (its label, and parameters of its own besides
/// `env`) on the table file `t` of `dir`, counting in the file `counters` of `dir`
/// (`words` words, created here); waits for every one to end well with a `DONE` report
/// (and its forked twin's `child-DONE`, with `FORK=1`) whose last number, its
/// violations, is 0. Returns the numbers of every `DONE` report, and every token.
fn run_herd(
    wd: &Watchdog,
    dir: &Scratch,
    role: &str,
    words: usize,
    env: &[(&str, String)],
    members: Vec<(String, Vec<(&str, String)>)>,
) -> (Vec<Vec<u64>>, Vec<u64>) {
    let counters = dir.path("counters");
    SharedWords::create(&counters, words);
    let mut herd: Vec<(Kid, usize)> = members
        .into_iter()
        .map(|(label, own)| {
            let forks = own.iter().any(|(k, v)| *k == "FORK" && v == "1") as usize;
            let mut e =
                vec![("TABLE", s(dir.path("t").display())), ("COUNTERS", s(counters.display()))];
            e.extend(own);
            e.extend(env.iter().cloned());
            (Kid::spawn(wd, &label, role, &e), 1 + forks)
        })
        .collect();
    let (mut dones, mut tokens) = (Vec::new(), Vec::new());
    for (k, reports) in &mut herd {
        for _ in 0..*reports {
            let (key, value) = k.expect_any(&["DONE", "child-DONE"], LONG);
            let v: Vec<u64> = value.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(v.last(), Some(&0), "{key}: violations\n{}", k.transcript());
            dones.push(v);
        }
        k.wait_ok(LONG);
        tokens.extend(tokens_of(k));
    }
    (dones, tokens)
}

/// The shortest TTL the library grants with the coarse clock: 256 of its ticks (see
/// `src/table/mod.rs`), 1.024 s where a tick is 4 ms.
pub fn coarse_clock_ttl() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    assert_eq!(unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32) * 256
}

/// Runs four `role` processes on the table in `dir` with `env`, at once, each reaching
/// a name by another path of the library: TTLs of 10 s (grants on the coarse-clock
/// fast path) and of three quarters of [`coarse_clock_ttl`] (too short for it: the
/// precise path; long enough that a holder descheduled on a loaded machine does not
/// outlive its grant, which would count as one too many inside: 20 ms did in CI), each
/// with the inline 128-bit instructions and with portable-atomic's
/// (`SHMLEASE_ATOMICS=portable`, whose CAS is no fence by itself). Returns each one's
/// `DONE` report and every token.
pub fn run_mixed_path_herd(
    wd: &Watchdog,
    dir: &Scratch,
    role: &str,
    words: usize,
    env: &[(&str, String)],
) -> (Vec<Vec<u64>>, Vec<u64>) {
    let precise = s(coarse_clock_ttl().as_millis() * 3 / 4);
    let fast = s(10_000);
    let paths =
        [(&fast, "inline"), (&precise, "inline"), (&fast, "portable"), (&precise, "portable")];
    let members = paths.iter().enumerate().map(|(i, (ttl, atomics))| {
        let own = vec![("TTL_MS", s(ttl)), ("ATOMICS", s(atomics))];
        (format!("herd-{i}-{ttl}ms-{atomics}"), own)
    });
    run_herd(wd, dir, role, words, env, members.collect())
}

/// Starts two `permit_hold` children on the table at `path`, each taking a permit of
/// "pool" (of 2) for 600 s and keeping it until killed, with the parameters `extra`
/// besides; returns them once both have their permit, with their tokens.
pub fn two_permit_holders(
    wd: &Watchdog,
    path: &Path,
    extra: &[(&str, String)],
) -> (Vec<Kid>, Vec<u64>) {
    let mut env = vec![
        ("TABLE", s(path.display())),
        ("NAME", s("pool")),
        ("PERMITS", s(2)),
        ("TTL_MS", s(600_000)),
        ("ACTION", s("forever")),
    ];
    env.extend(extra.iter().cloned());
    let mut kids: Vec<Kid> =
        (0..2).map(|i| Kid::spawn(wd, &format!("h{i}"), "permit_hold", &env)).collect();
    let tokens = kids.iter_mut().map(|k| k.expect("GOT", LONG).parse().unwrap()).collect();
    (kids, tokens)
}

/// Starts a `rotate` child on the table at `path`: for 3 s it keeps `hold` leases,
/// releasing one at random (seeded by `seed`) and taking a name never used before on
/// every try, so idle slots are evicted and rebound all along.
pub fn start_churn(wd: &Watchdog, path: &Path, hold: u32, seed: u64) -> Kid {
    let env = [
        ("TABLE", s(path.display())),
        ("NAMES", s("unused")), // fresh names only
        ("HOLD", s(hold)),
        ("RUN_MS", s(3000)),
        ("FRESH", s(1)),
        ("SEED", s(seed)),
    ];
    Kid::spawn(wd, "churn", "rotate", &env)
}

/// Polls `done` every millisecond until it says yes; fails after [`LONG`], naming
/// `what` never happened.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + LONG;
    while !done() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every token of the `TOKENS t1,t2,...` report lines of `kid` (a forked child's
/// `child-TOKENS` among them), in the order reported.
pub fn tokens_of(kid: &Kid) -> Vec<u64> {
    let lists = kid.reports("TOKENS");
    lists
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect()
}

/// Fails if a token stands twice in `tokens` (a token is never granted twice for one
/// name).
pub fn assert_distinct(tokens: &[u64]) {
    let distinct: BTreeSet<u64> = tokens.iter().copied().collect();
    assert_eq!(distinct.len(), tokens.len(), "a token was granted twice");
}

// ------------------------------------------------------------------------------------
// Raw table files
// ------------------------------------------------------------------------------------

/// Reads the `u64` at `offset` of `path` (native byte order).
pub fn read_u64(path: &Path, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    File::open(path).unwrap().read_exact_at(&mut b, offset).unwrap();
    u64::from_ne_bytes(b)
}

/// Writes `value` at `offset` of `path` (native byte order) with `pwrite`.
pub fn write_u64(path: &Path, offset: u64, value: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&value.to_ne_bytes(), offset).unwrap();
}

/// Byte offset of the boot id in a table's header.
pub const BOOT_ID_OFFSET: u64 = 64;

/// Simulates a reboot: overwrites the boot id recorded in the table at `path` with one
/// that is not the current boot's (a different one for each `n`).
pub fn fake_reboot(path: &Path, n: u64) {
    let old = [read_u64(path, BOOT_ID_OFFSET), read_u64(path, BOOT_ID_OFFSET + 8)];
    let new = [old[0] ^ (0x0123_4567_89ab_cdef + n), old[1] ^ 0xfedc_ba98_7654_3210];
    write_u64(path, BOOT_ID_OFFSET, new[0]);
    write_u64(path, BOOT_ID_OFFSET + 8, new[1]);
}

/// Whether a waiter has announced itself on slot `slot` of the table at `path`.
pub fn waiters_announced(path: &Path, slot: u32) -> bool {
    read_u64(path, HEADER_SIZE + slot as u64 * SLOT_SIZE) & WAITERS_BIT != 0
}

/// Waits until a waiter announced itself on the slot of `name` (so a sleeping `acquire`
/// is known to be blocked, not merely started).
pub fn wait_for_waiter(table: &LeaseTable, path: &Path, name: &str, timeout: Duration) {
    let slot = table.get(name).unwrap().expect("name is bound").slot;
    let end = Instant::now() + timeout;
    while !waiters_announced(path, slot) {
        assert!(Instant::now() < end, "no waiter announced itself on {name} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Everything observable about a file, to prove that an operation left it untouched.
#[derive(Debug, PartialEq, Eq)]
pub struct FileState {
    pub bytes: Option<Vec<u8>>,
    pub len: u64,
    pub mode: u32,
    pub uid: u32,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
}

impl FileState {
    /// The state of `path` (not following a final symlink if `follow` is false).
    pub fn of(path: &Path, follow: bool) -> FileState {
        let m =
            if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) }.unwrap();
        let bytes = m.file_type().is_file().then(|| std::fs::read(path).unwrap());
        FileState {
            bytes,
            len: m.len(),
            mode: m.mode(),
            uid: m.uid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        }
    }
}

// ------------------------------------------------------------------------------------
// A small seeded RNG (xorshift64*)
// ------------------------------------------------------------------------------------

/// Deterministic pseudo-random numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ------------------------------------------------------------------------------------
// A shared scratch record file, mapped by several processes
// ------------------------------------------------------------------------------------

/// A small file of `u64` words mapped `MAP_SHARED` by every process that opens it: a
/// stand-in for "the resource the lease protects".
pub struct SharedWords {
    map: memmap2::MmapRaw,
    words: usize,
}

impl SharedWords {
    pub fn create(path: &Path, words: usize) {
        let f = File::create(path).unwrap();
        f.set_len(words as u64 * 8).unwrap();
    }

    pub fn open(path: &Path) -> SharedWords {
        let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let map = memmap2::MmapOptions::new().len(len).map_raw(&f).unwrap();
        SharedWords { map, words: len / 8 }
    }

    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words);
        // SAFETY: the mapping is page aligned and `words * 8` bytes long, so word `i` is
        // in bounds and 8-byte aligned; it lives as long as `self`. Every process only
        // ever accesses it atomically, and any bit pattern is a valid AtomicU64.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const AtomicU64) }
    }
}

// ------------------------------------------------------------------------------------
// Child side
// ------------------------------------------------------------------------------------

/// Prints a report line for the parent.
pub fn say(key: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    // One string, one write (stdout's line buffer is empty after each flush), so that a
    // report shorter than PIPE_BUF never interleaves with a forked twin's.
    let line = format!("\n{MARK}{key} {value}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn env(key: &str) -> String {
    std::env::var(format!("SHMLEASE_IT_{key}")).unwrap_or_else(|_| panic!("missing env {key}"))
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(format!("SHMLEASE_IT_{key}")).unwrap_or_else(|_| default.to_owned())
}

fn env_u64(key: &str) -> u64 {
    env(key).parse().unwrap_or_else(|_| panic!("env {key} is not a number"))
}

fn env_ms(key: &str) -> Duration {
    Duration::from_millis(env_u64(key))
}

/// Waits until `path` exists; false on timeout.
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Creates the file `path` (an event for children waiting on it).
pub fn touch(path: &Path) {
    File::create(path).unwrap();
}

/// Runs the role named in the environment, if any, and exits with its code. Without a
/// role (someone ran the ignored tests by hand) it returns and the test passes.
pub fn run_child() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let code = match role.as_str() {
        "hold" => role_hold(),
        "wait" => role_wait(),
        "hammer" => role_hammer(),
        "race_create" => role_race_create(),
        "fork" => role_fork(),
        "churn" => role_churn(),
        "create_loop" => role_create_loop(),
        "timens" => role_timens(),
        "timens_mid" => role_timens_mid(),
        "timens_probe" => role_timens_probe(),
        "fork_churn" => patterns::role_fork_churn(),
        "herd" => patterns::role_herd(),
        "main_exits" => patterns::role_main_exits(),
        "bind_crash" => patterns::role_bind_crash(),
        "timens_unshared" => patterns::role_timens_unshared(),
        "rotate" => patterns::role_rotate(),
        "fork_during_bind" => patterns::role_fork_during_bind(),
        "permit_herd" => permits::role_permit_herd(),
        "permit_hold" => permits::role_permit_hold(),
        "fair_wait" => fair::role_fair_wait(),
        "shared_herd" => shared::role_shared_herd(),
        "shared_hold" => shared::role_shared_hold(),
        "sa_herd" => shared_attacks::role_sa_herd(),
        "sa_hold" => shared_attacks::role_sa_hold(),
        "sa_crash" => shared_attacks::role_sa_crash(),
        "pa_herd" => permits_attacks::role_pa_herd(),
        "pa_revoker" => permits_attacks::role_pa_revoker(),
        "pa_fork_inherit" => permits_attacks::role_pa_fork_inherit(),
        "pa_racer" => permits_attacks::role_pa_racer(),
        "pa_crash" => permits_attacks::role_pa_crash(),
        "pa_round_waiter" => permits_attacks::role_pa_round_waiter(),
        "candidate" => election::role_candidate(),
        "observer" => election::role_observer(),
        "leader" => election::role_leader(),
        "standby_default_sigpipe" => election::role_standby_default_sigpipe(),
        other => {
            eprintln!("unknown role {other}");
            90
        }
    };
    std::process::exit(code);
}

fn open_table() -> LeaseTable {
    LeaseTable::open(PathBuf::from(env("TABLE"))).expect("child: opening the table")
}

/// Releases `lease`, armed to die at its crash point `step` (see `shmlease::fault`).
fn release_at(step: u32, lease: shmlease::Lease<'_>) -> Result<(), Error> {
    shmlease::fault::arm(shmlease::fault::Op::Release, step);
    lease.release()
}

/// Revokes `name`, armed to die at its crash point `step` (see `shmlease::fault`).
fn revoke_at(step: u32, table: &LeaseTable, name: &str) -> Result<(), Error> {
    shmlease::fault::arm(shmlease::fault::Op::Revoke, step);
    table.revoke(name).map(|_| ())
}

/// Busy-waits for `hold`: a holder at work, keeping its CPU.
fn spin_for(hold: Duration) {
    let until = Instant::now() + hold;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Reports every token granted: `{prefix}TOKENS t1,t2,...` (see [`tokens_of`]).
fn say_tokens(prefix: &str, tokens: &[u64]) {
    // Lines of at most 150 tokens (3,000 bytes), each one write(2) of less than
    // PIPE_BUF: a forked twin reports on the same pipe, and longer writes interleave.
    for chunk in tokens.chunks(150) {
        let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
        say(&format!("{prefix}TOKENS"), list.join(","));
    }
}

/// Runs `run(table, "")`; with `FORK=1` it first forks a twin that runs
/// `run(table, "child-")` on the inherited table handle (the prefix goes before its
/// report keys), and waits for it after its own run: a twin that fails makes it 30.
fn with_forked_twin(table: &LeaseTable, run: impl Fn(&LeaseTable, &str) -> i32) -> i32 {
    if env_or("FORK", "0") != "1" {
        return run(table, "");
    }
    // SAFETY: fork(2) has no preconditions; the twin runs `run` alone (no other thread
    // of this process, the test harness's, is used in it).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = run(table, "child-");
        // SAFETY: _exit ends the forked child without the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let code = run(table, "");
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        say("ERR", format!("forked child ended with {status:#x}"));
        return 30;
    }
    code
}

/// Takes `NAME` with `opts` for `TTL_MS`, reports `GOT token`, then with `ACTION`:
/// - `forever`: sleeps until killed;
/// - `renew_after_go`: waits for the file `GO`, renews, and reports `RENEWED token` or
///   `LOST reason`.
fn hold_with(opts: &AcquireOptions) -> i32 {
    let table = open_table();
    let lease = match table.acquire_with(&env("NAME"), env_ms("TTL_MS"), opts) {
        Ok(l) => l,
        Err(e) => {
            say("ERR", format!("acquire: {e:?}"));
            return 20;
        }
    };
    say("GOT", lease.token());
    match env("ACTION").as_str() {
        "forever" => {
            std::thread::sleep(Duration::from_secs(120));
            21
        }
        "renew_after_go" => {
            let go = PathBuf::from(env("GO"));
            assert!(wait_for_file(&go, Duration::from_secs(60)), "GO never came");
            match lease.renew(env_ms("TTL_MS")) {
                Ok(()) => say("RENEWED", lease.token()),
                Err(Error::Lost { reason, .. }) => say("LOST", format!("{reason:?}")),
                Err(e) => say("ERR", format!("renew: {e:?}")),
            }
            0
        }
        other => {
            say("ERR", format!("unknown action {other}"));
            22
        }
    }
}

/// Takes a lease and then does `ACTION` with it:
/// - `forever`: sleep until killed;
/// - `exit`: exit at once (with a detached lease it stays held);
/// - `release_on_go`: wait for the file `GO`, release, exit;
/// - `watch`: (with `KEEPALIVE=1`) wait for the keep-alive to report the loss;
/// - `stale`: wait for the file `GO` (the parent has taken the lease over meanwhile),
///   then check that the keep-alive (if any) noticed the loss, and that `renew` and
///   `release` report `Error::Lost`.
///
/// Parameters: `TABLE`, `NAME`, `TTL_MS`, `DETACH` (0/1), `KEEPALIVE` (0/1), `ACTION`,
/// `GO`.
fn role_hold() -> i32 {
    let table = open_table();
    let name = env("NAME");
    let ttl = env_ms("TTL_MS");
    let detach = env_or("DETACH", "0") == "1";
    let keepalive = env_or("KEEPALIVE", "0") == "1";
    let action = env("ACTION");
    let mut lease = match table.try_acquire(&name, ttl) {
        Ok(l) => l,
        Err(e) => {
            say("ERR", format!("try_acquire: {e}"));
            return 20;
        }
    };
    let token = lease.token();
    if keepalive {
        lease.keep_alive(ttl).expect("keep_alive");
    }
    let mut lease = if detach {
        let d = lease.detach().expect("detach");
        assert_eq!(d.token, token);
        None
    } else {
        Some(lease)
    };
    say("READY", token);
    let go = || {
        let p = PathBuf::from(env("GO"));
        assert!(wait_for_file(&p, Duration::from_secs(60)), "GO never came");
    };
    match action.as_str() {
        "forever" => {
            std::thread::sleep(Duration::from_secs(120));
            21
        }
        "exit" => {
            if let Some(l) = lease.take() {
                // Exiting with a process-bound lease: leave it held, as a crash would.
                std::mem::forget(l);
            }
            0
        }
        "release_on_go" => {
            go();
            let r = match lease.take() {
                Some(l) => l.release(),
                None => table.release(&name, token),
            };
            match r {
                Ok(()) => {
                    say("RELEASED", token);
                    0
                }
                Err(e) => {
                    say("ERR", format!("release: {e}"));
                    22
                }
            }
        }
        "watch" => {
            // Keep-alive: report how the lease was lost (the parent revokes it).
            let l = lease.as_ref().expect("watch needs a process-bound lease");
            match l.wait_lost(Some(Duration::from_secs(60))) {
                Some(reason) => {
                    say("LOST", format!("{reason:?}"));
                    if l.is_valid() {
                        say("ERR", "is_valid() after the keep-alive reported the loss");
                        return 27;
                    }
                    0
                }
                None => {
                    say("ERR", "keep-alive never reported a loss");
                    28
                }
            }
        }
        "stale" => {
            go();
            if keepalive {
                let l = lease.as_ref().expect("keep-alive needs a process-bound lease");
                match l.wait_lost(Some(Duration::from_secs(20))) {
                    Some(reason) => say("KEEPALIVE_LOST", format!("{reason:?}")),
                    None => {
                        say("ERR", "keep-alive did not notice the loss");
                        return 23;
                    }
                }
                if l.is_valid() {
                    say("ERR", "is_valid() after the lease was taken over");
                    return 24;
                }
            }
            let renewed = match &lease {
                Some(l) => l.renew(ttl),
                None => table.renew(&name, token, ttl).map(|_| ()),
            };
            match renewed {
                Err(Error::Lost { token: t, reason }) if t == token => {
                    say("RENEW_LOST", format!("{reason:?}"))
                }
                other => {
                    say("ERR", format!("stale renew gave {other:?}"));
                    return 25;
                }
            }
            let released = match lease.take() {
                Some(l) => l.release(),
                None => table.release(&name, token),
            };
            match released {
                Err(Error::Lost { token: t, reason }) if t == token => {
                    say("RELEASE_LOST", format!("{reason:?}"));
                    0
                }
                other => {
                    say("ERR", format!("stale release gave {other:?}"));
                    26
                }
            }
        }
        other => {
            say("ERR", format!("unknown action {other}"));
            29
        }
    }
}

/// Blocks in `acquire(NAME, TTL_MS, TIMEOUT_MS)`; reports `GOT token elapsed_ms`, then
/// releases. Exit 4 on `TimedOut`, 5 on any other error.
fn role_wait() -> i32 {
    wait_in(&open_table())
}

fn wait_in(table: &LeaseTable) -> i32 {
    let name = env("NAME");
    let ttl = env_ms("TTL_MS");
    let timeout = env_ms("TIMEOUT_MS");
    say("WAITING", std::process::id());
    let start = Instant::now();
    match table.acquire(&name, ttl, Some(timeout)) {
        Ok(lease) => {
            let elapsed = start.elapsed();
            say("GOT", format!("{} {}", lease.token(), elapsed.as_millis()));
            match lease.release() {
                Ok(()) => 0,
                Err(e) => {
                    say("ERR", format!("release: {e}"));
                    6
                }
            }
        }
        Err(Error::TimedOut { waited, .. }) => {
            say("TIMEDOUT", waited.as_millis());
            4
        }
        Err(e) => {
            say("ERR", format!("acquire: {e}"));
            5
        }
    }
}

/// Hammers the names in `NAMES` (comma separated) for `RUN_MS` after the file `GO`
/// appears. While holding a name it writes its token and pid into that name's record in
/// the shared file `RECORDS` (words `2i`, `2i+1`), dawdles, and checks that nobody
/// overwrote them. It checks that every token it gets is above the last one recorded for
/// the name by anyone, and above its own previous one. Reports `RESULT` and one `TOKENS`
/// line per name; exits 3 on any violation.
fn role_hammer() -> i32 {
    let table = open_table();
    let records = SharedWords::open(Path::new(&env("RECORDS")));
    let names: Vec<String> = env("NAMES").split(',').map(str::to_owned).collect();
    let run = env_ms("RUN_MS");
    let ttl = Duration::from_secs(20);
    let wait = Duration::from_millis(env_or("WAIT_MS", "20000").parse().unwrap());
    let me = std::process::id() as u64;
    let mut rng = Rng::new(me.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ env_u64("INDEX"));
    let mut tokens: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    let (mut violations, mut paused, mut held, mut timeouts) = (0u64, 0u64, 0u64, 0u64);
    let mut complain = |what: String| {
        eprintln!("VIOLATION: {what}");
        violations += 1;
    };
    say("READY", me);
    say("INLINE128", shmlease::sync::inline_128());
    assert!(wait_for_file(Path::new(&env("GO")), Duration::from_secs(60)), "GO never came");
    let end = Instant::now() + run;
    while Instant::now() < end {
        let i = rng.below(names.len() as u64) as usize;
        let name = &names[i];
        let blocking = rng.chance(30);
        // The grant's deadline is at least `asked + ttl`.
        let asked = Instant::now();
        let got = if blocking {
            table.acquire(name, ttl, Some(wait))
        } else {
            table.try_acquire(name, ttl)
        };
        let lease = match got {
            Ok(l) => l,
            Err(Error::Held { .. }) => {
                held += 1;
                std::thread::yield_now();
                continue;
            }
            Err(Error::TimedOut { .. }) => {
                timeouts += 1;
                continue;
            }
            Err(e) => {
                complain(format!("acquire {name}: {e}"));
                continue;
            }
        };
        let token = lease.token();
        if let Some(&prev) = tokens[i].last() {
            if token <= prev {
                complain(format!("{name}: token {token} after my own {prev}"));
            }
        }
        tokens[i].push(token);
        let (tok_word, pid_word) = (records.word(2 * i), records.word(2 * i + 1));
        let recorded = tok_word.load(std::sync::atomic::Ordering::SeqCst);
        if token <= recorded {
            complain(format!("{name}: granted token {token} but {recorded} was recorded before"));
        }
        tok_word.store(token, std::sync::atomic::Ordering::SeqCst);
        pid_word.store(me, std::sync::atomic::Ordering::SeqCst);
        // Dawdle: spin, yield, or (rarely) sleep, so that others try to get in.
        match rng.below(10) {
            0 => std::thread::sleep(Duration::from_millis(1)),
            1..=3 => std::thread::yield_now(),
            _ => {
                for _ in 0..rng.below(2000) {
                    std::hint::spin_loop();
                }
            }
        }
        let (t, p) = (
            tok_word.load(std::sync::atomic::Ordering::SeqCst),
            pid_word.load(std::sync::atomic::Ordering::SeqCst),
        );
        // Well inside the TTL (judged by this process's own clock, which can only make
        // the window look shorter), the grant must be ours and the record untouched.
        let surely_live = asked.elapsed() < ttl / 2;
        let valid = lease.is_valid();
        if surely_live && (t, p) != (token, me) {
            complain(format!(
                "{name}: while I held token {token}, pid {p} wrote token {t} over my record"
            ));
        }
        if surely_live && !valid {
            complain(format!("{name}: my grant {token} is no longer valid inside its TTL"));
        }
        if !surely_live {
            // A pause of ttl/2 on this machine: nothing can be concluded about this grant.
            paused += 1;
        }
        if surely_live && rng.chance(10) {
            // Exercise renew while holding.
            if let Err(e) = lease.renew(ttl) {
                complain(format!("{name}: renew of a held lease: {e}"));
            }
        }
        match lease.release() {
            Ok(()) => {}
            Err(e) if !surely_live => eprintln!("release after a long pause: {e}"),
            Err(e) => complain(format!("{name}: release of a held lease: {e}")),
        }
    }
    let grants: usize = tokens.iter().map(Vec::len).sum();
    say(
        "RESULT",
        format!(
            "grants={grants} violations={violations} paused={paused} held={held} timeouts={timeouts}"
        ),
    );
    for (name, toks) in names.iter().zip(&tokens) {
        let list: Vec<String> = toks.iter().map(u64::to_string).collect();
        say("TOKENS", format!("{name} {}", list.join(",")));
    }
    if violations > 0 {
        3
    } else {
        0
    }
}

/// Waits for the file `GO`, then races `open_or_create(TABLE)` with its siblings, takes
/// the name `proc-INDEX`, detaches it (so it stays held after exit) and reports
/// `RESULT capacity creator_pid created_ns token`.
fn role_race_create() -> i32 {
    let path = PathBuf::from(env("TABLE"));
    let index = env_u64("INDEX");
    say("READY", index);
    assert!(wait_for_file(Path::new(&env("GO")), Duration::from_secs(60)), "GO never came");
    let table = match LeaseTable::open_or_create(&path, &TableOptions::new().capacity(64)) {
        Ok(t) => t,
        Err(e) => {
            say("ERR", format!("open_or_create: {e} ({e:?})"));
            return 6;
        }
    };
    let lease = match table.try_acquire(&format!("proc-{index}"), Duration::from_secs(120)) {
        Ok(l) => l,
        Err(e) => {
            say("ERR", format!("try_acquire: {e}"));
            return 7;
        }
    };
    let token = lease.detach().expect("detach").token;
    let info = table.info();
    let created = info.created_at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    say("RESULT", format!("{} {} {} {}", info.capacity, info.creator_pid, created, token));
    0
}

/// Takes `NAME`, forks; the forked child drops its copy of the lease and `_exit`s. The
/// lease must still be held (same token) afterwards and release cleanly.
fn role_fork() -> i32 {
    let table = open_table();
    let name = env("NAME");
    let lease = table.try_acquire(&name, Duration::from_secs(60)).expect("try_acquire");
    let token = lease.token();
    // SAFETY: fork(2) has no preconditions. This process runs its test on one thread
    // (the harness's main thread only waits for it); the child only tries to renew and
    // release the lease (atomics, a few reads of /proc) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The inherited lease stays the parent's: the child may read it, not change it.
        let refused = |r: shmlease::Result<()>| matches!(r, Err(Error::BoundToProcess { .. }));
        let code = if !lease.is_valid() || lease.token() != token {
            2
        } else if !refused(lease.renew(Duration::from_secs(1))) {
            3
        } else if !refused(lease.release()) {
            4
        } else {
            0
        };
        // SAFETY: _exit ends the forked child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid out-pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        say("ERR", format!("forked child ended with status {status:#x}"));
        return 30;
    }
    if !lease.is_valid() {
        say("ERR", "the forked child's drop released the parent's lease");
        return 31;
    }
    match table.get(&name) {
        Ok(Some(info)) if info.token == token && info.state == shmlease::LeaseState::Held => {}
        other => {
            say("ERR", format!("after the fork the lease shows as {other:?}"));
            return 32;
        }
    }
    match lease.release() {
        Ok(()) => {
            say("DONE", token);
            0
        }
        Err(e) => {
            say("ERR", format!("release: {e}"));
            33
        }
    }
}

/// Churns through the names in `NAMES` (more names than the table has slots, so names
/// are bound and unbound all the time) for `RUN_MS` or until killed: acquire (for
/// `TTL_MS`), renew, inspect, release, and sometimes keep a lease while moving on (it
/// stays held until this process dies or it expires).
/// Refusals (`Held`, `TableFull`, `Lost` after a sibling's revocation) are normal; any
/// other error is reported as `ERR`.
fn role_churn() -> i32 {
    let table = open_table();
    let names: Vec<String> = env("NAMES").split(',').map(str::to_owned).collect();
    let mut rng = Rng::new(env_u64("SEED"));
    let ttl = env_ms("TTL_MS");
    let mut kept = Vec::new();
    say("READY", std::process::id());
    let end = Instant::now() + Duration::from_millis(env_or("RUN_MS", "60000").parse().unwrap());
    let report = |what: &str, e: Error| {
        // Lost is normal too: the churners revoke each other's leases.
        if !matches!(e, Error::Held { .. } | Error::TableFull { .. } | Error::Lost { .. }) {
            say("ERR", format!("{what}: {e:?}"));
        }
    };
    while Instant::now() < end {
        let name = &names[rng.below(names.len() as u64) as usize];
        match table.try_acquire(name, ttl) {
            Ok(lease) => {
                if let Err(e) = lease.renew(ttl) {
                    report("renew", e);
                }
                match rng.below(8) {
                    0 if kept.len() < 2 => kept.push(lease),
                    1 => drop(lease),
                    _ => {
                        if let Err(e) = lease.release() {
                            report("release", e);
                        }
                    }
                }
            }
            Err(e) => report("try_acquire", e),
        }
        if rng.chance(5) {
            kept.clear();
        }
        if rng.chance(5) {
            if let Err(e) = table.list() {
                report("list", e);
            }
        }
        if rng.chance(2) {
            if let Err(e) = table.revoke(name) {
                report("revoke", e);
            }
        }
    }
    say("DONE", std::process::id());
    0
}

/// Creates tables `DIR/t-0`, `DIR/t-1`, ... (with `open_or_create`, so the parent can
/// kill it at any point of any creation) and takes a lease in each, until killed.
fn role_create_loop() -> i32 {
    let dir = PathBuf::from(env("DIR"));
    let opts = TableOptions::new().capacity(2048);
    for i in 0.. {
        let table = match LeaseTable::open_or_create(dir.join(format!("t-{i}")), &opts) {
            Ok(t) => t,
            Err(e) => {
                say("ERR", format!("create t-{i}: {e:?}"));
                return 40;
            }
        };
        if let Err(e) = table.try_acquire("x", Duration::from_secs(60)) {
            say("ERR", format!("acquire in t-{i}: {e:?}"));
            return 41;
        }
        if i == 0 {
            say("READY", std::process::id());
        }
    }
    0
}

/// Runs `INNER` (a role) in a new time namespace whose `CLOCK_MONOTONIC` runs
/// `OFFSET_S` seconds ahead of the host's. Namespaces belong to threads and a process
/// only joins a new time namespace by fork, and the offsets can only be set through the
/// thread group leader: so a freshly forked (single-threaded) child unshares and sets
/// the offsets before it execs `timens_mid`, whose children are then in the namespace.
/// Stdout and stderr are ours all the way down. Exit 50 if the namespace cannot be made
/// (the parent then skips the test).
fn role_timens() -> i32 {
    use std::os::unix::process::CommandExt;
    let offsets = format!("monotonic {} 0\n", env_u64("OFFSET_S"));
    let file = std::ffi::CString::new("/proc/self/timens_offsets").unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_main", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, "timens_mid");
    let setup = move || {
        // SAFETY: only async-signal-safe calls on data prepared before the fork.
        unsafe {
            if libc::unshare(libc::CLONE_NEWTIME) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, offsets.as_ptr().cast(), offsets.len());
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n < 0 {
                return Err(err);
            }
        }
        Ok(())
    };
    // SAFETY: `setup` only makes async-signal-safe system calls (see above).
    unsafe { cmd.pre_exec(setup) };
    match cmd.status() {
        Ok(status) => status.code().unwrap_or(51),
        Err(e) => {
            say("NO_TIMENS", e);
            50
        }
    }
}

/// Second stage of [`role_timens`]: runs `INNER` in a child (in the new namespace).
fn role_timens_mid() -> i32 {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["child_main", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, env("INNER"))
        .status()
        .expect("spawning the inner child");
    status.code().unwrap_or(51)
}

/// Runs inside a time namespace (see [`role_timens`]): the lease `HOST_HELD`, held by the
/// parent for `TTL_MS`, must look held to us too; then takes `NS_HELD` for `TTL_MS`,
/// reports `READY token`, waits for the file `GO` and releases it.
fn role_timens_probe() -> i32 {
    let offsets = std::fs::read_to_string("/proc/self/timens_offsets").unwrap_or_default();
    say("OFFSETS", offsets.split_whitespace().collect::<Vec<_>>().join(" "));
    let table = open_table();
    let ttl = env_ms("TTL_MS");
    match table.try_acquire(&env("HOST_HELD"), ttl) {
        Err(Error::Held { remaining, .. }) if remaining <= ttl => {
            say("PROBE", format!("held {}", remaining.as_millis()))
        }
        other => {
            say("ERR", format!("the host's lease looks like this from here: {other:?}"));
            return 52;
        }
    }
    let lease = match table.try_acquire(&env("NS_HELD"), ttl) {
        Ok(l) => l,
        Err(e) => {
            say("ERR", format!("try_acquire: {e:?}"));
            return 53;
        }
    };
    if lease.remaining() > ttl {
        say("ERR", format!("remaining {:?} > ttl {ttl:?}", lease.remaining()));
        return 54;
    }
    say("READY", lease.token());
    assert!(wait_for_file(Path::new(&env("GO")), Duration::from_secs(60)), "GO never came");
    match lease.release() {
        Ok(()) => 0,
        Err(e) => {
            say("ERR", format!("release: {e:?}"));
            55
        }
    }
}

/// Parses `k=v k=v` into a map.
pub fn parse_kv(s: &str) -> BTreeMap<String, u64> {
    s.split_ascii_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}
