//! Conversions between Python values and the library's: durations, locations, clocks,
//! and the small result types (built as the dataclasses of `shmlease._types`).

use std::time::{Duration, SystemTime};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyType};

use shmlease_core::election::{Change, StopReason, Stopped};
use shmlease_core::{
    GrantInfo, Holder, Leader, LeaseInfo, LeaseKind, LeaseState, Location, LostReason, Notice,
    ProcessIdentity, QueuedInfo, TableInfo,
};

/// Reads a duration: seconds as an int or float, or a `datetime.timedelta`. `what`
/// names the argument in errors. Negative, NaN and infinite values are refused.
pub fn duration(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    let secs: f64 = match value.extract::<f64>() {
        Ok(s) => s,
        Err(_) => {
            static TIMEDELTA: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            let timedelta = TIMEDELTA.import(value.py(), "datetime", "timedelta")?;
            if !value.is_instance(timedelta)? {
                return Err(PyTypeError::new_err(format!(
                    "{what} must be seconds (int or float) or a datetime.timedelta, not {}",
                    value.get_type().name()?
                )));
            }
            // Exactly, from its parts: total_seconds() rounds long durations.
            let days: i64 = value.getattr("days")?.extract()?;
            let seconds: i64 = value.getattr("seconds")?.extract()?;
            let micros: i64 = value.getattr("microseconds")?.extract()?;
            if days < 0 {
                return Err(PyValueError::new_err(format!("{what} must not be negative")));
            }
            let whole = days as u64 * 86_400 + seconds as u64;
            return Ok(Duration::from_secs(whole) + Duration::from_micros(micros as u64));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a finite, non-negative number of seconds, not {secs}"
        ))
    })
}

/// How long an acquisition may wait.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// `wait=0`: never.
    Never,
    /// `wait=None`: until granted.
    Forever,
    /// Up to this long.
    For(Duration),
}

/// Reads `wait`: `None` forever, `0` never, else a duration.
pub fn wait(value: Option<&Bound<'_, PyAny>>) -> PyResult<Wait> {
    match value {
        None => Ok(Wait::Forever),
        Some(v) if v.is_none() => Ok(Wait::Forever),
        Some(v) => Ok(match duration(v, "wait")? {
            Duration::ZERO => Wait::Never,
            d => Wait::For(d),
        }),
    }
}

/// Reads a timeout: `None` for none, else a duration.
pub fn timeout(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    match value {
        Some(v) if !v.is_none() => Ok(Some(duration(v, "timeout")?)),
        _ => Ok(None),
    }
}

/// Reads a table location: `None` for the default table (`$SHMLEASE_TABLE`, else the
/// per-user segment, as the CLI does), a string as the CLI reads one (`etcd://…` or
/// `etcds://…` a table on etcd, `shm:NAME` or a bare name a segment, anything else with
/// `/` a path), or an `os.PathLike` (a path). Returns the location and whether it is the
/// per-user default.
pub fn location(value: Option<&Bound<'_, PyAny>>) -> PyResult<(Location, bool)> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return match Location::from_env().map_err(crate::errors::to_py)? {
            Some(l) => Ok((etcd_built(l)?, false)),
            None => Ok((Location::user_default(), true)),
        };
    };
    if let Ok(s) = value.extract::<String>() {
        return Ok((location_from_text(&s)?, false));
    }
    let os = value.py().import("os")?;
    let path = os.call_method1("fspath", (value,)).map_err(|_| {
        let kind = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!(
            "a table location is None, a str or an os.PathLike, not {kind}"
        ))
    })?;
    let path: String = path
        .extract()
        .map_err(|_| PyValueError::new_err("a table location must be text (UTF-8), not bytes"))?;
    Ok((Location::Path(path.into()), false))
}

/// A location written as text, as `Table(str)` reads it.
pub fn location_from_text(text: &str) -> PyResult<Location> {
    etcd_built(Location::from(text))
}

/// `location`, unless it is written as an etcd one and this build has no etcd backend:
/// then the library would refuse it saying how to rebuild with cargo, and a Python user
/// needs to hear how to reinstall the package.
fn etcd_built(location: Location) -> PyResult<Location> {
    #[cfg(not(feature = "etcd"))]
    if let Location::Path(p) = &location {
        let text = p.to_string_lossy();
        if text.starts_with("etcd://") || text.starts_with("etcds://") {
            return Err(crate::errors::to_py(shmlease_core::Error::Unsupported {
                reason: format!(
                    "{text} is a table on an etcd cluster, and this build of the shmlease \
                     package has no etcd backend: reinstall it with the cargo feature `etcd` \
                     (pip install --config-settings=build-args=\"--features etcd\" ./python; \
                     it needs protoc, e.g. apt-get install protobuf-compiler)"
                ),
            }));
        }
    }
    Ok(location)
}

