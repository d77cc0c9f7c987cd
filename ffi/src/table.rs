//! Table handles: creating, opening, closing and removing tables, taking leases, and the
//! operations that work on a name (by token, revoke, inspect).

use std::ffi::{c_char, c_void};
use std::time::{Duration, Instant, SystemTime};

use shmlease_core::{
    AcquireOptions, Error, Interrupt, Lease, LeaseTable, RawLease, RemoveOptions, TableOptions,
};

use crate::boundary::shmlease_status::SHMLEASE_OK;
use crate::boundary::{
    arg, ascii_arg, boundary, boundary_fast, failed, opt_str_arg, shmlease_status, str_arg,
    Failure, Out,
};
use crate::info::{
    nanos, shmlease_grant, shmlease_held_by, shmlease_holder, shmlease_info, shmlease_queued,
};
use crate::lease::{shmlease_lease, shmlease_lease_storage, vacant, vacant_fast, LeaseHandle};

/// An open lease table. Opaque: get one from `shmlease_table_open`,
/// `shmlease_table_create` or `shmlease_table_open_or_create`, give it back with
/// `shmlease_table_close`.
///
/// Thread safety: a table handle may be used by any number of threads at once, except
/// that `shmlease_table_close` must not race with another call on the same handle.
/// Leases taken from it stay usable after it is closed (they keep the mapping alive).
///
/// After `fork()`: a child may do everything with a table handle it inherited, as
/// with one it opened itself (take, renew, release and revoke leases, close it); its
/// leases are its own, bound to the child.
#[allow(non_camel_case_types)]
pub struct shmlease_table {
    _opaque: [u8; 0],
}

/// Open a table owned by another user (off by default: its owner can rewrite it under
/// you). A bit for `shmlease_table_options.flags`.
pub const SHMLEASE_ALLOW_FOREIGN_OWNER: u32 = 1;
/// Open or create a table every user may write (off by default: any local user could
/// forge or steal leases). A bit for `shmlease_table_options.flags`.
pub const SHMLEASE_ALLOW_WORLD_WRITABLE: u32 = 2;

/// How to create and open a table. A zeroed struct (or a NULL pointer) means the
/// defaults: 4096 slots, mode 0600, only tables of your own user that others cannot
/// write.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_table_options {
    /// Number of slots, 1 ..= 16777216 (each 128 bytes); 0 means 4096. Used only when
    /// creating.
    pub capacity: u32,
    /// Permission bits of a new table (the umask does not apply); 0 means 0600. Used
    /// only when creating.
    pub mode: u32,
    /// `SHMLEASE_ALLOW_*` bits, or 0.
    pub flags: u32,
}

fn table_options(options: Option<&shmlease_table_options>) -> Result<TableOptions, Failure> {
    let Some(o) = options else { return Ok(TableOptions::new()) };
    let known = SHMLEASE_ALLOW_FOREIGN_OWNER | SHMLEASE_ALLOW_WORLD_WRITABLE;
    if o.flags & !known != 0 {
        return Err(Failure::Invalid(
            shmlease_status::SHMLEASE_INVALID_OPTIONS,
            format!("unknown flag bits {:#x}", o.flags & !known),
        ));
    }
    let mut t = TableOptions::new()
        .allow_foreign_owner(o.flags & SHMLEASE_ALLOW_FOREIGN_OWNER != 0)
        .allow_world_writable(o.flags & SHMLEASE_ALLOW_WORLD_WRITABLE != 0);
    if o.capacity != 0 {
        t = t.capacity(o.capacity);
    }
    if o.mode != 0 {
        t = t.mode(o.mode);
    }
    Ok(t)
}

/// Borrows the table behind a handle.
///
/// # Safety
/// `p` is NULL or a handle from `shmlease_table_*` not yet closed, for `'a`.
pub(crate) unsafe fn table_arg<'a>(p: *const shmlease_table) -> Result<&'a LeaseTable, Failure> {
    // SAFETY: a non-NULL handle is a `Box<LeaseTable>` turned into a pointer by
    // `open_table`, still alive per the caller.
    unsafe { arg(p.cast::<LeaseTable>(), "table") }
}

/// The shared body of the three ways to get a table.
///
/// # Safety
/// `location` is NULL or a NUL-terminated string; `options` is NULL or valid for reads;
/// `table_out` is NULL or valid for writes of a pointer.
unsafe fn open_table(
    location: *const c_char,
    options: *const shmlease_table_options,
    table_out: *mut *mut shmlease_table,
    how: fn(&str, &TableOptions) -> Result<LeaseTable, Error>,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: the pointer contracts are the exported function's, forwarded here.
        let (location, options, out) = unsafe {
            (
                str_arg(location, "location")?,
                arg(options, "options").ok(),
                Out::new(table_out, "table_out")?,
            )
        };
        let table = how(location, &table_options(options)?)?;
        out.write(Box::into_raw(Box::new(table)).cast());
        Ok(())
    })
}

