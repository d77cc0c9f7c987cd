#![allow(missing_docs)]
//! Every atomic the lease protocol touches comes from here, so that the protocol can be
//! model-checked: under `cfg(loom)` these are loom's instrumented types, otherwise the
//! real ones (with `portable_atomic` supplying the 128-bit word).

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub use portable_atomic::AtomicU128;

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering};

/// Loom has no 128-bit atomic; a loom mutex around a `u128` is an exact model of one
/// (every operation is a single linearisable step), which is all the protocol assumes.
#[cfg(loom)]
#[derive(Debug)]
#[doc(hidden)]
pub struct AtomicU128(loom::sync::Mutex<u128>);

#[cfg(loom)]
impl AtomicU128 {
    pub fn new(v: u128) -> Self {
        Self(loom::sync::Mutex::new(v))
    }
    pub fn load(&self, _: Ordering) -> u128 {
        *self.0.lock().unwrap()
    }
    pub fn store(&self, v: u128, _: Ordering) {
        *self.0.lock().unwrap() = v;
    }
    pub fn compare_exchange(
        &self,
        current: u128,
        new: u128,
        _: Ordering,
        _: Ordering,
    ) -> Result<u128, u128> {
        let mut g = self.0.lock().unwrap();
        if *g == current {
            *g = new;
            Ok(current)
        } else {
            Err(*g)
        }
    }
}
