//! The processes a test starts, set up and taken down whatever the test's own process
//! inherited: signal dispositions reset before exec (under `nohup` SIGHUP is ignored,
//! in a shell's background job SIGINT and SIGQUIT are, and an ignored signal stays
//! ignored across exec), and a child killed with everything below it in the process
//! tree, so that a failing test leaves nothing running. Used by `tests/cli.rs` too.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::process::Command;

/// The signals the tests send and expect to act (to end a process, or to reach a
/// handler that a shell script `trap`s: a shell cannot trap a signal ignored on entry).
const RESET: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// Makes `cmd`'s process start with the default action for SIGHUP, SIGINT, SIGQUIT and
/// SIGTERM, whatever the test process inherited. (std already clears the signal mask.)
pub fn default_signals(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // signal(2), which is async-signal-safe, with constant arguments; no allocation.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            for sig in RESET {
                if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// `root` and every process below it in the process tree, as `/proc` shows them now.
pub fn tree(root: u32) -> BTreeSet<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = BTreeSet::from([root]);
    loop {
        let before = found.len();
        for &(pid, ppid) in &parent_of {
            if found.contains(&ppid) {
                found.insert(pid);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// Kills `root` (a child of this process, not yet reaped, so that its pid is its own)
/// and every process below it. They are stopped first, so that none forks or is
/// re-parented out of sight between looking and killing, then killed.
pub fn kill_tree(root: u32) {
    let mut stopped = BTreeSet::new();
    // A few rounds catch what forked while the first were being stopped.
    for _ in 0..10 {
        let new: Vec<u32> = tree(root).difference(&stopped).copied().collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            send(pid, libc::SIGSTOP);
            stopped.insert(pid);
        }
    }
    for &pid in &stopped {
        send(pid, libc::SIGKILL);
    }
}

fn send(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers; a vanished pid only yields ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}
