//! `shmlease`: run commands under a lease, and inspect and administer lease tables.
//!
//! Parsing, printing and exit codes only; every lease operation is the library's.
//! The reference for users is `shmlease man` (the same as `docs/cli.md`, less the
//! examples).

// The entry point is `start::main`, not std's (see there why).
#![cfg_attr(not(test), no_main)]

mod duration;
mod election;
mod man;
mod os;
mod output;
mod run;
#[cfg(not(test))]
mod start;
mod watch;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;
use shmlease::{
    AcquireOptions, Error, Lease, LeaseInfo, LeaseKind, LeaseTable, Location, LostReason,
    RemoveOptions, TableOptions,
};

/// Exit codes. Documented in `--help` (below) and in docs/cli.md; keep all three in step.
pub mod exit {
    /// `leader`: nobody leads (like grep's "no match": an answer, not an error).
    pub const NOBODY_LEADS: u8 = 1;
    /// Bad arguments: unknown option, bad duration, invalid name, label, TTL or location.
    pub const USAGE: u8 = 64;
    /// The name is in use as another kind than this command asked for: with another
    /// number of permits (`--permits`; none is an exclusive lease; every user of a name
    /// must give the same N), or shared (`--shared`) where it has permits, or the other
    /// way round.
    pub const WRONG_KIND: u8 = 65;
    /// No lease table at the location.
    pub const NO_TABLE: u8 = 66;
    /// The table is full, or this machine cannot run shmlease.
    pub const UNAVAILABLE: u8 = 69;
    /// An operating-system call the tool itself makes failed.
    pub const OS: u8 = 71;
    /// `create`: something already exists at the location.
    pub const EXISTS: u8 = 73;
    /// Not a lease table, an incompatible or corrupt one, an I/O error.
    pub const TABLE: u8 = 74;
    /// The lease is held by someone else (`--wait` ran out, or `-n`).
    pub const HELD: u8 = 75;
    /// The table is busy for a moment (its lock held too long, or names churning in a
    /// full table): nothing is wrong, try again. The same code as [`HELD`]: both mean
    /// "not now, try again".
    pub const BUSY: u8 = HELD;
    /// `rm`: the table has live leases, so it was not removed.
    pub const IN_USE: u8 = 76;
    /// The table's owner or mode is refused, or the OS denied access.
    pub const PERMISSION: u8 = 77;
    /// `renew`/`release --token`: the lease is bound to its live holder process, which
    /// alone renews and releases it (`revoke` takes it away).
    pub const BOUND: u8 = 78;
    /// The grant named is not the live one: revoked, expired, released or taken over
    /// (`run`: lost while CMD ran), or its token or name was never issued.
    pub const LOST: u8 = 79;
    /// `run`: CMD exists but could not be executed.
    pub const CANNOT_EXECUTE: u8 = 126;
    /// `run`: CMD was not found.
    pub const NOT_FOUND: u8 = 127;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0        success (run: CMD's own status, 128+N if CMD was killed by signal N)
  1        leader: nobody leads
  64       usage error: bad option, duration, name, label, TTL or location (not UTF-8)
  65       the name is in use as another kind than this command asked for: with
           another --permits N (every user of a name must give the same N; none is an
           exclusive lease), or --permits on a shared name, --shared on one with permits
  66       no lease table at the location
  69       table full, or platform unsupported
  71       an operating-system call failed
  73       create: the location already exists
  74       not a lease table, incompatible or corrupt table, I/O error
  75       try again: lease held by someone else (timed out waiting, or -n; run:
           --conflict-exit-code), or the table busy for a moment
  76       rm: the table has live leases; not removed (rm --force removes it anyway)
  77       permission refused (owner, mode, or the OS)
  78       renew/release --token: the lease is bound to its live holder process
           (use revoke to take it away)
  79       not the live grant: lost (revoked, expired, released, taken over; run: while
           CMD ran), or a token or name never issued
  126/127  run: CMD could not be executed / was not found

The table is -t/--table, else $SHMLEASE_TABLE, else the shared-memory segment
shmlease-<uid> (created on first use). Durations: 250ms, 5s, 1m30s, 2h; a TTL is 1µs
to 365d (run: at least 250ms). Lease names are 1 to 64 bytes of UTF-8 (no NUL), labels at most 8 bytes.

Each command's options: shmlease COMMAND --help. The whole manual, every command in one
page: shmlease man | man -l -  (to install it for `man shmlease`:
shmlease man > /usr/local/share/man/man1/shmlease.1)";

/// Named, time-bound leases for the processes of this host: exclusive, up to N holders
/// at once (--permits N), or shared holders and one exclusive holder (--shared); taken
/// in arrival order with --fair.
///
/// Leases live in a lease table: a file, or a POSIX shared-memory segment. Every grant
/// gets a fencing token that only ever grows for its name.
#[derive(Parser, Debug)]
#[command(name = "shmlease", version, after_help = EXIT_CODES_HELP, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    globals: Globals,

    #[command(subcommand)]
    command: Command,
}

/// The options every command takes: which table, and which tables to accept.
#[derive(clap::Args, Debug)]
struct Globals {
    /// Lease table: a path (anything with a '/') or a shared-memory name
    /// [default: $SHMLEASE_TABLE, else shmlease-<uid>, created on first use]
    #[arg(
        short = 't',
        long = "table",
        global = true,
        value_name = "LOCATION",
        help_heading = "Table"
    )]
    table: Option<OsString>,

    /// Accept a table owned by another user (who could rewrite it under you)
    #[arg(long, global = true, help_heading = "Table")]
    allow_foreign_owner: bool,

    /// Accept (or create) a table every user may write (anyone could forge leases)
    #[arg(long, global = true, help_heading = "Table")]
    allow_world_writable: bool,
}

