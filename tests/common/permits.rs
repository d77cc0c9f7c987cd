//! Child roles for the tests of names with permits (`tests/permits.rs`).

use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use shmlease::{AcquireOptions, Error, LeaseTable};

use super::{
    env, env_ms, env_or, env_u64, hold_with, open_table, say, say_tokens, spin_for,
    with_forked_twin, SharedWords,
};

fn options(wait: Option<Duration>) -> AcquireOptions {
    let o = AcquireOptions::new().permits(env_u64("PERMITS") as u32).expect("permits");
    match wait {
        Some(w) => o.wait(Some(w)),
        None => o,
    }
}

/// A herd member on the name `NAME` with `PERMITS` permits: blocking acquisitions in a
/// loop for `RUN_MS`, each held for `HOLD_US` while counting itself in word 0 of the
/// shared file `COUNTERS` (incremented right after the grant, decremented right before
/// the release, both while the lease is valid). A count above `PERMITS` is a violation
/// (word 1). With `FORK=1` the process first forks a child that runs the same loop on
/// the inherited table. Reports `DONE grants violations` and `TOKENS t1,t2,...` (every
/// token it was granted, in order).
pub fn role_permit_herd() -> i32 {
    with_forked_twin(&open_table(), herd_loop)
}

fn herd_loop(table: &LeaseTable, prefix: &str) -> i32 {
    let name = env("NAME");
    let permits = env_u64("PERMITS");
    let counters = SharedWords::open(&PathBuf::from(env("COUNTERS")));
    let hold = Duration::from_micros(env_u64("HOLD_US"));
    let end = Instant::now() + env_ms("RUN_MS");
    // 10 s unless `TTL_MS` says: at least a second takes the coarse-clock fast path.
    let ttl = Duration::from_millis(env_or("TTL_MS", "10000").parse().expect("TTL_MS"));
    let opts = options(Some(Duration::from_secs(2)));
    let (mut grants, mut violations) = (0u64, 0u64);
    let mut tokens = Vec::new();
    say(&format!("{prefix}READY"), std::process::id());
    while Instant::now() < end {
        let lease = match table.acquire_with(&name, ttl, &opts) {
            Ok(l) => l,
            Err(Error::TimedOut { .. } | Error::Busy { .. }) => continue,
            Err(e) => {
                say(&format!("{prefix}ERR"), format!("acquire: {e:?}"));
                return 20;
            }
        };
        grants += 1;
        tokens.push(lease.token());
        let inside = counters.word(0).fetch_add(1, SeqCst) + 1;
        if inside > permits {
            counters.word(1).fetch_add(1, SeqCst);
            violations += 1;
            eprintln!("{inside} holders of {permits} permits");
        }
        spin_for(hold);
        counters.word(0).fetch_sub(1, SeqCst);
        if let Err(e) = lease.release() {
            say(&format!("{prefix}ERR"), format!("release: {e:?}"));
            return 21;
        }
    }
    say_tokens(prefix, &tokens);
    say(&format!("{prefix}DONE"), format!("{grants} {violations}"));
    0
}

/// Takes a permit of `NAME` (`PERMITS`, waiting up to `WAIT_MS` if given) and holds it
/// as [`hold_with`] says.
pub fn role_permit_hold() -> i32 {
    let wait = std::env::var("SHMLEASE_IT_WAIT_MS").ok().map(|_| env_ms("WAIT_MS"));
    hold_with(&options(wait))
}