/// Creates a new table at `location` and opens it. A location containing `/` is a file
/// path; a bare name is a POSIX shared-memory object (`/dev/shm/NAME`). Fails with
/// `SHMLEASE_ALREADY_EXISTS` if anything is there. The table appears fully initialised
/// or not at all, even if this process is killed half-way.
///
/// `options` may be NULL (defaults). On success `*table_out` receives a handle to close
/// with `shmlease_table_close`.
///
/// # Safety
/// `location` is NULL or NUL-terminated; `options` is NULL or points to a
/// `shmlease_table_options`; `table_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_table_create(
    location: *const c_char,
    options: *const shmlease_table_options,
    table_out: *mut *mut shmlease_table,
) -> shmlease_status {
    // SAFETY: forwarded contract.
    unsafe { open_table(location, options, table_out, |l, o| LeaseTable::create(l, o)) }
}

/// Opens the existing table at `location` (see `shmlease_table_create` for locations);
/// only the `flags` of `options` (NULL: none) matter. Fails with `SHMLEASE_NOT_FOUND` if
/// there is none.
///
/// # Safety
/// As for `shmlease_table_create`.
#[no_mangle]
pub unsafe extern "C" fn shmlease_table_open(
    location: *const c_char,
    options: *const shmlease_table_options,
    table_out: *mut *mut shmlease_table,
) -> shmlease_status {
    // SAFETY: forwarded contract.
    unsafe { open_table(location, options, table_out, |l, o| LeaseTable::open_with(l, o)) }
}

/// Opens the table at `location`, creating it with `options` (NULL: defaults) if there
/// is none. Any number of processes may race here: all end up with the same table.
///
/// # Safety
/// As for `shmlease_table_create`.
#[no_mangle]
pub unsafe extern "C" fn shmlease_table_open_or_create(
    location: *const c_char,
    options: *const shmlease_table_options,
    table_out: *mut *mut shmlease_table,
) -> shmlease_status {
    // SAFETY: forwarded contract.
    unsafe { open_table(location, options, table_out, |l, o| LeaseTable::open_or_create(l, o)) }
}

/// Closes a table handle. Leases taken from it stay valid and usable until freed.
/// NULL does nothing.
///
/// # Safety
/// `table` is NULL or a handle not yet closed, used by no other thread during the call
/// and never again after it.
#[no_mangle]
pub unsafe extern "C" fn shmlease_table_close(table: *mut shmlease_table) {
    if table.is_null() {
        return;
    }
    boundary(|| {
        // SAFETY: a non-NULL handle is a `Box<LeaseTable>` from `open_table`, and the
        // caller hands it back exactly once.
        drop(unsafe { Box::from_raw(table.cast::<LeaseTable>()) });
        Ok(())
    });
}

/// Removes the table's name from the file system, refusing with `SHMLEASE_IN_USE`
/// while any lease in it is live (`shmlease_last_error()` names them). Processes that
/// have the table open keep using it, while the next open-or-create at the location
/// makes a new table, whose leases do not exclude the old one's (two holders of a name,
/// tokens starting over): remove a table only when nothing uses it. The check is a
/// safety net, not a lock (a lease granted just after it is not seen). Never removes
/// something that is not a lease table (`SHMLEASE_NOT_A_TABLE`). Same as
/// `shmlease_table_remove_with(location, 0)`.
///
/// # Safety
/// `location` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmlease_table_remove(location: *const c_char) -> shmlease_status {
    // SAFETY: forwarded contract.
    unsafe { shmlease_table_remove_with(location, 0) }
}

/// Remove the table even while leases in it are live (see `shmlease_table_remove`
/// for what that risks). A bit for the `flags` of `shmlease_table_remove_with`.
pub const SHMLEASE_REMOVE_FORCE: u32 = 1;

/// `shmlease_table_remove` with `flags`: 0, or `SHMLEASE_REMOVE_FORCE` to remove the
/// table without checking for live leases. Unknown bits give
/// `SHMLEASE_INVALID_OPTIONS`.
///
/// # Safety
/// `location` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmlease_table_remove_with(
    location: *const c_char,
    flags: u32,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let location = unsafe { str_arg(location, "location")? };
        if flags & !SHMLEASE_REMOVE_FORCE != 0 {
            return Err(Failure::Invalid(
                shmlease_status::SHMLEASE_INVALID_OPTIONS,
                format!("unknown flag bits {:#x}", flags & !SHMLEASE_REMOVE_FORCE),
            ));
        }
        let options = RemoveOptions::new().force(flags & SHMLEASE_REMOVE_FORCE != 0);
        Ok(LeaseTable::remove_with(location, &options)?)
    })
}

