//! Leader election: who leads, observing changes, requests to release, campaigning
//! for a leadership handle, and the runner with its callbacks. An election is the lease
//! on its name; its term is the grant's fencing token.
//!
//! The Rust values here borrow their table (`Leadership<'t>`, `Observer<'t>`); a C
//! handle cannot express that, so each handle owns a table of its own ([`Owning`]).

use std::ffi::{c_char, c_int, c_void};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Duration;

use shmlease_core::election::{Change, Leading, Observer, StopReason, Stopped, Stopper};
use shmlease_core::{Election, Leader, Leadership, LeaseTable, LostReason, Notice};

use crate::boundary::{arg, boundary, opt_str_arg, shmlease_status, str_arg, Failure, Out};
use crate::info::{nanos, shmlease_held_by, shmlease_holder, unix_ns};
use crate::table::{refused, shmlease_table, table_arg};

/// Who leads an election, filled by `shmlease_leader_get`, and inside a
/// `shmlease_change`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_leader {
    /// Whether someone leads. When false, nobody does: `holder`, the times and
    /// `remaining_ns` are zero.
    pub elected: bool,
    /// The leader's term (its grant's fencing token); with nobody leading, the name's
    /// last term (0: it never had a leader).
    pub term: u64,
    /// The leading process.
    pub holder: shmlease_holder,
    /// When its term began (Unix ns, wall clock; 0 if unknown).
    pub since_unix_ns: i64,
    /// When its term ends unless renewed (Unix ns, wall clock).
    pub expires_at_unix_ns: i64,
    /// Nanoseconds left before that.
    pub remaining_ns: u64,
}

impl shmlease_leader {
    fn from_rust(term: u64, leader: Option<&Leader>) -> shmlease_leader {
        shmlease_leader {
            elected: leader.is_some(),
            term: leader.map_or(term, |l| l.term),
            holder: shmlease_holder::from_rust(leader.and_then(|l| l.holder.as_ref())),
            since_unix_ns: leader.map_or(0, |l| unix_ns(l.since)),
            expires_at_unix_ns: leader.map_or(0, |l| unix_ns(l.expires_at)),
            remaining_ns: leader.map_or(0, |l| nanos(l.remaining)),
        }
    }
}

/// `shmlease_change.skipped` when the number of terms missed is unknown (the name was
/// idle, forgotten and bound again meanwhile).
pub const SHMLEASE_SKIPPED_UNKNOWN: i64 = -1;

/// One change of leadership, filled by `shmlease_observer_next`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_change {
    /// The new leader (`leader.elected`), or nobody; `leader.term` is the new term, or
    /// with nobody leading the term that ended (0: never any).
    pub leader: shmlease_leader,
    /// Terms that began and ended since the previous change this observer reported,
    /// unreported: 0 when none (always for the first change), or
    /// `SHMLEASE_SKIPPED_UNKNOWN`. Counted modulo 65536.
    pub skipped: i64,
}

/// Fills `*leader_out` with who leads the election `name` (the holder of lease
/// `name`), or, with `leader_out->elected` false, says that nobody does.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated; `leader_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leader_get(
    table: *const shmlease_table,
    name: *const c_char,
    leader_out: *mut shmlease_leader,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out) = unsafe {
            (table_arg(table)?, str_arg(name, "name")?, Out::new(leader_out, "leader_out")?)
        };
        let leader = table.election(name)?.leader()?;
        let term = match &leader {
            Some(l) => l.term,
            None => table.get(name)?.map_or(0, |i| i.token),
        };
        out.write(shmlease_leader::from_rust(term, leader.as_ref()));
        Ok(())
    })
}

/// A value that borrows a table it owns: the table is leaked for as long as the value
/// lives, and freed after it.
struct Owning<T> {
    value: ManuallyDrop<T>,
    table: NonNull<LeaseTable>,
}

