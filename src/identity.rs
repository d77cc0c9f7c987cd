//! Who this process is (pid, a reuse-proof identity, PID namespace, time namespace
//! offset), cached so that the fast path makes no system call, and whether a recorded
//! holder is provably dead (slow path only).
//!
//! The cache is invalidated in the child after `fork()` (a `pthread_atfork` handler), so
//! a forked child never records its parent's identity.
//!
//! Setting the environment variable `SHMLEASE_IDENTITY=start-time` makes this process
//! record its start time even where a pidfd inode is available: the identity kernels
//! before 6.9 give. It exists so that tests can run the fallback on any kernel.

use crate::layout::holder::{self, Record};
use crate::sys;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Once;

static VALID: AtomicBool = AtomicBool::new(false);
static PID: AtomicU32 = AtomicU32::new(0);
static PIDNS: AtomicU32 = AtomicU32::new(0);
/// kind << 56 | ident
static IDENT: AtomicU64 = AtomicU64::new(0);
static TIMENS_OFFSET: AtomicI64 = AtomicI64::new(0);
/// Why this process's clock offset could not be determined (0: it could; see
/// [`timens_offset_known`]). A number, not a message: `refresh` runs in forked children,
/// where a lock another thread held at the fork would never be released.
static TIMENS_UNKNOWN: AtomicU8 = AtomicU8::new(0);
static AT_FORK: Once = Once::new();

extern "C" fn forget_after_fork() {
    VALID.store(false, Ordering::Relaxed);
}

/// This process, as recorded in a holder record (tag left zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Me {
    pub pid: u32,
    pub pidns: u32,
    pub kind: u8,
    pub ident: u64,
    /// How far this process's CLOCK_MONOTONIC runs ahead of the host's.
    pub timens_offset_ns: i64,
}

impl Me {
    /// The holder record of this process.
    pub fn record(&self, detached: bool) -> Record {
        Record {
            tag: 0,
            pidns: self.pidns,
            pid: self.pid,
            kind: self.kind,
            detached,
            ident: self.ident & holder::IDENT_MASK,
        }
    }
}

/// This process. One relaxed-ish load per field once cached.
#[inline]
pub fn me() -> Me {
    if VALID.load(Ordering::Acquire) {
        let id = IDENT.load(Ordering::Relaxed);
        Me {
            pid: PID.load(Ordering::Relaxed),
            pidns: PIDNS.load(Ordering::Relaxed),
            kind: (id >> 56) as u8,
            ident: id & ((1 << 56) - 1),
            timens_offset_ns: TIMENS_OFFSET.load(Ordering::Relaxed),
        }
    } else {
        refresh()
    }
}

/// This process's pid (re-read after `fork`). Two loads once cached: what a lease's
/// fast path needs to tell whether this process took it.
#[inline]
pub fn pid() -> u32 {
    if VALID.load(Ordering::Acquire) {
        PID.load(Ordering::Relaxed)
    } else {
        refresh().pid
    }
}

/// Whether `record` describes this very process (whatever its tag and detached bit).
pub fn is_me(record: &Record) -> bool {
    Record { tag: 0, detached: false, ..*record } == me().record(false)
}

/// This process's CLOCK_MONOTONIC offset from the host's (time namespaces).
#[inline]
pub fn timens_offset_ns() -> i64 {
    if VALID.load(Ordering::Acquire) {
        TIMENS_OFFSET.load(Ordering::Relaxed)
    } else {
        refresh().timens_offset_ns
    }
}

#[cold]
fn refresh() -> Me {
    AT_FORK.call_once(|| sys::at_fork_child(forget_after_fork));
    let pid = sys::getpid();
    let (kind, ident) = identify(pid);
    let me = Me {
        pid,
        pidns: sys::pid_namespace(),
        kind,
        ident: ident & holder::IDENT_MASK,
        // Unknown offsets make opening a table fail (`timens_offset_known`); a table
        // already open in a forked child keeps working with 0, which the child's clock
        // can only contradict if the child is in another time namespace, and a child
        // cannot change namespace before exec.
        timens_offset_ns: match sys::timens_monotonic_offset_ns() {
            Ok(off) => {
                TIMENS_UNKNOWN.store(0, Ordering::Relaxed);
                off
            }
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => 1,
                    std::io::ErrorKind::Unsupported => 2,
                    _ => 3,
                };
                TIMENS_UNKNOWN.store(why, Ordering::Relaxed);
                0
            }
        },
    };
    PID.store(me.pid, Ordering::Relaxed);
    PIDNS.store(me.pidns, Ordering::Relaxed);
    IDENT.store((me.kind as u64) << 56 | me.ident, Ordering::Relaxed);
    TIMENS_OFFSET.store(me.timens_offset_ns, Ordering::Relaxed);
    VALID.store(true, Ordering::Release);
    me
}

/// `Ok` when this process's clock offset from the host's is known, else why not. A
/// wrong offset would make every lease look longer or shorter to this process than to
/// others (two holders), so tables refuse to open without it.
pub fn timens_offset_known() -> Result<(), &'static str> {
    me();
    match TIMENS_UNKNOWN.load(Ordering::Relaxed) {
        0 => Ok(()),
        1 => Err("/proc is not mounted, so this process's time namespace offset cannot be \
                  known"),
        2 => Err("this process has unshared its time namespace and not yet exec'd: its own \
                  clock's offset is published nowhere (/proc/self/timens_offsets already \
                  describes its children's); open the table before unshare(CLONE_NEWTIME) \
                  or after exec"),
        _ => Err("/proc/self/timens_offsets cannot be read"),
    }
}

