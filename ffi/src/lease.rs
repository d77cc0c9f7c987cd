//! Lease handles. A handle keeps the parts of a Rust `Lease` (slot, token, deadline
//! hint, owning pid) and a pointer to its table, and rebuilds the `Lease` for each
//! call: a `Lease` borrows its table, which a C handle cannot express. A handle lives
//! either on the heap, with a clone of its table (`shmlease_try_acquire` and friends),
//! or in a `shmlease_lease_storage` the caller provides, borrowing the caller's table
//! handle (`shmlease_try_acquire_in`: no allocation, no reference count).

use std::mem::{align_of, size_of, ManuallyDrop};
use std::ptr::{addr_of, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use shmlease_core::{Error, Lease, LeaseTable, RawLease};

use crate::boundary::shmlease_status::SHMLEASE_OK;
use crate::boundary::{arg, boundary, boundary_fast, failed, null, shmlease_status, Failure, Out};
use crate::info::nanos;

/// A lease held by this process. Opaque: get one from `shmlease_try_acquire` or
/// `shmlease_acquire` (a handle on the heap), or from `shmlease_try_acquire_in` or
/// `shmlease_acquire_with_in` (a handle in a `shmlease_lease_storage` of yours); end it
/// with `shmlease_lease_free`, which also releases the lease if it is still held (and
/// frees the handle, for one on the heap).
///
/// Thread safety: a lease handle may be used by any number of threads at once, except
/// that `shmlease_lease_free` must not race with another call on the same handle. Of
/// threads releasing one handle at once, exactly one succeeds (the others get
/// `SHMLEASE_LOST`); a `shmlease_lease_detach` racing a `shmlease_release` of the same
/// handle may detach the lease and see it released right after.
///
/// After `fork()`, the lease stays the parent's: the parent keeps renewing and
/// releasing it as before. A child that inherited the handle may read it
/// (`shmlease_lease_token`, `_is_valid`, `_remaining_ns`, `_deadline_ns`);
/// `shmlease_renew`, `shmlease_release` and `shmlease_lease_detach` return
/// `SHMLEASE_BOUND_TO_PROCESS` there and change nothing; `shmlease_lease_free` frees the
/// child's copy of the handle (or empties the child's copy of its storage) without
/// releasing the lease.
#[allow(non_camel_case_types)]
pub struct shmlease_lease {
    _opaque: [u8; 0],
}

/// Room for one lease handle in memory of the caller's (a local variable, a field of
/// its own struct, an array), so that taking a lease allocates nothing: see
/// `shmlease_try_acquire_in`. `SHMLEASE_LEASE_STORAGE_SIZE` bytes, aligned to
/// `SHMLEASE_LEASE_STORAGE_ALIGN` (the header checks both at compile time, and
/// `shmlease_lease_storage_size()` / `_align()` give the library's own values).
/// The contents are private.
///
/// A storage is *empty* when zeroed (`shmlease_lease_storage s = {0};`, `memset`,
/// `calloc`, static storage) or after `shmlease_lease_storage_init`; filling it makes
/// it hold a lease handle (`shmlease_lease *`, the storage's own address), until
/// `shmlease_lease_free` empties it again. A storage whose lease was released or
/// detached may be filled again directly. Rules:
/// - the table handle the lease was taken from must stay open until the storage is
///   emptied (`shmlease_lease_free`) or refilled, or until the lease is released or
///   detached and the handle no longer used;
/// - the storage must not move or go away while it holds a lease not yet released
///   (moving or dropping it just loses the handle: the lease then stays held until its
///   TTL runs out or this process dies);
/// - it belongs to one process: keep it in private memory (not in a `MAP_SHARED`
///   mapping shared with other processes); a `fork()`ed child gets its own copy, which
///   follows the rules of inherited lease handles.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct shmlease_lease_storage {
    _private: [u64; 8],
}

/// The size in bytes of a `shmlease_lease_storage`: part of the ABI.
pub const SHMLEASE_LEASE_STORAGE_SIZE: usize = 64;
/// The alignment in bytes of a `shmlease_lease_storage`: part of the ABI.
pub const SHMLEASE_LEASE_STORAGE_ALIGN: usize = 8;