impl<T> Owning<T> {
    /// Makes the value from a table of its own (a clone of `table`: the same mapping).
    fn new<E>(
        table: &LeaseTable,
        make: impl FnOnce(&'static LeaseTable) -> Result<T, E>,
    ) -> Result<Owning<T>, E> {
        let own: &'static LeaseTable = Box::leak(Box::new(table.clone()));
        let owned = NonNull::from(own);
        match make(own) {
            Ok(value) => Ok(Owning { value: ManuallyDrop::new(value), table: owned }),
            Err(e) => {
                // SAFETY: the box leaked above; `make` failed, so no value borrows it.
                drop(unsafe { Box::from_raw(owned.as_ptr()) });
                Err(e)
            }
        }
    }
}

impl<T> Owning<T> {
    /// The table the value borrows.
    fn table(&self) -> &LeaseTable {
        // SAFETY: the box leaked in `new`, alive until `drop`.
        unsafe { self.table.as_ref() }
    }
}

impl<T> std::ops::Deref for Owning<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Owning<T> {
    fn drop(&mut self) {
        // SAFETY: the value is dropped once, here, before the table it borrows; the
        // table is the box leaked in `new`, freed once, after nothing borrows it.
        unsafe {
            ManuallyDrop::drop(&mut self.value);
            drop(Box::from_raw(self.table.as_ptr()));
        }
    }
}

/// Follows the leadership changes of one election. Opaque: get one from
/// `shmlease_observer_open`, give it back with `shmlease_observer_close`.
///
/// Thread safety: any thread may use it; calls to `shmlease_observer_next` on one
/// observer take turns (each change is reported to one of them). `_close` must not race
/// with another call on it.
#[allow(non_camel_case_types)]
pub struct shmlease_observer {
    _opaque: [u8; 0],
}

type ObserverHandle = Owning<Mutex<Observer<'static>>>;

/// Opens an observer of the election `name`: its first `shmlease_observer_next`
/// reports the current state at once, the next ones each change after the last one
/// reported.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated; `observer_out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_observer_open(
    table: *const shmlease_table,
    name: *const c_char,
    observer_out: *mut *mut shmlease_observer,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out) = unsafe {
            (table_arg(table)?, str_arg(name, "name")?, Out::new(observer_out, "observer_out")?)
        };
        let handle: ObserverHandle =
            Owning::new(table, |t| t.election(name).map(|e| Mutex::new(e.observe())))?;
        out.write(Box::into_raw(Box::new(handle)).cast());
        Ok(())
    })
}

/// Waits for the next change of leader after the one this observer last reported (the
/// first call reports the current state at once), woken by the change itself: up to
/// `timeout_ns` nanoseconds, forever if negative, not at all if 0. Terms arrive in
/// increasing order; `change_out->skipped` says how many this observer missed. Returns
/// `SHMLEASE_TIMED_OUT` (leaving `*change_out` alone) if nothing changed in time.
///
/// # Safety
/// `observer` is NULL or an open observer; `change_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_observer_next(
    observer: *mut shmlease_observer,
    timeout_ns: i64,
    change_out: *mut shmlease_change,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: a non-NULL observer is a `Box<ObserverHandle>` from
        // `shmlease_observer_open`, not yet closed per the caller.
        let (observer, out) = unsafe {
            (
                arg(observer.cast::<ObserverHandle>().cast_const(), "observer")?,
                Out::new(change_out, "change_out")?,
            )
        };
        let mut observer = observer.lock().unwrap_or_else(|p| p.into_inner());
        let change: Option<Change> = observer.next_change(wait(timeout_ns))?;
        let Some(change) = change else {
            return Err(Failure::Invalid(
                shmlease_status::SHMLEASE_TIMED_OUT,
                format!("no change of leader within {timeout_ns} ns"),
            ));
        };
        out.write(shmlease_change {
            leader: shmlease_leader::from_rust(change.term, change.leader.as_ref()),
            skipped: change.skipped.map_or(SHMLEASE_SKIPPED_UNKNOWN, i64::from),
        });
        Ok(())
    })
}

/// Closes an observer. NULL does nothing.
///
/// # Safety
/// `observer` is NULL or an open observer, used by no other thread during the call and
/// never again after it.
#[no_mangle]
pub unsafe extern "C" fn shmlease_observer_close(observer: *mut shmlease_observer) {
    if observer.is_null() {
        return;
    }
    boundary(|| {
        // SAFETY: a non-NULL observer is a `Box<ObserverHandle>` from
        // `shmlease_observer_open`, handed back exactly once per the caller.
        drop(unsafe { Box::from_raw(observer.cast::<ObserverHandle>()) });
        Ok(())
    });
}

/// A timeout in the C convention (negative: forever; 0: don't wait).
fn wait(timeout_ns: i64) -> Option<Duration> {
    (timeout_ns >= 0).then(|| Duration::from_nanos(timeout_ns.unsigned_abs()))
}

