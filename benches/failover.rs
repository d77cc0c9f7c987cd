//! Leader failover (issue 11): how long until a standby leads, after the leader is
//! killed with SIGKILL, stopped with SIGSTOP, resigns, or is asked to hand over; and the
//! same for the CLI's hot standby (`shmlease run`), until the standby's CMD runs.
//!
//! Every measurement has one process as leader and one standby process blocked in
//! `campaign` — asleep in the kernel (its `/proc/PID/stat` state is `S`) with its
//! waiter bit set — before the event. Times are `CLOCK_MONOTONIC`, read by the actor
//! right before the event and by the standby right after it is elected (for `run`: by
//! the standby's CMD, first thing after exec):
//! - `kill`: controller reads the clock, `kill(leader, SIGKILL)`; the standby is woken
//!   by the leader's death (pidfd), reclaims the provably dead holder's grant;
//! - `stop`: controller stops the leader (TTL 100 ms) and reads its lease's deadline;
//!   reported as the time past that deadline until the standby leads;
//! - `resign`: the leader reads the clock and resigns;
//! - `request`: controller reads the clock and calls `request_release`; the leader,
//!   waiting in `wait_notice`, resigns;
//! - `run_kill`: two `shmlease run` candidates; SIGKILL of the leading `run`; until the
//!   standby's CMD has started.
//!
//! Not a criterion benchmark: it prints p50/p90/p99/max per scenario and writes
//! `target/shmlease-bench/<baseline>/failover.json`. Run:
//! `cargo bench --bench failover` (`SHMLEASE_FAILOVER_ROUNDS=N` to change the 200
//! rounds). Under `cargo test` it does nothing.

#![cfg_attr(test, allow(dead_code))]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use shmlease::{LeaseTable, Notice, RemoveOptions, TableOptions};

mod common;
use common::*;

const NAME: &str = "failover";
const CHILD: &str = "SHMLEASE_BENCH_CHILD";

/// Words of the control block, each on its own cache line.
const ROUND: usize = 0; // round number the controller has started
const T_EVENT: usize = 1; // clock read by whoever causes the event
const T_ELECTED: usize = 2; // clock read by the standby once elected
const ELECTED_ROUND: usize = 3; // round the standby was last elected in
const LEADER_READY: usize = 4; // round the leader has been elected in
const GO: usize = 5; // round in which the leader should resign (scenario `resign`)

struct Block(Shm);

impl Block {
    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: 64-byte spaced words in the first 1 KiB of a 4 KiB mapping, aligned;
        // any bytes are a valid AtomicU64; the mapping outlives the reference.
        unsafe { &*self.0.at::<AtomicU64>(i * 64) }
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("missing {key}"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn proc_state(pid: u32) -> Option<u8> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ").and_then(|(_, rest)| rest.bytes().next())
}

/// Child roles: `leader` (campaign, report, then per scenario), `standby` (campaign in
/// a loop, recording each election), `stamp` (the CMD of `run`: record the clock).
fn child(role: &str) {
    let block = Block(Shm::open(Path::new(&env("FAILOVER_BLOCK")), 4096));
    if role == "stamp" {
        block.word(T_ELECTED).store(mono_ns(), SeqCst);
        block.word(ELECTED_ROUND).store(block.word(ROUND).load(SeqCst), SeqCst);
        std::thread::sleep(Duration::from_secs(3600));
        return;
    }
    let table = LeaseTable::open(env("FAILOVER_TABLE")).unwrap();
    let ttl = Duration::from_millis(env("FAILOVER_TTL_MS").parse().unwrap());
    let e = table.election(NAME).unwrap().ttl(ttl).unwrap();
    match role {
        "leader" => {
            let l = e.campaign(Some(Duration::from_secs(30))).unwrap();
            let round = block.word(ROUND).load(SeqCst);
            block.word(LEADER_READY).store(round, SeqCst);
            match env("FAILOVER_SCENARIO").as_str() {
                "resign" => {
                    wait_until("go", || block.word(GO).load(SeqCst) == round);
                    block.word(T_EVENT).store(mono_ns(), SeqCst);
                    l.resign().unwrap();
                }
                "request" => {
                    assert_eq!(l.wait_notice(None), Some(Notice::ReleaseRequested));
                    l.resign().unwrap();
                }
                _ => std::thread::sleep(Duration::from_secs(3600)),
            }
        }
        "standby" => loop {
            let l = e.campaign(None).unwrap();
            block.word(T_ELECTED).store(mono_ns(), SeqCst);
            block.word(ELECTED_ROUND).store(block.word(ROUND).load(SeqCst), SeqCst);
            l.resign().unwrap();
            // Wait for the next round's leader to be elected before campaigning again.
            let round = block.word(ROUND).load(SeqCst);
            wait_until("next round", || block.word(LEADER_READY).load(SeqCst) > round);
        },
        other => panic!("unknown role {other}"),
    }
}

struct Setup {
    block: Block,
    block_path: PathBuf,
    table: LeaseTable,
    table_path: PathBuf,
}

impl Setup {
    fn new(what: &str) -> Setup {
        let block_path = shm_path(&scratch_name(&format!("failover-{what}-block")));
        let table_path = shm_path(&scratch_name(&format!("failover-{what}-table")));
        let block = Block(Shm::create(&block_path, 4096));
        let table = LeaseTable::create(&table_path, &TableOptions::new().capacity(16)).unwrap();
        Setup { block, block_path, table, table_path }
    }

