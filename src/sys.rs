//! Every call into the operating system: clocks, futexes, pidfds, `/proc`, file creation
//! and locking. Functions are named after what they do at the OS level; errno becomes
//! `io::Error` here and nowhere else. Linux only.
//!
//! Calls go through nix's safe wrappers where nix has one that fits; raw `libc` remains
//! for what nix does not wrap (futex, `pidfd_open`, `pthread_atfork`), and where its
//! wrapper does not fit (the clock on the fast path, `flock`, `close` in the fork
//! handler): each says why.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::fault::{point, Op};

/// `CLOCK_MONOTONIC` in nanoseconds, as this process (and its time namespace) sees it.
/// A vDSO call: no system call on any mainstream configuration.
///
/// Raw, not through `nix::time::clock_gettime`: every lease operation reads the clock,
/// and nix's wrapper (not inlined, returning a `Result<TimeSpec>`) took 34 ns a call
/// where this takes 25 (a loop of 2·10⁷ calls on the development machine).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, as this process (and its time namespace)
/// sees it: the value `CLOCK_MONOTONIC` had at the last timekeeping update, once a timer
/// tick. So it lags the precise clock by about one tick ([`coarse_tick_ns`]) — more when
/// the tick that updates it is late (up to 7 ms, nearly two 4 ms ticks, seen on a loaded
/// 2-vCPU VM) — and never leads it, and time
/// namespaces offset it exactly as they offset `CLOCK_MONOTONIC` (time_namespaces(7)).
/// A vDSO read of one cached value: about a fifth of the cost of the precise clock.
///
/// Only for judgements that a lagging reading cannot make wrong: see
/// `protocol::try_grant_free`.
#[inline]
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec. (The clock exists on every Linux since
    // 2.6.32; callers use it only once `coarse_tick_ns` has found it.)
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The resolution of `CLOCK_MONOTONIC_COARSE` (one timer tick: 4 ms with `CONFIG_HZ=250`),
/// from clock_getres(2), read once; `u64::MAX` when unknown.
#[inline]
pub fn coarse_tick_ns() -> u64 {
    static TICK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    match TICK.load(Ordering::Relaxed) {
        0 => {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid, writable timespec.
            let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
            let tick = if rc == 0 && ts.tv_sec >= 0 && ts.tv_nsec > 0 {
                ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
            } else {
                u64::MAX
            };
            TICK.store(tick, Ordering::Relaxed);
            tick
        }
        tick => tick,
    }
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// nix has no futex wrapper: the two futex calls are raw system calls.

/// `futex(FUTEX_WAIT)` on a word in shared memory (no `FUTEX_PRIVATE_FLAG`: the word is
/// shared between processes). Returns when woken, when `*addr != expect`, on a signal,
/// or after `timeout`; the caller re-examines the state in every case.
///
/// # Safety
/// `addr` must point to a 4-byte aligned word that stays mapped for the whole call.
pub unsafe fn futex_wait(addr: *const u32, expect: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the caller guarantees `addr` is valid for the duration; `ts` lives on our
    // stack until the call returns. FUTEX_WAIT only reads the word.
    unsafe {
        libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAIT, expect, &ts as *const _, 0, 0)
    };
}

/// `futex(FUTEX_WAKE)` waking every waiter on the word.
///
/// # Safety
/// `addr` must point to a 4-byte aligned word that stays mapped for the whole call.
pub unsafe fn futex_wake_all(addr: *const u32) {
    // SAFETY: the caller guarantees `addr` is valid; FUTEX_WAKE does not access memory
    // beyond using the address as a key.
    unsafe { libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, i32::MAX, 0, 0, 0) };
}

/// `getpid(2)`.
pub fn getpid() -> u32 {
    nix::unistd::getpid().as_raw() as u32
}

/// `geteuid(2)`.
pub fn geteuid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `pidfd_open(2)`, a raw system call: nix does not wrap it.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The pidfs magic number (`PID_FS_MAGIC`): pidfds whose file system has it carry a
/// per-process inode number that is never reused.
const PIDFS_MAGIC: i64 = 0x5049_4446;

