//! The checker: reads every log after the run and verifies the invariants.
//!
//! A process writes one log per stream of rounds: `w<id>.log`, or `w<id>.t<k>.log` for
//! each thread of a `threads` worker. Times of death, kills and stops are per process
//! (`WorkerFate`); everything else is per stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::controller::{Report, WorkerFate};
use super::{Config, Mode, LIVENESS_RECHECK_NS, WIND_DOWN};

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
                        ttl: num(f.get(4)).unwrap_or(0),
                        t_a: num(f.get(5)).unwrap_or(0),
                        g: num(f.get(6)).unwrap_or(0),
                        d_lo: num(f.get(7)).unwrap_or(0),
                        pending: None,
                        d_hi: num(f.get(8)).unwrap_or(u64::MAX),
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
                        grants[i].pending =
                            Some((num(f.get(4)).unwrap_or(0), num(f.get(3)).unwrap_or(0)));
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
                    let lives_on = f[3] == "detach" && f[4] == "ok" && layout.permits(f[1]) > 1;
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
                let ttl = gr.pending.map_or(gr.ttl, |p| p.1).max(gr.ttl);
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
        match (layout.permits(&g.name), g.slot) {
            (1, _) => lines.entry((g.name.as_str(), None)).or_default().push(i),
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
    for r in &refusals {
        let gi = by_token.get(&(r.name.as_str(), r.token)).copied();
        let holder_wid = match gi {
            Some(i) => Some(grants[i].wid),
            None if r.holder_pid != 0 => pid_worker(r.holder_pid, r.t_a),
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
    for r in refusals.iter().filter(|r| layout.permits(&r.name) > 1) {
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
    for (name, idx) in by_name.iter().filter(|(name, _)| layout.permits(name) == 1) {
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
            if q.mode != "try" && q.mode != "fill" && q.t_a <= avail {
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
