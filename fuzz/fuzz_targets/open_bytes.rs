//! Fuzz target `open_bytes`: arbitrary bytes opened as a lease table.
//!
//! Each input is written to a table file in this process's private directory (mode
//! 0600, owned by us, so the ownership and permission checks pass and the header is
//! what decides), then opened with [`LeaseTable::open`]. Opening must return `Ok` or
//! `Err`. When it succeeds the table is used: `info`, `list`, `get` of every listed
//! name and of fixed names, `try_acquire` with a 1 µs TTL, renewal and release through
//! the lease and by name and token, `detach`, `revoke` and `revoke_token`, and the
//! `Display`/`Debug` forms of everything returned. Every call must return, never panic,
//! hang or trip the sanitizer (README invariant 5: the mapping is untrusted input).
//!
//! The file is reused by every iteration (truncated and rewritten), so an iteration
//! costs a few system calls and, for a valid table, one mapping.

#![no_main]

mod common;

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::{check, show};
use libfuzzer_sys::fuzz_target;
use shmlease::LeaseTable;

/// The shortest TTL there is: leases taken here expire almost at once, so nothing a
/// run leaves in the table outlives the next iteration's rewrite anyway.
const TINY: Duration = Duration::from_micros(1);
/// Names tried on every table that opens, besides the ones it lists.
const NAMES: [&str; 3] =
    ["fuzz", "leader", "a-name-that-is-sixty-four-bytes-long-xxxxxxxxxxxxxxxxxxxxxxxxxxx"];

struct Scratch {
    path: PathBuf,
    /// Kept open for rewriting; the library opens the path itself.
    file: File,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let path = common::private_dir().join("table");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("fuzz harness: cannot create {}: {e}", path.display()));
        Scratch { path, file }
    })
}

/// Every operation on `name`, with `token` (a token the table showed, or 0); a lease
/// granted here is detached before it is released by token if `detach`, else released.
fn exercise_name(table: &LeaseTable, name: &str, token: u64, detach: bool) {
    check(&table.get(name));
    match table.try_acquire(name, TINY) {
        Ok(lease) => {
            let mine = lease.token();
            show(&(lease.remaining(), lease.is_valid(), lease.deadline()));
            check(&lease.renew(TINY));
            check(&table.renew(name, mine, TINY));
            if detach {
                check(&lease.detach());
                check(&table.release(name, mine));
            } else {
                check(&lease.release());
            }
        }
        Err(e) => check::<()>(&Err(e)),
    }
    check(&table.renew(name, token, TINY));
    check(&table.release(name, token));
    check(&table.revoke_token(name, token));
    check(&table.revoke(name));
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    if let Err(e) = s.file.set_len(0).and_then(|()| s.file.write_all_at(data, 0)) {
        panic!("fuzz harness: cannot write {}: {e}", s.path.display());
    }
    let table = match LeaseTable::open(&s.path) {
        Ok(table) => table,
        Err(e) => return check::<()>(&Err(e)),
    };
    show(&table);
    show(&table.info());
    let listed = table.list();
    check(&listed);
    if let Ok(infos) = listed {
        for (i, info) in infos.iter().enumerate() {
            exercise_name(&table, &info.name, info.token, i % 2 == 1);
        }
    }
    for (i, name) in NAMES.into_iter().enumerate() {
        exercise_name(&table, name, 0, i % 2 == 1);
    }
    show(&table.info());
});