/// Asks the holder of lease `name` (each holder of a name with permits or of a shared
/// name) to release it:
/// a cooperative hand-over. Nothing changes about who holds it or until when; the
/// holder sees `shmlease_lease_release_requested` (or
/// `shmlease_leadership_release_requested`, and its `_wait_notice` wakes up), finishes
/// and releases. `asked_token_out` (NULL: not wanted) receives the token of the grant
/// asked (the latest one, for a name with several), or 0 if nothing was held. Asking
/// twice is asking once.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated;
/// `asked_token_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_request_release(
    table: *const shmlease_table,
    name: *const c_char,
    asked_token_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, out) =
            unsafe { (table_arg(table)?, str_arg(name, "name")?, Out::optional(asked_token_out)) };
        let asked = table.request_release(name, None)?;
        if let Some(out) = out {
            out.write(asked.unwrap_or(0));
        }
        Ok(())
    })
}

/// `shmlease_request_release` for the grant of `name` with `token` only; returns
/// `SHMLEASE_LOST`, asking nothing, if that is not the live grant (as
/// `shmlease_revoke_token`).
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn shmlease_request_release_token(
    table: *const shmlease_table,
    name: *const c_char,
    token: u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name) = unsafe { (table_arg(table)?, str_arg(name, "name")?) };
        table.request_release(name, Some(token))?;
        Ok(())
    })
}

/// Leadership of an election, held by this process: the lease on the election's name,
/// renewed by a background thread (every third of its TTL) until resigned, freed or
/// lost. Opaque: get one from `shmlease_campaign` or `shmlease_try_campaign`; free it
/// with `shmlease_leadership_free`, which resigns if still leading.
///
/// A separate handle from `shmlease_lease` because of that thread: it renews the lease
/// and watches it, so that a loss or a request to release wakes
/// `shmlease_leadership_wait_notice` at once.
///
/// Thread safety: any number of threads may use it at once, except that
/// `shmlease_leadership_free` must not race with another call on it. After `fork()`, the
/// leadership stays the parent's (its renewing thread is not in the child); a child may
/// only read it, and `shmlease_resign` there returns `SHMLEASE_BOUND_TO_PROCESS`.
#[allow(non_camel_case_types)]
pub struct shmlease_leadership {
    _opaque: [u8; 0],
}

struct LeadershipHandle {
    leadership: Owning<Leadership<'static>>,
    name: String,
}

/// Borrows the handle behind a leadership pointer.
///
/// # Safety
/// `p` is NULL or a live handle from `shmlease_campaign`/`_try_campaign`, for `'a`.
unsafe fn leadership_arg<'a>(
    p: *const shmlease_leadership,
) -> Result<&'a LeadershipHandle, Failure> {
    // SAFETY: a non-NULL pointer is a `Box<LeadershipHandle>` from `campaign`, not yet
    // freed per the caller.
    unsafe { arg(p.cast::<LeadershipHandle>(), "leadership") }
}

/// The election `name` with a TTL (0: 10 s) and a label (NULL: none).
fn election<'t>(
    table: &'t LeaseTable,
    name: &str,
    ttl_ns: u64,
    label: Option<&str>,
) -> Result<Election<'t>, Failure> {
    let mut election = table.election(name)?;
    if ttl_ns != 0 {
        election = election.ttl(Duration::from_nanos(ttl_ns))?;
    }
    if let Some(label) = label {
        election = election.label(label)?;
    }
    Ok(election)
}

/// The shared body of the two ways to campaign.
///
/// # Safety
/// As for `shmlease_campaign`.
unsafe fn campaign(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    label: *const c_char,
    timeout_ns: Option<i64>,
    leadership_out: *mut *mut shmlease_leadership,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, label, out, held_by) = unsafe {
            (
                table_arg(table)?,
                str_arg(name, "name")?,
                opt_str_arg(label, "label")?,
                Out::new(leadership_out, "leadership_out")?,
                Out::optional(held_by),
            )
        };
        let leadership = Owning::new(table, |t| {
            let election = election(t, name, ttl_ns, label)?;
            let won = match timeout_ns {
                None => election.try_campaign(),
                Some(t) => election.campaign(wait(t)),
            };
            won.map_err(Failure::Lib)
        });
        let leadership = match leadership {
            Ok(l) => l,
            Err(Failure::Lib(e)) => return Err(refused(table, name, e, held_by)),
            Err(f) => return Err(f),
        };
        let handle = LeadershipHandle { leadership, name: name.to_owned() };
        out.write(Box::into_raw(Box::new(handle)).cast());
        Ok(())
    })
}

