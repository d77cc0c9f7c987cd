//! `shmlease run`: hold a lease while a command runs, and stop the command the moment
//! the lease is lost.
//!
//! The supervisor blocks the signals it cares about and reads them from a signalfd, so
//! one `poll` waits for all three things that can happen: CMD exits (SIGCHLD), a
//! signal arrives to forward, or the keep-alive reports the lease lost (a bell rung by
//! a watcher thread).
//!
//! The lease covers CMD's whole job: CMD and every process below run in the process
//! tree. run is a child subreaper, so a process whose parent exits (a daemon, a
//! background job of a shell that exited) is re-parented to run and stays in the tree;
//! on a lost lease, and when CMD exits leaving processes behind, run stops all of them
//! (SIGTERM, then SIGKILL) before it lets go of the lease.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmlease::LeaseTable;

use crate::os::{self, Bell, SignalFd, SignalSet};
use crate::{duration, exit, explain, say, take, Failure, TableArg, Wait};

/// Extra `run --help` text.
pub const AFTER_HELP: &str = "\
run waits for the lease (forever by default) and exits with 75 if it stays held.
CMD runs directly (no shell) with SHMLEASE_TABLE, SHMLEASE_NAME and SHMLEASE_TOKEN set.
The lease is renewed every TTL/3. If it is lost (revoked, or not renewed in time), CMD
and every process it started get SIGTERM, then SIGKILL after --kill-after, and run
exits with 79. Processes CMD leaves running when it exits are stopped the same way
before the lease is released (run is their child subreaper: even daemons are found).
Then run releases the lease and exits with CMD's status (128+N for signal N).

With --permits N, up to N runs of NAME run their CMD at once, each holding a permit of
its own with its own token in SHMLEASE_TOKEN; the next run waits for any of them to end
(see Permits, below). With --shared, up to 64 runs of NAME run their CMD at once (its
readers, say), each with a token of its own; a run of NAME without --shared (the
writer) waits until they have all ended, and keeps new shared runs waiting meanwhile
(see Shared leases, below).

SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to run are passed on to CMD once: at a
terminal CMD shares run's process group (Ctrl-C and Ctrl-Z reach both directly, and
run does not pass them on again); elsewhere CMD gets its own process group and
signals go to that group.

A request to release the lease (`shmlease request-release NAME`, or `shmlease revoke NAME
--grace DUR`) reaches CMD as SIGTERM (--on-request SIGNAL to send another, --on-request
none to ignore requests): CMD finishes its work and exits, and run releases the lease.

If run itself is killed with SIGKILL, the kernel kills CMD (PR_SET_PDEATHSIG), but not
the processes CMD started: they keep running, without the lease, which another run can
take at once. Stop run with SIGTERM or Ctrl-C instead: it stops the whole job first.

Hot standby: start the same `shmlease run NAME -- CMD` several times (in several service
units, say). One runs CMD; the others wait, without polling. The moment it ends, one
of them takes the lease and starts its CMD: when CMD exits, when run is stopped, and
when run is killed, even with SIGKILL (its death wakes the waiters at once, through a
pidfd: no TTL to wait out; only a stopped, frozen run holds them off until its TTL
runs out). `shmlease leader NAME` shows which one leads, `shmlease observe NAME` each
change, and `shmlease revoke NAME --grace 30s` hands over cleanly (the leader's CMD gets
SIGTERM, then the lease is revoked if it is still held after 30 s). CMD should pass
$SHMLEASE_TOKEN (its term, which only grows) to whatever it writes to, so that a
deposed leader's late writes can be refused.

Examples:
  shmlease run nightly-backup -- /usr/local/bin/backup --full
  shmlease run scheduler --label \"$(hostname -s)\" -- ./scheduler   # hot standby: run it 3 times
  shmlease run -n deploy -- make deploy        # exit 75 at once if someone is deploying
  shmlease run gpu0 --wait 5m --ttl 30s -- python train.py
  shmlease run gpus --permits 4 -- ./train.sh    # at most 4 at once; the 5th waits
  shmlease run catalog --shared -- ./query.sh    # many at once, but never during ...
  shmlease run catalog -- ./rebuild.sh           # ... this one, which waits for them";

