//! The one boundary between C and Rust: status codes, the failure type, the
//! panic-catching wrapper every exported function runs its body in, and the checks that
//! turn C arguments (maybe NULL, maybe not UTF-8) into Rust values or a status.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use shmlease_core::Error;

/// What a call did. Every function that can fail returns one; `SHMLEASE_OK` is 0 and
/// every other value is a failure, described in one line by `shmlease_last_error()`.
/// The numbers are part of the ABI and never change meaning.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum shmlease_status {
    /// Success.
    SHMLEASE_OK = 0,
    /// The lease is held by someone else (the optional `shmlease_held_by` out-parameter
    /// says by whom and for how long).
    SHMLEASE_HELD = 1,
    /// The grant named is not the live one: the caller's grant is gone (expired,
    /// revoked, released or taken over: stop using its token), or a by-token call named
    /// a token or a name never issued (`shmlease_last_error()` says which).
    SHMLEASE_LOST = 2,
    /// `shmlease_acquire` waited for its whole timeout and the lease stayed held.
    SHMLEASE_TIMED_OUT = 3,
    /// Every slot of the table holds a live lease: no new name fits.
    SHMLEASE_TABLE_FULL = 4,
    /// A lease name is empty, longer than 64 bytes, or not valid UTF-8.
    SHMLEASE_INVALID_NAME = 5,
    /// A TTL outside 1 µs ..= 365 days.
    SHMLEASE_INVALID_TTL = 6,
    /// A label longer than 8 bytes or not valid UTF-8.
    SHMLEASE_INVALID_LABEL = 7,
    /// Table options or a location that cannot work (capacity, mode, flags, shm name).
    SHMLEASE_INVALID_OPTIONS = 8,
    /// Any other argument out of its range (for example a location that is not UTF-8).
    SHMLEASE_INVALID_ARGUMENT = 9,
    /// A required pointer argument was NULL.
    SHMLEASE_NULL_ARGUMENT = 10,
    /// The location holds something that is not a lease table.
    SHMLEASE_NOT_A_TABLE = 11,
    /// A lease table this library cannot use (other format version, layout, clock).
    SHMLEASE_INCOMPATIBLE = 12,
    /// A lease table that is damaged (its header, or a slot changing faster than any
    /// holder could). Other processes may still be using it: do not remove it while
    /// any does.
    SHMLEASE_CORRUPT = 13,
    /// Refused by the OS or for safety (owned by another user, world-writable).
    SHMLEASE_PERMISSION = 14,
    /// `shmlease_table_create` found something at the location already.
    SHMLEASE_ALREADY_EXISTS = 15,
    /// There is no table at the location.
    SHMLEASE_NOT_FOUND = 16,
    /// Not supported here: this machine lacks something shmlease needs (a lock-free
    /// 128-bit CAS), or the table's backend lacks the operation (election and release
    /// requests on an etcd table).
    SHMLEASE_UNSUPPORTED = 17,
    /// Retryable: another process has held the table lock for too long (is it
    /// stopped?), or names kept being granted in a full table while this call looked
    /// for a slot to reuse, or 127 fair acquirers already wait in line for the name
    /// (`shmlease_acquire_options.fair`). Nothing is wrong with the table and nothing
    /// was changed: try again.
    SHMLEASE_BUSY = 18,
    /// Any other operating-system error.
    SHMLEASE_IO = 19,
    /// The array given to `shmlease_list` (`shmlease_get_grants`, `shmlease_get_queue`)
    /// is too small; the count says how many there are.
    SHMLEASE_BUFFER_TOO_SMALL = 20,
    /// A bug in shmlease (a caught panic): please report it with `shmlease_last_error()`.
    SHMLEASE_INTERNAL = 21,
    /// `shmlease_table_remove` found live leases in the table and did not remove it
    /// (`shmlease_last_error()` names them): its holders would keep using it while the
    /// next user of the location gets a new table, and the two would not exclude each
    /// other.
    SHMLEASE_IN_USE = 22,
    /// The lease is bound to its holder process, which alone may renew, release or
    /// detach it: a by-token call (`shmlease_renew_token`, `shmlease_release_token`) on
    /// a lease another live process holds, or a mutating call on a lease handle
    /// inherited through `fork()`. `shmlease_last_error()` names the holder; revoke the
    /// lease to take it away. Nothing was changed.
    SHMLEASE_BOUND_TO_PROCESS = 23,
    /// A remote table (`etcd://…`) could not be reached, or lost its quorum, within the
    /// location's timeout. Retryable; a lease whose renewals fail this way is lost at
    /// its own deadline at the latest.
    SHMLEASE_UNAVAILABLE = 24,
    /// The name is in use as another kind than the call asked for: with another number
    /// of permits (`shmlease_acquire_options.permits`; 0 or 1 is an exclusive lease;
    /// every user of a name must give the same number, recorded when the name is first
    /// used and kept while the table remembers it, also while no permit is held); or
    /// permits were asked of a name held as an exclusive lease; or a shared grant
    /// (`shmlease_acquire_options.shared`) of a name with permits, or permits of a
    /// shared name. `shmlease_last_error()` says which kind is recorded. Nothing was
    /// changed.
    SHMLEASE_WRONG_KIND = 25,
    /// A wait was ended by the caller's `shmlease_acquire_options.interrupt` callback
    /// returning true: nothing was granted, and whatever the wait held (its place in a
    /// fair queue, an exclusive acquirer's hold on a shared name) was given up.
    SHMLEASE_INTERRUPTED = 26,
}

