//! Child roles for the attacks on names with permits (`tests/permits_attacks.rs`).

use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use shmlease::{AcquireOptions, Error, LostReason};

use super::{
    env, env_ms, env_or, env_u64, open_table, release_at, revoke_at, say, say_tokens, spin_for,
    wait_for_file, Rng, SharedWords,
};

fn permits(n: u64) -> AcquireOptions {
    AcquireOptions::new().permits(n as u32).expect("permits")
}

/// A herd member hammering `NAME` (`PERMITS`) with blocking acquisitions for `RUN_MS`,
/// each held for `HOLD_US`, counted in word 0 of `COUNTERS` while held (a count above
/// `PERMITS` is a violation, word 1). Word 2 is the largest token any member has been
/// returned: a grant started after that was published must get a larger token (word 3
/// counts the ones that did not). With `DETACH=1` every grant is detached and released
/// by token. With `REVOKED_OK=1` (a revoker runs beside) the counting is skipped and a
/// release may find its grant revoked (or revoked and its seat granted again). With `FULL_OK=1` a `TableFull` is retried. Reports `TOKENS` and `DONE grants violations
/// order_violations`.
pub fn role_pa_herd() -> i32 {
    let table = open_table();
    let name = env("NAME");
    let n = env_u64("PERMITS");
    let counters = SharedWords::open(&PathBuf::from(env("COUNTERS")));
    let hold = Duration::from_micros(env_u64("HOLD_US"));
    let detach = env_or("DETACH", "0") == "1";
    let revoked_ok = env_or("REVOKED_OK", "0") == "1";
    let full_ok = env_or("FULL_OK", "0") == "1";
    let end = Instant::now() + env_ms("RUN_MS");
    let opts = permits(n).wait(Some(Duration::from_secs(2)));
    let (mut grants, mut violations, mut order) = (0u64, 0u64, 0u64);
    let mut tokens = Vec::new();
    while Instant::now() < end {
        let returned_before = counters.word(2).load(SeqCst);
        let lease = match table.acquire_with(&name, Duration::from_secs(10), &opts) {
            Ok(l) => l,
            Err(Error::TimedOut { .. } | Error::Busy { .. }) => continue,
            Err(Error::TableFull { .. }) if full_ok => {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            Err(e) => {
                say("ERR", format!("acquire: {e:?}"));
                return 20;
            }
        };
        let token = lease.token();
        if token <= returned_before {
            order += 1;
            counters.word(3).fetch_add(1, SeqCst);
            eprintln!("token {token} after {returned_before} was returned");
        }
        counters.word(2).fetch_max(token, SeqCst);
        grants += 1;
        tokens.push(token);
        if !revoked_ok {
            let inside = counters.word(0).fetch_add(1, SeqCst) + 1;
            if inside > n {
                counters.word(1).fetch_add(1, SeqCst);
                violations += 1;
                eprintln!("{inside} holders of {n} permits");
            }
        }
        spin_for(hold);
        if !revoked_ok {
            counters.word(0).fetch_sub(1, SeqCst);
        }
        let released = if detach {
            match lease.detach() {
                Ok(d) => table.release(&name, d.token),
                Err(e) => Err(e),
            }
        } else {
            lease.release()
        };
        match released {
            Ok(()) => {}
            // Revoked, and maybe granted to another since (its seat was free again).
            Err(Error::Lost { reason: LostReason::Revoked | LostReason::TakenOver, .. })
                if revoked_ok => {}
            Err(e) => {
                say("ERR", format!("release of {token}: {e:?}"));
                return 21;
            }
        }
    }
    say_tokens("", &tokens);
    say("DONE", format!("{grants} {violations} {order}"));
    0
}

/// For `RUN_MS`, picks at random one of: revoke the name, revoke one listed token, ask
/// every holder / one holder to release, renew or release a listed (process-bound,
/// someone else's) grant by token. Every answer must be one the docs allow; a by-token
/// renew or release of another live process's grant must never succeed. Reports
/// `DONE revoked` or `ERR what`.
pub fn role_pa_revoker() -> i32 {
    let table = open_table();
    let name = env("NAME");
    let end = Instant::now() + env_ms("RUN_MS");
    let mut rng = Rng::new(env_u64("SEED"));
    let mut revoked = 0u64;
    while Instant::now() < end {
        let info = match table.get(&name) {
            Ok(i) => i,
            Err(e) => {
                say("ERR", format!("get: {e:?}"));
                return 20;
            }
        };
        let listed: Vec<u64> =
            info.as_ref().map(|i| i.grants.iter().map(|g| g.token).collect()).unwrap_or_default();
        let pick = listed.get(rng.below(listed.len().max(1) as u64) as usize).copied();
        let what = rng.below(6);
        let outcome = match (what, pick) {
            (0, _) => table.revoke(&name).map(|t| {
                revoked += t.is_some() as u64;
            }),
            (1, Some(t)) => match table.revoke_token(&name, t) {
                Ok(()) => {
                    revoked += 1;
                    Ok(())
                }
                Err(Error::Lost { token, .. }) if token == t => Ok(()),
                Err(e) => Err(e),
            },
            (2, _) => table.request_release(&name, None).map(|_| ()),
            (3, Some(t)) => match table.request_release(&name, Some(t)) {
                Err(Error::Lost { token, .. }) if token == t => Ok(()),
                other => other.map(|_| ()),
            },
            (4, Some(t)) => match table.renew(&name, t, Duration::from_secs(10)) {
                Ok(_) => {
                    say("ERR", format!("renewed {t}, a grant of another live process"));
                    return 30;
                }
                Err(Error::BoundToProcess { .. }) => Ok(()),
                Err(Error::Lost { token, .. }) if token == t => Ok(()),
                Err(e) => Err(e),
            },
            (5, Some(t)) => match table.release(&name, t) {
                Ok(()) => {
                    say("ERR", format!("released {t}, a grant of another live process"));
                    return 31;
                }
                Err(Error::BoundToProcess { .. }) => Ok(()),
                Err(Error::Lost { token, .. }) if token == t => Ok(()),
                Err(e) => Err(e),
            },
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            say("ERR", format!("op {what} on {pick:?}: {e:?}"));
            return 22;
        }
        std::thread::sleep(Duration::from_micros(rng.below(300)));
    }
    say("DONE", revoked);
    0
}

/// Takes a permit of `NAME` (`PERMITS`), then forks. The child, which inherited the
/// lease, must be refused every change to it (renew, release, by-token renew and
/// release, detach) with `BoundToProcess`, may take a permit of its own (with a larger
/// token), and exits holding it without releasing (as if it crashed). Dropping the
/// inherited lease in the child must leave the parent's grant alone. The parent then
/// checks that its grant is intact and renews it. Reports `PARENT token`, `CHILD token`
/// (from the child), `OK`.
pub fn role_pa_fork_inherit() -> i32 {
    let table = open_table();
    let name = env("NAME");
    let opts = permits(env_u64("PERMITS"));
    let ttl = Duration::from_secs(30);
    let lease = table.acquire_with(&name, ttl, &opts).expect("parent permit");
    say("PARENT", lease.token());
    // SAFETY: fork(2) has no preconditions; this child role is single-threaded here.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let code = (|| {
            let t = lease.token();
            let bound = |what: &str, r: Result<(), Error>| match r {
                Err(Error::BoundToProcess { token, .. }) if token == t => Ok(()),
                other => Err(format!("{what} of an inherited permit: {other:?}")),
            };
            bound("renew", lease.renew(ttl))?;
            bound("table.renew", table.renew(&name, t, ttl).map(|_| ()))?;
            bound("table.release", table.release(&name, t))?;
            let own = table.acquire_with(&name, ttl, &opts).map_err(|e| format!("{e:?}"))?;
            if own.token() <= t {
                return Err(format!("child token {} not above {t}", own.token()));
            }
            say("CHILD", own.token());
            std::mem::forget(own); // exit holding it, like a crash
            drop(lease); // must not release the parent's grant
            Ok::<(), String>(())
        })();
        if let Err(e) = code {
            say("ERR", e);
            // SAFETY: _exit ends the forked child without the parent's destructors.
            unsafe { libc::_exit(40) };
        }
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        say("ERR", format!("forked child ended with {status:#x}"));
        return 30;
    }
    if !lease.is_valid() {
        say("ERR", "the child's drop of the inherited lease released the parent's grant");
        return 31;
    }
    if let Err(e) = lease.renew(ttl) {
        say("ERR", format!("parent renew after the child: {e:?}"));
        return 32;
    }
    say("OK", lease.token());
    std::thread::sleep(Duration::from_secs(120));
    33
}