impl Cli {
    /// The command line, parsed: by [`run::RunArgs::parse_quickly`] if it can, else by
    /// clap.
    fn parse_args() -> Result<Cli, clap::Error> {
        let args: Vec<OsString> = std::env::args_os().collect();
        match run::RunArgs::parse_quickly(&args) {
            Some(cli) => Ok(cli),
            None => Cli::try_parse_from(args),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a lease table
    Create {
        /// Number of slots: names that can have a lease at once (128 bytes each; 1 to
        /// 16777216)
        #[arg(long, default_value = "4096", value_parser = parse_capacity, allow_hyphen_values = true)]
        capacity: u32,
        /// Permission bits, in octal (e.g. 0660 to share with the group)
        #[arg(long, default_value = "0600", value_parser = parse_mode)]
        mode: u32,
    },
    /// Remove a lease table, unless leases in it are live
    #[command(after_help = RM_HELP)]
    Rm {
        /// Remove it without checking for live leases (also a table whose leases cannot
        /// be read: corrupt, or of another version); says what that risks
        #[arg(long)]
        force: bool,
    },
    /// Show facts and counters about the table
    Info {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List held leases
    #[command(visible_alias = "list", after_help = LS_HELP)]
    Ls {
        /// Also list names whose lease is free, expired or revoked
        #[arg(short, long)]
        all: bool,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Show one name's lease and every holder it has
    #[command(after_help = LS_HELP)]
    Get {
        /// Lease name (1 to 64 bytes of UTF-8)
        name: String,
        /// Print JSON (null for a name the table does not know)
        #[arg(long)]
        json: bool,
    },
    /// Show the leases live, refreshing (q or Ctrl-C quits)
    Watch {
        /// Time between refreshes
        #[arg(short, long, default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true)]
        interval: Duration,
        /// Also show names whose lease is free, expired or revoked
        #[arg(short, long)]
        all: bool,
    },
    /// Take a detached lease (it outlives this command) and print its token
    #[command(after_help = ACQUIRE_HELP)]
    Acquire {
        /// Lease name (1 to 64 bytes of UTF-8)
        name: String,
        /// How long the lease lasts unless renewed (1µs to 365d)
        #[arg(long, value_parser = duration::parse_ttl, value_name = "DUR", allow_hyphen_values = true)]
        ttl: Duration,
        /// Wait this long for a held lease ("forever" to wait indefinitely) [default: no wait]
        #[arg(long, value_parser = parse_wait, value_name = "DUR", allow_hyphen_values = true)]
        wait: Option<Wait>,
        /// Label shown to others (at most 8 bytes)
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        kind: Kind,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Extend a detached lease (from `acquire`) to TTL from now
    ///
    /// A lease bound to a live process (held by `run`, say) is refused with exit 78:
    /// only its holder renews it.
    Renew {
        /// Lease name (1 to 64 bytes of UTF-8)
        name: String,
        /// The token `acquire` printed
        #[arg(long)]
        token: u64,
        /// New time to live, from now (1µs to 365d)
        #[arg(long, value_parser = duration::parse_ttl, value_name = "DUR", allow_hyphen_values = true)]
        ttl: Duration,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Release a detached lease (from `acquire`)
    ///
    /// A lease bound to a live process (held by `run`, say) is refused with exit 78:
    /// only its holder releases it; `revoke` takes it away.
    Release {
        /// Lease name (1 to 64 bytes of UTF-8)
        name: String,
        /// The token `acquire` printed
        #[arg(long)]
        token: u64,
    },
    /// Revoke a lease, whoever holds it (its holder learns it lost the lease); every
    /// holder of a name with permits or of a shared name
    #[command(after_help = REVOKE_HELP)]
    Revoke {
        /// Lease name (1 to 64 bytes of UTF-8)
        name: String,
        /// Revoke only the grant with this token (one holder of a name with permits or of a
        /// shared name)
        #[arg(long)]
        token: Option<u64>,
        /// Ask the holder to release first, and revoke only if the same grant is still
        /// held after this long
        #[arg(long, value_parser = duration::parse, value_name = "DUR", allow_hyphen_values = true)]
        grace: Option<Duration>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Ask the holder of a lease (each holder of a name with permits or of a shared name)
    /// to release it (a cooperative hand-over)
    #[command(after_help = election::REQUEST_RELEASE_HELP)]
    RequestRelease {
        /// Lease name (1 to 64 bytes of UTF-8)
        name: String,
        /// Ask only the grant with this token (one holder of a name with permits or of a
        /// shared name)
        #[arg(long)]
        token: Option<u64>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show who leads the election NAME (holds lease NAME); exit 1 if nobody does
    #[command(after_help = election::LEADER_HELP)]
    Leader {
        /// Election (lease) name (1 to 64 bytes of UTF-8)
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a line for each change of leader of NAME, as it happens
    #[command(after_help = election::OBSERVE_HELP)]
    Observe {
        /// Election (lease) name (1 to 64 bytes of UTF-8)
        name: String,
        /// Print JSON lines
        #[arg(long)]
        json: bool,
        /// Stop after N lines (the first is the state at start)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Run CMD while holding the lease; stop it if the lease is lost
    #[command(after_help = format!("{}\n\n{KINDS_HELP}", run::AFTER_HELP))]
    Run(run::RunArgs),
    /// Print shell completions
    Completions {
        /// Shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the manual: every command in one page (roff; view with `shmlease man | man -l -`)
    Man,
}

/// `--permits N`, `--shared` and `--fair`, for `acquire` and `run`: which kind of grant
/// to take, and how to wait for it.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Kind {
    /// How many may hold NAME at once, each with a grant, TTL and token of its own (1 to
    /// 128; 1: an exclusive lease). Every user of NAME must give the same N: another N,
    /// or none on a name with permits, is refused with exit 65
    #[arg(
        long = "permits",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(shmlease::layout::MAX_SEATS))
    )]
    pub permits: u32,
    /// Take a shared grant: up to 64 shared holders of NAME at once, or one exclusive
    /// holder (the same command without --shared), never both. Not with --permits N;
    /// exit 65 on a name with permits
    #[arg(long)]
    pub shared: bool,
    /// Wait in line: among acquirers of NAME that give --fair, the one that started
    /// waiting first gets it first (with any kind of name). Without waiting (-n, or no
    /// --wait for acquire) it is refused while anyone waits in line
    #[arg(long)]
    pub fair: bool,
}

/// What `--permits N`, `--shared` and `--fair` mean, for `acquire --help` and `run --help`.
pub const KINDS_HELP: &str = "\
Permits: with --permits N, up to N holders have NAME at once (a pool: N GPUs, N
concurrent jobs), each with a grant of its own: its own TTL, holder and token (unique
to NAME, growing in the order taken). The next one waits for any of them to end, or
exits 75. N is recorded with NAME when it is first used, and kept while the table
remembers the name (also while no permit is held): every user of NAME must give the
same --permits N. Another N, --permits on a name held as an exclusive lease, or no
--permits on a name with permits is refused with exit 65, saying which N is recorded.
An exclusive name nobody holds takes permits from its next user. `shmlease get NAME`
shows every holder; `revoke NAME` revokes them all, `revoke NAME --token T` one.

Shared leases: with --shared, up to 64 holders have NAME at once (readers of a file,
users of a cache that one writer rebuilds), each with a grant of its own: its own TTL,
holder and token. The same command without --shared is NAME's exclusive holder (the
writer): it waits until every shared holder has left, and while it waits no new shared
holder gets in, so a stream of shared holders cannot keep it out. Shared holders wait
while an exclusive one holds NAME (or waits for them). The converse is not bounded:
there is no fairness between the two kinds, so a steady stream of exclusive holders can
keep shared ones waiting. A 65th shared holder waits for one of the 64 to end. NAME
becomes shared when it is first taken with --shared (an exclusive holder it has then
stays its holder) and stays shared while the table remembers it. Tokens of NAME grow
across both kinds. --permits on a shared name, and --shared on a name with permits,
are refused with exit 65; --shared with --permits N (N > 1) is a usage error (64).
`shmlease get NAME` shows every holder, each marked shared or exclusive; `revoke NAME`
revokes them all (both kinds), `revoke NAME --token T` one.

Fair acquisition: with --fair, acquirers of NAME that wait are served in the order they
arrived, whatever NAME's kind (combine it with --permits N or --shared). One that must
wait takes a place in NAME's queue (`shmlease get NAME` shows the queue, first in line
first): a place bound to its process, with a 2s TTL it renews while it waits. A waiter
ahead that gives up (--wait runs out, Ctrl-C) is passed over at once; one that dies
(even by SIGKILL) within about 50ms; one that is stopped (SIGSTOP, a frozen cgroup)
once its place expires, 2s later (a waiter stopped that long loses its place, and
queues again at the back when continued). Fairness is among fair acquirers only: one
without --fair does not look at the queue, and may take NAME between two fair ones.
A fair acquisition that does not wait (-n, or acquire without --wait) does not pass
those in line: while anyone waits in line it is refused (exit 75), even if NAME is free.
At most 127 fair acquirers can wait for one name at once; the next is refused (exit
75, try again).";

/// Extra `acquire --help` text.
const ACQUIRE_HELP: &str = KINDS_HELP;

/// Extra `ls --help` and `get --help` text.
const LS_HELP: &str = "\
A name with permits or a shared name (see `shmlease acquire --help`) is one line with
its holders (\"2 of 3 permits\"; \"3 shared holders\", \"exclusive holder\", or \"2
shared, exclusive waiting\" while an exclusive holder waits for shared ones to leave),
its latest token and the longest time left, followed by one line per holder (├─, └─;
on a shared name marked \"shared\" or \"exclusive\"): its token, pid, label, time
left, when taken and renewed. --json adds \"kind\" (\"exclusive\", \"permits\" or
\"shared\"), \"permits\" (how many may hold the name at once: N; 1 for an exclusive
lease; 64, the most shared holders, for a shared name) and \"holders\", an array of
every live grant (for an exclusive lease, its one holder): token, shared (true for a
shared holder; false for an exclusive holder or a permit), pid, pid_namespace,
identity, detached, label, acquired_at, renewed_at, expires_at, remaining_ms, slot. For
a name with permits or a shared name, \"token\" is the latest taken (of either kind)
and \"remaining_ms\" the longest; the top-level \"holder\" is null, except on a shared
name with an exclusive holder (also one waiting for shared holders to leave): that
holder, with its \"acquired_at\" and \"renewed_at\"; a shared name's \"expires_at\" is
its longest-lasting holder's.

A name that fair acquirers (--fair) wait for has a line below it for its queue, first in
line first: \"queue: pid 12 (ticket 40), pid 15 (ticket 41)\"; ls lists such a name also
while nobody holds it. --json adds \"queue\", an array of places in line: ticket (the
order they are served in), pid, pid_namespace, identity, label (when there is one),
expires_at (when the place expires unless its waiter renews it, as it does every
half second while it waits), slot.";

/// Extra `rm --help` text.
const RM_HELP: &str = "\
rm refuses (exit 76), naming the holders, while any lease in the table is live: the
table's name would be gone, but its holders keep using it, and the next user of the
location gets a new, empty table. The two tables do not exclude each other: a name can
have two holders, and tokens start over. Stop the holders or wait for their leases to
end (see `shmlease ls`), then rm.

rm --force removes the table anyway, and says on stderr which leases were live. Use it
only when no process uses the table (`fuser -v FILE` lists none), or when you accept
the above. Neither form removes a file that is not a lease table.";

/// Extra `revoke --help` text.
const REVOKE_HELP: &str = "\
Without --grace the lease is revoked at once: its holder learns it lost the lease (`run`
stops CMD and exits 79) and waiters get it at once. Prints the revoked token. On a name
with permits or a shared name, revoke revokes every grant live when it looks (of a
shared name: its shared holders and its exclusive holder; one with --token T) and
prints each revoked token on a line of its own (--json: \"tokens\", every one, and
\"token\", the latest).

With --grace DUR, revoke first asks the holder to release (as `request-release` does;
`run` passes the request to CMD as SIGTERM) and waits up to DUR for that grant to end;
it revokes only if the same grant is still held then, never a successor's. It prints
which happened: 'released 120ms after the request', or 'still held after the 10s grace;
revoked it' (--json: outcome \"released\", \"expired\" or \"revoked\", and revoked:
true when it revoked). Exit status 0 either way. On a name with permits or a shared
name it asks every holder (or the one of --token), waits for each (looking every
10ms), and revokes those still held after DUR; it prints a line per grant (--json:
{\"name\", \"holders\": [{\"token\", \"outcome\", \"revoked\", \"waited_ms\"}, ...]}).";

/// How long to wait for a held lease: `None` is forever.
#[derive(Clone, Copy, Debug)]
pub struct Wait(pub Option<Duration>);

fn parse_wait(text: &str) -> Result<Wait, String> {
    match text {
        "forever" | "inf" | "infinity" => Ok(Wait(None)),
        _ => duration::parse(text).map(|d| Wait(Some(d))),
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match duration::parse(text)? {
        d if d < Duration::from_millis(10) => Err("the interval must be at least 10ms".into()),
        d => Ok(d),
    }
}

/// A table's number of slots, in the library's range (its own check says the same, but
/// only after clap has refused anything beyond u32 with the wrong range).
fn parse_capacity(text: &str) -> Result<u32, String> {
    let max = shmlease::layout::MAX_CAPACITY;
    let range = format!("a table has 1 to {max} slots");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a whole number; {range}"));
    }
    text.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or(range)
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal mode like 0600 or 660"))
}

/// Something that failed: an exit code and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What went wrong and what to do, on one line.
    pub message: String,
    /// The lease is held by someone else (what `run --conflict-exit-code` replaces).
    pub conflict: bool,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), conflict: false }
    }

    fn conflict(mut self) -> Failure {
        self.conflict = true;
        self
    }
}

/// Turns a library error into an exit code and one actionable line. `name` is the
/// lease concerned, if any; `table` the table's CLI spelling.
///
/// No message may advise removing a table that other processes may still be using:
/// a table re-created at the same location would not exclude them.
pub fn explain(e: &Error, name: Option<&str>, table: &TableArg) -> Failure {
    let lease = name.map(|n| format!("lease {n:?}")).unwrap_or_else(|| "lease".into());
    let t = table.flag();
    // The library phrases opt-ins as its API; here they are options.
    let cli = |s: String| {
        s.replace("call allow_world_writable(true)", "pass --allow-world-writable")
            .replace("allow_foreign_owner", "--allow-foreign-owner")
            .replace("allow_world_writable", "--allow-world-writable")
    };
    let fuser = format!("`fuser -v {}`", shell_word(&table.file()));
    match e {
        Error::Held { token, remaining, holder } => {
            let by = holder.map(|h| format!(" by {h}")).unwrap_or_default();
            Failure::new(
                exit::HELD,
                format!(
                    "{lease} is held{by} (token {token}, {} left); wait for it with --wait DUR, or see `shmlease{t} ls`",
                    duration::human(*remaining)
                ),
            )
            .conflict()
        }
        Error::TimedOut { waited, token, holder } => {
            let by = holder.map(|h| format!(" by {h}")).unwrap_or_default();
            Failure::new(
                exit::HELD,
                format!(
                    "gave up after waiting {} for {lease}, still held{by} (token {token}); wait longer with --wait, or see `shmlease{t} ls`",
                    duration::human(*waited)
                ),
            )
            .conflict()
        }
        // Only lease operations of a holder get here (`run`, `acquire`): by-token
        // commands explain their own (see `by_token_failure`).
        Error::Lost { token, reason } => Failure::new(
            exit::LOST,
            format!(
                "{lease} with token {token} is lost: {reason}; it is no longer yours: stop acting on it and acquire it again"
            ),
        ),
        Error::BoundToProcess { token, holder } => {
            let by = bound_by(holder);
            Failure::new(
                exit::BOUND,
                format!(
                    "{lease} (token {token}) is held{by} and bound to that process, which alone renews and releases it"
                ),
            )
        }
        Error::WrongKind { recorded, requested, .. } => {
            wrong_kind(&lease, *recorded, *requested, name, table)
        }
        Error::InUse { leases, .. } => in_use(leases, table),
        Error::TableFull { capacity } => Failure::new(
            exit::UNAVAILABLE,
            format!(
                "the lease table{t_} is full: all {capacity} slots hold live leases; release some, or use a larger table (`shmlease -t NEW create --capacity N`)",
                t_ = if t.is_empty() { String::new() } else { format!(" {}", table.export) }
            ),
        ),
        Error::InvalidName { .. } | Error::InvalidTtl { .. } | Error::InvalidLabel { .. } => {
            Failure::new(exit::USAGE, format!("{e}; see `shmlease --help`"))
        }
        Error::InvalidOptions { .. } => Failure::new(exit::USAGE, cli(e.to_string())),
        Error::NotATable { .. } => Failure::new(
            exit::TABLE,
            format!("{e}; nothing was changed; check -t/--table (or $SHMLEASE_TABLE)"),
        ),
        Error::Incompatible { .. } => Failure::new(
            exit::TABLE,
            format!(
                "{e}; processes of the shmlease version that made it may be using it: use that version, or another table (-t); do not remove it while any process uses it ({fuser} lists them)"
            ),
        ),
        Error::Corrupt { .. } => Failure::new(
            exit::TABLE,
            format!(
                "{e}; other processes may still have it mapped and be using it: leave it in place while they do (a table re-created there would not exclude them: two holders per name, tokens starting over); only once no process uses it ({fuser} lists none) may it be removed (`shmlease{t} rm --force`)"
            ),
        ),
        Error::Permission { .. } => Failure::new(exit::PERMISSION, cli(e.to_string())),
        Error::AlreadyExists { .. } => table.occupied(),
        Error::NotFound { .. } => Failure::new(
            exit::NO_TABLE,
            format!("{e}; create it with `shmlease{t} create` (or check -t/--table)"),
        ),
        Error::Unsupported { .. } => Failure::new(exit::UNAVAILABLE, e.to_string()),
        Error::Busy { .. } => Failure::new(
            exit::BUSY,
            format!(
                "{e}; nothing is wrong with the table and nothing was changed: try again (if it persists, {fuser} shows who has the table open)"
            ),
        ),
        _ => Failure::new(exit::TABLE, e.to_string()),
    }
}

/// A name used as another kind than asked for (another number of permits, shared or
/// not): what is recorded, and what every user must therefore give.
fn wrong_kind(
    lease: &str,
    recorded: LeaseKind,
    requested: LeaseKind,
    name: Option<&str>,
    table: &TableArg,
) -> Failure {
    let asked = match requested {
        LeaseKind::Exclusive => "an exclusive lease (neither --permits nor --shared)".to_string(),
        LeaseKind::Shared => "a shared grant (--shared)".to_string(),
        k => format!("--permits {}", k.permits()),
    };
    let see = name
        .map(|n| format!("; see `shmlease{} get {}`", table.flag(), shell_word(n)))
        .unwrap_or_default();
    let message = match recorded {
        LeaseKind::Exclusive => format!(
            "{lease} is held as an exclusive lease; this command asked for {asked}: every user of a name must give the same --permits, and while it is held this one is an exclusive lease (no --permits; once nobody holds it, its next user may give it permits){see}"
        ),
        LeaseKind::Shared => format!(
            "{lease} is a shared name (shared holders with --shared, or one exclusive holder without it), recorded when it was first taken with --shared and kept while the table remembers the name; this command asked for {asked}: a shared name has no permits{see}"
        ),
        k => format!(
            "{lease} is in use with --permits {n}, recorded when it was first used and kept while the table remembers the name; this command asked for {asked}: every user of a name must give the same --permits (here --permits {n}, without --shared){see}",
            n = k.permits()
        ),
    };
    Failure::new(exit::WRONG_KIND, message)
}

/// " by pid 7 (web)" for a lease bound to a process, also when the table does not
/// record which.
fn bound_by(holder: &Option<shmlease::Holder>) -> String {
    match holder {
        Some(h) => format!(" by {h}"),
        None => " by a process the table does not name".into(),
    }
}

/// `rm`'s refusal: who holds leases in the table, and why that stops the removal.
fn in_use(leases: &[shmlease::LeaseInfo], table: &TableArg) -> Failure {
    Failure::new(
        exit::IN_USE,
        format!(
            "not removed: lease table {} is in use: {}; removing it now would let the next user create a new table there that does not exclude these holders (two holders per name, tokens starting over); stop them or wait for their leases to end (`shmlease{} ls`), or see `shmlease rm --help`",
            table.export,
            describe_leases(leases),
            table.flag()
        ),
    )
}

/// "2 live leases: "a" (token 5, pid 7 (web), 3.2s left), "b" (...)", at most five named.
fn describe_leases(leases: &[shmlease::LeaseInfo]) -> String {
    const SHOWN: usize = 5;
    let mut out = match leases.len() {
        1 => "1 live lease: ".to_string(),
        n => format!("{n} live leases: "),
    };
    for (i, l) in leases.iter().take(SHOWN).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if l.kind != LeaseKind::Exclusive {
            let mut grants: Vec<String> = l
                .grants
                .iter()
                .take(SHOWN)
                .map(|g| {
                    let holder = g.holder.map(|h| format!(", {h}")).unwrap_or_default();
                    let shared = if g.shared { ", shared" } else { "" };
                    let left = duration::human(g.remaining);
                    format!("token {}{holder}{shared}, {left} left", g.token)
                })
                .collect();
            if l.grants.len() > SHOWN {
                grants.push(format!("and {} more", l.grants.len() - SHOWN));
            }
            out.push_str(&format!(
                "{:?} ({}: {})",
                l.name,
                output::holders_summary(l),
                grants.join("; ")
            ));
            continue;
        }
        let holder = l.holder.map(|h| format!(", {h}")).unwrap_or_default();
        out.push_str(&format!(
            "{:?} (token {}{holder}, {} left)",
            l.name,
            l.token,
            duration::human(l.remaining)
        ));
    }
    if leases.len() > SHOWN {
        out.push_str(&format!(", and {} more", leases.len() - SHOWN));
    }
    out
}

