//! `shmlease.Lease`: a lease held by this process, kept with the table it borrows.
//!
//! The library's `Lease<'t>` borrows its `LeaseTable`; a Python object cannot carry a
//! borrow, so [`Owned`] keeps the lease together with an `Arc` of the table it borrows
//! (see the SAFETY argument there). A [`LeaseCell`] holds the `Owned` for the Python
//! object and for the keeper thread; threads waiting for the lease's loss share it
//! through an `Arc`, so that `release` never waits for them.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use shmlease_core::{DetachedLease, Error, GrantInfo, Lease, LeaseTable, LostReason};

use crate::convert;
use crate::errors::to_py;
use crate::keeper::{self, Keeper};
use crate::process;
use crate::table::{cancelled, PyTable, SLICE};

/// A lease together with the table it borrows.
pub struct Owned {
    // Declared before `table`, so dropped before it (fields drop in declaration order).
    lease: Lease<'static>,
    table: Arc<LeaseTable>,
}

impl Owned {
    /// Takes a lease from `table` with `take`, and keeps it with the table.
    pub fn take(
        table: &Arc<LeaseTable>,
        take: impl FnOnce(&LeaseTable) -> Result<Lease<'_>, Error>,
    ) -> Result<Owned, Error> {
        let table = Arc::clone(table);
        let lease = take(&table)?;
        // SAFETY: `lease` borrows the `LeaseTable` inside `table`'s heap allocation,
        // which never moves and which the `Owned` keeps alive through its `table` field
        // for as long as the lease exists: the lease is dropped first (field order) or
        // consumed first (`release`, `detach`, `keep_alive`, which destructure or borrow
        // `self`). The `'static` lifetime never leaves this type: `lease()` hands out
        // the lease with the lifetime of the borrow of `self`, and no `&mut Lease` is
        // handed out (one could swap in a lease of another table).
        let lease = unsafe { std::mem::transmute::<Lease<'_>, Lease<'static>>(lease) };
        Ok(Owned { lease, table })
    }

    /// The lease, for as long as `self` is borrowed.
    pub fn lease(&self) -> &Lease<'_> {
        &self.lease
    }

    fn keep_alive(&mut self, ttl: Duration) -> Result<(), Error> {
        self.lease.keep_alive(ttl)
    }

    fn release(self) -> Result<(), Error> {
        let Owned { lease, table } = self;
        let released = lease.release();
        drop(table);
        released
    }

    fn detach(self) -> Result<DetachedLease, Error> {
        let Owned { lease, table } = self;
        let detached = lease.detach();
        drop(table);
        detached
    }
}

struct State {
    /// The lease while this object holds it; `None` once released or detached.
    held: Option<Arc<Owned>>,
    /// Whether the library's keep-alive runs for it.
    keeping: bool,
    /// Threads sleeping on `finished` (so that `release` makes no system call when
    /// nobody waits).
    sleepers: u32,
}

/// What a Python `Lease` shares with the keeper and with threads waiting for its loss.
pub struct LeaseCell {
    pub table: Arc<LeaseTable>,
    pub name: String,
    pub token: u64,
    pub ttl: Duration,
    keep_alive: bool,
    /// The process that took it (a forked child only reads it).
    pid: u32,
    state: Mutex<State>,
    finished: Condvar,
    lost: OnceLock<LostReason>,
    registration: OnceLock<(Arc<Keeper>, keeper::Key)>,
}

impl LeaseCell {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn taken_here(&self) -> bool {
        process::pid() == self.pid
    }

