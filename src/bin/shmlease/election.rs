//! `leader`, `observe`, `request-release` and `revoke --grace`: leader election from the
//! command line. An election is the lease on its name: its leader is the lease's holder
//! and its term the grant's fencing token, so `run NAME` is a candidate.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use shmlease::election::Change;
use shmlease::{Error, Leader, LeaseInfo, LeaseKind, LeaseState, LeaseTable, LostReason};

use crate::duration::human;
use crate::os::{self, Bell, SignalFd, SignalSet};
use crate::{exit, explain, output, printable, Failure, TableArg};

/// Extra `leader --help` text.
pub const LEADER_HELP: &str = "\
The leader of NAME is whoever holds the lease NAME (`shmlease run NAME -- CMD` is a
candidate: see `shmlease run --help`, hot standby); its term is the lease's fencing
token, which only grows.

Prints one line: the term, the leading process (pid and label), since when it leads and
how long its lease lasts unless renewed. Exit status 0 when someone leads, 1 when nobody
does (so `if shmlease leader NAME >/dev/null; then ...` works), as with --json:
  {\"name\": \"sched\", \"leading\": true, \"term\": 17, \"pid\": 4242, \"label\": \"node-a\",
   \"detached\": false, \"acquired_at\": \"2026-12-01T11:30:00.123Z\",
   \"expires_at\": \"...\", \"remaining_ms\": 6800}
Nobody leading: \"leading\": false, the last term (0: never), and null pid, label and times.
A leader whose process died is shown until a candidate takes over (at once, if one is
waiting) or its lease expires.";

/// Extra `observe --help` text.
pub const OBSERVE_HELP: &str = "\
Prints the state at start, then one line per change of leader (a new term, or nobody
leading any more), as it happens: woken by the change itself, not by polling. Each line
is flushed at once, so `shmlease observe NAME | while read ...` sees it at once. Runs
until interrupted (Ctrl-C, SIGTERM, SIGHUP: exit status 0), until --count lines are
printed, or until the pipe it writes to is closed (`| head -3`).

Terms only grow. An observer that falls behind (several terms began and ended while it
was busy or stopped) reports the latest state and how many terms it skipped, never a
silent gap: \"skipped\": N (terms missed since the previous line), or \"skipped\":
\"unknown\" when the name was idle, forgotten and bound again meanwhile. With --json,
one object per line (JSON lines), the fields of `leader --json` plus \"at\" (when the
change was seen) and \"skipped\" when terms were missed.";

/// Extra `request-release --help` text.
pub const REQUEST_RELEASE_HELP: &str = "\
Asks the holder of NAME to release it: a cooperative hand-over. Nothing changes about
who holds the lease or until when; the holder learns of the request (`run` passes it to
CMD as SIGTERM, see run --on-request) and releases when it is done. To force it after a
while, use `shmlease revoke NAME --grace DUR`. Asking twice is asking once.

Prints the token of the grant asked; a lease nobody holds is reported on stderr (exit
status 0, nothing asked). With --token, only that grant is asked: exit status 79 if it
is not the live one. On a name with permits or a shared name, each holder is asked (of
a shared name: its shared holders and its exclusive holder; each token printed on a
line of its own; --json: \"tokens\", every one, and \"token\", the latest), or with
--token the one holder of that grant.";

/// `revoke --grace` waits for the lease to be released at most this long, in steps of
/// the observer's own wake-ups: no polling.
fn wait_for_end(t: &LeaseTable, name: &str, token: u64, grace: Duration) -> Result<bool, Error> {
    let election = t.election(name)?;
    let mut observer = election.observe();
    let start = Instant::now();
    loop {
        let Some(left) = grace.checked_sub(start.elapsed()).filter(|l| !l.is_zero()) else {
            return Ok(false);
        };
        match observer.next_change(Some(left))? {
            Some(change) if change.leader.as_ref().map(|l| l.term) != Some(token) => {
                return Ok(true)
            }
            _ => {}
        }
    }
}

/// One leader (or nobody), as `leader --json` and `observe --json` print it.
#[derive(Serialize)]
struct LeaderJson<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    leading: bool,
    term: u64,
    pid: Option<u32>,
    label: Option<String>,
    detached: Option<bool>,
    acquired_at: Option<String>,
    expires_at: Option<String>,
    remaining_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<Skipped>,
}