/// A by-token command (`renew`, `release`, `revoke --token`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenOp {
    Renew,
    Release,
    Revoke,
    Request,
}

/// Why a by-token command failed, saying what is true: the caller of `renew`/`release`
/// presented a token it was given (it held that grant); an administrator revoking by
/// token never held it.
fn by_token_failure(
    e: &Error,
    op: TokenOp,
    name: &str,
    token: u64,
    t: &LeaseTable,
    table: &TableArg,
) -> Failure {
    let f = table.flag();
    let (failed, verb) = match op {
        TokenOp::Renew => ("not renewed", "renew"),
        TokenOp::Release => ("not released", "release"),
        TokenOp::Revoke => ("nothing revoked", "revoke"),
        TokenOp::Request => ("nothing asked", "ask"),
    };
    let Error::Lost { reason, .. } = e else {
        if let Error::BoundToProcess { holder, .. } = e {
            let by = bound_by(holder);
            return Failure::new(
                exit::BOUND,
                format!(
                    "{failed}: lease {name:?} (token {token}) is held{by} and bound to that process, which alone may {verb} it (by-token renew and release are for detached leases, from `shmlease acquire`); to take it away, use `shmlease{f} revoke {} --token {token}`",
                    shell_word(name)
                ),
            );
        }
        return explain(e, Some(name), table);
    };
    let message = match reason {
        LostReason::NoSuchName => format!(
            "{failed}: the table has no lease named {name:?} (never granted, or released and its slot reused); check the name and -t/--table (`shmlease{f} ls --all`)"
        ),
        LostReason::NotIssued { latest } => format!(
            "{failed}: token {token} was never issued for lease {name:?} (its latest is {latest}); check the token"
        ),
        reason if matches!(op, TokenOp::Revoke | TokenOp::Request) => {
            // Say what is current instead, so that the administrator can act on it.
            let current = match t.get(name) {
                Ok(Some(i)) if i.kind != LeaseKind::Exclusive && !i.grants.is_empty() => {
                    let live: Vec<String> = i.grants.iter().map(|g| g.token.to_string()).collect();
                    let of = if i.kind == LeaseKind::Shared { "holders" } else { "permits" };
                    format!(" (the live grants of its {of} have tokens {})", live.join(", "))
                }
                Ok(Some(i)) if i.token != token && i.state == shmlease::LeaseState::Held => {
                    format!(" (the live grant has token {})", i.token)
                }
                _ => String::new(),
            };
            format!(
                "{failed}: the grant of lease {name:?} with token {token} is not the live one: {reason}{current}"
            )
        }
        LostReason::Released if op == TokenOp::Release => {
            format!("{failed}: lease {name:?} with token {token} was already released; nothing changed")
        }
        reason => format!(
            "{failed}: lease {name:?} with token {token} is lost: {reason}; it is no longer yours: stop acting on the token, and acquire the lease again if you still need it"
        ),
    };
    Failure::new(exit::LOST, message)
}

