//! The chaos harness (`examples/chaos.rs`) in CI: 6 worker processes over 3 names for
//! 60 seconds, with kill -9s and SIGSTOPs; asserts zero violations. A second, short run
//! injects a fault (workers believe their leases last 20 ms longer than granted) and
//! asserts that the checker catches it, so a clean result is not a blind checker's.
//!
//! Workers are this test binary re-executed with `SHMLEASE_CHAOS_WORKER` set, entering
//! through the ignored `chaos_worker` test. `SHMLEASE_CHAOS_SECS` overrides the
//! duration of the main run. The harness has its own watchdog (it kills every worker and
//! aborts if a run overstays by a minute); workers die with this process
//! (`PR_SET_PDEATHSIG`) and stop by themselves at the end of the run.

#[path = "../examples/chaos_core/mod.rs"]
mod chaos_core;

use std::sync::Mutex;
use std::time::Duration;

/// The two runs take turns: each wants the CPUs to itself.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Entry point of the worker processes (re-executions of this binary).
#[test]
#[ignore = "worker process entry point; run by the chaos tests"]
fn chaos_worker() {
    if chaos_core::maybe_run_worker() {
        std::process::exit(0);
    }
}

fn launcher() -> chaos_core::Launcher {
    chaos_core::Launcher {
        exe: std::env::current_exe().expect("current_exe"),
        args: ["chaos_worker", "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"]
            .map(String::from)
            .to_vec(),
    }
}

fn config(secs: u64) -> chaos_core::Config {
    chaos_core::Config {
        workers: Some(6),
        names: Some(3),
        duration: Duration::from_secs(secs),
        seed: chaos_core::mono(),
        kill_rate: 3.0,
        stop_rate: 3.0,
        ..chaos_core::Config::default()
    }
}

#[test]
fn chaos_short() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let secs = std::env::var("SHMLEASE_CHAOS_SECS").ok().and_then(|s| s.parse().ok());
    let cfg = config(secs.unwrap_or(60));
    let report = chaos_core::run(&cfg, &launcher());
    eprintln!("seed {}\n{}", cfg.seed, report.summary());
    let count = |k: &str| report.counts.get(k).copied().unwrap_or(0);
    assert!(count("grants") > 100, "too few grants to mean anything");
    assert!(count("kills (SIGKILL)") > 0 && count("stops (SIGSTOP > max TTL)") > 0);
    assert!(
        report.violations.is_empty(),
        "{} violations; logs kept in {}",
        report.violations.len(),
        report.dir.display()
    );
}

#[test]
fn chaos_checker_catches_a_lying_holder() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = chaos_core::Config { fault: "lie".into(), ..config(5) };
    let report = chaos_core::run(&cfg, &launcher());
    let kinds: Vec<&str> = report.violations.iter().filter_map(|v| v.split(':').next()).collect();
    assert!(
        kinds.contains(&"overlap") && kinds.contains(&"in-lease-overwrite"),
        "the checker missed injected overlaps:\n{}",
        report.summary()
    );
    let _ = std::fs::remove_dir_all(&report.dir);
}
