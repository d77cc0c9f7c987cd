//! Child roles for the tests of names with permits (`tests/permits.rs`).

use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use shmlease::{AcquireOptions, Error, LeaseTable};

use super::{env, env_ms, env_or, env_u64, open_table, say, SharedWords};

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
    let table = open_table();
    if env_or("FORK", "0") == "1" {
        // SAFETY: fork(2) has no preconditions; the test binary's children are
        // single-threaded here (no keep-alive, no death alarm started yet).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let code = herd_loop(&table, "child-");
            // SAFETY: _exit ends the forked child without the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let code = herd_loop(&table, "");
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            say("ERR", format!("forked child ended with {status:#x}"));
            return 30;
        }
        return code;
    }
    herd_loop(&table, "")
}

fn herd_loop(table: &LeaseTable, prefix: &str) -> i32 {
    let name = env("NAME");
    let permits = env_u64("PERMITS");
    let counters = SharedWords::open(&PathBuf::from(env("COUNTERS")));
    let hold = Duration::from_micros(env_u64("HOLD_US"));
    let end = Instant::now() + env_ms("RUN_MS");
    let opts = options(Some(Duration::from_secs(2)));
    let (mut grants, mut violations) = (0u64, 0u64);
    let mut tokens = Vec::new();
    say(&format!("{prefix}READY"), std::process::id());
    while Instant::now() < end {
        let lease = match table.acquire_with(&name, Duration::from_secs(10), &opts) {
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
        let until = Instant::now() + hold;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        counters.word(0).fetch_sub(1, SeqCst);
        if let Err(e) = lease.release() {
            say(&format!("{prefix}ERR"), format!("release: {e:?}"));
            return 21;
        }
    }
    let list: Vec<String> = tokens.iter().map(u64::to_string).collect();
    say(&format!("{prefix}TOKENS"), list.join(","));
    say(&format!("{prefix}DONE"), format!("{grants} {violations}"));
    0
}

/// Takes a permit of `NAME` (`PERMITS`, `TTL_MS`, waiting up to `WAIT_MS` if given),
/// reports `GOT token`, then with `ACTION`:
/// - `forever`: sleeps until killed;
/// - `renew_after_go`: waits for the file `GO`, renews, and reports `RENEWED` or
///   `LOST reason`.
pub fn role_permit_hold() -> i32 {
    let table = open_table();
    let wait = std::env::var("SHMLEASE_IT_WAIT_MS").ok().map(|_| env_ms("WAIT_MS"));
    let lease = match table.acquire_with(&env("NAME"), env_ms("TTL_MS"), &options(wait)) {
        Ok(l) => l,
        Err(e) => {
            say("ERR", format!("acquire: {e:?}"));
            return 20;
        }
    };
    say("GOT", lease.token());
    match env("ACTION").as_str() {
        "forever" => {
            std::thread::sleep(Duration::from_secs(120));
            21
        }
        "renew_after_go" => {
            let go = PathBuf::from(env("GO"));
            assert!(super::wait_for_file(&go, Duration::from_secs(60)), "GO never came");
            match lease.renew(env_ms("TTL_MS")) {
                Ok(()) => say("RENEWED", lease.token()),
                Err(Error::Lost { reason, .. }) => say("LOST", format!("{reason:?}")),
                Err(e) => say("ERR", format!("renew: {e:?}")),
            }
            0
        }
        other => {
            say("ERR", format!("unknown action {other}"));
            22
        }
    }
}
