//! The etcd backend against etcd's own lock service, on one local three-member cluster
//! started for the run (tests/common/etcd.rs, fast elections).
//!
//! Measured, per client, over `ROUNDS` rounds of acquire + release on a name of its own
//! (1 client, then 8 clients at once, each with its own connection):
//!
//! - `shmlease`: `EtcdTable::try_acquire` + `EtcdLease::release` — `Txn` on the spare
//!   etcd lease the previous release left; `Txn`: 2 round trips per round (plus a
//!   `LeaseGrant` about once per tenth of the TTL, when the spare is too old), a TTL per
//!   grant.
//! - `etcd lock, lease per lock`: what a per-lock TTL costs with etcd's lock service —
//!   `LeaseGrant`, `Lock`, `Unlock`, `LeaseRevoke`: 4 round trips (the server runs the
//!   mutex recipe inside, over its own client).
//! - `etcd lock, session lease`: the lock service with one lease for the whole run
//!   (no per-lock TTL: the lease is kept alive by the process) — `Lock`, `Unlock`: 2.
//! - `etcdctl lock`: one `etcdctl lock NAME -- true` process per round (what a shell
//!   script pays), against nothing on our side yet: our CLI is measured with
//!   `shmlease -t etcd://…` once the CLI takes etcd locations.
//!
//! Reported: p50 and p99 latency of one round, and rounds per second (all clients). Not
//! run in CI. Run: `cargo bench --features etcd --bench etcd` (needs `etcd`, `etcdctl`).

#![cfg_attr(test, allow(dead_code))]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use etcd_client::{Client, LockOptions};
use shmlease::etcd::{EtcdLocation, EtcdTable};
use shmlease::TableOptions;

#[path = "../tests/common/etcd.rs"]
#[allow(dead_code)]
mod cluster;

const ROUNDS: usize = 300;

/// What tests/common/etcd.rs needs from its parent module: a scratch directory...
pub struct Scratch {
    /// The directory, removed on drop.
    pub dir: std::path::PathBuf,
}

impl Scratch {
    /// A fresh directory for `name`.
    pub fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("shmlease-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ... and a way to signal a member.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(pid, sig) };
}

struct Report {
    what: &'static str,
    clients: usize,
    round_trips: &'static str,
    p50: Duration,
    p99: Duration,
    per_s: f64,
}

/// Runs `round` ROUNDS times in each of `clients` threads (each with its own state from
/// `setup`), all starting together.
fn measure<S: Send + 'static>(
    what: &'static str,
    round_trips: &'static str,
    clients: usize,
    rounds: usize,
    setup: impl Fn(usize) -> S,
    round: impl Fn(&mut S, usize) + Send + Sync + 'static,
) -> Report {
    let round = Arc::new(round);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let mut state = setup(i);
            let (round, barrier) = (Arc::clone(&round), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut lat = Vec::with_capacity(rounds);
                for r in 0..rounds {
                    let t = Instant::now();
                    round(&mut state, r);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Report {
        what,
        clients,
        round_trips,
        p50: pct(0.50),
        p99: pct(0.99),
        per_s: all.len() as f64 / elapsed.as_secs_f64(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches`: nothing to list or run
    }
    let c = cluster::Cluster::start("bench", cluster::Setup::default());
    let location = EtcdLocation::parse(&c.location("bench")).unwrap();
    EtcdTable::open_or_create(&location, &TableOptions::new()).unwrap();
    let endpoints: Vec<String> = c.hosts().split(',').map(|h| format!("http://{h}")).collect();
    let mut reports = Vec::new();
    let ttl = Duration::from_secs(10);

    for clients in [1, 8] {
        let loc = location.clone();
        reports.push(measure(
            "shmlease (try_acquire + release)",
            "2",
            clients,
            ROUNDS,
            move |i| (EtcdTable::open(&loc).unwrap(), format!("ours-{i}")),
            move |(t, name), _| t.try_acquire(name, ttl).unwrap().release().unwrap(),
        ));
        let eps = endpoints.clone();
        reports.push(measure(
            "etcd lock, a lease per lock",
            "4",
            clients,
            ROUNDS,
            move |i| {
                let rt = runtime();
                let client = rt.block_on(Client::connect(&eps, None)).unwrap();
                (rt, client, format!("theirs-{i}"))
            },
            |(rt, client, name), _| {
                rt.block_on(async {
                    let lease = client.lease_grant(10, None).await.unwrap().id();
                    let key = client
                        .lock(name.as_str(), Some(LockOptions::new().with_lease(lease)))
                        .await
                        .unwrap()
                        .key()
                        .to_vec();
                    client.unlock(key).await.unwrap();
                    client.lease_revoke(lease).await.unwrap();
                })
            },
        ));
        let eps = endpoints.clone();
        reports.push(measure(
            "etcd lock, one session lease",
            "2",
            clients,
            ROUNDS,
            move |i| {
                let rt = runtime();
                let mut client = rt.block_on(Client::connect(&eps, None)).unwrap();
                let lease = rt.block_on(client.lease_grant(60, None)).unwrap().id();
                (rt, client, lease, format!("session-{i}"))
            },
            |(rt, client, lease, name), _| {
                rt.block_on(async {
                    let options = LockOptions::new().with_lease(*lease);
                    let key =
                        client.lock(name.as_str(), Some(options)).await.unwrap().key().to_vec();
                    client.unlock(key).await.unwrap();
                })
            },
        ));
        let hosts = c.hosts();
        reports.push(measure(
            "etcdctl lock NAME -- true (a process each)",
            "≥ 4 + connect",
            clients,
            ROUNDS / 10,
            move |i| (hosts.clone(), format!("ctl-{i}")),
            |(hosts, name), _| {
                let ok = std::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", hosts, "lock", name, "--", "true"])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            },
        ));
    }

    println!("| operation | clients | round trips per round | p50 | p99 | rounds/s |");
    println!("|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} | {} | {:.2?} | {:.2?} | {:.0} |",
            r.what, r.clients, r.round_trips, r.p50, r.p99, r.per_s
        );
    }
}
