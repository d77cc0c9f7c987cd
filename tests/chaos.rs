//! The chaos harness (`examples/chaos.rs`) in CI.
//!
//! - `chaos_short`: every worker pattern at once (`--mode mix`: fork trees on one
//!   inherited table, threads, a herd on one name, a table kept full, the fallback
//!   identity with exited main threads, names with 2 and 3 permits, shared names,
//!   fair queues, and the classic loop) on one table for 60 s, with kill -9s and
//!   SIGSTOPs; asserts that every mode ran and that there is no violation.
//! - `chaos_long_ttls`: the same mix for 40 s with TTLs up to 2 s (`--max-ttl-ms 2000`),
//!   so that about half the grants of free names take the coarse-clock fast path (TTLs
//!   of 256 coarse ticks and more) — the default TTLs, up to 50 ms, never do; asserts
//!   that there is no violation.
//! - `chaos_checker_catches_a_lying_holder`: short runs (`classic`, then `permits`) that
//!   inject a fault (workers believe their leases last 20 ms longer than granted) and
//!   assert that the checker catches it, so a clean result is not a blind checker's.
//! - `chaos_checker_catches_an_extra_permit`: a short `permits` run whose workers ask
//!   the library for one permit more than the checker allows (as a library admitting
//!   one holder too many would); asserts that the checker finds more valid grants than
//!   permits.
//! - `chaos_checker_catches_an_exclusive_grant_among_shared_ones`: a short `shared` run
//!   whose workers, meaning to take an exclusive grant, take a shared one (as a library
//!   letting an exclusive holder in beside readers would); asserts that the checker
//!   finds exclusive grants overlapping others.
//! - `chaos_checker_catches_a_barging_fair_waiter`: a short `fair` run whose workers
//!   acquire unfairly half of the time while logging a fair acquisition (as a library
//!   whose queue can be passed would); asserts that the checker finds fair grants made
//!   while a place ahead was live.
//! - `chaos_modes_smoke`: each mode alone for 0.6 s (`fair`: 2 s), asserting that its
//!   machinery works (forks announced, threads' logs, the herd's holder checks, a full
//!   table, exited main threads, permits held at once, shared grants overlapping and
//!   exclusive ones, fair grants checked against places seen ahead of them). It does not assert zero violations:
//!   that is too short to mean anything either way; `chaos_short` does that.
//!
//! Workers are this test binary re-executed with `SHMLEASE_CHAOS_WORKER` set. They start
//! from an ELF constructor, before `main` and before the test harness starts any thread,
//! so that a worker runs on its process's main thread: a fork tree's opener forks
//! single-threaded, and a fallback worker can end its main thread. (Should the
//! constructor not run, the ignored `chaos_worker` test is the entry point instead.)
//! `SHMLEASE_CHAOS_SECS` overrides the duration of the main run. The harness has its
//! own watchdog (it kills every worker and aborts if a run overstays by a minute);
//! workers die with this process (`PR_SET_PDEATHSIG`, forked ones with their parent)
//! and stop by themselves at the end of the run.

#[path = "../examples/chaos_core/mod.rs"]
mod chaos_core;

use std::sync::Mutex;
use std::time::Duration;

use chaos_core::{Mode, RunMode};

/// The runs take turns: each wants the CPUs to itself.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a worker before `main` when this process is one.
extern "C" fn worker_entry() {
    if chaos_core::maybe_run_worker() {
        std::process::exit(0);
    }
}

#[used]
#[link_section = ".init_array"]
static WORKER_ENTRY: extern "C" fn() = worker_entry;

/// Entry point of the worker processes if the constructor did not run.
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