/// The number of slots of the table (the most names that can have a lease at once).
///
/// # Safety
/// `table` is NULL or an open handle; `capacity_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_table_capacity(
    table: *const shmlease_table,
    capacity_out: *mut u32,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, out) = unsafe { (table_arg(table)?, Out::new(capacity_out, "capacity_out")?) };
        out.write(table.capacity());
        Ok(())
    })
}

fn ttl(ttl_ns: u64) -> Duration {
    Duration::from_nanos(ttl_ns)
}

/// Takes a lease, filling `held_by` on refusal; `keep` makes the handle of its parts.
#[inline(always)]
fn take(
    table: &LeaseTable,
    name: &str,
    ttl_ns: u64,
    options: Option<&AcquireOptions>,
    held_by: Option<Out<shmlease_held_by>>,
    keep: impl FnOnce(RawLease),
) -> Result<(), Failure> {
    // Without options: the library's own fast path for a try (no options built), which
    // returns the parts alone (no `Lease` made, taken apart and dropped).
    let taken = match options {
        None => table.try_acquire_raw(name, ttl(ttl_ns)),
        Some(options) => table.acquire_with(name, ttl(ttl_ns), options).map(Lease::into_raw),
    };
    match taken {
        Ok(raw) => {
            keep(raw);
            Ok(())
        }
        Err(e) => Err(refused(table, name, e, held_by)),
    }
}

/// Takes a lease into a new heap handle, written to `out`.
fn take_boxed(
    table: &LeaseTable,
    name: &str,
    ttl_ns: u64,
    options: Option<&AcquireOptions>,
    out: Out<*mut shmlease_lease>,
    held_by: Option<Out<shmlease_held_by>>,
) -> Result<(), Failure> {
    take(table, name, ttl_ns, options, held_by, |raw| out.write(LeaseHandle::boxed(raw, table)))
}

/// The failure for a refused acquisition (or campaign) of `name`, after filling
/// `held_by` (if wanted) with who is in the way when `e` says so.
pub(crate) fn refused(
    table: &LeaseTable,
    name: &str,
    e: Error,
    held_by: Option<Out<shmlease_held_by>>,
) -> Failure {
    if let Some(held_by) = held_by {
        match &e {
            Error::Held { token, remaining, holder } => held_by.write(shmlease_held_by {
                token: *token,
                remaining_ns: nanos(*remaining),
                holder: shmlease_holder::from_rust(holder.as_ref()),
            }),
            Error::TimedOut { token, holder, .. } => {
                // The error has no time left; the table may still know it (a grant, or
                // for a fair acquirer a place in line ahead of where it waited).
                let remaining = match table.get(name) {
                    Ok(Some(i)) => {
                        i.grants.iter().find(|g| g.token == *token).map(|g| g.remaining).or_else(
                            || {
                                let place = i.queue.iter().find(|q| q.ticket == *token)?;
                                place.expires_at?.duration_since(SystemTime::now()).ok()
                            },
                        )
                    }
                    _ => None,
                };
                let remaining = remaining.unwrap_or(Duration::ZERO);
                held_by.write(shmlease_held_by {
                    token: *token,
                    remaining_ns: nanos(remaining),
                    holder: shmlease_holder::from_rust(holder.as_ref()),
                })
            }
            _ => {}
        }
    }
    e.into()
}

