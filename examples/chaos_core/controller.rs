//! The controller: starts worker processes, kill -9s, SIGSTOPs and SIGCONTs them, and
//! gathers what it did for the checker.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmlease::{LeaseState, LeaseTable, Location, TableOptions};

use super::checker::check;
use super::{lease_name, loadavg, mono, Config, Launcher, Records, Rng, WIND_DOWN, WORKER_ENV};

// ------------------------------------------------------------------------------------
// Controller
// ------------------------------------------------------------------------------------

/// What the controller did to one worker process.
#[derive(Clone, Debug, Default)]
pub struct WorkerFate {
    /// Process id.
    pub pid: u32,
    /// When it was started.
    pub spawned: u64,
    /// (time read before SIGKILL was sent, time after it was reaped).
    pub killed: Option<(u64, u64)>,
    /// When it was reaped (any death).
    pub reaped: Option<u64>,
    /// Exit description when it was not killed by us.
    pub status: Option<String>,
    /// SIGSTOP periods: (before SIGSTOP, after SIGCONT).
    pub stops: Vec<(u64, u64)>,
    /// It did not finish in time after the run and was killed.
    pub hung: bool,
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Directory with the logs.
    pub dir: PathBuf,
    /// Wall time of the chaos phase.
    pub elapsed: Duration,
    /// Load average before and after.
    pub load: (String, String),
    /// Counts (grants, kills, ...), in a stable order.
    pub counts: BTreeMap<&'static str, u64>,
    /// Every violation found, one line each.
    pub violations: Vec<String>,
    /// Non-fatal remarks.
    pub notes: Vec<String>,
}

impl Report {
    /// The summary the example prints.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "chaos run: {:.1}s, logs in {}",
            self.elapsed.as_secs_f64(),
            self.dir.display()
        );
        let _ = writeln!(s, "load average before: {}  after: {}", self.load.0, self.load.1);
        for (k, v) in &self.counts {
            let _ = writeln!(s, "  {k:<34} {v}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            *kinds.entry(v.split(':').next().unwrap_or("")).or_default() += 1;
        }
        for (k, n) in kinds {
            let _ = writeln!(s, "  violations of kind {k:<21} {n}");
        }
        let shown = self.violations.len().min(50);
        for v in &self.violations[..shown] {
            let _ = writeln!(s, "VIOLATION: {v}");
        }
        if self.violations.len() > shown {
            let _ = writeln!(s, "... and {} more", self.violations.len() - shown);
        }
        let _ = writeln!(s, "violations: {}", self.violations.len());
        s
    }
}