/// `run`'s options.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Lease name (1 to 64 bytes of UTF-8)
    name: String,
    /// Lease time to live (250ms to 365d); renewed every TTL/3 while CMD runs
    #[arg(long, default_value = "10s", value_parser = parse_ttl, value_name = "DUR", allow_hyphen_values = true)]
    ttl: Duration,
    /// Wait at most this long for a held lease [default: forever]
    #[arg(
        long,
        value_parser = crate::parse_wait,
        value_name = "DUR",
        conflicts_with = "no_wait",
        allow_hyphen_values = true
    )]
    wait: Option<Wait>,
    /// Don't wait: exit with the conflict code at once if the lease is held
    #[arg(short = 'n', long)]
    no_wait: bool,
    /// Label shown to others in `ls` (at most 8 bytes)
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    kind: crate::Kind,
    /// After SIGTERM (to CMD's job on a lost lease, or to processes CMD left running),
    /// SIGKILL what is still running this much later
    #[arg(long, default_value = "10s", value_parser = duration::parse, value_name = "DUR", allow_hyphen_values = true)]
    kill_after: Duration,
    /// Exit code when the lease is held by someone else (timed out, or -n)
    #[arg(long, default_value_t = exit::HELD, value_name = "N")]
    conflict_exit_code: u8,
    /// Signal sent to CMD when someone requests the lease's release (request-release,
    /// revoke --grace): a name (TERM, SIGUSR1) or number, or "none" to ignore requests
    #[arg(long, default_value = "TERM", value_parser = parse_signal, value_name = "SIGNAL")]
    on_request: OnRequest,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

