//! Chaos harness: worker processes fight over a few lease names while this controller
//! kill -9s, SIGSTOPs and SIGCONTs them at random; afterwards a checker reads every
//! worker's log and verifies exclusivity (at most N grants of a name with N permits; on
//! a shared name, an exclusive grant alone), fencing, that stale holders are told their
//! grant is lost, reclaim after death, fair queue order, a free table at the end, and
//! that nobody panicked. Exits non-zero on any violation.
//!
//! ```text
//! cargo run --release --example chaos -- --workers 8 --names 4 --duration 15m --seed 1
//! cargo run --release --example chaos -- --mode mix --duration 30m --progress 5m
//! ```
//!
//! Modes (`--mode`): `classic` (the default), `fork`, `threads`, `herd`, `full`,
//! `fallback`, `permits` (names with 2 and 3 permits), `shared` (shared and exclusive
//! grants of shared names), `fair` (fair acquisition, with each waiter's place in the
//! queue watched), and `mix` (all of them at once on one table).
//!
//! See `docs/chaos.md` for the knobs and exactly what is checked.

#[path = "chaos_core/mod.rs"]
mod chaos_core;

fn main() {
    if chaos_core::maybe_run_worker() {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match chaos_core::Config::parse(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let launcher = chaos_core::Launcher {
        exe: std::env::current_exe().expect("current_exe"),
        args: vec!["worker".into()],
    };
    let layout = cfg.layout();
    eprintln!(
        "chaos: mode {}, {} worker units, {} names in a table of {}, {:?}, seed {}, {} kills/s, {} stops/s, load {}",
        cfg.mode.as_str(),
        cfg.units(),
        layout.total(),
        cfg.capacity(),
        cfg.duration,
        cfg.seed,
        cfg.kill_rate,
        cfg.stop_rate,
        chaos_core::loadavg()
    );
    let report = chaos_core::run(&cfg, &launcher);
    print!("{}", report.summary());
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
