//! The checker: reads every log after the run and verifies the invariants.
//!
//! A process writes one log per stream of rounds: `w<id>.log`, or `w<id>.t<k>.log` for
//! each thread of a `threads` worker. Times of death, kills and stops are per process
//! (`WorkerFate`); everything else is per stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::controller::{Report, WorkerFate};
use super::{Config, Kind, Mode, LIVENESS_RECHECK_NS, MAX_SHARED, WIND_DOWN};

/// How long the library reuses a verdict that a holder is alive (`ALIVE_FOR_NS` in
/// src/identity.rs): a refusal up to this long after the holder died is honest.
const ALIVE_REUSE_NS: u64 = 1_000_000;

/// One log: a thread of rounds in a worker process.
struct Stream {
    wid: u64,
    /// `w12` or `w12.t3`.
    label: String,
    mode: Mode,
}

/// One grant, as reconstructed from its worker's log.
#[derive(Clone, Debug)]
struct Grant {
    sid: usize,
    wid: u64,
    name: String,
    token: u64,
    mode: String,
    /// Logged as a shared grant (`shared-…` tag).
    shared: bool,
    /// Logged as a fair acquisition (`fair-…` tag).
    fair: bool,
    ttl: u64,
    /// Attempt start, and return of the acquire.
    t_a: u64,
    g: u64,
    /// Lower bound of the current deadline (after renewals).
    d_lo: u64,
    /// A renewal was announced but its outcome never logged: (intent time, ttl).
    pending: Option<(u64, u64)>,
    /// Upper bound of every deadline this grant ever had (`u64::MAX`: unbounded yet).
    d_hi: u64,
    /// The largest TTL any renewal of it asked for (0: none).
    renew_ttl: u64,
    keep_alive: bool,
    /// Ending action and the time read before it.
    ending: Option<(String, u64)>,
    /// A detach was attempted: the holder record may say "detached" (so the holder's
    /// death does not end the grant), and renewals from then on are by token.
    detached: bool,
    /// The slot the table listed the grant in, right after it was made (`permits`).
    slot: Option<u32>,
    /// The start of the latest renewal or release that succeeded, and which it was.
    last_ok: Option<(u64, &'static str)>,
    /// Time after the release / drop returned (the grant is over by then).
    freed_at: Option<u64>,
    released_ok: bool,
    run_delay: u64,
}

impl Grant {
    /// A lower bound of the time the grant stopped being valid.
    fn end_lo(&self, death_lo: Option<u64>) -> u64 {
        let mut e = self.d_lo;
        if let Some((t_i, ttl)) = self.pending {
            e = e.min(t_i + ttl);
        }
        if let Some((how, t)) = &self.ending {
            if matches!(how.as_str(), "release" | "release-token" | "drop" | "expire") {
                e = e.min(*t);
            }
        }
        if let Some(d) = death_lo {
            e = e.min(d);
        }
        e
    }
}

/// A fair waiter's observation of its own place in a name's queue (a `W` line): the
/// `get` began at `s` and returned at `e`, and the place's deadline was at least `rem`
/// ns after `s`.
struct Seen {
    sid: usize,
    name: String,
    ticket: u64,
    s: u64,
    e: u64,
    rem: u64,
}

struct Refusal {
    sid: usize,
    name: String,
    token: u64,
    holder_pid: u32,
    /// 0: live-process holder record, 1: detached, 2: no record.
    holder_kind: u8,
    kind: String,
    t_a: u64,
    /// When the refusal returned.
    t_e: u64,
}

fn num(f: Option<&&str>) -> Option<u64> {
    f.and_then(|s| s.parse().ok())
}

/// Violations, each attributed to the modes of the workers involved.
#[derive(Default)]
struct Findings {
    list: Vec<String>,
    per_mode: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

impl Findings {
    fn flag(&mut self, kind: &str, modes: &[Mode], text: String) {
        self.list.push(format!("{kind}: {text}"));
        let modes: BTreeSet<Mode> = modes.iter().copied().collect();
        for m in modes {
            let c = self.per_mode.entry(m.as_str()).or_default();
            *c.entry("violations".into()).or_default() += 1;
            *c.entry(format!("violations: {kind}")).or_default() += 1;
        }
    }

