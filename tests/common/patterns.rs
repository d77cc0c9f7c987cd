//! Child roles for the process patterns users have (`tests/user_patterns.rs`): forked
//! children sharing an inherited table, a herd on one name, a process whose main
//! thread has exited, an opener killed mid-bind while its forked child lives.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmlease::{Error, LeaseTable};

use super::{env, env_ms, env_or, env_u64, open_table, say, wait_for_file, Rng, SharedWords};

/// Forks `FORKS` children from one opener; each runs [`churn_checked`] on the inherited
/// table. Reports `DONE violations errors` (summed over the children).
pub fn role_fork_churn() -> i32 {
    let table = open_table();
    let forks = env_u64("FORKS");
    let mut pids = Vec::new();
    for i in 0..forks {
        // SAFETY: fork(2) has no preconditions. This process runs its test on one thread
        // while the harness's main thread only waits; the child uses the inherited table
        // (atomics, files) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let (violations, errors) = churn_checked(&table, env_u64("SEED") + i);
            let code = (violations.min(100) as i32) << 1 | (errors > 0) as i32;
            // SAFETY: _exit ends the forked child without the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        pids.push(pid);
    }
    let (mut violations, mut errors) = (0, 0);
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if !libc::WIFEXITED(status) {
            say("ERR", format!("forked child {pid} ended with status {status:#x}"));
            return 30;
        }
        violations += libc::WEXITSTATUS(status) >> 1;
        errors += libc::WEXITSTATUS(status) & 1;
    }
    say("DONE", format!("{violations} {errors}"));
    0
}

/// `try_acquire`/`release` over `NAMES` for `RUN_MS` with a 30 s TTL (no grant may
/// expire), counting in `COUNTERS` (one word per name) how many hold each name: a
/// count above one is two holders at once, and a lease found invalid before its
/// release was replaced under its holder. Returns (violations, unexpected errors).
fn churn_checked(table: &LeaseTable, seed: u64) -> (u64, u64) {
    let names: Vec<String> = env("NAMES").split(',').map(str::to_owned).collect();
    let counters = SharedWords::open(Path::new(&env("COUNTERS")));
    let mut rng = Rng::new(seed);
    let end = Instant::now() + env_ms("RUN_MS");
    let (mut violations, mut errors) = (0, 0);
    while Instant::now() < end {
        let i = rng.below(names.len() as u64) as usize;
        match table.try_acquire(&names[i], Duration::from_secs(30)) {
            Ok(lease) => {
                let word = counters.word(i);
                if word.fetch_add(1, Ordering::SeqCst) != 0 {
                    eprintln!("two holders of {} at once", names[i]);
                    violations += 1;
                }
                if rng.chance(50) {
                    std::thread::yield_now();
                }
                let valid = lease.is_valid();
                word.fetch_sub(1, Ordering::SeqCst);
                if !valid {
                    eprintln!("the grant of {} was replaced under its holder", names[i]);
                    violations += 1;
                }
                match lease.release() {
                    Ok(()) => {}
                    Err(e) if !valid => eprintln!("release of a replaced grant: {e}"),
                    Err(e) => {
                        eprintln!("release: {e}");
                        violations += 1;
                    }
                }
            }
            Err(Error::Held { .. } | Error::TableFull { .. } | Error::Busy { .. }) => {}
            Err(e) => {
                eprintln!("try_acquire {}: {e:?}", names[i]);
                errors += 1;
            }
        }
    }
    (violations, errors)
}

/// A herd member: blocking `acquire` of `NAME` in a loop for `RUN_MS`. Right after each
/// grant, while the lease stays valid across the read, `get` must name this process as
/// the holder. Reports `DONE grants missing`.
pub fn role_herd() -> i32 {
    let table = open_table();
    let name = env("NAME");
    let me = std::process::id();
    let end = Instant::now() + env_ms("RUN_MS");
    let (mut grants, mut missing) = (0u64, 0u64);
    say("READY", me);
    while Instant::now() < end {
        let lease = match table.acquire(&name, Duration::from_secs(10), Some(env_ms("RUN_MS"))) {
            Ok(l) => l,
            Err(Error::TimedOut { .. }) => continue,
            Err(e) => {
                say("ERR", format!("acquire: {e:?}"));
                return 20;
            }
        };
        grants += 1;
        let before = lease.is_valid();
        let info = table.get(&name);
        if before && lease.is_valid() {
            match info {
                Ok(Some(i))
                    if i.token == lease.token() && i.holder.is_some_and(|h| h.pid == me) => {}
                other => {
                    if missing < 3 {
                        eprintln!("grant {} has no holder record: {other:?}", lease.token());
                    }
                    missing += 1;
                }
            }
        }
        if let Err(e) = lease.release() {
            say("ERR", format!("release: {e:?}"));
            return 21;
        }
    }
    say("DONE", format!("{grants} {missing}"));
    0
}