// The storage is what the header says, and a handle fits in it on every target.
const _: () = {
    assert!(size_of::<shmlease_lease_storage>() == SHMLEASE_LEASE_STORAGE_SIZE);
    assert!(align_of::<shmlease_lease_storage>() == SHMLEASE_LEASE_STORAGE_ALIGN);
    assert!(size_of::<LeaseHandle>() <= SHMLEASE_LEASE_STORAGE_SIZE);
    assert!(align_of::<LeaseHandle>() <= SHMLEASE_LEASE_STORAGE_ALIGN);
};

/// What a handle's memory holds (`LeaseHandle::kind`). Zero is an empty storage, so
/// that zeroed memory is one; the others are arbitrary values that stray bytes are
/// unlikely to hold, so that most garbage is refused rather than trusted.
const EMPTY: u32 = 0;
/// A handle on the heap, in a `BoxedLease`.
const BOXED: u32 = 0x6c68_6561;
/// A handle in a caller's `shmlease_lease_storage`.
const PLACED: u32 = 0x6c73_746f;

/// A lease handle: the same layout on the heap and in a caller's storage.
#[repr(C)]
pub(crate) struct LeaseHandle {
    /// `BOXED`, `PLACED`, or `EMPTY` (a storage holding no lease).
    kind: AtomicU32,
    slot: u32,
    pid: u32,
    /// Released or detached through this handle.
    finished: AtomicBool,
    token: u64,
    /// The last deadline this process knows of (table time): a hint for release.
    deadline: AtomicU64,
    /// The table: the `BoxedLease`'s own clone, or the caller's table handle.
    table: *const LeaseTable,
}

/// A handle on the heap, with the clone of the table that keeps the table mapped for
/// as long as the handle lives (it may outlive the caller's table handle). The handle
/// comes first: a pointer to the one is a pointer to the other.
#[repr(C)]
struct BoxedLease {
    handle: LeaseHandle,
    table: LeaseTable,
}

impl LeaseHandle {
    fn new(kind: u32, raw: RawLease, table: *const LeaseTable) -> LeaseHandle {
        LeaseHandle {
            kind: AtomicU32::new(kind),
            slot: raw.slot,
            pid: raw.pid,
            finished: AtomicBool::new(false),
            token: raw.token,
            deadline: AtomicU64::new(raw.deadline),
            table,
        }
    }

    /// A new handle on the heap for the lease with parts `raw`, as the C pointer.
    pub(crate) fn boxed(raw: RawLease, table: &LeaseTable) -> *mut shmlease_lease {
        let handle = LeaseHandle::new(BOXED, raw, std::ptr::null());
        let p = Box::into_raw(Box::new(BoxedLease { handle, table: table.clone() }));
        // SAFETY: `p` is the live allocation just made, used by nobody else yet; the
        // handle points at the table beside it, which lives and moves with it.
        unsafe { (*p).handle.table = addr_of!((*p).table) };
        p.cast()
    }

    /// Writes a handle for the lease with parts `raw` into `storage` (checked by
    /// [`vacant`]), as the C pointer.
    ///
    /// # Safety
    /// `storage` is valid for writes and used by no other thread during the call;
    /// `table` is the caller's table handle, open for as long as the storage holds the
    /// handle (the contract of `shmlease_try_acquire_in`).
    pub(crate) unsafe fn place(
        storage: NonNull<shmlease_lease_storage>,
        raw: RawLease,
        table: &LeaseTable,
    ) -> *mut shmlease_lease {
        let p = storage.cast::<LeaseHandle>().as_ptr();
        // SAFETY: per the caller, and the handle fits the storage's size and alignment
        // (the const asserts above). `write` does not drop what was there: an empty
        // storage, or a handle released or detached, which owns nothing.
        unsafe { p.write(LeaseHandle::new(PLACED, raw, table)) };
        p.cast()
    }

    fn table(&self) -> &LeaseTable {
        // SAFETY: a boxed handle points at the clone beside it; a placed one at the
        // caller's table handle, which stays open while the storage holds the handle
        // (the contract of `shmlease_try_acquire_in`).
        unsafe { &*self.table }
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
        Lease::from_raw(self.table(), self.raw()).map(ManuallyDrop::new).ok_or_else(does_not_fit)
    }

