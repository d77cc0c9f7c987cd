//! Leader election: `shmlease.Election`, `Leadership`, `Observer`, `Leading` and
//! `Stopper`, over the library's `election` module.
//!
//! The library's types borrow their `LeaseTable`; as for `Lease` (see `lease::Owned`),
//! each Python object keeps what it borrows from together with an `Arc` of the table.
//!
//! # The runner and the GIL
//!
//! `Election.run` drives the library's `Runner` on the calling thread with the GIL
//! released, and takes the GIL back only to call Python (`lead`, `on_new_leader`,
//! `on_stopped`). The runner's campaign is one blocking call that cannot be sliced, so
//! it is made in *attempts* of at most [`SLICE`] each (`campaign_timeout`): between two
//! attempts signal handlers run (Ctrl-C, or a handler calling `stopper.stop()`) and the
//! overall `campaign_wait` is checked. An attempt that times out has taken nothing;
//! `on_new_leader` is told of each leader once across attempts. A Python exception in
//! a callback is kept and raised by `run` once the runner has resigned: the lease is
//! never left behind, and no panic crosses into Python.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;

use shmlease_core::election::{Leading, Observer, StopReason, Stopped, Stopper};
use shmlease_core::{Election, Error, Leader, Leadership, LeaseState, LeaseTable, LostReason};

use crate::convert::{self, Wait};
use crate::errors::{timed_out, to_py};
use crate::process;
use crate::table::{cancelled, PyTable, SLICE};

/// The default TTL of a leadership, as the library's.
pub const DEFAULT_TTL: Duration = shmlease_core::election::DEFAULT_TTL;

/// An election on one lease name of a table (``table.election(name, ttl=, label=)``).
///
/// Candidates ``campaign()``; the winner holds a ``Leadership`` whose ``term`` is its
/// grant's fencing token (terms only grow), renewed in the background until it
/// resigns. Anyone may ask who leads (``leader()``) or follow every change
/// (``observe()``); ``run(lead)`` campaigns, runs ``lead`` while leading and hands
/// over, in the shape of client-go's ``leaderelection``. A leader that dies is
/// replaced at once (its death wakes the candidates); one that is frozen, after
/// ``ttl``.
#[pyclass(module = "shmlease", name = "Election", frozen)]
pub struct PyElection {
    table: Py<PyTable>,
    shared: Arc<LeaseTable>,
    name: String,
    ttl: Duration,
    label: Option<String>,
}

impl PyElection {
    /// The election on `name` of `table`, checked.
    pub fn new(
        table: &Bound<'_, PyTable>,
        name: &str,
        ttl: Duration,
        label: Option<String>,
    ) -> PyResult<PyElection> {
        let shared = Arc::clone(table.get().shared());
        let election =
            PyElection { table: table.clone().unbind(), shared, name: name.into(), ttl, label };
        election.of(&election.shared).map_err(to_py)?;
        Ok(election)
    }

    /// The library's election, on `table` (this election's table).
    fn of<'t>(&self, table: &'t LeaseTable) -> Result<Election<'t>, Error> {
        let election = table.election(&self.name)?.ttl(self.ttl)?;
        match &self.label {
            Some(label) => election.label(label),
            None => Ok(election),
        }
    }

    /// Campaigns with `take`, keeping the leadership with the table.
    fn own(
        &self,
        take: impl for<'e, 't> FnOnce(&'e Election<'t>) -> Result<Leadership<'t>, Error>,
    ) -> Result<OwnedLeadership, Error> {
        let table = Arc::clone(&self.shared);
        let leadership = take(&self.of(&table)?)?;
        // SAFETY: as for `lease::Owned::take`: `leadership` borrows the `LeaseTable` in
        // `table`'s heap allocation, which never moves and which `OwnedLeadership`
        // keeps alive (its `_table` field, dropped after `leadership`) for as long as
        // the leadership exists; `resign` destructures it. The `'static` lifetime
        // never leaves `OwnedLeadership`, which hands out only shared borrows.
        let leadership =
            unsafe { std::mem::transmute::<Leadership<'_>, Leadership<'static>>(leadership) };
        Ok(OwnedLeadership { leadership, _table: table })
    }
}

/// A leadership together with the table it borrows.
struct OwnedLeadership {
    // Declared before `_table`, so dropped before it.
    leadership: Leadership<'static>,
    _table: Arc<LeaseTable>,
}

impl OwnedLeadership {
    fn get(&self) -> &Leadership<'_> {
        &self.leadership
    }

    fn resign(self) -> Result<(), Error> {
        let OwnedLeadership { leadership, _table } = self;
        leadership.resign()
    }
}

