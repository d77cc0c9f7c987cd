//! Child roles for the tests of fair acquisition (`tests/fair.rs`).

use std::time::Duration;

use shmlease::{AcquireOptions, Error};

use super::{env, env_ms, env_or, open_table, say};

/// A fair acquirer of `NAME`: `KIND` is `exclusive`, `shared` or `permits:N`; waits up
/// to `WAIT_MS`; reports `GOT token`, holds the grant for `HOLD_MS`, releases it and
/// reports `RELEASED token` — or reports `TIMEDOUT` / `ERR`.
pub fn role_fair_wait() -> i32 {
    let table = open_table();
    let kind = env_or("KIND", "exclusive");
    let mut opts = AcquireOptions::new().fair(true).wait(Some(env_ms("WAIT_MS")));
    if kind == "shared" {
        opts = opts.shared(true);
    } else if let Some(n) = kind.strip_prefix("permits:") {
        opts = opts.permits(n.parse().unwrap()).unwrap();
    }
    let code = match table.acquire_with(&env("NAME"), Duration::from_secs(30), &opts) {
        Ok(lease) => {
            say("GOT", lease.token());
            std::thread::sleep(env_ms("HOLD_MS"));
            let token = lease.token();
            lease.release().unwrap();
            say("RELEASED", token);
            0
        }
        Err(Error::TimedOut { .. }) => {
            say("TIMEDOUT", 0);
            0
        }
        Err(e) => {
            say("ERR", format!("{e:?}"));
            20
        }
    };
    code
}