/// Racers on fresh names, in time slices of `SLICE_MS` (slice `i` uses the name
/// `r{i}`, from the shared epoch `EPOCH_MS` of CLOCK_REALTIME): each process keeps trying to take the
/// name as `KIND` (`1` exclusive, or a permit count) without waiting, holding each grant
/// for `HOLD_US` while counted in word `3·(i mod SLOTS) + k` of `COUNTERS`, where `k`
/// is 0 for exclusive, 1 for 2 permits, 2 for 3 permits. Holders of two kinds at once,
/// two exclusive holders, or more permit holders than N, are violations. Reports
/// `DONE grants wrong_kind violations`.
pub fn role_pa_racer() -> i32 {
    let table = open_table();
    let kind = env_u64("KIND");
    let counters = SharedWords::open(&PathBuf::from(env("COUNTERS")));
    let slots = env_u64("SLOTS");
    let slice = env_u64("SLICE_MS");
    let epoch = env_u64("EPOCH_MS");
    let slices = env_u64("SLICES");
    let hold = Duration::from_micros(env_u64("HOLD_US"));
    let opts = permits(kind);
    let k = match kind {
        1 => 0,
        2 => 1,
        3 => 2,
        other => panic!("KIND {other}"),
    };
    let ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64
    };
    let (mut grants, mut wrong, mut violations) = (0u64, 0u64, 0u64);
    loop {
        let now = ms();
        if now < epoch {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let i = (now - epoch) / slice;
        if i >= slices {
            break;
        }
        let name = format!("r{i}");
        let base = 3 * (i % slots) as usize;
        match table.acquire_with(&name, Duration::from_secs(5), &opts) {
            Ok(lease) => {
                grants += 1;
                let mine = counters.word(base + k).fetch_add(1, SeqCst) + 1;
                let limit = if kind == 1 { 1 } else { kind };
                let others: u64 =
                    (0..3).filter(|&j| j != k).map(|j| counters.word(base + j).load(SeqCst)).sum();
                if mine > limit || others > 0 {
                    violations += 1;
                    eprintln!("{name}: {mine} of kind {kind} with {others} of other kinds");
                }
                spin_for(hold);
                counters.word(base + k).fetch_sub(1, SeqCst);
                if let Err(e) = lease.release() {
                    say("ERR", format!("release {name}: {e:?}"));
                    return 20;
                }
            }
            Err(Error::Held { .. }) => {}
            Err(Error::WrongKind { .. }) => wrong += 1,
            Err(e) => {
                say("ERR", format!("acquire {name}: {e:?}"));
                return 21;
            }
        }
    }
    say("DONE", format!("{grants} {wrong} {violations}"));
    0
}