/// The table the user named (or the default one).
pub struct TableArg {
    /// Where it is.
    pub location: Location,
    /// How to name it to `-t` and in `SHMLEASE_TABLE` (absolute for paths).
    pub export: String,
    /// The per-user default, which is created on first use by every command.
    pub default: bool,
    options: TableOptions,
}

impl TableArg {
    /// The table `-t`, else `$SHMLEASE_TABLE`, else the per-user default names. A
    /// location that is not UTF-8 is refused: falling back to another table would give
    /// mutual exclusion on a table nobody meant.
    fn new(cli: &Cli) -> Result<TableArg, Failure> {
        let not_utf8 = |what: &str, raw: &OsString| {
            Failure::new(
                exit::USAGE,
                format!(
                    "{what} is not valid UTF-8 ({raw:?}); lease table locations must be UTF-8: {}",
                    if what.starts_with('$') {
                        "fix or unset it, or pass -t/--table LOCATION"
                    } else {
                        "use another path or name"
                    }
                ),
            )
        };
        let given = match &cli.globals.table {
            Some(raw) => Some(raw.to_str().ok_or_else(|| not_utf8("-t/--table", raw))?.to_owned()),
            None => match std::env::var_os("SHMLEASE_TABLE") {
                Some(raw) if !raw.is_empty() => {
                    Some(raw.to_str().ok_or_else(|| not_utf8("$SHMLEASE_TABLE", &raw))?.to_owned())
                }
                _ => None,
            },
        };
        let options = TableOptions::new()
            .allow_foreign_owner(cli.globals.allow_foreign_owner)
            .allow_world_writable(cli.globals.allow_world_writable);
        let (location, default) = match given {
            Some(s) => match s.strip_prefix("shm:") {
                Some(name) => (Location::Shm(name.to_owned()), false),
                None => (Location::from(s.as_str()), false),
            },
            None => (Location::user_default(), true),
        };
        let export = match &location {
            Location::Shm(name) => name.clone(),
            #[cfg(feature = "etcd")]
            Location::Etcd(text) => text.clone(),
            Location::Path(p) => {
                std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string()
            }
        };
        Ok(TableArg { location, export, default, options })
    }