/// The best reuse-proof identity of `pid`: its pidfd inode on pidfs kernels, else its
/// start time (always the start time when `SHMLEASE_IDENTITY=start-time`).
fn identify(pid: u32) -> (u8, u64) {
    let forced = std::env::var_os("SHMLEASE_IDENTITY").is_some_and(|v| v == "start-time");
    if let Some(fd) = (!forced).then(|| sys::pidfd_open(pid).ok()).flatten() {
        if let Ok(Some(ino)) = sys::pidfs_inode(&fd) {
            return (holder::KIND_PIDFD_INODE, ino);
        }
    }
    match sys::proc_state_and_start(pid) {
        Ok((_, start)) => (holder::KIND_START_TIME, start),
        Err(_) => (holder::KIND_UNKNOWN, 0),
    }
}

/// The last holder this process found alive (its packed identity word), and when
/// (CLOCK_MONOTONIC ns). A probe costs four system calls (microseconds); a refused
/// `try_acquire` asks on every call, so a verdict is reused for `ALIVE_FOR_NS`. Reusing
/// "alive" is always safe — it only delays an early reclaim, by at most that long.
/// Identity word (high half) and time (low half), in one atomic so they always match.
static ALIVE: portable_atomic::AtomicU128 = portable_atomic::AtomicU128::new(0);
const ALIVE_FOR_NS: u64 = 1_000_000;

/// Whether the holder described by `record` is provably dead. "Don't know" (another PID
/// namespace, no identity, no permission, no /proc) is `false`: the lease then lasts its
/// TTL. A zombie process counts as dead: it can no longer use the lease. Death is
/// judged for the whole thread group: a process whose main thread has exited while
/// other threads run is alive.
pub fn is_provably_dead(record: &Record) -> bool {
    // pid, kind, detached and identity (the record's high half), mixed with the PID
    // namespace: which process was found alive.
    let key = (record.pack() >> 64) as u64 ^ (record.pidns as u64) << 40;
    let now = sys::monotonic_ns();
    let seen = ALIVE.load(Ordering::Acquire);
    if (seen >> 64) as u64 == key && now.wrapping_sub(seen as u64) < ALIVE_FOR_NS {
        return false;
    }
    let dead = probe_dead(record);
    if !dead {
        ALIVE.store((key as u128) << 64 | now as u128, Ordering::Release);
    }
    dead
}

/// A pidfd of the live process that `record` describes, verified to be that process
/// (not a later owner of its pid): it polls readable when the process exits, so a
/// waiter can be woken by the holder's death itself. `None` when that cannot be had
/// (another PID namespace, no identity, this process, no pidfd support, or already
/// dead: the caller then re-checks by probing).
pub fn death_watch(record: &Record) -> Option<OwnedFd> {
    let me = me();
    if record.pid == 0 || record.pidns == 0 || record.pidns != me.pidns || record.pid == me.pid {
        return None;
    }
    let fd = sys::pidfd_open(record.pid).ok()?;
    let same = match record.kind {
        holder::KIND_PIDFD_INODE => {
            sys::pidfs_inode(&fd).ok()?.is_some_and(|ino| ino & holder::IDENT_MASK == record.ident)
        }
        // The pidfd names whoever had the pid when it was opened; if that is still the
        // recorded process now, it was then (a pid is not reused while its process lives).
        holder::KIND_START_TIME => sys::proc_state_and_start(record.pid)
            .is_ok_and(|(_, start)| start & holder::IDENT_MASK == record.ident),
        _ => false,
    };
    (same && !sys::pidfd_exited(&fd)).then_some(fd)
}

/// Forgets which process was last found alive: the next [`is_provably_dead`] probes.
pub fn forget_alive() {
    ALIVE.store(0, Ordering::Release);
}

fn probe_dead(record: &Record) -> bool {
    let me = me();
    if record.pid == 0 || record.pidns == 0 || record.pidns != me.pidns {
        return false;
    }
    if record.pid == me.pid {
        // Our own pid: alive unless the record was made by an earlier holder of the pid.
        return record.kind == me.kind
            && record.kind != holder::KIND_UNKNOWN
            && record.ident != me.ident & holder::IDENT_MASK;
    }
    match record.kind {
        holder::KIND_PIDFD_INODE => match sys::pidfd_open(record.pid) {
            Err(e) => e.raw_os_error() == Some(libc::ESRCH),
            Ok(fd) => match sys::pidfs_inode(&fd) {
                Ok(Some(ino)) => ino & holder::IDENT_MASK != record.ident || sys::pidfd_exited(&fd),
                _ => false,
            },
        },
        holder::KIND_START_TIME => match sys::proc_state_and_start(record.pid) {
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            Ok((state, start)) if start & holder::IDENT_MASK == record.ident => {
                // `Z` describes the main thread only; the process lives while any of
                // its threads does.
                matches!(state, b'Z' | b'X')
                    && sys::proc_has_other_threads(record.pid).is_ok_and(|more| !more)
            }
            Ok(_) => true, // another process, which reused the pid
        },
        _ => false,
    }
}