/// Arms the crash point `STEP` of `OP` (`grant`, `bind`, `release`, `revoke`) and
/// then takes a permit of `NAME` (`PERMITS`, `TTL_MS`) — for `release`, takes it first
/// and then releases it; for `revoke`, revokes the name. Reports `NOT_REACHED` if the
/// operation finished before the armed point (it has fewer points).
pub fn role_pa_crash() -> i32 {
    use shmlease::fault::{arm, Op};
    let table = open_table();
    let name = env("NAME");
    let opts = permits(env_u64("PERMITS"));
    let ttl = env_ms("TTL_MS");
    let step = env_u64("STEP") as u32;
    let r = match env("OP").as_str() {
        "grant" => {
            arm(Op::Grant, step);
            table.acquire_with(&name, ttl, &opts).map(std::mem::forget)
        }
        "bind" => {
            arm(Op::Bind, step);
            table.acquire_with(&name, ttl, &opts).map(std::mem::forget)
        }
        "release" => release_at(step, table.acquire_with(&name, ttl, &opts).expect("permit")),
        "revoke" => revoke_at(step, &table, &name),
        other => panic!("OP {other}"),
    };
    say("NOT_REACHED", format!("{r:?}"));
    0
}

/// A waiter in rounds: for `r = 0, 1, …`, waits for the file `DIR/go-r` (or exits 0 at
/// `DIR/stop`), blocks for a permit of `NAME` (`PERMITS`), reports `GOT r token`, keeps it
/// until the file `DIR/end-r`, releases it and reports `RELEASED r`.
pub fn role_pa_round_waiter() -> i32 {
    let table = open_table();
    let name = env("NAME");
    let dir = PathBuf::from(env("DIR"));
    let opts = permits(env_u64("PERMITS")).wait(Some(Duration::from_secs(60)));
    for r in 0.. {
        let go = dir.join(format!("go-{r}"));
        let stop = dir.join("stop");
        while !go.exists() {
            if stop.exists() {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let lease = match table.acquire_with(&name, Duration::from_secs(60), &opts) {
            Ok(l) => l,
            Err(e) => {
                say("ERR", format!("round {r}: {e:?}"));
                return 20;
            }
        };
        say("GOT", format!("{r} {}", lease.token()));
        assert!(wait_for_file(&dir.join(format!("end-{r}")), Duration::from_secs(120)));
        if let Err(e) = lease.release() {
            say("ERR", format!("release in round {r}: {e:?}"));
            return 21;
        }
        say("RELEASED", r);
    }
    0
}