    /// Whether the table is a shared-memory segment.
    pub fn is_shm(&self) -> bool {
        matches!(self.location, Location::Shm(_))
    }

    /// The file behind the table (`/dev/shm/NAME` for a segment).
    pub fn file(&self) -> String {
        self.location
            .file_path()
            .unwrap_or_else(|_| PathBuf::from(&self.export))
            .display()
            .to_string()
    }

    /// ` -t LOCATION` for hints, or nothing for the default table.
    fn flag(&self) -> String {
        if self.default {
            String::new()
        } else {
            format!(" -t {}", shell_word(&self.export))
        }
    }

    /// Opens the table. `create`: make it if missing (always for the default table).
    pub fn open(&self, create: bool) -> Result<LeaseTable, Failure> {
        let opened = if create || self.default {
            LeaseTable::open_or_create(&self.location, &self.options)
        } else {
            LeaseTable::open_with(&self.location, &self.options)
        };
        opened.map_err(|e| match e {
            // Not found even though we tried to create it: the directory is missing.
            Error::NotFound { .. } if create || self.default => self.missing_directory(),
            e => explain(&e, None, self),
        })
    }

    /// Creating the table failed because its directory does not exist.
    fn missing_directory(&self) -> Failure {
        let file = PathBuf::from(self.file());
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Failure::new(
            exit::NO_TABLE,
            format!(
                "cannot create a lease table at {}: directory {} does not exist; create it first (`mkdir -p {}`), or choose another -t/--table",
                self.export,
                dir.display(),
                shell_word(&dir.display().to_string())
            ),
        )
    }

    /// `create` found something at the location: says what, and what can be done
    /// about it (`rm` removes nothing but a lease table).
    fn occupied(&self) -> Failure {
        let file = self.file();
        let what = match std::fs::symlink_metadata(&file) {
            Ok(m) if m.is_dir() => format!(
                "{file} is a directory; a lease table is a file: name one inside it (`-t {}`)",
                shell_word(&format!("{}/leases", file.trim_end_matches('/')))
            ),
            Ok(m) if m.is_file() => {
                let look = TableOptions::new().allow_foreign_owner(true).allow_world_writable(true);
                match LeaseTable::open_with(&self.location, &look) {
                    Ok(_) => format!(
                        "a lease table already exists at {}; use it as it is (`shmlease{} info`), or remove it first with `shmlease{} rm` (refused while its leases are live)",
                        self.export,
                        self.flag(),
                        self.flag()
                    ),
                    Err(Error::NotATable { .. }) => format!(
                        "{file} already exists and is not a lease table; choose another -t/--table"
                    ),
                    Err(e) => format!("{file} already exists ({e}); choose another -t/--table"),
                }
            }
            _ => {
                format!("{file} already exists and is not a lease table; choose another -t/--table")
            }
        };
        Failure::new(exit::EXISTS, what)
    }
}

/// `s` as one word for a POSIX shell, to paste into a command line: as is if that is
/// safe, else single-quoted, else (with control characters) `$'...'`-quoted.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        s.to_owned()
    } else if !s.chars().any(char::is_control) {
        format!("'{}'", s.replace('\'', "'\\''"))
    } else {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\\' | '\'' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.push_str(&escape_control(c)),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }
}

/// A control character as an escape (`\n`, `\x1b`, `\u0085`), so that a message shows
/// it instead of acting on the terminal.
fn escape_control(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        c if (c as u32) < 0x80 => format!("\\x{:02x}", c as u32),
        c => format!("\\u{:04x}", c as u32),
    }
}

/// `s` with its control characters escaped (see [`escape_control`]): locations, names
/// and labels come from users and other processes, and go to a terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { escape_control(c) } else { c.to_string() }).collect()
}

/// The tool: reads the command line, runs the command, returns the exit code (called
/// by [`start::main`]).
#[cfg_attr(test, allow(dead_code))]
fn shmlease() -> u8 {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let table = TableArg::new(&cli);
    let result = match (cli.command, table) {
        // These need no table: a bad $SHMLEASE_TABLE must not stop them.
        (command @ (Command::Completions { .. } | Command::Man), _) => {
            without_table(command).map(|()| 0)
        }
        (_, Err(f)) => Err(f),
        (Command::Run(args), Ok(table)) => run::run(&table, args),
        (command, Ok(table)) => dispatch(&table, command),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            say(format_args!("{}", f.message));
            f.code
        }
    }
}

/// Reports a command-line error on one line (clap's own report spans several) with
/// exit code 64; help and version go to stdout with 0.
fn usage_error(e: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        let _ = e.print();
        let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            exit::USAGE
        } else {
            0
        };
        return code;
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let subcommand = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| Cli::command().get_subcommands().any(|s| s.get_name() == *a));
    let rendered = e.render().to_string();
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    let first = lines.first().copied().unwrap_or("error: invalid arguments");
    let mut first = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    // "the following required arguments were not provided:" lists them below.
    if first.ends_with(':') {
        let missing: Vec<&str> =
            lines[1..].iter().copied().filter(|l| !l.starts_with("tip:")).collect();
        first = format!("{} {}", first, missing.join(", "));
    }
    let tips: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("tip:")).collect();
    let help = match subcommand {
        Some(s) => format!("shmlease {s} --help"),
        None => "shmlease --help".into(),
    };
    let no_dashdash = !args.iter().any(|a| a == "--");
    let message = if subcommand == Some("run")
        && no_dashdash
        && matches!(e.kind(), ErrorKind::UnknownArgument | ErrorKind::MissingRequiredArgument)
    {
        format!(
            "{first}; put `--` before the command: `shmlease run NAME [OPTIONS] -- CMD [ARG...]`"
        )
    } else if tips.is_empty() {
        format!("{first}; see `{help}`")
    } else {
        format!("{first}; {}; see `{help}`", tips.join("; "))
    };
    say(format_args!("{message}"));
    exit::USAGE
}