/// How to take a lease, for `shmlease_acquire_with`. A zeroed struct (or a NULL pointer)
/// means the defaults: don't wait, no label, an exclusive lease. Fields are only ever
/// appended, each with zero meaning its default, so a struct zeroed with `memset` (or
/// `= {0}`) before its fields are set keeps meaning the defaults for the fields the
/// caller does not name.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_acquire_options {
    /// How long to wait while the lease is held (for a name with permits: while all its
    /// permits are), in nanoseconds: 0 not at all, negative forever.
    pub timeout_ns: i64,
    /// A label shown to others inspecting the lease: NUL-terminated UTF-8, 8 bytes at
    /// most; NULL for none. Read during the call only.
    pub label: *const c_char,
    /// How many may hold the name at once, 1 ..= 128; 0 or 1 is an exclusive lease.
    /// With N >= 2, up to N callers hold the name at once, each with a lease handle of
    /// its own (its own TTL, holder and token: tokens unique to the name, growing in the
    /// order taken), renewed, released and freed like any other; the next caller gets
    /// `SHMLEASE_HELD` (or waits for any permit to end). Every user of a name must give
    /// the same N: it is recorded when the name is first used, and kept while the table
    /// remembers the name (also while no permit is held). Another N, an exclusive
    /// acquisition of a name with permits, or permits asked of a name held as an
    /// exclusive lease returns `SHMLEASE_WRONG_KIND`. An exclusive name nobody holds
    /// takes permits from its next user.
    pub permits: u32,
    /// Take a shared grant (false: not shared). A name becomes shared when it is first
    /// acquired shared (an exclusive holder it has then stays its holder), and stays
    /// shared while the table remembers it: up to 64 shared holders at once, each with a
    /// lease handle of its own (own TTL, holder and token), or one exclusive holder,
    /// never both. An acquisition without `shared` is the name's exclusive holder: it
    /// waits (as `timeout_ns` allows) until every shared holder has left, and while it
    /// waits no new shared grant is made, so shared holders cannot starve it; a shared
    /// acquirer waits while an exclusive holder holds the name or waits for it. There is
    /// no fairness the other way: a steady stream of exclusive acquirers can keep shared
    /// ones waiting. Tokens of the name grow across both kinds. `shared` with 2 or more
    /// `permits` returns `SHMLEASE_INVALID_OPTIONS`; `shared` on a name with permits, or
    /// 2 or more `permits` asked of a shared name, `SHMLEASE_WRONG_KIND`.
    pub shared: bool,
    /// Wait in line (false: not fair). Among acquirers of the name that ask for
    /// fairness, the one that started waiting first is granted first, whatever the
    /// name's kind (combine it with `permits` or `shared`). One that has to wait takes
    /// a place in the name's queue (`shmlease_get_queue` lists it): a place bound to
    /// this process, with a 2 s TTL renewed while the call waits. A waiter ahead that
    /// gives up (its timeout runs out) is passed over at once, one that dies once its
    /// death is provable (within 50 ms), one that is stopped or hung once its place
    /// expires (2 s; a waiter stopped that long loses its place and queues again at the
    /// back). Fairness is among fair acquirers only: acquisitions without `fair` do not
    /// look at the queue, and may take the name between two fair ones. With a 0
    /// `timeout_ns` a fair acquisition does not pass those in line: while anyone waits,
    /// it returns `SHMLEASE_HELD` with `held_by` describing the first in line (its
    /// ticket in `token`, its place's time left). At most 127 fair acquirers can wait
    /// for one name at once: the next gets `SHMLEASE_BUSY`.
    pub fair: bool,
    /// A way to end a wait early (NULL: none). While the call waits, it calls
    /// `interrupt(interrupt_ctx)` on the waiting thread each time the wait wakes, and at
    /// least every 50 ms; once it returns true, the wait gives up what it held (its
    /// place in a fair queue, an exclusive acquirer's hold on a shared name: kept
    /// between wake-ups, unlike a loop of short waits) and the call returns
    /// `SHMLEASE_INTERRUPTED`. For a program that must react during a long wait: a flag
    /// its signal handler sets, a shutdown request from another thread. Never called by
    /// a call that does not wait, nor after the call returns. It must not call back into
    /// shmlease for the same lease name.
    pub interrupt: Option<unsafe extern "C" fn(ctx: *mut c_void) -> bool>,
    /// Passed to `interrupt` as it is.
    pub interrupt_ctx: *mut c_void,
}

/// The caller's interrupt callback as the library's [`Interrupt`].
fn c_interrupt(check: unsafe extern "C" fn(*mut c_void) -> bool, ctx: *mut c_void) -> Interrupt {
    // The context travels as an address: the library asks the interrupt on the waiting
    // thread, during the call only (the options, and the interrupt with them, are
    // dropped when the call returns), so it is never used where or when the caller did
    // not hand it over.
    let ctx = ctx as usize;
    Interrupt::new(move || {
        // SAFETY: the caller's contract for `shmlease_acquire_options.interrupt`: a
        // function that may be called with `interrupt_ctx` during the call.
        unsafe { check(ctx as *mut c_void) }
    })
}

/// The Rust options for a C acquisition: `timeout_ns` as in `shmlease_acquire`.
fn acquire_options(
    timeout_ns: i64,
    label: Option<&str>,
    permits: u32,
    shared: bool,
    fair: bool,
) -> Result<AcquireOptions, Failure> {
    let mut options = AcquireOptions::new().permits(permits.max(1))?.shared(shared).fair(fair);
    if let Some(label) = label {
        options = options.label(label)?;
    }
    match timeout_ns {
        0 => {}
        t if t < 0 => options = options.wait(None),
        t => options = options.wait(Some(Duration::from_nanos(t.unsigned_abs()))),
    }
    Ok(options)
}