/// How one attempt of `Election.run` ended.
enum Attempt {
    /// Not elected within the attempt: campaign on.
    Again,
    /// The stopper was stopped before this candidate was elected.
    Stopped,
    /// Elected and done: `lead`'s value, or the first Python error.
    Done(PyResult<Py<PyAny>>),
}

/// The Python callables of a run.
struct Hooks {
    lead: Py<PyAny>,
    on_new_leader: Option<Py<PyAny>>,
    on_stopped: Option<Py<PyAny>>,
}

/// One attempt of `Election.run`: the library's runner with a campaign of at most
/// `slice`, run without the GIL (taken back only to call Python). `reported` is the
/// term `on_new_leader` heard of last (across attempts).
fn attempt(
    election: &Election<'_>,
    stopper: &Stopper,
    slice: Duration,
    margin: Option<Duration>,
    hooks: &Hooks,
    reported: &mut Option<u64>,
) -> Result<Attempt, Error> {
    let failed: RefCell<Option<PyErr>> = RefCell::new(None);
    let fail = |e: PyErr| {
        let mut failed = failed.borrow_mut();
        if failed.is_none() {
            *failed = Some(e); // the first error is the one raised
        }
    };
    let last = Cell::new(*reported);
    let led = Cell::new(false);
    let mut runner = election.runner().stopped_by(stopper).campaign_timeout(Some(slice));
    if let Some(margin) = margin {
        runner = runner.stop_margin(margin)?;
    }
    if let Some(hook) = &hooks.on_new_leader {
        runner = runner.on_new_leader(|leader: &Leader| {
            if failed.borrow().is_some() || last.get() == Some(leader.term) {
                return;
            }
            last.set(Some(leader.term));
            Python::attach(|py| {
                if let Err(e) = convert::leader(py, leader).and_then(|l| hook.call1(py, (l,))) {
                    fail(e);
                }
            });
        });
    }
    if let Some(hook) = &hooks.on_stopped {
        runner = runner.on_stopped(|stopped: &Stopped| {
            // Only after `lead` ran: a candidate whose callbacks failed before it was
            // called never led, as far as Python is concerned.
            if !led.get() {
                return;
            }
            Python::attach(|py| {
                if let Err(e) = convert::stopped(py, stopped).and_then(|s| hook.call1(py, (s,))) {
                    fail(e);
                }
            });
        });
    }
    let ran = runner.run(|leading: &Leading<'_, '_>| {
        if failed.borrow().is_some() {
            return None; // an `on_new_leader` failed: resign at once
        }
        led.set(true);
        let handle = LeadingHandle::new(leading);
        let value = Python::attach(|py| {
            let obj = Py::new(py, PyLeading { term: leading.term(), at: handle.clone() })?;
            hooks.lead.call1(py, (obj,))
        });
        // The Python object may outlive the call: from now on it no longer sees the
        // `Leading`, which ends when this closure returns.
        handle.end();
        Some(value)
    });
    *reported = last.get();
    let failed = failed.into_inner();
    Ok(match ran {
        Err(Error::TimedOut { .. }) => match failed {
            Some(e) => Attempt::Done(Err(e)),
            None => Attempt::Again,
        },
        Err(e) => return Err(e),
        Ok(None) => match failed {
            Some(e) => Attempt::Done(Err(e)),
            None => Attempt::Stopped,
        },
        Ok(Some(value)) => Attempt::Done(match (failed, value) {
            (Some(e), None | Some(Ok(_))) => Err(e),
            // `lead` raised: its exception wins over one of `on_stopped`.
            (_, Some(Err(e))) => Err(e),
            (None, Some(Ok(v))) => Ok(v),
            (None, None) => unreachable!("lead is skipped only after a failure"),
        }),
    })
}

#[pymethods]
impl PyElection {
    /// The lease name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The table.
    #[getter]
    fn table(&self, py: Python<'_>) -> Py<PyTable> {
        self.table.clone_ref(py)
    }