/// The inode number of `fd`, if `fd` lives on pidfs.
pub fn pidfs_inode(fd: &OwnedFd) -> io::Result<Option<u64>> {
    let sfs = nix::sys::statfs::fstatfs(fd)?;
    if sfs.filesystem_type().0 as i64 != PIDFS_MAGIC {
        return Ok(None);
    }
    let file = File::from(fd.try_clone()?);
    Ok(Some(file.metadata()?.ino()))
}

/// Whether the process behind a pidfd has exited (a pidfd polls readable then, zombies
/// included).
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let n = nix::poll::poll(&mut pfd, PollTimeout::ZERO);
    n == Ok(1) && pfd[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN))
}

/// An eventfd, to cancel a thread blocked in [`wait_exit_or_poke`]: see [`poke`]. Not a
/// pipe: writing into a pipe whose reader has gone raises SIGPIPE, which kills a
/// process that has not ignored it (C programs, by default).
/// Runs `spawn` (which starts a thread) with every signal blocked in the calling
/// thread, then restores its mask: the new thread starts with every signal blocked.
/// The library's own threads (death watches, keep-alives, renewers of places in fair
/// queues) are started so, so that a signal meant for the process (SIGCHLD, SIGTERM…)
/// is never delivered to one of them and lost there: a program that blocks a signal in
/// its main thread to read it from a signalfd, as `shmlease run` does, would miss it.
pub fn with_signals_blocked<T>(spawn: impl FnOnce() -> T) -> T {
    // SAFETY: sigfillset fills a zeroed sigset_t; pthread_sigmask reads `all` and writes
    // the previous mask into `old`, both valid for the calls; it changes only this
    // thread's mask, which the second call restores.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let spawned = spawn();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    }
}

pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes plain integers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes an [`eventfd`] readable.
pub fn poke(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Blocks until the process behind `pidfd` exits (`true`) or `cancel` polls readable
/// (`false`). Retries on signals.
pub fn wait_exit_or_poke(pidfd: &OwnedFd, cancel: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
            Ok(_) => {
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                if ready(&fds[1]) {
                    return false;
                }
                if ready(&fds[0]) {
                    return true;
                }
            }
        }
    }
}

/// State letter and start time (clock ticks after boot) of `pid`, from `/proc/PID/stat`.
pub fn proc_state_and_start(pid: u32) -> io::Result<(u8, u64)> {
    let mut s = String::new();
    File::open(format!("/proc/{pid}/stat"))?.read_to_string(&mut s)?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| bad_proc("stat"))?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().and_then(|f| f.bytes().next()).ok_or_else(|| bad_proc("stat"))?;
    // Field 22 overall is the 20th after the command name (state is the 1st).
    let start = fields.nth(18).and_then(|f| f.parse().ok()).ok_or_else(|| bad_proc("stat"))?;
    Ok((state, start))
}

fn bad_proc(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected format of /proc/…/{what}"))
}

/// Inode number of this process's PID namespace (0 when `/proc` does not tell).
pub fn pid_namespace() -> u32 {
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| u32::try_from(m.ino()).unwrap_or(0))
}

/// Whether the thread group of `pid` has more than one thread, from the `Threads:` line
/// of `/proc/PID/status`. A process whose main thread has exited shows state `Z` in
/// `/proc/PID/stat` while its other threads run; its thread count then stays above one
/// (the exited leader is counted until the whole group is reaped).
pub fn proc_has_other_threads(pid: u32) -> io::Result<bool> {
    let mut s = String::new();
    File::open(format!("/proc/{pid}/status"))?.read_to_string(&mut s)?;
    let threads: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad_proc("status"))?;
    Ok(threads > 1)
}

/// Inode number of the initial time namespace (`PROC_TIME_INIT_INO`, fixed by the kernel).
const TIME_NS_INIT_INO: u64 = 0xEFFF_FFFA;

