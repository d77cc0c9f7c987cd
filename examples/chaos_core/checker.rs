//! The checker: reads every log after the run and verifies the invariants.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::controller::{Report, WorkerFate};
use super::{Config, LIVENESS_RECHECK_NS, WIND_DOWN};

// ------------------------------------------------------------------------------------
// Checker
// ------------------------------------------------------------------------------------

/// One grant, as reconstructed from its worker's log.
#[derive(Clone, Debug)]
struct Grant {
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
    wid: u64,
    name: String,
    token: u64,
    holder_pid: u32,
    /// 0: live-process holder record, 1: detached, 2: no record.
    holder_kind: u8,
    kind: String,
    t_a: u64,
    t_e: u64,
}

fn num(f: Option<&&str>) -> Option<u64> {
    f.and_then(|s| s.parse().ok())
}

pub(crate) fn check(
    cfg: &Config,
    dir: &Path,
    fates: &BTreeMap<u64, WorkerFate>,
    final_tokens: &HashMap<String, u64>,
    report: &mut Report,
) {
    let max_ttl = cfg.max_ttl_ms * 1_000_000;
    let mut grants: Vec<Grant> = Vec::new();
    let mut refusals: Vec<Refusal> = Vec::new();
    let mut c: BTreeMap<&'static str, u64> = BTreeMap::new();
    let bump = |c: &mut BTreeMap<&'static str, u64>, k: &'static str| *c.entry(k).or_default() += 1;
    let mut v = Vec::new();
    let mut exited: HashMap<u64, u64> = HashMap::new();

    for (&wid, fate) in fates {
        // Exit status and stderr: nobody may panic or fail.
        let err = std::fs::read_to_string(dir.join(format!("w{wid}.err"))).unwrap_or_default();
        if !err.trim().is_empty() {
            v.push(format!(
                "worker-failed: worker {wid} (pid {}) wrote to stderr: {}",
                fate.pid,
                err.trim()
            ));
        }
        if fate.hung {
            v.push(format!(
                "worker-failed: worker {wid} (pid {}) did not finish within {WIND_DOWN:?} after the run",
                fate.pid
            ));
        } else if fate.killed.is_none() && fate.status.as_deref() != Some("exit status: 0") {
            v.push(format!(
                "worker-failed: worker {wid} (pid {}) ended with {:?}",
                fate.pid, fate.status
            ));
        }
        let text = std::fs::read_to_string(dir.join(format!("w{wid}.log"))).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        if complete.len() + 1 < text.len() {
            bump(&mut c, "torn log lines (killed mid-write)");
        }
        let mut open: HashMap<(String, u64), usize> = HashMap::new();
        let first = grants.len();
        for line in complete.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let key = || (f[1].to_string(), f[2].parse::<u64>().unwrap_or(0));
            match f[0] {
                "G" if f.len() >= 10 => {
                    let g = Grant {
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
                }
                "R" if f.len() >= 8 => {
                    refusals.push(Refusal {
                        wid,
                        name: f[1].into(),
                        token: num(f.get(2)).unwrap_or(0),
                        holder_pid: num(f.get(3)).unwrap_or(0) as u32,
                        holder_kind: num(f.get(4)).unwrap_or(2) as u8,
                        kind: f[5].into(),
                        t_a: num(f.get(6)).unwrap_or(0),
                        t_e: num(f.get(7)).unwrap_or(0),
                    });
                    bump(
                        &mut c,
                        if f[5] == "held" { "refusals: held" } else { "refusals: timed out" },
                    );
                }
                "E" => {
                    bump(&mut c, "unexpected errors");
                    let benign = line.contains("full") && cfg.capacity < cfg.names as u32;
                    if !benign {
                        v.push(format!("unexpected-error: worker {wid}: {line}"));
                    }
                }
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
                        }
                    }
                }
                "C" if f.len() >= 10 => {
                    if f[9] != "1" {
                        bump(&mut c, "record taken over after own expiry (legit)");
                    } else {
                        v.push(format!(
                            "in-lease-overwrite: worker {wid}: record of {} overwritten by token {} (pid {}) while token {} still held it (clock {} < deadline lower bound {}: {}, is_valid(): {})",
                            f[1], f[3], f[4], f[2], f[5], f[6], f[8] == "1", f[7] == "1"
                        ));
                    }
                }
                "L" => bump(&mut c, "keep-alive reported loss"),
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
                    exited.insert(wid, num(f.get(1)).unwrap_or(0));
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

    // A lower bound of each worker's death: before we sent SIGKILL, or its last words.
    let death_lo = |wid: u64| -> Option<u64> {
        let f = &fates[&wid];
        match f.killed {
            Some(k) => Some(k.0),
            None => Some(exited.get(&wid).copied().unwrap_or(f.spawned)),
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
            .map(|&i| (grants[i].g, grants[i].end_lo(death_lo(grants[i].wid)), i))
            .filter(|(s, e, _)| s < e)
            .collect();
        iv.sort();
        let mut best: Option<(u64, usize)> = None;
        for &(s, e, i) in &iv {
            if let Some((pe, pi)) = best {
                if s < pe {
                    let (a, b) = (&grants[pi], &grants[i]);
                    v.push(format!(
                        "overlap: on {name}: token {} (worker {}, valid [{}, {}]) and token {} (worker {}, valid from {} to {}) overlap by {} ns",
                        a.token, a.wid, a.g, pe, b.token, b.wid, s, e, pe.min(e) - s
                    ));
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
            if grants[w[0]].token == grants[w[1]].token {
                v.push(format!(
                    "token-reuse: token {} of {name} handed out twice (workers {} and {})",
                    grants[w[0]].token, grants[w[0]].wid, grants[w[1]].wid
                ));
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
                v.push(format!(
                    "token-order: on {name}: token {} (worker {}) was granted before token {} (worker {}) was even asked for",
                    grants[x].token, grants[x].wid, grants[y].token, grants[y].wid
                ));
            }
        }
        if let (Some(&last), Some(&fin)) = (sorted.last(), final_tokens.get(*name)) {
            if fin <= grants[last].token {
                v.push(format!(
                    "token-order: final grant of {name} has token {fin}, not above {}",
                    grants[last].token
                ));
            }
        }
    }

    // 3. Reclaim: a refusal may only name a grant that could still be live when the
    //    refusing attempt started: before its deadline's upper bound, before it was
    //    released, and (for a live-process holder record) before its process was reaped.
    let by_token: HashMap<(&str, u64), usize> =
        grants.iter().enumerate().map(|(i, g)| ((g.name.as_str(), g.token), i)).collect();
    let pid_worker = |pid: u32, at: u64| -> Option<u64> {
        fates.iter().filter(|(_, f)| f.pid == pid && f.spawned <= at).map(|(&w, _)| w).next_back()
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
                if let Some(t) = fates[&w].reaped {
                    if t < avail {
                        avail = t;
                        why = format!(
                            "its holder (pid {}, worker {w}) had been reaped",
                            r.holder_pid
                        );
                    }
                }
            }
        }
        if r.t_a > avail {
            v.push(format!(
                "stale-refusal: worker {} was refused {} ({}) at {} by token {}, but {why} at {avail} ({} us earlier)",
                r.wid, r.name, r.kind, r.t_a, r.token, (r.t_a - avail) / 1000
            ));
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
            if q.mode != "try" && q.t_a <= avail {
                let stopped = fates[&q.wid].stops.iter().any(|&(a, b)| a < q.g && b > q.t_a);
                if !stopped {
                    let lat = q.g as i64 - avail as i64 - q.run_delay as i64;
                    wlat_max = wlat_max.max(lat);
                    wlat_n += 1;
                    let bound = LIVENESS_RECHECK_NS + cfg.reclaim_slack.as_nanos() as u64;
                    if lat > bound as i64 {
                        v.push(format!(
                            "slow-reclaim: of {name}: token {} (worker {}) was available by {avail}; waiter worker {} (waiting since {}) got it only {} ms later (bound {} ms, run-queue time {} ms already deducted)",
                            p.token, p.wid, q.wid, q.t_a, lat / 1_000_000, bound / 1_000_000, q.run_delay / 1_000_000
                        ));
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

    for (k, n) in c {
        report.counts.insert(k, n);
    }
    report.violations.extend(v);
}