    /// How long a leadership lasts unless renewed, in seconds (its keep-alive renews
    /// it every third of this): how long a frozen leader blocks the others.
    #[getter]
    fn ttl(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// The label the leader shows to others (``None``: none).
    #[getter]
    fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// Campaigns until elected: waits up to ``wait`` seconds (or ``timedelta``),
    /// forever if ``None``, not at all if ``0`` (then ``Held`` is raised if someone
    /// leads). Raises ``Timeout`` when the wait runs out. Returns the ``Leadership``,
    /// renewed in the background until resigned; ``None`` only if ``cancel`` (a
    /// ``threading.Event``) was set.
    ///
    /// The wait releases the GIL and is woken at once by the leader's resignation,
    /// revocation, expiry or death; every 50 ms it runs signal handlers (Ctrl-C
    /// raises ``KeyboardInterrupt``) and checks ``cancel``.
    #[pyo3(signature = (wait = None, *, cancel = None))]
    fn campaign(
        slf: &Bound<'_, Self>,
        wait: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<PyLeadership>> {
        let py = slf.py();
        let this = slf.get();
        let cancel = cancel.filter(|c| !c.is_none());
        let wait = convert::wait(wait)?;
        let owned = match wait {
            Wait::Never => py.detach(|| this.own(|e| e.try_campaign())).map_err(to_py)?,
            Wait::Forever | Wait::For(_) => {
                let start = Instant::now();
                loop {
                    let left = match wait {
                        Wait::For(limit) => limit.saturating_sub(start.elapsed()),
                        _ => Duration::MAX,
                    };
                    let slice = left.min(SLICE);
                    match py.detach(|| this.own(|e| e.campaign(Some(slice)))) {
                        Ok(owned) => break owned,
                        Err(e @ Error::TimedOut { .. }) => {
                            if left <= SLICE && matches!(wait, Wait::For(_)) {
                                return Err(timed_out(e, start.elapsed()));
                            }
                        }
                        Err(e) => return Err(to_py(e)),
                    }
                    py.check_signals()?;
                    if cancelled(cancel)? {
                        return Ok(None);
                    }
                }
            }
        };
        Ok(Some(PyLeadership::new(slf.clone().unbind(), owned, this)))
    }

    /// ``async with election.campaign_async(wait) as leadership:`` (or ``await``):
    /// ``campaign`` without blocking the event loop; cancelling the awaiting task
    /// abandons the campaign (a leadership won meanwhile is resigned).
    #[pyo3(signature = (wait = None))]
    fn campaign_async<'py>(
        slf: &Bound<'py, Self>,
        wait: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("shmlease._aio")?.getattr("Campaign")?.call1((slf, wait))
    }

    /// Who leads now (a ``Leader``: term, pid, label, since, expires_at, remaining),
    /// or ``None`` — also when the leader is provably dead (a waiting candidate takes
    /// over at once).
    fn leader<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let leader = py.detach(|| self.of(&self.shared)?.leader()).map_err(to_py)?;
        leader.map(|l| convert::leader(py, &l)).transpose()
    }

    /// A stream of leadership changes (an ``Observer``), starting with the current
    /// state: for processes that follow the election without campaigning.
    fn observe(slf: &Bound<'_, Self>) -> PyResult<PyObserver> {
        let this = slf.get();
        let table = Arc::clone(&this.shared);
        let observer = this.of(&table).map_err(to_py)?.observe();
        // SAFETY: as in `own`: the observer borrows the `LeaseTable` in `table`'s heap
        // allocation, kept alive by the `PyObserver`'s `_table` field, which is dropped
        // after its `observer` field; the `'static` lifetime never leaves `PyObserver`.
        let observer = unsafe { std::mem::transmute::<Observer<'_>, Observer<'static>>(observer) };
        Ok(PyObserver {
            election: slf.clone().unbind(),
            observer: Mutex::new(observer),
            _table: table,
            unread: Mutex::new(None),
            pid: process::pid(),
        })
    }