/// Takes the lease on `name` for `ttl_ns` nanoseconds if nobody holds it; never waits.
///
/// The lease is bound to this process: if it dies, others may take the lease as soon as
/// they can prove the death, else when the TTL runs out. On success `*lease_out`
/// receives a handle to free with `shmlease_lease_free` (which also releases the lease
/// if still held). If someone else holds it, returns `SHMLEASE_HELD` and, when
/// `held_by` is not NULL, fills it with who and for how long.
///
/// A grant runs from the library's clock reading: for a free name and a TTL of 256
/// coarse-clock ticks or more (1.024 s with a 4 ms tick), `CLOCK_MONOTONIC_COARSE`, a
/// tick or so behind, so the grant may end that much before "call time + ttl_ns" (never
/// after), for every kind of acquisition. Judge a lease by `shmlease_lease_is_valid`,
/// `shmlease_lease_remaining_ns` and `shmlease_lease_deadline_ns`.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated; `lease_out` is
/// NULL or writable; `held_by` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_try_acquire(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    lease_out: *mut *mut shmlease_lease,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out, held_by) = unsafe {
            (
                table_arg(table)?,
                str_arg(name, "name")?,
                Out::new(lease_out, "lease_out")?,
                Out::optional(held_by),
            )
        };
        take_boxed(table, name, ttl_ns, None, out, held_by)
    })
}

/// Takes the lease on `name` for `ttl_ns` nanoseconds, waiting while someone else holds
/// it: up to `timeout_ns` nanoseconds, forever if negative, not at all if 0 (then it is
/// `shmlease_try_acquire` with a label). Waiting sleeps on a futex and wakes at once on
/// release, revocation or expiry. `label` (NULL: none) is up to 8 bytes shown to others
/// inspecting the lease.
///
/// Returns `SHMLEASE_TIMED_OUT` (or `SHMLEASE_HELD` for a 0 timeout) if the lease stayed
/// held, and then fills `held_by` if it is not NULL. Otherwise as `shmlease_try_acquire`.
/// `shmlease_acquire_with` takes the same options in a struct, and permits.
///
/// # Safety
/// As for `shmlease_try_acquire`; `label` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmlease_acquire(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    timeout_ns: i64,
    label: *const c_char,
    lease_out: *mut *mut shmlease_lease,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, label, out, held_by) = unsafe {
            (
                table_arg(table)?,
                str_arg(name, "name")?,
                opt_str_arg(label, "label")?,
                Out::new(lease_out, "lease_out")?,
                Out::optional(held_by),
            )
        };
        let options = acquire_options(timeout_ns, label, 1, false, false)?;
        take_boxed(table, name, ttl_ns, Some(&options), out, held_by)
    })
}

/// Takes a lease with every option (`options` may be NULL: the defaults), so that it
/// is `shmlease_acquire` with `options->permits` (up to that many holders of `name` at
/// once, each with a lease handle of its own), `options->shared` (a shared grant) and
/// `options->fair` (granted in arrival order among fair acquirers): see
/// `shmlease_acquire_options`.
///
/// For a name with permits, `SHMLEASE_HELD` (`SHMLEASE_TIMED_OUT` after waiting) means
/// that every permit is held; `held_by` then describes the grant that ends first. For a
/// shared acquirer it means that an exclusive holder has the name (or waits for it), or
/// that 64 shared holders have it; for an exclusive acquirer of a shared name, that
/// shared holders stayed (`held_by` describes one of them). `SHMLEASE_WRONG_KIND` if the name is
/// in use as another kind: with another number of permits (or as an exclusive lease),
/// or shared where it has permits, or the other way round. For a fair acquirer,
/// `SHMLEASE_HELD` may also mean that others wait in line (`held_by` then describes the
/// first of them: its ticket, its waiter), and after `SHMLEASE_TIMED_OUT` `held_by` may
/// describe a waiter that was ahead; `SHMLEASE_BUSY` that 127 already wait. Otherwise
/// as `shmlease_acquire`.
///
/// # Safety
/// As for `shmlease_try_acquire`; `options` is NULL or points to a
/// `shmlease_acquire_options` whose `label` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmlease_acquire_with(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    options: *const shmlease_acquire_options,
    lease_out: *mut *mut shmlease_lease,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out, held_by) = unsafe {
            (
                table_arg(table)?,
                str_arg(name, "name")?,
                Out::new(lease_out, "lease_out")?,
                Out::optional(held_by),
            )
        };
        // SAFETY: forwarded contract.
        let options = unsafe { options_arg(options)? };
        take_boxed(table, name, ttl_ns, Some(&options), out, held_by)
    })
}

