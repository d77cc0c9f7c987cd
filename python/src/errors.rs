//! The library's errors as the exceptions of `shmlease._errors`: one class per
//! variant, carrying the variant's fields as attributes.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use pyo3::IntoPyObjectExt;

use shmlease_core::Error;

use crate::convert;

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("shmlease._errors")?.unbind()))
        .map(|m| m.bind(py))
}

/// Builds exception `class` of `shmlease._errors` with `message` and attributes.
fn build(
    py: Python<'_>,
    class: &str,
    args: Bound<'_, pyo3::types::PyTuple>,
    attrs: &[(&str, Bound<'_, PyAny>)],
) -> PyResult<PyErr> {
    let exc = errors_module(py)?.getattr(class)?.call1(args)?;
    for (k, v) in attrs {
        exc.setattr(*k, v)?;
    }
    Ok(PyErr::from_value(exc))
}

/// The exception for `e` (a failure to build it is raised instead: it is a bug).
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| convert_error(py, e).unwrap_or_else(|failure| failure))
}

/// The exception for a timed-out wait of `waited` in total.
pub fn timed_out(e: Error, waited: Duration) -> PyErr {
    match e {
        Error::TimedOut { token, holder, .. } => to_py(Error::TimedOut { waited, token, holder }),
        other => to_py(other),
    }
}

fn secs(py: Python<'_>, d: Duration) -> Bound<'_, PyAny> {
    d.as_secs_f64().into_pyobject(py).expect("a float").into_any()
}

fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> PyResult<Bound<'py, PyAny>> {
    v.into_bound_py_any(py)
}

fn convert_error(py: Python<'_>, e: Error) -> PyResult<PyErr> {
    let message = e.to_string();
    let args = |m: &str| pyo3::types::PyTuple::new(py, [m]);
    let none = || py.None().into_bound(py);
    match e {
        Error::Held { token, remaining, holder } => build(
            py,
            "Held",
            args(&message)?,
            &[
                ("token", obj(py, token)?),
                ("remaining", secs(py, remaining)),
                ("holder", convert::holder(py, holder)?.unwrap_or_else(none)),
            ],
        ),
        Error::Lost { token, reason } => {
            let latest = match reason {
                shmlease_core::LostReason::NotIssued { latest } => obj(py, latest)?,
                _ => none(),
            };
            build(
                py,
                "Lost",
                args(&message)?,
                &[
                    ("token", obj(py, token)?),
                    ("reason", convert::lost_reason(py, reason)?),
                    ("latest", latest),
                ],
            )
        }
        Error::BoundToProcess { token, holder } => build(
            py,
            "BoundToProcess",
            args(&message)?,
            &[
                ("token", obj(py, token)?),
                ("holder", convert::holder(py, holder)?.unwrap_or_else(none)),
            ],
        ),
        Error::InUse { location, leases } => {
            let list = pyo3::types::PyList::empty(py);
            for l in leases {
                list.append(convert::lease_info(py, l)?)?;
            }
            build(
                py,
                "InUse",
                args(&message)?,
                &[("location", obj(py, location)?), ("leases", list.into_any())],
            )
        }
        Error::TimedOut { waited, token, holder } => build(
            py,
            "Timeout",
            args(&message)?,
            &[
                ("waited", secs(py, waited)),
                ("token", obj(py, token)?),
                ("holder", convert::holder(py, holder)?.unwrap_or_else(none)),
            ],
        ),
        Error::WrongKind { name, recorded, requested } => build(
            py,
            "WrongKind",
            args(&message)?,
            &[
                ("name", obj(py, name)?),
                ("recorded", convert::lease_kind(py, recorded)?),
                ("recorded_permits", obj(py, recorded.permits())?),
                ("requested", convert::lease_kind(py, requested)?),
                ("requested_permits", obj(py, requested.permits())?),
            ],
        ),
        Error::TableFull { capacity } => {
            build(py, "TableFull", args(&message)?, &[("capacity", obj(py, capacity)?)])
        }
        Error::InvalidName { reason } => {
            build(py, "InvalidName", args(&message)?, &[("reason", obj(py, reason)?)])
        }
        Error::InvalidTtl { ttl } => {
            build(py, "InvalidTtl", args(&message)?, &[("ttl", secs(py, ttl))])
        }
        Error::InvalidLabel { reason } => {
            build(py, "InvalidLabel", args(&message)?, &[("reason", obj(py, reason)?)])
        }
        Error::InvalidOptions { reason } => {
            build(py, "InvalidOptions", args(&message)?, &[("reason", obj(py, reason)?)])
        }
        Error::NotATable { location, reason } => {
            located(py, "NotATable", &message, location, reason)
        }
        Error::Incompatible { location, reason } => {
            located(py, "Incompatible", &message, location, reason)
        }
        Error::Corrupt { location, reason } => located(py, "Corrupt", &message, location, reason),
        Error::Permission { location, reason } => {
            located(py, "PermissionDenied", &message, location, reason)
        }
        Error::Busy { location, reason } => located(py, "Busy", &message, location, reason),
        Error::Unavailable { location, reason } => {
            located(py, "Unavailable", &message, location, reason)
        }
        Error::AlreadyExists { location } => {
            build(py, "AlreadyExists", args(&message)?, &[("location", obj(py, location)?)])
        }
        Error::NotFound { location } => {
            build(py, "NotFound", args(&message)?, &[("location", obj(py, location)?)])
        }
        Error::Unsupported { reason } => {
            build(py, "Unsupported", args(&message)?, &[("reason", obj(py, reason)?)])
        }
        Error::Io { context, source } => {
            // OSError's two-argument form sets errno and strerror.
            let errno = source.raw_os_error();
            let args = match errno {
                Some(n) => pyo3::types::PyTuple::new(py, [obj(py, n)?, obj(py, &message)?])?,
                None => args(&message)?,
            };
            build(py, "IoError", args, &[("context", obj(py, context)?)])
        }
        // A variant added to the library later: the base class, with its message.
        _ => build(py, "Error", args(&message)?, &[]),
    }
}

fn located(
    py: Python<'_>,
    class: &str,
    message: &str,
    location: String,
    reason: String,
) -> PyResult<PyErr> {
    build(
        py,
        class,
        pyo3::types::PyTuple::new(py, [message])?,
        &[("location", obj(py, location)?), ("reason", obj(py, reason)?)],
    )
}