/// Campaigns in the election `name` until elected, waiting up to `timeout_ns`
/// nanoseconds (forever if negative) while another candidate leads; woken at once when
/// the leader resigns, is revoked, expires or dies. `ttl_ns` (0: 10 s) is how long a
/// leadership lasts unless renewed: how long a stopped (frozen) leader can block the
/// others; it is renewed in the background. `label` (NULL: none) is shown to others.
///
/// On success `*leadership_out` receives a handle to free with
/// `shmlease_leadership_free`. Returns `SHMLEASE_TIMED_OUT` if another candidate kept
/// leading, and then fills `held_by` if it is not NULL.
///
/// # Safety
/// `table` is NULL or an open handle; `name` and `label` are NULL or NUL-terminated;
/// `leadership_out` and `held_by` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_campaign(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    label: *const c_char,
    timeout_ns: i64,
    leadership_out: *mut *mut shmlease_leadership,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    // SAFETY: forwarded contract.
    unsafe { campaign(table, name, ttl_ns, label, Some(timeout_ns), leadership_out, held_by) }
}

/// Becomes leader of the election `name` if nobody leads now; else returns
/// `SHMLEASE_HELD` at once (filling `held_by` if it is not NULL). Otherwise as
/// `shmlease_campaign`.
///
/// # Safety
/// As for `shmlease_campaign`.
#[no_mangle]
pub unsafe extern "C" fn shmlease_try_campaign(
    table: *const shmlease_table,
    name: *const c_char,
    ttl_ns: u64,
    label: *const c_char,
    leadership_out: *mut *mut shmlease_leadership,
    held_by: *mut shmlease_held_by,
) -> shmlease_status {
    // SAFETY: forwarded contract.
    unsafe { campaign(table, name, ttl_ns, label, None, leadership_out, held_by) }
}

/// The term of this leadership: its grant's fencing token. Pass it to whatever the
/// leader writes to, so that a deposed leader's late writes can be refused.
///
/// # Safety
/// `leadership` is NULL or a handle not yet freed; `term_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leadership_term(
    leadership: *const shmlease_leadership,
    term_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) =
            unsafe { (leadership_arg(leadership)?, Out::new(term_out, "term_out")?) };
        out.write(handle.leadership.term());
        Ok(())
    })
}

/// Sets `*leader_out` to whether this candidate still leads: false from the instant
/// another candidate could be elected (expired, revoked, resigned). A snapshot: act on
/// shared resources through the term.
///
/// # Safety
/// `leadership` is NULL or a handle not yet freed; `leader_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leadership_is_leader(
    leadership: *const shmlease_leadership,
    leader_out: *mut bool,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) =
            unsafe { (leadership_arg(leadership)?, Out::new(leader_out, "leader_out")?) };
        out.write(handle.leadership.is_leader());
        Ok(())
    })
}

/// Nanoseconds left before the term ends unless renewed (renewed in the background); 0
/// once lost.
///
/// # Safety
/// `leadership` is NULL or a handle not yet freed; `remaining_ns_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leadership_remaining_ns(
    leadership: *const shmlease_leadership,
    remaining_ns_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) = unsafe {
            (leadership_arg(leadership)?, Out::new(remaining_ns_out, "remaining_ns_out")?)
        };
        out.write(nanos(handle.leadership.remaining()));
        Ok(())
    })
}

/// Sets `*requested_out` to whether someone asked this leader to hand over
/// (`shmlease_request_release`) while it still leads.
///
/// # Safety
/// `leadership` is NULL or a handle not yet freed; `requested_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leadership_release_requested(
    leadership: *const shmlease_leadership,
    requested_out: *mut bool,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) =
            unsafe { (leadership_arg(leadership)?, Out::new(requested_out, "requested_out")?) };
        out.write(handle.leadership.release_requested());
        Ok(())
    })
}

/// What `shmlease_leadership_wait_notice` reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum shmlease_notice {
    /// Nothing yet: the timeout passed.
    SHMLEASE_NOTICE_NONE = 0,
    /// Someone asked the leader to hand over; it still leads.
    SHMLEASE_NOTICE_RELEASE_REQUESTED = 1,
    /// Lost: the term ended without a renewal in time (was the process stopped?).
    SHMLEASE_NOTICE_LOST_EXPIRED = 2,
    /// Lost: revoked.
    SHMLEASE_NOTICE_LOST_REVOKED = 3,
    /// Lost: released (`shmlease_resign`, or by token).
    SHMLEASE_NOTICE_LOST_RELEASED = 4,
    /// Lost: another candidate leads now.
    SHMLEASE_NOTICE_LOST_TAKEN_OVER = 5,
}

fn lost_notice(reason: LostReason) -> shmlease_notice {
    use shmlease_notice::*;
    match reason {
        LostReason::Revoked => SHMLEASE_NOTICE_LOST_REVOKED,
        LostReason::Released => SHMLEASE_NOTICE_LOST_RELEASED,
        LostReason::TakenOver => SHMLEASE_NOTICE_LOST_TAKEN_OVER,
        _ => SHMLEASE_NOTICE_LOST_EXPIRED,
    }
}