struct Running {
    wid: u64,
    child: Child,
    stopped_at: Option<(u64, u64)>, // (stop time, continue at)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of our own child that we have not reaped yet (so the
    // pid cannot have been reused) and a valid signal number.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Runs the chaos with `cfg`, starting workers with `launcher`, then checks everything.
pub fn run(cfg: &Config, launcher: &Launcher) -> Report {
    let dir = match &cfg.dir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("shmlease-chaos-{}-{}", std::process::id(), mono()))
        }
    };
    std::fs::create_dir_all(&dir).expect("creating the run directory");
    let own_table = cfg.table.is_none();
    let table_loc = cfg.table.clone().unwrap_or_else(|| dir.join("table").display().to_string());
    let opts = TableOptions::new().capacity(cfg.capacity);
    let table = LeaseTable::open_or_create(Location::from(table_loc.as_str()), &opts)
        .expect("creating the table");
    Records::create(&dir.join("records"), cfg.names).expect("creating the record file");
    let mut report =
        Report { dir: dir.clone(), load: (loadavg(), String::new()), ..Report::default() };

    // Watchdog: if the run overstays, kill every worker and abort.
    let live: Arc<Mutex<Vec<u32>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let limit = cfg.duration + WIND_DOWN + Duration::from_secs(60);
    {
        let (live, done) = (Arc::clone(&live), Arc::clone(&done));
        std::thread::spawn(move || {
            let end = mono() + limit.as_nanos() as u64;
            while !done.load(Ordering::SeqCst) {
                if mono() > end {
                    for &p in live.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                        signal(p, libc::SIGKILL);
                    }
                    eprintln!("chaos: watchdog: run exceeded {limit:?}; aborting");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }

    let mut rng = Rng::new(cfg.seed);
    let start = mono();
    let end = start + cfg.duration.as_nanos() as u64;
    let mut fates: BTreeMap<u64, WorkerFate> = BTreeMap::new();
    let mut next_wid = 0u64;
    let spawn = |wid: u64, fates: &mut BTreeMap<u64, WorkerFate>, rng: &mut Rng| -> Running {
        let err = File::create(dir.join(format!("w{wid}.err"))).expect("worker stderr file");
        let child = Command::new(&launcher.exe)
            .args(&launcher.args)
            .env(WORKER_ENV, wid.to_string())
            .env("SHMLEASE_CHAOS_SEED", rng.next_u64().to_string())
            .env("SHMLEASE_CHAOS_DIR", &dir)
            .env("SHMLEASE_CHAOS_TABLE", &table_loc)
            .env("SHMLEASE_CHAOS_NAMES", cfg.names.to_string())
            .env("SHMLEASE_CHAOS_END", end.to_string())
            .env("SHMLEASE_CHAOS_PARENT", std::process::id().to_string())
            .env("SHMLEASE_CHAOS_MAX_TTL_MS", cfg.max_ttl_ms.to_string())
            .env("SHMLEASE_CHAOS_FAULT", &cfg.fault)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("starting a worker");
        let pid = child.id();
        live.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        fates.insert(wid, WorkerFate { pid, spawned: mono(), ..WorkerFate::default() });
        Running { wid, child, stopped_at: None }
    };
    let forget_pid =
        |pid: u32| live.lock().unwrap_or_else(|p| p.into_inner()).retain(|&p| p != pid);

    let mut running: Vec<Running> = Vec::new();
    for _ in 0..cfg.workers {
        running.push(spawn(next_wid, &mut fates, &mut rng));
        next_wid += 1;
    }
    let max_ttl_ns = cfg.max_ttl_ms * 1_000_000;
    let mut next_kill = start + rng.exp_ns(cfg.kill_rate);
    let mut next_stop = start + rng.exp_ns(cfg.stop_rate);
    let mut next_poll = start;
    let mut next_progress = start + cfg.progress.as_nanos() as u64;
    let (mut kills, mut stops, mut early_exits) = (0u64, 0u64, 0u64);
    loop {
        let now = mono();
        if now >= end {
            break;
        }
        // Continue workers whose stop is over.
        for r in running.iter_mut() {
            if let Some((t_stop, cont_at)) = r.stopped_at {
                if now >= cont_at {
                    signal(r.child.id(), libc::SIGCONT);
                    fates.get_mut(&r.wid).unwrap().stops.push((t_stop, mono()));
                    r.stopped_at = None;
                }
            }
        }
        // Workers that died on their own (panics, errors): record, replace.
        if now >= next_poll {
            next_poll = now + 10_000_000;
            let mut i = 0;
            while i < running.len() {
                if let Ok(Some(st)) = running[i].child.try_wait() {
                    let r = running.swap_remove(i);
                    let f = fates.get_mut(&r.wid).unwrap();
                    f.reaped = Some(mono());
                    f.status = Some(format!("{st}"));
                    if let Some((t_stop, _)) = r.stopped_at {
                        f.stops.push((t_stop, mono()));
                    }
                    forget_pid(r.child.id());
                    early_exits += 1;
                    running.push(spawn(next_wid, &mut fates, &mut rng));
                    next_wid += 1;
                } else {
                    i += 1;
                }
            }
        }
        if now >= next_kill && !running.is_empty() {
            next_kill = now + rng.exp_ns(cfg.kill_rate);
            let i = rng.below(running.len() as u64) as usize;
            let mut r = running.swap_remove(i);
            let pid = r.child.id();
            let t_sent = mono();
            signal(pid, libc::SIGKILL);
            let st = r.child.wait().expect("reaping a killed worker");
            let t_reaped = mono();
            forget_pid(pid);
            let f = fates.get_mut(&r.wid).unwrap();
            f.killed = Some((t_sent, t_reaped));
            f.reaped = Some(t_reaped);
            f.status = Some(format!("{st}"));
            if let Some((t_stop, _)) = r.stopped_at {
                f.stops.push((t_stop, t_reaped));
            }
            kills += 1;
            running.push(spawn(next_wid, &mut fates, &mut rng));
            next_wid += 1;
        }
        if now >= next_stop {
            next_stop = now + rng.exp_ns(cfg.stop_rate);
            let candidates: Vec<usize> =
                (0..running.len()).filter(|&i| running[i].stopped_at.is_none()).collect();
            if !candidates.is_empty() {
                let i = candidates[rng.below(candidates.len() as u64) as usize];
                let r = &mut running[i];
                let t = mono();
                signal(r.child.id(), libc::SIGSTOP);
                let pause = rng.range(max_ttl_ns + 5_000_000, 4 * max_ttl_ns + 5_000_000);
                r.stopped_at = Some((t, t + pause));
                stops += 1;
            }
        }
        if cfg.progress > Duration::ZERO && now >= next_progress {
            next_progress = now + cfg.progress.as_nanos() as u64;
            eprintln!(
                "chaos: {:>5.0}s/{:.0}s kills {kills} stops {stops} load {}",
                (now - start) as f64 / 1e9,
                cfg.duration.as_secs_f64(),
                loadavg()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Wind down: continue everyone, let them finish their round and exit.
    for r in running.iter_mut() {
        if let Some((t_stop, _)) = r.stopped_at.take() {
            signal(r.child.id(), libc::SIGCONT);
            fates.get_mut(&r.wid).unwrap().stops.push((t_stop, mono()));
        }
    }
    let give_up = mono() + WIND_DOWN.as_nanos() as u64;
    for mut r in running {
        let f = fates.get_mut(&r.wid).unwrap();
        loop {
            match r.child.try_wait() {
                Ok(Some(st)) => {
                    f.reaped = Some(mono());
                    f.status = Some(format!("{st}"));
                    break;
                }
                _ if mono() > give_up => {
                    signal(r.child.id(), libc::SIGKILL);
                    let st = r.child.wait().expect("reaping a hung worker");
                    f.reaped = Some(mono());
                    f.status = Some(format!("{st}"));
                    f.hung = true;
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        forget_pid(r.child.id());
    }
    let all_gone = mono();
    report.elapsed = Duration::from_nanos(all_gone - start);
    done.store(true, Ordering::SeqCst);

    report.counts.insert("workers started", fates.len() as u64);
    report.counts.insert("kills (SIGKILL)", kills);
    report.counts.insert("stops (SIGSTOP > max TTL)", stops);
    report.counts.insert("workers that exited early", early_exits);

    // Final state: once every worker is gone and the longest TTL has passed, no name
    // may still be held, and a fresh grant must carry a token above all seen before.
    std::thread::sleep(Duration::from_nanos(max_ttl_ns) + Duration::from_millis(20));
    let mut final_tokens = HashMap::new();
    for i in 0..cfg.names {
        let name = lease_name(i);
        match table.get(&name) {
            Ok(Some(info)) if info.state == LeaseState::Held => report.violations.push(format!(
                "final-state: {name} still held (token {}, holder {:?}, remaining {:?}) after every worker is gone and {} ms passed",
                info.token, info.holder, info.remaining, cfg.max_ttl_ms
            )),
            Ok(_) => {}
            Err(e) => report.violations.push(format!("final-state: get({name}) failed: {e}")),
        }
        match table.try_acquire(&name, Duration::from_millis(10)) {
            Ok(l) => {
                final_tokens.insert(name.clone(), l.token());
                let _ = l.release();
            }
            Err(e) => {
                report.violations.push(format!("final-state: try_acquire({name}) failed: {e}"))
            }
        }
    }
    let info = table.info();
    report.counts.insert("library: expired reclaims", info.counters.expired_reclaims);
    report.counts.insert("library: dead-holder reclaims", info.counters.dead_holder_reclaims);
    report.counts.insert("library: corrupt reclaims", info.counters.corrupt_reclaims);
    report.counts.insert("library: names bound", info.counters.binds);
    report.counts.insert("library: names unbound (slot reuse)", info.counters.unbinds);
    drop(table);

    let mut events = String::new();
    for (wid, f) in &fates {
        let _ = writeln!(
            events,
            "worker {wid} pid {} spawned {} killed {:?} reaped {:?} status {:?} hung {} stops {:?}",
            f.pid, f.spawned, f.killed, f.reaped, f.status, f.hung, f.stops
        );
    }
    let _ = std::fs::write(dir.join("controller.log"), events);
    check(cfg, &dir, &fates, &final_tokens, &mut report);
    let _ = std::fs::write(dir.join("summary.txt"), report.summary());
    report.load.1 = loadavg();
    if own_table {
        let _ = LeaseTable::remove(Location::from(table_loc.as_str()));
    }
    if report.violations.is_empty() && !cfg.keep && cfg.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report
}