/// Forks a child whose main thread ends (`pthread_exit`) after a second thread took
/// `NAME` for `TTL_MS`; that thread renews every `TTL_MS / 4` and reports `LOST` if the
/// lease is ever not valid, else `KEPT` after `RUN_MS`. Reports `CHILD pid` and
/// `READY token` (from the second thread). Waits for the child.
pub fn role_main_exits() -> i32 {
    // SAFETY: fork(2) has no preconditions; see role_fork_churn.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let worker = std::thread::spawn(|| {
            let table = open_table();
            let ttl = env_ms("TTL_MS");
            let lease = table.try_acquire(&env("NAME"), ttl).expect("try_acquire");
            say("READY", lease.token());
            let end = Instant::now() + env_ms("RUN_MS");
            while Instant::now() < end {
                std::thread::sleep(ttl / 4);
                if lease.renew(ttl).is_err() || !lease.is_valid() {
                    say("LOST", lease.token());
                    // SAFETY: _exit ends the process without destructors.
                    unsafe { libc::_exit(1) };
                }
            }
            say("KEPT", lease.token());
            let _ = lease.release();
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        });
        std::mem::forget(worker);
        // The main thread leaves; the process lives on in the worker thread, and
        // /proc/PID/stat shows state Z. The raw exit(2) system call ends this thread
        // alone, without unwinding (glibc's pthread_exit unwinds, which Rust frames
        // below us turn into an abort).
        // SAFETY: exit(2) ends only the calling thread; nothing on its stack is used by
        // the worker thread.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
        unreachable!("exit(2) returned");
    }
    assert!(pid > 0, "fork failed");
    say("CHILD", pid);
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    0
}

/// Forks a child that just sleeps (keeping every descriptor it inherited) while the
/// test process `TEST_PID` lives, reports
/// `CHILD pid`, waits for the file `GO`, then binds `NAME` with a crash armed right after taking the table lock:
/// this process dies holding the lock, while its child lives.
pub fn role_bind_crash() -> i32 {
    let table = open_table();
    let test = env_u64("TEST_PID") as i32;
    // SAFETY: fork(2) has no preconditions; the child only sleeps.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // It must outlive us (no PR_SET_PDEATHSIG): it lives until the test kills it,
        // or the test process is gone.
        // SAFETY: kill with signal 0 only checks that the process exists.
        while unsafe { libc::kill(test, 0) } == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: _exit ends the forked child without the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    say("CHILD", pid);
    let _ = wait_for_file(&PathBuf::from(env("GO")), Duration::from_secs(60));
    shmlease::fault::arm(shmlease::fault::Op::Bind, env_or("STEP", "1").parse().unwrap());
    let _ = table.try_acquire(&env("NAME"), Duration::from_secs(60));
    say("ERR", "the armed crash point was not reached");
    60
}

/// In a forked (single-threaded) child: unshares the time namespace — its future
/// children's, that is: its own clock stays the host's — with `OFFSET_S` seconds of
/// offset, then opens `TABLE`. `/proc/self/timens_offsets` now describes the children's
/// namespace, not the process's own clock. In the initial namespace the offset is known
/// anyway (zero): the lease `HOST_HELD` must look held (`AGREES ms_left`). Elsewhere it
/// is unknown and the open must be refused (`REFUSED reason`). `NO_TIMENS` where
/// namespaces cannot be made.
pub fn role_timens_unshared() -> i32 {
    let offsets = format!("monotonic {} 0\n", env_u64("OFFSET_S"));
    let table = PathBuf::from(env("TABLE"));
    // SAFETY: fork(2) has no preconditions. Namespaces for children are per thread and
    // the offsets file is the main thread's: the forked child's only thread is both.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        // SAFETY: unshare takes a flag; it changes only the namespace of future children.
        if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
            say("NO_TIMENS", std::io::Error::last_os_error());
        } else if let Err(e) = std::fs::write("/proc/self/timens_offsets", offsets) {
            say("NO_TIMENS", e);
        } else {
            match LeaseTable::open(table) {
                Err(Error::Unsupported { reason }) => say("REFUSED", reason),
                Err(e) => say("ERR", format!("{e:?}")),
                Ok(t) => match t.try_acquire(&env("HOST_HELD"), Duration::from_secs(1)) {
                    Err(Error::Held { remaining, .. }) => say("AGREES", remaining.as_millis()),
                    other => say("ERR", format!("the host's lease, from here: {other:?}")),
                },
            }
        }
        // SAFETY: _exit ends the forked child without the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    0
}