/// The options of `shmlease_acquire_with` (NULL: the defaults).
///
/// # Safety
/// `options` is NULL or points to a `shmlease_acquire_options` whose `label` is NULL or
/// NUL-terminated.
unsafe fn options_arg(options: *const shmlease_acquire_options) -> Result<AcquireOptions, Failure> {
    // SAFETY: forwarded contract.
    match unsafe { arg(options, "options") }.ok() {
        None => Ok(AcquireOptions::new()),
        Some(o) => {
            // SAFETY: forwarded contract (the options' label).
            let label = unsafe { opt_str_arg(o.label, "label")? };
            let options = acquire_options(o.timeout_ns, label, o.permits, o.shared, o.fair)?;
            Ok(match o.interrupt {
                None => options,
                Some(check) => options.interrupt(c_interrupt(check, o.interrupt_ctx)),
            })
        }
    }
}

/// `shmlease_try_acquire` without allocating: the lease handle is made in `storage`, a
/// `shmlease_lease_storage` of the caller's (see there for its rules), and `*lease_out`
/// receives it (the storage's address, as a `shmlease_lease *`). Use it as any lease
/// handle (renew, release, detach, inspect); `shmlease_release` is all it needs, or
/// `shmlease_lease_free`, which releases the lease if still held and empties the
/// storage. The handle borrows `table`: keep the table handle open until the storage is
/// emptied or refilled, or the lease is released or detached and the handle no longer
/// used.
///
/// `storage` must be empty (zeroed, `shmlease_lease_storage_init`, or emptied by
/// `shmlease_lease_free`) or hold a lease released or detached: one still held is
/// refused with `SHMLEASE_INVALID_ARGUMENT`, and so are bytes that are no lease handle
/// (an uninitialised storage, mostly). Nothing is written to it unless the lease is
/// granted. Otherwise as `shmlease_try_acquire`.
///
/// # Safety
/// As for `shmlease_try_acquire`; `storage` is NULL or points to an initialised
/// `shmlease_lease_storage` in this process's private memory, used by no other thread
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn shmlease_try_acquire_in(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    storage: *mut shmlease_lease_storage,
    lease_out: *mut *mut shmlease_lease,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    // The fast path: every argument present and ordinary (an ASCII name, a vacant
    // storage) and the lease granted, all inlined here with the status returned
    // directly (see `boundary_fast`). Anything else goes to `take_in`, which checks
    // every argument again (in its order) and says what is wrong; a refusal goes to
    // `refused_in`. Both are out of line.
    boundary_fast(|| {
        // Options, not `Result`s: a tuple of `Result<_, Failure>` has drop glue, a call
        // of 17 instructions even when all are `Ok`.
        // SAFETY: forwarded contract: `table` is NULL or an open handle (a
        // `Box<LeaseTable>`, see `table_arg`), `name` NULL or NUL-terminated, `storage`
        // NULL or an initialised storage of this thread's for the call, `lease_out`
        // NULL or writable.
        let checked = unsafe {
            (
                table.cast::<LeaseTable>().as_ref(),
                ascii_arg(name),
                vacant_fast(storage),
                Out::optional(lease_out),
            )
        };
        let (Some(t), Some(n), Some(st), Some(out)) = checked else {
            // SAFETY: forwarded contract.
            return unsafe { take_in(table, name, ttl_ns, None, storage, lease_out, held_by) };
        };
        match t.try_acquire_raw(n, ttl(ttl_ns)) {
            Ok(raw) => {
                // SAFETY: `st` was checked vacant and is the caller's for the call; `t`
                // is its open handle, kept open per the contract.
                out.write(unsafe { LeaseHandle::place(st, raw, t) });
                SHMLEASE_OK
            }
            // SAFETY: `held_by` is NULL or writable, per the contract.
            Err(e) => refused_in(t, n, e, unsafe { Out::optional(held_by) }),
        }
    })
}

/// [`refused`] as a status, out of the fast path.
#[cold]
#[inline(never)]
fn refused_in(
    table: &LeaseTable,
    name: &str,
    e: Error,
    held_by: Option<Out<shmlease_held_by>>,
) -> shmlease_status {
    failed(refused(table, name, e, held_by))
}

/// `shmlease_try_acquire_in` (`options` `None`) off its fast path, and
/// `shmlease_acquire_with_in` (`Some`, checked after the other arguments): out of line,
/// so that the fast path stays small.
///
/// # Safety
/// As for `shmlease_acquire_with_in`.
#[cold]
#[inline(never)]
unsafe fn take_in(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    options: Option<*const shmlease_acquire_options>,
    storage: *mut shmlease_lease_storage,
    lease_out: *mut *mut shmlease_lease,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, storage, out, held_by) = unsafe {
            (
                table_arg(table)?,
                str_arg(name, "name")?,
                vacant(storage)?,
                Out::new(lease_out, "lease_out")?,
                Out::optional(held_by),
            )
        };
        let options = match options {
            // SAFETY: forwarded contract.
            Some(o) => Some(unsafe { options_arg(o)? }),
            None => None,
        };
        take(table, name, ttl_ns, options.as_ref(), held_by, |raw| {
            // SAFETY: `storage` was checked vacant and is the caller's for the call;
            // `table` is its open handle, kept open per the contract.
            out.write(unsafe { LeaseHandle::place(storage, raw, table) })
        })
    })
}

