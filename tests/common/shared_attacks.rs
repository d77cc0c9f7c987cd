//! Child roles for the attacks on shared names (`tests/shared_attacks.rs`).

use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use shmlease::{AcquireOptions, Error, Lease, LeaseTable};

use super::{
    env, env_ms, env_or, env_u64, open_table, release_at, revoke_at, say, say_tokens,
    with_forked_twin, Rng, SharedWords,
};

/// Words of the herd's shared file: word 0 counts violations, word 2 counts token-order
/// violations, word `MAX_RETURNED + i` is the largest token an acquisition of the
/// `i`-th name has returned so far (up to 5 names),
/// words `INSIDE..INSIDE + 256` are the members' "inside" cells (token, with bit 63 for
/// an exclusive holder; 0 when outside).
pub const VIOLATIONS: usize = 0;
pub const MAX_RETURNED: usize = 3;
pub const ORDER: usize = 2;
pub const INSIDE: usize = 8;
pub const CELLS: usize = 256;
const EXCLUSIVE_BIT: u64 = 1 << 63;

/// What a herd member did: acquisitions, violations, tokens; or what went wrong.
type MemberResult = Result<(u64, u64, Vec<u64>), String>;

/// A member of an adversarial mixed herd on `NAME` (and, with `NAMES`, a comma list of
/// names it picks from). For `RUN_MS`, `THREADS` threads (sharing this process's
/// handle; with `FORK=1` the process forks after opening the table and the child runs
/// as many) each loop: exclusive one time in `WRITE_EVERY`, shared otherwise; blocking
/// (timeout `WAIT_MS`) or, `TRY_PCT` percent of the time, try; TTL `TTL_MS`; sometimes
/// a keep-alive (`KEEPALIVE_PCT`), sometimes a renewal mid-hold; held for up to
/// `HOLD_US`. Each member has the cell `CELL + thread` (`+ THREADS` in the forked
/// child) in `WORDS`. Inside, a member publishes its token and looks at every other
/// cell: a holder of the conflicting kind there is a violation only if the table shows
/// both grants live at once (`get`) while this holder's `is_valid()` still says yes —
/// expiry of a slow holder is no violation. Every acquisition also checks that its
/// token is above the largest one returned before it started. Reports `DONE acquired
/// violations` and `TOKENS ...` per process.
pub fn role_sa_herd() -> i32 {
    let table = open_table();
    let threads = env_u64("THREADS") as usize;
    let base = env_u64("CELL") as usize;
    // The twin's members have the cells after this process's.
    with_forked_twin(&table, |table, prefix| {
        let first = if prefix.is_empty() { base } else { base + threads };
        herd_threads(table, first, threads, prefix)
    })
}

fn herd_threads(table: &LeaseTable, base: usize, threads: usize, prefix: &str) -> i32 {
    let words = SharedWords::open(&PathBuf::from(env("WORDS")));
    let results: Vec<MemberResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let words = &words;
                scope.spawn(move || herd_member(table, words, base + t))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("panicked".into()))).collect()
    });
    let (mut acquired, mut violations, mut tokens) = (0, 0, Vec::new());
    for r in results {
        match r {
            Ok((a, v, t)) => {
                acquired += a;
                violations += v;
                tokens.extend(t);
            }
            Err(e) => {
                say(&format!("{prefix}ERR"), e);
                return 20;
            }
        }
    }
    say_tokens(prefix, &tokens);
    say(&format!("{prefix}DONE"), format!("{acquired} {violations}"));
    0
}

/// Whether `get` shows grants with both tokens live (the oracle of a violation).
fn both_live(table: &LeaseTable, name: &str, a: u64, b: u64) -> bool {
    let Ok(Some(info)) = table.get(name) else { return false };
    let live = |t: u64| info.grants.iter().any(|g| g.token == t && !g.remaining.is_zero());
    live(a) && live(b)
}

