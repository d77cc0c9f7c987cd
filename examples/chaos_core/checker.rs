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
            if how == "release" || how == "drop" || how == "expire" {
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
                        gr.pending = None;
                        if f[3] == "ok" && f.len() >= 7 {
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
                    }
                }
                "Y" if f.len() >= 6 => {
                    if let Some(i) = open.remove(&key()) {
                        let gr = &mut grants[i];
                        let t = num(f.get(5)).unwrap_or(0);
                        match f[3] {
                            "release" | "drop" | "expire" => gr.freed_at = Some(t),
                            _ => {}
                        }
                        gr.released_ok = f[3] == "release" && f[4] == "ok";
                        bump(
                            &mut c,
                            match (f[3], f[4]) {
                                ("release", "ok") => "endings: released",
                                ("release", _) => "endings: release found it lost",
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

    // 1. Exclusivity: validity intervals of one name never overlap.
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in grants.iter().enumerate() {
        by_name.entry(g.name.as_str()).or_default().push(i);
    }
    for (name, idx) in &by_name {
        let mut iv: Vec<(u64, u64, usize)> = idx
            .iter()
            .map(|&i| (grants[i].g, grants[i].end_lo(death_lo(&grants[i])), i))
            .filter(|(s, e, _)| s < e)
            .collect();
        iv.sort();
        let mut best: Option<(u64, usize)> = None;
        for &(s, e, i) in &iv {
            if let Some((pe, pi)) = best {
                if s < pe {
                    let (a, b) = (&grants[pi], &grants[i]);
                    v.flag(
                        "overlap",
                        &[mode_of(a), mode_of(b)],
                        format!(
                            "on {name}: token {} (worker {}, valid [{}, {}]) and token {} (worker {}, valid from {} to {}) overlap by {} ns",
                            a.token, label(a), a.g, pe, b.token, label(b), s, e, pe.min(e) - s
                        ),
                    );
                }
            }
            match best {
                Some((pe, _)) if pe >= e => {}
                _ => best = Some((e, i)),
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

    // 4. Reclaims: a grant taken over without having been released. When the holder was
    //    killed, measure how long its lease lay unused after it became available (the
    //    holder reaped, or its deadline's upper bound). A waiter blocked since before
    //    that must get it within the 50 ms liveness re-check (which also covers a
    //    deadline shortened by a renewal while it slept) plus slack, minus the time it
    //    spent waiting for a CPU; a waiter that was itself stopped is excused.
    let (mut lat_max, mut lat_sum, mut lat_n) = (0i64, 0i64, 0u64);
    let (mut wlat_max, mut wlat_n) = (0i64, 0u64);
    for (name, idx) in &by_name {
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
            let detached = p.ending.as_ref().is_some_and(|e| e.0 == "detach");
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