/// This process's own `CLOCK_MONOTONIC` offset from the host's, in nanoseconds, or an
/// error saying why it cannot be known.
///
/// A process's own clock belongs to the time namespace of its memory (`ns/time`, the
/// same for all its threads). `/proc/self/timens_offsets` describes another one, the
/// namespace that the main thread's *future children* will enter
/// (`ns/time_for_children`): between `unshare(CLONE_NEWTIME)` and the next `exec` it
/// shows the new namespace's offsets while the clock is still the old one's. So the
/// file is believed only when the two namespaces are the same; a process in the
/// initial namespace has offset 0 whatever the file says.
/// Errors: `NotFound` without /proc, `Unsupported` between unshare and exec.
pub fn timens_monotonic_offset_ns() -> io::Result<i64> {
    if !Path::new("/proc/self").exists() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "/proc is not mounted"));
    }
    let own = match std::fs::metadata("/proc/self/ns/time") {
        Ok(m) => m.ino(),
        // /proc is there but has no time namespace: the kernel has none (before 5.6, or
        // built without them), so every clock is the host's.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if own == TIME_NS_INIT_INO {
        return Ok(0);
    }
    let children = std::fs::metadata("/proc/self/ns/time_for_children")?.ino();
    if children != own {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "time namespace unshared, not yet entered by exec",
        ));
    }
    let text = std::fs::read_to_string("/proc/self/timens_offsets")?;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        if it.next() == Some("monotonic") {
            let secs: i64 =
                it.next().and_then(|v| v.parse().ok()).ok_or_else(|| bad_proc("timens_offsets"))?;
            let nanos: i64 =
                it.next().and_then(|v| v.parse().ok()).ok_or_else(|| bad_proc("timens_offsets"))?;
            return Ok(secs * 1_000_000_000 + nanos);
        }
    }
    Err(bad_proc("timens_offsets"))
}

/// The kernel's boot id as 16 bytes.
pub fn boot_id() -> io::Result<[u8; 16]> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let hex: Vec<u8> = text.trim().bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return Err(bad_proc("boot_id"));
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad_proc("boot_id"))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad_proc("boot_id"))?;
    }
    Ok(out)
}

/// Registers `child` to run in the child after every `fork()` (raw: nix does not wrap
/// `pthread_atfork`).
pub fn at_fork_child(child: extern "C" fn()) {
    // SAFETY: registering a handler has no preconditions; `child` is a plain function
    // that only stores to atomics (async-signal-safe).
    unsafe { libc::pthread_atfork(None, None, Some(child)) };
}

/// Opens an existing file for reading and writing without following a symlink in the
/// last component (`O_NOFOLLOW`).
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates a file of `size` bytes and mode `mode`, lets `init` fill its mapping, and only
/// then makes it appear at `path` (atomically, failing with `AlreadyExists` if something
/// is there). A process killed half-way leaves nothing at `path` (and, with `O_TMPFILE`,
/// nothing at all). Returns the file, open and linked.
pub fn create_linked(
    path: &Path,
    mode: u32,
    size: u64,
    init: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmpfile = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(&dir);
    match tmpfile {
        Ok(file) => {
            point(Op::Create);
            prepare(&file, mode, size)?;
            point(Op::Create);
            init(&file)?;
            point(Op::Create);
            link_anonymous(&file, path)?;
            point(Op::Create);
            Ok(file)
        }
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) =>
        {
            create_linked_named(&dir, path, mode, size, init)
        }
        Err(e) => Err(e),
    }
}