    /// Runs `f` on the rebuilt lease and takes it apart again.
    fn with<R>(&self, f: impl FnOnce(&Lease<'_>) -> R) -> Result<R, Failure> {
        let lease = self.lease()?;
        let result = f(&lease);
        let raw = ManuallyDrop::into_inner(lease).into_raw();
        self.deadline.store(raw.deadline, Ordering::Relaxed);
        Ok(result)
    }

    /// Releases the lease through this handle, and marks the handle finished (in a
    /// `fork()`ed child it is not marked: the lease stays the parent's, and the release
    /// is refused, `SHMLEASE_BOUND_TO_PROCESS`). Returns the status itself (see
    /// [`boundary_fast`]).
    ///
    /// The fast path: straight-line, with no lease rebuilt or returned through memory
    /// (a store-forwarding stall per release), no read-modify-write on the handle and no
    /// system call. Of two threads releasing one handle at once, exactly one succeeds
    /// without a swap of `finished`: both reach the release's CAS on the grant word,
    /// which only one can win with this token (tokens are never reissued). The process
    /// is told apart by the library's cached pid (in `RawLease::release`):
    /// `std::process::id()` is a system call (getpid), which was 44% of the cycles of a
    /// C take + release.
    #[inline(always)]
    fn release(&self) -> shmlease_status {
        if self.finished.load(Ordering::Acquire) {
            return failed(Failure::Finished);
        }
        match self.raw().release(self.table()) {
            Some(Ok(())) => {
                self.finished.store(true, Ordering::Release);
                SHMLEASE_OK
            }
            Some(Err(e)) => self.release_refused(e),
            None => failed(does_not_fit()),
        }
    }

    /// [`LeaseHandle::release`] refused with `e`: the handle is finished unless `e` is
    /// the refusal of a `fork()`ed child (the lease is still the parent's, and the
    /// parent's copy of the handle is the one to finish). A release that found the grant
    /// gone (`SHMLEASE_LOST`) finishes the handle as a successful one does.
    #[cold]
    #[inline(never)]
    fn release_refused(&self, e: Error) -> shmlease_status {
        if !matches!(e, Error::BoundToProcess { .. }) {
            self.finished.store(true, Ordering::Release);
        }
        failed(Failure::Lib(e))
    }

    /// Marks the handle finished before detaching; fails if it already was. In a
    /// `fork()`ed child the handle is not marked: the lease stays the parent's, and the
    /// rebuilt lease refuses to detach (`SHMLEASE_BOUND_TO_PROCESS`).
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

    /// Releases the lease if it is still held through this handle (in a `fork()`ed
    /// child, dropping the rebuilt lease does nothing): what ending a handle does.
    fn end(&self) -> Result<(), Failure> {
        if !self.finished.load(Ordering::Acquire) {
            drop(ManuallyDrop::into_inner(self.lease()?));
        }
        Ok(())
    }
}

#[cold]
fn does_not_fit() -> Failure {
    Failure::Internal("lease handle does not fit its table".into())
}

/// Borrows the handle behind a lease pointer.
///
/// # Safety
/// `p` is NULL, or a live heap handle, or points to a `shmlease_lease_storage` (of any
/// contents, initialised memory), for `'a`.
unsafe fn lease_arg<'a>(p: *const shmlease_lease) -> Result<&'a LeaseHandle, Failure> {
    // SAFETY: a non-NULL lease pointer is a `BoxedLease` from `LeaseHandle::boxed`, not
    // yet freed, or a storage, per the caller; every field of a handle is valid for any
    // bytes, and `kind` says which it is before anything else is trusted.
    let handle = unsafe { arg(p.cast::<LeaseHandle>(), "lease")? };
    match handle.kind.load(Ordering::Relaxed) {
        BOXED | PLACED => Ok(handle),
        kind => Err(Failure::NotALease { what: "lease", empty: kind == EMPTY }),
    }
}

/// Checks that `storage` may receive a lease: empty, or holding a handle released or
/// detached through it. Refuses one that still holds a lease (filling it would lose
/// the handle, and leave the lease held until its TTL), and bytes that are no handle.
///
/// # Safety
/// `storage` is NULL or points to a `shmlease_lease_storage` (initialised memory),
/// used by no other thread during the call.
pub(crate) unsafe fn vacant(
    storage: *mut shmlease_lease_storage,
) -> Result<NonNull<shmlease_lease_storage>, Failure> {
    // SAFETY: forwarded contract.
    if let Some(vacant) = unsafe { vacant_fast(storage) } {
        return Ok(vacant);
    }
    let storage = NonNull::new(storage).ok_or_else(|| null("storage"))?;
    // SAFETY: per the caller; every field of a handle is valid for any bytes.
    let handle = unsafe { storage.cast::<LeaseHandle>().as_ref() };
    match handle.kind.load(Ordering::Relaxed) {
        PLACED => Err(Failure::StorageHeld),
        _ => Err(Failure::NotALease { what: "storage", empty: false }),
    }
}

/// Whether `storage` may receive a lease, for a fast path: `None` if not, and [`vacant`]
/// then says why. No `Result<_, Failure>`, so no drop glue to run.
///
/// # Safety
/// As for [`vacant`].
#[inline(always)]
pub(crate) unsafe fn vacant_fast(
    storage: *mut shmlease_lease_storage,
) -> Option<NonNull<shmlease_lease_storage>> {
    let storage = NonNull::new(storage)?;
    // SAFETY: per the caller; every field of a handle is valid for any bytes.
    let handle = unsafe { storage.cast::<LeaseHandle>().as_ref() };
    match handle.kind.load(Ordering::Relaxed) {
        EMPTY => Some(storage),
        PLACED if handle.finished.load(Ordering::Acquire) => Some(storage),
        _ => None,
    }
}

/// Empties `storage`, whatever it holds: zeroed bytes, as `= {0}` would make them. For
/// memory of unknown contents (`malloc`, the stack) before its first use; a storage
/// that holds a lease not yet released is emptied with `shmlease_lease_free` instead
/// (emptying it here loses the handle, and the lease stays held until its TTL runs out
/// or this process dies). Returns `SHMLEASE_NULL_ARGUMENT` for NULL.
///
/// # Safety
/// `storage` is NULL or valid for writes of a `shmlease_lease_storage`, used by no other
/// thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_storage_init(
    storage: *mut shmlease_lease_storage,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let out = unsafe { Out::new(storage, "storage")? };
        out.write(shmlease_lease_storage { _private: [0; 8] });
        Ok(())
    })
}