/// `shmlease_acquire_with` without allocating: the lease handle is made in `storage`,
/// as for `shmlease_try_acquire_in` (whose rules apply: the storage must be empty or
/// hold a lease released or detached, and the table handle stay open).
///
/// # Safety
/// As for `shmlease_acquire_with` and `shmlease_try_acquire_in`.
#[no_mangle]
pub unsafe extern "C" fn shmlease_acquire_with_in(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    options: *const shmlease_acquire_options,
    storage: *mut shmlease_lease_storage,
    lease_out: *mut *mut shmlease_lease,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    // SAFETY: forwarded contract.
    unsafe { take_in(table, name, ttl_ns, Some(options), storage, lease_out, held_by) }
}

/// Extends the grant of `name` that has `token` to `ttl_ns` from now: for detached leases
/// (see `shmlease_lease_detach`), from any process. `deadline_ns_out` (NULL: not wanted)
/// receives the new deadline on this process's `CLOCK_MONOTONIC`. Returns
/// `SHMLEASE_LOST` if that grant is gone, or the name or token was never issued
/// (`shmlease_last_error()` says which), and `SHMLEASE_BOUND_TO_PROCESS` if the lease is
/// bound to another live process (tokens are public: only its holder may renew it;
/// `shmlease_last_error()` names the holder, `shmlease_revoke` takes it away).
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated;
/// `deadline_ns_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_renew_token(
    table: *const shmlease_table,
    name: *const c_char,
    token: u64,
    ttl_ns: u64,
    deadline_ns_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out) =
            unsafe { (table_arg(table)?, str_arg(name, "name")?, Out::optional(deadline_ns_out)) };
        let deadline = table.renew(name, token, ttl(ttl_ns))?;
        if let Some(out) = out {
            let left = deadline.saturating_duration_since(Instant::now());
            out.write(crate::lease::monotonic_ns().saturating_add(nanos(left)));
        }
        Ok(())
    })
}

/// Ends the grant of `name` that has `token`: for detached leases, from any process.
/// Returns `SHMLEASE_LOST` if that grant is already gone, or the name or token was never
/// issued, and `SHMLEASE_BOUND_TO_PROCESS` if the lease is bound to another live process
/// (as for `shmlease_renew_token`).
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmlease_release_token(
    table: *const shmlease_table,
    name: *const c_char,
    token: u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name) = unsafe { (table_arg(table)?, str_arg(name, "name")?) };
        Ok(table.release(name, token)?)
    })
}

/// Revokes whatever grant `name` has (every live grant of a name with permits or of a
/// shared name: its shared holders' and its exclusive holder's), waking
/// anyone waiting for it. `revoked_token_out` (NULL: not wanted) receives the revoked
/// token (the latest one, for a name with several), or 0 if nothing was held. The
/// holder learns at its next renewal that its lease is lost.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated;
/// `revoked_token_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_revoke(
    table: *const shmlease_table,
    name: *const c_char,
    revoked_token_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out) = unsafe {
            (table_arg(table)?, str_arg(name, "name")?, Out::optional(revoked_token_out))
        };
        let revoked = table.revoke(name)?;
        if let Some(out) = out {
            out.write(revoked.unwrap_or(0));
        }
        Ok(())
    })
}

/// Revokes the grant of `name` only if its token is `token` (one permit of a name with
/// permits, one holder of a shared name); returns `SHMLEASE_LOST`, and revokes nothing, if that is not a live grant
/// (`shmlease_last_error()` says why: it ended, a newer grant is current, the token or
/// the name was never issued).
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmlease_revoke_token(
    table: *const shmlease_table,
    name: *const c_char,
    token: u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name) = unsafe { (table_arg(table)?, str_arg(name, "name")?) };
        Ok(table.revoke_token(name, token)?)
    })
}

/// Fills `*info_out` with the lease on `name`. A name the table does not know is
/// reported as free, never granted (token 0, slot `UINT32_MAX`, exclusive, no grants).
/// For a name with permits see `shmlease_info`; `shmlease_get_grants` lists its
/// holders.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated; `info_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_get(
    table: *const shmlease_table,
    name: *const c_char,
    info_out: *mut shmlease_info,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out) =
            unsafe { (table_arg(table)?, str_arg(name, "name")?, Out::new(info_out, "info_out")?) };
        out.write(match table.get(name)? {
            Some(info) => shmlease_info::from_rust(&info),
            None => shmlease_info::unknown(name),
        });
        Ok(())
    })
}