/// Terms an observer missed: a number, or `"unknown"`.
#[derive(Serialize)]
#[serde(untagged)]
enum Skipped {
    Count(u32),
    Unknown(&'static str),
}

impl<'a> LeaderJson<'a> {
    fn new(name: &'a str, term: u64, leader: Option<&Leader>) -> LeaderJson<'a> {
        let holder = leader.and_then(|l| l.holder);
        LeaderJson {
            name,
            at: None,
            leading: leader.is_some(),
            term,
            pid: holder.map(|h| h.pid),
            label: holder.map(|h| h.label.as_str().into_owned()),
            detached: holder.map(|h| h.detached),
            acquired_at: leader.and_then(|l| l.since).map(output::rfc3339),
            expires_at: leader.and_then(|l| l.expires_at).map(output::rfc3339),
            remaining_ms: leader.map_or(0, |l| l.remaining.as_millis() as u64),
            skipped: None,
        }
    }
}

/// "term 17: pid 4242 (node-a) leads, since ... (3.2s ago), 6.8s left".
fn leader_text(leader: &Leader) -> String {
    let who = match &leader.holder {
        Some(h) => h.to_string(),
        None => "a process the table does not name".into(),
    };
    let since = match leader.since {
        Some(t) => {
            let ago = SystemTime::now().duration_since(t).unwrap_or_default();
            format!(", since {} ({} ago)", output::rfc3339(t), human(ago))
        }
        None => String::new(),
    };
    printable(&format!(
        "term {}: {who} leads{since}, {} left",
        leader.term,
        human(leader.remaining)
    ))
}

/// The lease on `name` if the name has permits or is shared (several holders, none of
/// them a leader).
fn several_holders(
    t: &LeaseTable,
    table: &TableArg,
    name: &str,
) -> Result<Option<LeaseInfo>, Failure> {
    let info = t.get(name).map_err(|e| explain(&e, Some(name), table))?;
    Ok(info.filter(|i| i.kind != LeaseKind::Exclusive))
}

/// `leader` and `observe` on a name with permits or a shared name: an election has one
/// leader.
fn not_an_election(info: &LeaseInfo, table: &TableArg) -> Failure {
    let kind = match info.kind {
        LeaseKind::Shared => "is a shared name: up to 64 shared holders have it at once".into(),
        k => format!("is in use with --permits {n}: up to {n} hold it at once", n = k.permits()),
    };
    Failure::new(
        exit::WRONG_KIND,
        format!(
            "lease {:?} {kind}, so none of them leads; an election is an exclusive lease (see its holders with `shmlease{} get {}`)",
            info.name,
            table.flag(),
            crate::shell_word(&info.name)
        ),
    )
}

/// `leader NAME`: exit 0 and the leader, or exit 1 and "nobody leads".
pub fn leader(t: &LeaseTable, table: &TableArg, name: &str, json: bool) -> Result<u8, Failure> {
    let fail = |e: Error| explain(&e, Some(name), table);
    if let Some(info) = several_holders(t, table, name)? {
        return Err(not_an_election(&info, table));
    }
    let election = t.election(name).map_err(fail)?;
    let leader = election.leader().map_err(fail)?;
    let term = match &leader {
        Some(l) => l.term,
        None => t.get(name).map_err(fail)?.map_or(0, |i| i.token),
    };
    if json {
        crate::print_json(&LeaderJson::new(name, term, leader.as_ref()))?;
    } else {
        let line = match &leader {
            Some(l) => leader_text(l),
            None if term == 0 => format!("nobody leads {:?} (it never had a leader)", name),
            None => format!("nobody leads {:?} (the last term was {term})", name),
        };
        crate::print(&format!("{}\n", printable(&line)))?;
    }
    Ok(if leader.is_some() { 0 } else { exit::NOBODY_LEADS })
}

/// `observe NAME`: prints changes until interrupted or `count` lines are out.
pub fn observe(
    t: &LeaseTable,
    table: &TableArg,
    name: &str,
    json: bool,
    count: Option<u64>,
) -> Result<u8, Failure> {
    if let Some(info) = several_holders(t, table, name)? {
        return Err(not_an_election(&info, table));
    }
    let os_failure =
        |doing: &str, e: std::io::Error| Failure::new(exit::OS, format!("{doing}: {e}"));
    // Ctrl-C, kill and hangup end the stream cleanly (the observer blocks on a futex
    // in a thread of its own; the main thread waits for a signal or for it to finish).
    let set = SignalSet::of(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    set.block().map_err(|e| os_failure("blocking signals", e))?;
    let signals = SignalFd::new(&set).map_err(|e| os_failure("creating a signalfd", e))?;
    let done = std::sync::Arc::new(Bell::new().map_err(|e| os_failure("creating an eventfd", e))?);
    let (tx, rx) = mpsc::channel();
    {
        let (t, name, done) = (t.clone(), name.to_owned(), std::sync::Arc::clone(&done));
        std::thread::Builder::new()
            .name("observer".into())
            .spawn(move || {
                let _ = tx.send(print_changes(&t, &name, json, count));
                done.ring();
            })
            .map_err(|e| os_failure("starting a thread", e))?;
    }
    let mut fds = vec![signals.as_raw_fd(), done.as_raw_fd()];
    let stdout = std::io::stdout().as_raw_fd();
    if os::is_pipe(stdout) {
        fds.push(stdout); // its reader gone (`observe NAME | head -1`): POLLERR
    }
    loop {
        let ready =
            os::poll_readable(&fds, None).map_err(|e| os_failure("waiting for changes", e))?;
        if ready[0] || ready.get(2) == Some(&true) {
            return Ok(0); // every line printed so far is flushed
        }
        if ready[1] {
            return match rx.recv() {
                Ok(Err(e)) => Err(explain(&e, Some(name), table)),
                _ => Ok(0),
            };
        }
    }
}

/// The observer's loop: one flushed line per change; returns when `count` lines are
/// printed or stdout is closed.
fn print_changes(t: &LeaseTable, name: &str, json: bool, count: Option<u64>) -> Result<(), Error> {
    let election = t.election(name)?;
    let mut observer = election.observe();
    let mut printed = 0u64;
    while count.map_or(true, |c| printed < c) {
        let Some(change) = observer.next_change(None)? else { continue };
        let line = if json { change_json(name, &change) } else { change_text(&change) };
        let mut out = std::io::stdout().lock();
        if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
            return Ok(()); // the reader is gone (`observe NAME | head -1`)
        }
        printed += 1;
    }
    Ok(())
}

fn change_json(name: &str, change: &Change) -> String {
    let mut row = LeaderJson::new(name, change.term, change.leader.as_ref());
    row.at = Some(output::rfc3339(SystemTime::now()));
    row.skipped = match change.skipped {
        Some(0) => None,
        Some(n) => Some(Skipped::Count(n)),
        None => Some(Skipped::Unknown("unknown")),
    };
    let mut line = serde_json::to_string(&row).expect("plain data encodes");
    line.push('\n');
    line
}

fn change_text(change: &Change) -> String {
    let state = match &change.leader {
        Some(l) => leader_text(l),
        None if change.term == 0 => "nobody leads (it never had a leader)".into(),
        None => format!("term {}: ended, nobody leads", change.term),
    };
    let skipped = match change.skipped {
        Some(0) => String::new(),
        Some(1) => "; skipped 1 term".into(),
        Some(n) => format!("; skipped {n} terms"),
        None => "; skipped an unknown number of terms".into(),
    };
    format!("{}  {state}{skipped}\n", output::rfc3339(SystemTime::now()))
}

/// `request-release --json` output.
#[derive(Serialize)]
struct Requested<'a> {
    name: &'a str,
    requested: bool,
    /// The latest token asked.
    token: Option<u64>,
    /// Every token asked (several for a name with permits), oldest first.
    tokens: Vec<u64>,
}

/// `request-release NAME [--token T]`.
pub fn request_release(
    t: &LeaseTable,
    table: &TableArg,
    name: &str,
    token: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let fail = |e: Error| match token {
        Some(token) => crate::by_token_failure(&e, crate::TokenOp::Request, name, token, t, table),
        None => explain(&e, Some(name), table),
    };
    let asked: Vec<u64> = match (token, several_holders(t, table, name)?) {
        (None, Some(info)) => ask_each(t, name, &info).map_err(fail)?,
        _ => t.request_release(name, token).map_err(fail)?.into_iter().collect(),
    };
    if json {
        crate::print_json(&Requested {
            name,
            requested: !asked.is_empty(),
            token: asked.iter().max().copied(),
            tokens: asked,
        })?;
    } else if asked.is_empty() {
        crate::say(format_args!("lease {name:?} is not held; nothing to ask"));
    } else {
        crate::print(&asked.iter().map(|t| format!("{t}\n")).collect::<String>())?;
    }
    Ok(())
}

/// Asks each holder of a name with permits or a shared name, by token; returns the
/// tokens asked.
fn ask_each(t: &LeaseTable, name: &str, info: &LeaseInfo) -> Result<Vec<u64>, Error> {
    crate::each_grant(info, |token| t.request_release(name, Some(token)).map(drop))
}

/// `revoke --grace --json` output.
#[derive(Serialize)]
struct Graced<'a> {
    name: &'a str,
    token: Option<u64>,
    /// "released", "expired", "revoked" (by someone else meanwhile, or by us after the
    /// grace: then `revoked` is true), or "not_held".
    outcome: &'static str,
    revoked: bool,
    waited_ms: u64,
}

