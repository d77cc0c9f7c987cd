//! Background renewal: a kept-alive lease outlives its TTL, loss (revocation) is reported
//! promptly, and renewal stops the moment the lease is released, detached or dropped.

use std::time::{Duration, Instant};

use shmlease::{Error, LeaseState, LeaseTable, LostReason, TableOptions};

fn table(test: &str) -> (LeaseTable, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("shmlease-ka-{test}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let t = LeaseTable::create(&path, &TableOptions::new().capacity(16)).expect("create");
    (t, path)
}

#[test]
fn kept_alive_lease_outlives_its_ttl() {
    let (t, path) = table("outlives");
    let ttl = Duration::from_millis(150);
    let mut lease = t.try_acquire("job", ttl).unwrap();
    lease.keep_alive(ttl).unwrap();
    let start = Instant::now();
    while start.elapsed() < ttl * 6 {
        assert!(lease.is_valid(), "lost after {:?}", start.elapsed());
        assert!(matches!(t.try_acquire("job", ttl), Err(Error::Held { .. })));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lease.lost(), None);
    lease.release().unwrap();
    LeaseTable::remove(&path).unwrap();
}

#[test]
fn revocation_is_reported_without_waiting_for_a_renewal() {
    let (t, path) = table("revoked");
    // Renewal every 20 s: only the slot watch can report the revocation in time.
    let ttl = Duration::from_secs(60);
    let mut lease = t.try_acquire("job", ttl).unwrap();
    lease.keep_alive(ttl).unwrap();
    assert_eq!(lease.wait_lost(Some(Duration::from_millis(50))), None);
    let revoked = t.revoke("job").unwrap();
    assert_eq!(revoked, Some(lease.token()));
    assert_eq!(lease.wait_lost(Some(Duration::from_secs(10))), Some(LostReason::Revoked));
    assert!(!lease.is_valid());
    assert!(matches!(lease.release(), Err(Error::Lost { reason: LostReason::Revoked, .. })));
    LeaseTable::remove(&path).unwrap();
}

#[test]
fn renewal_stops_when_the_lease_is_released_or_dropped() {
    let (t, path) = table("stops");
    let ttl = Duration::from_millis(100);
    let mut lease = t.try_acquire("job", ttl).unwrap();
    lease.keep_alive(ttl).unwrap();
    lease.release().unwrap();
    assert_eq!(t.get("job").unwrap().unwrap().state, LeaseState::Free);
    // A new grant with no keep-alive must expire on time: the old thread must not touch it.
    let next = t.try_acquire("job", ttl).unwrap();
    let token = next.token();
    next.detach().unwrap();
    std::thread::sleep(ttl * 4);
    let info = t.get("job").unwrap().unwrap();
    assert_eq!((info.token, info.state), (token, LeaseState::Expired));

    let mut dropped = t.try_acquire("job", ttl).unwrap();
    dropped.keep_alive(ttl).unwrap();
    drop(dropped);
    assert_eq!(t.get("job").unwrap().unwrap().state, LeaseState::Free);
    std::thread::sleep(ttl * 2);
    assert_eq!(t.get("job").unwrap().unwrap().state, LeaseState::Free);
    LeaseTable::remove(&path).unwrap();
}

#[test]
fn detaching_stops_renewal_and_hands_over_the_token() {
    let (t, path) = table("detach");
    let ttl = Duration::from_millis(200);
    let mut lease = t.try_acquire("job", ttl).unwrap();
    lease.keep_alive(ttl).unwrap();
    let detached = lease.detach().unwrap();
    let info = t.get("job").unwrap().unwrap();
    assert!(info.holder.unwrap().detached);
    // Anyone may renew it by token...
    t.renew("job", detached.token, ttl).unwrap();
    // ...and nobody renews it by itself: it expires.
    std::thread::sleep(ttl * 3);
    assert_eq!(t.get("job").unwrap().unwrap().state, LeaseState::Expired);
    assert!(matches!(
        t.release("job", detached.token),
        Ok(()) | Err(Error::Lost { reason: LostReason::Expired, .. })
    ));
    let again = t.try_acquire("job", ttl).unwrap();
    assert!(again.token() > detached.token);
    drop(again);
    LeaseTable::remove(&path).unwrap();
}

#[test]
fn releasing_twice_by_token_reports_lost() {
    let (t, path) = table("twice");
    let lease = t.try_acquire("job", Duration::from_secs(5)).unwrap().detach().unwrap();
    t.release("job", lease.token).unwrap();
    assert!(matches!(
        t.release("job", lease.token),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    assert!(matches!(
        t.renew("job", lease.token, Duration::from_secs(1)),
        Err(Error::Lost { reason: LostReason::Released, .. })
    ));
    LeaseTable::remove(&path).unwrap();
}

#[test]
fn table_and_lease_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LeaseTable>();
    assert_send_sync::<shmlease::Lease<'static>>();
}

/// The library's own threads (keep-alive, a fair waiter's place renewer; death watches
/// are started the same way) block every signal, so that a
/// signal meant for the process is never delivered to one of them and lost (a program
/// reading SIGCHLD from a signalfd, as `shmlease run` does, hung when a lingering death
/// watch thread took it).
#[test]
fn library_threads_block_every_signal() {
    let (table, path) = table("sigmask");
    let mut lease = table.try_acquire("held", Duration::from_secs(30)).unwrap();
    lease.keep_alive(Duration::from_secs(30)).unwrap();
    std::thread::scope(|scope| {
        // A fair waiter first in line renews its place from a thread of its own.
        let waiter = scope.spawn(|| {
            let fair =
                shmlease::AcquireOptions::new().fair(true).wait(Some(Duration::from_millis(1500)));
            table.acquire_with("held", Duration::from_secs(1), &fair).map(drop)
        });
        let end = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = std::collections::BTreeMap::new();
        while seen.len() < 2 {
            for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let comm = comm.trim().to_owned();
                if !comm.starts_with("shmlease-") {
                    continue;
                }
                let status =
                    std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
                if let Some(mask) = status.lines().find_map(|l| l.strip_prefix("SigBlk:")) {
                    let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
                    // Every standard signal that can be blocked (not SIGKILL, SIGSTOP).
                    let wanted: u64 = ((1u64 << 31) - 1)
                        & !(1 << (libc::SIGKILL - 1))
                        & !(1 << (libc::SIGSTOP - 1));
                    assert_eq!(mask & wanted, wanted, "{comm} blocks only {mask:#x}");
                    seen.insert(comm, mask);
                }
            }
            assert!(std::time::Instant::now() < end, "threads seen: {seen:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(seen.keys().any(|k| k.starts_with("shmlease-keep")), "{seen:?}");
        assert!(seen.keys().any(|k| k.starts_with("shmlease-renew")), "{seen:?}");
        let _ = waiter.join();
    });
    drop(lease);
    let _ = std::fs::remove_file(path);
}