/// Keeps up to `HOLD` leases (30 s TTL) and rotates them for `RUN_MS`: releases one,
/// takes another, so the table stays full of names in use while slots keep changing
/// hands. The names are random picks from `NAMES`, or with `FRESH=1` a new name on
/// every try (so every try binds, evicting an idle name), as a new user of a full
/// table does. Reports `DONE tries errors`; `Held`, `TableFull` and `Busy` are honest
/// answers, anything else an error.
pub fn role_rotate() -> i32 {
    let table = open_table();
    let names: Vec<String> = env("NAMES").split(',').map(str::to_owned).collect();
    let mut rng = Rng::new(env_u64("SEED"));
    let fresh = env_or("FRESH", "0") == "1";
    let hold = env_u64("HOLD") as usize;
    let end = Instant::now() + env_ms("RUN_MS");
    let ttl = Duration::from_secs(30);
    let mut held = Vec::new();
    let (mut tries, mut errors) = (0u64, 0u64);
    let note = |what: &str, e: Error, errors: &mut u64| {
        if !matches!(e, Error::Held { .. } | Error::TableFull { .. } | Error::Busy { .. }) {
            if *errors < 3 {
                eprintln!("{what}: {e:?}");
            }
            *errors += 1;
        }
    };
    say("READY", std::process::id());
    while Instant::now() < end {
        tries += 1;
        if held.len() >= hold.max(1) {
            let lease: shmlease::Lease<'_> =
                held.swap_remove(rng.below(held.len() as u64) as usize);
            if let Err(e) = lease.release() {
                note("release", e, &mut errors);
            }
        }
        let name = if fresh {
            format!("fresh-{}-{tries}", std::process::id())
        } else {
            names[rng.below(names.len() as u64) as usize].clone()
        };
        match table.try_acquire(&name, ttl) {
            Ok(lease) => held.push(lease),
            Err(e) => note("try_acquire", e, &mut errors),
        }
    }
    say("DONE", format!("{tries} {errors}"));
    0
}

/// A thread binds and unbinds names without pause (fresh names in a small table) while
/// the main thread forks `FORKS` children, one after another; each child binds a fresh
/// name of its own through the inherited table and exits. A fork lands in the middle of
/// the thread's binding now and then: the child must neither find the table lock held
/// by a thread it does not have (a process-local mutex copied in the locked state would
/// block it forever) nor keep the parent's lock alive. Reports `DONE children_ok`.
pub fn role_fork_during_bind() -> i32 {
    let table = open_table();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (table, stop) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match table.try_acquire(&format!("t-{i}"), Duration::from_secs(30)) {
                    Ok(lease) => drop(lease),
                    Err(Error::Held { .. } | Error::TableFull { .. } | Error::Busy { .. }) => {}
                    Err(e) => say("ERR", format!("churn: {e:?}")),
                }
            }
        })
    };
    let mut ok = 0;
    for i in 0..env_u64("FORKS") {
        // SAFETY: fork(2) has no preconditions. The child uses only the inherited table
        // (atomics, new descriptors) and leaves with _exit; the other thread of this
        // process does not exist in it.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // A child that blocks (the bug this role looks for) must not outlive the test.
            // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let code = match table.try_acquire(&format!("c-{i}"), Duration::from_secs(30)) {
                Ok(lease) => {
                    drop(lease);
                    0
                }
                Err(Error::Held { .. } | Error::TableFull { .. }) => 0,
                Err(_) => 1,
            };
            // SAFETY: _exit ends the forked child without the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            ok += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    say("DONE", ok);
    0
}