/// `revoke NAME --grace DUR [--token T]`: asks the holder to release, and revokes the
/// same grant only if it is still live after `grace`.
pub fn revoke_with_grace(
    t: &LeaseTable,
    table: &TableArg,
    name: &str,
    token: Option<u64>,
    grace: Duration,
    json: bool,
) -> Result<(), Failure> {
    let fail = |e: Error| explain(&e, Some(name), table);
    if let Some(info) = several_holders(t, table, name)? {
        return revoke_grants_with_grace(t, table, &info, token, grace, json);
    }
    let asked = t.request_release(name, token).map_err(|e| match token {
        Some(token) => crate::by_token_failure(&e, crate::TokenOp::Revoke, name, token, t, table),
        None => fail(e),
    })?;
    let start = Instant::now();
    let Some(asked) = asked else {
        if json {
            crate::print_json(&Graced {
                name,
                token: None,
                outcome: "not_held",
                revoked: false,
                waited_ms: 0,
            })?;
        } else {
            crate::say(format_args!("lease {name:?} was not held; nothing to revoke"));
        }
        return Ok(());
    };
    let mut ended = wait_for_end(t, name, asked, grace).map_err(fail)?;
    let mut revoked = false;
    if !ended {
        match t.revoke_token(name, asked) {
            Ok(()) => revoked = true,
            // It ended just as the grace ran out.
            Err(Error::Lost { .. }) => ended = true,
            Err(e) => return Err(fail(e)),
        }
    }
    let waited = start.elapsed();
    let outcome = if revoked {
        "revoked"
    } else {
        match t.get(name).map_err(fail)? {
            Some(i) if i.token == asked && i.state == LeaseState::Expired => "expired",
            Some(i) if i.token == asked && i.state == LeaseState::Revoked => "revoked",
            _ => "released",
        }
    };
    debug_assert!(ended || revoked);
    if json {
        return crate::print_json(&Graced {
            name,
            token: Some(asked),
            outcome,
            revoked,
            waited_ms: waited.as_millis() as u64,
        });
    }
    let what = match outcome {
        "revoked" if revoked => {
            format!("still held after the {} grace; revoked it", human(grace))
        }
        "revoked" => format!("revoked by someone else {} after the request", human(waited)),
        "expired" => format!("expired {} after the request", human(waited)),
        _ => format!("released {} after the request", human(waited)),
    };
    crate::print(&format!("{}\n", printable(&format!("lease {name:?} (token {asked}): {what}"))))
}