fn dispatch(table: &TableArg, command: Command) -> Result<u8, Failure> {
    match command {
        Command::Create { capacity, mode } => {
            let options = table.options.clone().capacity(capacity).mode(mode);
            LeaseTable::create(&table.location, &options).map_err(|e| match e {
                Error::NotFound { .. } => table.missing_directory(),
                e => explain(&e, None, table),
            })?;
        }
        Command::Rm { force } => remove(table, force)?,
        Command::Info { json } => {
            let t = table.open(false)?;
            let info = t.info();
            if json {
                print_json(&output::TableJson::new(table, &info))?;
            } else {
                print(&output::table_text(table, &info))?;
            }
        }
        Command::Ls { all, json } => {
            let t = table.open(false)?;
            let leases = list(&t, all, table)?;
            if json {
                let rows: Vec<_> = leases.iter().map(output::LeaseJson::new).collect();
                print_json(&rows)?;
            } else {
                print(&output::leases_text(&leases, all))?;
            }
        }
        Command::Get { name, json } => {
            let t = table.open(false)?;
            let info = t.get(&name).map_err(|e| explain(&e, Some(&name), table))?;
            if json {
                print_json(&info.as_ref().map(output::LeaseJson::new))?;
            } else if let Some(info) = info {
                print(&output::leases_text(std::slice::from_ref(&info), true))?;
            } else {
                say(format_args!(
                    "the table has no lease named {name:?} (never taken, or forgotten once free to reuse its slot); see `shmlease{} ls --all`",
                    table.flag()
                ));
            }
        }
        Command::Watch { interval, all } => {
            let t = table.open(false)?;
            watch::watch(&t, table, interval, all)?;
        }
        Command::Acquire { name, ttl, wait, label, kind, json } => {
            let t = table.open(true)?;
            let lease = take(
                &t,
                table,
                &name,
                ttl,
                wait.unwrap_or(Wait(Some(Duration::ZERO))),
                label.as_deref(),
                kind,
            )?;
            let detached = lease.detach().map_err(|e| explain(&e, Some(&name), table))?;
            if json {
                print_json(&Granted {
                    name: &name,
                    table: &table.export,
                    token: detached.token,
                    expires_at: output::rfc3339(wall(detached.deadline)),
                    ttl_ms: ttl.as_millis() as u64,
                })?;
            } else {
                print(&format!("{}\n", detached.token))?;
            }
        }
        Command::Renew { name, token, ttl, json } => {
            let t = table.open(false)?;
            let deadline = t
                .renew(&name, token, ttl)
                .map_err(|e| by_token_failure(&e, TokenOp::Renew, &name, token, &t, table))?;
            if json {
                print_json(&Granted {
                    name: &name,
                    table: &table.export,
                    token,
                    expires_at: output::rfc3339(wall(deadline)),
                    ttl_ms: ttl.as_millis() as u64,
                })?;
            }
        }
        Command::Release { name, token } => {
            let t = table.open(false)?;
            t.release(&name, token)
                .map_err(|e| by_token_failure(&e, TokenOp::Release, &name, token, &t, table))?;
        }
        Command::Revoke { name, token, grace: Some(grace), json } => {
            let t = table.open(false)?;
            election::revoke_with_grace(&t, table, &name, token, grace, json)?;
        }
        Command::RequestRelease { name, token, json } => {
            let t = table.open(false)?;
            election::request_release(&t, table, &name, token, json)?;
        }
        Command::Leader { name, json } => {
            return election::leader(&table.open(false)?, table, &name, json);
        }
        Command::Observe { name, json, count } => {
            return election::observe(&table.open(false)?, table, &name, json, count);
        }
        Command::Revoke { name, token, grace: None, json } => {
            let t = table.open(false)?;
            let revoked = match token {
                Some(token) => {
                    t.revoke_token(&name, token).map_err(|e| {
                        by_token_failure(&e, TokenOp::Revoke, &name, token, &t, table)
                    })?;
                    vec![token]
                }
                None => {
                    revoke_every_grant(&t, &name).map_err(|e| explain(&e, Some(&name), table))?
                }
            };
            if json {
                print_json(&Revoked {
                    name: &name,
                    revoked: !revoked.is_empty(),
                    token: revoked.iter().max().copied(),
                    tokens: revoked,
                })?;
            } else if revoked.is_empty() {
                say(format_args!("lease {name:?} was not held; nothing to revoke"));
            } else {
                print(&revoked.iter().map(|t| format!("{t}\n")).collect::<String>())?;
            }
        }
        Command::Run(_) | Command::Completions { .. } | Command::Man => {
            unreachable!("dispatched by main")
        }
    }
    Ok(0)
}

/// The commands that need no table.
fn without_table(command: Command) -> Result<(), Failure> {
    let mut out = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "shmlease", &mut out);
        }
        Command::Man => {
            man::render(Cli::command(), &mut out)
                .map_err(|e| Failure::new(exit::OS, format!("rendering the man page: {e}")))?;
        }
        _ => unreachable!("only completions and man need no table"),
    }
    write_stdout(&out)
}

/// `rm`: removes the table unless leases in it are live (or, with `force`, anyway,
/// saying what that risks).
fn remove(table: &TableArg, force: bool) -> Result<(), Failure> {
    // Whoever may remove a table may look into it, whatever its owner and mode.
    let look = TableOptions::new().allow_foreign_owner(true).allow_world_writable(true);
    let opened = LeaseTable::open_with(&table.location, &look);
    if !force {
        match &opened {
            Ok(_) => {}
            // The library would remove these (nobody can use them, it reasons); but
            // processes of another version, or that mapped the table before it was
            // damaged, may: whether it is in use cannot be told.
            Err(e @ (Error::Corrupt { .. } | Error::Incompatible { .. })) => {
                return Err(Failure::new(
                    exit::TABLE,
                    format!(
                        "not removed: {e}; its leases cannot be read, so whether processes still use it cannot be told; if none does (`fuser -v {}` lists none), remove it with `shmlease{} rm --force`",
                        shell_word(&table.file()),
                        table.flag()
                    ),
                ))
            }
            Err(e) => return Err(explain(e, None, table)),
        }
        return LeaseTable::remove(&table.location).map_err(|e| explain(&e, None, table));
    }
    let live: Option<Vec<shmlease::LeaseInfo>> = opened.ok().and_then(|t| {
        let all = t.list().ok()?;
        Some(all.into_iter().filter(|l| l.state == shmlease::LeaseState::Held).collect())
    });
    LeaseTable::remove_with(&table.location, &RemoveOptions::new().force(true))
        .map_err(|e| explain(&e, None, table))?;
    const RISK: &str = "their holders keep using the removed table while the next user of this location gets a new one: the two do not exclude each other (a name can have two holders) and tokens start over";
    match live {
        Some(live) if live.is_empty() => {}
        Some(live) => say(format_args!(
            "removed {} with {}; {RISK}",
            table.export,
            describe_leases(&live)
        )),
        None => say(format_args!(
            "removed {} without knowing its leases (they could not be read); if processes still held leases in it, {RISK}",
            table.export
        )),
    }
    Ok(())
}

/// `acquire`/`renew` output.
#[derive(Serialize)]
struct Granted<'a> {
    name: &'a str,
    table: &'a str,
    token: u64,
    expires_at: String,
    ttl_ms: u64,
}

/// `revoke --json` output.
#[derive(Serialize)]
struct Revoked<'a> {
    name: &'a str,
    revoked: bool,
    /// The latest token revoked.
    token: Option<u64>,
    /// Every token revoked (several for a name with permits), oldest first.
    tokens: Vec<u64>,
}

/// `revoke NAME`: the library's revoke for an exclusive lease; for a name with permits,
/// each grant live when it looks, by its token, so that every token revoked is known.
fn revoke_every_grant(t: &LeaseTable, name: &str) -> Result<Vec<u64>, Error> {
    match t.get(name)? {
        Some(info) if info.kind != LeaseKind::Exclusive => {
            each_grant(&info, |token| t.revoke_token(name, token))
        }
        _ => Ok(t.revoke(name)?.into_iter().collect()),
    }
}

