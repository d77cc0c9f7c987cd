//! `shmlease run`: hold a lease while a command runs, and stop the command the moment
//! the lease is lost.
//!
//! The supervisor blocks the signals it cares about and reads them from a signalfd, so
//! one `poll` waits for all three things that can happen: CMD exits (SIGCHLD), a
//! signal arrives to forward, or the keep-alive reports the lease lost (a bell rung by
//! a watcher thread).

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmlease::LeaseTable;

use crate::os::{self, Bell, SignalFd, SignalSet};
use crate::{duration, exit, explain, say, take, Failure, TableArg, Wait};

/// Extra `run --help` text.
pub const AFTER_HELP: &str = "\
run waits for the lease (forever by default) and exits with 75 if it stays held.
CMD runs directly (no shell) with SHMLEASE_TABLE, SHMLEASE_NAME and SHMLEASE_TOKEN set.
The lease is renewed every TTL/3. If it is lost (revoked, or not renewed in time),
CMD gets SIGTERM, then SIGKILL after --kill-after, and run exits with 79.
SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to run are passed on to CMD once: at a
terminal CMD shares run's process group (Ctrl-C reaches it directly and is not passed
on again); elsewhere CMD gets its own process group and signals go to that group.
If run is killed, CMD is killed too. The lease is released as soon as CMD exits, and
run exits with CMD's status (128+N if CMD was killed by signal N).

Examples:
  shmlease run nightly-backup -- /usr/local/bin/backup --full
  shmlease run -n deploy -- make deploy        # exit 75 at once if someone is deploying
  shmlease run gpu0 --wait 5m --ttl 30s -- python train.py";

/// `run`'s options.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Lease name (1 to 64 bytes)
    name: String,
    /// Lease time to live; renewed every TTL/3 while CMD runs
    #[arg(long, default_value = "10s", value_parser = duration::parse, value_name = "DUR")]
    ttl: Duration,
    /// Wait at most this long for a held lease [default: forever]
    #[arg(long, value_parser = crate::parse_wait, value_name = "DUR", conflicts_with = "no_wait")]
    wait: Option<Wait>,
    /// Don't wait: exit with the conflict code at once if the lease is held
    #[arg(short = 'n', long)]
    no_wait: bool,
    /// Label shown to others in `ls` (at most 8 bytes)
    #[arg(long)]
    label: Option<String>,
    /// After SIGTERM on a lost lease, SIGKILL CMD if it is still running this much later
    #[arg(long, default_value = "10s", value_parser = duration::parse, value_name = "DUR")]
    kill_after: Duration,
    /// Exit code when the lease is held by someone else (timed out, or -n)
    #[arg(long, default_value_t = exit::HELD, value_name = "N")]
    conflict_exit_code: u8,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// The signals passed on to CMD.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Runs `args.command` under the lease; returns the exit code.