/// Blocks until leadership is lost or a hand-over is requested (a loss wins when both
/// are true, and a request, once made, is reported at once until then), or `timeout_ns`
/// passes (forever if negative; 0: just look), woken by the
/// renewing thread at once. Always writes `*notice_out`: `SHMLEASE_NOTICE_NONE` on
/// timeout. Returns `SHMLEASE_OK` either way.
///
/// # Safety
/// `leadership` is NULL or a handle not yet freed; `notice_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leadership_wait_notice(
    leadership: *const shmlease_leadership,
    timeout_ns: i64,
    notice_out: *mut shmlease_notice,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (handle, out) =
            unsafe { (leadership_arg(leadership)?, Out::new(notice_out, "notice_out")?) };
        out.write(match handle.leadership.wait_notice(wait(timeout_ns)) {
            None => shmlease_notice::SHMLEASE_NOTICE_NONE,
            Some(Notice::ReleaseRequested) => shmlease_notice::SHMLEASE_NOTICE_RELEASE_REQUESTED,
            Some(Notice::Lost(reason)) => lost_notice(reason),
        });
        Ok(())
    })
}

/// Resigns: releases the leadership, waking the next candidate at once. The handle must
/// still be freed; `_is_leader` is false from then on, and once the renewing thread has
/// noticed (at once, unless the process is starved) `_wait_notice` reports
/// `SHMLEASE_NOTICE_LOST_RELEASED`. Returns `SHMLEASE_LOST` if leadership was already
/// lost or resigned (nothing changes then), `SHMLEASE_BOUND_TO_PROCESS` in a `fork()`ed
/// child.
///
/// # Safety
/// `leadership` is NULL or a handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn shmlease_resign(leadership: *mut shmlease_leadership) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let handle = unsafe { leadership_arg(leadership)? };
        let term = handle.leadership.term();
        // By name and token: the leadership's renewing thread sees the release and
        // stops, and whoever waits for a notice hears of it.
        Ok(handle.leadership.table().release(&handle.name, term)?)
    })
}

/// Frees a leadership handle, resigning first if it still leads (unless called in a
/// `fork()`ed child). NULL does nothing.
///
/// # Safety
/// `leadership` is NULL or a handle not yet freed, used by no other thread during the
/// call and never again after it.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leadership_free(leadership: *mut shmlease_leadership) {
    if leadership.is_null() {
        return;
    }
    boundary(|| {
        // SAFETY: a non-NULL pointer is a `Box<LeadershipHandle>` from `campaign`, handed
        // back exactly once per the caller. Dropping the leadership resigns.
        drop(unsafe { Box::from_raw(leadership.cast::<LeadershipHandle>()) });
        Ok(())
    });
}

/// Stops a runner (`shmlease_runner_run`) from any thread. Opaque: make one with
/// `shmlease_stopper_new`, free it with `shmlease_stopper_free` once no runner uses it.
/// It serves one run at a time, and once stopped stays stopped: a run started with a
/// stopped stopper returns at once.
#[allow(non_camel_case_types)]
pub struct shmlease_stopper {
    _opaque: [u8; 0],
}

/// Makes a stopper.
///
/// # Safety
/// `stopper_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_stopper_new(
    stopper_out: *mut *mut shmlease_stopper,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let out = unsafe { Out::new(stopper_out, "stopper_out")? };
        out.write(Box::into_raw(Box::new(Stopper::default())).cast());
        Ok(())
    })
}

/// Stops the runner using this stopper: a campaigning runner gives up
/// (`shmlease_runner_run` returns with `led` false), a leading one is told to stop
/// (`SHMLEASE_STOP_STOPPED`) and resigns when `on_started` returns. Any thread may call
/// it, at any time (not from a signal handler: it takes a lock).
///
/// # Safety
/// `stopper` is NULL or a stopper not yet freed.
#[no_mangle]
pub unsafe extern "C" fn shmlease_stopper_stop(
    stopper: *const shmlease_stopper,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: a non-NULL stopper is a `Box<Stopper>` from `shmlease_stopper_new`.
        unsafe { arg(stopper.cast::<Stopper>(), "stopper")? }.stop();
        Ok(())
    })
}

