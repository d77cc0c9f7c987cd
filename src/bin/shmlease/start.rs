//! The tool's entry point: the C `main` (the crate is `#![no_main]`), doing for the tool
//! what the standard library's start-up does for every program, less its
//! stack-overflow handler.
//!
//! That handler's set-up was a twentieth of `shmlease run NAME -- true` (50 µs, 19
//! system calls; BENCHMARKS.md, "The CLI as quick as flock(1)"): to tell a stack
//! overflow from another crash, std learns the main thread's stack from glibc, which
//! reads all of `/proc/self/maps`, and gives the main thread and every thread it starts
//! an alternate signal stack (mapped, guarded, registered, unmapped at the thread's
//! end). Without it a stack overflow still ends the tool, by SIGSEGV, but without std's
//! "has overflowed its stack" line (and with SIGSEGV's status, not SIGABRT's).
//!
//! Kept, as std does them: descriptors 0, 1 and 2 opened on `/dev/null` where they are
//! closed (or the table's descriptor could become stdout); SIGPIPE ignored (a closed
//! pipe is an error to report, and `run` gives CMD the default back); a panic's
//! message, then exit code 101; stdout flushed at the end. Lost besides the message:
//! the main thread's name in a panic's message (`'<unnamed>'`, not `'main'`).

use std::os::raw::{c_char, c_int};

/// Called by the C runtime with the command line, which `std::env::args_os` reads (on
/// glibc std takes it from its own initialiser, not from here).
#[no_mangle]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    open_standard_descriptors();
    // SAFETY: sets one signal's disposition; nothing else runs yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = std::panic::catch_unwind(crate::shmlease).unwrap_or_else(|payload| {
        // The message was printed by the panic hook; dropping the payload could panic.
        std::mem::forget(payload);
        101
    });
    // Flushes stdout (std's clean-up) and exits.
    std::process::exit(code.into())
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed, as std's start-up
/// does, so that the first files the tool opens never become its stdin, stdout or
/// stderr; aborts if it cannot.
fn open_standard_descriptors() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    loop {
        // SAFETY: `fds` is an array of three pollfd records; a zero timeout never blocks.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0 {
            break;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // poll refused (descriptor limit, memory): ask each descriptor instead.
            Some(libc::EINVAL | libc::EAGAIN | libc::ENOMEM) => {
                for pfd in &mut fds {
                    // SAFETY: F_GETFD only inspects the descriptor.
                    let closed = unsafe { libc::fcntl(pfd.fd, libc::F_GETFD) } == -1
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
                    pfd.revents = if closed { libc::POLLNVAL } else { 0 };
                }
                break;
            }
            _ => std::process::abort(),
        }
    }
    for _ in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
        // SAFETY: a NUL-terminated path; takes the lowest free descriptor, the closed one.
        if unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
            std::process::abort();
        }
    }
}