use shmlease_status::*;

/// Every status, in numeric order.
pub(crate) const ALL_STATUSES: [shmlease_status; 27] = [
    SHMLEASE_OK,
    SHMLEASE_HELD,
    SHMLEASE_LOST,
    SHMLEASE_TIMED_OUT,
    SHMLEASE_TABLE_FULL,
    SHMLEASE_INVALID_NAME,
    SHMLEASE_INVALID_TTL,
    SHMLEASE_INVALID_LABEL,
    SHMLEASE_INVALID_OPTIONS,
    SHMLEASE_INVALID_ARGUMENT,
    SHMLEASE_NULL_ARGUMENT,
    SHMLEASE_NOT_A_TABLE,
    SHMLEASE_INCOMPATIBLE,
    SHMLEASE_CORRUPT,
    SHMLEASE_PERMISSION,
    SHMLEASE_ALREADY_EXISTS,
    SHMLEASE_NOT_FOUND,
    SHMLEASE_UNSUPPORTED,
    SHMLEASE_BUSY,
    SHMLEASE_IO,
    SHMLEASE_BUFFER_TOO_SMALL,
    SHMLEASE_INTERNAL,
    SHMLEASE_IN_USE,
    SHMLEASE_BOUND_TO_PROCESS,
    SHMLEASE_UNAVAILABLE,
    SHMLEASE_WRONG_KIND,
    SHMLEASE_INTERRUPTED,
];

impl shmlease_status {
    fn from_int(status: c_int) -> Option<shmlease_status> {
        usize::try_from(status).ok().and_then(|i| ALL_STATUSES.get(i).copied())
    }