/// How often `revoke --grace` looks at the grants of a name with permits or a shared
/// name (there is no observer of a single grant to wake it).
const PERMIT_LOOK: Duration = Duration::from_millis(10);

/// `revoke --grace --json` of a name with permits or a shared name.
#[derive(Serialize)]
struct GracedGrants<'a> {
    name: &'a str,
    holders: Vec<GracedGrant>,
}

/// What became of one grant asked to release.
#[derive(Serialize)]
struct GracedGrant {
    token: u64,
    /// "released", "expired", "revoked" (by someone else, or by us after the grace:
    /// then `revoked` is true), or "ended" (how is not known: its permit was taken
    /// again since).
    outcome: &'static str,
    revoked: bool,
    waited_ms: u64,
}

/// `revoke --grace` of a name with permits or a shared name: asks each holder (or the
/// one with `token`), waits until each has let go or `grace` has passed, and revokes
/// the grants still live.
fn revoke_grants_with_grace(
    t: &LeaseTable,
    table: &TableArg,
    info: &LeaseInfo,
    token: Option<u64>,
    grace: Duration,
    json: bool,
) -> Result<(), Failure> {
    let name = info.name.as_str();
    let fail = |e: Error| explain(&e, Some(name), table);
    let by_token = |e: Error, token| {
        crate::by_token_failure(&e, crate::TokenOp::Revoke, name, token, t, table)
    };
    let asked = match token {
        Some(token) => {
            t.request_release(name, Some(token)).map_err(|e| by_token(e, token))?;
            vec![token]
        }
        None => ask_each(t, name, info).map_err(fail)?,
    };
    let start = Instant::now();
    // When each asked grant was seen gone.
    let mut gone: Vec<Option<Duration>> = vec![None; asked.len()];
    loop {
        let live: Vec<u64> = t
            .get(name)
            .map_err(fail)?
            .map(|i| i.grants.iter().map(|g| g.token).collect())
            .unwrap_or_default();
        for (when, token) in gone.iter_mut().zip(&asked) {
            if when.is_none() && !live.contains(token) {
                *when = Some(start.elapsed());
            }
        }
        let elapsed = start.elapsed();
        if gone.iter().all(Option::is_some) || elapsed >= grace {
            break;
        }
        std::thread::sleep(PERMIT_LOOK.min(grace - elapsed));
    }
    let mut holders = Vec::new();
    for (&token, when) in asked.iter().zip(gone) {
        let (outcome, revoked, waited) = match when {
            Some(waited) => (ended_how(t, name, token), false, waited),
            None => match t.revoke_token(name, token) {
                Ok(()) => ("revoked", true, start.elapsed()),
                // It ended just as the grace ran out.
                Err(Error::Lost { .. }) => (ended_how(t, name, token), false, start.elapsed()),
                Err(e) => return Err(fail(e)),
            },
        };
        holders.push(GracedGrant { token, outcome, revoked, waited_ms: waited.as_millis() as u64 });
    }
    if json {
        return crate::print_json(&GracedGrants { name, holders });
    }
    if holders.is_empty() {
        crate::say(format_args!("lease {name:?} was not held; nothing to revoke"));
        return Ok(());
    }
    let mut out = String::new();
    for h in &holders {
        let waited = human(Duration::from_millis(h.waited_ms));
        let what = match h.outcome {
            "revoked" if h.revoked => {
                format!("still held after the {} grace; revoked it", human(grace))
            }
            "revoked" => format!("revoked by someone else {waited} after the request"),
            "expired" => format!("expired {waited} after the request"),
            "ended" => format!("ended {waited} after the request"),
            _ => format!("released {waited} after the request"),
        };
        out.push_str(&printable(&format!("lease {name:?} (token {}): {what}", h.token)));
        out.push('\n');
    }
    crate::print(&out)
}

/// How a grant of a name with permits or a shared name that is no longer live ended, as far as the
/// table still tells (asking a grant that ended changes nothing; the refusal says why).
fn ended_how(t: &LeaseTable, name: &str, token: u64) -> &'static str {
    match t.request_release(name, Some(token)) {
        Err(Error::Lost { reason: LostReason::Released, .. }) => "released",
        Err(Error::Lost { reason: LostReason::Expired, .. }) => "expired",
        Err(Error::Lost { reason: LostReason::Revoked, .. }) => "revoked",
        _ => "ended",
    }
}
