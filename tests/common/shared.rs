//! Child roles for the tests of shared names (`tests/shared.rs`).

use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use shmlease::{AcquireOptions, Error, LeaseTable};

use super::{
    env, env_ms, env_or, env_u64, hold_with, open_table, say, say_tokens, spin_for,
    with_forked_twin, SharedWords,
};

/// A member of a mixed herd on the shared name `NAME`: for `RUN_MS`, blocking
/// acquisitions, exclusive one time in `WRITE_EVERY` (by a counter seeded with the pid),
/// shared otherwise; each held for `HOLD_US` while counted in the shared file
/// `COUNTERS` (word 0: shared holders inside, word 1: exclusive holders inside, word 2:
/// violations). A shared holder that finds an exclusive one inside, or an exclusive one
/// that finds anyone else inside, is a violation. With `FORK=1` the process first forks
/// a child that runs the same loop on the inherited table. Reports `DONE shared
/// exclusive violations` and `TOKENS t1,...`.
pub fn role_shared_herd() -> i32 {
    with_forked_twin(&open_table(), herd_loop)
}

fn herd_loop(table: &LeaseTable, prefix: &str) -> i32 {
    let name = env("NAME");
    let words = SharedWords::open(&PathBuf::from(env("COUNTERS")));
    let hold = Duration::from_micros(env_u64("HOLD_US"));
    let every = env_u64("WRITE_EVERY");
    let end = Instant::now() + env_ms("RUN_MS");
    // 10 s unless `TTL_MS` says: at least a second takes the coarse-clock fast path.
    let ttl = Duration::from_millis(env_or("TTL_MS", "10000").parse().expect("TTL_MS"));
    let wait = Some(Duration::from_secs(2));
    let shared = AcquireOptions::new().shared(true).wait(wait);
    let exclusive = AcquireOptions::new().wait(wait);
    let (mut reads, mut writes, mut violations) = (0u64, 0u64, 0u64);
    let mut tokens = Vec::new();
    let mut turn = std::process::id() as u64;
    say(&format!("{prefix}READY"), std::process::id());
    while Instant::now() < end {
        turn += 1;
        let write = turn % every == 0;
        let opts = if write { &exclusive } else { &shared };
        let lease = match table.acquire_with(&name, ttl, opts) {
            Ok(l) => l,
            Err(Error::TimedOut { .. } | Error::Busy { .. }) => continue,
            Err(e) => {
                say(&format!("{prefix}ERR"), format!("acquire: {e:?}"));
                return 20;
            }
        };
        tokens.push(lease.token());
        let (mine, other) = if write { (1, 0) } else { (0, 1) };
        let before = words.word(mine).fetch_add(1, SeqCst);
        let bad = words.word(other).load(SeqCst) > 0 || (write && before > 0);
        if bad {
            words.word(2).fetch_add(1, SeqCst);
            violations += 1;
            eprintln!(
                "{} inside with {before} of its kind and the other kind present",
                if write { "writer" } else { "reader" }
            );
        }
        spin_for(hold);
        // Checked again at the end of the hold, while the lease is still valid.
        if words.word(other).load(SeqCst) > 0 || (write && words.word(mine).load(SeqCst) > 1) {
            words.word(2).fetch_add(1, SeqCst);
            violations += 1;
        }
        words.word(mine).fetch_sub(1, SeqCst);
        if write {
            writes += 1;
        } else {
            reads += 1;
        }
        if let Err(e) = lease.release() {
            say(&format!("{prefix}ERR"), format!("release: {e:?}"));
            return 21;
        }
    }
    say_tokens(prefix, &tokens);
    say(&format!("{prefix}DONE"), format!("{reads} {writes} {violations}"));
    0
}

/// Takes `NAME` (shared with `SHARED=1`, else exclusive) and holds it as [`hold_with`]
/// says.
pub fn role_shared_hold() -> i32 {
    hold_with(&AcquireOptions::new().shared(env_or("SHARED", "0") == "1"))
}