    fn describe(self) -> (&'static CStr, &'static CStr) {
        match self {
            SHMLEASE_OK => (c"SHMLEASE_OK", c"success"),
            SHMLEASE_HELD => (c"SHMLEASE_HELD", c"lease is held by someone else"),
            SHMLEASE_LOST => (c"SHMLEASE_LOST", c"lease is lost"),
            SHMLEASE_TIMED_OUT => (c"SHMLEASE_TIMED_OUT", c"timed out waiting for the lease"),
            SHMLEASE_TABLE_FULL => (c"SHMLEASE_TABLE_FULL", c"lease table is full"),
            SHMLEASE_INVALID_NAME => (c"SHMLEASE_INVALID_NAME", c"invalid lease name"),
            SHMLEASE_INVALID_TTL => (c"SHMLEASE_INVALID_TTL", c"invalid TTL"),
            SHMLEASE_INVALID_LABEL => (c"SHMLEASE_INVALID_LABEL", c"invalid label"),
            SHMLEASE_INVALID_OPTIONS => (c"SHMLEASE_INVALID_OPTIONS", c"invalid table options"),
            SHMLEASE_INVALID_ARGUMENT => (c"SHMLEASE_INVALID_ARGUMENT", c"invalid argument"),
            SHMLEASE_NULL_ARGUMENT => (c"SHMLEASE_NULL_ARGUMENT", c"NULL argument"),
            SHMLEASE_NOT_A_TABLE => (c"SHMLEASE_NOT_A_TABLE", c"not a lease table"),
            SHMLEASE_INCOMPATIBLE => (c"SHMLEASE_INCOMPATIBLE", c"incompatible lease table"),
            SHMLEASE_CORRUPT => (c"SHMLEASE_CORRUPT", c"lease table is corrupt"),
            SHMLEASE_PERMISSION => (c"SHMLEASE_PERMISSION", c"permission refused"),
            SHMLEASE_ALREADY_EXISTS => (c"SHMLEASE_ALREADY_EXISTS", c"lease table already exists"),
            SHMLEASE_NOT_FOUND => (c"SHMLEASE_NOT_FOUND", c"no lease table at that location"),
            SHMLEASE_UNSUPPORTED => (c"SHMLEASE_UNSUPPORTED", c"not supported here"),
            SHMLEASE_BUSY => (c"SHMLEASE_BUSY", c"lease table is busy for a moment; try again"),
            SHMLEASE_IO => (c"SHMLEASE_IO", c"I/O error"),
            SHMLEASE_BUFFER_TOO_SMALL => (c"SHMLEASE_BUFFER_TOO_SMALL", c"buffer too small"),
            SHMLEASE_INTERNAL => (c"SHMLEASE_INTERNAL", c"internal error in shmlease"),
            SHMLEASE_IN_USE => (c"SHMLEASE_IN_USE", c"lease table has live leases"),
            SHMLEASE_BOUND_TO_PROCESS => {
                (c"SHMLEASE_BOUND_TO_PROCESS", c"lease is bound to its holder process")
            }
            SHMLEASE_UNAVAILABLE => {
                (c"SHMLEASE_UNAVAILABLE", c"lease table cannot be reached; try again")
            }
            SHMLEASE_WRONG_KIND => {
                (c"SHMLEASE_WRONG_KIND", c"lease name is in use as another kind (permits, shared)")
            }
            SHMLEASE_INTERRUPTED => (c"SHMLEASE_INTERRUPTED", c"wait interrupted by the caller"),
        }
    }
}

/// A short, static description of `status` ("lease is held by someone else"). Any int is
/// accepted: unknown values give "unknown status". Never NULL.
#[no_mangle]
pub extern "C" fn shmlease_strerror(status: c_int) -> *const c_char {
    match shmlease_status::from_int(status) {
        Some(s) => s.describe().1.as_ptr(),
        None => c"unknown status".as_ptr(),
    }
}

/// The enumerator name of `status` ("SHMLEASE_HELD"), static; "SHMLEASE_UNKNOWN" for
/// values that are not a status. Never NULL.
#[no_mangle]
pub extern "C" fn shmlease_status_name(status: c_int) -> *const c_char {
    match shmlease_status::from_int(status) {
        Some(s) => s.describe().0.as_ptr(),
        None => c"SHMLEASE_UNKNOWN".as_ptr(),
    }
}

