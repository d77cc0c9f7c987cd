//! # libshmlease — the C library of shmlease
//!
//! `shmlease_*` functions over opaque handles, built as `libshmlease.so` and
//! `libshmlease.a`, declared in `include/shmlease.h` (generated from these sources by
//! cbindgen; `tests/header.rs` keeps the committed copy fresh). The lease protocol is
//! the `shmlease` crate's; this crate only translates.
//!
//! The rules every exported function follows, enforced in [`boundary`]:
//! - it returns a [`shmlease_status`] (`SHMLEASE_OK` = 0) and hands results back through
//!   out-parameters, written only on success unless its documentation says otherwise;
//! - a NULL pointer where a value is required yields `SHMLEASE_NULL_ARGUMENT`, never a
//!   crash; `_free`/`_close` of NULL does nothing;
//! - no panic unwinds into C: one `catch_unwind` turns it into `SHMLEASE_INTERNAL`;
//! - after a failure, `shmlease_last_error()` describes it in one line.
//!
//! Modules: `boundary` (status, failures, the panic boundary, argument checks),
//! `table` (table handles and operations by name), `lease` (lease handles), `info`
//! (the plain structs that describe leases), `election` (leader, observer, request
//! release, leadership handles, the runner).

mod boundary;
mod info;
mod table;

// After `table`: the header lists declarations in source order.
mod election;
mod lease;

pub use boundary::*;
pub use election::*;
pub use info::*;
pub use lease::*;
pub use table::*;

/// Major version of this library (the `x` of `x.y.z`).
pub const SHMLEASE_VERSION_MAJOR: u32 = 0;
/// Minor version of this library (the `y` of `x.y.z`).
pub const SHMLEASE_VERSION_MINOR: u32 = 1;
/// Patch version of this library (the `z` of `x.y.z`).
pub const SHMLEASE_VERSION_PATCH: u32 = 0;

/// The version of the library actually linked, as `"MAJOR.MINOR.PATCH"` (compare with
/// the `SHMLEASE_VERSION_*` macros the program was compiled with). A static string; never
/// NULL.
#[no_mangle]
pub extern "C" fn shmlease_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_macros_match_the_package_version() {
        let parse = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(SHMLEASE_VERSION_MAJOR, parse(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(SHMLEASE_VERSION_MINOR, parse(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(SHMLEASE_VERSION_PATCH, parse(env!("CARGO_PKG_VERSION_PATCH")));
        // SAFETY: shmlease_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(shmlease_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