    /// Campaigns, then calls ``lead(leading)`` while leading, and hands over once it
    /// has returned; returns its value, or ``None`` if ``stopper`` was stopped before
    /// this candidate was elected. The shape of client-go's ``leaderelection``:
    ///
    /// - ``leading`` (a ``Leading``) has the ``term`` (pass it to whatever the leader
    ///   writes: fencing), ``is_leader``, ``remaining``, and ``should_stop()`` /
    ///   ``wait_stop(timeout)``, which say when to stop and why (a ``StopReason``: a
    ///   hand-over was requested, ``stopper.stop()`` was called, renewals are late —
    ///   less than ``stop_margin`` is left, default ``ttl/5`` — or leadership is lost).
    ///   Nothing stops ``lead`` by force: until it returns, the keep-alive goes on
    ///   renewing, so no other candidate is elected unless leadership is lost (revoked,
    ///   or this process frozen past the TTL) — then only the term protects what
    ///   ``lead`` still does.
    /// - ``on_new_leader(leader)`` is called for every leader seen: others while
    ///   campaigning, then this candidate when elected.
    /// - ``on_stopped(stopped)`` (a ``Stopped``: term, reason, lost, resigned) is
    ///   called after ``lead`` has returned (or raised) and leadership was resigned —
    ///   only for a candidate that led.
    /// - ``stopper`` (a ``Stopper``) stops the run from any thread or a signal handler.
    ///
    /// ``campaign_wait`` limits the campaign (``Timeout``; ``None``: no limit). The run
    /// releases the GIL except while calling back into Python; while campaigning it
    /// runs signal handlers every 50 ms. An exception raised by ``lead`` or a callback
    /// is raised by ``run`` after leadership was resigned.
    #[pyo3(signature = (
        lead, *, stop_margin = None, campaign_wait = None, on_new_leader = None,
        on_stopped = None, stopper = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        lead: Py<PyAny>,
        stop_margin: Option<&Bound<'_, PyAny>>,
        campaign_wait: Option<&Bound<'_, PyAny>>,
        on_new_leader: Option<Py<PyAny>>,
        on_stopped: Option<Py<PyAny>>,
        stopper: Option<&Bound<'_, PyStopper>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let margin = stop_margin
            .filter(|m| !m.is_none())
            .map(|m| convert::duration(m, "stop_margin"))
            .transpose()?;
        let wait = convert::wait(campaign_wait)?;
        let election = self.of(&self.shared).map_err(to_py)?;
        if let Some(margin) = margin {
            election.runner().stop_margin(margin).map_err(to_py)?;
        }
        let stopper = stopper.map(|s| s.get().stopper.clone()).unwrap_or_default();
        let hooks = Hooks {
            lead,
            on_new_leader: on_new_leader.filter(|h| !h.is_none(py)),
            on_stopped: on_stopped.filter(|h| !h.is_none(py)),
        };
        let start = Instant::now();
        let mut reported = None;
        loop {
            let left = match wait {
                Wait::For(limit) => limit.saturating_sub(start.elapsed()),
                Wait::Never => Duration::ZERO,
                Wait::Forever => Duration::MAX,
            };
            let slice = left.min(SLICE);
            let outcome = py
                .detach(|| attempt(&election, &stopper, slice, margin, &hooks, &mut reported))
                .map_err(to_py)?;
            match outcome {
                Attempt::Done(value) => return value.map(Some),
                Attempt::Stopped => return Ok(None),
                Attempt::Again if left <= SLICE && !matches!(wait, Wait::Forever) => {
                    let waited = start.elapsed();
                    let e = Error::TimedOut { waited, token: 0, holder: None };
                    return Err(timed_out(e, waited));
                }
                Attempt::Again => {}
            }
            py.check_signals()?;
        }
    }

    fn __repr__(&self) -> String {
        let label = match &self.label {
            Some(l) => format!(" label={l:?}"),
            None => String::new(),
        };
        format!(
            "<shmlease.Election {:?} ttl={}s{label} in {:?}>",
            self.name,
            self.ttl.as_secs_f64(),
            convert::location_text(self.shared.location())
        )
    }
}

/// What a Python `Leadership` shares with threads waiting on it.
struct LeadershipCell {
    table: Arc<LeaseTable>,
    name: String,
    term: u64,
    ttl: Duration,
    /// The process that won it (a forked child only reads it, from the table).
    pid: u32,
    since: SystemTime,
    /// The leadership while this object holds it; `None` once resigned.
    held: Mutex<Option<Arc<OwnedLeadership>>>,
    lost: OnceLock<LostReason>,
}