/// Why a call failed: everything a status and a one-line message are made from.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The Rust library refused.
    Lib(Error),
    /// A required pointer argument (named) was NULL.
    Null(&'static str),
    /// An argument (named) is not valid UTF-8.
    NotUtf8(&'static str),
    /// An argument is out of range: its status and why.
    Invalid(shmlease_status, String),
    /// `shmlease_list` (or `shmlease_get_grants`, `shmlease_get_queue`) was given room for `given` entries;
    /// there are `needed`.
    BufferTooSmall { given: usize, needed: usize },
    /// A lease handle was used after `shmlease_release` or `shmlease_lease_detach`.
    Finished,
    /// A lease pointer (or storage, `what`) that holds no lease handle: an empty
    /// storage (`empty`: never filled, or emptied by `shmlease_lease_free`), or bytes
    /// that are no handle at all.
    NotALease { what: &'static str, empty: bool },
    /// A storage to fill still holds a lease not yet released.
    StorageHeld,
    /// A bug: a caught panic, or an impossible state.
    Internal(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Lib(e)
    }
}

impl Failure {
    pub(crate) fn status(&self) -> shmlease_status {
        match self {
            Failure::Lib(e) => match e {
                Error::Held { .. } => SHMLEASE_HELD,
                Error::Lost { .. } => SHMLEASE_LOST,
                Error::TimedOut { .. } => SHMLEASE_TIMED_OUT,
                Error::TableFull { .. } => SHMLEASE_TABLE_FULL,
                Error::InvalidName { .. } => SHMLEASE_INVALID_NAME,
                Error::InvalidTtl { .. } => SHMLEASE_INVALID_TTL,
                Error::InvalidLabel { .. } => SHMLEASE_INVALID_LABEL,
                Error::InvalidOptions { .. } => SHMLEASE_INVALID_OPTIONS,
                Error::NotATable { .. } => SHMLEASE_NOT_A_TABLE,
                Error::Incompatible { .. } => SHMLEASE_INCOMPATIBLE,
                Error::Corrupt { .. } => SHMLEASE_CORRUPT,
                Error::Permission { .. } => SHMLEASE_PERMISSION,
                Error::AlreadyExists { .. } => SHMLEASE_ALREADY_EXISTS,
                Error::NotFound { .. } => SHMLEASE_NOT_FOUND,
                Error::Unsupported { .. } => SHMLEASE_UNSUPPORTED,
                Error::Busy { .. } => SHMLEASE_BUSY,
                Error::Io { .. } => SHMLEASE_IO,
                Error::InUse { .. } => SHMLEASE_IN_USE,
                Error::BoundToProcess { .. } => SHMLEASE_BOUND_TO_PROCESS,
                Error::Unavailable { .. } => SHMLEASE_UNAVAILABLE,
                Error::WrongKind { .. } => SHMLEASE_WRONG_KIND,
                Error::Interrupted { .. } => SHMLEASE_INTERRUPTED,
                // A variant newer than this library: still a failure, never OK.
                _ => SHMLEASE_INTERNAL,
            },
            Failure::Null(_) => SHMLEASE_NULL_ARGUMENT,
            Failure::NotUtf8("name") => SHMLEASE_INVALID_NAME,
            Failure::NotUtf8("label") => SHMLEASE_INVALID_LABEL,
            Failure::NotUtf8(_) => SHMLEASE_INVALID_ARGUMENT,
            Failure::Invalid(status, _) => *status,
            Failure::BufferTooSmall { .. } => SHMLEASE_BUFFER_TOO_SMALL,
            Failure::Finished => SHMLEASE_LOST,
            Failure::NotALease { .. } | Failure::StorageHeld => SHMLEASE_INVALID_ARGUMENT,
            Failure::Internal(_) => SHMLEASE_INTERNAL,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Lib(e) => write!(f, "{e}"),
            Failure::Null(what) => write!(f, "argument `{what}` is NULL"),
            Failure::NotUtf8(what) => write!(f, "argument `{what}` is not valid UTF-8"),
            Failure::Invalid(_, why) => f.write_str(why),
            Failure::BufferTooSmall { given, needed } => {
                write!(f, "room for {given} entries given, {needed} needed")
            }
            Failure::Finished => f.write_str("this lease handle was already released or detached"),
            Failure::NotALease { what, empty: true } => write!(
                f,
                "argument `{what}` is an empty lease storage: never filled, or its lease \
                 was ended with shmlease_lease_free"
            ),
            Failure::NotALease { what, empty: false } => write!(
                f,
                "argument `{what}` holds no lease handle (a storage not zeroed, or not \
                 initialised with shmlease_lease_storage_init?)"
            ),
            Failure::StorageHeld => f.write_str(
                "argument `storage` still holds a lease: release it (shmlease_release) or \
                 end it (shmlease_lease_free) before filling the storage again",
            ),
            Failure::Internal(msg) => write!(f, "internal error in shmlease: {msg}"),
        }
    }
}

/// The last failure of this thread; its text is made only when asked for.
struct LastError {
    failure: Option<Failure>,
    text: Option<CString>,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const {
        RefCell::new(LastError { failure: None, text: None })
    };
}

fn remember(failure: Failure) {
    // `try_with`: during thread teardown the slot may be gone; the status still counts.
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            last.failure = Some(failure);
            last.text = None;
        }
    });
}

