//! The few operating-system calls the tool makes itself (signals, polling, the
//! terminal, starting CMD, reaping), each wrapped once with its errno handling.
//!
//! Through nix's safe wrappers where they fit. Raw `libc` remains where a caller hands a
//! bare descriptor number (polling, the terminal): nix takes a `BorrowedFd`, and making
//! one from a number is itself `unsafe`, so nothing would be gained; and for starting
//! CMD, `waitpid` and the window size (each says why).

use std::ffi::{CString, OsStr, OsString};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::SfdFlags;
use nix::unistd::Pid;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A set of signals.
pub struct SignalSet(SigSet);

impl SignalSet {
    /// The set of `signals`. A number that is no standard signal is left out (nix's
    /// `Signal` has no real-time signals; none is used here).
    pub fn of(signals: &[libc::c_int]) -> SignalSet {
        let mut set = SigSet::empty();
        for signal in signals.iter().filter_map(|&s| Signal::try_from(s).ok()) {
            set.add(signal);
        }
        SignalSet(set)
    }

    /// Blocks these signals in the calling thread and in threads it starts later, so
    /// that they wait for a [`SignalFd`] instead of running their default action.
    pub fn block(&self) -> io::Result<()> {
        Ok(self.0.thread_block()?)
    }
}

/// One received signal: its number, who sent it, and how (`code`).
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Signal number.
    pub signal: libc::c_int,
    /// `si_code`: `SI_USER` for kill(2), `SI_KERNEL` for the terminal's signals.
    pub code: i32,
    /// Sender's pid (for kill(2)).
    pub pid: u32,
}

/// The kernel marks signals it generates itself (a terminal's Ctrl-C, Ctrl-\, hangup)
/// with this `si_code`.
pub const SI_KERNEL: i32 = 0x80;

/// A signalfd(2): blocked signals become readable records.
pub struct SignalFd(nix::sys::signalfd::SignalFd);

impl SignalFd {
    /// Reads the (blocked) signals in `set`.
    pub fn new(set: &SignalSet) -> io::Result<SignalFd> {
        let flags = SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK;
        Ok(SignalFd(nix::sys::signalfd::SignalFd::with_flags(&set.0, flags)?))
    }

    /// The signals received so far (empty if none).
    pub fn read(&self) -> io::Result<Vec<Received>> {
        let mut out = Vec::new();
        loop {
            match self.0.read_signal() {
                Ok(Some(info)) => out.push(Received {
                    signal: info.ssi_signo as i32,
                    code: info.ssi_code,
                    pid: info.ssi_pid,
                }),
                Ok(None) => return Ok(out),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An eventfd(2): one thread rings it, another polls it.
pub struct Bell(EventFd);

impl Bell {
    /// A new, silent bell.
    pub fn new() -> io::Result<Bell> {
        Ok(Bell(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?))
    }

    /// Makes the bell readable.
    pub fn ring(&self) {
        // A full counter (impossible here) would only mean the bell is already readable.
        let _ = self.0.write(1);
    }
}

impl AsRawFd for Bell {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (forever with `None`).
/// Returns, for each descriptor, whether it is readable.
pub fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = match timeout {
        None => -1,
        Some(t) => {
            t.as_millis().min(i32::MAX as u128) as i32
                + i32::from(t.subsec_nanos() % 1_000_000 != 0)
        }
    };
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd records.
    let ret = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(polled.iter().map(|p| p.revents != 0).collect())
}

/// Sends `signal` to process `pid`, or to process group `pid` when `group`. A vanished
/// target (or a number that is no standard signal) is ignored.
pub fn send_signal(pid: u32, signal: libc::c_int, group: bool) {
    let Ok(signal) = Signal::try_from(signal) else { return };
    let target = Pid::from_raw(pid as libc::pid_t);
    let _ = if group { killpg(target, signal) } else { kill(target, signal) };
}

/// Whether this process is in the foreground process group of its controlling terminal,
/// i.e. whether Ctrl-C at that terminal reaches it (and every process of its group).
pub fn in_terminal_foreground() -> bool {
    let tty =
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open("/dev/tty");
    // No controlling terminal: in no foreground.
    tty.is_ok_and(|tty| nix::unistd::tcgetpgrp(&tty) == Ok(nix::unistd::getpgrp()))
}

/// CMD as `spawn` starts it: its program, arguments and environment as C strings, made
/// before the child exists (the child may not allocate: it shares our memory).
pub struct Program {
    file: CString,
    /// `argv` and `envp` point into these.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Program {
    /// `args[0]` looked up on `PATH` as execvp(3) does (a name with a `/` is a path),
    /// with `args` and our environment, in which `set` replaces or adds variables.
    pub fn new(args: &[OsString], set: &[(&str, &OsStr)]) -> io::Result<Program> {
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in CMD or its environment")
            })
        };
        let file = c(args[0].as_bytes())?;
        let mut strings = Vec::with_capacity(args.len() + 64);
        for a in args {
            strings.push(c(a.as_bytes())?);
        }
        let argc = strings.len();
        for (key, value) in std::env::vars_os() {
            if !set.iter().any(|(k, _)| key == *k) {
                strings.push(c(&[key.as_bytes(), b"=", value.as_bytes()].concat())?);
            }
        }
        for (key, value) in set {
            strings.push(c(&[key.as_bytes(), b"=", value.as_bytes()].concat())?);
        }
        let pointers = |s: &[CString]| {
            s.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
        };
        let (argv, envp) = (pointers(&strings[..argc]), pointers(&strings[argc..]));
        Ok(Program { file, _strings: strings, argv, envp })
    }
}

/// What the child needs, read in the child: pointers into the parent's memory, which it
/// shares until it execs.
struct ChildArgs<'a> {
    program: &'a Program,
    /// Give CMD a process group of its own.
    own_group: bool,
    parent: libc::pid_t,
    /// Set by the child to the errno of what failed, if it could not exec.
    error: AtomicI32,
}