/// Frees a stopper. NULL does nothing.
///
/// # Safety
/// `stopper` is NULL or a stopper not yet freed, used by no runner or other thread
/// during the call and never again after it.
#[no_mangle]
pub unsafe extern "C" fn shmlease_stopper_free(stopper: *mut shmlease_stopper) {
    if stopper.is_null() {
        return;
    }
    boundary(|| {
        // SAFETY: a `Box<Stopper>` from `shmlease_stopper_new`, handed back once.
        drop(unsafe { Box::from_raw(stopper.cast::<Stopper>()) });
        Ok(())
    });
}

/// Why a leading callback is told to stop (`shmlease_leading_should_stop`), and why a
/// term ended (`shmlease_stopped`). The `SHMLEASE_STOP_LOST_*` values are all at least
/// `SHMLEASE_STOP_LOST_EXPIRED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum shmlease_stop_reason {
    /// Not told to stop (go on leading; or `on_started` returned on its own).
    SHMLEASE_STOP_NONE = 0,
    /// Someone asked the leader to hand over (`shmlease_request_release`).
    SHMLEASE_STOP_REQUESTED = 1,
    /// `shmlease_stopper_stop` was called.
    SHMLEASE_STOP_STOPPED = 2,
    /// Less than the stop margin is left before the term's deadline: renewals are late
    /// (the process was stopped or starved) and another candidate may be elected at the
    /// deadline.
    SHMLEASE_STOP_LATE = 3,
    /// Leadership is lost, it expired: another candidate may lead now. Only the term
    /// (fencing) protects what the callback still does.
    SHMLEASE_STOP_LOST_EXPIRED = 4,
    /// Leadership is lost: revoked.
    SHMLEASE_STOP_LOST_REVOKED = 5,
    /// Leadership is lost: released by token from elsewhere.
    SHMLEASE_STOP_LOST_RELEASED = 6,
    /// Leadership is lost: another candidate leads.
    SHMLEASE_STOP_LOST_TAKEN_OVER = 7,
}

fn stop_reason(reason: Option<StopReason>) -> shmlease_stop_reason {
    use shmlease_stop_reason::*;
    match reason {
        None => SHMLEASE_STOP_NONE,
        Some(StopReason::Requested) => SHMLEASE_STOP_REQUESTED,
        Some(StopReason::Stopped) => SHMLEASE_STOP_STOPPED,
        Some(StopReason::Late) => SHMLEASE_STOP_LATE,
        Some(StopReason::Lost(LostReason::Revoked)) => SHMLEASE_STOP_LOST_REVOKED,
        Some(StopReason::Lost(LostReason::Released)) => SHMLEASE_STOP_LOST_RELEASED,
        Some(StopReason::Lost(LostReason::TakenOver)) => SHMLEASE_STOP_LOST_TAKEN_OVER,
        Some(StopReason::Lost(_)) => SHMLEASE_STOP_LOST_EXPIRED,
    }
}

/// How a term ended, as `on_stopped` hears it and `shmlease_run_result` keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_stopped {
    /// The term that ended.
    pub term: u64,
    /// Why `on_started` was told to stop, if it was (`SHMLEASE_STOP_NONE`: it returned
    /// on its own).
    pub reason: shmlease_stop_reason,
    /// Whether leadership was still this runner's when `on_started` returned, and was
    /// then released (the next candidate was woken at once); false: already lost.
    pub resigned: bool,
}

impl shmlease_stopped {
    fn from_rust(s: &Stopped) -> shmlease_stopped {
        shmlease_stopped { term: s.term, reason: stop_reason(s.reason), resigned: s.resigned }
    }
}

/// What a leading callback sees: its term, and whether to stop. Opaque, and valid only
/// during the `on_started` call it is given to (from any thread meanwhile).
#[allow(non_camel_case_types)]
pub struct shmlease_leading {
    _opaque: [u8; 0],
}

/// Borrows the `Leading` behind a pointer given to `on_started`.
///
/// # Safety
/// `p` is NULL or the pointer given to a running `on_started`, for `'a`.
unsafe fn leading_arg<'a>(p: *const shmlease_leading) -> Result<&'a Leading<'a, 'static>, Failure> {
    // SAFETY: a non-NULL pointer is the `&Leading` `shmlease_runner_run` passed to the
    // running callback, alive until the callback returns, per the caller.
    unsafe { arg(p.cast::<Leading<'a, 'static>>(), "leading") }
}

/// The term being led: its grant's fencing token.
///
/// # Safety
/// `leading` is NULL or the pointer given to the running `on_started`; `term_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leading_term(
    leading: *const shmlease_leading,
    term_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (leading, out) = unsafe { (leading_arg(leading)?, Out::new(term_out, "term_out")?) };
        out.write(leading.term());
        Ok(())
    })
}

