//! Lease handles. A handle keeps the parts of a Rust `Lease` (slot, token, deadline
//! hint, owning pid) and a clone of its table, and rebuilds the `Lease` for each call:
//! a `Lease` borrows its table, which a C handle cannot express.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use shmlease_core::{Lease, LeaseTable, RawLease};

use crate::boundary::{arg, boundary, shmlease_status, Failure, Out};
use crate::info::nanos;

/// A lease held by this process. Opaque: get one from `shmlease_try_acquire` or
/// `shmlease_acquire`; free it with `shmlease_lease_free`, which also releases the lease
/// if it is still held.
///
/// Thread safety: a lease handle may be used by any number of threads at once, except
/// that `shmlease_lease_free` must not race with another call on the same handle.
///
/// After `fork()`, the lease stays the parent's: the parent keeps renewing and
/// releasing it as before. A child that inherited the handle may read it
/// (`shmlease_lease_token`, `_is_valid`, `_remaining_ns`, `_deadline_ns`);
/// `shmlease_renew`, `shmlease_release` and `shmlease_lease_detach` return
/// `SHMLEASE_BOUND_TO_PROCESS` there and change nothing; `shmlease_lease_free` frees the
/// child's copy of the handle without releasing the lease.
#[allow(non_camel_case_types)]
pub struct shmlease_lease {
    _opaque: [u8; 0],
}

pub(crate) struct LeaseHandle {
    table: LeaseTable,
    slot: u32,
    token: u64,
    pid: u32,
    /// The last deadline this process knows of (table time): a hint for release.
    deadline: AtomicU64,
    /// Released or detached through this handle.
    finished: AtomicBool,
}

impl LeaseHandle {
    /// Takes `lease` apart into a new handle, returned as the C pointer.
    pub(crate) fn into_c(lease: Lease<'_>, table: &LeaseTable) -> *mut shmlease_lease {
        let raw = lease.into_raw();
        let handle = LeaseHandle {
            table: table.clone(),
            slot: raw.slot,
            token: raw.token,
            pid: raw.pid,
            deadline: AtomicU64::new(raw.deadline),
            finished: AtomicBool::new(false),
        };
        Box::into_raw(Box::new(handle)).cast()
    }

    /// The parts of the lease, as last known.
    fn raw(&self) -> RawLease {
        RawLease {
            slot: self.slot,
            token: self.token,
            deadline: self.deadline.load(Ordering::Relaxed),
            pid: self.pid,
        }
    }

    /// The rebuilt lease, in a `ManuallyDrop` so that a panic half-way cannot release it.
    fn lease(&self) -> Result<ManuallyDrop<Lease<'_>>, Failure> {
        Lease::from_raw(&self.table, self.raw())
            .map(ManuallyDrop::new)
            .ok_or_else(|| Failure::Internal("lease handle does not fit its table".into()))
    }

    /// Runs `f` on the rebuilt lease and takes it apart again.
    fn with<R>(&self, f: impl FnOnce(&Lease<'_>) -> R) -> Result<R, Failure> {
        let lease = self.lease()?;
        let result = f(&lease);
        let raw = ManuallyDrop::into_inner(lease).into_raw();
        self.deadline.store(raw.deadline, Ordering::Relaxed);
        Ok(result)
    }

    /// Marks the handle finished; fails if it already was. In a `fork()`ed child the
    /// handle is not marked: the lease stays the parent's, and the rebuilt lease
    /// refuses to release or detach (`SHMLEASE_BOUND_TO_PROCESS`). The process is told
    /// apart by the library's cached pid: `std::process::id()` is a system call
    /// (getpid), which was 44% of the cycles of a C take + release.
    fn finish(&self) -> Result<ManuallyDrop<Lease<'_>>, Failure> {
        if !self.raw().taken_here() {
            if self.finished.load(Ordering::Acquire) {
                return Err(Failure::Finished);
            }
            return self.lease();
        }
        if self.finished.swap(true, Ordering::AcqRel) {
            return Err(Failure::Finished);
        }
        self.lease()
    }
}

/// Borrows the handle behind a lease pointer.
///
/// # Safety
/// `p` is NULL or a live handle from `LeaseHandle::into_c`, for `'a`.
unsafe fn lease_arg<'a>(p: *const shmlease_lease) -> Result<&'a LeaseHandle, Failure> {
    // SAFETY: a non-NULL lease pointer is a `Box<LeaseHandle>` from `LeaseHandle::into_c`,
    // not yet freed per the caller.
    unsafe { arg(p.cast::<LeaseHandle>(), "lease") }
}

/// This process's `CLOCK_MONOTONIC` in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Extends the lease to `ttl_ns` nanoseconds from now. Returns `SHMLEASE_LOST` if the
/// grant is gone (it expired before this call, was revoked or taken over, or was
/// released or detached through this handle), and `SHMLEASE_BOUND_TO_PROCESS` in a
/// `fork()`ed child (only the process that took the lease renews it).
///
/// # Safety
/// `lease` is NULL or a handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn shmlease_renew(
    lease: *mut shmlease_lease,
    ttl_ns: u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let handle = unsafe { lease_arg(lease)? };
        if handle.finished.load(Ordering::Acquire) {
            return Err(Failure::Finished);
        }
        Ok(handle.with(|l| l.renew(std::time::Duration::from_nanos(ttl_ns)))??)
    })
}