    fn bump(&mut self, m: Mode, k: &str) {
        *self.per_mode.entry(m.as_str()).or_default().entry(k.to_string()).or_default() += 1;
    }
}

/// The logs of the run's workers: (process wid, label, file), sorted.
fn streams_of(dir: &Path, fates: &BTreeMap<u64, WorkerFate>) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_prefix('w').and_then(|s| s.strip_suffix(".log")) else {
                continue;
            };
            let wid = stem.split('.').next().and_then(|s| s.parse::<u64>().ok());
            if let Some(wid) = wid.filter(|w| fates.contains_key(w)) {
                out.push((wid, format!("w{stem}")));
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn check(
    cfg: &Config,
    dir: &Path,
    fates: &BTreeMap<u64, WorkerFate>,
    final_tokens: &HashMap<String, u64>,
    report: &mut Report,
) {
    let max_ttl = cfg.longest_ttl_ns();
    let layout = cfg.layout();
    let overfull = layout.total() > cfg.capacity() as usize;
    let mut grants: Vec<Grant> = Vec::new();
    let mut refusals: Vec<Refusal> = Vec::new();
    let mut places: Vec<Seen> = Vec::new();
    let mut streams: Vec<Stream> = Vec::new();
    let mut c: BTreeMap<&'static str, u64> = BTreeMap::new();
    let bump = |c: &mut BTreeMap<&'static str, u64>, k: &'static str| *c.entry(k).or_default() += 1;
    let mut v = Findings::default();
    // Last words of each stream.
    let mut exited: HashMap<usize, u64> = HashMap::new();

    // 6. Nobody failed: exit status and stderr.
    let logs = streams_of(dir, fates);
    for (&wid, fate) in fates {
        let err = std::fs::read_to_string(dir.join(format!("w{wid}.err"))).unwrap_or_default();
        if !err.trim().is_empty() {
            v.flag(
                "worker-failed",
                &[fate.mode],
                format!("worker {wid} (pid {}) wrote to stderr: {}", fate.pid, err.trim()),
            );
        }
        if fate.hung {
            v.flag(
                "worker-failed",
                &[fate.mode],
                format!(
                    "worker {wid} (pid {}) did not finish within {WIND_DOWN:?} after the run",
                    fate.pid
                ),
            );
        } else if fate.killed.is_none() && !fate.forked() {
            if fate.status.as_deref() != Some("exit status: 0") {
                v.flag(
                    "worker-failed",
                    &[fate.mode],
                    format!("worker {wid} (pid {}) ended with {:?}", fate.pid, fate.status),
                );
            }
        } else if fate.killed.is_none() {
            // Forked: its parent reaps it; its last log line tells whether it finished.
            let text = std::fs::read_to_string(dir.join(format!("w{wid}.log"))).unwrap_or_default();
            let bad_status = fate.status.as_deref().is_some_and(|s| s.starts_with("signal"));
            if !text.lines().any(|l| l.starts_with("Z ")) || bad_status {
                v.flag(
                    "worker-failed",
                    &[fate.mode],
                    format!(
                        "forked worker {wid} (pid {}, parent {:?}) ended before the end of the run ({:?})",
                        fate.pid, fate.parent, fate.status
                    ),
                );
            }
        }
    }

    for (wid, label) in &logs {
        let wid = *wid;
        let fate = &fates[&wid];
        let sid = streams.len();
        streams.push(Stream { wid, label: label.clone(), mode: fate.mode });
        let mode = fate.mode;
        let text = std::fs::read_to_string(dir.join(format!("{label}.log"))).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        if complete.len() + 1 < text.len() {
            bump(&mut c, "torn log lines (killed mid-write)");
        }
        let mut open: HashMap<(String, u64), usize> = HashMap::new();
        let first = grants.len();
        for line in complete.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let key =
                || (f[1].to_string(), f.get(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0));
            match f[0] {
                "G" if f.len() >= 10 => {
                    let g = Grant {
                        sid,
                        wid,
                        name: f[1].into(),
                        token: num(f.get(2)).unwrap_or(0),
                        mode: f[3].into(),
                        shared: f[3].starts_with("shared-"),
                        fair: f[3].starts_with("fair-"),
                        ttl: num(f.get(4)).unwrap_or(0),
                        t_a: num(f.get(5)).unwrap_or(0),
                        g: num(f.get(6)).unwrap_or(0),
                        d_lo: num(f.get(7)).unwrap_or(0),
                        pending: None,
                        d_hi: num(f.get(8)).unwrap_or(u64::MAX),
                        renew_ttl: 0,
                        keep_alive: false,
                        ending: None,
                        detached: false,
                        slot: None,
                        last_ok: None,
                        freed_at: None,
                        released_ok: false,
                        run_delay: num(f.get(9)).unwrap_or(0),
                    };
                    open.insert(key(), grants.len());
                    if layout.kind(&g.name) == Kind::Shared {
                        v.bump(mode, if g.shared { "shared grants" } else { "exclusive grants" });
                    }
                    if g.fair {
                        v.bump(mode, "fair grants");
                    }
                    grants.push(g);
                    bump(&mut c, "grants");
                    v.bump(mode, "grants");
                }
                "R" if f.len() >= 8 => {
                    refusals.push(Refusal {
                        sid,
                        name: f[1].into(),
                        token: num(f.get(2)).unwrap_or(0),
                        holder_pid: num(f.get(3)).unwrap_or(0) as u32,
                        holder_kind: num(f.get(4)).unwrap_or(2) as u8,
                        kind: f[5].into(),
                        t_a: num(f.get(6)).unwrap_or(0),
                        t_e: num(f.get(7)).unwrap_or(u64::MAX),
                    });
                    let k = if f[5] == "held" { "refusals: held" } else { "refusals: timed out" };
                    bump(&mut c, k);
                    v.bump(mode, k);
                }
                "Q" if f.len() >= 5 => {
                    let full = f[2] == "full";
                    let k = if full { "refusals: table full" } else { "refusals: busy" };
                    bump(&mut c, k);
                    v.bump(mode, k);
                    if !full {
                        // Why (the message follows the times).
                        let why = f[5..].join(" ");
                        let reason = if why.contains("held its lock") {
                            "the table lock held past patience"
                        } else if why.contains("tried to evict") {
                            "no idle name could be evicted"
                        } else if why.contains("seats of a name") {
                            "seats kept moving"
                        } else if why.contains("fair queue") {
                            "the fair queue is full (says the library)"
                        } else {
                            "other"
                        };
                        v.bump(mode, &format!("refusals: busy: {reason}"));
                    }
                    // A full table is legitimate only when the run has more names than
                    // slots; the table lock held past patience only next to a filler.
                    if (full && !overfull) || (!full && !cfg.has_filler()) {
                        v.flag(
                            "unexpected-error",
                            &[mode],
                            format!(
                                "worker {label}: {line} (the run has {} names for {} slots)",
                                layout.total(),
                                cfg.capacity()
                            ),
                        );
                    }
                }
                "E" => {
                    bump(&mut c, "unexpected errors");
                    let kind =
                        if f.get(4) == Some(&"corrupt") { "corrupt" } else { "unexpected-error" };
                    v.flag(kind, &[mode], format!("worker {label}: {line}"));
                }
                "H" if f.len() >= 11 => {
                    let token = num(f.get(2)).unwrap_or(0);
                    if f[3] == "1" && f[4] == "1" {
                        v.bump(mode, "holder checks (lease valid across get())");
                        let seen = num(f.get(5)).unwrap_or(0);
                        let hp = num(f.get(6)).unwrap_or(0) as u32;
                        let hd = f[7];
                        if seen != token || hp != fate.pid || hd != "0" {
                            let who = match hd {
                                "2" => "no holder record".to_string(),
                                "1" => format!("a detached holder (pid {hp})"),
                                _ => format!("holder pid {hp}"),
                            };
                            v.flag(
                                "missing-holder",
                                &[mode],
                                format!(
                                    "worker {label} (pid {}) holds {} with token {token}, valid before and after get(), which says token {seen}, {who}, state {}",
                                    fate.pid, f[1], f[8]
                                ),
                            );
                        }
                    } else {
                        v.bump(mode, "holder checks skipped (lease ended during get())");
                    }
                }
                "P" if f.len() >= 12 => {
                    if f[3] == "1" && f[4] == "1" {
                        v.bump(mode, "permit checks (lease valid across get())");
                        let name = f[1];
                        let n = u64::from(layout.permits(name));
                        let (kind, live) = (num(f.get(5)).unwrap_or(0), num(f.get(6)).unwrap_or(0));
                        let slot = f[7].parse::<u32>().ok();
                        let hp = num(f.get(8)).unwrap_or(0) as u32;
                        let hd = f[9];
                        if kind != n {
                            v.flag(
                                "wrong-kind",
                                &[mode],
                                format!("worker {label}: get({name}) says {kind} permits; the run uses {n}"),
                            );
                        }
                        if live > n {
                            v.flag(
                                "listed-over-permits",
                                &[mode],
                                format!("worker {label}: get({name}) lists {live} live grants of {n} permits"),
                            );
                        }
                        match (slot, open.get(&key())) {
                            (Some(slot), Some(&i)) if hp == fate.pid && hd == "0" => {
                                grants[i].slot = Some(slot)
                            }
                            _ => {
                                let who = match (slot, hd) {
                                    (None, _) => "does not list it".to_string(),
                                    (_, "2") => "lists it without a holder record".to_string(),
                                    (_, "1") => {
                                        format!("lists it with a detached holder (pid {hp})")
                                    }
                                    _ => format!("lists it with holder pid {hp}"),
                                };
                                v.flag(
                                    "missing-holder",
                                    &[mode],
                                    format!(
                                        "worker {label} (pid {}) holds a permit of {name} with token {}, valid before and after get(), which {who}",
                                        fate.pid, f[2]
                                    ),
                                );
                            }
                        }
                    } else {
                        v.bump(mode, "permit checks skipped (lease ended during get())");
                    }
                }
                "S" if f.len() >= 12 => {
                    if f[3] == "1" && f[4] == "1" {
                        v.bump(mode, "shared checks (lease valid across get())");
                        let name = f[1];
                        let kind = f[5];
                        let slot = f[6].parse::<u32>().ok();
                        let listed_shared = f[7];
                        let hp = num(f.get(8)).unwrap_or(0) as u32;
                        let hd = f[9];
                        let Some(&i) = open.get(&key()) else { continue };
                        let ours_shared = grants[i].shared;
                        // A shared grant makes the name shared; an exclusive grant may be
                        // of a name still exclusive (no shared grant since it was bound).
                        if ours_shared && kind != "shared"
                            || !matches!(kind, "shared" | "exclusive")
                        {
                            v.flag(
                                "wrong-kind",
                                &[mode],
                                format!("worker {label}: get({name}) says kind {kind} while it holds a {} grant (token {})", if ours_shared { "shared" } else { "exclusive" }, f[2]),
                            );
                        }
                        match slot {
                            Some(slot) if hp == fate.pid && hd == "0" => {
                                grants[i].slot = Some(slot);
                                if (listed_shared == "1") != ours_shared {
                                    v.flag(
                                        "grant-kind",
                                        &[mode],
                                        format!(
                                            "worker {label}: holds {name} token {} as {}, but get() lists it as {}",
                                            f[2],
                                            if ours_shared { "shared" } else { "exclusive" },
                                            if listed_shared == "1" { "shared" } else { "exclusive" }
                                        ),
                                    );
                                }
                            }
                            _ => v.flag(
                                "missing-holder",
                                &[mode],
                                format!(
                                    "worker {label} (pid {}) holds {name} with token {}, valid before and after get(), which lists it in slot {:?} with holder pid {hp} (detached: {hd})",
                                    fate.pid, f[2], slot
                                ),
                            ),
                        }
                    } else {
                        v.bump(mode, "shared checks skipped (lease ended during get())");
                    }
                }
                "W" if f.len() >= 6 => {
                    v.bump(mode, "queue observations (own place seen in get().queue)");
                    places.push(Seen {
                        sid,
                        name: f[1].into(),
                        ticket: num(f.get(2)).unwrap_or(0),
                        s: num(f.get(3)).unwrap_or(0),
                        e: num(f.get(4)).unwrap_or(u64::MAX),
                        rem: num(f.get(5)).unwrap_or(0),
                    });
                }
                "M" => v.bump(mode, "main thread seen exited (state Z)"),
                "K" => {
                    if let Some(&i) = open.get(&key()) {
                        grants[i].keep_alive = true;
                        grants[i].d_hi = u64::MAX;
                        bump(&mut c, "keep-alives");
                    }
                }
                "N" if f.len() >= 5 => {
                    if let Some(&i) = open.get(&key()) {
                        let ttl = num(f.get(3)).unwrap_or(0);
                        grants[i].pending = Some((num(f.get(4)).unwrap_or(0), ttl));
                        grants[i].renew_ttl = grants[i].renew_ttl.max(ttl);
                    }
                }
                "D" if f.len() >= 5 => {
                    if let Some(&i) = open.get(&key()) {
                        let gr = &mut grants[i];
                        let intent = gr.pending.take();
                        if gr.detached {
                            let k = if f[3] == "ok" {
                                "renewals by token"
                            } else {
                                "renewals by token refused (lost)"
                            };
                            v.bump(mode, k);
                        }
                        if f[3] == "ok" && f.len() >= 7 {
                            // 9. A renewal that began after every deadline the grant ever
                            //    had must fail: an expired grant is never revived.
                            if let Some((t_i, _)) = intent {
                                if gr.d_hi != u64::MAX && t_i > gr.d_hi {
                                    let (name, token, d_hi) = (gr.name.clone(), gr.token, gr.d_hi);
                                    v.flag(
                                        "stale-success",
                                        &[mode],
                                        format!(
                                            "worker {label}: renewing {name} token {token} succeeded, but the call began at {t_i}, {} us after an upper bound {d_hi} of every deadline it had",
                                            (t_i - d_hi) / 1000
                                        ),
                                    );
                                }
                                gr.last_ok = Some((t_i, "renewal"));
                            }
                            gr.d_lo = num(f.get(5)).unwrap_or(0);
                            if gr.d_hi != u64::MAX {
                                gr.d_hi = gr.d_hi.max(num(f.get(6)).unwrap_or(u64::MAX));
                            }
                            bump(&mut c, "renewals");
                        } else {
                            bump(&mut c, "renewals refused (lost)");
                            let t_r = num(f.get(4)).unwrap_or(u64::MAX);
                            let why = f.get(5).copied().unwrap_or("");
                            if t_r < gr.d_lo && !why.starts_with("error") {
                                let (name, token, d_lo) = (gr.name.clone(), gr.token, gr.d_lo);
                                v.flag(
                                    "unexpected-loss",
                                    &[mode],
                                    format!(
                                        "worker {label}: renewing {name} token {token} failed ({why}) by {t_r}, {} us before the deadline's lower bound {d_lo}",
                                        (d_lo - t_r) / 1000
                                    ),
                                );
                            }
                        }
                    }
                }
                "C" if f.len() >= 10 => {
                    if f[9] != "1" {
                        bump(&mut c, "record taken over after own expiry (legit)");
                    } else {
                        let writer = num(f.get(4)).unwrap_or(0) as u32;
                        let mut modes = vec![mode];
                        modes.extend(
                            fates.values().filter(|w| w.pid == writer).map(|w| w.mode).next_back(),
                        );
                        v.flag(
                            "in-lease-overwrite",
                            &modes,
                            format!(
                                "worker {label}: record of {} overwritten by token {} (pid {}) while token {} still held it (clock {} < deadline lower bound {}: {}, is_valid(): {})",
                                f[1], f[3], f[4], f[2], f[5], f[6], f[8] == "1", f[7] == "1"
                            ),
                        );
                    }
                }
                "L" if f.len() >= 5 => {
                    bump(&mut c, "keep-alive reported loss");
                    if let Some(&i) = open.get(&key()) {
                        let gr = &grants[i];
                        let t = num(f.get(3)).unwrap_or(u64::MAX);
                        if t < gr.d_lo {
                            v.flag(
                                "unexpected-loss",
                                &[mode],
                                format!(
                                    "worker {label}: the keep-alive of {} token {} reported it lost ({}) by {t}, {} us before its first deadline's lower bound {}",
                                    gr.name, gr.token, f[4], (gr.d_lo - t) / 1000, gr.d_lo
                                ),
                            );
                        }
                    }
                }
                "X" if f.len() >= 5 => {
                    if let Some(&i) = open.get(&key()) {
                        grants[i].ending = Some((f[3].into(), num(f.get(4)).unwrap_or(0)));
                        grants[i].detached |= f[3] == "detach";
                    }
                }
                "Y" if f.len() >= 6 => {
                    // A detached permit lives on by its token: its renewals and release
                    // by token follow.
                    let lives_on =
                        f[3] == "detach" && f[4] == "ok" && layout.kind(f[1]) != Kind::Exclusive;
                    let found =
                        if lives_on { open.get(&key()).copied() } else { open.remove(&key()) };
                    if let Some(i) = found {
                        let gr = &mut grants[i];
                        let t = num(f.get(5)).unwrap_or(0);
                        match f[3] {
                            "release" | "release-token" | "drop" | "expire" => {
                                gr.freed_at = Some(t)
                            }
                            _ => {}
                        }
                        let released = matches!(f[3], "release" | "release-token") && f[4] == "ok";
                        gr.released_ok = released;
                        if let (true, Some((_, t_x))) = (released, &gr.ending) {
                            gr.last_ok = Some((*t_x, "release"));
                        }
                        bump(
                            &mut c,
                            match (f[3], f[4]) {
                                ("release", "ok") => "endings: released",
                                ("release", _) => "endings: release found it lost",
                                ("release-token", "ok") => {
                                    "endings: detached, then released by token"
                                }
                                ("release-token", _) => {
                                    "endings: detached, release by token found it lost"
                                }
                                ("drop", _) => "endings: dropped",
                                ("forget", _) => "endings: forgotten (mem::forget)",
                                ("detach", _) => "endings: detached",
                                _ => "endings: let expire, then dropped",
                            },
                        );
                    }
                }
                "Z" => {
                    exited.insert(sid, num(f.get(1)).unwrap_or(0));
                }
                "B" => {}
                _ => bump(&mut c, "unparsable log lines"),
            }
        }
        // Deadlines we could not follow (a keep-alive thread renewing in the background,
        // a renewal whose outcome was never logged because the worker was killed) are
        // bounded by the worker's death: nothing renews after it.
        let death_hi = fate.reaped.unwrap_or(u64::MAX);
        for gr in &mut grants[first..] {
            if gr.d_hi == u64::MAX || gr.pending.is_some() {
                // Any renewal (a keep-alive's, or by token after a detach) came before
                // the death: the longest TTL asked for bounds how far past it.
                let ttl = gr.pending.map_or(gr.ttl, |p| p.1).max(gr.ttl).max(gr.renew_ttl);
                let bound = death_hi.saturating_add(ttl);
                gr.d_hi = if gr.d_hi == u64::MAX { bound } else { gr.d_hi.max(bound) };
            }
        }
    }
    let label = |g: &Grant| streams[g.sid].label.as_str();
    let mode_of = |g: &Grant| streams[g.sid].mode;

    // A lower bound of a stream's death: before we sent SIGKILL (to it or to the
    // ancestor it died with), or its last words.
    let death_lo = |g: &Grant| -> Option<u64> {
        let f = &fates[&g.wid];
        match f.killed {
            Some(k) => Some(k.0),
            None => Some(exited.get(&g.sid).copied().unwrap_or(f.spawned)),
        }
    };

    // 1. Exclusivity: at no instant more validity intervals of a name than it has
    //    permits (one: no two overlap); and for a name with permits, none of two grants
    //    the table listed in the same seat slot.
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in grants.iter().enumerate() {
        by_name.entry(g.name.as_str()).or_default().push(i);
    }
    let interval = |i: usize| (grants[i].g, grants[i].end_lo(death_lo(&grants[i])), i);
    for (name, idx) in &by_name {
        if layout.kind(name) == Kind::Shared {
            let iv: Vec<_> = idx.iter().map(|&i| interval(i)).collect();
            let m = mode_of(&grants[idx[0]]);
            let (most, overlaps) = shared_sweep(
                iv,
                |i| grants[i].shared,
                |kind, live, (s, e, i)| {
                    let b = &grants[i];
                    let mut modes = vec![mode_of(b)];
                    let mut others = Vec::new();
                    for &(pe, pi) in live {
                        let a = &grants[pi];
                        modes.push(mode_of(a));
                        others.push(format!(
                            "{} token {} (worker {}, valid [{}, {pe}])",
                            if a.shared { "shared" } else { "exclusive" },
                            a.token,
                            label(a),
                            a.g
                        ));
                    }
                    v.flag(
                    kind,
                    &modes,
                    format!(
                        "on {name}: {} token {} (worker {}, valid from {s} to {e}) began while {} grants were valid: {}",
                        if b.shared { "shared" } else { "exclusive" },
                        b.token, label(b), live.len(), others.join(", ")
                    ),
                );
                },
            );
            let k = format!("most shared grants valid at once on {name}");
            let e = v.per_mode.entry(m.as_str()).or_default().entry(k).or_default();
            *e = (*e).max(most as u64);
            let k = "shared grants begun while another was valid".to_string();
            *v.per_mode.entry(m.as_str()).or_default().entry(k).or_default() += overlaps;
            continue;
        }
        let n = layout.permits(name) as usize;
        let iv: Vec<_> = idx.iter().map(|&i| interval(i)).collect();
        let most = crowded(iv, n, |live, (s, e, i)| {
            let b = &grants[i];
            if n == 1 {
                let (pe, pi) = live[live.len() - 1];
                let a = &grants[pi];
                v.flag(
                    "overlap",
                    &[mode_of(a), mode_of(b)],
                    format!(
                        "on {name}: token {} (worker {}, valid [{}, {}]) and token {} (worker {}, valid from {} to {}) overlap by {} ns",
                        a.token, label(a), a.g, pe, b.token, label(b), s, e, pe.min(e) - s
                    ),
                );
                return;
            }
            let mut modes = vec![mode_of(b)];
            let mut others = Vec::new();
            for &(pe, pi) in live {
                let a = &grants[pi];
                modes.push(mode_of(a));
                others.push(format!(
                    "token {} (worker {}, valid [{}, {pe}])",
                    a.token,
                    label(a),
                    a.g
                ));
            }
            v.flag(
                "over-permits",
                &modes,
                format!(
                    "on {name} ({n} permits): token {} (worker {}, valid from {s} to {e}) began while {} grants were valid: {}",
                    b.token, label(b), live.len(), others.join(", ")
                ),
            );
        });
        if n > 1 {
            let m = mode_of(&grants[idx[0]]);
            let k = format!("most grants valid at once on {name} ({n} permits)");
            let e = v.per_mode.entry(m.as_str()).or_default().entry(k).or_default();
            *e = (*e).max(most as u64);
            let mut by_seat: BTreeMap<u32, Vec<(u64, u64, usize)>> = BTreeMap::new();
            for &i in idx {
                if let Some(slot) = grants[i].slot {
                    by_seat.entry(slot).or_default().push(interval(i));
                }
            }
            for (slot, iv) in by_seat {
                crowded(iv, 1, |live, (s, e, i)| {
                    let (pe, pi) = live[live.len() - 1];
                    let (a, b) = (&grants[pi], &grants[i]);
                    v.flag(
                        "seat-overlap",
                        &[mode_of(a), mode_of(b)],
                        format!(
                            "on {name}, seat in slot {slot}: token {} (worker {}, valid [{}, {pe}]) and token {} (worker {}, valid from {s} to {e}) overlap by {} ns",
                            a.token, label(a), a.g, b.token, label(b), pe.min(e) - s
                        ),
                    );
                });
            }
        }
    }

    // 2. Fencing: tokens strictly increase in grant order, never repeat, and the final
    //    grant is above all of them.
    for (name, idx) in &by_name {
        let mut sorted: Vec<usize> = idx.clone();
        sorted.sort_by_key(|&i| grants[i].token);
        for w in sorted.windows(2) {
            let (a, b) = (&grants[w[0]], &grants[w[1]]);
            if a.token == b.token {
                v.flag(
                    "token-reuse",
                    &[mode_of(a), mode_of(b)],
                    format!(
                        "token {} of {name} handed out twice (workers {} and {})",
                        a.token,
                        label(a),
                        label(b)
                    ),
                );
            }
        }
        // X returned before Y's attempt began, so X was granted first: token X < token Y.
        let mut suffix_min_g: Vec<(u64, usize)> = vec![(u64::MAX, usize::MAX); sorted.len() + 1];
        for k in (0..sorted.len()).rev() {
            let gi = sorted[k];
            suffix_min_g[k] = suffix_min_g[k + 1].min((grants[gi].g, gi));
        }
        for (k, &y) in sorted.iter().enumerate() {
            let (min_g, x) = suffix_min_g[k + 1];
            if min_g < grants[y].t_a && grants[x].token > grants[y].token {
                let (gx, gy) = (&grants[x], &grants[y]);
                v.flag(
                    "token-order",
                    &[mode_of(gx), mode_of(gy)],
                    format!(
                        "on {name}: token {} (worker {}) was granted before token {} (worker {}) was even asked for",
                        gx.token, label(gx), gy.token, label(gy)
                    ),
                );
            }
        }
        if let (Some(&last), Some(&fin)) = (sorted.last(), final_tokens.get(*name)) {
            if fin <= grants[last].token {
                v.flag(
                    "token-order",
                    &[mode_of(&grants[last])],
                    format!(
                        "final grant of {name} has token {fin}, not above {}",
                        grants[last].token
                    ),
                );
            }
        }
    }

    // 9. Only the holder of a live grant renews or releases it: a renewal or release
    //    that succeeded must have begun before any grant that replaced it was returned
    //    — for an exclusive name, any grant of the name with a larger token; for a name
    //    with permits, a grant with a larger token that the table listed in the same
    //    seat slot. (A renewal that began after the grant's every deadline is checked
    //    as the log is read.)
    let mut lines: BTreeMap<(&str, Option<u32>), Vec<usize>> = BTreeMap::new();
    for (i, g) in grants.iter().enumerate() {
        match (layout.kind(&g.name), g.slot) {
            (Kind::Exclusive, _) => lines.entry((g.name.as_str(), None)).or_default().push(i),
            (_, Some(slot)) => lines.entry((g.name.as_str(), Some(slot))).or_default().push(i),
            _ => {}
        }
    }
    for ((name, slot), mut idx) in lines {
        idx.sort_by_key(|&i| grants[i].token);
        let mut later: (u64, usize) = (u64::MAX, usize::MAX); // earliest return after
        for &x in idx.iter().rev() {
            let gx = &grants[x];
            if let (Some((t, op)), (g_y, y)) = (gx.last_ok, later) {
                if g_y < t {
                    let gy = &grants[y];
                    let seat =
                        slot.map_or(String::new(), |s| format!(" in the same seat (slot {s})"));
                    v.flag(
                        "stale-success",
                        &[mode_of(gx), mode_of(gy)],
                        format!(
                            "on {name}: a {op} of token {} (worker {}) that began at {t} succeeded, though token {} (worker {}) had been granted{seat} by {g_y}",
                            gx.token, label(gx), gy.token, label(gy)
                        ),
                    );
                }
            }
            later = later.min((gx.g, x));
        }
    }

    // 3. Reclaim: a refusal may only name a grant that could still be live when the
    //    refusing attempt started: before its deadline's upper bound, before it was
    //    released, and (for a live-process holder record) before its process was reaped.
    let by_token: HashMap<(&str, u64), usize> =
        grants.iter().enumerate().map(|(i, g)| ((g.name.as_str(), g.token), i)).collect();
    let pid_worker = |pid: u32, at: u64| -> Option<u64> {
        fates
            .iter()
            .filter(|(_, f)| f.pid == pid && f.spawned <= at)
            .max_by_key(|(_, f)| f.spawned)
            .map(|(&w, _)| w)
    };
    // A fair acquisition's refusal may name a place's ticket instead of a grant's token
    // (tickets and tokens are different counters): fair names' refusals are not checked.
    for r in refusals.iter().filter(|r| !layout.is_fair(&r.name)) {
        let gi = by_token.get(&(r.name.as_str(), r.token)).copied();
        let holder_wid = match gi {
            Some(i) => Some(grants[i].wid),
            // The holder was seen during the attempt, so it existed before the refusal
            // returned: the latest process with that pid started by then (a pid is
            // reused; a waiter can be refused by a holder started after it began).
            None if r.holder_pid != 0 => pid_worker(r.holder_pid, r.t_e),
            None => None,
        };
        let mut avail = u64::MAX;
        let mut why = String::new();
        if let Some(i) = gi {
            let g = &grants[i];
            if g.d_hi < avail {
                avail = g.d_hi;
                why = "its deadline had certainly passed".into();
            }
            if let Some(t) = g.freed_at {
                if t < avail {
                    avail = t;
                    why = "it had been released".into();
                }
            }
        } else if let Some(w) = holder_wid {
            // Grant not logged: its worker was killed right after acquiring.
            if let Some(t) = fates[&w].reaped {
                avail = t + max_ttl;
                why = "its unlogged holder was dead for longer than the largest TTL".into();
            }
        } else {
            bump(&mut c, "refusals naming an unlogged grant");
        }
        if r.holder_kind == 0 {
            if let Some(w) = holder_wid {
                // The library reuses an "alive" verdict on a holder for up to
                // ALIVE_REUSE_NS (src/identity.rs), so a refusal may name a holder that
                // died less than that before the attempt.
                if let Some(t) = fates[&w].reaped.map(|t| t + ALIVE_REUSE_NS) {
                    if t < avail {
                        avail = t;
                        why = format!(
                            "its holder (pid {}, worker {w}) had been reaped more than 1 ms",
                            r.holder_pid
                        );
                    }
                }
            }
        }
        if r.t_a > avail {
            let mut modes = vec![streams[r.sid].mode];
            modes.extend(holder_wid.map(|w| fates[&w].mode));
            v.flag(
                "stale-refusal",
                &modes,
                format!(
                    "worker {} was refused {} ({}) at {} by token {}, but {why} at {avail} ({} us earlier)",
                    streams[r.sid].label, r.name, r.kind, r.t_a, r.token, (r.t_a - avail) / 1000
                ),
            );
        }
    }

    // 3b. A name with N permits refuses only when N grants are live: each of the N seats
    //     an attempt looks at holds a grant at that look. So at least N grants must
    //     possibly be live during the attempt: begun before the refusal returned, and
    //     not certainly over when the attempt began (before an upper bound of every
    //     deadline, before the release returned, and, unless detached, before 1 ms
    //     after the holder was seen dead). A grant whose log line a kill lost is
    //     counted too: one for every killed `permits` process alive during the attempt.
    let unlogged: Vec<(u64, u64)> = fates
        .values()
        .filter(|f| f.mode == Mode::Permits && f.killed.is_some())
        .map(|f| (f.spawned, f.reaped.map_or(u64::MAX, |t| t + ALIVE_REUSE_NS)))
        .collect();
    let mut refused: BTreeMap<&str, Vec<&Refusal>> = BTreeMap::new();
    // A fair acquisition is refused while others wait in line, even with a permit free:
    // fair names are not checked. Nor are names in a table that can be full: a seat that
    // cannot be bound for want of a free slot is no permit, and the library then answers
    // `Held` with the seats it has (src/table/permits.rs, `attempt_permit_locked`).
    let counted =
        |r: &&Refusal| matches!(layout.kind(&r.name), Kind::Permits(_)) && !layout.is_fair(&r.name);
    for r in refusals.iter().filter(counted) {
        if overfull {
            v.bump(
                streams[r.sid].mode,
                "refusals not checked against the permits (table may be full)",
            );
            continue;
        }
        refused.entry(r.name.as_str()).or_default().push(r);
    }
    for (name, mut rs) in refused {
        let n = layout.permits(name) as usize;
        let mut live: Vec<(u64, u64)> = unlogged.clone();
        for &i in by_name.get(name).map_or(&[][..], |v| v.as_slice()) {
            let g = &grants[i];
            let mut end = g.d_hi;
            if let Some(t) = g.freed_at {
                end = end.min(t);
            }
            if !g.detached {
                if let Some(t) = fates[&g.wid].reaped {
                    end = end.min(t + ALIVE_REUSE_NS);
                }
            }
            live.push((g.t_a, end));
        }
        live.sort_unstable();
        rs.sort_by_key(|r| r.t_e);
        let mut begun: BTreeSet<(u64, usize)> = BTreeSet::new();
        let mut next = 0;
        for r in rs {
            while next < live.len() && live[next].0 < r.t_e {
                begun.insert((live[next].1, next));
                next += 1;
            }
            let possible = begun.range((r.t_a + 1, 0)..).take(n).count();
            v.bump(streams[r.sid].mode, "refusals checked against the permits held");
            if possible < n {
                v.flag(
                    "refused-with-free-permit",
                    &[streams[r.sid].mode],
                    format!(
                        "worker {} was refused {name} ({}, {n} permits, token {}) between {} and {}, but at most {possible} grants of it can have been live then",
                        streams[r.sid].label, r.kind, r.token, r.t_a, r.t_e
                    ),
                );
            }
        }
    }

    // 4. Reclaims: a grant taken over without having been released. When the holder was
    //    killed, measure how long its lease lay unused after it became available (the
    //    holder reaped, or its deadline's upper bound). A waiter blocked since before
    //    that must get it within the 50 ms liveness re-check (which also covers a
    //    deadline shortened by a renewal while it slept) plus slack, minus the time it
    //    spent waiting for a CPU; a waiter that was itself stopped is excused.
    let (mut lat_max, mut lat_sum, mut lat_n) = (0i64, 0i64, 0u64);
    let (mut wlat_max, mut wlat_n) = (0i64, 0u64);
    // Consecutive grants of a name with permits are no hand-over: exclusive names only.
    for (name, idx) in by_name.iter().filter(|(name, _)| layout.kind(name) == Kind::Exclusive) {
        let mut sorted: Vec<usize> = idx.clone();
        sorted.sort_by_key(|&i| grants[i].token);
        for w in sorted.windows(2) {
            let (p, q) = (&grants[w[0]], &grants[w[1]]);
            let dropped = p.ending.as_ref().is_some_and(|e| e.0 == "drop" || e.0 == "expire");
            if p.released_ok || (dropped && p.freed_at.is_some_and(|t| t <= q.g)) {
                continue;
            }
            bump(&mut c, "reclaims (taken without a release)");
            let fate = &fates[&p.wid];
            let detached = p.detached;
            let mut avail = p.d_hi;
            if let Some((t_kill, t_reaped)) = fate.killed {
                if !p.freed_at.is_some_and(|t| t <= t_kill) && p.d_hi > t_kill {
                    bump(&mut c, "reclaims of a lease live at its holder's kill");
                    if !detached {
                        avail = avail.min(t_reaped);
                    }
                    // From the SIGKILL to the next grant of the name.
                    let lat = q.g.saturating_sub(t_kill) as i64;
                    lat_max = lat_max.max(lat);
                    lat_sum += lat;
                    lat_n += 1;
                    if q.g < p.d_lo {
                        bump(&mut c, "...of which before its deadline (dead)");
                    }
                }
            }
            // A fair waiter may be behind places that are passed only once their holder's
            // death is provable or their TTL (2 s) ran out: no bound is checked there.
            let queued = layout.is_fair(name);
            if q.mode != "try" && q.mode != "fill" && q.t_a <= avail && !queued {
                let stopped = fates[&q.wid].stops.iter().any(|&(a, b)| a < q.g && b > q.t_a);
                if !stopped {
                    let lat = q.g as i64 - avail as i64 - q.run_delay as i64;
                    wlat_max = wlat_max.max(lat);
                    wlat_n += 1;
                    let bound = LIVENESS_RECHECK_NS + cfg.reclaim_slack.as_nanos() as u64;
                    if lat > bound as i64 {
                        v.flag(
                            "slow-reclaim",
                            &[mode_of(p), mode_of(q)],
                            format!(
                                "of {name}: token {} (worker {}) was available by {avail}; waiter worker {} (waiting since {}) got it only {} ms later (bound {} ms, run-queue time {} ms already deducted)",
                                p.token, label(p), label(q), q.t_a, lat / 1_000_000, bound / 1_000_000, q.run_delay / 1_000_000
                            ),
                        );
                    }
                }
            }
        }
    }
    c.insert("kill-to-reclaim time: max (ms)", (lat_max.max(0) / 1_000_000) as u64);
    c.insert(
        "kill-to-reclaim time: mean (us)",
        if lat_n > 0 { (lat_sum / lat_n as i64).max(0) as u64 / 1000 } else { 0 },
    );
    c.insert("reclaims by an already-blocked waiter", wlat_n);
    c.insert(
        "blocked-waiter latency past availability: max (ms)",
        (wlat_max.max(0) / 1_000_000) as u64,
    );
    c.insert("log streams", streams.len() as u64);

    check_fair(&grants, &places, &streams, &mut v);

    for (k, n) in c {
        report.counts.insert(k, n);
    }
    for (m, counts) in v.per_mode {
        let e = report.modes.entry(m).or_default();
        for (k, n) in counts {
            *e.entry(k).or_default() += n;
        }
    }
    report.violations.extend(v.list);
}

/// Sweeps validity intervals `(start, end, grant)` in start order (an interval is
/// `[start, end)`; empty ones are skipped). Whenever one starts while `n` or more are
/// valid, calls `over` with those (`(end, grant)`, by end) and the newcomer. Returns the
/// most intervals valid at once.
fn crowded(
    mut iv: Vec<(u64, u64, usize)>,
    n: usize,
    mut over: impl FnMut(&[(u64, usize)], (u64, u64, usize)),
) -> usize {
    iv.retain(|(s, e, _)| s < e);
    iv.sort_unstable();
    let mut live: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut most = 0;
    for (s, e, i) in iv {
        while live.first().is_some_and(|&(end, _)| end <= s) {
            live.pop_first();
        }
        if live.len() >= n {
            let valid: Vec<(u64, usize)> = live.iter().copied().collect();
            over(&valid, (s, e, i));
        }
        live.insert((e, i));
        most = most.max(live.len());
    }
    most
}

/// Sweeps the validity intervals `(start, end, grant)` of a shared name in start order
/// (`shared(grant)`: whether it is a shared grant). Calls `over` with the kind of
/// violation, the intervals valid then (`(end, grant)`) and the newcomer, whenever an
/// exclusive grant starts while any grant is valid (`exclusive-overlap`), a shared one
/// while an exclusive one is valid (`exclusive-overlap`), or a shared one while
/// `MAX_SHARED` shared ones are (`over-shared`). Returns the most shared grants valid at
/// once, and how many shared grants started while another one was valid.
fn shared_sweep(
    mut iv: Vec<(u64, u64, usize)>,
    shared: impl Fn(usize) -> bool,
    mut over: impl FnMut(&'static str, &[(u64, usize)], (u64, u64, usize)),
) -> (usize, u64) {
    iv.retain(|(s, e, _)| s < e);
    iv.sort_unstable();
    let mut live: BTreeSet<(u64, usize)> = BTreeSet::new();
    let (mut most, mut overlaps) = (0, 0);
    for (s, e, i) in iv {
        while live.first().is_some_and(|&(end, _)| end <= s) {
            live.pop_first();
        }
        let readers = live.iter().filter(|&&(_, j)| shared(j)).count();
        let valid = || live.iter().copied().collect::<Vec<_>>();
        if !shared(i) && !live.is_empty() || shared(i) && readers < live.len() {
            over("exclusive-overlap", &valid(), (s, e, i));
        } else if shared(i) && readers >= MAX_SHARED {
            over("over-shared", &valid(), (s, e, i));
        }
        if shared(i) && readers > 0 {
            overlaps += 1;
        }
        live.insert((e, i));
        most = most.max(live.iter().filter(|&&(_, j)| shared(j)).count());
    }
    (most, overlaps)
}

/// 10. Fair order. A waiter's place in a name's queue is *certainly live* over
///     `[e_1, s_k]` when observations 1..=k of it (`W` lines, the same ticket, by the
///     same stream) chain: each `get` returned before the deadline bound the previous
///     observation showed (`e_{j+1} <= s_j + rem_j`). (A place's deadline only grows, by
///     renewals, until its holder gives it up or dies; so from observation `j` it is live
///     until at least `s_j + rem_j`, and observation `j + 1`, made before that, finds it
///     live again: no gap. A place that expired, even for a moment, is never chained
///     across — so a waiter that was stopped past its place's TTL, or a late renewal of
///     an expired place, is never taken for a live one; killed waiters make no more
///     observations.) A fair acquisition that *began* after `e_1` found that place in
///     the queue, live, with a smaller ticket than any it can take: it must not be
///     granted while the place is live, so its grant must return after `s_k`.
///     Violations: `fair-order` (granted while a place ahead was certainly live) and
///     `ticket-order` (a place taken after another was seen has a smaller ticket).
fn check_fair(grants: &[Grant], places: &[Seen], streams: &[Stream], v: &mut Findings) {
    // Chains of observations, per (stream, name, ticket), in time order.
    let mut by_place: BTreeMap<(usize, &str, u64), Vec<&Seen>> = BTreeMap::new();
    for p in places {
        by_place.entry((p.sid, p.name.as_str(), p.ticket)).or_default().push(p);
    }
    // Certainly-live intervals, per name: (from, to, ticket, stream).
    let mut live: BTreeMap<&str, Vec<(u64, u64, u64, usize)>> = BTreeMap::new();
    // When each place was first seen (its `get` returned), per name: (e, ticket).
    let mut first_seen: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    let mut intervals = 0u64;
    for ((sid, name, ticket), mut seen) in by_place {
        seen.sort_by_key(|p| p.s);
        first_seen
            .entry(name)
            .or_default()
            .push((seen.iter().map(|p| p.e).min().unwrap_or(0), ticket));
        let out = live.entry(name).or_default();
        let (mut from, mut to) = (seen[0].e, seen[0].e);
        for w in seen.windows(2) {
            let (prev, p) = (w[0], w[1]);
            if p.e <= prev.s.saturating_add(prev.rem) {
                to = to.max(p.s);
            } else {
                if to > from {
                    out.push((from, to, ticket, sid));
                    intervals += 1;
                }
                (from, to) = (p.e, p.e);
            }
        }
        if to > from {
            out.push((from, to, ticket, sid));
            intervals += 1;
        }
    }
    // Each stream's observations of its own places, per name, by start.
    // (s, e, ticket) of each observation.
    type Observations = Vec<(u64, u64, u64)>;
    let mut own_by: HashMap<(usize, &str), Observations> = HashMap::new();
    for p in places {
        own_by.entry((p.sid, p.name.as_str())).or_default().push((p.s, p.e, p.ticket));
    }
    for o in own_by.values_mut() {
        o.sort_unstable();
    }
    // Every fair acquisition (waiting or not), by name, in order of its start.
    let mut fair: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in grants.iter().enumerate().filter(|(_, g)| g.fair) {
        fair.entry(g.name.as_str()).or_default().push(i);
    }
    let (mut pairs, mut checked, mut tickets_checked) = (0u64, 0u64, 0u64);
    for (name, mut idx) in fair {
        idx.sort_by_key(|&i| grants[i].t_a);
        // Sweep: the intervals that began by a grant's start and had not ended then.
        let mut iv = live.remove(name).unwrap_or_default();
        iv.sort_unstable();
        let mut active: BTreeSet<(u64, usize)> = BTreeSet::new();
        let mut next = 0;
        for &gi in &idx {
            let b = &grants[gi];
            while next < iv.len() && iv[next].0 <= b.t_a {
                active.insert((iv[next].1, next));
                next += 1;
            }
            while active.first().is_some_and(|&(to, _)| to <= b.t_a) {
                active.pop_first();
            }
            checked += (!active.is_empty()) as u64;
            for &(to, k) in &active {
                pairs += 1;
                let (from, _, ticket, sid) = iv[k];
                if b.g <= to {
                    v.flag(
                        "fair-order",
                        &[streams[b.sid].mode, streams[sid].mode],
                        format!(
                            "on {name}: worker {} began a fair acquisition at {} and was granted token {} by {}, while the place with ticket {ticket} of worker {}, ahead of it, was certainly live from {from} to {to}",
                            streams[b.sid].label, b.t_a, b.token, b.g, streams[sid].label
                        ),
                    );
                }
            }
        }
        // Tickets: a place first seen at `e` was taken before then; a place taken by an
        // acquisition that began after `e` has a larger ticket.
        let mut seen = first_seen.remove(name).unwrap_or_default();
        seen.sort_unstable();
        let mut prefix_max: Vec<(u64, u64)> = Vec::with_capacity(seen.len());
        for &(e, t) in &seen {
            let m = prefix_max.last().map_or(t, |&(_, m)| m.max(t));
            prefix_max.push((e, m));
        }
        for &gi in &idx {
            let b = &grants[gi];
            // The largest ticket of a place seen before b began.
            let k = prefix_max.partition_point(|&(e, _)| e < b.t_a);
            let Some(&(_, before)) = k.checked_sub(1).map(|k| &prefix_max[k]) else { continue };
            // b's own places: seen by its stream during its acquisition.
            let own = own_by.get(&(b.sid, name)).map_or(&[][..], |o| o.as_slice());
            let from = own.partition_point(|&(s, _, _)| s < b.t_a);
            for &(_, _, ticket) in
                own[from..].iter().take_while(|o| o.0 <= b.g).filter(|o| o.1 <= b.g)
            {
                tickets_checked += 1;
                if ticket <= before {
                    v.flag(
                        "ticket-order",
                        &[streams[b.sid].mode],
                        format!(
                            "on {name}: worker {} took a place with ticket {} in an acquisition that began at {}, after a place with ticket {before} had been seen",
                            streams[b.sid].label, ticket, b.t_a
                        ),
                    );
                }
            }
        }
    }
    if places.is_empty() && !grants.iter().any(|g| g.fair) {
        return;
    }
    let e = v.per_mode.entry(Mode::Fair.as_str()).or_default();
    e.insert("places seen certainly live over an interval".into(), intervals);
    e.insert("fair grants checked behind a live place (in order)".into(), checked);
    e.insert("(live place, later fair acquisition) pairs checked".into(), pairs);
    e.insert("own places checked for a larger ticket".into(), tickets_checked);
}