/// Sets `*leader_out` to whether this runner still leads (see
/// `shmlease_leadership_is_leader`).
///
/// # Safety
/// `leading` is NULL or the pointer given to the running `on_started`; `leader_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leading_is_leader(
    leading: *const shmlease_leading,
    leader_out: *mut bool,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (leading, out) =
            unsafe { (leading_arg(leading)?, Out::new(leader_out, "leader_out")?) };
        out.write(leading.is_leader());
        Ok(())
    })
}

/// Nanoseconds left before the term's deadline (renewed in the background).
///
/// # Safety
/// `leading` is NULL or the pointer given to the running `on_started`;
/// `remaining_ns_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leading_remaining_ns(
    leading: *const shmlease_leading,
    remaining_ns_out: *mut u64,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (leading, out) =
            unsafe { (leading_arg(leading)?, Out::new(remaining_ns_out, "remaining_ns_out")?) };
        out.write(nanos(leading.remaining()));
        Ok(())
    })
}

/// Sets `*reason_out` to whether `on_started` should stop, and why
/// (`SHMLEASE_STOP_NONE`: go on). Once a reason is given it stays, except that a loss
/// replaces any other. A few atomic loads: cheap enough for every loop iteration.
///
/// # Safety
/// `leading` is NULL or the pointer given to the running `on_started`; `reason_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leading_should_stop(
    leading: *const shmlease_leading,
    reason_out: *mut shmlease_stop_reason,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (leading, out) =
            unsafe { (leading_arg(leading)?, Out::new(reason_out, "reason_out")?) };
        out.write(stop_reason(leading.should_stop()));
        Ok(())
    })
}

/// Blocks until `on_started` should stop (see `shmlease_leading_should_stop`), or
/// `timeout_ns` passes (forever if negative): woken at once by a loss, a hand-over
/// request or `shmlease_stopper_stop`, and by the clock when the deadline comes within
/// the stop margin. Always writes `*reason_out`; on timeout it is `SHMLEASE_STOP_NONE`
/// and the call returns `SHMLEASE_TIMED_OUT`, so that a worker can loop:
/// `while (shmlease_leading_wait_stop(l, 100 * MSEC, &why) == SHMLEASE_TIMED_OUT) work();`
///
/// # Safety
/// `leading` is NULL or the pointer given to the running `on_started`; `reason_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_leading_wait_stop(
    leading: *const shmlease_leading,
    timeout_ns: i64,
    reason_out: *mut shmlease_stop_reason,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (leading, out) =
            unsafe { (leading_arg(leading)?, Out::new(reason_out, "reason_out")?) };
        let reason = leading.wait_stop(wait(timeout_ns));
        out.write(stop_reason(reason));
        match reason {
            Some(_) => Ok(()),
            None => Err(Failure::Invalid(
                shmlease_status::SHMLEASE_TIMED_OUT,
                "not told to stop within the timeout".into(),
            )),
        }
    })
}

/// Called while leading, on the runner's thread: lead until told to stop (poll
/// `shmlease_leading_should_stop`, or block in `shmlease_leading_wait_stop`), then
/// return; the value returned ends up in `shmlease_run_result.lead_result`. `leading`
/// is valid until it returns.
#[allow(non_camel_case_types)]
pub type shmlease_on_started =
    Option<unsafe extern "C" fn(leading: *const shmlease_leading, user_data: *mut c_void) -> c_int>;

/// Called once after `on_started` returned and the runner resigned: only for a runner
/// that led. `stopped` is valid during the call.
#[allow(non_camel_case_types)]
pub type shmlease_on_stopped =
    Option<unsafe extern "C" fn(stopped: *const shmlease_stopped, user_data: *mut c_void)>;

/// Called once for every leader the runner sees: others while it campaigns, then itself
/// when elected (before `on_started`). `leader` is valid during the call.
#[allow(non_camel_case_types)]
pub type shmlease_on_new_leader =
    Option<unsafe extern "C" fn(leader: *const shmlease_leader, user_data: *mut c_void)>;

/// How `shmlease_runner_run` campaigns and leads. Zeroed fields mean the defaults;
/// only `on_started` is required.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_runner_options {
    /// TTL of a term, renewed every third of it in the background (0: 10 s).
    pub ttl_ns: u64,
    /// Label shown with the leader (NULL: none; at most 8 bytes).
    pub label: *const c_char,
    /// How long before an unrenewed deadline `on_started` is told to stop
    /// (`SHMLEASE_STOP_LATE`); at most half the TTL (0: TTL/5).
    pub stop_margin_ns: u64,
    /// Give up campaigning after this long (`SHMLEASE_TIMED_OUT`; 0: no limit).
    pub campaign_timeout_ns: u64,
    /// The leading callback. Required.
    pub on_started: shmlease_on_started,
    /// Optional (NULL).
    pub on_stopped: shmlease_on_stopped,
    /// Optional (NULL).
    pub on_new_leader: shmlease_on_new_leader,
    /// Passed to every callback as is.
    pub user_data: *mut c_void,
}