/// Applies `op` to each live grant of `info` by its token, oldest first; returns the
/// tokens it did it to (a grant that ended meanwhile is passed over).
pub fn each_grant(
    info: &LeaseInfo,
    op: impl Fn(u64) -> Result<(), Error>,
) -> Result<Vec<u64>, Error> {
    let mut done = Vec::new();
    for g in &info.grants {
        match op(g.token) {
            Ok(()) => done.push(g.token),
            Err(Error::Lost { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The leases `ls` shows, by name: held ones (and names fair acquirers wait in line
/// for), or every known name with `all`.
pub fn list(
    t: &LeaseTable,
    all: bool,
    table: &TableArg,
) -> Result<Vec<shmlease::LeaseInfo>, Failure> {
    let mut leases = t.list().map_err(|e| explain(&e, None, table))?;
    if !all {
        leases.retain(|l| l.state == shmlease::LeaseState::Held || !l.queue.is_empty());
    }
    leases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(leases)
}

fn wall(deadline: Instant) -> SystemTime {
    SystemTime::now() + deadline.saturating_duration_since(Instant::now())
}

/// Takes the lease, waiting as `wait` says. A wait longer than a second gets one note
/// on stderr saying who holds the lease.
pub fn take<'t>(
    t: &'t LeaseTable,
    table: &TableArg,
    name: &str,
    ttl: Duration,
    wait: Wait,
    label: Option<&str>,
    kind: Kind,
) -> Result<Lease<'t>, Failure> {
    if kind.shared && kind.permits > 1 {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "--shared and --permits {} exclude each other: a name either has permits (up to N holders, all alike) or is shared (up to 64 shared holders, or one exclusive holder); see `shmlease acquire --help`",
                kind.permits
            ),
        ));
    }
    let fail = |e: Error| refused(t, &e, name, kind, table);
    let mut options = AcquireOptions::new()
        .permits(kind.permits)
        .map_err(fail)?
        .shared(kind.shared)
        .fair(kind.fair);
    if let Some(label) = label {
        options = options.label(label).map_err(fail)?;
    }
    if kind.fair {
        return take_fair(t, name, ttl, wait, &options).map_err(fail);
    }
    match wait.0 {
        Some(w) if w.is_zero() => t.acquire_with(name, ttl, &options).map_err(fail),
        Some(w) if w <= NOTE_AFTER => {
            t.acquire_with(name, ttl, &options.wait(Some(w))).map_err(fail)
        }
        _ => match t.acquire_with(name, ttl, &options.clone().wait(Some(NOTE_AFTER))) {
            Err(Error::TimedOut { token, holder, .. }) => {
                let how_long = match wait.0 {
                    Some(w) => format!("up to {} more", duration::human(w - NOTE_AFTER)),
                    None if kind.permits > 1 => "until one is free (Ctrl-C to give up)".into(),
                    None => "until it is free (Ctrl-C to give up)".into(),
                };
                let what = blocker(t, name, kind, token, holder, None).unwrap_or_else(|| {
                    format!("lease {name:?} is held{} (token {token})", by(holder))
                });
                say(format_args!("{what}; waiting {how_long}"));
                let rest = wait.0.map(|w| w - NOTE_AFTER);
                let taken = t.acquire_with(name, ttl, &options.wait(rest));
                match taken {
                    Err(Error::TimedOut { token, holder, .. }) => Err(fail(Error::TimedOut {
                        waited: wait.0.unwrap_or_default(),
                        token,
                        holder,
                    })),
                    other => other.map_err(fail),
                }
            }
            other => other.map_err(fail),
        },
    }
}

/// A wait longer than this gets a note on stderr saying who holds the lease.
const NOTE_AFTER: Duration = Duration::from_secs(1);

/// [`take`] with `--fair`: one call to the library, so that the waiter keeps its place
/// in the name's queue all along (giving up after a second to print the note, then
/// asking again, would put it at the back of the line). The note comes from a timer
/// thread, which says where in line this process waits.
fn take_fair<'t>(
    t: &'t LeaseTable,
    name: &str,
    ttl: Duration,
    wait: Wait,
    options: &AcquireOptions,
) -> Result<Lease<'t>, Error> {
    if wait.0.is_some_and(|w| w <= NOTE_AFTER) {
        let options = if wait.0 == Some(Duration::ZERO) {
            options.clone()
        } else {
            options.clone().wait(wait.0)
        };
        return t.acquire_with(name, ttl, &options);
    }
    // `done` is set (under the lock the note is printed with) once the call returns:
    // after that, no note.
    let done = std::sync::Mutex::new(false);
    let ended = std::sync::Condvar::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let guard = done.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = ended
                .wait_timeout_while(guard, NOTE_AFTER, |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
            let how_long = match wait.0 {
                Some(w) => format!("up to {} more", duration::human(w - NOTE_AFTER)),
                None => "until its turn (Ctrl-C to give up)".into(),
            };
            let info = t.get(name).ok().flatten();
            let what = info.as_ref().map_or_else(
                || format!("lease {name:?} is held"),
                |i| fair_state(i, Some(std::process::id())),
            );
            say(format_args!("{what}; waiting {how_long}"));
        });
        let taken = t.acquire_with(name, ttl, &options.clone().wait(wait.0));
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        ended.notify_all();
        taken
    })
}

/// What a fair acquirer of `info`'s name waits for: who holds it and who waits in line
/// ("lease "q" is held by pid 7 (token 5); 3 wait in line, first pid 12 (ticket 9)"), or
/// with `me`, where in line that process is ("…; 2nd of 3 in line").
fn fair_state(info: &LeaseInfo, me: Option<u32>) -> String {
    let name = &info.name;
    let mut out = if info.state != shmlease::LeaseState::Held {
        format!("lease {name:?} is not held")
    } else if info.kind == LeaseKind::Exclusive {
        format!("lease {name:?} is held{} (token {})", by(info.holder), info.token)
    } else {
        format!("lease {name:?} is held ({})", output::holders_summary(info))
    };
    let n = info.queue.len();
    let mine = me.and_then(|pid| {
        info.queue.iter().position(|q| q.holder.is_some_and(|h| h.pid == pid && !h.detached))
    });
    match (mine, info.queue.first()) {
        (Some(i), _) => out.push_str(&format!("; {} of {n} in line", nth(i + 1))),
        (None, Some(first)) => out.push_str(&format!(
            "; {} in line, first {} (ticket {})",
            output::count(n, "fair acquirer"),
            first.holder.map_or_else(|| "unknown".to_string(), |h| h.to_string()),
            first.ticket
        )),
        (None, None) => {}
    }
    out
}