impl RunArgs {
    /// `shmlease [GLOBAL OPTIONS] run ...` read without clap, in the forms people write,
    /// or `None` to have clap read it: clap builds its model of every command, option
    /// and help text before it reads anything, which took a fifth of the time of `run
    /// NAME -- true`, and a `run` is started as often as `flock(1)` is.
    ///
    /// It accepts a subset of what clap accepts and reads it as clap does: `run`'s own
    /// options and the global ones, before or after NAME, each at most once, as `--opt
    /// VALUE` or `--opt=VALUE` (and `-n`, `-t VALUE`), then `--` and CMD. Values go
    /// through the same parsers as clap's. Anything else (another command, `--help`,
    /// combined short options, a value that starts with `-` or is empty, an option
    /// given twice, `--wait` with `-n`, an option this list does not know, any error)
    /// is left to clap, which gives the usual answer. The bin's unit tests check that
    /// clap reads the same wherever this accepts.
    pub fn parse_quickly(args: &[OsString]) -> Option<crate::Cli> {
        let mut globals =
            crate::Globals { table: None, allow_foreign_owner: false, allow_world_writable: false };
        let mut values: Vec<(&str, &str)> = Vec::new();
        let mut flags: Vec<&str> = Vec::new();
        let mut name = None;
        let mut seen_run = false;
        let mut rest = args.get(1..)?.iter();
        let command: Vec<OsString> = loop {
            let arg = rest.next()?;
            if arg == "--" {
                if !seen_run {
                    return None;
                }
                break rest.cloned().collect();
            }
            let Some(text) = arg.to_str() else {
                // Not UTF-8: only the value of -t may be (taken below), and NAME may not.
                return None;
            };
            if !text.starts_with('-') {
                if !seen_run {
                    if text != "run" {
                        return None;
                    }
                    seen_run = true;
                } else if name.replace(text).is_some() {
                    return None;
                }
                continue;
            }
            let (option, inline) = match text.split_once('=') {
                Some((o, v)) if o.starts_with("--") => (o, Some(v)),
                _ => (text, None),
            };
            let option = match option {
                "-t" | "--table" => "--table",
                "-n" | "--no-wait" => "--no-wait",
                o if o.starts_with("--") => o,
                _ => return None,
            };
            let global =
                matches!(option, "--table" | "--allow-foreign-owner" | "--allow-world-writable");
            if !seen_run && !global {
                return None;
            }
            if values.iter().any(|(o, _)| *o == option) || flags.contains(&option) {
                return None;
            }
            let takes_value = matches!(
                option,
                "--table"
                    | "--ttl"
                    | "--wait"
                    | "--label"
                    | "--kill-after"
                    | "--conflict-exit-code"
                    | "--on-request"
                    | "--permits"
            );
            if !takes_value {
                if inline.is_some()
                    || !matches!(
                        option,
                        "--no-wait"
                            | "--shared"
                            | "--fair"
                            | "--allow-foreign-owner"
                            | "--allow-world-writable"
                    )
                {
                    return None;
                }
                flags.push(option);
                continue;
            }
            if option == "--table" && inline.is_none() {
                // Any bytes: a location need not be UTF-8 here (TableArg refuses it).
                let value = rest.next()?;
                if value.is_empty() || value.as_encoded_bytes().starts_with(b"-") {
                    return None;
                }
                values.push((option, ""));
                globals.table = Some(value.clone());
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => rest.next()?.to_str()?,
            };
            if value.is_empty() || value.starts_with('-') {
                return None;
            }
            if option == "--table" {
                globals.table = Some(value.into());
            }
            values.push((option, value));
        };
        let name = name?.to_owned();
        if command.is_empty() {
            return None;
        }
        let value = |option: &str| values.iter().find(|(o, _)| *o == option).map(|(_, v)| *v);
        let flag = |option: &str| flags.contains(&option);
        if flag("--no-wait") && value("--wait").is_some() {
            return None;
        }
        globals.allow_foreign_owner = flag("--allow-foreign-owner");
        globals.allow_world_writable = flag("--allow-world-writable");
        let permits = match value("--permits") {
            None => 1,
            Some(v) => {
                let n = v.parse::<i64>().ok()?;
                (1..=i64::from(shmlease::layout::MAX_SEATS)).contains(&n).then_some(n as u32)?
            }
        };
        let args = RunArgs {
            name,
            ttl: parse_ttl(value("--ttl").unwrap_or("10s")).ok()?,
            wait: value("--wait").map(crate::parse_wait).transpose().ok()?,
            no_wait: flag("--no-wait"),
            label: value("--label").map(str::to_owned),
            kind: crate::Kind { permits, shared: flag("--shared"), fair: flag("--fair") },
            kill_after: duration::parse(value("--kill-after").unwrap_or("10s")).ok()?,
            conflict_exit_code: match value("--conflict-exit-code") {
                None => exit::HELD,
                Some(v) => u8::try_from(v.parse::<i64>().ok()?).ok()?,
            },
            on_request: parse_signal(value("--on-request").unwrap_or("TERM")).ok()?,
            command,
        };
        Some(crate::Cli { globals, command: crate::Command::Run(args) })
    }
}

/// The shortest TTL `run` accepts (the library's is 1µs). run renews every TTL/3, so a
/// renewal may come at most 2·TTL/3 late before the lease is lost, and on a busy machine
/// the keep-alive thread wakes late. Measured on a 2-core machine with both cores
/// saturated (two busy loops, a cargo build, other test jobs): a thread sleeping 33 ms
/// woke up to 87 ms late (p99.9 26 ms), and `run --ttl X -- sleep 1` lost its own
/// lease in 11 of 60 runs at 50ms, 1 of 100 at 100ms, none of 100 at 250ms (167 ms of
/// slack, about twice the worst lateness seen). Less loaded, 1ms lost it every time
/// and 10ms one time in ten. To measure again, with two `yes > /dev/null &` running:
/// `for i in $(seq 100); do shmlease run q --ttl 250ms -- sleep 1; echo $?; done | grep -c 79`
/// (shorter TTLs need a build without this check).
pub const MIN_TTL: Duration = Duration::from_millis(250);

