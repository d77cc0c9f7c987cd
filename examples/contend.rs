//! Several processes contend for one lease; one of them is killed with SIGKILL while it
//! holds the lease, and the others reclaim it at once (its death is provable) instead of
//! waiting out its 10-second TTL.
//!
//! ```sh
//! cargo run --release --example contend
//! cargo run --release --example contend -- --workers 6 --rounds 5
//! ```
//!
//! The parent re-executes this program as workers (`contend worker TABLE ID ROUNDS`),
//! prints what each reports, checks that the tokens it saw only grew and that no two
//! workers ever held the lease at once, and removes the table.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shmlease::{LeaseTable, TableOptions};

const NAME: &str = "demo";
const TTL: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let id: u32 = args[3].parse().expect("worker id");
        let rounds: u32 = args[4].parse().expect("rounds");
        std::process::exit(worker(&args[2], id, rounds));
    }
    let mut workers = 4u32;
    let mut rounds = 3u32;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (a.as_str(), value) {
            ("--workers", Some(v)) if v >= 2 => workers = v,
            ("--rounds", Some(v)) if v >= 1 => rounds = v,
            _ => {
                eprintln!("usage: contend [--workers N (>= 2)] [--rounds N (>= 1)]");
                std::process::exit(64);
            }
        }
    }
    std::process::exit(parent(workers, rounds));
}

/// One worker: take the lease `rounds` times, hold it briefly, release. Worker 0 is the
/// victim: it takes the lease once and then waits to be killed.
fn worker(table: &str, id: u32, rounds: u32) -> i32 {
    let table = match LeaseTable::open(table) {
        Ok(t) => t,
        Err(e) => {
            println!("error {e}");
            return 1;
        }
    };
    for _ in 0..rounds {
        let lease = match table.acquire(NAME, TTL, Some(Duration::from_secs(60))) {
            Ok(l) => l,
            Err(e) => {
                println!("error {e}");
                return 1;
            }
        };
        println!("{} granted {} {}", mono_ns(), lease.token(), std::process::id());
        if id == 0 {
            println!("{} victim", mono_ns());
            std::thread::sleep(Duration::from_secs(3600)); // until SIGKILL
        }
        std::thread::sleep(Duration::from_millis(50)); // the "work"
        let valid = lease.is_valid();
        // Printed before the release, so its timestamp precedes the next grant's.
        println!("{} releasing {} {valid}", mono_ns(), lease.token());
        if let Err(e) = lease.release() {
            println!("error {e}");
            return 1;
        }
    }
    0
}

/// CLOCK_MONOTONIC in nanoseconds: one timeline for all workers' reports.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Event {
    at: u64,
    worker: u32,
    line: String,
}

fn parent(workers: u32, rounds: u32) -> i32 {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("shmlease-contend-{}", std::process::id()));
    let table = LeaseTable::create(&path, &TableOptions::new().capacity(16)).expect("create table");
    println!(
        "table {} ({} slots); {workers} workers contend for {NAME:?} with a {TTL:?} TTL",
        path.display(),
        table.capacity()
    );

    let start = mono_ns();
    let (tx, rx) = mpsc::channel::<Event>();
    let exe = std::env::current_exe().expect("own path");
    let mut children: Vec<Child> = Vec::new();
    for id in 0..workers {
        let mut child = Command::new(&exe)
            .args(["worker", &path.to_string_lossy(), &id.to_string(), &rounds.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let out = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (at, rest) = line.split_once(' ').unwrap_or(("0", &line));
                let at = at.parse().unwrap_or(0);
                let _ = tx.send(Event { at, worker: id, line: rest.to_owned() });
            }
        });
        children.push(child);
        if id == 0 {
            // Let the victim take the lease first, so there is something to reclaim.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(tx);

    // Collect every report; kill the victim the moment it says it holds the lease.
    let mut events = Vec::new();
    let waiting_since = Instant::now();
    while let Ok(ev) = rx.recv_timeout(Duration::from_secs(90)) {
        if ev.line == "victim" {
            children[0].kill().expect("SIGKILL the victim");
            let _ = children[0].wait();
            events.push(Event { at: mono_ns(), worker: 0, line: "killed".into() });
        }
        events.push(ev);
        if waiting_since.elapsed() > Duration::from_secs(300) {
            break;
        }
    }
    let mut ok = true;
    for mut c in children.into_iter().skip(1) {
        if !c.wait().map(|s| s.success()).unwrap_or(false) {
            ok = false;
        }
    }

    // Replay the reports in time order and check them.
    events.sort_by_key(|e| e.at);
    let mut last_token = 0u64;
    let mut holder: Option<u32> = None;
    let mut killed_at: Option<u64> = None;
    let mut reclaim_delay: Option<Duration> = None;
    let mut grants = 0;
    for ev in &events {
        let stamp = format!("{:>8.1} ms", ev.at.saturating_sub(start) as f64 / 1e6);
        let words: Vec<&str> = ev.line.split_whitespace().collect();
        match words.as_slice() {
            ["granted", token, pid] => {
                grants += 1;
                let token: u64 = token.parse().unwrap_or(0);
                let mut note = String::new();
                if let (Some(k), None) = (killed_at, reclaim_delay) {
                    let delay = Duration::from_nanos(ev.at - k);
                    reclaim_delay = Some(delay);
                    note = format!("  <- reclaimed {delay:.1?} after the kill");
                }
                println!("{stamp}  worker {} (pid {pid}) got token {token}{note}", ev.worker);
                if let Some(h) = holder {
                    println!(
                        "!! worker {} was granted the lease while worker {h} held it",
                        ev.worker
                    );
                    ok = false;
                }
                if token <= last_token {
                    println!("!! token {token} is not above the previous {last_token}");
                    ok = false;
                }
                last_token = token;
                holder = Some(ev.worker);
            }
            ["victim"] => {}
            ["killed"] => {
                killed_at = Some(ev.at);
                holder = None;
                println!("{stamp}  worker 0 killed with SIGKILL while holding the lease");
            }
            ["releasing", token, valid] => {
                println!(
                    "{stamp}  worker {} releases token {token} (still valid: {valid})",
                    ev.worker
                );
                ok &= *valid == "true";
                holder = None;
            }
            _ => {
                println!("{stamp}  worker {}: {}", ev.worker, ev.line);
                ok = false;
            }
        }
    }
    if grants != (workers - 1) * rounds + 1 {
        println!("!! expected {} grants, saw {grants}", (workers - 1) * rounds + 1);
        ok = false;
    }
    match reclaim_delay {
        Some(d) if d < TTL => {}
        _ => {
            println!("!! the killed holder's lease was not reclaimed before its TTL");
            ok = false;
        }
    }
    let info = table.info();
    println!(
        "grants {}, dead holders reclaimed {}, expired leases reclaimed {}",
        info.counters.grants, info.counters.dead_holder_reclaims, info.counters.expired_reclaims
    );
    let _ = LeaseTable::remove(&path);
    if ok {
        println!("ok: tokens only grew, never two holders at once, the killed holder's lease was reclaimed without waiting for its TTL");
        0
    } else {
        println!("FAILED");
        1
    }
}