/// Looks at every other cell while holding `lease` (exclusive if `write`): the number
/// of confirmed violations.
fn look(
    table: &LeaseTable,
    words: &SharedWords,
    name_cells: &[u64],
    name: &str,
    me: usize,
    lease: &Lease<'_>,
    write: bool,
) -> u64 {
    let mut found = 0;
    for (cell, &cell_name) in name_cells.iter().enumerate() {
        if cell == me || cell_name != name_cells[me] {
            continue;
        }
        let other = words.word(INSIDE + cell).load(SeqCst);
        if other == 0 {
            continue;
        }
        let other_write = other & EXCLUSIVE_BIT != 0;
        if !(write || other_write) {
            continue;
        }
        let other_token = other & !EXCLUSIVE_BIT;
        if lease.is_valid()
            && both_live(table, name, lease.token(), other_token)
            && lease.is_valid()
        {
            words.word(VIOLATIONS).fetch_add(1, SeqCst);
            eprintln!(
                "VIOLATION on {name}: {} {} beside {} {other_token}",
                if write { "exclusive" } else { "shared" },
                lease.token(),
                if other_write { "exclusive" } else { "shared" },
            );
            found += 1;
        }
    }
    found
}

fn herd_member(table: &LeaseTable, words: &SharedWords, me: usize) -> MemberResult {
    let names: Vec<String> = env_or("NAMES", &env("NAME")).split(',').map(str::to_owned).collect();
    let every = env_u64("WRITE_EVERY");
    let try_pct = env_u64("TRY_PCT");
    let keepalive_pct = env_or("KEEPALIVE_PCT", "0").parse::<u64>().unwrap();
    let ttl = env_ms("TTL_MS");
    let hold_us = env_u64("HOLD_US").max(1);
    let wait = Some(env_ms("WAIT_MS"));
    let end = Instant::now() + env_ms("RUN_MS");
    let mut rng = Rng::new(std::process::id() as u64 * 7919 + me as u64);
    // Each member sticks to the name its cell picks, so cells of one name are known.
    let name = names[me % names.len()].clone();
    let max_returned = words.word(MAX_RETURNED + me % names.len());
    let name_cells: Vec<u64> = (0..CELLS).map(|c| (c % names.len()) as u64).collect();
    let (mut acquired, mut violations, mut tokens) = (0u64, 0u64, Vec::new());
    while Instant::now() < end {
        let write = rng.below(every) == 0;
        let mut opts =
            if write { AcquireOptions::new() } else { AcquireOptions::new().shared(true) };
        if !rng.chance(try_pct) {
            opts = opts.wait(wait);
        }
        let floor = max_returned.load(SeqCst);
        let mut lease = match table.acquire_with(&name, ttl, &opts) {
            Ok(l) => l,
            Err(Error::Held { .. } | Error::TimedOut { .. } | Error::Busy { .. }) => {
                std::thread::yield_now();
                continue;
            }
            Err(Error::TableFull { .. }) if names.len() > 1 => continue,
            Err(e) => return Err(format!("acquire {name} (write {write}): {e:?}")),
        };
        acquired += 1;
        let token = lease.token();
        tokens.push(token);
        if token <= floor {
            words.word(ORDER).fetch_add(1, SeqCst);
            eprintln!("ORDER on {name}: token {token} after {floor} was returned");
        }
        max_returned.fetch_max(token, SeqCst);
        if rng.chance(keepalive_pct) {
            lease.keep_alive(ttl).map_err(|e| format!("keep_alive: {e:?}"))?;
        }
        if !lease.is_valid() {
            continue; // expired already (a slow start): nothing to protect
        }
        let cell = words.word(INSIDE + me);
        cell.store(token | if write { EXCLUSIVE_BIT } else { 0 }, SeqCst);
        violations += look(table, words, &name_cells, &name, me, &lease, write);
        let until = Instant::now() + Duration::from_micros(rng.below(hold_us));
        let mut renewed = false;
        while Instant::now() < until {
            if !renewed && rng.chance(1) {
                let _ = lease.renew(ttl);
                renewed = true;
            }
            std::hint::spin_loop();
        }
        violations += look(table, words, &name_cells, &name, me, &lease, write);
        cell.store(0, SeqCst);
        match lease.release() {
            Ok(()) | Err(Error::Lost { .. }) => {}
            Err(e) => return Err(format!("release: {e:?}")),
        }
    }
    Ok((acquired, violations, tokens))
}