impl LeadershipCell {
    fn held(&self) -> MutexGuard<'_, Option<Arc<OwnedLeadership>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn won_here(&self) -> bool {
        process::pid() == self.pid
    }

    /// The leadership, if still held through this object (never in a forked child:
    /// a parent thread may have held the mutex at the fork).
    fn current(&self) -> Option<Arc<OwnedLeadership>> {
        if !self.won_here() {
            return None;
        }
        self.held().as_ref().map(Arc::clone)
    }

    /// Whether it leads, and the time left; in a forked child read from the table.
    fn validity(&self) -> (bool, Duration) {
        if self.won_here() {
            return self
                .current()
                .map(|o| (o.get().is_leader(), o.get().remaining()))
                .unwrap_or_default();
        }
        match self.table.get(&self.name) {
            Ok(Some(i)) if i.token == self.term && i.state == LeaseState::Held => {
                (true, i.remaining)
            }
            _ => (false, Duration::ZERO),
        }
    }

    /// Why leadership is lost, if it is.
    fn lost_now(&self, owned: &OwnedLeadership) -> Option<LostReason> {
        if let Some(r) = self.lost.get() {
            return Some(*r);
        }
        let leadership = owned.get();
        let reason = leadership.lost().or_else(|| {
            if leadership.is_leader() {
                return None;
            }
            // Not yet noticed by the keep-alive: a grant that is no longer live never
            // becomes live again, so this renewal fails, saying why.
            match leadership.lease().renew(Duration::from_secs(1)) {
                Err(Error::Lost { reason, .. }) => Some(reason),
                _ => None,
            }
        })?;
        Some(*self.lost.get_or_init(|| reason))
    }

    fn refusal(&self) -> Error {
        let info = self.table.get(&self.name).ok().flatten();
        let holder = info.filter(|i| i.token == self.term).and_then(|i| i.holder);
        Error::BoundToProcess { token: self.term, holder }
    }

    fn resign(&self) -> Result<(), Error> {
        if !self.won_here() {
            return Err(self.refusal());
        }
        let held = self.held().take();
        let held = held.ok_or(Error::Lost { token: self.term, reason: LostReason::Released })?;
        match Arc::try_unwrap(held) {
            Ok(owned) => owned.resign(),
            // Threads waiting on it share it: release by term (this process holds
            // it); their keep-alive sees the release, and the last of them drops a
            // leadership that is no longer live (a no-op).
            Err(shared) => {
                let released = self.table.release(&self.name, self.term);
                drop(shared);
                released
            }
        }
    }

    /// Waits in slices with `wait` (the library's wait for a notice or a loss) until
    /// it returns something, `timeout` passes, leadership is resigned through this
    /// object, or `cancel` is set (`None`).
    fn wait_for<T: Send>(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
        cancel: Option<&Bound<'_, PyAny>>,
        wait: impl Fn(&Leadership<'_>, Duration) -> Option<T> + Sync,
    ) -> PyResult<Option<T>> {
        let start = Instant::now();
        loop {
            let Some(owned) = self.current() else { return Ok(None) };
            let left = match timeout {
                Some(t) => t.saturating_sub(start.elapsed()),
                None => Duration::MAX,
            };
            let got = py.detach(|| wait(owned.get(), left.min(SLICE)));
            drop(owned);
            if let Some(got) = got {
                // Resigned through this object meanwhile: not a loss.
                return Ok(self.current().map(|_| got));
            }
            if left <= SLICE {
                return Ok(None);
            }
            py.check_signals()?;
            if cancelled(cancel)? {
                return Ok(None);
            }
        }
    }
}

/// Leadership of an election, held by this process (``election.campaign()``): the
/// lease on the election's name, renewed in the background until resigned.
///
/// Use it as a context manager (``with election.campaign() as leadership:``): leaving
/// the block resigns, waking the next candidate at once. Pass ``leadership.term`` to
/// whatever the leader writes to (fencing). A leadership dropped by the garbage
/// collector is resigned. In a ``fork()``ed child it stays the parent's: the child may
/// read it, but ``resign`` raises ``BoundToProcess`` and dropping it does nothing.
#[pyclass(module = "shmlease", name = "Leadership", frozen)]
pub struct PyLeadership {
    cell: Arc<LeadershipCell>,
    election: Py<PyElection>,
}

impl PyLeadership {
    fn new(election: Py<PyElection>, owned: OwnedLeadership, of: &PyElection) -> PyLeadership {
        let cell = LeadershipCell {
            table: Arc::clone(&of.shared),
            name: of.name.clone(),
            term: owned.get().term(),
            ttl: of.ttl,
            pid: process::pid(),
            since: owned.get().since(),
            held: Mutex::new(Some(Arc::new(owned))),
            lost: OnceLock::new(),
        };
        PyLeadership { cell: Arc::new(cell), election }
    }
}

#[pymethods]
impl PyLeadership {
    /// The term: the grant's fencing token, higher than every earlier term of this
    /// election. Pass it to whatever the leader writes, so that a deposed leader's
    /// late writes can be refused.
    #[getter]
    fn term(&self) -> u64 {
        self.cell.term
    }

    /// The election.
    #[getter]
    fn election(&self, py: Python<'_>) -> Py<PyElection> {
        self.election.clone_ref(py)
    }