pub fn run(table: &TableArg, args: RunArgs) -> Result<u8, Failure> {
    // The lease borrows the table, and a watcher thread needs the lease for as long as
    // the process lives: give the table the process's lifetime.
    let t: &'static LeaseTable = Box::leak(Box::new(table.open(true)?));
    let wait =
        if args.no_wait { Wait(Some(Duration::ZERO)) } else { args.wait.unwrap_or(Wait(None)) };
    let name = args.name.as_str();
    let mut lease = match take(t, table, name, args.ttl, wait, args.label.as_deref()) {
        Ok(lease) => lease,
        Err(mut f) => {
            if f.conflict {
                f.code = args.conflict_exit_code;
            }
            return Err(f);
        }
    };
    let token = lease.token();

    // From here on these signals are read from the signalfd, in every thread (threads
    // started below inherit the mask; CMD gets a clean one from std).
    let mut watched = FORWARDED.to_vec();
    watched.push(libc::SIGCHLD);
    let set = SignalSet::of(&watched);
    let os_failure =
        |doing: &str, e: std::io::Error| Failure::new(exit::OS, format!("{doing}: {e}"));
    set.block().map_err(|e| os_failure("blocking signals", e))?;
    let signals = SignalFd::new(&set).map_err(|e| os_failure("creating a signalfd", e))?;
    let bell = Arc::new(Bell::new().map_err(|e| os_failure("creating an eventfd", e))?);

    lease.keep_alive(args.ttl).map_err(|e| explain(&e, Some(name), table))?;
    let lease = Arc::new(lease);
    {
        let (lease, bell) = (Arc::clone(&lease), Arc::clone(&bell));
        std::thread::Builder::new()
            .name("lease-watcher".into())
            .spawn(move || {
                lease.wait_lost(None);
                bell.ring();
            })
            .map_err(|e| os_failure("starting a thread", e))?;
    }

    // At a terminal, CMD stays in our process group so that it keeps the terminal
    // (reading it, job control); the terminal's Ctrl-C then reaches it directly.
    // Elsewhere it gets its own group, so that a signal sent to our group does not
    // reach it twice, and so that stopping it stops what it started too.
    let own_group = !os::in_terminal_foreground();
    let supervisor = std::process::id();
    let mut command = Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("SHMLEASE_TABLE", &table.export)
        .env("SHMLEASE_NAME", name)
        .env("SHMLEASE_TOKEN", token.to_string());
    if own_group {
        command.process_group(0);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (sigemptyset, pthread_sigmask, prctl, getppid), without
    // allocating.
    unsafe {
        command.pre_exec(move || os::die_with_parent(supervisor));
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = t.release(name, token);
            let shown = args.command[0].to_string_lossy();
            let (code, why) = match e.kind() {
                std::io::ErrorKind::NotFound => (
                    exit::NOT_FOUND,
                    "not found (is it on PATH? run does not use a shell)".to_string(),
                ),
                std::io::ErrorKind::PermissionDenied => {
                    (exit::CANNOT_EXECUTE, "permission denied".to_string())
                }
                _ => (exit::CANNOT_EXECUTE, e.to_string()),
            };
            return Err(Failure::new(code, format!("cannot run {shown:?}: {why}")));
        }
    };

    let target = Target { pid: child.id(), group: own_group };
    let mut lost = false;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        let mut fds = vec![signals.as_raw_fd()];
        if !lost {
            fds.push(bell.as_raw_fd()); // stays readable once rung
        }
        let timeout = kill_at.map(|at| at.saturating_duration_since(Instant::now()));
        let ready =
            os::poll_readable(&fds, timeout).map_err(|e| os_failure("waiting for events", e))?;
        if ready[0] {
            let received = signals.read().map_err(|e| os_failure("reading signals", e))?;
            for r in received.iter().filter(|r| forward(r, own_group, supervisor)) {
                target.signal(r.signal);
            }
        }
        if let Some(status) = reap(&mut child)? {
            break status;
        }
        if !lost && ready.get(1) == Some(&true) {
            lost = true;
            let why = lease.lost().map(|r| r.to_string()).unwrap_or_else(|| "it is gone".into());
            say(format_args!(
                "lost lease {name:?} (token {token}): {why}; stopping CMD (SIGTERM, SIGKILL in {})",
                duration::human(args.kill_after)
            ));
            target.signal(libc::SIGTERM);
            kill_at = Some(Instant::now() + args.kill_after);
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            say(format_args!(
                "CMD still running {} after SIGTERM; sending SIGKILL",
                duration::human(args.kill_after)
            ));
            target.signal(libc::SIGKILL);
            kill_at = None;
        }
    };

    if lost {
        return Ok(exit::LOST);
    }
    // Release at once, so that waiters get the lease now; the watcher thread will see
    // the release as a loss, but nobody listens any more.
    match t.release(name, token) {
        Ok(()) => Ok(exit_code(status)),
        Err(shmlease::Error::Lost { reason, .. }) => {
            say(format_args!(
                "lease {name:?} (token {token}) was lost before CMD finished: {reason}; CMD may have run without it"
            ));
            Ok(exit::LOST)
        }
        Err(e) => Err(explain(&e, Some(name), table)),
    }
}

/// Whether a signal `run` received should be passed on to CMD.
fn forward(r: &os::Received, own_group: bool, supervisor: u32) -> bool {
    // A terminal signals its whole foreground group: if CMD shares ours, it has the
    // signal already.
    let from_terminal = r.code == os::SI_KERNEL && !own_group;
    FORWARDED.contains(&r.signal) && !from_terminal && r.pid != supervisor
}

/// Where signals for CMD go: its pid, or its process group.
struct Target {
    pid: u32,
    group: bool,
}

impl Target {
    fn signal(&self, signal: libc::c_int) {
        os::send_signal(self.pid, signal, self.group);
    }
}

fn reap(child: &mut Child) -> Result<Option<ExitStatus>, Failure> {
    child.try_wait().map_err(|e| Failure::new(exit::OS, format!("waiting for CMD: {e}")))
}

/// CMD's status as ours: its exit code, or 128+N when killed by signal N.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        _ => exit::OS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(signal: libc::c_int, code: i32, pid: u32) -> os::Received {
        os::Received { signal, code, pid }
    }

    #[test]
    fn terminal_signals_are_not_repeated_to_a_command_in_our_group() {
        let from_tty = received(libc::SIGINT, os::SI_KERNEL, 0);
        assert!(!forward(&from_tty, false, 100));
        assert!(forward(&from_tty, true, 100), "CMD in its own group never saw it");
    }

    #[test]
    fn signals_from_processes_are_forwarded_once() {
        let si_user = 0;
        assert!(forward(&received(libc::SIGTERM, si_user, 42), false, 100));
        assert!(forward(&received(libc::SIGHUP, si_user, 42), true, 100));
        assert!(!forward(&received(libc::SIGTERM, si_user, 100), true, 100), "our own");
        assert!(!forward(&received(libc::SIGCHLD, si_user, 42), true, 100));
    }
}