    fn spawn(&self, role: &str, scenario: &str, ttl_ms: u64) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD, role)
            .env("FAILOVER_BLOCK", &self.block_path)
            .env("FAILOVER_TABLE", &self.table_path)
            .env("FAILOVER_TTL_MS", ttl_ms.to_string())
            .env("FAILOVER_SCENARIO", scenario)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits until `pid` sleeps in the kernel with a waiter announced on the name.
    fn standby_asleep(&self, pid: u32) {
        let slot = self.table.get(NAME).unwrap().expect("bound").slot as u64;
        let offset = 256 + slot * 128;
        wait_until("the standby to sleep", || {
            let word = read_u64_at(&self.table_path, offset);
            word & (1 << 63) != 0 && proc_state(pid) == Some(b'S')
        });
        // And stays asleep a moment (not between two attempts).
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.block_path);
        // Forced: a candidate killed last may have left a grant that lasts its TTL.
        let _ = LeaseTable::remove_with(&self.table_path, &RemoveOptions::new().force(true));
    }
}

fn read_u64_at(path: &Path, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, offset).unwrap();
    u64::from_le_bytes(b)
}

fn kill(child: &mut Child, sig: i32) {
    // SAFETY: kill(2) on our own, not yet reaped child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// One scenario with the library: `rounds` elections of the standby.
fn scenario(name: &str, rounds: u64) -> Vec<u64> {
    let s = Setup::new(name);
    let ttl_ms = if name == "stop" { 100 } else { 60_000 };
    let mut standby: Option<Child> = None;
    let mut out = Vec::new();
    for round in 1..=rounds {
        s.block.word(ROUND).store(round, SeqCst);
        let mut leader = s.spawn("leader", name, ttl_ms);
        wait_until("the leader", || s.block.word(LEADER_READY).load(SeqCst) == round);
        let sb = standby.get_or_insert_with(|| s.spawn("standby", name, 60_000));
        s.standby_asleep(sb.id());
        let t_event = match name {
            "kill" => {
                let t = mono_ns();
                kill(&mut leader, libc::SIGKILL);
                t
            }
            "stop" => {
                kill(&mut leader, libc::SIGSTOP);
                wait_until("stopped", || proc_state(leader.id()) == Some(b'T'));
                let info = s.table.get(NAME).unwrap().unwrap();
                mono_ns() + info.remaining.as_nanos() as u64
            }
            "resign" => {
                s.block.word(GO).store(round, SeqCst);
                wait_until("resigned", || s.block.word(T_EVENT).load(SeqCst) != 0);
                s.block.word(T_EVENT).swap(0, SeqCst)
            }
            "request" => {
                let t = mono_ns();
                s.table.request_release(NAME, None).unwrap();
                t
            }
            _ => unreachable!(),
        };
        wait_until("the standby's election", || s.block.word(ELECTED_ROUND).load(SeqCst) == round);
        out.push(s.block.word(T_ELECTED).load(SeqCst).saturating_sub(t_event));
        kill(&mut leader, libc::SIGKILL);
        let _ = leader.wait();
    }
    if let Some(mut sb) = standby {
        kill(&mut sb, libc::SIGKILL);
        let _ = sb.wait();
    }
    out
}

/// The CLI's hot standby: two `shmlease run NAME -- stamp` candidates; SIGKILL of the
/// leading `run`; until the standby's CMD has stamped the clock.
fn run_kill(rounds: u64) -> Option<Vec<u64>> {
    let exe = std::env::current_exe().ok()?;
    let cli = exe.parent()?.parent()?.join("shmlease");
    if !cli.exists() {
        eprintln!("run_kill: {} not built (cargo build --release); skipped", cli.display());
        return None;
    }
    let s = Setup::new("run");
    let candidate = || {
        Command::new(&cli)
            .args(["-t", s.table_path.to_str().unwrap(), "run", NAME, "--ttl", "60s", "--"])
            .arg(&exe)
            .env(CHILD, "stamp")
            .env("FAILOVER_BLOCK", &s.block_path)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut out = Vec::new();
    let mut pair = [candidate(), candidate()];
    for round in 1..=rounds {
        s.block.word(ROUND).store(round - 1, SeqCst);
        wait_until("a CMD", || s.block.word(T_ELECTED).load(SeqCst) != 0);
        let holder = s.table.get(NAME).unwrap().unwrap().holder.unwrap().pid;
        let (lead, wait) = if pair[0].id() == holder { (0, 1) } else { (1, 0) };
        s.block.word(T_ELECTED).store(0, SeqCst);
        s.block.word(ROUND).store(round, SeqCst);
        s.standby_asleep(pair[wait].id());
        let t = mono_ns();
        kill(&mut pair[lead], libc::SIGKILL);
        wait_until("the standby's CMD", || s.block.word(ELECTED_ROUND).load(SeqCst) == round);
        out.push(s.block.word(T_ELECTED).load(SeqCst).saturating_sub(t));
        let _ = pair[lead].wait();
        pair[lead] = candidate();
    }
    for c in pair.iter_mut() {
        kill(c, libc::SIGTERM);
        let _ = c.wait();
    }
    Some(out)
}

fn summary(name: &str, mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "{name:<10} n={:<4} p50 {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs",
        v.len(),
        us(percentile(&v, 50.0)),
        us(percentile(&v, 90.0)),
        us(percentile(&v, 99.0)),
        us(*v.last().unwrap_or(&0))
    );
    format!(
        "\"{name}\":{{\"n\":{},\"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"max_ns\":{}}}",
        v.len(),
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        percentile(&v, 99.0),
        v.last().unwrap_or(&0)
    )
}

fn main() {
    if let Ok(role) = std::env::var(CHILD) {
        return child(&role);
    }
    if !bench_mode() {
        return;
    }
    let rounds: u64 =
        std::env::var("SHMLEASE_FAILOVER_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    println!("failover: time until the standby leads ({rounds} rounds each)");
    println!("(stop: time past the stopped leader's deadline, TTL 100 ms)");
    let mut json = Vec::new();
    for name in ["kill", "stop", "resign", "request"] {
        json.push(summary(name, scenario(name, rounds)));
    }
    if let Some(v) = run_kill(rounds.min(100)) {
        json.push(summary("run_kill", v));
    }
    let path = out_dir().join("failover.json");
    std::fs::write(&path, format!("{{{}}}\n", json.join(","))).unwrap();
    println!("written to {}", path.display());
}
