//! Worker processes: the lease loop each one runs and the log it writes.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use shmlease::{AcquireOptions, Error, LeaseTable, Location};

use super::{lease_name, mono, run_delay, Records, Rng, WORKER_ENV};

// ------------------------------------------------------------------------------------
// Worker
// ------------------------------------------------------------------------------------

/// Worker parameters, passed in `SHMLEASE_CHAOS_*` environment variables.
struct WorkerEnv {
    wid: u64,
    seed: u64,
    dir: PathBuf,
    table: String,
    names: usize,
    end: u64,
    parent: u32,
    max_ttl_ms: u64,
    /// Added to every deadline the worker believes in (fault injection).
    lie_ns: u64,
}

fn env(key: &str) -> String {
    std::env::var(format!("SHMLEASE_CHAOS_{key}")).unwrap_or_default()
}

/// If this process was started as a worker, runs it and returns `true`.
pub fn maybe_run_worker() -> bool {
    let Ok(wid) = std::env::var(WORKER_ENV) else { return false };
    let w = WorkerEnv {
        wid: wid.parse().expect("worker id"),
        seed: env("SEED").parse().expect("seed"),
        dir: PathBuf::from(env("DIR")),
        table: env("TABLE"),
        names: env("NAMES").parse().expect("names"),
        end: env("END").parse().expect("end"),
        parent: env("PARENT").parse().expect("parent"),
        max_ttl_ms: env("MAX_TTL_MS").parse().expect("max ttl"),
        lie_ns: if env("FAULT") == "lie" { 20_000_000 } else { 0 },
    };
    run_worker(&w);
    true
}

/// A worker's append-only log: one `write` per line, no buffering, so a kill -9 loses
/// at most the line being written.
struct Log(File);

impl Log {
    fn line(&mut self, s: std::fmt::Arguments<'_>) {
        let mut text = String::with_capacity(96);
        let _ = text.write_fmt(s);
        text.push('\n');
        self.0.write_all(text.as_bytes()).expect("writing the worker log");
    }
}

macro_rules! logln {
    ($log:expr, $($arg:tt)*) => { $log.line(format_args!($($arg)*)) };
}

fn holder_fields(h: &Option<shmlease::Holder>) -> (u32, u8) {
    match h {
        Some(h) => (h.pid, h.detached as u8),
        None => (0, 2),
    }
}

fn run_worker(w: &WorkerEnv) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != w.parent {
        return; // the controller is already gone
    }
    let pid = std::process::id();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(w.dir.join(format!("w{}.log", w.wid)))
        .expect("opening the worker log");
    let mut log = Log(file);
    let table = LeaseTable::open(Location::from(w.table.as_str())).expect("opening the table");
    let records = Records::open(&w.dir.join("records"), w.names).expect("mapping the records");
    let names: Vec<String> = (0..w.names).map(lease_name).collect();
    let mut rng = Rng::new(w.seed);
    logln!(log, "B {} {} {}", w.wid, pid, mono());
    while mono() < w.end {
        one_round(&table, &records, &names, &mut rng, &mut log, w, pid);
        if rng.pct(30) {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
    }
    logln!(log, "Z {}", mono());
}

/// Logs an observation of our record holding another writer's token. That is legitimate
/// only if our grant was over by then. It was certainly not over (a violation) if
/// `is_valid()`, called after the record was read, still says ours; or if our clock,
/// read after the record was, is still before a lower bound of our deadline (nobody
/// revokes in this harness, we did not release, and we are alive).
fn saw_other(
    log: &mut Log,
    name: &str,
    token: u64,
    seen: u64,
    writer: u64,
    lease: &shmlease::Lease<'_>,
    d_lo: u64,
) {
    let t_c = mono(); // read after the record was
    let valid = lease.is_valid();
    let early = t_c < d_lo;
    let v = (valid || early || seen < token) as u8;
    logln!(
        log,
        "C {name} {token} {seen} {writer} {t_c} {d_lo} {} {} {v}",
        valid as u8,
        early as u8
    );
}