/// Lists every name the table knows, in slot order, whatever its state: fills
/// `infos[0 .. capacity)` and sets `*count_out` to the number of names. If there are
/// more than `capacity`, the first `capacity` are filled and `SHMLEASE_BUFFER_TOO_SMALL`
/// is returned (call again with a larger array). `infos` may be NULL when `capacity` is 0,
/// to learn the count.
///
/// # Safety
/// `table` is NULL or an open handle; `infos` is NULL or valid for writes of `capacity`
/// elements; `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_list(
    table: *const shmlease_table,
    infos: *mut shmlease_info,
    capacity: usize,
    count_out: *mut usize,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, count) = unsafe { (table_arg(table)?, Out::new(count_out, "count_out")?) };
        if infos.is_null() && capacity > 0 {
            return Err(Failure::Null("infos"));
        }
        let all = table.list()?;
        for (i, info) in all.iter().take(capacity).enumerate() {
            // SAFETY: i < capacity, and the caller guarantees `infos` has room for
            // `capacity` elements; `write` does not read the old, maybe uninitialised, value.
            unsafe { infos.add(i).write(shmlease_info::from_rust(info)) };
        }
        count.write(all.len());
        if all.len() > capacity {
            return Err(Failure::BufferTooSmall { given: capacity, needed: all.len() });
        }
        Ok(())
    })
}

/// Lists the live grants of `name`, oldest first: each holder of a name with permits,
/// each holder of a shared name (`shared` tells which kind), or the one holder of a
/// held exclusive lease. Fills `grants[0 .. capacity)` and sets
/// `*count_out` to the number of live grants (0 for a name not held, or not known to
/// the table). If there are more than `capacity`, the first `capacity` are filled and
/// `SHMLEASE_BUFFER_TOO_SMALL` is returned (an array of `shmlease_info.permits`
/// entries, one more for a shared name, always suffices). `grants` may be NULL when `capacity` is 0, to learn the
/// count. The list is read at one moment: grants taken or ended since are not in it.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated; `grants` is
/// NULL or valid for writes of `capacity` elements; `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_get_grants(
    table: *const shmlease_table,
    name: *const c_char,
    grants: *mut shmlease_grant,
    capacity: usize,
    count_out: *mut usize,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, count) = unsafe {
            (table_arg(table)?, str_arg(name, "name")?, Out::new(count_out, "count_out")?)
        };
        if grants.is_null() && capacity > 0 {
            return Err(Failure::Null("grants"));
        }
        let live = table.get(name)?.map(|info| info.grants).unwrap_or_default();
        for (i, g) in live.iter().take(capacity).enumerate() {
            // SAFETY: i < capacity, and the caller guarantees `grants` has room for
            // `capacity` elements; `write` does not read the old, maybe uninitialised, value.
            unsafe { grants.add(i).write(shmlease_grant::from_rust(g)) };
        }
        count.write(live.len());
        if live.len() > capacity {
            return Err(Failure::BufferTooSmall { given: capacity, needed: live.len() });
        }
        Ok(())
    })
}

/// Lists the fair acquirers waiting for `name` (see `shmlease_acquire_options.fair`),
/// first in line first: their places in the name's queue, in ticket order. Fills
/// `queue[0 .. capacity)` and sets `*count_out` to the number of places (0 for a name
/// nobody waits for, or not known to the table). If there are more than `capacity`,
/// the first `capacity` are filled and `SHMLEASE_BUFFER_TOO_SMALL` is returned (an
/// array of 127 entries always suffices). `queue` may be NULL when `capacity` is 0, to
/// learn the count. The list is read at one moment: places taken or given up since are
/// not in it.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated; `queue` is NULL
/// or valid for writes of `capacity` elements; `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_get_queue(
    table: *const shmlease_table,
    name: *const c_char,
    queue: *mut shmlease_queued,
    capacity: usize,
    count_out: *mut usize,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, count) = unsafe {
            (table_arg(table)?, str_arg(name, "name")?, Out::new(count_out, "count_out")?)
        };
        if queue.is_null() && capacity > 0 {
            return Err(Failure::Null("queue"));
        }
        let places = table.get(name)?.map(|info| info.queue).unwrap_or_default();
        let now = SystemTime::now();
        for (i, q) in places.iter().take(capacity).enumerate() {
            // SAFETY: i < capacity, and the caller guarantees `queue` has room for
            // `capacity` elements; `write` does not read the old, maybe uninitialised, value.
            unsafe { queue.add(i).write(shmlease_queued::from_rust(q, now)) };
        }
        count.write(places.len());
        if places.len() > capacity {
            return Err(Failure::BufferTooSmall { given: capacity, needed: places.len() });
        }
        Ok(())
    })
}