/// One line describing the last failed call made by this thread ("lease is held by pid
/// 4242 (token 17, 2.5s left)"), or "" if none failed yet. The string belongs to the
/// library and stays valid until this thread's next call into shmlease. Never NULL.
#[no_mangle]
pub extern "C" fn shmlease_last_error() -> *const c_char {
    let text = catch_unwind(|| {
        LAST_ERROR
            .try_with(|last| {
                let mut last = last.try_borrow_mut().ok()?;
                if last.text.is_none() {
                    let failure = last.failure.as_ref()?;
                    let line = failure.to_string().replace('\0', " ");
                    last.text = CString::new(line).ok();
                }
                // The CString's buffer lives in the thread-local until the next failure.
                last.text.as_ref().map(|t| t.as_ptr())
            })
            .ok()
            .flatten()
    });
    match text {
        Ok(Some(p)) => p,
        _ => c"".as_ptr(),
    }
}

/// Runs the body of an exported function: its result becomes a status, a failure is
/// remembered for `shmlease_last_error`, and a panic stops here.
pub(crate) fn boundary(body: impl FnOnce() -> Result<(), Failure>) -> shmlease_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SHMLEASE_OK,
        Ok(Err(failure)) => failed(failure),
        Err(payload) => panicked(payload),
    }
}

/// The boundary of a fast path (a take into storage, a release): as [`boundary`], for a
/// body that returns its status itself and hands any failure to [`failed`], out of
/// line. Nothing as large as a `Failure` is then laid out, written or read back on the
/// way to `SHMLEASE_OK`, and the body is inlined into the exported function: with
/// [`boundary`], a C take + release spent ~240 instructions in the two wrappers, of
/// 377 for the whole Rust call. A panic still stops here.
#[inline(always)]
pub(crate) fn boundary_fast(body: impl FnOnce() -> shmlease_status) -> shmlease_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(payload) => panicked(payload),
    }
}

/// The status of `failure`, remembered for `shmlease_last_error`.
#[cold]
#[inline(never)]
pub(crate) fn failed(failure: Failure) -> shmlease_status {
    let status = failure.status();
    remember(failure);
    status
}

/// `SHMLEASE_INTERNAL` for a panic caught at the boundary, remembered with its message.
#[cold]
#[inline(never)]
fn panicked(payload: Box<dyn std::any::Any + Send>) -> shmlease_status {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    };
    // Dropping the payload could itself panic; it is not worth that risk.
    std::mem::forget(payload);
    remember(Failure::Internal(format!("panic: {msg}")));
    SHMLEASE_INTERNAL
}

/// The failure for a NULL argument, made only when one is: `ok_or(Failure::Null(..))`
/// built one on every call and dropped it again (a call to `drop_in_place::<Failure>`,
/// 21 instructions, per argument checked).
#[cold]
pub(crate) fn null(what: &'static str) -> Failure {
    Failure::Null(what)
}

/// Borrows `*p`, or fails with `SHMLEASE_NULL_ARGUMENT` naming `what`.
///
/// # Safety
/// `p` is NULL or points to a valid `T` that outlives `'a` and is not mutated meanwhile.
pub(crate) unsafe fn arg<'a, T>(p: *const T, what: &'static str) -> Result<&'a T, Failure> {
    // SAFETY: the caller guarantees `p` is NULL (handled by `as_ref`) or valid for `'a`.
    unsafe { p.as_ref() }.ok_or_else(|| null(what))
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &'static str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::Null(what));
    }
    // SAFETY: non-NULL, and the caller guarantees NUL termination and lifetime.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    match ascii(bytes) {
        Some(s) => Ok(s),
        None => std::str::from_utf8(bytes).map_err(|_| Failure::NotUtf8(what)),
    }
}