/// What `shmlease_runner_run` did.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct shmlease_run_result {
    /// Whether the runner was elected and called `on_started`; false: stopped before.
    pub led: bool,
    /// What `on_started` returned (0 unless `led`).
    pub lead_result: c_int,
    /// How the term ended, as `on_stopped` heard it (zero unless `led`).
    pub stopped: shmlease_stopped,
}

/// Runs a candidate in the election `name`, in the shape of client-go's
/// `leaderelection`: campaigns (calling `on_new_leader` for every leader seen), calls
/// `on_started` once elected, keeps the term renewed until it returns, resigns (the next
/// candidate is woken at once), then calls `on_stopped` — only if it led. Blocks the
/// calling thread throughout; `stopper` (NULL: none) stops it from another thread.
///
/// When `on_started` overruns: after a hand-over request, a stop or a late renewal,
/// the term stays this runner's until it returns (renewals go on) unless the process is
/// frozen past the TTL or someone revokes it; after a loss another candidate may
/// already lead, with a higher term: whatever the callback still writes must carry its
/// term so that the resource refuses it. Fencing makes an overrun harmless, not timing.
///
/// Returns `SHMLEASE_OK` with `*result_out` (NULL: not wanted) saying whether it led,
/// or `SHMLEASE_TIMED_OUT` when `campaign_timeout_ns` passed first.
///
/// # Safety
/// `table` is NULL or an open handle; `name` is NULL or NUL-terminated; `options` is
/// NULL or valid for reads, its `label` NULL or NUL-terminated and its callbacks safe to
/// call with its `user_data`; `stopper` is NULL or a stopper not yet freed; `result_out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmlease_runner_run(
    table: *const shmlease_table,
    name: *const c_char,
    options: *const shmlease_runner_options,
    stopper: *const shmlease_stopper,
    result_out: *mut shmlease_run_result,
) -> shmlease_status {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (table, name, options, stopper, out) = unsafe {
            (
                table_arg(table)?,
                str_arg(name, "name")?,
                arg(options, "options")?,
                stopper.cast::<Stopper>().as_ref(),
                Out::optional(result_out),
            )
        };
        // SAFETY: forwarded contract (the options' label).
        let label = unsafe { opt_str_arg(options.label, "label")? };
        let on_started = options.on_started.ok_or(Failure::Null("options->on_started"))?;
        let user_data = options.user_data;
        let stopped = std::cell::Cell::new(None);
        let election = election(table, name, options.ttl_ns, label)?;
        let mut runner = election.runner();
        if options.stop_margin_ns != 0 {
            runner = runner.stop_margin(Duration::from_nanos(options.stop_margin_ns))?;
        }
        if options.campaign_timeout_ns != 0 {
            runner =
                runner.campaign_timeout(Some(Duration::from_nanos(options.campaign_timeout_ns)));
        }
        if let Some(stopper) = stopper {
            runner = runner.stopped_by(stopper);
        }
        if let Some(report) = options.on_new_leader {
            runner = runner.on_new_leader(move |leader| {
                let leader = shmlease_leader::from_rust(leader.term, Some(leader));
                // SAFETY: the caller vouches for its callbacks and their user data.
                unsafe { report(&leader, user_data) };
            });
        }
        let on_stopped = options.on_stopped;
        runner = runner.on_stopped(|s| {
            let s = shmlease_stopped::from_rust(s);
            stopped.set(Some(s));
            if let Some(report) = on_stopped {
                // SAFETY: as above.
                unsafe { report(&s, user_data) };
            }
        });
        let value = runner.run(|leading| {
            let leading: *const Leading<'_, '_> = leading;
            // SAFETY: as above; `leading` outlives the call.
            unsafe { on_started(leading.cast(), user_data) }
        })?;
        if let Some(out) = out {
            let none = shmlease_stopped {
                term: 0,
                reason: shmlease_stop_reason::SHMLEASE_STOP_NONE,
                resigned: false,
            };
            out.write(shmlease_run_result {
                led: value.is_some(),
                lead_result: value.unwrap_or(0),
                stopped: stopped.get().unwrap_or(none),
            });
        }
        Ok(())
    })
}
