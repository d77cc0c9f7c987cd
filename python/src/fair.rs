//! Fair waits (`fair=True`): the whole wait in one call to the library, from a thread
//! of its own, so that the waiter keeps its place in the name's queue from start to end.
//!
//! Other waits of this package are made of short calls (see [`crate::table::SLICE`]),
//! so that the calling thread can run signal handlers and check `cancel` between them.
//! A fair wait cannot be cut that way: each call of the library takes a new place, at
//! the back of the queue, and gives it up when the call returns, so a slice-by-slice
//! fair waiter would lose its place every 50 ms and be served after everyone who came
//! while it waited. The library has no way (yet) to end a wait from outside, nor to keep
//! a place across calls.
//!
//! So a fair wait runs in a [`Worker`]: a native thread, which never touches Python,
//! makes one `acquire_with` call with the whole time left, holding its place until it
//! is served or its time runs out. The calling thread sleeps on the worker's hand-off
//! (with the GIL released), waking every [`SLICE`] to run signal handlers and check
//! `cancel`, as every wait does. When the caller stops waiting (Ctrl-C, a signal
//! handler's exception, `cancel`, an asyncio cancellation), it *abandons* the worker:
//! the caller returns at once, and the worker, which cannot be stopped, keeps the place
//! until the library returns — when it is served (then it releases the lease at once,
//! so that the next in line gets it) or when the wait's time runs out; or until this
//! process exits (a dead waiter's place is passed over within 50 ms). Those behind an
//! abandoned place keep their order: they wait for it to be served and released, which
//! costs them the moment of one grant and release.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shmlease_core::{AcquireOptions, Error, LeaseTable};

use crate::lease::Owned;
use crate::table::SLICE;

/// What a worker hands back.
enum State {
    /// Still waiting.
    Waiting,
    /// The library returned.
    Done(Result<Owned, Error>),
    /// The caller stopped waiting: a lease the worker gets is released at once.
    Abandoned,
    /// The caller took the result.
    Taken,
}

/// The hand-off between a fair wait's worker and its caller.
struct Handoff {
    state: Mutex<State>,
    done: Condvar,
}

impl Handoff {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fair wait running in a thread of its own; see the module docs.
pub struct Worker {
    handoff: Arc<Handoff>,
}

impl Worker {
    /// Starts `table.acquire_with(name, ttl, options)` (`options` fair, with the wait's
    /// whole time) in a new thread.
    pub fn start(
        table: &Arc<LeaseTable>,
        name: &str,
        ttl: Duration,
        options: AcquireOptions,
    ) -> std::io::Result<Worker> {
        let handoff = Arc::new(Handoff { state: Mutex::new(State::Waiting), done: Condvar::new() });
        let theirs = Arc::clone(&handoff);
        let table = Arc::clone(table);
        let name = name.to_owned();
        std::thread::Builder::new().name("shmlease-fair".into()).spawn(move || {
            let result = Owned::take(&table, |t| t.acquire_with(&name, ttl, &options));
            let mut state = theirs.state();
            if matches!(*state, State::Abandoned) {
                // Nobody will take it: released here (after the lock is let go), so
                // that the next in line is served.
                drop(state);
                drop(result);
                return;
            }
            *state = State::Done(result);
            theirs.done.notify_all();
        })?;
        Ok(Worker { handoff })
    }

    /// The library's answer, if it comes within [`SLICE`].
    pub fn wait_slice(&self) -> Option<Result<Owned, Error>> {
        let until = Instant::now() + SLICE;
        let mut state = self.handoff.state();
        loop {
            if matches!(*state, State::Done(_)) {
                return match std::mem::replace(&mut *state, State::Taken) {
                    State::Done(result) => Some(result),
                    _ => unreachable!("matched just above"),
                };
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state =
                self.handoff.done.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Dropping a worker stops waiting for it (the caller's wait ended otherwise: a signal,
/// `cancel`): a lease it got already, or gets later, is released — the former here,
/// outside the hand-off's lock.
impl Drop for Worker {
    fn drop(&mut self) {
        let mut state = self.handoff.state();
        let previous = std::mem::replace(&mut *state, State::Abandoned);
        drop(state);
        drop(previous);
    }
}