/// Starts `program` as a child that dies with this process: like vfork(2) and exec,
/// with `PR_SET_PDEATHSIG` (SIGKILL) set in between, which posix_spawn(3) cannot do.
/// Returns its pid; an error if it could not be started (the child is then reaped).
///
/// The child is made with `clone(CLONE_VM | CLONE_VFORK)`, as glibc's posix_spawn makes
/// its own: it shares our memory and runs on a stack of its own until it execs, while
/// this thread waits. So nothing of this process's size is copied (fork(2) copied its
/// page tables and left every page it then wrote to fault), and the child only makes
/// system calls, on data made beforehand ([`Program`]), without allocating, and
/// without ever running a signal handler of ours: every signal is blocked around
/// the clone, and the child sets each caught signal's action to the default before it
/// unblocks any (a handler would run on our memory). In the child, in order:
/// `setpgid(0, 0)` for `own_group`; default actions (SIGPIPE too, which the Rust
/// runtime ignores; other ignored signals stay ignored, as std's `Command` leaves
/// them); SIGKILL on the parent's death, then a check that the parent (this process)
/// did not die before that took effect; an empty signal mask; execvpe(3).
pub fn spawn(program: &Program, own_group: bool) -> io::Result<u32> {
    const STACK: usize = 64 * 1024;
    // execvpe's copy of a PATH entry and its argv for a script without `#!` are on the
    // stack. A multiple of 16, so that the stack's top is aligned as the ABI wants.
    let size = (STACK + 8 * program.argv.len()).next_multiple_of(16);
    // SAFETY: a new anonymous private mapping; no pointer of ours is involved.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let args = ChildArgs {
        program,
        own_group,
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        error: AtomicI32::new(0),
    };
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut saved = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset fills the set it is given; pthread_sigmask reads the full set
    // and writes the old mask to `saved`; clone runs `child` on the top of `stack` (a
    // private mapping of `size` bytes, 16-byte aligned at its end), with `args`, which
    // outlives the child's use of it: with CLONE_VFORK, clone returns once the child
    // has exec'd or exited.
    let pid = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), saved.as_mut_ptr());
        let pid = libc::clone(
            child,
            stack.cast::<u8>().add(size).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of!(args).cast_mut().cast(),
        );
        let e = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, saved.as_ptr(), std::ptr::null_mut());
        libc::munmap(stack, size);
        if pid < 0 {
            return Err(e);
        }
        pid
    };
    match args.error.load(Ordering::SeqCst) {
        0 => Ok(pid as u32),
        errno => {
            // SAFETY: waitpid writes the status it is given; the child has exited.
            unsafe { libc::waitpid(pid, &mut 0, libc::__WALL) };
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child of [`spawn`], until it execs: system calls only (see there).
extern "C" fn child(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a `ChildArgs` that outlives this call (it waits for it).
    let args = unsafe { &*args.cast::<ChildArgs>() };
    let fail = |what: libc::c_int| -> libc::c_int {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
        args.error.store(if what == 0 { errno } else { what }, Ordering::SeqCst);
        // SAFETY: ends this child at once, without running anything of the parent's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: each call below is async-signal-safe and takes pointers to locals or to
    // `args`, alive until exec; none allocates.
    unsafe {
        if args.own_group && libc::setpgid(0, 0) != 0 {
            return fail(0);
        }
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            // glibc refuses its own two (SIGCANCEL, SIGSETXID: 32 and 33) with EINVAL;
            // they are sent to its threads by thread id, never to this child.
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            let sigpipe = signal == libc::SIGPIPE && old.sa_sigaction == libc::SIG_IGN;
            if caught || sigpipe {
                libc::sigaction(signal, &dfl, std::ptr::null_mut());
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return fail(0);
        }
        if libc::getppid() != args.parent {
            // Re-parented: the supervisor is already gone, and the death signal with it.
            return fail(libc::ESRCH);
        }
        let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(none.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
        let p = args.program;
        libc::execvpe(p.file.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    }
    fail(0)
}

/// Makes this process the child subreaper of everything it starts: a descendant whose
/// parent exits is re-parented to this process (not to init), so that it stays below
/// it in the process tree (see [`descendants`]) and is reaped by it.
pub fn become_child_subreaper() -> io::Result<()> {
    Ok(nix::sys::prctl::set_child_subreaper(true)?)
}

/// What [`reap_children`] found.
pub struct Reaped {
    /// The children reaped: their pids and wait statuses.
    pub exited: Vec<(u32, i32)>,
    /// No child is left, running or not (waitpid said `ECHILD`).
    pub childless: bool,
}

/// Reaps every child that has exited, without waiting, and says whether any is left.
///
/// Raw `waitpid`: nix's decodes the status into a `WaitStatus`, whose `Signal` has no
/// real-time signals, so a child killed by one (SIGRTMIN's default action kills) would
/// come back as an error after it was reaped, its status lost. `__WALL`: a child whose
/// exit signal is not SIGCHLD (made by clone(2) with another one) is otherwise neither
/// reaped nor counted, and `childless` would be wrong while it runs. (Every child run
/// has is SIGCHLD's anyway: CMD, what CMD made with `CLONE_PARENT`, and orphans, whose
/// exit signal the kernel resets to SIGCHLD when it re-parents them.)
pub fn reap_children() -> io::Result<Reaped> {
    let mut exited = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status it is given; -1 means any child.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        match pid {
            0 => return Ok(Reaped { exited, childless: false }),
            p if p > 0 => exited.push((p as u32, status)),
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ECHILD) => return Ok(Reaped { exited, childless: true }),
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
        }
    }
}

/// The live processes below `root` in the process tree (its children, theirs, ...),
/// from `/proc`; zombies are left out (they run no more code). Empty if `/proc` cannot
/// be read. A snapshot: a process forked after it is read is found the next time.
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "PID (COMM) STATE PPID ...": COMM may hold anything, so split after its last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_ascii_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else { continue };
        if state == "Z" || state == "X" {
            continue;
        }
        if let Ok(ppid) = ppid.parse::<u32>() {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == parent && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// The terminal's raw-ish mode for `watch`: keys arrive one at a time, unechoed;
/// Ctrl-C still sends SIGINT. Restored on drop.
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches the terminal on `fd` (if it is one) to single-key input.
    pub fn enter(fd: RawFd) -> io::Result<RawTerminal> {
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the termios it is given, or fails.
        check(unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) })?;
        // SAFETY: tcgetattr succeeded, so the record is initialised.
        let saved = unsafe { t.assume_init() };
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: `raw` is a valid termios copied from the current one.
        check(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) })?;
        Ok(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the termios read in `enter` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Whether `fd` is a pipe or FIFO: then poll(2) reports `POLLERR` on it once its
/// reading end is closed.
pub fn is_pipe(fd: RawFd) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat it is given, or fails (then it is not read).
    let ok = unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0;
    // SAFETY: fstat succeeded, so the record is initialised.
    ok && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFIFO
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's size on `fd` as (columns, rows), if known. (Raw `ioctl`: nix has no
/// wrapper for `TIOCGWINSZ` but a macro that generates an `unsafe fn`.)
pub fn terminal_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = std::mem::MaybeUninit::<libc::winsize>::uninit();
    // SAFETY: TIOCGWINSZ fills the winsize it is given, or fails.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, ws.as_mut_ptr()) };
    if ret != 0 {
        return None;
    }
    // SAFETY: the ioctl succeeded, so the record is initialised.
    let ws = unsafe { ws.assume_init() };
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Reads whatever bytes are waiting on `fd` (at most 64).
pub fn read_some(fd: RawFd) -> Vec<u8> {
    let mut buf = [0u8; 64];
    // SAFETY: reads at most 64 bytes into the 64-byte buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    buf[..n.max(0) as usize].to_vec()
}