fn config(mode: RunMode, secs: f64) -> chaos_core::Config {
    chaos_core::Config {
        mode,
        duration: Duration::from_secs_f64(secs),
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
    let cfg = config(RunMode::Mix, secs.unwrap_or(60.0));
    let report = chaos_core::run(&cfg, &launcher());
    eprintln!("seed {}\n{}", cfg.seed, report.summary());
    let count = |k: &str| report.counts.get(k).copied().unwrap_or(0);
    assert!(count("grants") > 100, "too few grants to mean anything");
    assert!(count("kills (SIGKILL)") > 0 && count("stops (SIGSTOP > max TTL)") > 0);
    for m in Mode::SELECTABLE.into_iter().chain([Mode::Filler]) {
        assert!(report.mode_count(m.as_str(), "grants") > 0, "mode {} made no grant", m.as_str());
    }
    assert!(
        report.mode_count("permits", "most grants valid at once on perm-0 (2 permits)") >= 2,
        "permits: never two grants of perm-0 valid at once\n{}",
        report.summary()
    );
    assert!(
        report.mode_count("shared", "shared grants begun while another was valid") > 0
            && report.mode_count("shared", "exclusive grants") > 0,
        "shared: no overlapping shared grants, or no exclusive one\n{}",
        report.summary()
    );
    assert!(
        report.mode_count("fair", "fair grants checked behind a live place (in order)") > 0,
        "fair: no fair grant was checked against a place ahead of it\n{}",
        report.summary()
    );
    assert!(
        report.violations.is_empty(),
        "{} violations; logs kept in {}",
        report.violations.len(),
        report.dir.display()
    );
}

#[test]
fn chaos_long_ttls() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = chaos_core::Config { max_ttl_ms: 2000, ..config(RunMode::Mix, 40.0) };
    let report = chaos_core::run(&cfg, &launcher());
    eprintln!("seed {}\n{}", cfg.seed, report.summary());
    let count = |k: &str| report.counts.get(k).copied().unwrap_or(0);
    assert!(count("grants") > 100, "too few grants to mean anything");
    for m in ["permits", "shared", "classic"] {
        assert!(report.mode_count(m, "grants") > 0, "mode {m} made no grant");
    }
    assert!(
        report.violations.is_empty(),
        "{} violations; logs kept in {}",
        report.violations.len(),
        report.dir.display()
    );
}

/// Runs `cfg` and returns the kinds of its violations (and the report).
fn violation_kinds(cfg: &chaos_core::Config) -> (Vec<String>, chaos_core::Report) {
    let report = chaos_core::run(cfg, &launcher());
    let kinds = report.violations.iter().filter_map(|v| v.split(':').next()).map(String::from);
    (kinds.collect(), report)
}

#[test]
fn chaos_checker_catches_a_lying_holder() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = chaos_core::Config {
        fault: "lie".into(),
        workers: Some(6),
        names: Some(3),
        ..config(RunMode::One(Mode::Classic), 5.0)
    };
    let (kinds, report) = violation_kinds(&cfg);
    assert!(
        kinds.iter().any(|k| k == "overlap") && kinds.iter().any(|k| k == "in-lease-overwrite"),
        "the checker missed injected overlaps:\n{}",
        report.summary()
    );
    let _ = std::fs::remove_dir_all(&report.dir);

    // Names with permits: a holder that believes in a later deadline counts itself
    // while its seat is someone else's: too many grants, two in one seat.
    let cfg =
        chaos_core::Config { fault: "lie".into(), ..config(RunMode::One(Mode::Permits), 5.0) };
    let (kinds, report) = violation_kinds(&cfg);
    assert!(
        kinds.iter().any(|k| k == "over-permits") && kinds.iter().any(|k| k == "seat-overlap"),
        "the checker missed injected grants beyond the permits:\n{}",
        report.summary()
    );
    let _ = std::fs::remove_dir_all(&report.dir);
}

#[test]
fn chaos_checker_catches_an_extra_permit() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // The workers ask for N + 1 permits where the checker allows N: N + 1 grants are
    // then valid at once (truly: the library admits them), which the checker must see
    // from the workers' intervals alone ("over-permits"), besides the table's own
    // word ("wrong-kind", "listed-over-permits").
    let cfg = chaos_core::Config {
        fault: "extra-permit".into(),
        ..config(RunMode::One(Mode::Permits), 4.0)
    };
    let (kinds, report) = violation_kinds(&cfg);
    for kind in ["over-permits", "wrong-kind"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "the checker missed an extra permit ({kind}):\n{}",
            report.summary()
        );
    }
    let _ = std::fs::remove_dir_all(&report.dir);
}