/// The size of a `shmlease_lease_storage` in this library, in bytes: equal to the
/// header's `SHMLEASE_LEASE_STORAGE_SIZE` (a program can compare the two, to check that
/// the library it runs with is the one it was compiled for).
#[no_mangle]
pub extern "C" fn shmlease_lease_storage_size() -> usize {
    SHMLEASE_LEASE_STORAGE_SIZE
}

/// The alignment of a `shmlease_lease_storage` in this library, in bytes: equal to the
/// header's `SHMLEASE_LEASE_STORAGE_ALIGN`.
#[no_mangle]
pub extern "C" fn shmlease_lease_storage_align() -> usize {
    SHMLEASE_LEASE_STORAGE_ALIGN
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
/// `lease` is NULL, a heap handle not yet freed, or a storage.
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

/// Releases the lease, waking anyone waiting for it. A heap handle must still be freed
/// with `shmlease_lease_free`; a handle in a `shmlease_lease_storage` needs nothing more
/// (the storage may be filled again). Returns `SHMLEASE_LOST` if the grant was already gone (then
/// nothing changed) or was already released or detached through this handle, and
/// `SHMLEASE_BOUND_TO_PROCESS` in a `fork()`ed child (the lease stays the parent's).
///
/// # Safety
/// `lease` is NULL, a heap handle not yet freed, or a storage.
#[no_mangle]
pub unsafe extern "C" fn shmlease_release(lease: *mut shmlease_lease) -> shmlease_status {
    boundary_fast(|| {
        // SAFETY: forwarded contract.
        match unsafe { lease_arg(lease) } {
            Ok(handle) => handle.release(),
            Err(failure) => failed(failure),
        }
    })
}

/// Detaches the lease from this process: it is no longer released by
/// `shmlease_lease_free` nor reclaimed when this process dies, and lasts until its
/// deadline unless someone renews or releases it by name and token
/// (`shmlease_renew_token`, `shmlease_release_token`). `deadline_ns_out` (NULL: not
/// wanted) receives its deadline on this process's `CLOCK_MONOTONIC`. A heap handle
/// must still be freed; the token stays readable. Returns `SHMLEASE_BOUND_TO_PROCESS`
/// in a `fork()`ed child (only the process that took the lease detaches it).
///
/// # Safety
/// `lease` is NULL, a heap handle not yet freed, or a storage; `deadline_ns_out` is NULL
/// or writable.
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

/// Ends a lease handle, releasing the lease first if it is still held through it
/// (unless called in a `fork()`ed child of the process that took it). A heap handle is
/// freed; a handle in a `shmlease_lease_storage` is not freed (the storage is yours):
/// the storage is emptied, ready to be filled again. NULL, and an empty storage, do
/// nothing.
///
/// # Safety
/// `lease` is NULL, or a heap handle not yet freed, or points to a
/// `shmlease_lease_storage`; used by no other thread during the call, and (a heap
/// handle) never again after it.
#[no_mangle]
pub unsafe extern "C" fn shmlease_lease_free(lease: *mut shmlease_lease) {
    if lease.is_null() {
        return;
    }
    boundary(|| {
        // SAFETY: per the caller, a heap handle or a storage: `kind` says which, and
        // is valid for any bytes.
        let kind = unsafe { &(*lease.cast::<LeaseHandle>()).kind }.load(Ordering::Relaxed);
        match kind {
            BOXED => {
                // SAFETY: a `BoxedLease` from `LeaseHandle::boxed`, handed back exactly
                // once per the caller.
                let boxed = unsafe { Box::from_raw(lease.cast::<BoxedLease>()) };
                boxed.handle.end()
            }
            PLACED => {
                // SAFETY: a storage holding a handle (its kind), used by no other
                // thread during the call per the caller.
                let handle = unsafe { &*lease.cast::<LeaseHandle>() };
                let ended = handle.end();
                handle.kind.store(EMPTY, Ordering::Relaxed);
                ended
            }
            EMPTY => Ok(()),
            _ => Err(Failure::NotALease { what: "lease", empty: false }),
        }
    });
}

/// The lease's fencing token: larger than every token handed out for its name before.
/// Pass it to any resource that can reject stale holders.
///
/// # Safety
/// `lease` is NULL, a heap handle not yet freed, or a storage; `token_out` is NULL or writable.
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
/// `lease` is NULL, a heap handle not yet freed, or a storage; `deadline_ns_out` is NULL
/// or writable.
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
/// `lease` is NULL, a heap handle not yet freed, or a storage; `remaining_ns_out` is
/// NULL or writable.
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
/// `lease` is NULL, a heap handle not yet freed, or a storage; `valid_out` is NULL or writable.
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
/// `lease` is NULL, a heap handle not yet freed, or a storage; `requested_out` is NULL or writable.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{
        shmlease_table, shmlease_table_close, shmlease_table_create, shmlease_table_options,
        shmlease_table_remove, shmlease_try_acquire_in,
    };
    use std::ffi::{CStr, CString};

    /// A handle is memory of the caller's: one whose slot lies outside its table is
    /// refused (`SHMLEASE_INTERNAL`), never followed, and the handle stays unfinished.
    #[test]
    fn a_handle_whose_slot_is_outside_its_table_is_refused() {
        let path = std::env::temp_dir().join(format!("shmlease-ffi-fit-{}", std::process::id()));
        let path = CString::new(path.to_str().unwrap()).unwrap();
        let options = shmlease_table_options { capacity: 4, mode: 0, flags: 0 };
        let mut table: *mut shmlease_table = std::ptr::null_mut();
        let mut storage = shmlease_lease_storage { _private: [0; 8] };
        let mut lease: *mut shmlease_lease = std::ptr::null_mut();
        // SAFETY: C strings, a zeroed storage, writable out-pointers; the table is
        // closed after the last use of the lease.
        unsafe {
            let status = shmlease_table_create(path.as_ptr(), &options, &mut table);
            assert_eq!(status, SHMLEASE_OK);
            let name = c"fits";
            let status = shmlease_try_acquire_in(
                table,
                name.as_ptr(),
                10_000_000_000,
                &mut storage,
                &mut lease,
                std::ptr::null_mut(),
            );
            assert_eq!(status, SHMLEASE_OK);
            let handle = &mut *lease.cast::<LeaseHandle>();
            let slot = handle.slot;
            handle.slot = 4;
            assert_eq!(shmlease_release(lease), shmlease_status::SHMLEASE_INTERNAL);
            let error = CStr::from_ptr(crate::boundary::shmlease_last_error());
            assert!(error.to_str().unwrap().contains("does not fit"), "{error:?}");
            handle.slot = u32::MAX;
            assert_eq!(shmlease_release(lease), shmlease_status::SHMLEASE_INTERNAL);
            handle.slot = slot;
            assert_eq!(shmlease_release(lease), SHMLEASE_OK);
            shmlease_table_close(table);
            assert_eq!(shmlease_table_remove(path.as_ptr()), SHMLEASE_OK);
        }
    }
}