    /// When this term began (UTC).
    #[getter]
    fn since<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        convert::datetime(py, Some(self.cell.since))
    }

    /// The TTL it is renewed to, in seconds.
    #[getter]
    fn ttl(&self) -> f64 {
        self.cell.ttl.as_secs_f64()
    }

    /// Whether this candidate still leads: ``False`` from the instant another
    /// candidate could be elected (and once resigned). A snapshot: act on shared
    /// resources through the term.
    #[getter]
    fn is_leader(&self) -> bool {
        self.cell.validity().0
    }

    /// Seconds left before the term ends unless renewed (0.0 once it is over).
    #[getter]
    fn remaining(&self) -> f64 {
        self.cell.validity().1.as_secs_f64()
    }

    /// ``None`` while leading (or once resigned through this object, or in a forked
    /// child); once leadership is lost, why (a ``LostReason``).
    #[getter]
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(owned) = self.cell.current() else { return Ok(None) };
        self.cell.lost_now(&owned).map(|r| convert::lost_reason(py, r)).transpose()
    }

    /// Whether someone asked this leader to hand over
    /// (``table.request_release(name)``), while it still leads.
    #[getter]
    fn release_requested(&self) -> bool {
        self.cell.current().is_some_and(|o| o.get().release_requested())
    }

    /// Blocks until leadership is lost, returning why (a ``LostReason``), or until
    /// ``timeout`` seconds pass, it is resigned through this object, or ``cancel`` (a
    /// ``threading.Event``) is set, returning ``None``. A loss is noticed at once
    /// (the keep-alive watches the lease). Releases the GIL; Ctrl-C interrupts it.
    #[pyo3(signature = (timeout = None, *, cancel = None))]
    fn wait_lost<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
        cancel: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let timeout = convert::timeout(timeout)?;
        let cancel = cancel.filter(|c| !c.is_none());
        let reason = self.cell.wait_for(py, timeout, cancel, |l, t| l.wait_lost(Some(t)))?;
        reason.map(|r| convert::lost_reason(py, r)).transpose()
    }

    /// Blocks until leadership is lost or a hand-over is requested, returning a
    /// ``Notice`` (``notice.release_requested``, or ``notice.lost`` with the reason),
    /// or ``None`` as ``wait_lost`` does. Level-triggered: once a hand-over was asked
    /// for, it returns at once until leadership is lost (use ``wait_lost`` then).
    #[pyo3(signature = (timeout = None, *, cancel = None))]
    fn wait_notice<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
        cancel: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let timeout = convert::timeout(timeout)?;
        let cancel = cancel.filter(|c| !c.is_none());
        let notice = self.cell.wait_for(py, timeout, cancel, |l, t| l.wait_notice(Some(t)))?;
        notice.map(|n| convert::notice(py, n)).transpose()
    }

    /// ``await leadership.wait_lost_async(timeout)``: ``wait_lost`` without blocking
    /// the event loop; cancelling the awaiting task ends the wait.
    #[pyo3(signature = (timeout = None))]
    fn wait_lost_async<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let aio = slf.py().import("shmlease._aio")?;
        aio.getattr("wait_lost_async")?.call1((slf, timeout))
    }

    /// ``await leadership.wait_notice_async(timeout)``: ``wait_notice`` without
    /// blocking the event loop; cancelling the awaiting task ends the wait.
    #[pyo3(signature = (timeout = None))]
    fn wait_notice_async<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let aio = slf.py().import("shmlease._aio")?;
        aio.getattr("wait_notice_async")?.call1((slf, timeout))
    }

    /// Resigns: releases the lease, waking the next candidate at once. Raises ``Lost``
    /// if leadership was already lost or resigned (nothing changes then).
    fn resign(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.cell.resign()).map_err(to_py)
    }

    /// Returns the leadership itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Resigns unless resigned already. If the block ended normally and leadership was
    /// lost meanwhile, raises ``Lost``: the block ran (in part) without leading.
    #[pyo3(signature = (exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.cell.current().is_none() {
            return Ok(false); // resigned, or a forked child's copy
        }
        match py.detach(|| self.cell.resign()) {
            Err(e) if exc_type.is_none_or(|t| t.is_none()) => Err(to_py(e)),
            _ => Ok(false),
        }
    }

    fn __repr__(&self) -> String {
        let resigned = self.cell.won_here() && self.cell.held().is_none();
        let what = match self.cell.validity() {
            _ if resigned => "resigned".to_string(),
            (true, left) => format!("leading, {:.3}s left", left.as_secs_f64()),
            (false, _) => "lost".to_string(),
        };
        format!("<shmlease.Leadership {:?} term={} {what}>", self.cell.name, self.cell.term)
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a Leadership belongs to the process that won it and cannot be pickled; pass \
             its term instead",
        ))
    }
}

/// A stream of the leadership changes of one election (``election.observe()``), for
/// processes that follow it without campaigning. ``next_change(timeout)`` returns the
/// next ``Change`` (the first call: the current state at once); iterating waits
/// without limit. Woken by the change itself (and by a leader's death); terms arrive
/// in increasing order, and a change says how many terms came and went unseen in
/// between (``skipped``; ``None`` when unknown) — never a silent gap. An observer
/// belongs to the process that made it: in a ``fork()``ed child ``next_change``
/// raises ``RuntimeError`` (make the child's own with ``election.observe()``).
#[pyclass(module = "shmlease", name = "Observer", frozen)]
pub struct PyObserver {
    election: Py<PyElection>,
    // Declared before `_table`, so dropped before it.
    observer: Mutex<Observer<'static>>,
    _table: Arc<LeaseTable>,
    /// A change an abandoned asynchronous wait received, for the next call.
    unread: Mutex<Option<Py<PyAny>>>,
    /// The process that made it.
    pid: u32,
}