fn one_round(
    table: &LeaseTable,
    records: &Records,
    names: &[String],
    rng: &mut Rng,
    log: &mut Log,
    w: &WorkerEnv,
    pid: u32,
) {
    let max_ttl_ms = w.max_ttl_ms;
    let ni = rng.below(names.len() as u64) as usize;
    let name = names[ni].as_str();
    let ttl_ns = rng.range(1_000, max_ttl_ms * 1_000) * 1_000;
    let ttl = Duration::from_nanos(ttl_ns);
    let mode = rng.below(100);
    let wait = Duration::from_millis(rng.below(101));
    let (mode_tag, waits) = match mode {
        0..=44 => ("try", false),
        45..=89 => ("wait", true),
        _ => ("label", true),
    };
    let rd0 = if waits { run_delay() } else { None };
    let t_a = mono();
    let result = match mode_tag {
        "try" => table.try_acquire(name, ttl),
        "wait" => table.acquire(name, ttl, Some(wait)),
        _ => AcquireOptions::new()
            .wait(Some(wait))
            .label(&format!("p{pid}"))
            .and_then(|o| table.acquire_with(name, ttl, &o)),
    };
    let lease = match result {
        Ok(l) => l,
        Err(e) => {
            let t_e = mono();
            match e {
                Error::Held { token, holder, .. } => {
                    let (hp, hd) = holder_fields(&holder);
                    logln!(log, "R {name} {token} {hp} {hd} held {t_a} {t_e}");
                }
                Error::TimedOut { token, holder, .. } => {
                    let (hp, hd) = holder_fields(&holder);
                    logln!(log, "R {name} {token} {hp} {hd} timeout {t_a} {t_e}");
                }
                other => {
                    let msg = other.to_string().replace('\n', " ");
                    logln!(log, "E {name} {t_a} {t_e} {msg}");
                }
            }
            return;
        }
    };
    let g = mono();
    let rem = lease.remaining().as_nanos() as u64;
    let rd = match (rd0, if waits { run_delay() } else { None }) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let token = lease.token();
    // Lower bound of the deadline: the grant's clock read came after t_a; and if the
    // lease still had time left when `remaining` read the clock (after g), it lasts at
    // least until g + rem. Upper bound: that clock read came before g.
    let mut d_lo = t_a + ttl_ns;
    if rem > 0 {
        d_lo = d_lo.max(g + rem);
    }
    d_lo += w.lie_ns;
    let d_hi = g + ttl_ns + w.lie_ns;
    logln!(log, "G {name} {token} {mode_tag} {ttl_ns} {t_a} {g} {d_lo} {d_hi} {rd}");

    let mut lease = lease;
    let keep_alive = rng.pct(10);
    if keep_alive {
        logln!(log, "K {name} {token} {ttl_ns} {}", mono());
        if let Err(e) = lease.keep_alive(ttl) {
            logln!(log, "E {name} {} {} keep_alive: {e}", mono(), mono());
        }
    }
    let mut lost = false;
    let saw = |seen: u64, writer: u64, lease: &shmlease::Lease<'_>, d_lo: u64, log: &mut Log| {
        saw_other(log, name, token, seen, writer, lease, d_lo)
    };
    match records.write(ni, token, pid) {
        Ok(()) => {}
        Err(seen) => {
            let (_, writer) = records.read(ni);
            saw(seen, writer, &lease, d_lo, log);
            lost = true;
        }
    }
    let chunks = rng.range(1, 3);
    for _ in 0..chunks {
        if lost {
            break;
        }
        let work = match rng.below(100) {
            0..=59 => rng.below(ttl_ns / 2 + 1),
            60..=84 => rng.range(ttl_ns / 2, ttl_ns),
            _ => rng.range(ttl_ns, ttl_ns * 2),
        };
        std::thread::sleep(Duration::from_nanos(work));
        let (seen, writer) = records.read(ni);
        if seen != token {
            saw(seen, writer, &lease, d_lo, log);
            lost = true;
            break;
        }
        if keep_alive {
            if let Some(why) = lease.lost() {
                logln!(log, "L {name} {token} {} {why:?}", mono());
                lost = true;
            }
        } else if rng.pct(30) {
            let ttl2_ns = rng.range(1_000, max_ttl_ms * 1_000) * 1_000;
            let t_i = mono();
            logln!(log, "N {name} {token} {ttl2_ns} {t_i}");
            match lease.renew(Duration::from_nanos(ttl2_ns)) {
                Ok(()) => {
                    let t_r = mono();
                    let rem = lease.remaining().as_nanos() as u64;
                    let mut lo = t_i + ttl2_ns;
                    if rem > 0 {
                        lo = lo.max(t_r + rem);
                    }
                    d_lo = lo + w.lie_ns;
                    logln!(log, "D {name} {token} ok {t_r} {d_lo} {}", t_r + ttl2_ns + w.lie_ns);
                }
                Err(e) => {
                    let t_r = mono();
                    let why = match e {
                        Error::Lost { reason, .. } => format!("{reason:?}"),
                        other => format!("error:{}", other.to_string().replace(' ', "_")),
                    };
                    logln!(log, "D {name} {token} lost {t_r} {why}");
                    lost = true;
                }
            }
        }
    }
    // Read back just before leaving.
    if !lost {
        let (seen, writer) = records.read(ni);
        if seen != token {
            saw(seen, writer, &lease, d_lo, log);
        }
    }
    let ending = match rng.below(100) {
        0..=44 => "release",
        45..=59 => "drop",
        60..=69 if !keep_alive => "forget",
        70..=79 => "detach",
        _ if keep_alive => "release",
        _ => "expire",
    };
    if ending == "expire" {
        while lease.is_valid() {
            std::thread::sleep(lease.remaining() + Duration::from_micros(100));
        }
    }
    logln!(log, "X {name} {token} {ending} {}", mono());
    let result = match ending {
        "release" => match lease.release() {
            Ok(()) => "ok".to_string(),
            Err(Error::Lost { reason, .. }) => format!("lost:{reason:?}"),
            Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
        },
        "detach" => match lease.detach() {
            Ok(_) => "ok".to_string(),
            Err(Error::Lost { reason, .. }) => format!("lost:{reason:?}"),
            Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
        },
        "forget" => {
            std::mem::forget(lease);
            "ok".to_string()
        }
        _ => {
            drop(lease);
            "ok".to_string()
        }
    };
    logln!(log, "Y {name} {token} {ending} {result} {}", mono());
}
