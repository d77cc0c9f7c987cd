//! No thread of the library outlives what started it: once `release`, `drop`, `detach`,
//! a second `keep_alive` or an acquisition that waited returns, the threads it started
//! have exited. A program that exits right after its release must leave nothing running
//! (valgrind reported a keep-alive thread that was still finishing as "possibly lost").
//!
//! One test in a binary of its own, so that no other test's threads are counted (the
//! parts run one after the other).

use std::time::Duration;

use shmlease::{AcquireOptions, Interrupt, LeaseTable, TableOptions};

/// This process's threads whose name starts with `shmlease-`.
fn library_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("shmlease-") {
            names.push(comm.trim().to_owned());
        }
    }
    names
}

/// Waits until this process runs `n` library threads (a thread names itself once it
/// runs, so a new one shows a moment after it was started).
#[track_caller]
fn running(n: usize, what: &str) {
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = library_threads();
        if now.len() == n {
            return;
        }
        assert!(std::time::Instant::now() < give_up, "{what}: {now:?}, not {n}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[track_caller]
fn none_left(after: &str) {
    let left = library_threads();
    assert!(left.is_empty(), "after {after}, still running: {left:?}");
}

#[test]
fn no_library_thread_outlives_what_started_it() {
    let path = std::env::temp_dir().join(format!("shmlease-threads-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(64)).expect("create");
    let ttl = Duration::from_secs(30);
    // Many rounds: the thread is usually asleep when its lease ends, and an exit that is
    // not waited for shows only when it is not.
    for round in 0..200 {
        let mut lease = table.try_acquire("kept", ttl).unwrap();
        lease.keep_alive(ttl).unwrap();
        running(1, &format!("round {round}: one keep-alive thread"));
        match round % 4 {
            0 => lease.release().unwrap(),
            1 => drop(lease),
            2 => {
                let detached = lease.detach().unwrap();
                table.release("kept", detached.token).unwrap();
            }
            _ => {
                // The second keep-alive replaces the first, whose thread is gone at once.
                lease.keep_alive(ttl).unwrap();
                running(1, &format!("round {round}: replaced, not added"));
                lease.release().unwrap();
            }
        }
        none_left(&format!("round {round} (way {})", round % 4));
    }

    // A fair waiter's place renewer and an interruptible drain's renewer end with the wait.
    let held = table.try_acquire("busy", ttl).unwrap();
    let waits = [
        AcquireOptions::new().fair(true),
        AcquireOptions::new().interrupt(Interrupt::new(|| false)),
    ];
    for options in waits {
        let options = options.wait(Some(Duration::from_millis(150)));
        let refused = table.acquire_with("busy", Duration::from_secs(1), &options);
        assert!(refused.is_err(), "{refused:?}");
        none_left(&format!("a wait with {options:?}"));
    }
    drop(held);
    drop(table);
    LeaseTable::remove(&path).unwrap();

    a_long_wait_arms_the_death_alarm_which_hands_over_a_killed_holders_lease();
    a_child_forked_beside_a_keep_alive_leaves_the_parents_lease_and_thread_alone();
}

/// A waiter for a live holder arms its death alarm once its wait has lasted a moment (not
/// at once: most waits end sooner, and the alarm costs a thread), and the alarm wakes it
/// when the holder dies: the lease is its before the TTL, and the thread is gone after.
fn a_long_wait_arms_the_death_alarm_which_hands_over_a_killed_holders_lease() {
    let path = std::env::temp_dir().join(format!("shmlease-alarm-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(16)).expect("create");
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let (mut read_end, write_end) = (std::fs::File::from(read_end), std::fs::File::from(write_end));
    // SAFETY: the child only acquires, writes one byte and sleeps until it is killed.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let held = table.try_acquire("held", Duration::from_secs(600));
        let mut w = write_end;
        let _ = std::io::Write::write_all(&mut w, &[held.is_ok() as u8]);
        std::mem::forget(held);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    drop(write_end);
    // Killed however the test ends.
    let mut kill = Some(Kill(child));
    let mut byte = [0u8];
    std::io::Read::read_exact(&mut read_end, &mut byte).expect("the holder's report");
    assert_eq!(byte, [1], "the child could not take the lease");
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            // Far less than the holder's TTL, and ends the test if the alarm never fires.
            let options = AcquireOptions::new().wait(Some(Duration::from_secs(60)));
            table.acquire_with("held", Duration::from_secs(10), &options).map(|l| l.token())
        });
        // Checked after the kill, so that a failure does not leave the waiter waiting.
        let armed = std::panic::catch_unwind(|| {
            running(1, "the waiter's death alarm");
            library_threads()
        });
        drop(kill.take()); // SIGKILL, reaped
        let armed = armed.unwrap_or_else(|p| std::panic::resume_unwind(p));
        assert!(armed[0].starts_with("shmlease-death"), "{armed:?}");
        let token = waiter.join().expect("waiter").expect("the dead holder's lease");
        assert!(token > 0);
    });
    none_left("the wait that the death alarm ended");
    drop(table);
    LeaseTable::remove(&path).unwrap();
}

/// A forked child, killed and reaped when dropped (however the test ends).
struct Kill(i32);

impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: plain system calls on our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// A child forked while its parent holds a kept-alive lease inherits the lease but not
/// the keep-alive thread: everything it does with the lease (release, detach, another
/// keep-alive, dropping it) is refused or does nothing, at once — never a join of a
/// thread that does not exist in it — and the parent's lease stays held and kept alive.
fn a_child_forked_beside_a_keep_alive_leaves_the_parents_lease_and_thread_alone() {
    let path = std::env::temp_dir().join(format!("shmlease-forkka-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(16)).expect("create");
    let ttl = Duration::from_millis(300);
    for way in 0..4 {
        let mut lease = table.try_acquire("kept", ttl).unwrap();
        lease.keep_alive(ttl).unwrap();
        running(1, "the parent's keep-alive");
        // SAFETY: the child only uses the inherited lease and exits with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            let refused =
                |r: shmlease::Result<()>| matches!(r, Err(shmlease::Error::BoundToProcess { .. }));
            let ok = match way {
                0 => refused(lease.release()),
                1 => lease.detach().is_err(),
                2 => {
                    refused(lease.keep_alive(ttl)) && {
                        drop(lease);
                        true
                    }
                }
                _ => {
                    drop(lease);
                    true
                }
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let guard = Kill(child);
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child, without blocking.
            let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
            if r == child {
                break;
            }
            assert!(std::time::Instant::now() < give_up, "way {way}: the child hangs");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::mem::forget(guard); // reaped
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "way {way}: {status:#x}"
        );
        // Several TTLs later the parent's lease is still held: its thread still renews.
        std::thread::sleep(ttl * 3);
        assert!(lease.is_valid(), "way {way}: the parent's lease lapsed");
        lease.release().unwrap();
        none_left(&format!("the parent's release (way {way})"));
    }
    drop(table);
    LeaseTable::remove(&path).unwrap();
}