#[test]
fn chaos_checker_catches_an_exclusive_grant_among_shared_ones() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Workers that mean to take an exclusive grant of a shared name take a shared one
    // and log it as exclusive: "exclusive" grants then overlap shared ones (truly: the
    // library admits them), which the checker must see from the intervals alone; the
    // table's own word ("grant-kind") says the same.
    let cfg = chaos_core::Config {
        fault: "shared-as-exclusive".into(),
        ..config(RunMode::One(Mode::Shared), 4.0)
    };
    let (kinds, report) = violation_kinds(&cfg);
    for kind in ["exclusive-overlap", "grant-kind"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "the checker missed exclusive grants beside shared ones ({kind}):\n{}",
            report.summary()
        );
    }
    let _ = std::fs::remove_dir_all(&report.dir);
}

#[test]
fn chaos_checker_catches_a_barging_fair_waiter() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Half the "fair" acquisitions are unfair ones: they pass places in the queue that
    // the honest fair waiters hold, which the checker must see from the logs.
    let cfg = chaos_core::Config { fault: "barge".into(), ..config(RunMode::One(Mode::Fair), 5.0) };
    let (kinds, report) = violation_kinds(&cfg);
    assert!(
        kinds.iter().any(|k| k == "fair-order"),
        "the checker missed fair waiters passed by barging ones:\n{}",
        report.summary()
    );
    let _ = std::fs::remove_dir_all(&report.dir);
}

#[test]
fn chaos_modes_smoke() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    for m in Mode::SELECTABLE {
        // Fair: long enough for queues to form and be watched.
        let secs = if m == Mode::Fair { 2.0 } else { 0.6 };
        let cfg = config(RunMode::One(m), secs);
        let report = chaos_core::run(&cfg, &launcher());
        let name = m.as_str();
        let count = |k: &str| report.mode_count(name, k);
        let failed = report.violations.iter().filter(|v| v.starts_with("worker-failed")).count();
        let summary = report.summary();
        assert!(count("grants") > 0, "{name}: no grant\n{summary}");
        assert_eq!(failed, 0, "{name}: workers failed\n{summary}");
        match m {
            Mode::Fork => assert!(
                count("forked children") > 0 && count("forked grandchildren") > 0,
                "fork: no forked children or grandchildren announced\n{summary}"
            ),
            Mode::Threads => assert!(
                report.counts["log streams"] >= cfg.threads as u64,
                "threads: fewer logs than threads\n{summary}"
            ),
            Mode::Herd => assert!(
                count("holder checks (lease valid across get())") > 0,
                "herd: no holder check\n{summary}"
            ),
            Mode::Full => {
                let (_, median) = report.occupancy_pct().expect("occupancy samples");
                assert!(median >= 99.0, "full: median occupancy {median}%\n{summary}");
                assert!(report.mode_count("filler", "grants") >= cfg.fill() as u64);
            }
            Mode::Fallback => assert!(
                count("main thread seen exited (state Z)") > 0,
                "fallback: no worker ran with an exited main thread\n{summary}"
            ),
            Mode::Permits => assert!(
                count("permit checks (lease valid across get())") > 0
                    && count("most grants valid at once on perm-0 (2 permits)") >= 2,
                "permits: no permit check, or never two permits of perm-0 held at once\n{summary}"
            ),
            Mode::Shared => assert!(
                count("shared checks (lease valid across get())") > 0
                    && count("shared grants begun while another was valid") > 0
                    && count("exclusive grants") > 0,
                "shared: no shared check, no overlapping shared grants, or no exclusive grant\n{summary}"
            ),
            Mode::Fair => assert!(
                count("queue observations (own place seen in get().queue)") > 0
                    && count("fair grants checked behind a live place (in order)") > 0,
                "fair: no place seen in a queue, or no fair grant checked against one\n{summary}"
            ),
            Mode::Classic | Mode::Filler => {}
        }
        eprintln!("{name}: {} grants, {} violations", count("grants"), report.violations.len());
        let _ = std::fs::remove_dir_all(&report.dir);
    }
}