/// This process's `CLOCK_MONOTONIC`, in seconds: the clock of Python's `time.monotonic()`.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A class (or function) of the pure-Python part of the package, imported once.
fn types_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.import(py, "shmlease._types", name)
}

macro_rules! py_type {
    ($py:expr, $name:literal) => {{
        static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        types_attr($py, &CELL, $name)
    }};
}

/// `LostReason` as the Python enum; `latest` is only set for `NOT_ISSUED`.
pub fn lost_reason(py: Python<'_>, reason: LostReason) -> PyResult<Bound<'_, PyAny>> {
    let value = match reason {
        LostReason::Expired => "expired",
        LostReason::Revoked => "revoked",
        LostReason::Released => "released",
        LostReason::TakenOver => "taken_over",
        LostReason::NotIssued { .. } => "not_issued",
        LostReason::NoSuchName => "no_such_name",
        _ => "unknown",
    };
    py_type!(py, "LostReason")?.call1((value,))
}

pub fn datetime(py: Python<'_>, t: Option<SystemTime>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let Some(t) = t else { return Ok(None) };
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    Some(py_type!(py, "_utc")?.call1((secs,))).transpose()
}

/// A `Holder` dataclass.
pub fn holder(py: Python<'_>, h: Option<Holder>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let Some(h) = h else { return Ok(None) };
    let (kind, value) = match h.identity {
        ProcessIdentity::PidfdInode(v) => ("pidfd-inode", Some(v)),
        ProcessIdentity::StartTime(v) => ("start-time", Some(v)),
        _ => ("unknown", None),
    };
    let kw = PyDict::new(py);
    kw.set_item("pid", h.pid)?;
    kw.set_item("pid_namespace", h.pid_namespace)?;
    kw.set_item("identity", kind)?;
    kw.set_item("identity_value", value)?;
    kw.set_item("detached", h.detached)?;
    kw.set_item("label", h.label.as_str())?;
    Some(py_type!(py, "Holder")?.call((), Some(&kw))).transpose()
}

/// `LeaseKind` as the Python enum (its permit count is told apart, as `permits`).
pub fn lease_kind(py: Python<'_>, kind: LeaseKind) -> PyResult<Bound<'_, PyAny>> {
    let value = match kind {
        LeaseKind::Exclusive => "exclusive",
        LeaseKind::Permits(_) => "permits",
        LeaseKind::Shared => "shared",
        _ => "unknown",
    };
    py_type!(py, "LeaseKind")?.call1((value,))
}

/// A `GrantInfo` dataclass.
pub fn grant_info(py: Python<'_>, g: GrantInfo) -> PyResult<Bound<'_, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("token", g.token)?;
    kw.set_item("holder", holder(py, g.holder)?)?;
    kw.set_item("acquired_at", datetime(py, g.acquired_at)?)?;
    kw.set_item("renewed_at", datetime(py, g.renewed_at)?)?;
    kw.set_item("expires_at", datetime(py, g.expires_at)?)?;
    kw.set_item("remaining", g.remaining.as_secs_f64())?;
    kw.set_item("slot", g.slot)?;
    kw.set_item("shared", g.shared)?;
    py_type!(py, "GrantInfo")?.call((), Some(&kw))
}

/// A `QueuedInfo` dataclass.
pub fn queued_info(py: Python<'_>, q: QueuedInfo) -> PyResult<Bound<'_, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("ticket", q.ticket)?;
    kw.set_item("holder", holder(py, q.holder)?)?;
    kw.set_item("expires_at", datetime(py, q.expires_at)?)?;
    kw.set_item("slot", q.slot)?;
    py_type!(py, "QueuedInfo")?.call((), Some(&kw))
}

/// A `LeaseInfo` dataclass.
pub fn lease_info(py: Python<'_>, i: LeaseInfo) -> PyResult<Bound<'_, PyAny>> {
    let state = match i.state {
        LeaseState::Held => "held",
        LeaseState::Expired => "expired",
        LeaseState::Revoked => "revoked",
        _ => "free",
    };
    let kw = PyDict::new(py);
    kw.set_item("name", i.name)?;
    kw.set_item("token", i.token)?;
    kw.set_item("state", py_type!(py, "LeaseState")?.call1((state,))?)?;
    kw.set_item("holder", holder(py, i.holder)?)?;
    kw.set_item("acquired_at", datetime(py, i.acquired_at)?)?;
    kw.set_item("renewed_at", datetime(py, i.renewed_at)?)?;
    kw.set_item("expires_at", datetime(py, i.expires_at)?)?;
    kw.set_item("remaining", i.remaining.as_secs_f64())?;
    kw.set_item("transitions", i.transitions)?;
    kw.set_item("slot", i.slot)?;
    kw.set_item("kind", lease_kind(py, i.kind)?)?;
    kw.set_item("permits", i.kind.permits())?;
    let grants = PyList::empty(py);
    for g in i.grants {
        grants.append(grant_info(py, g)?)?;
    }
    kw.set_item("grants", grants)?;
    let queue = PyList::empty(py);
    for q in i.queue {
        queue.append(queued_info(py, q)?)?;
    }
    kw.set_item("queue", queue)?;
    py_type!(py, "LeaseInfo")?.call((), Some(&kw))
}

/// The text a location is given back as: what `Table(...)` reads as the same table.
pub fn location_text(l: &Location) -> String {
    l.to_string()
}

/// A `TableInfo` dataclass.
pub fn table_info(py: Python<'_>, t: TableInfo) -> PyResult<Bound<'_, PyAny>> {
    let c = t.counters;
    let ckw = PyDict::new(py);
    ckw.set_item("grants", c.grants)?;
    ckw.set_item("expired_reclaims", c.expired_reclaims)?;
    ckw.set_item("dead_holder_reclaims", c.dead_holder_reclaims)?;
    ckw.set_item("corrupt_reclaims", c.corrupt_reclaims)?;
    ckw.set_item("renewals", c.renewals)?;
    ckw.set_item("releases", c.releases)?;
    ckw.set_item("revocations", c.revocations)?;
    ckw.set_item("contended", c.contended)?;
    ckw.set_item("binds", c.binds)?;
    ckw.set_item("unbinds", c.unbinds)?;
    let kw = PyDict::new(py);
    kw.set_item("location", location_text(&t.location))?;
    kw.set_item("format_version", t.format_version)?;
    kw.set_item("capacity", t.capacity)?;
    kw.set_item("names", t.names)?;
    kw.set_item("held", t.held)?;
    kw.set_item("size_bytes", t.size_bytes)?;
    kw.set_item("slot_size", t.slot_size)?;
    kw.set_item("boot_id", t.boot_id)?;
    kw.set_item("clock", t.clock)?;
    kw.set_item("creator_pid", t.creator_pid)?;
    kw.set_item("creator_uid", t.creator_uid)?;
    kw.set_item("created_at", datetime(py, Some(t.created_at))?)?;
    kw.set_item("counters", py_type!(py, "Counters")?.call((), Some(&ckw))?)?;
    py_type!(py, "TableInfo")?.call((), Some(&kw))
}

/// A `DetachedLease` dataclass.
pub fn detached<'py>(
    py: Python<'py>,
    name: &str,
    token: u64,
    deadline: f64,
) -> PyResult<Bound<'py, PyAny>> {
    py_type!(py, "DetachedLease")?.call1((name, token, deadline))
}

/// A `Leader` dataclass.
pub fn leader<'py>(py: Python<'py>, l: &Leader) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("term", l.term)?;
    kw.set_item("holder", holder(py, l.holder)?)?;
    kw.set_item("since", datetime(py, l.since)?)?;
    kw.set_item("expires_at", datetime(py, l.expires_at)?)?;
    kw.set_item("remaining", l.remaining.as_secs_f64())?;
    py_type!(py, "Leader")?.call((), Some(&kw))
}