    /// Runs `f` on the lease, if still held through this object.
    fn with<R>(&self, f: impl FnOnce(&Lease<'_>) -> R) -> Option<R> {
        let state = self.state();
        state.held.as_ref().map(|o| f(o.lease()))
    }

    /// Whether the grant is live, and its time left. In a forked child read from the
    /// table, not through `state`: a thread of the parent (the keeper, starting a
    /// keep-alive) may have held its mutex at the fork, and would never release it here.
    fn validity(&self) -> (bool, Duration) {
        if self.taken_here() {
            return self.with(|l| (l.is_valid(), l.remaining())).unwrap_or_default();
        }
        match self.grant() {
            Some(g) => (true, g.remaining),
            None => (false, Duration::ZERO),
        }
    }

    /// This lease's grant as the table shows it, if it is live (found by its token:
    /// a name with permits has several).
    fn grant(&self) -> Option<GrantInfo> {
        let info = self.table.get(&self.name).ok().flatten()?;
        info.grants.into_iter().find(|g| g.token == self.token)
    }

    /// The error a forked child gets for changing its parent's lease (as the library
    /// words it), found by reading the table only.
    fn refusal(&self) -> Error {
        let holder = self.grant().and_then(|g| g.holder);
        Error::BoundToProcess { token: self.token, holder }
    }

    fn already_finished(&self) -> Error {
        Error::Lost { token: self.token, reason: LostReason::Released }
    }

    /// Called by the keeper when the first renewal is due: renews and hands the lease
    /// to the library's keep-alive.
    pub fn start_keep_alive(&self) {
        let mut state = self.state();
        if state.keeping {
            return;
        }
        let Some(owned) = state.held.as_mut().and_then(Arc::get_mut) else {
            // Released, or shared by a waiter, which starts the keep-alive itself.
            return;
        };
        match owned.lease().renew(self.ttl) {
            Ok(()) => state.keeping = owned.keep_alive(self.ttl).is_ok(),
            Err(Error::Lost { reason, .. }) => {
                let _ = self.lost.set(reason);
            }
            Err(_) => {}
        }
    }

    /// Why the lease is lost, if it is (`None` while valid, after release, or in a
    /// forked child, where the lease stays its parent's).
    fn lost_now(&self, owned: &Owned) -> Option<LostReason> {
        if let Some(r) = self.lost.get() {
            return Some(*r);
        }
        let lease = owned.lease();
        let reason = lease.lost().or_else(|| {
            if lease.is_valid() {
                return None;
            }
            // A grant that is no longer live never becomes live again: this renewal
            // cannot succeed, and its refusal says why, as the library sees it.
            match lease.renew(Duration::from_secs(1)) {
                Err(Error::Lost { reason, .. }) => Some(reason),
                _ => None,
            }
        })?;
        Some(*self.lost.get_or_init(|| reason))
    }

    /// Ends this object's hold: the lease, for releasing or detaching it.
    fn take(&self) -> Option<Arc<Owned>> {
        let mut state = self.state();
        let held = state.held.take();
        state.keeping = false;
        if state.sleepers > 0 {
            self.finished.notify_all();
        }
        drop(state);
        if let Some((keeper, key)) = self.registration.get() {
            keeper.cancel(*key);
        }
        held
    }

    fn release(&self) -> Result<(), Error> {
        if !self.taken_here() {
            return Err(self.refusal());
        }
        let held = self.take().ok_or_else(|| self.already_finished())?;
        match Arc::try_unwrap(held) {
            Ok(owned) => owned.release(),
            // Threads waiting for its loss share it: release it by token (this
            // process holds it); their keep-alive sees the release and lets them go,
            // and the last of them drops a lease that is no longer live (a no-op).
            Err(shared) => {
                let released = self.table.release(&self.name, self.token);
                drop(shared);
                released
            }
        }
    }

    fn detach(&self, py: Python<'_>) -> Result<DetachedLease, Error> {
        if !self.taken_here() {
            return Err(self.refusal());
        }
        let mut held = self.take().ok_or_else(|| self.already_finished())?;
        // Waiters see it taken within a wait slice and let go of it.
        loop {
            match Arc::try_unwrap(held) {
                Ok(owned) => return owned.detach(),
                Err(shared) => {
                    held = shared;
                    py.detach(|| std::thread::sleep(Duration::from_millis(1)));
                }
            }
        }
    }

    /// Waits, in slices, until the lease is lost (its reason), released through this
    /// object, `timeout` passes or `cancel` is set (`None`).
    fn wait_lost(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
        cancel: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<LostReason>> {
        if !self.taken_here() {
            return Ok(None); // the parent's lease: its loss is the parent's to learn
        }
        let start = Instant::now();
        loop {
            let (owned, keeping) = {
                let mut state = self.state();
                // Loss is noticed promptly only by the keep-alive: start it now
                // rather than when the keeper would.
                if self.keep_alive && !state.keeping {
                    if let Some(owned) = state.held.as_mut().and_then(Arc::get_mut) {
                        state.keeping = owned.keep_alive(self.ttl).is_ok();
                    }
                }
                let keeping = state.keeping;
                match &state.held {
                    None => return Ok(None),
                    Some(o) => (Arc::clone(o), keeping),
                }
            };
            if let Some(reason) = self.lost_now(&owned) {
                return Ok(Some(reason));
            }
            let left = match timeout {
                Some(t) => match t.checked_sub(start.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Ok(None),
                },
                None => Duration::MAX,
            };
            let slice = left.min(SLICE);
            py.detach(|| {
                if keeping {
                    // Woken at once by the keep-alive when it sees the loss.
                    owned.lease().wait_lost(Some(slice));
                } else {
                    // No keep-alive: the lease ends at its deadline, or by revocation,
                    // seen at the end of the slice.
                    let nap = slice.min(owned.lease().remaining()).max(Duration::from_millis(1));
                    let mut state = self.state();
                    state.sleepers += 1;
                    let mut state = self
                        .finished
                        .wait_timeout_while(state, nap, |s| s.held.is_some())
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    state.sleepers -= 1;
                }
                drop(owned);
            });
            py.check_signals()?;
            if cancelled(cancel)? {
                return Ok(None);
            }
        }
    }
}

impl Drop for LeaseCell {
    fn drop(&mut self) {
        // The lease itself is released by dropping `state` (unless waiters still
        // share it; the last of them releases it).
        if let Some((keeper, key)) = self.registration.get() {
            keeper.cancel(*key);
        }
    }
}

/// A lease on a name, held by this process: exclusive until its deadline, which the
/// keep-alive (on by default) pushes back while the lease is held. Taken with
/// ``permits=N``, it is one of up to ``N`` grants of the name, and with
/// ``shared=True`` one of its shared holders; each is its own lease: everything here
/// is about this grant alone.
///
/// Use it as a context manager (``with table.lease("name") as lease:``): leaving the
/// block releases it. Pass ``lease.token`` to any resource that can reject stale
/// holders (fencing). A lease dropped by the garbage collector is released. In a
/// ``fork()``ed child the lease stays the parent's: the child may read it, but
/// ``renew``, ``release`` and ``detach`` raise ``BoundToProcess`` and dropping it does
/// nothing.
#[pyclass(module = "shmlease", name = "Lease", frozen)]
pub struct PyLease {
    cell: Arc<LeaseCell>,
    table: Py<PyTable>,
}

impl PyLease {
    /// A lease just taken from `table`.
    pub fn new(
        table: Py<PyTable>,
        owned: Owned,
        name: &str,
        ttl: Duration,
        keep_alive: bool,
    ) -> PyLease {
        let token = owned.lease().token();
        let cell = Arc::new(LeaseCell {
            table: Arc::clone(&owned.table),
            name: name.to_owned(),
            token,
            ttl,
            keep_alive,
            pid: process::pid(),
            state: Mutex::new(State { held: Some(Arc::new(owned)), keeping: false, sleepers: 0 }),
            finished: Condvar::new(),
            lost: OnceLock::new(),
            registration: OnceLock::new(),
        });
        if keep_alive {
            if ttl / 3 < keeper::SOONEST {
                cell.start_keep_alive();
            } else {
                let _ = cell.registration.set(keeper::register(&cell, ttl / 3));
            }
        }
        PyLease { cell, table }
    }
}

fn monotonic_after(d: Duration) -> f64 {
    convert::monotonic() + d.as_secs_f64()
}

#[pymethods]
impl PyLease {
    /// The fencing token: larger than every token handed out for this name before.
    #[getter]
    fn token(&self) -> u64 {
        self.cell.token
    }

    /// The lease name.
    #[getter]
    fn name(&self) -> &str {
        &self.cell.name
    }

    /// The table the lease is in.
    #[getter]
    fn table(&self, py: Python<'_>) -> Py<PyTable> {
        self.table.clone_ref(py)
    }

    /// The TTL the lease was taken with, in seconds (what the keep-alive and
    /// ``renew()`` extend it to).
    #[getter]
    fn ttl(&self) -> f64 {
        self.cell.ttl.as_secs_f64()
    }

    /// Whether this grant is still the live one: not expired, revoked, taken over,
    /// released or detached.
    #[getter]
    fn valid(&self) -> bool {
        self.cell.validity().0
    }

    /// Seconds left before the grant expires unless renewed (0.0 once it is not valid).
    #[getter]
    fn remaining(&self) -> f64 {
        self.cell.validity().1.as_secs_f64()
    }

    /// When the grant expires unless renewed, on the clock of ``time.monotonic()``.
    #[getter]
    fn deadline(&self) -> f64 {
        monotonic_after(self.cell.validity().1)
    }

    /// Whether a keep-alive was asked for (it starts when the first renewal is due).
    #[getter]
    fn keep_alive(&self) -> bool {
        self.cell.keep_alive
    }

    /// Whether someone asked the holder to release this lease
    /// (``table.request_release(name)``) while it is still held; ``False`` once it is
    /// not. Check it between steps of the work to hand over early.
    #[getter]
    fn release_requested(&self) -> bool {
        // Not known in a forked child (see `validity`): the request is for the parent.
        self.cell.taken_here() && self.cell.with(|l| l.release_requested()).unwrap_or(false)
    }

    /// ``None`` while the lease is valid (or was released or detached through this
    /// object, or in a forked child); once it is lost, the reason (a ``LostReason``).
    #[getter]
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !self.cell.taken_here() {
            return Ok(None);
        }
        let owned = {
            let state = self.cell.state();
            match &state.held {
                Some(o) => Arc::clone(o),
                None => return Ok(None),
            }
        };
        self.cell.lost_now(&owned).map(|r| convert::lost_reason(py, r)).transpose()
    }

    /// Extends the grant to ``ttl`` seconds (or ``timedelta``) from now; by default to
    /// the TTL it was taken with. Raises ``Lost`` if the grant is gone.
    #[pyo3(signature = (ttl = None))]
    fn renew(&self, ttl: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let ttl = match ttl {
            Some(t) if !t.is_none() => convert::duration(t, "ttl")?,
            _ => self.cell.ttl,
        };
        if !self.cell.taken_here() {
            return Err(to_py(self.cell.refusal()));
        }
        match self.cell.with(|l| l.renew(ttl)) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                if let Error::Lost { reason, .. } = e {
                    let _ = self.cell.lost.set(reason);
                }
                Err(to_py(e))
            }
            None => Err(to_py(self.cell.already_finished())),
        }
    }

    /// Releases the lease, waking anyone waiting for it. Raises ``Lost`` if the grant
    /// was already gone (expired and taken, revoked, or already released).
    fn release(&self) -> PyResult<()> {
        self.cell.release().map_err(to_py)
    }

    /// Turns the lease loose from this process: it is no longer released when this
    /// object is dropped nor reclaimed when this process dies, and lasts until its
    /// deadline unless someone renews or releases it with its name and token
    /// (``table.renew(name, token, ttl)``, ``table.release(name, token)``). Stops the
    /// keep-alive. Returns a ``DetachedLease``.
    fn detach<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let d = self.cell.detach(py).map_err(to_py)?;
        let left = d.deadline.saturating_duration_since(Instant::now());
        convert::detached(py, &self.cell.name, self.cell.token, monotonic_after(left))
    }

    /// Blocks until the lease is lost, returning why (a ``LostReason``), or until
    /// ``timeout`` seconds pass, the lease is released through this object, or
    /// ``cancel`` (a ``threading.Event``) is set, returning ``None``.
    ///
    /// With the keep-alive, a revocation or takeover is noticed at once; without it,
    /// expiry is noticed at the deadline and a revocation within 50 ms. The wait
    /// releases the GIL and can be interrupted by Ctrl-C (``KeyboardInterrupt``).
    #[pyo3(signature = (timeout = None, *, cancel = None))]
    fn wait_lost<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
        cancel: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let timeout = convert::timeout(timeout)?;
        let cancel = cancel.filter(|c| !c.is_none());
        self.cell.wait_lost(py, timeout, cancel)?.map(|r| convert::lost_reason(py, r)).transpose()
    }

    /// ``await lease.wait_lost_async(timeout)``: ``wait_lost`` without blocking the
    /// event loop; cancelling the awaiting task ends the wait.
    #[pyo3(signature = (timeout = None))]
    fn wait_lost_async<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("shmlease._aio")?.getattr("wait_lost_async")?.call1((slf, timeout))
    }

    /// Returns the lease itself (it was taken by ``table.lease(...)``).
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Releases the lease unless it was released or detached already. If the block
    /// ended normally and the lease was lost meanwhile, raises ``Lost``: the block ran
    /// (in part) without exclusivity.
    #[pyo3(signature = (exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.cell.taken_here() || self.cell.state().held.is_none() {
            return Ok(false);
        }
        match self.cell.release() {
            Err(e) if exc_type.is_none_or(|t| t.is_none()) => Err(to_py(e)),
            _ => Ok(false),
        }
    }

    fn __repr__(&self) -> String {
        let released = self.cell.taken_here() && self.cell.state().held.is_none();
        let what = match self.cell.validity() {
            _ if released => "released".to_string(),
            (true, left) => format!("valid, {:.3}s left", left.as_secs_f64()),
            (false, _) => "lost".to_string(),
        };
        format!("<shmlease.Lease {:?} token={} {what}>", self.cell.name, self.cell.token)
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a Lease belongs to the process that took it and cannot be pickled; detach() it \
             and pass its name and token instead",
        ))
    }
}