/// A string argument for a fast path: the string if it is non-NULL and ASCII (what
/// nearly every lease name is), else `None`, and [`str_arg`] says why not (or takes a
/// UTF-8 string that is not ASCII). Inlined, where `str_arg` returns a
/// `Result<&str, Failure>` through memory.
///
/// # Safety
/// As for [`str_arg`].
#[inline(always)]
pub(crate) unsafe fn ascii_arg<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the caller guarantees NUL termination and lifetime.
    ascii(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// `bytes` as a `&str` if they are ASCII. Names are nearly always ASCII: a
/// word-at-a-time check instead of the full UTF-8 validator (80 instructions for an
/// 8-byte name, 7% of a C take + release).
#[inline(always)]
fn ascii(bytes: &[u8]) -> Option<&str> {
    // SAFETY: ASCII is UTF-8.
    bytes.is_ascii().then(|| unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Like [`str_arg`], but NULL means "not given".
///
/// # Safety
/// As for [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    p: *const c_char,
    what: &'static str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded from the caller.
    unsafe { str_arg(p, what) }.map(Some)
}

/// Where a result goes: a non-NULL out-pointer, written without reading or dropping the
/// (possibly uninitialised) old contents.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Checks a required out-pointer.
    ///
    /// # Safety
    /// `p` is NULL or valid for writes of a `T` (alignment included) until `write`.
    pub(crate) unsafe fn new(p: *mut T, what: &'static str) -> Result<Out<T>, Failure> {
        NonNull::new(p).map(Out).ok_or_else(|| null(what))
    }

    /// An optional out-pointer: NULL means the caller does not want the value.
    ///
    /// # Safety
    /// As for [`Out::new`].
    pub(crate) unsafe fn optional(p: *mut T) -> Option<Out<T>> {
        NonNull::new(p).map(Out)
    }

    pub(crate) fn write(self, value: T) {
        // SAFETY: `new`/`optional` were given a pointer valid for writes of a T; `write`
        // neither reads nor drops the old value, which may be uninitialised.
        unsafe { self.0.as_ptr().write(value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: *const c_char) -> String {
        // SAFETY: all the functions tested return static or thread-local C strings.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
    }

    #[test]
    fn statuses_are_numbered_in_order_and_named() {
        for (i, s) in ALL_STATUSES.iter().enumerate() {
            assert_eq!(*s as usize, i);
            let name = text(shmlease_status_name(i as c_int));
            assert_eq!(format!("{s:?}"), name);
            assert_ne!(text(shmlease_strerror(i as c_int)), "unknown status");
        }
        assert_eq!(text(shmlease_strerror(-1)), "unknown status");
        assert_eq!(text(shmlease_strerror(ALL_STATUSES.len() as c_int)), "unknown status");
        assert_eq!(text(shmlease_status_name(c_int::MAX)), "SHMLEASE_UNKNOWN");
    }

    #[test]
    fn a_panic_becomes_internal_and_is_described() {
        let status = boundary(|| panic!("boom {}", 42));
        assert_eq!(status, SHMLEASE_INTERNAL);
        assert_eq!(text(shmlease_last_error()), "internal error in shmlease: panic: boom 42");
        let status = boundary(|| std::panic::panic_any(7u8));
        assert_eq!(status, SHMLEASE_INTERNAL);
        assert!(text(shmlease_last_error()).contains("unknown panic payload"));
    }

    #[test]
    fn a_panic_in_a_fast_path_becomes_internal_and_failures_are_remembered() {
        assert_eq!(boundary_fast(|| panic!("fast {}", 1)), SHMLEASE_INTERNAL);
        assert_eq!(text(shmlease_last_error()), "internal error in shmlease: panic: fast 1");
        assert_eq!(boundary_fast(|| failed(Failure::Null("storage"))), SHMLEASE_NULL_ARGUMENT);
        assert_eq!(text(shmlease_last_error()), "argument `storage` is NULL");
        assert_eq!(boundary_fast(|| SHMLEASE_OK), SHMLEASE_OK);
        assert_eq!(text(shmlease_last_error()), "argument `storage` is NULL");
    }

    #[test]
    fn last_error_is_per_thread_and_empty_at_first() {
        std::thread::spawn(|| assert_eq!(text(shmlease_last_error()), "")).join().unwrap();
        assert_eq!(boundary(|| Err(Failure::Null("table"))), SHMLEASE_NULL_ARGUMENT);
        assert_eq!(text(shmlease_last_error()), "argument `table` is NULL");
        assert_eq!(boundary(|| Ok(())), SHMLEASE_OK);
        // Success leaves the last failure in place.
        assert_eq!(text(shmlease_last_error()), "argument `table` is NULL");
    }
}