/// Takes `NAME` (shared with `SHARED=1`, else exclusive; blocking for `WAIT_MS` if
/// given) for `TTL_MS`, optionally with a keep-alive (`KEEPALIVE=1`), reports `GOT
/// token` (or `TIMEDOUT`, `HELD`), then with `ACTION`: `forever` sleeps until killed;
/// `release_on_go` waits for the file `GO`, releases and reports `RELEASED`; `exit`
/// exits holding it.
pub fn role_sa_hold() -> i32 {
    let table = open_table();
    let mut opts = AcquireOptions::new().shared(env_or("SHARED", "0") == "1");
    if let Ok(ms) = std::env::var("SHMLEASE_IT_WAIT_MS") {
        opts = opts.wait(Some(Duration::from_millis(ms.parse().unwrap())));
    }
    say("START", std::process::id());
    let ttl = env_ms("TTL_MS");
    let mut lease = match table.acquire_with(&env("NAME"), ttl, &opts) {
        Ok(l) => l,
        Err(Error::TimedOut { .. }) => {
            say("TIMEDOUT", std::process::id());
            return 0;
        }
        Err(Error::Held { token, .. }) => {
            say("HELD", token);
            return 0;
        }
        Err(e) => {
            say("ERR", format!("acquire: {e:?}"));
            return 20;
        }
    };
    if env_or("KEEPALIVE", "0") == "1" {
        lease.keep_alive(ttl).expect("keep_alive");
    }
    say("GOT", format!("{} {}", lease.token(), lease.is_valid()));
    match env("ACTION").as_str() {
        "forever" => {
            std::thread::sleep(Duration::from_secs(120));
            21
        }
        "exit" => {
            std::mem::forget(lease);
            0
        }
        "release_on_go" => {
            let go = PathBuf::from(env("GO"));
            assert!(super::wait_for_file(&go, Duration::from_secs(60)), "GO never came");
            match lease.release() {
                Ok(()) => say("RELEASED", std::process::id()),
                Err(e) => say("LOST", format!("{e:?}")),
            }
            0
        }
        other => {
            say("ERR", format!("unknown action {other}"));
            22
        }
    }
}

/// Dies (SIGKILL) at crash point `STEP` of `OP` on the shared name `NAME` (TTL
/// `TTL_MS`): `shared` (a shared grant), `exclusive` (an exclusive grant of a shared
/// name with no holders: the head's grant and the drain), `convert` (the first shared
/// acquisition of a name held exclusively by the parent: `make_shared`, then the
/// refusal), `release_shared`, `release_exclusive`, `revoke`, `withdraw` (a shared
/// acquisition that starts while an exclusive drainer holds the head: the refusal and
/// the wait's announcement). Reports `DONE` if the operation finished first.
pub fn role_sa_crash() -> i32 {
    use shmlease::fault::{arm, Op};
    let table = open_table();
    let name = env("NAME");
    let ttl = env_ms("TTL_MS");
    let step = env_u64("STEP") as u32;
    let sh = AcquireOptions::new().shared(true);
    let r = match env("OP").as_str() {
        "shared" => {
            arm(Op::Grant, step);
            table.acquire_with(&name, ttl, &sh).map(std::mem::forget)
        }
        "exclusive" => {
            arm(Op::Grant, step);
            table.try_acquire(&name, ttl).map(std::mem::forget)
        }
        "convert" | "withdraw" => {
            arm(Op::Grant, step);
            match table.acquire_with(&name, ttl, &sh.wait(Some(Duration::from_millis(50)))) {
                Err(Error::Held { .. } | Error::TimedOut { .. }) => Ok(()),
                other => other.map(std::mem::forget),
            }
        }
        "release_shared" => release_at(step, table.acquire_with(&name, ttl, &sh).expect("shared")),
        "release_exclusive" => release_at(step, table.try_acquire(&name, ttl).expect("exclusive")),
        "revoke" => revoke_at(step, &table, &name),
        other => panic!("OP {other}"),
    };
    match r {
        Ok(()) => say("DONE", step),
        Err(e) => say("ERR", format!("{e:?}")),
    }
    0
}