impl PyObserver {
    fn next(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
        cancel: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        if process::pid() != self.pid {
            // A parent thread may have held its mutex at the fork, and the thread that
            // watches a leader's death for it does not exist here.
            return Err(PyRuntimeError::new_err(
                "this Observer belongs to the process that made it (this is a fork()ed \
                 child): make one of this process's own with election.observe()",
            ));
        }
        if let Some(change) = self.unread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Ok(Some(change));
        }
        let start = Instant::now();
        loop {
            let left = match timeout {
                Some(t) => t.saturating_sub(start.elapsed()),
                None => Duration::MAX,
            };
            let got = py
                .detach(|| {
                    let mut observer = self.observer.lock().unwrap_or_else(|p| p.into_inner());
                    observer.next_change(Some(left.min(SLICE)))
                })
                .map_err(to_py)?;
            if let Some(change) = got {
                return Ok(Some(convert::change(py, &change)?.unbind()));
            }
            if left <= SLICE {
                return Ok(None);
            }
            py.check_signals()?;
            if cancelled(cancel)? {
                return Ok(None);
            }
        }
    }
}

#[pymethods]
impl PyObserver {
    /// The election observed.
    #[getter]
    fn election(&self, py: Python<'_>) -> Py<PyElection> {
        self.election.clone_ref(py)
    }

    /// Waits for the next change and returns it (a ``Change``: ``term``, ``leader`` —
    /// a ``Leader``, or ``None`` when nobody leads — and ``skipped``), or ``None`` once
    /// ``timeout`` seconds pass (``None``: no limit; ``0``: just look) or ``cancel``
    /// is set. The first call reports the current state at once. Releases the GIL;
    /// Ctrl-C interrupts it.
    #[pyo3(signature = (timeout = None, *, cancel = None))]
    fn next_change(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let timeout = convert::timeout(timeout)?;
        self.next(py, timeout, cancel.filter(|c| !c.is_none()))
    }

    /// ``await observer.next_change_async(timeout)``: ``next_change`` without blocking
    /// the event loop; cancelling the awaiting task ends the wait (a change received
    /// meanwhile is kept for the next call).
    #[pyo3(signature = (timeout = None))]
    fn next_change_async<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let aio = slf.py().import("shmlease._aio")?;
        aio.getattr("next_change_async")?.call1((slf, timeout))
    }

    /// Keeps `change` for the next call (an abandoned asynchronous wait received it).
    fn _unread(&self, change: Py<PyAny>) {
        *self.unread.lock().unwrap_or_else(|p| p.into_inner()) = Some(change);
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.next(py, None, None)
    }

    fn __repr__(&self) -> String {
        format!("<shmlease.Observer of {:?}>", self.election.get().name)
    }
}

/// Stops an ``election.run(...)`` from any thread, or from a signal handler: a
/// campaigning run gives up (``run`` returns ``None``), a leading one tells ``lead``
/// to stop (``StopReason.STOPPED``) and resigns once it has returned. Once stopped it
/// stays stopped: a run given a stopped stopper returns ``None`` at once.
#[pyclass(module = "shmlease", name = "Stopper", frozen)]
pub struct PyStopper {
    stopper: Stopper,
}

#[pymethods]
impl PyStopper {
    #[new]
    fn py_new() -> PyStopper {
        PyStopper { stopper: Stopper::default() }
    }

    /// Asks the run to stop (returns at once).
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.stopper.stop());
    }

    /// Whether ``stop()`` was called.
    #[getter]
    fn stopped(&self) -> bool {
        self.stopper.is_stopped()
    }

    fn __repr__(&self) -> String {
        format!("<shmlease.Stopper stopped={}>", self.stopper.is_stopped())
    }
}

/// A `Leading` of the runner, seen from Python for as long as `lead` runs.
struct LeadingPtr(*const Leading<'static, 'static>);

// SAFETY: the pointer is dereferenced only while `LeadingHandle::at` holds `Some` and
// its lock is held for reading (see `LeadingHandle`); `Leading` is `Sync` (asserted
// below), so sharing the reference with the threads that hold the lock is sound.
unsafe impl Send for LeadingPtr {}
// SAFETY: as above: several readers share the `&Leading`, which is `Sync`.
unsafe impl Sync for LeadingPtr {}

const _: () = {
    const fn sync<T: Sync>() {}
    sync::<Leading<'static, 'static>>();
};

/// A reader-writer lock, so that threads reading the `Leading` (one may sleep in
/// `wait_stop` for a slice) never wait for each other; only `end` waits for them.
#[derive(Clone)]
struct LeadingHandle {
    at: Arc<RwLock<Option<LeadingPtr>>>,
    /// The last reason given to Python, for after the `Leading` is gone.
    last: Arc<Mutex<Option<StopReason>>>,
}

