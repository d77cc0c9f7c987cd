//! The few operating-system calls the tool makes itself (signals, polling, the
//! terminal, the child's death signal), each wrapped once with its errno handling.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A set of signals.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set of `signals`.
    pub fn of(signals: &[libc::c_int]) -> SignalSet {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset only reads and
        // writes that initialised set (and fails harmlessly for an invalid number).
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &s in signals {
                libc::sigaddset(set.as_mut_ptr(), s);
            }
            SignalSet(set.assume_init())
        }
    }

    /// Blocks these signals in the calling thread and in threads it starts later, so
    /// that they wait for a [`SignalFd`] instead of running their default action.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: the set is initialised; a null old-set pointer is allowed.
        let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        match ret {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
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
pub struct SignalFd(OwnedFd);

impl SignalFd {
    /// Reads the (blocked) signals in `set`.
    pub fn new(set: &SignalSet) -> io::Result<SignalFd> {
        // SAFETY: the set is initialised; -1 asks for a new descriptor.
        let fd =
            check(unsafe { libc::signalfd(-1, &set.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        Ok(SignalFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The signals received so far (empty if none).
    pub fn read(&self) -> io::Result<Vec<Received>> {
        let mut out = Vec::new();
        loop {
            let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into the buffer of that size.
            let n = unsafe { libc::read(self.0.as_raw_fd(), info.as_mut_ptr().cast(), size) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(out),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            if n as usize != size {
                return Ok(out);
            }
            // SAFETY: the kernel filled the whole record.
            let info = unsafe { info.assume_init() };
            out.push(Received {
                signal: info.ssi_signo as i32,
                code: info.ssi_code,
                pid: info.ssi_pid,
            });
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An eventfd(2): one thread rings it, another polls it.
pub struct Bell(OwnedFd);

impl Bell {
    /// A new, silent bell.
    pub fn new() -> io::Result<Bell> {
        // SAFETY: no pointers involved.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: eventfd returned a new descriptor that nothing else owns.
        Ok(Bell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the bell readable.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`. A full counter (impossible here) would
        // only mean the bell is already readable.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
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

/// Sends `signal` to process `pid`, or to process group `pid` when `group`.
pub fn send_signal(pid: u32, signal: libc::c_int, group: bool) {
    let target = if group { -(pid as libc::pid_t) } else { pid as libc::pid_t };
    // SAFETY: no pointers involved; a vanished target only yields ESRCH.
    unsafe { libc::kill(target, signal) };
}

/// Whether this process is in the foreground process group of its controlling terminal,
/// i.e. whether Ctrl-C at that terminal reaches it (and every process of its group).
pub fn in_terminal_foreground() -> bool {
    // SAFETY: the path is a NUL-terminated literal; the descriptor is closed below.
    let fd = unsafe {
        libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
    };
    if fd < 0 {
        return false; // no controlling terminal
    }
    // SAFETY: `fd` is open; it is closed exactly once, here.
    unsafe {
        let foreground = libc::tcgetpgrp(fd);
        libc::close(fd);
        foreground >= 0 && foreground == libc::getpgrp()
    }
}

/// In a just-forked child, before exec: unblock every signal, ask for SIGKILL when the
/// parent dies, then make sure the parent (`parent`) did not die before that request
/// took effect.
///
/// Only async-signal-safe calls, no allocation: it runs between fork and exec.
pub fn die_with_parent(parent: u32) -> io::Result<()> {
    let none = SignalSet::of(&[]);
    // SAFETY: the set is initialised; a null old-set pointer is allowed. The
    // supervisor's blocked signals must not stay blocked in CMD.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &none.0, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number, no pointers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } as u32 != parent {
        // Reparented: the supervisor is already gone, and the death signal with it.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Makes this process the child subreaper of everything it starts: a descendant whose
/// parent exits is re-parented to this process (not to init), so that it stays below
/// it in the process tree (see [`descendants`]) and is reaped by it.
pub fn become_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a flag, no pointers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps every child that has exited, without waiting: their pids and wait statuses.
pub fn reap_children() -> io::Result<Vec<(u32, i32)>> {
    let mut out = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status it is given; -1 means any child.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return Ok(out),
            p if p > 0 => out.push((p as u32, status)),
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ECHILD) => return Ok(out),
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

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
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

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's size on `fd` as (columns, rows), if known.
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