/// A `Change` dataclass.
pub fn change<'py>(py: Python<'py>, c: &Change) -> PyResult<Bound<'py, PyAny>> {
    let leader = c.leader.as_ref().map(|l| leader(py, l)).transpose()?;
    py_type!(py, "Change")?.call1((c.term, leader, c.skipped))
}

/// A `Notice` dataclass: `lost` is `None` for a hand-over request.
pub fn notice(py: Python<'_>, n: Notice) -> PyResult<Bound<'_, PyAny>> {
    let lost = match n {
        Notice::Lost(reason) => Some(lost_reason(py, reason)?),
        _ => None,
    };
    py_type!(py, "Notice")?.call1((lost,))
}

/// `StopReason` as the Python enum (the loss's reason is told apart).
pub fn stop_reason(py: Python<'_>, r: StopReason) -> PyResult<Bound<'_, PyAny>> {
    let value = match r {
        StopReason::Requested => "requested",
        StopReason::Stopped => "stopped",
        StopReason::Late => "late",
        StopReason::Lost(_) => "lost",
    };
    py_type!(py, "StopReason")?.call1((value,))
}

/// A `Stopped` dataclass.
pub fn stopped<'py>(py: Python<'py>, s: &Stopped) -> PyResult<Bound<'py, PyAny>> {
    let reason = s.reason.map(|r| stop_reason(py, r)).transpose()?;
    let lost = match s.reason {
        Some(StopReason::Lost(l)) => Some(lost_reason(py, l)?),
        _ => None,
    };
    py_type!(py, "Stopped")?.call1((s.term, reason, lost, s.resigned))
}
