//! `shmlease watch`: `ls`, redrawn in place every interval until `q` or Ctrl-C, on the
//! terminal's alternate screen, which is restored on the way out.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use shmlease::LeaseTable;

use crate::os::{self, RawTerminal, SignalFd, SignalSet};
use crate::{exit, list, output, Failure, TableArg};

/// Leaves the alternate screen and shows the cursor again when dropped.
struct Screen;

impl Screen {
    fn enter() -> Screen {
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Screen
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
    }
}

/// Runs the live view until the user quits.
pub fn watch(
    t: &LeaseTable,
    table: &TableArg,
    interval: Duration,
    all: bool,
) -> Result<(), Failure> {
    let stdout = std::io::stdout().as_raw_fd();
    let stdin = std::io::stdin().as_raw_fd();
    if !os::is_terminal(stdout) {
        return Err(Failure::new(
            exit::USAGE,
            "watch needs a terminal and stdout is not one; use `shmlease ls` (or `ls --json`) instead",
        ));
    }
    let os_failure =
        |doing: &str, e: std::io::Error| Failure::new(exit::OS, format!("{doing}: {e}"));
    // Ctrl-C, kill and hangup become events to quit on, so the terminal is restored.
    let set = SignalSet::of(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGWINCH]);
    set.block().map_err(|e| os_failure("blocking signals", e))?;
    let signals = SignalFd::new(&set).map_err(|e| os_failure("creating a signalfd", e))?;
    let keys = os::is_terminal(stdin);
    let _raw = if keys {
        Some(RawTerminal::enter(stdin).map_err(|e| os_failure("setting up the terminal", e))?)
    } else {
        None
    };
    let _screen = Screen::enter();
    let mut fds = vec![signals.as_raw_fd()];
    if keys {
        fds.push(stdin);
    }
    loop {
        let leases = list(t, all, table)?;
        let (cols, rows) = os::terminal_size(stdout).unwrap_or((80, 24));
        let info = t.info();
        let title = format!(
            "shmlease watch  {}  {} held, {} slots  every {}  {}  (q quits)",
            crate::printable(&table.export),
            info.held,
            info.capacity,
            crate::duration::human(interval),
            &output::rfc3339(SystemTime::now())[11..19],
        );
        let body = output::leases_text(&leases, all);
        let mut frame = String::from("\x1b[H\x1b[2J");
        for line in std::iter::once(title.as_str())
            .chain(std::iter::once(""))
            .chain(body.lines())
            .take(rows as usize - 1)
        {
            frame.extend(line.chars().take(cols as usize));
            frame.push('\n');
        }
        if body.lines().count() + 2 > rows as usize - 1 {
            frame.push_str(&format!("... {} more", body.lines().count() + 3 - rows as usize));
        }
        print!("{frame}");
        let _ = std::io::stdout().flush();

        let ready = os::poll_readable(&fds, Some(interval))
            .map_err(|e| os_failure("waiting for input", e))?;
        if ready[0] {
            let received = signals.read().map_err(|e| os_failure("reading signals", e))?;
            if received.iter().any(|r| r.signal != libc::SIGWINCH) {
                return Ok(());
            }
        }
        if keys && ready[1] {
            let typed = os::read_some(stdin);
            // q, Q, Ctrl-C (should ISIG be off), Ctrl-D, or end of input.
            if typed.is_empty() || typed.iter().any(|b| matches!(b, b'q' | b'Q' | 3 | 4)) {
                return Ok(());
            }
        }
    }
}
