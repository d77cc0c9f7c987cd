//! The native module `shmlease._shmlease`: `Table`, `Lease` and the election's classes
//! over the Rust crate.
//! The pure-Python package around it (`python/shmlease/`) defines the exceptions,
//! the result types and the asyncio helpers, and re-exports everything.

#![cfg(target_os = "linux")]

use pyo3::prelude::*;

mod convert;
mod election;
mod errors;
mod keeper;
mod lease;
mod process;
mod table;

/// For `python/bench/bench_lease.py`: nanoseconds per uncontended `try_acquire` +
/// `release` of `name` in Rust, over `iterations` (the call the Python layer wraps).
#[pyfunction]
fn _bench_rust_fast_path(
    py: Python<'_>,
    table: &Bound<'_, table::PyTable>,
    name: &str,
    iterations: u32,
) -> PyResult<f64> {
    let table = table.get().table();
    let ttl = std::time::Duration::from_secs(10);
    py.detach(|| {
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            table.try_acquire(name, ttl)?.release()?;
        }
        Ok(start.elapsed().as_nanos() as f64 / f64::from(iterations.max(1)))
    })
    .map_err(errors::to_py)
}

/// The native part of the `shmlease` package; import `shmlease` instead.
#[pymodule]
fn _shmlease(m: &Bound<'_, PyModule>) -> PyResult<()> {
    process::watch_forks();
    m.add_class::<table::PyTable>()?;
    m.add_class::<lease::PyLease>()?;
    m.add_class::<election::PyElection>()?;
    m.add_class::<election::PyLeadership>()?;
    m.add_class::<election::PyObserver>()?;
    m.add_class::<election::PyLeading>()?;
    m.add_class::<election::PyStopper>()?;
    m.add_function(wrap_pyfunction!(table::_restore_table, m)?)?;
    m.add_function(wrap_pyfunction!(_bench_rust_fast_path, m)?)?;
    m.add("SLICE_SECONDS", table::SLICE.as_secs_f64())?;
    m.add("ETCD", cfg!(feature = "etcd"))?;
    Ok(())
}
