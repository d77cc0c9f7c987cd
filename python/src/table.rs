//! `shmlease.Table`: a lease table mapped into this process, and acquisition with
//! waits that release the GIL and stay interruptible.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use shmlease_core::layout::MAX_SEATS;
use shmlease_core::{
    AcquireOptions, Error, Interrupt, LeaseTable, Location, RemoveOptions, TableOptions,
};

use crate::convert::{self, Wait};
use crate::election::PyElection;
use crate::errors::to_py;
use crate::lease::{Owned, PyLease};

/// The longest a blocking call waits without looking at Python: signals are handled
/// (Ctrl-C raises ``KeyboardInterrupt``) and ``cancel`` is checked between slices.
pub const SLICE: Duration = Duration::from_millis(50);

/// What ends an acquisition's wait early: a Python signal handler that raises (Ctrl-C:
/// ``KeyboardInterrupt``) or ``cancel`` set. The library asks its [`Interrupt`] on the
/// waiting thread, every 50 ms at least; it takes the GIL for that moment only.
struct Stop {
    /// The exception a signal handler (or ``cancel.is_set()``) raised.
    raised: Arc<Mutex<Option<PyErr>>>,
    cancel: Option<Py<PyAny>>,
}

impl Stop {
    fn new(cancel: Option<&Bound<'_, PyAny>>) -> Stop {
        Stop { raised: Arc::default(), cancel: cancel.map(|c| c.clone().unbind()) }
    }

    /// The library's side of it.
    fn interrupt(&self) -> Interrupt {
        let raised = Arc::clone(&self.raised);
        let cancel = self.cancel.as_ref().map(|c| Python::attach(|py| c.clone_ref(py)));
        Interrupt::new(move || {
            Python::attach(|py| {
                let asked = py
                    .check_signals()
                    .and_then(|()| cancelled(cancel.as_ref().map(|c| c.bind(py))));
                asked.unwrap_or_else(|e| {
                    *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    true
                })
            })
        })
    }

