//! Who this process is (pid, a reuse-proof identity, PID namespace, time namespace
//! offset), cached so that the fast path makes no system call, and whether a recorded
//! holder is provably dead (slow path only).
//!
//! The cache is invalidated in the child after `fork()` (a `pthread_atfork` handler), so
//! a forked child never records its parent's identity.

use crate::layout::holder::{self, Record};
use crate::sys;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

static VALID: AtomicBool = AtomicBool::new(false);
static PID: AtomicU32 = AtomicU32::new(0);
static PIDNS: AtomicU32 = AtomicU32::new(0);
/// kind << 56 | ident
static IDENT: AtomicU64 = AtomicU64::new(0);
static TIMENS_OFFSET: AtomicI64 = AtomicI64::new(0);
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
        // Unreadable offsets: assume none (the common case); a wrong guess shows up as
        // leases that look expired or long-lived, never as two holders by our own hand.
        timens_offset_ns: sys::timens_monotonic_offset_ns().unwrap_or(0),
    };
    PID.store(me.pid, Ordering::Relaxed);
    PIDNS.store(me.pidns, Ordering::Relaxed);
    IDENT.store((me.kind as u64) << 56 | me.ident, Ordering::Relaxed);
    TIMENS_OFFSET.store(me.timens_offset_ns, Ordering::Relaxed);
    VALID.store(true, Ordering::Release);
    me
}

/// The best reuse-proof identity of `pid`: its pidfd inode on pidfs kernels, else its
/// start time.
fn identify(pid: u32) -> (u8, u64) {
    if let Ok(fd) = sys::pidfd_open(pid) {
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
/// TTL. A zombie counts as dead: it can no longer use the lease.
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
            Ok((state, start)) => {
                start & holder::IDENT_MASK != record.ident || matches!(state, b'Z' | b'X')
            }
        },
        _ => false,
    }
}