/// `--ttl`: [`MIN_TTL`] to the library's longest.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = duration::parse(text)?;
    let range = format!("{} to {}", duration::exact(MIN_TTL), duration::exact(duration::MAX_TTL));
    if ttl < MIN_TTL {
        Err(format!(
            "run needs a TTL of at least {}: it renews the lease every TTL/3, and on a busy machine a renewal can come tens of milliseconds late, so a shorter lease is lost while CMD runs (run's TTL is {range})",
            duration::exact(MIN_TTL)
        ))
    } else if ttl > duration::MAX_TTL {
        Err(format!("run's TTL is {range}"))
    } else {
        Ok(ttl)
    }
}

/// What `run` does when the release of its lease is requested: send CMD this signal,
/// or nothing.
#[derive(Clone, Copy, Debug)]
pub struct OnRequest(Option<libc::c_int>);

/// `--on-request`: `none`, a signal name with or without `SIG` (any case), or a number.
fn parse_signal(text: &str) -> Result<OnRequest, String> {
    use nix::sys::signal::Signal;
    if text.eq_ignore_ascii_case("none") {
        return Ok(OnRequest(None));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    let signal = match text.parse::<libc::c_int>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) => name.parse::<Signal>().ok(),
    };
    match signal {
        Some(s) if s != Signal::SIGKILL && s != Signal::SIGSTOP => Ok(OnRequest(Some(s as libc::c_int))),
        Some(_) => Err(format!("{text:?} cannot be handled by CMD: use a signal CMD can catch (TERM, INT, HUP, USR1, USR2), or none")),
        None => Err(format!("{text:?} is not a signal: use a name like TERM or USR1, a number, or none")),
    }
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
    // SIGCHLD is blocked before the wait, not after it: threads the library starts
    // while waiting (a death alarm's, which ends a moment after the wait, not joined)
    // inherit the mask of this thread. One that still ran, SIGCHLD unblocked, when CMD
    // exits would take the signal (and, its action being the default, drop it): the
    // signalfd would never tell, and run would hold the lease forever beside CMD's
    // zombie. Nothing waits for a child before CMD exists, so blocking it costs nothing.
    SignalSet::of(&[libc::SIGCHLD])
        .block()
        .map_err(|e| Failure::new(exit::OS, format!("blocking SIGCHLD: {e}")))?;
    let mut lease = match take(t, table, name, args.ttl, wait, args.label.as_deref(), args.kind) {
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
    // started below inherit the mask; CMD starts with an empty one: see `os::spawn`).
    let mut watched = FORWARDED.to_vec();
    watched.push(libc::SIGCHLD);
    let set = SignalSet::of(&watched);
    let os_failure =
        |doing: &str, e: std::io::Error| Failure::new(exit::OS, format!("{doing}: {e}"));
    set.block().map_err(|e| os_failure("blocking signals", e))?;
    let signals = SignalFd::new(&set).map_err(|e| os_failure("creating a signalfd", e))?;
    let bell = Arc::new(Bell::new().map_err(|e| os_failure("creating an eventfd", e))?);
    let asked = Arc::new(Bell::new().map_err(|e| os_failure("creating an eventfd", e))?);

    lease.keep_alive(args.ttl).map_err(|e| explain(&e, Some(name), table))?;
    let lease = Arc::new(lease);
    {
        let (lease, bell, asked) = (Arc::clone(&lease), Arc::clone(&bell), Arc::clone(&asked));
        std::thread::Builder::new()
            .name("lease-watcher".into())
            .spawn(move || {
                if lease.wait_notice(None) == Some(shmlease::Notice::ReleaseRequested) {
                    asked.ring();
                    lease.wait_lost(None);
                }
                bell.ring();
            })
            .map_err(|e| os_failure("starting a thread", e))?;
    }

    // At a terminal, CMD stays in our process group so that it keeps the terminal
    // (reading it, job control: Ctrl-C and Ctrl-Z reach the whole group, run included).
    // Elsewhere it gets its own group, so that a signal sent to our group does not
    // reach it twice. Either way "CMD's job" is everything CMD started: as a child
    // subreaper, run inherits the processes whose parents exit, so that every one of
    // them stays below run and can be found and stopped (see `Job`).
    let own_group = !os::in_terminal_foreground();
    os::become_child_subreaper().map_err(|e| os_failure("becoming a child subreaper", e))?;
    let supervisor = std::process::id();
    let token_text = token.to_string();
    let env: [(&str, &OsStr); 3] = [
        ("SHMLEASE_TABLE", table.export.as_ref()),
        ("SHMLEASE_NAME", name.as_ref()),
        ("SHMLEASE_TOKEN", token_text.as_ref()),
    ];
    let cmd = match os::Program::new(&args.command, &env).and_then(|p| os::spawn(&p, own_group)) {
        Ok(pid) => pid,
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

    let mut job = Job { cmd, group: own_group, status: None, childless: false, supervisor };
    let mut lost = false;
    // Set once a release request was passed on (or is to be ignored).
    let mut requested = args.on_request.0.is_none();
    // Set once the job is being stopped: on a lost lease, or when CMD exits leaving
    // processes behind.
    let mut stopping = false;
    let mut kill_at: Option<Instant> = None;
    // SIGKILL sent (and repeated until the job is gone: for what forked meanwhile).
    let mut killing = false;
    loop {
        // The bells stay readable once rung: each is polled until acted on.
        let mut fds = vec![signals.as_raw_fd(), bell.as_raw_fd()];
        if lost {
            fds[1] = -1; // poll(2) ignores a negative descriptor
        }
        if !requested {
            fds.push(asked.as_raw_fd());
        }
        // Leftovers that are not our children exit without telling us: look again soon.
        let recheck = job.status.is_some().then_some(LEFTOVER_RECHECK);
        let until_kill = kill_at.map(|at| at.saturating_duration_since(Instant::now()));
        let timeout = match (recheck, until_kill) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ready =
            os::poll_readable(&fds, timeout).map_err(|e| os_failure("waiting for events", e))?;
        if ready[0] {
            let received = signals.read().map_err(|e| os_failure("reading signals", e))?;
            for r in received.iter().filter(|r| forward(r, own_group, supervisor)) {
                job.forward(r.signal);
            }
        }
        job.reap().map_err(|e| os_failure("waiting for CMD", e))?;
        if !requested && ready.get(2) == Some(&true) {
            requested = true;
            if let (Some(signal), None) = (args.on_request.0, job.status) {
                say(format_args!(
                    "release of lease {name:?} (token {token}) requested: sending {} to CMD; the lease is released when CMD exits",
                    signal_name(signal)
                ));
                job.forward(signal);
            }
        }
        if !lost && ready[1] {
            lost = true;
            let why = lease.lost().map(|r| r.to_string()).unwrap_or_else(|| "it is gone".into());
            say(format_args!(
                "lost lease {name:?} (token {token}): {why}; it is no longer ours: stopping CMD and every process it started (SIGTERM, SIGKILL in {})",
                duration::human(args.kill_after)
            ));
            stopping = true;
            job.stop(libc::SIGTERM);
            kill_at = Some(Instant::now() + args.kill_after);
        }
        if job.status.is_some() {
            let left = job.left();
            if left.is_empty() {
                break;
            }
            if !stopping {
                stopping = true;
                say(format_args!(
                    "CMD exited, leaving {} running ({}); stopping {} before releasing the lease (SIGTERM, SIGKILL in {})",
                    processes(left.len()),
                    pids(&left),
                    if left.len() == 1 { "it" } else { "them" },
                    duration::human(args.kill_after)
                ));
                job.stop(libc::SIGTERM);
                kill_at = Some(Instant::now() + args.kill_after);
            }
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            let left = job.left();
            if !left.is_empty() && !killing {
                killing = true;
                say(format_args!(
                    "{} still running {} after SIGTERM ({}); sending SIGKILL",
                    if job.status.is_none() { "CMD".to_string() } else { processes(left.len()) },
                    duration::human(args.kill_after),
                    pids(&left)
                ));
            }
            job.stop(libc::SIGKILL);
            // Anything that forked meanwhile is killed on the next turn.
            kill_at = Some(Instant::now() + LEFTOVER_RECHECK);
        }
    }
    // Processes killed last may have become zombies since the loop reaped: reap them
    // too, rather than leave them to whoever inherits them.
    job.reap().map_err(|e| os_failure("waiting for CMD", e))?;
    let status = job.status.expect("the loop ends once CMD is reaped");

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

/// "SIGTERM" for a signal number.
fn signal_name(signal: libc::c_int) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

/// How often to look for CMD's leftovers once CMD has exited, and to repeat SIGKILL.
const LEFTOVER_RECHECK: Duration = Duration::from_millis(20);

fn processes(n: usize) -> String {
    if n == 1 {
        "1 process".into()
    } else {
        format!("{n} processes")
    }
}

/// "pid 1, 2, 3", at most ten.
fn pids(list: &[u32]) -> String {
    let mut shown: Vec<String> = list.iter().take(10).map(u32::to_string).collect();
    if list.len() > 10 {
        shown.push(format!("and {} more", list.len() - 10));
    }
    format!("pid {}", shown.join(", "))
}

/// Whether a signal `run` received should be passed on to CMD.
fn forward(r: &os::Received, own_group: bool, supervisor: u32) -> bool {
    // A terminal signals its whole foreground group: if CMD shares ours, it has the
    // signal already.
    let from_terminal = r.code == os::SI_KERNEL && !own_group;
    FORWARDED.contains(&r.signal) && !from_terminal && r.pid != supervisor
}

/// CMD and every process it started: those that are still below run in the process
/// tree (run is their child subreaper, so orphans come back to it).
struct Job {
    cmd: u32,
    /// CMD has a process group of its own (its pid).
    group: bool,
    /// CMD's status, once reaped.
    status: Option<ExitStatus>,
    /// run had no child left at the last reap, CMD included: then nothing is left of the
    /// job, and nothing can join it (see [`Job::left`]).
    childless: bool,
    supervisor: u32,
}

impl Job {
    /// Passes a signal for CMD on: to its process group, or its pid. Once CMD is gone,
    /// to the processes it left.
    fn forward(&self, signal: libc::c_int) {
        if self.status.is_none() {
            os::send_signal(self.cmd, signal, self.group);
        } else {
            for pid in self.left() {
                os::send_signal(pid, signal, false);
            }
        }
    }

    /// The live processes of the job below run: CMD, while it runs, and every process
    /// it started that is still running.
    ///
    /// Without reading `/proc` (a millisecond with a few hundred processes) once run has
    /// no child at all: every live process below run descends from a live child of run
    /// (run is their child subreaper, so a process whose parent exits becomes run's
    /// child, never init's), so with no child there is no descendant; and none can
    /// appear, since run starts no other process and only its descendants are
    /// re-parented to it.
    fn left(&self) -> Vec<u32> {
        if self.childless {
            Vec::new()
        } else {
            os::descendants(self.supervisor)
        }
    }

    /// Sends `signal` to the whole job: CMD's group (while CMD's pid still names it),
    /// CMD, and every process below run. A SIGTERM is followed by SIGCONT, as a shell's
    /// `kill` does for a stopped job, so that a stopped process acts on it too.
    fn stop(&self, signal: libc::c_int) {
        let signals: &[libc::c_int] =
            if signal == libc::SIGTERM { &[libc::SIGTERM, libc::SIGCONT] } else { &[signal] };
        for &signal in signals {
            if self.status.is_none() {
                os::send_signal(self.cmd, signal, self.group);
                if self.group {
                    os::send_signal(self.cmd, signal, false);
                }
            }
            for pid in self.left() {
                os::send_signal(pid, signal, false);
            }
        }
    }

    /// Reaps every child that has exited: CMD (keeping its status) and the orphans
    /// run inherited as subreaper.
    fn reap(&mut self) -> std::io::Result<()> {
        let reaped = os::reap_children()?;
        for (pid, status) in reaped.exited {
            if pid == self.cmd {
                self.status = Some(ExitStatus::from_raw(status));
            }
        }
        self.childless = reaped.childless;
        Ok(())
    }
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