/// "1st", "2nd", "3rd", "4th", "11th", "21st".
fn nth(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// " by pid 7 (web)", or nothing when the table does not record the holder.
fn by(holder: Option<shmlease::Holder>) -> String {
    holder.map(|h| format!(" by {h}")).unwrap_or_default()
}

/// Why [`take`] failed: [`explain`], but saying what keeps the caller out of a name with
/// permits or a shared name (see [`blocker`]).
fn refused(t: &LeaseTable, e: &Error, name: &str, kind: Kind, table: &TableArg) -> Failure {
    let see = format!("see `shmlease{} get {}`", table.flag(), shell_word(name));
    if kind.fair {
        if let Some(f) = refused_fair(t, e, name, &see) {
            return f;
        }
    }
    let (what, waited) = match e {
        Error::Held { token, remaining, holder } => {
            (blocker(t, name, kind, *token, *holder, Some(*remaining)), None)
        }
        Error::TimedOut { waited, token, holder } => {
            (blocker(t, name, kind, *token, *holder, None), Some(*waited))
        }
        _ => (None, None),
    };
    let Some(what) = what else { return explain(e, Some(name), table) };
    let message = match waited {
        None => format!("{what}; wait with --wait DUR, or {see}"),
        Some(waited) => format!(
            "gave up after waiting {}: {what}; wait longer with --wait, or {see}",
            duration::human(waited)
        ),
    };
    Failure::new(exit::HELD, message).conflict()
}

/// Why a fair [`take`] failed, when the queue is part of the reason: a fair acquisition
/// that does not wait refused because others wait in line (the error then names the
/// first of them, by its ticket), or a wait that ran out (said from the table as it is
/// now: the error names a place ahead, or this waiter's own). `None` otherwise.
fn refused_fair(t: &LeaseTable, e: &Error, name: &str, see: &str) -> Option<Failure> {
    let info = t.get(name).ok().flatten();
    let message = match e {
        Error::Held { .. } => {
            let info = info.filter(|i| !i.queue.is_empty())?;
            format!(
                "{}; a fair acquisition that does not wait does not pass those in line: wait in line with --wait DUR, or {see}",
                fair_state(&info, None)
            )
        }
        Error::TimedOut { waited, .. } => {
            let now = info
                .map_or_else(|| format!("lease {name:?} is not held"), |i| fair_state(&i, None));
            format!(
                "gave up after waiting {} in line (and left it): {now}; wait longer with --wait, or {see}",
                duration::human(*waited)
            )
        }
        _ => return None,
    };
    Some(Failure::new(exit::HELD, message).conflict())
}

/// What keeps [`take`] out of `name`, when that is more than one exclusive holder: every
/// permit held (`token` is the one that ends first), or, on a shared name, its
/// exclusive holder or its shared holders (`token` is one of them). `None` for an
/// exclusive lease, which [`explain`] describes.
fn blocker(
    t: &LeaseTable,
    name: &str,
    kind: Kind,
    token: u64,
    holder: Option<shmlease::Holder>,
    remaining: Option<Duration>,
) -> Option<String> {
    let left = remaining.map(|r| format!(", {} left", duration::human(r))).unwrap_or_default();
    let who = format!("token {token}{}{left}", by(holder));
    if kind.permits > 1 {
        let n = kind.permits;
        return Some(format!(
            "all {n} permits of lease {name:?} are held (the first to end: {who})"
        ));
    }
    // The name's kind is the table's; it is looked at only to explain a refusal.
    let info = t.get(name).ok().flatten().filter(|i| i.kind == LeaseKind::Shared);
    let Some(info) = info else {
        return kind.shared.then(|| format!("lease {name:?} is held exclusively ({who})"));
    };
    let shared = info.grants.iter().filter(|g| g.shared).count();
    Some(match info.grants.iter().find(|g| g.token == token) {
        Some(g) if g.shared && shared >= shmlease::layout::MAX_SHARED as usize => {
            format!(
                "all {shared} shared grants of lease {name:?} are held (the first to end: {who})"
            )
        }
        Some(g) if g.shared => format!(
            "lease {name:?} has {} (one: {who}); an exclusive holder waits until all have left",
            output::count(shared, "shared holder")
        ),
        Some(_) => format!("lease {name:?} is held exclusively ({who})"),
        // The grant ended since: say only what the refusal said.
        None => format!("lease {name:?} (a shared name) is held ({who})"),
    })
}

/// One line on stderr, after `shmlease: `. A closed or broken stderr is ignored: it
/// must not turn into a panic half-way through supervising a command.
///
/// Control characters (from a location, a name, a label) are shown escaped, so that
/// the line cannot garble or drive the terminal, and stays one line.
pub fn say(message: std::fmt::Arguments<'_>) {
    let line = printable(&message.to_string());
    let _ = writeln!(std::io::stderr(), "shmlease: {line}");
}

fn print(text: &str) -> Result<(), Failure> {
    write_stdout(text.as_bytes())
}

fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::OS, format!("encoding JSON: {e}")))?;
    text.push('\n');
    print(&text)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`shmlease ls | head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::new(exit::OS, format!("writing to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        std::iter::once("shmlease").chain(line.split(' ')).map(OsString::from).collect()
    }

    /// The quick parser of `run` gives what clap gives, wherever it accepts the arguments;
    /// everything else it leaves to clap.
    #[test]
    fn the_quick_run_parser_agrees_with_clap_or_declines() {
        let accepted = [
            "run x -- true",
            "run x -- true -- --ttl 1s",
            "run x -- --",
            "run run -- run",
            "-t /tmp/t run x -- true",
            "--table=run run x -- true",
            "run -t shm:t x --allow-foreign-owner -- true",
            "--allow-world-writable run x --ttl 2s --wait 5m --label l -- sh -c run",
            "run -n x --kill-after 0 --conflict-exit-code 3 --on-request USR1 -- a b",
            "run x --permits 3 --fair -- a",
            "run x --permits +4 --conflict-exit-code 007 -- a",
            "run --shared x --wait forever -- a",
            "run --ttl=750ms x --on-request=none -- a",
            "run --label=a=b x -- a",
        ];
        for line in accepted {
            let quick = run::RunArgs::parse_quickly(&args(line))
                .unwrap_or_else(|| panic!("declined {line:?}"));
            let whole = Cli::try_parse_from(args(line)).expect(line);
            assert_eq!(format!("{quick:?}"), format!("{whole:?}"), "{line}");
        }
        let declined = [
            "run --help",
            "run -h",
            "--version run x -- true",
            "-V run x -- a",
            "run x",
            "run x true",
            "run x y -- a",
            "run x --",
            "run x --ttl 100ms -- a",
            "run x --ttl 5 -- a",
            "run x --ttl 1s --ttl 2s -- a",
            "run -n x --wait 1s -- a",
            "run -nt t x -- a",
            "run x --no-such-option -- a",
            "run x --permits 0 -- a",
            "run x --permits 129 -- a",
            "run x --conflict-exit-code 256 -- a",
            "run x --on-request KILL -- a",
            "run x --label= -- a",
            "run x --ttl -1s -- a",
            "run x --fair=1 -- a",
            "get run",
            "-t run ls",
            "acquire run --ttl 1s",
            "help run",
            "man",
            "-n run x -- a",
            "run -- -- a",
        ];
        for line in declined {
            assert!(run::RunArgs::parse_quickly(&args(line)).is_none(), "accepted {line:?}");
        }
    }

    /// Pieces of a `run` command line as people write them...
    const GOOD: &[&[&str]] = &[
        &["-n"],
        &["--no-wait"],
        &["-t", "tab"],
        &["--table", "run"],
        &["--table=t"],
        &["--ttl", "10s"],
        &["--ttl", "250ms"],
        &["--ttl=1m"],
        &["--wait", "forever"],
        &["--wait", "0"],
        &["--wait=2s"],
        &["--label", "lab"],
        &["--label=l"],
        &["--kill-after", "0"],
        &["--kill-after=1m"],
        &["--conflict-exit-code", "3"],
        &["--on-request", "USR1"],
        &["--on-request", "none"],
        &["--permits", "2"],
        &["--shared"],
        &["--fair"],
        &["--allow-foreign-owner"],
        &["--allow-world-writable"],
    ];

    /// ... and as they should not.
    const ODD: &[&[&str]] = &[
        &["x"],
        &["run"],
        &["--"],
        &["-t"],
        &["--ttl", "100ms"],
        &["--ttl"],
        &["--label", ""],
        &["--conflict-exit-code", "300"],
        &["--on-request=KILL"],
        &["--permits", "129"],
        &["-h"],
        &["--help"],
        &["-V"],
        &["ls"],
        &["-x"],
        &[""],
        &["-nt", "t"],
    ];

    fn piece() -> impl proptest::strategy::Strategy<Value = &'static [&'static str]> {
        use proptest::sample::select;
        proptest::prop_oneof![8 => select(GOOD), 1 => select(ODD)]
    }

    thread_local! {
        static ACCEPTED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// Any arrangement of these pieces before and after `run` and NAME, then `--
        /// CMD`: where the quick parser accepts, clap accepts and reads the same.
        #[test]
        fn the_quick_run_parser_reads_as_clap_reads(
            before in proptest::collection::vec(piece(), 0..2),
            after in proptest::collection::vec(piece(), 0..5),
            name_at in 0usize..5,
            cmd in proptest::collection::vec(piece(), 0..3),
        ) {
            let mut after: Vec<&[&str]> = after;
            after.insert(name_at.min(after.len()), &["x"]);
            let line: Vec<OsString> = std::iter::once("shmlease")
                .chain(before.concat())
                .chain(["run"])
                .chain(after.concat())
                .chain(["--", "cmd"])
                .chain(cmd.concat())
                .map(OsString::from)
                .collect();
            if let Some(quick) = run::RunArgs::parse_quickly(&line) {
                ACCEPTED.with(|n| n.set(n.get() + 1));
                let whole = Cli::try_parse_from(&line);
                proptest::prop_assert!(whole.is_ok(), "clap refuses {:?}: {:?}", line, whole.err());
                proptest::prop_assert_eq!(format!("{quick:?}"), format!("{:?}", whole.unwrap()));
            }
        }
    }

    /// The property above is not vacuous: it meets many lines the quick parser accepts.
    #[test]
    fn the_property_meets_accepted_lines() {
        the_quick_run_parser_reads_as_clap_reads();
        let n = ACCEPTED.with(|n| n.get());
        assert!(n >= 200, "only {n} of 2000 lines accepted");
    }
}