/// Fallback for file systems without `O_TMPFILE`: a uniquely named temporary file in the
/// same directory, hard-linked into place, then unlinked.
fn create_linked_named(
    dir: &Path,
    path: &Path,
    mode: u32,
    size: u64,
    init: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<File> {
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{base}.{}.{}.creating", getpid(), realtime_ns()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let linked = prepare(&file, mode, size)
        .and_then(|()| init(&file))
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked.map(|()| file)
}

fn prepare(file: &File, mode: u32, size: u64) -> io::Result<()> {
    // The requested mode exactly, whatever the umask.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.set_len(size)
}

/// Gives an `O_TMPFILE` file a name.
fn link_anonymous(file: &File, path: &Path) -> io::Result<()> {
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    let via_proc =
        nix::unistd::linkat(AT_FDCWD, from.as_str(), AT_FDCWD, path, AtFlags::AT_SYMLINK_FOLLOW);
    if via_proc != Err(Errno::ENOENT) {
        return Ok(via_proc?);
    }
    // No /proc: AT_EMPTY_PATH works where the caller has CAP_DAC_READ_SEARCH.
    Ok(nix::unistd::linkat(file, "", AT_FDCWD, path, AtFlags::AT_EMPTY_PATH)?)
}

/// Opens a new open file description of the file behind `file` (through
/// `/proc/self/fd`, else through `path` if that still names the same file). An `flock`
/// belongs to an open file description, and `fork()` shares descriptions between parent
/// and child, so a lock meant to exclude other processes must be taken on a
/// description that no other process shares.
pub fn reopen(file: &File, path: &Path) -> io::Result<File> {
    let meta = file.metadata()?;
    let same =
        |f: &File| f.metadata().is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
    let via_proc = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if let Ok(f) = via_proc {
        if same(&f) {
            return Ok(f);
        }
    }
    let f = open_nofollow(path)?;
    if same(&f) {
        return Ok(f);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "the table file was removed or replaced, and /proc/self/fd cannot reopen it",
    ))
}

/// Descriptors of table locks this process holds right now, so that a child forked
/// meanwhile can close its copies (see [`forget_locks_after_fork`]). `-1` is free.
static HELD_LOCKS: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];
static LOCK_AT_FORK: Once = Once::new();

/// Runs in the child after `fork()`: closes the child's copies of the descriptors of
/// every table lock that another thread of the parent held at the fork. The parent
/// still unlocks them itself; the child's copy would only keep the lock alive past the
/// parent's death. `close` is async-signal-safe. It is called raw on purpose: closing
/// a bare descriptor number claims to own it, a claim that belongs in an `unsafe`
/// block (nix's `close` takes any number without one).
extern "C" fn forget_locks_after_fork() {
    for slot in &HELD_LOCKS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` is this (child) process's copy of a descriptor the parent had
            // registered while holding a lock; nothing else in the child owns it (the
            // thread that did is not in the child).
            unsafe { libc::close(fd) };
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)` on `file`, which must be a description this process made
/// for this one lock ([`reopen`]): `Ok(true)` when taken, `Ok(false)` when somebody else
/// has it. A taken lock is registered so that a child forked while it is held drops its
/// copy; release it with [`unlock`].
///
/// `flock` is called raw: nix's wrapper (`Flock`; its `flock` function is deprecated)
/// owns the file and unlocks it when dropped, while here the caller's lock guard owns
/// the file, and the registry must change before the lock is taken and after it is
/// released.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    LOCK_AT_FORK.call_once(|| at_fork_child(forget_locks_after_fork));
    let fd = file.as_raw_fd();
    // Registered before the lock is taken, so no fork can fall between the two. A
    // process with more than 64 threads binding at once leaves the rest unregistered: a
    // child forked at that moment keeps those locks until it exits or execs (the
    // descriptors are close-on-exec).
    let registered = HELD_LOCKS
        .iter()
        .find(|s| s.compare_exchange(-1, fd, Ordering::Relaxed, Ordering::Relaxed).is_ok());
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if let Some(slot) = registered {
        slot.store(-1, Ordering::Relaxed);
    }
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        Some(libc::EINTR) => Ok(false),
        _ => Err(err),
    }
}

/// `flock(LOCK_UN)` on a lock taken with [`try_lock_exclusive`], and its deregistration.
/// The caller then closes the description.
pub fn unlock(file: &File) {
    let fd = file.as_raw_fd();
    // SAFETY: the descriptor is open for the duration of the call.
    unsafe { libc::flock(fd, libc::LOCK_UN) };
    let _ = HELD_LOCKS
        .iter()
        .find(|s| s.compare_exchange(fd, -1, Ordering::Relaxed, Ordering::Relaxed).is_ok());
}
