//! # shmlease — named, time-bound, exclusive leases for the processes of one host
//!
//! A lease table lives in a memory-mapped file or a POSIX shared-memory segment. A
//! process takes a lease on a name (`"db-migration"`, `"gpu0"`, `"leader"`) for a TTL,
//! renews it while it works, and releases it. If the holder dies, hangs or is stopped,
//! the lease expires on its `CLOCK_MONOTONIC` deadline and any other process takes it
//! over with one atomic compare-and-swap — at once, when the holder is provably dead.
//! Every grant carries a **fencing token** that only ever grows for its name, so a
//! resource can reject a holder that lost its lease without knowing it.
//!
//! No server, no system call on the fast path: an uncontended acquire + release is a
//! clock read and two CAS instructions on shared memory.
//!
//! ```
//! # let path = std::env::temp_dir().join(format!("shmlease-doc-lib-{}", std::process::id()));
//! use shmlease::{LeaseTable, TableOptions};
//! use std::time::Duration;
//!
//! // Any number of processes can run this concurrently: one table results.
//! let table = LeaseTable::open_or_create(&path, &TableOptions::new())?;
//!
//! // Wait up to 5 s for the lease, hold it for 10 s at a time.
//! let mut lease = table.acquire("db-migration", Duration::from_secs(10), Some(Duration::from_secs(5)))?;
//! lease.keep_alive(Duration::from_secs(10))?; // renew in the background
//! let token = lease.token(); // hand this to the database: it rejects older tokens
//! assert!(lease.is_valid());
//! # assert!(token > 0);
//! // ... do the work, checking lease.is_valid() / lease.lost() ...
//! lease.release()?; // also happens on drop
//! # LeaseTable::remove(&path)?;
//! # Ok::<(), shmlease::Error>(())
//! ```
//!
//! ## Guarantees
//!
//! 1. **Exclusivity**: for a name, at most one grant is unexpired at any instant.
//! 2. **Fencing**: tokens handed out for a name strictly increase over the life of the
//!    table — across crashes, revocations, slot reuse and (file tables) reboots.
//! 3. Only the current grant can be renewed or released; a stale holder gets
//!    [`Error::Lost`].
//! 4. A process killed at any instruction leaves a usable table; what it held is
//!    reclaimable within its TTL, and at once when its death is provable.
//! 5. The mapping is treated as untrusted input: garbage yields errors or reclaims,
//!    never undefined behaviour, panics or hangs.
//! 6. Names without a live grant give their slot back for reuse.
//! 7. Uncontended `try_acquire`, `renew` and `release` make no system call and no
//!    allocation.
//!
//! 8. **Fork**: a child forked after `open` may use the inherited [`LeaseTable`] for
//!    everything, and never breaks 1–7 with it; a [`Lease`] it inherited stays its
//!    parent's (see [`Lease`]).
//! 9. **Election**: at most one leader at any instant; [`Leadership::is_leader`] is
//!    false before any other candidate can be elected; terms strictly increase.
//!
//! ## Leader election and hand-over
//!
//! [`LeaseTable::election`] gives an [`Election`] on a name: candidates
//! [`campaign`](Election::campaign), the winner's [`Leadership`] has a *term* (its
//! fencing token) and [`resign`](Leadership::resign)s to wake the next candidate at
//! once; a killed leader is replaced as soon as the kernel reports its death. Anyone
//! may ask who leads ([`Election::leader`]), follow every change
//! ([`Election::observe`]), or ask a holder to hand over
//! ([`LeaseTable::request_release`]). [`election::Runner`] runs a closure while leading,
//! in the shape of client-go's `leaderelection`. See [`election`] for the state machine
//! and what holds when a leading closure overruns.
//!
//! ## Beyond one host
//!
//! With the cargo feature `etcd`, a location `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`
//! (`etcds://` for TLS) puts the same table on an etcd cluster: the same `LeaseTable`,
//! `Lease` and errors, with tokens that are etcd revisions and whole-second TTLs. See
//! the `etcd` module (and `docs/etcd.md`) for what differs.
//!
//! ```no_run
//! # fn main() -> shmlease::Result<()> {
//! let table = shmlease::LeaseTable::open_or_create(
//!     "etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/jobs",
//!     &shmlease::TableOptions::new(),
//! )?;
//! let lease = table.try_acquire("nightly-report", std::time::Duration::from_secs(10))?;
//! # drop(lease); Ok(()) }
//! ```
//!
//! ## Environment
//!
//! `SHMLEASE_IDENTITY=start-time` makes the process record its start time (from
//! `/proc`) as its reuse-proof identity, as on kernels before 6.9, instead of its pidfd
//! inode: a way for tests to run that fallback on any kernel. Nothing else is read from
//! the environment by the library.
//!
//! ## Modules
//!
//! The public API is re-exported here. `layout` and `protocol` are public but hidden,
//! for the model-based tests, loom models and benchmarks; they are not a stable API.
//! Internally: `layout` (the format), `protocol`
//! (the slot state machine, the one file to read to understand the guarantees),
//! `table` (mapping, lookup, binding, waiting), `lease` (a held grant, keep-alive),
//! `election` (campaign, observe, the runner, over leases),
//! `identity` (who a process is, whether it is dead), `sys` (every OS call).
//!
//! Linux only (x86-64 with `cmpxchg16b`, or aarch64).

#![cfg(target_os = "linux")]

#[doc(hidden)]
pub mod fault;
#[doc(hidden)]
pub mod layout;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod sync;

// Under `cfg(loom)` only the protocol is built, on loom's atomics.
#[cfg(not(loom))]
pub mod election;
#[cfg(not(loom))]
mod error;
#[cfg(all(feature = "etcd", not(loom)))]
pub mod etcd;
#[cfg(not(loom))]
mod identity;
#[cfg(not(loom))]
mod info;
#[cfg(not(loom))]
mod lease;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
mod table;

#[cfg(not(loom))]
pub use election::{Election, Leader, Leadership};
#[cfg(not(loom))]
pub use error::{Error, LostReason, Result};
#[cfg(not(loom))]
pub use info::{
    Counters, GrantInfo, Holder, Host, Label, LeaseInfo, LeaseKind, LeaseState, ProcessIdentity,
    QueuedInfo, TableInfo,
};
#[cfg(not(loom))]
pub use lease::{DetachedLease, Lease, Notice, RawLease};
#[cfg(not(loom))]
pub use options::{Interrupt, Location, TableOptions, INTERRUPT_POLL};
#[cfg(not(loom))]
pub use table::{AcquireOptions, LeaseTable, RemoveOptions, PLACE_TTL};
