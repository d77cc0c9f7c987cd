//! The native module `shmlease._shmlease`: `Table` and `Lease` over the Rust crate.
//! The pure-Python package around it (`python/shmlease/`) defines the exceptions,
//! the result types and the asyncio helpers, and re-exports everything.

#![cfg(target_os = "linux")]

use pyo3::prelude::*;

mod convert;
mod errors;
mod keeper;
mod lease;
mod table;

/// Called in a child after `os.fork()` (registered by `shmlease/__init__.py`).
#[pyfunction]
fn _after_fork_in_child() {
    keeper::forget_after_fork();
}

/// The native part of the `shmlease` package; import `shmlease` instead.
#[pymodule]
fn _shmlease(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<table::PyTable>()?;
    m.add_class::<lease::PyLease>()?;
    m.add_function(wrap_pyfunction!(table::_restore_table, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add("SLICE_SECONDS", table::SLICE.as_secs_f64())?;
    Ok(())
}