/// Releases the lease, waking anyone waiting for it. The handle must still be freed with
/// `shmlease_lease_free`. Returns `SHMLEASE_LOST` if the grant was already gone (then
/// nothing changed) or was already released or detached through this handle, and
/// `SHMLEASE_BOUND_TO_PROCESS` in a `fork()`ed child (the lease stays the parent's).
///
/// # Safety
/// `lease` is NULL or a handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn shmlease_release(lease: *mut shmlease_lease) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let handle = unsafe { lease_arg(lease)? };
        let lease = handle.finish()?;
        Ok(ManuallyDrop::into_inner(lease).release()?)
    })
}

/// Detaches the lease from this process: it is no longer released by
/// `shmlease_lease_free` nor reclaimed when this process dies, and lasts until its
/// deadline unless someone renews or releases it by name and token
/// (`shmlease_renew_token`, `shmlease_release_token`). `deadline_ns_out` (NULL: not
/// wanted) receives its deadline on this process's `CLOCK_MONOTONIC`. The handle must
/// still be freed; its token stays readable. Returns `SHMLEASE_BOUND_TO_PROCESS` in a
/// `fork()`ed child (only the process that took the lease detaches it).
///
/// # Safety
/// `lease` is NULL or a handle not yet freed; `deadline_ns_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_detach(
    lease: *mut shmlease_lease,
    deadline_ns_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) = unsafe { (lease_arg(lease)?, Out::optional(deadline_ns_out)) };
        let lease = handle.finish()?;
        let detached = ManuallyDrop::into_inner(lease).detach()?;
        if let Some(out) = out {
            let left = detached.deadline.saturating_duration_since(std::time::Instant::now());
            out.write(monotonic_ns().saturating_add(nanos(left)));
        }
        Ok(())
    })
}

/// Frees a lease handle, releasing the lease first if it is still held through it
/// (unless called in a `fork()`ed child of the process that took it). NULL does nothing.
///
/// # Safety
/// `lease` is NULL or a handle not yet freed, used by no other thread during the call
/// and never again after it.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_free(lease: *mut shmlease_lease) {
    if lease.is_null() {
        return;
    }
    boundary(|| {
        // SAFETY: a non-NULL lease pointer is a `Box<LeaseHandle>` from
        // `LeaseHandle::into_c`, handed back exactly once per the caller.
        let handle = unsafe { Box::from_raw(lease.cast::<LeaseHandle>()) };
        if !handle.finished.load(Ordering::Acquire) {
            // Dropping the rebuilt lease releases it, except in a forked child.
            drop(ManuallyDrop::into_inner(handle.lease()?));
        }
        Ok(())
    });
}

/// The lease's fencing token: larger than every token handed out for its name before.
/// Pass it to any resource that can reject stale holders.
///
/// # Safety
/// `lease` is NULL or a handle not yet freed; `token_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_token(
    lease: *const shmlease_lease,
    token_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) = unsafe { (lease_arg(lease)?, Out::new(token_out, "token_out")?) };
        out.write(handle.token);
        Ok(())
    })
}

/// When the lease expires unless renewed, in nanoseconds on this process's
/// `CLOCK_MONOTONIC` (compare with `clock_gettime(CLOCK_MONOTONIC, ...)`). Returns
/// `SHMLEASE_LOST` (leaving `*deadline_ns_out` alone) if the grant is no longer live.
///
/// # Safety
/// `lease` is NULL or a handle not yet freed; `deadline_ns_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_deadline_ns(
    lease: *const shmlease_lease,
    deadline_ns_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) =
            unsafe { (lease_arg(lease)?, Out::new(deadline_ns_out, "deadline_ns_out")?) };
        let now = monotonic_ns();
        let remaining = handle.with(|l| l.remaining())?;
        if remaining.is_zero() {
            return Err(Failure::Lib(shmlease_core::Error::Lost {
                token: handle.token,
                reason: shmlease_core::LostReason::Expired,
            }));
        }
        out.write(now.saturating_add(nanos(remaining)));
        Ok(())
    })
}

/// Nanoseconds left before the lease expires unless renewed; 0 once it is lost.
///
/// # Safety
/// `lease` is NULL or a handle not yet freed; `remaining_ns_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_remaining_ns(
    lease: *const shmlease_lease,
    remaining_ns_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) =
            unsafe { (lease_arg(lease)?, Out::new(remaining_ns_out, "remaining_ns_out")?) };
        out.write(nanos(handle.with(|l| l.remaining())?));
        Ok(())
    })
}

/// Sets `*valid_out` to whether the lease's grant is still the live one: not expired,
/// revoked, released or taken over. Check it before acting on the lease. (A detached
/// grant stays valid until its deadline.)
///
/// # Safety
/// `lease` is NULL or a handle not yet freed; `valid_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_is_valid(
    lease: *const shmlease_lease,
    valid_out: *mut bool,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) = unsafe { (lease_arg(lease)?, Out::new(valid_out, "valid_out")?) };
        out.write(handle.with(|l| l.is_valid())?);
        Ok(())
    })
}

/// Sets `*requested_out` to whether someone has asked the holder to release this lease
/// (`shmlease_request_release`) while it is still held: one atomic load, to check as
/// often as the work allows. False once the lease is lost.
///
/// # Safety
/// `lease` is NULL or a handle not yet freed; `requested_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_release_requested(
    lease: *const shmlease_lease,
    requested_out: *mut bool,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) =
            unsafe { (lease_arg(lease)?, Out::new(requested_out, "requested_out")?) };
        out.write(handle.with(|l| l.release_requested())?);
        Ok(())
    })
}
