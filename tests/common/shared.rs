//! Child roles for the tests of shared names (`tests/shared.rs`).

use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use shmlease::{AcquireOptions, Error, LeaseTable};

use super::{env, env_ms, env_or, env_u64, open_table, say, SharedWords};

/// A member of a mixed herd on the shared name `NAME`: for `RUN_MS`, blocking
/// acquisitions, exclusive one time in `WRITE_EVERY` (by a counter seeded with the pid),
/// shared otherwise; each held for `HOLD_US` while counted in the shared file
/// `COUNTERS` (word 0: shared holders inside, word 1: exclusive holders inside, word 2:
/// violations). A shared holder that finds an exclusive one inside, or an exclusive one
/// that finds anyone else inside, is a violation. With `FORK=1` the process first forks
/// a child that runs the same loop on the inherited table. Reports `DONE shared
/// exclusive violations` and `TOKENS t1,...`.
pub fn role_shared_herd() -> i32 {
    let table = open_table();
    if env_or("FORK", "0") == "1" {
        // SAFETY: fork(2) has no preconditions; this child process is single-threaded.
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
    let words = SharedWords::open(&PathBuf::from(env("COUNTERS")));
    let hold = Duration::from_micros(env_u64("HOLD_US"));
    let every = env_u64("WRITE_EVERY");
    let end = Instant::now() + env_ms("RUN_MS");
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
        let lease = match table.acquire_with(&name, Duration::from_secs(10), opts) {
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
        let until = Instant::now() + hold;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
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
    let list: Vec<String> = tokens.iter().map(u64::to_string).collect();
    say(&format!("{prefix}TOKENS"), list.join(","));
    say(&format!("{prefix}DONE"), format!("{reads} {writes} {violations}"));
    0
}

/// Takes `NAME` (shared with `SHARED=1`, else exclusive) for `TTL_MS`, reports `GOT
/// token`, then with `ACTION`: `forever` sleeps until killed; `renew_after_go` waits
/// for the file `GO`, renews, and reports `RENEWED` or `LOST reason`.
pub fn role_shared_hold() -> i32 {
    let table = open_table();
    let opts = AcquireOptions::new().shared(env_or("SHARED", "0") == "1");
    let lease = match table.acquire_with(&env("NAME"), env_ms("TTL_MS"), &opts) {
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
