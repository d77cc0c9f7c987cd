//! Reboots, simulated by rewriting the boot id recorded in a file-backed table (header
//! bytes 64..80): whoever opens the table afterwards finds every deadline void — a held
//! lease is acquirable at once — and every new token above every token handed out
//! before (invariant 2 across reboots).

mod common;

use std::time::Duration;

use common::{fake_reboot, touch, Kid, Scratch, Watchdog};
use shmlease::{Error, LeaseState, LeaseTable, TableOptions};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    common::run_child();
}

const LONG: Duration = Duration::from_secs(60);

/// The current boot id, as `TableInfo::boot_id` spells it.
fn current_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_owned()
}

/// The largest token the table shows for any name.
fn max_token(table: &LeaseTable) -> u64 {
    table.list().unwrap().iter().map(|l| l.token).max().unwrap_or(0)
}

#[test]
fn reboot_voids_deadlines_and_tokens_keep_growing() {
    let _wd = Watchdog::new("reboot_voids_deadlines_and_tokens_keep_growing", LONG);
    let dir = Scratch::new("reboot");
    let path = dir.path("table");
    let names = ["held", "free", "revoked", "expired", "churn"];
    let mut highest = 0u64;
    {
        let table = LeaseTable::create(&path, &TableOptions::new().capacity(32)).unwrap();
        assert_eq!(table.info().boot_id, current_boot_id());
        for _ in 0..20 {
            let l = table.try_acquire("churn", LONG).unwrap();
            highest = highest.max(l.token());
        }
        let free = table.try_acquire("free", LONG).unwrap();
        highest = highest.max(free.token());
        free.release().unwrap();
        let revoked = table.try_acquire("revoked", LONG).unwrap().detach().unwrap();
        table.revoke("revoked").unwrap();
        highest = highest.max(revoked.token);
        let expired = table.try_acquire("expired", Duration::from_micros(1)).unwrap();
        highest = highest.max(expired.token());
        std::mem::forget(expired);
        // The one that matters: held for an hour, by nobody who will ever release it.
        let held = table.try_acquire("held", Duration::from_secs(3600)).unwrap();
        let held = held.detach().unwrap();
        highest = highest.max(held.token);
        assert!(matches!(table.try_acquire("held", LONG), Err(Error::Held { .. })));
        assert_eq!(max_token(&table), highest);
    }

    for reboot in 1..=2u64 {
        fake_reboot(&path, reboot);
        let table = LeaseTable::open(&path).unwrap();
        assert_eq!(table.info().boot_id, current_boot_id(), "the boot id was not updated");
        // Every deadline is void: "held" is acquirable at once.
        let info = table.get("held").unwrap().unwrap();
        assert_ne!(info.state, LeaseState::Held, "after reboot {reboot}: {info:?}");
        let mut after = Vec::new();
        for name in names {
            let l = table
                .try_acquire(name, LONG)
                .unwrap_or_else(|e| panic!("after reboot {reboot}, {name}: {e}"));
            assert!(
                l.token() > highest,
                "after reboot {reboot}, {name} got token {} but {highest} was handed out before",
                l.token()
            );
            after.push(l.token());
            l.release().unwrap();
        }
        // A name bound only after the reboot too.
        let fresh = format!("fresh-{reboot}");
        let l = table.try_acquire(&fresh, LONG).unwrap();
        assert!(l.token() > highest);
        after.push(l.token());
        // Held across the next reboot.
        let token = l.detach().unwrap().token;
        highest = after.into_iter().max().unwrap().max(max_token(&table));
        // Tokens of different names are not ordered (each keeps its own sequence).
        assert!(highest >= token);
        // A second opener in the same boot does not rebase again: the lease stays held.
        let again = LeaseTable::open(&path).unwrap();
        assert!(matches!(again.try_acquire(&fresh, LONG), Err(Error::Held { .. })));
    }
}

/// A holder process keeps its mapping across the simulated reboot: a process that
/// opens the table afterwards takes the lease at once with a larger token, and the old
/// holder's renew and release report `Error::Lost`.
#[test]
fn reboot_while_a_process_holds_a_lease() {
    let wd = Watchdog::new("reboot_while_a_process_holds_a_lease", Duration::from_secs(120));
    let dir = Scratch::new("reboot-proc");
    let path = dir.path("table");
    let go = dir.path("go");
    let name = "leader";
    LeaseTable::create(&path, &TableOptions::new().capacity(16)).unwrap();
    let mut holder = Kid::spawn(
        &wd,
        "holder",
        "hold",
        &[
            ("TABLE", path.display().to_string()),
            ("NAME", name.into()),
            ("TTL_MS", "60000".into()),
            ("ACTION", "stale".into()),
            ("GO", go.display().to_string()),
        ],
    );
    let token0: u64 = holder.expect("READY", LONG).parse().unwrap();
    {
        let table = LeaseTable::open(&path).unwrap();
        assert!(matches!(table.try_acquire(name, LONG), Err(Error::Held { .. })));
    }
    fake_reboot(&path, 7);
    let table = LeaseTable::open(&path).unwrap();
    let lease = table
        .try_acquire(name, LONG)
        .expect("after a reboot a lease from the previous boot must be acquirable at once");
    assert!(lease.token() > token0);
    touch(&go);
    holder.expect("RENEW_LOST", LONG);
    holder.expect("RELEASE_LOST", LONG);
    holder.wait_ok(LONG);
    assert!(lease.is_valid());
    lease.release().unwrap();
    drop(table);
    LeaseTable::remove(&path).unwrap();
}
