//! Shared by the fuzz targets: this process's private scratch directory, and formatting
//! results into nothing.

use std::fmt::Debug;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// A directory only this process uses (mode 0700), in `/dev/shm` when it is usable
/// (table files there cost no disk I/O), else in `std::env::temp_dir()`. Created on
/// first use and removed when the fuzzer exits normally; a crash leaves it behind, with
/// at most a few kilobytes in it.
pub fn private_dir() -> &'static Path {
    DIR.get_or_init(|| {
        let name = format!("shmlease-fuzz-{}", std::process::id());
        let make = |base: PathBuf| {
            let dir = base.join(&name);
            // A leftover of an earlier process with the same pid.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::DirBuilder::new().mode(0o700).create(&dir).map(|()| dir)
        };
        let dir = make(PathBuf::from("/dev/shm"))
            .or_else(|_| make(std::env::temp_dir()))
            .unwrap_or_else(|e| panic!("fuzz harness: cannot create a scratch directory: {e}"));
        // SAFETY: `remove_private_dir` is a plain function that may run at exit.
        unsafe { libc::atexit(remove_private_dir) };
        dir
    })
}

/// Formats `value` into nothing: `Debug` must not panic either.
pub fn show<T: Debug>(value: &T) {
    let _ = write!(std::io::sink(), "{value:?}");
}

/// Like [`show`], for results, whose errors also have a `Display` form.
pub fn check<T: Debug>(result: &shmlease::Result<T>) {
    match result {
        Ok(v) => show(v),
        Err(e) => {
            let _ = write!(std::io::sink(), "{e} {e:?}");
        }
    }
}

extern "C" fn remove_private_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