impl LeadingHandle {
    fn new(leading: &Leading<'_, '_>) -> LeadingHandle {
        let ptr = std::ptr::from_ref(leading).cast::<Leading<'static, 'static>>();
        LeadingHandle {
            at: Arc::new(RwLock::new(Some(LeadingPtr(ptr)))),
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `f` on the `Leading`, if `lead` still runs.
    fn with<R>(&self, f: impl FnOnce(&Leading<'_, '_>) -> R) -> Option<R> {
        let at = self.at.read().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `Some` only until `end`, which the runner's closure calls (taking
        // this lock for writing, so not while `f` runs) before the `Leading` it points
        // to is gone.
        at.as_ref().map(|p| f(unsafe { &*p.0 }))
    }

    /// The `Leading` is going away.
    fn end(&self) {
        *self.at.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn remember(&self, reason: Option<StopReason>) -> Option<StopReason> {
        if reason.is_some() {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        }
        reason
    }

    /// What to say once `lead` has returned: the last reason given, else that
    /// leadership was given up.
    fn after(&self) -> StopReason {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.unwrap_or(StopReason::Lost(LostReason::Released))
    }
}

/// What ``lead`` sees in ``election.run(lead)``: its term, and whether to stop. Valid
/// while ``lead`` runs; afterwards ``is_leader`` is ``False`` and ``should_stop()``
/// returns the last reason given (``LOST``, if none was).
#[pyclass(module = "shmlease", name = "Leading", frozen)]
pub struct PyLeading {
    term: u64,
    at: LeadingHandle,
}

#[pymethods]
impl PyLeading {
    /// The term (pass it to whatever the leader writes: fencing).
    #[getter]
    fn term(&self) -> u64 {
        self.term
    }

    /// Whether this candidate still leads (see ``Leadership.is_leader``).
    #[getter]
    fn is_leader(&self) -> bool {
        self.at.with(|l| l.is_leader()).unwrap_or(false)
    }

    /// Seconds left before the term's deadline (renewed in the background).
    #[getter]
    fn remaining(&self) -> f64 {
        self.at.with(|l| l.remaining()).unwrap_or_default().as_secs_f64()
    }

    /// Why leadership was lost (a ``LostReason``) once ``should_stop()`` said
    /// ``StopReason.LOST``; else ``None``. A loss seen an instant before the keep-alive
    /// noticed it (microseconds) reads as ``EXPIRED`` until then.
    #[getter]
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut last = *self.at.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(StopReason::Lost(_)) = last {
            // A loss seen before the keep-alive could say why reads as an expiry; the
            // keep-alive's reason, once known, replaces it.
            if let Some(now) = self.at.with(|l| l.should_stop()) {
                last = self.at.remember(now);
            }
        }
        match last {
            Some(StopReason::Lost(r)) => Some(convert::lost_reason(py, r)).transpose(),
            _ => Ok(None),
        }
    }

    /// Whether to stop, and why (a ``StopReason``), or ``None``: keep leading. Once a
    /// reason is given it stays (a loss replaces any other). A few atomic loads:
    /// cheap enough for every iteration of a loop.
    fn should_stop<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let reason = match self.at.with(|l| l.should_stop()) {
            Some(r) => self.at.remember(r),
            None => Some(self.at.after()),
        };
        reason.map(|r| convert::stop_reason(py, r)).transpose()
    }

    /// Blocks until ``lead`` should stop, returning why (a ``StopReason``), or until
    /// ``timeout`` seconds pass (``None``). Woken at once by a loss, a hand-over
    /// request or ``stopper.stop()``, and by the clock when the deadline comes within
    /// the stop margin. Releases the GIL; Ctrl-C interrupts it.
    #[pyo3(signature = (timeout = None))]
    fn wait_stop<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let timeout = convert::timeout(timeout)?;
        let start = Instant::now();
        loop {
            let left = match timeout {
                Some(t) => t.saturating_sub(start.elapsed()),
                None => Duration::MAX,
            };
            let got = py.detach(|| self.at.with(|l| l.wait_stop(Some(left.min(SLICE)))));
            let reason = match got {
                Some(r) => self.at.remember(r),
                None => Some(self.at.after()),
            };
            if let Some(r) = reason {
                return Some(convert::stop_reason(py, r)).transpose();
            }
            if left <= SLICE {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }

    fn __repr__(&self) -> String {
        let state = if self.is_leader() { "leading" } else { "not leading" };
        format!("<shmlease.Leading term={} {state}>", self.term)
    }
}