    /// Once the wait was interrupted: the exception to raise, or `None` when ``cancel``
    /// was set.
    fn raised(&self) -> Option<PyErr> {
        self.raised.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Whether `cancel` (a ``threading.Event``, or anything with ``is_set()``) is set.
pub fn cancelled(cancel: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    match cancel {
        Some(c) => c.call_method0("is_set")?.is_truthy(),
        None => Ok(false),
    }
}

/// A lease table: a file, or a POSIX shared-memory segment, shared by every process
/// that opens it — or, in a build with the etcd backend, a key prefix on an etcd
/// cluster, shared by processes on any host.
///
/// ``Table()`` opens the default table: the one ``$SHMLEASE_TABLE`` names, else the
/// per-user segment ``shmlease-<uid>`` that the ``shmlease`` CLI, C and Rust programs
/// use too, created on first use. A string location is read as the CLI reads
/// ``-t``: ``etcd://HOST:PORT[,…]/PREFIX[?…]`` (``etcds://`` for TLS) is a table on
/// etcd, anything else containing ``/`` a file path, ``shm:NAME`` or a bare name a
/// shared-memory segment; an ``os.PathLike`` is always a path.
///
/// ``capacity`` and ``mode`` are used only when the table is created (neither applies
/// on etcd). Tables owned
/// by another user, or writable by everyone, are refused unless allowed.
#[pyclass(module = "shmlease", name = "Table", frozen)]
pub struct PyTable {
    table: Arc<LeaseTable>,
    allow_foreign_owner: bool,
    allow_world_writable: bool,
}

/// What kind of grant an acquisition asks for: ``permits`` (read as any int, so that
/// one out of range is told as the library tells it) and ``shared``; and whether in
/// arrival order (``fair``).
#[derive(Clone, Copy)]
struct Kind {
    permits: i64,
    shared: bool,
    fair: bool,
}

impl PyTable {
    fn open(
        py: Python<'_>,
        location: Location,
        options: TableOptions,
        create: bool,
        allow: (bool, bool),
    ) -> PyResult<PyTable> {
        let opened = py.detach(|| {
            if create {
                LeaseTable::open_or_create(&location, &options)
            } else {
                LeaseTable::open_with(&location, &options)
            }
        });
        Ok(PyTable {
            table: Arc::new(opened.map_err(to_py)?),
            allow_foreign_owner: allow.0,
            allow_world_writable: allow.1,
        })
    }

    /// The acquisition behind `acquire`, `try_acquire` and `lease`: `None` if
    /// `cancel` was set before the lease was granted.
    #[allow(clippy::too_many_arguments)]
    fn take(
        slf: &Bound<'_, Self>,
        name: &str,
        ttl: &Bound<'_, PyAny>,
        wait: Wait,
        label: Option<&str>,
        keep_alive: bool,
        cancel: Option<&Bound<'_, PyAny>>,
        kind: Kind,
    ) -> PyResult<Option<PyLease>> {
        let py = slf.py();
        let ttl = convert::duration(ttl, "ttl")?;
        let Kind { permits, shared, fair } = kind;
        // Any int is read, so that a negative or huge count is told as the library
        // tells one out of range (``InvalidOptions``), not as an ``OverflowError``.
        let permits = u32::try_from(permits).map_err(|_| {
            to_py(Error::InvalidOptions {
                reason: format!("permits must be between 1 and {MAX_SEATS}, not {permits}"),
            })
        })?;
        let mut options =
            AcquireOptions::new().permits(permits).map_err(to_py)?.shared(shared).fair(fair);
        if let Some(label) = label {
            options = options.label(label).map_err(to_py)?;
        }
        let table = &slf.get().table;
        let owned = match wait {
            // Released even here: binding a new name may wait for the table lock.
            Wait::Never => py
                .detach(|| Owned::take(table, |t| t.acquire_with(name, ttl, &options)))
                .map_err(to_py)?,
            // One call of the library for the whole wait, which asks `stop` every 50 ms
            // whether to give up: what a wait holds between its wake-ups (a fair waiter
            // its place in the queue, an exclusive acquirer of a shared name its
            // precedence over shared ones) is kept until it ends.
            Wait::Forever | Wait::For(_) => {
                let limit = match wait {
                    Wait::For(limit) => Some(limit),
                    _ => None,
                };
                let stop = Stop::new(cancel);
                let options = options.wait(limit).interrupt(stop.interrupt());
                match py.detach(|| Owned::take(table, |t| t.acquire_with(name, ttl, &options))) {
                    Ok(owned) => owned,
                    Err(Error::Interrupted { .. }) => match stop.raised() {
                        Some(raised) => return Err(raised),
                        None => return Ok(None),
                    },
                    Err(e) => return Err(to_py(e)),
                }
            }
        };
        Ok(Some(PyLease::new(slf.clone().unbind(), owned, name, ttl, keep_alive)))
    }
}

impl PyTable {
    /// The library's table.
    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    /// The library's table, shared with the objects that borrow from it.
    pub fn shared(&self) -> &Arc<LeaseTable> {
        &self.table
    }
}

fn monotonic_deadline(deadline: Instant) -> f64 {
    convert::monotonic() + deadline.saturating_duration_since(Instant::now()).as_secs_f64()
}

#[pymethods]
impl PyTable {
    #[new]
    #[pyo3(signature = (
        location = None, *, capacity = 4096, mode = 0o600, create = true,
        allow_foreign_owner = false, allow_world_writable = false,
    ))]
    fn py_new(
        py: Python<'_>,
        location: Option<&Bound<'_, PyAny>>,
        capacity: u32,
        mode: u32,
        create: bool,
        allow_foreign_owner: bool,
        allow_world_writable: bool,
    ) -> PyResult<PyTable> {
        let (location, _default) = convert::location(location)?;
        let options = TableOptions::new()
            .capacity(capacity)
            .mode(mode)
            .allow_foreign_owner(allow_foreign_owner)
            .allow_world_writable(allow_world_writable);
        PyTable::open(py, location, options, create, (allow_foreign_owner, allow_world_writable))
    }

    /// Creates a new table at ``location`` and opens it; raises ``AlreadyExists`` if
    /// anything is there. The table appears fully initialised or not at all.
    #[staticmethod]
    #[pyo3(signature = (location, *, capacity = 4096, mode = 0o600, allow_world_writable = false))]
    fn create(
        py: Python<'_>,
        location: &Bound<'_, PyAny>,
        capacity: u32,
        mode: u32,
        allow_world_writable: bool,
    ) -> PyResult<PyTable> {
        let (location, _) = convert::location(Some(location))?;
        let options = TableOptions::new()
            .capacity(capacity)
            .mode(mode)
            .allow_world_writable(allow_world_writable);
        let created = py.detach(|| LeaseTable::create(&location, &options)).map_err(to_py)?;
        Ok(PyTable { table: Arc::new(created), allow_foreign_owner: false, allow_world_writable })
    }

    /// Removes the table at ``location`` (``None``: the default table). Refuses with
    /// ``InUse`` while any grant in it is live, unless ``force``: processes that have
    /// it open keep using the old table while new ones create another, so the two
    /// would not exclude each other. Refuses (``NotATable``) anything that is not a
    /// lease table.
    #[staticmethod]
    #[pyo3(signature = (location = None, *, force = false))]
    fn remove(py: Python<'_>, location: Option<&Bound<'_, PyAny>>, force: bool) -> PyResult<()> {
        let (location, _) = convert::location(location)?;
        let options = RemoveOptions::new().force(force);
        py.detach(|| LeaseTable::remove_with(&location, &options)).map_err(to_py)
    }

    /// Where the table lives: a path, ``shm:NAME`` for a shared-memory segment, or an
    /// etcd location as written (``Table(table.location)`` opens the same table).
    #[getter]
    fn location(&self) -> String {
        convert::location_text(self.table.location())
    }

    /// Number of slots: names that can hold a lease at once.
    #[getter]
    fn capacity(&self) -> u32 {
        self.table.capacity()
    }

    /// Takes the lease on ``name`` for ``ttl`` seconds (or a ``timedelta``), waiting
    /// while someone else holds it: up to ``wait`` seconds, forever if ``None``, not at
    /// all if ``0`` (then ``Held`` is raised). Raises ``Timeout`` when the wait runs out.
    ///
    /// ``label`` (up to 8 bytes) is shown to others inspecting the lease. With
    /// ``keep_alive`` (the default) the lease is renewed to ``ttl`` every ``ttl/3`` in
    /// the background while held; it starts only when the first renewal is due, so
    /// short holds cost no thread. ``cancel``, a ``threading.Event``, ends the wait
    /// when set (returning ``None``). The wait releases the GIL, and wakes every 50 ms
    /// to run signal handlers (so Ctrl-C interrupts it) and check ``cancel``: a few
    /// microseconds of CPU per wake-up; a release still wakes the waiter at once.
    ///
    /// ``permits=N`` (2 to 128; default 1, an exclusive lease) lets up to ``N``
    /// holders have the name at once, each with a grant of its own: its own TTL, holder
    /// and fencing token (unique to the name, growing in the order granted). The wait
    /// is then for any of the ``N`` to free, and ``Held``/``Timeout`` mean all ``N``
    /// are taken. ``N`` is recorded with the name at its first use and kept while the
    /// name is in the table: every user must pass the same ``N`` (else ``WrongKind``,
    /// saying which); an exclusive name that nobody holds takes the ``N`` of its next
    /// user.
    ///
    /// ``shared=True`` takes a *shared* grant (readers and writers): the name admits up
    /// to 64 shared holders at once, or one exclusive holder, never both; each holder
    /// has a grant of its own (TTL, holder, fencing token; tokens of the name grow
    /// across both kinds). A name becomes shared when first acquired shared (a live
    /// exclusive holder it has then stays its exclusive holder). An acquisition without
    /// ``shared`` of a shared name is its exclusive one: it takes the name, then waits
    /// until the shared holders have left, while new shared acquisitions wait for it
    /// (or get ``Held``); with ``wait=0`` it gets ``Held`` while any shared holder is
    /// live. A shared acquisition waits while an exclusive holder holds the name or
    /// waits for it; a continuous stream of exclusive acquirers can keep shared ones
    /// waiting (there is no bound). A waiting exclusive acquirer keeps the name for its
    /// whole wait, through its 50 ms wake-ups (and however long a signal handler runs
    /// meanwhile), so shared acquirers that wait meanwhile are served after it.
    ///
    /// ``shared=True`` with ``permits`` above 1 raises ``InvalidOptions``; shared on a
    /// name with permits, or permits on a shared name, ``WrongKind``.
    ///
    /// ``fair=True`` waits in line, with any kind of name (with ``permits`` and
    /// ``shared`` too): among the acquirers of the name that ask for fairness, the one
    /// that started waiting first is served first. A fair acquirer that has to wait takes
    /// a place in the name's queue (``get(name).queue``, first in line first) and keeps
    /// it for the whole wait; a waiter ahead that gives up is passed over at once, one
    /// whose process died within 50 ms, one that is stopped (or hung) once its place
    /// expires, 2 s after its last renewal. A fair acquisition that does not wait
    /// (``wait=0``) does not pass those in line: it raises ``Held`` while anyone waits.
    /// Acquirers without ``fair`` (the default, and the fast path) ignore the queue and
    /// may get the name between two fair ones. At most 127 fair acquirers wait for a
    /// name at once (``Busy`` past that). Ctrl-C and ``cancel`` end a fair wait within
    /// 50 ms as any other, and its place goes with it: those behind move up.
    ///
    /// Use it as a context manager to release at the end of the block.
    #[pyo3(signature = (
        name, ttl = None, *, wait = None, label = None, keep_alive = true, cancel = None,
        permits = 1, shared = false, fair = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn acquire(
        slf: &Bound<'_, Self>,
        name: &str,
        ttl: Option<&Bound<'_, PyAny>>,
        wait: Option<&Bound<'_, PyAny>>,
        label: Option<&str>,
        keep_alive: bool,
        cancel: Option<&Bound<'_, PyAny>>,
        permits: i64,
        shared: bool,
        fair: bool,
    ) -> PyResult<Option<PyLease>> {
        let py = slf.py();
        let default_ttl;
        let ttl = match ttl {
            Some(t) if !t.is_none() => t,
            _ => {
                default_ttl = 10.0f64.into_pyobject(py)?.into_any();
                &default_ttl
            }
        };
        let cancel = cancel.filter(|c| !c.is_none());
        let kind = Kind { permits, shared, fair };
        PyTable::take(slf, name, ttl, convert::wait(wait)?, label, keep_alive, cancel, kind)
    }

    /// ``with table.lease(name, ttl) as lease:`` — ``acquire()`` under the name that
    /// reads best in a ``with`` statement; the same arguments.
    #[pyo3(signature = (
        name, ttl = None, *, wait = None, label = None, keep_alive = true, cancel = None,
        permits = 1, shared = false, fair = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn lease(
        slf: &Bound<'_, Self>,
        name: &str,
        ttl: Option<&Bound<'_, PyAny>>,
        wait: Option<&Bound<'_, PyAny>>,
        label: Option<&str>,
        keep_alive: bool,
        cancel: Option<&Bound<'_, PyAny>>,
        permits: i64,
        shared: bool,
        fair: bool,
    ) -> PyResult<Option<PyLease>> {
        PyTable::acquire(slf, name, ttl, wait, label, keep_alive, cancel, permits, shared, fair)
    }

    /// Takes the lease on ``name`` if nobody holds it (with ``permits=N``: if fewer
    /// than ``N`` do; with ``shared=True``: if no exclusive holder holds or waits for
    /// it, and fewer than 64 shared holders do); never waits. Raises ``Held`` (with
    /// ``.holder`` and ``.remaining``, of the grant that frees soonest) if it is taken;
    /// an exclusive ``try_acquire`` of a shared name is refused while any shared holder
    /// is live; with ``fair=True`` also while any fair acquirer waits for the name (it
    /// does not pass those in line). The same ``permits``, ``shared`` and ``fair`` as
    /// ``acquire``.
    #[pyo3(signature = (
        name, ttl = None, *, label = None, keep_alive = true, permits = 1, shared = false,
        fair = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn try_acquire(
        slf: &Bound<'_, Self>,
        name: &str,
        ttl: Option<&Bound<'_, PyAny>>,
        label: Option<&str>,
        keep_alive: bool,
        permits: i64,
        shared: bool,
        fair: bool,
    ) -> PyResult<PyLease> {
        let zero = 0i32.into_pyobject(slf.py())?.into_any();
        let never = Some(&zero);
        let lease = PyTable::acquire(
            slf, name, ttl, never, label, keep_alive, None, permits, shared, fair,
        )?;
        Ok(lease.expect("a lease that never waits is never cancelled"))
    }

    /// ``async with table.lease_async(name, ttl) as lease:`` (or ``await``): the lease
    /// without blocking the event loop; cancelling the awaiting task ends the wait
    /// within 50 ms (a lease granted meanwhile is released; a fair wait gives up its
    /// place). The same arguments as ``acquire``
    /// (``permits``, ``shared`` and ``fair`` included).
    #[pyo3(signature = (
        name, ttl = None, *, wait = None, label = None, keep_alive = true, permits = 1,
        shared = false, fair = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn lease_async<'py>(
        slf: &Bound<'py, Self>,
        name: &str,
        ttl: Option<&Bound<'py, PyAny>>,
        wait: Option<&Bound<'py, PyAny>>,
        label: Option<&str>,
        keep_alive: bool,
        permits: i64,
        shared: bool,
        fair: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let acquisition = py.import("shmlease._aio")?.getattr("LeaseAcquisition")?;
        acquisition.call1((slf, name, ttl, wait, label, keep_alive, permits, shared, fair))
    }

    /// The election on ``name`` (an ``Election``): a lease name like any other, whose
    /// holder is the leader. ``ttl`` (seconds or ``timedelta``, default 10) is how
    /// long a leadership lasts unless renewed (it is renewed every ``ttl/3`` in the
    /// background), so how long a frozen leader blocks the others; a leader that dies
    /// is replaced at once. ``label`` (up to 8 bytes) is shown with the leader.
    #[pyo3(signature = (name, *, ttl = None, label = None))]
    fn election(
        slf: &Bound<'_, Self>,
        name: &str,
        ttl: Option<&Bound<'_, PyAny>>,
        label: Option<String>,
    ) -> PyResult<PyElection> {
        let ttl = match ttl {
            Some(t) if !t.is_none() => convert::duration(t, "ttl")?,
            _ => crate::election::DEFAULT_TTL,
        };
        PyElection::new(slf, name, ttl, label)
    }

    /// Extends the grant of ``name`` with ``token`` to ``ttl`` from now, from any
    /// process — for detached leases. Returns the new deadline on the clock of
    /// ``time.monotonic()``. Raises ``BoundToProcess`` if the grant belongs to another
    /// live process, ``Lost`` (saying why) if ``token`` is not the live grant.
    fn renew(
        &self,
        py: Python<'_>,
        name: &str,
        token: u64,
        ttl: &Bound<'_, PyAny>,
    ) -> PyResult<f64> {
        let ttl = convert::duration(ttl, "ttl")?;
        let deadline = py.detach(|| self.table.renew(name, token, ttl)).map_err(to_py)?;
        Ok(monotonic_deadline(deadline))
    }

    /// Ends the grant of ``name`` with ``token``, from any process — for detached
    /// leases. Fails like ``renew``.
    fn release(&self, py: Python<'_>, name: &str, token: u64) -> PyResult<()> {
        py.detach(|| self.table.release(name, token)).map_err(to_py)
    }

    /// Revokes the grant of ``name``, waking anyone waiting for it; its holder learns
    /// at once (keep-alive) or at its next renewal that it is lost. Returns the
    /// revoked token, or ``None`` if nothing was held. For a name with permits, or a
    /// shared name, revokes every live grant (of either kind) and returns the newest
    /// token. With ``token``, revokes only that grant, else raises ``Lost`` saying what
    /// is true instead.
    #[pyo3(signature = (name, token = None))]
    fn revoke(&self, py: Python<'_>, name: &str, token: Option<u64>) -> PyResult<Option<u64>> {
        py.detach(|| match token {
            None => self.table.revoke(name),
            Some(t) => self.table.revoke_token(name, t).map(|()| Some(t)),
        })
        .map_err(to_py)
    }

    /// Asks the holder of ``name``'s live grant (with ``token``, of that grant only) to
    /// release it: cooperative hand-over. Nothing changes about who holds it or until
    /// when; the holder sees ``lease.release_requested``. Returns the token asked, or
    /// ``None`` if nothing was held; with ``token``, a grant that is not the live one
    /// raises ``Lost`` like ``revoke``. Asking twice is asking once. For a name with
    /// permits, or a shared name, without ``token`` every holder is asked (the newest
    /// token returned).
    #[pyo3(signature = (name, token = None))]
    fn request_release(
        &self,
        py: Python<'_>,
        name: &str,
        token: Option<u64>,
    ) -> PyResult<Option<u64>> {
        py.detach(|| self.table.request_release(name, token)).map_err(to_py)
    }

    /// The lease on ``name`` (a ``LeaseInfo``: its kind, each live grant in ``grants``,
    /// each fair acquirer waiting for it in ``queue``), or ``None`` if the table does not
    /// know the name.
    fn get<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let info = self.table.get(name).map_err(to_py)?;
        info.map(|i| convert::lease_info(py, i)).transpose()
    }

    /// Every name the table knows (``LeaseInfo``s, in slot order), whatever its state;
    /// a name with permits, or a shared name, once, its grants in ``grants``.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let all = py.detach(|| self.table.list()).map_err(to_py)?;
        let out = PyList::empty(py);
        for i in all {
            out.append(convert::lease_info(py, i)?)?;
        }
        Ok(out)
    }

    /// Facts and counters about the table (a ``TableInfo``; scans every slot).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info = py.detach(|| self.table.info());
        convert::table_info(py, info)
    }

    fn __repr__(&self) -> String {
        format!(
            "shmlease.Table({:?}, capacity={})",
            convert::location_text(self.table.location()),
            self.table.capacity()
        )
    }

    /// Pickled as its location: a process that unpickles it (``multiprocessing`` with
    /// ``spawn``) opens the same table.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let (kind, value) = match self.table.location() {
            Location::Path(p) => ("path", p.display().to_string()),
            Location::Shm(name) => ("shm", name.clone()),
            // An etcd location (the only other kind, in a library built with the
            // backend — also when this package's own `etcd` feature is off but another
            // crate of the build turned the library's on), as written: it names files
            // (a CA, a password file), never a secret, since the library refuses a
            // location with `user:password@`.
            #[allow(unreachable_patterns)]
            other => ("text", other.to_string()),
        };
        let restore = py.import("shmlease._shmlease")?.getattr("_restore_table")?;
        let args = (kind, value, self.allow_foreign_owner, self.allow_world_writable);
        PyTuple::new(py, [restore, args.into_pyobject(py)?.into_any()])
    }
}

/// Reopens a pickled `Table`.
#[pyfunction]
pub fn _restore_table(
    py: Python<'_>,
    kind: &str,
    value: String,
    allow_foreign_owner: bool,
    allow_world_writable: bool,
) -> PyResult<PyTable> {
    let location = match kind {
        "path" => Location::Path(value.into()),
        "text" => convert::location_from_text(&value)?,
        _ => Location::Shm(value),
    };
    let options = TableOptions::new()
        .allow_foreign_owner(allow_foreign_owner)
        .allow_world_writable(allow_world_writable);
    PyTable::open(py, location, options, false, (allow_foreign_owner, allow_world_writable))
}
