//! Bad input: files that are not lease tables (empty, truncated, foreign, of another
//! version or layout, not regular files, symlinks, squatters), hostile ownership and
//! permissions, invalid names and TTLs, and garbage written into a live table. Each
//! gives a clear error (never a panic or a hang) and leaves the file untouched.

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{read_u64, write_u64, FileState, Rng, Scratch, Watchdog};
use shmlease::{AcquireOptions, Error, LeaseTable, TableOptions};

const TTL: Duration = Duration::from_secs(30);

fn make_table(path: &Path, capacity: u32) {
    let t = LeaseTable::create(path, &TableOptions::new().capacity(capacity)).unwrap();
    // Leave some content in it.
    let l = t.try_acquire("held", TTL).unwrap();
    l.detach().unwrap();
    t.try_acquire("free", TTL).unwrap().release().unwrap();
}

/// Opens `path` with `open` and `open_or_create`, and creates over it: checks each
/// error with `check` (create must say AlreadyExists), and that the file is untouched.
fn refused(path: &Path, what: &str, check: impl Fn(&Error) -> bool) {
    let before = FileState::of(path, false);
    let opened = LeaseTable::open(path);
    match &opened {
        Err(e) if check(e) => {}
        other => panic!("{what}: open gave {other:?}"),
    }
    match LeaseTable::open_or_create(path, &TableOptions::new()) {
        Err(e) if check(&e) => {}
        other => panic!("{what}: open_or_create gave {other:?}"),
    }
    match LeaseTable::create(path, &TableOptions::new()) {
        Err(Error::AlreadyExists { .. }) => {}
        other => panic!("{what}: create gave {other:?}"),
    }
    assert_eq!(FileState::of(path, false), before, "{what}: the file was modified");
}

/// `remove` refuses what is not a lease table and leaves it in place, untouched.
fn remove_refused(path: &Path, what: &str) {
    let before = FileState::of(path, false);
    match LeaseTable::remove(path) {
        Err(Error::NotATable { .. }) => {}
        other => panic!("{what}: remove gave {other:?}"),
    }
    assert_eq!(FileState::of(path, false), before, "{what}: remove touched it");
}

fn copy_of_table(dir: &Scratch, name: &str) -> std::path::PathBuf {
    let real = dir.path("real");
    if !real.exists() {
        make_table(&real, 16);
    }
    let copy = dir.path(name);
    std::fs::copy(&real, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    copy
}

#[test]
fn empty_file_is_not_a_table() {
    let dir = Scratch::new("empty");
    let p = dir.path("t");
    std::fs::write(&p, b"").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(&p, "empty file", |e| matches!(e, Error::NotATable { .. }));
    remove_refused(&p, "empty file");
}

#[test]
fn truncated_table_is_refused() {
    let dir = Scratch::new("truncated");
    for len in [1u64, 100, 255] {
        let p = copy_of_table(&dir, &format!("short-{len}"));
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len).unwrap();
        refused(&p, &format!("truncated to {len} bytes"), |e| {
            matches!(e, Error::NotATable { .. } | Error::Corrupt { .. })
        });
    }
    for len in [256u64, 256 + 128, 256 + 15 * 128 + 64] {
        let p = copy_of_table(&dir, &format!("short-{len}"));
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len).unwrap();
        refused(&p, &format!("truncated to {len} bytes"), |e| matches!(e, Error::Corrupt { .. }));
    }
    // Longer than its capacity says is just as wrong.
    let p = copy_of_table(&dir, "long");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len + 128).unwrap();
    refused(&p, "extended", |e| matches!(e, Error::Corrupt { .. }));
}

#[test]
fn wrong_magic_is_not_a_table() {
    let dir = Scratch::new("magic");
    let p = copy_of_table(&dir, "t");
    write_u64(&p, 0, u64::from_le_bytes(*b"NOTLEASE"));
    refused(&p, "wrong magic", |e| matches!(e, Error::NotATable { .. }));
    remove_refused(&p, "wrong magic");
    // A foreign file of a plausible size.
    let p = dir.path("foreign");
    std::fs::write(&p, vec![0xabu8; 256 + 16 * 128]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(&p, "foreign file", |e| matches!(e, Error::NotATable { .. }));
    remove_refused(&p, "foreign file");
}

#[test]
fn other_format_versions_are_incompatible() {
    let dir = Scratch::new("version");
    // 1: a table of release 1, whose grant word had no observer or request flags; 2:
    // one whose binding word had no seat field (its hash bits are where seats are now).
    for version in [1u32, 2, 4, 0, u32::MAX] {
        let p = copy_of_table(&dir, &format!("v{version}"));
        let word = read_u64(&p, 8);
        write_u64(&p, 8, (word & !0xffff_ffff) | version as u64);
        refused(&p, &format!("format version {version}"), |e| {
            matches!(e, Error::Incompatible { .. })
        });
    }
    // The other byte order.
    let p = copy_of_table(&dir, "endian");
    let word = read_u64(&p, 8);
    write_u64(&p, 8, (word & 0xffff_ffff) | (0x0403_0201u64 << 32));
    refused(&p, "other byte order", |e| matches!(e, Error::Incompatible { .. }));
}

#[test]
fn different_layout_is_incompatible() {
    let dir = Scratch::new("layout");
    let real = copy_of_table(&dir, "probe");
    let geometry = read_u64(&real, 16);
    for (i, g) in
        [geometry + 1, geometry ^ (1 << 17), geometry ^ (1 << 33), geometry ^ (1 << 50), 0]
            .into_iter()
            .enumerate()
    {
        let p = copy_of_table(&dir, &format!("g{i}"));
        write_u64(&p, 16, g);
        refused(&p, &format!("geometry {g:#x}"), |e| matches!(e, Error::Incompatible { .. }));
    }
}

#[test]
fn impossible_capacity_is_corrupt() {
    let dir = Scratch::new("capacity");
    for cap in [0u64, 17, 1 << 24 | 1, u64::MAX] {
        let p = copy_of_table(&dir, &format!("c{cap}"));
        write_u64(&p, 24, cap);
        refused(&p, &format!("capacity {cap}"), |e| matches!(e, Error::Corrupt { .. }));
    }
}

#[test]
fn not_a_regular_file_is_not_a_table() {
    let dir = Scratch::new("special");
    let d = dir.path("a-directory");
    std::fs::create_dir(&d).unwrap();
    refused(&d, "directory", |e| matches!(e, Error::NotATable { .. }));
    remove_refused(&d, "directory");

    let fifo = dir.path("a-fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Must not block on the FIFO either (the watchdog would fire).
    let wd = Watchdog::new("not_a_regular_file_is_not_a_table", Duration::from_secs(60));
    refused(&fifo, "fifo", |e| matches!(e, Error::NotATable { .. }));
    remove_refused(&fifo, "fifo");
    drop(wd);

    match LeaseTable::open("/dev/null") {
        Err(Error::NotATable { .. }) => {}
        other => panic!("/dev/null: open gave {other:?}"),
    }
}

#[test]
fn symlink_to_a_valid_table_is_refused() {
    let dir = Scratch::new("symlink");
    let target = dir.path("target");
    make_table(&target, 16);
    let link = dir.path("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let target_before = FileState::of(&target, true);
    refused(&link, "symlink", |e| match e {
        Error::NotATable { reason, .. } => {
            let r = reason.to_lowercase();
            r.contains("symlink") || r.contains("symbolic link")
        }
        _ => false,
    });
    assert_eq!(FileState::of(&target, true), target_before, "the symlink's target was modified");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // remove() refuses the link too (it is not a table), and leaves both alone.
    assert!(matches!(LeaseTable::remove(&link), Err(Error::NotATable { .. })));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(FileState::of(&target, true), target_before);
}

#[test]
fn squatter_file_is_left_alone() {
    let dir = Scratch::new("squatter");
    let p = dir.path("t");
    std::fs::write(&p, b"I was here first\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(&p, "squatter", |e| matches!(e, Error::NotATable { .. }));
    remove_refused(&p, "squatter");
}

#[test]
fn names_are_validated() {
    let dir = Scratch::new("names");
    let p = dir.path("t");
    let table = LeaseTable::create(&p, &TableOptions::new().capacity(16)).unwrap();
    let long = "x".repeat(65);
    let long_utf8 = "é".repeat(33); // 66 bytes
    for bad in ["", long.as_str(), long_utf8.as_str(), "a\0b", "\0"] {
        let is_invalid = |r: &Error| matches!(r, Error::InvalidName { .. });
        assert!(table.try_acquire(bad, TTL).is_err_and(|e| is_invalid(&e)), "{bad:?}");
        assert!(
            table.acquire(bad, TTL, Some(Duration::from_millis(10))).is_err_and(|e| is_invalid(&e)),
            "{bad:?}"
        );
        assert!(table.get(bad).is_err_and(|e| is_invalid(&e)), "{bad:?}");
        assert!(table.revoke(bad).is_err_and(|e| is_invalid(&e)), "{bad:?}");
        assert!(table.revoke_token(bad, 5).is_err_and(|e| is_invalid(&e)), "{bad:?}");
        assert!(table.renew(bad, 5, TTL).is_err_and(|e| is_invalid(&e)), "{bad:?}");
        assert!(table.release(bad, 5).is_err_and(|e| is_invalid(&e)), "{bad:?}");
    }
    assert_eq!(table.info().names, 0, "an invalid name was bound");
    let max = "y".repeat(64);
    let max_utf8 = "\u{1F600}".repeat(16); // 64 bytes
    for good in [max.as_str(), max_utf8.as_str(), "a", "with space/and:colons"] {
        let l = table.try_acquire(good, TTL).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        let info = table.get(good).unwrap().unwrap();
        assert_eq!(info.name, good);
        assert_eq!(info.token, l.token());
        l.release().unwrap();
    }
    assert!(matches!(AcquireOptions::new().label("123456789"), Err(Error::InvalidLabel { .. })));
    drop(table);
    LeaseTable::remove(&p).unwrap();
}

#[test]
fn ttls_are_validated() {
    let dir = Scratch::new("ttls");
    let p = dir.path("t");
    let table = LeaseTable::create(&p, &TableOptions::new().capacity(16)).unwrap();
    let bad = [
        Duration::ZERO,
        Duration::from_nanos(999),
        Duration::from_secs(400 * 86400),
        Duration::from_secs(365 * 86400) + Duration::from_nanos(1),
        Duration::MAX,
    ];
    let mut held = table.try_acquire("held", TTL).unwrap();
    let token = held.token();
    for ttl in bad {
        let invalid = |e: Error| matches!(e, Error::InvalidTtl { ttl: t } if t == ttl);
        assert!(table.try_acquire("n", ttl).is_err_and(invalid), "{ttl:?}");
        assert!(table.acquire("n", ttl, Some(Duration::from_millis(10))).is_err_and(invalid));
        assert!(held.renew(ttl).is_err_and(invalid), "{ttl:?}");
        assert!(held.keep_alive(ttl).is_err_and(invalid), "{ttl:?}");
        assert!(table.renew("held", token, ttl).is_err_and(invalid), "{ttl:?}");
    }
    assert!(held.is_valid(), "a refused renewal disturbed the lease");
    assert_eq!(table.get("n").unwrap(), None, "an invalid TTL bound the name");
    // The bounds themselves are fine.
    held.renew(Duration::from_secs(365 * 86400)).unwrap();
    held.renew(Duration::from_micros(1)).unwrap();
    drop(held);
    let l = table.try_acquire("n", Duration::from_secs(365 * 86400)).unwrap();
    l.release().unwrap();
    drop(table);
    LeaseTable::remove(&p).unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn table_owned_by_another_user_is_refused_unless_allowed() {
    if !is_root() {
        eprintln!("skipped: needs root to chown a file to another user");
        return;
    }
    let dir = Scratch::new("foreign-owner");
    let p = dir.path("t");
    make_table(&p, 16);
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    refused(&p, "foreign owner", |e| matches!(e, Error::Permission { .. }));
    let before = FileState::of(&p, false);
    let t = LeaseTable::open_with(&p, &TableOptions::new().allow_foreign_owner(true)).unwrap();
    assert!(matches!(t.try_acquire("held", TTL), Err(Error::Held { .. })));
    drop(t);
    assert_eq!(FileState::of(&p, false).uid, before.uid);
    // Foreign and world-writable: both opt-ins are needed.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    for opts in [
        TableOptions::new().allow_foreign_owner(true),
        TableOptions::new().allow_world_writable(true),
    ] {
        assert!(matches!(LeaseTable::open_with(&p, &opts), Err(Error::Permission { .. })));
    }
    LeaseTable::open_with(
        &p,
        &TableOptions::new().allow_foreign_owner(true).allow_world_writable(true),
    )
    .unwrap();
}

#[test]
fn world_writable_table_is_refused_unless_allowed() {
    let dir = Scratch::new("world-writable");
    let p = dir.path("t");
    make_table(&p, 16);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused(&p, "world-writable", |e| matches!(e, Error::Permission { .. }));
    let t = LeaseTable::open_with(&p, &TableOptions::new().allow_world_writable(true)).unwrap();
    assert!(matches!(t.try_acquire("held", TTL), Err(Error::Held { .. })));
    drop(t);
    // Creating a world-writable table needs the opt-in too.
    let q = dir.path("q");
    assert!(matches!(
        LeaseTable::create(&q, &TableOptions::new().mode(0o666)),
        Err(Error::InvalidOptions { .. })
    ));
    assert!(!q.exists());
}

/// Invariant 5: garbage in the header or any slot of a table that is open and in use
/// gives errors or reclaims, never a panic (a panic fails this test: no catch_unwind)
/// or a hang (the watchdog ends the process).
#[test]
fn garbage_in_a_live_table_never_panics_or_hangs() {
    let wd =
        Watchdog::new("garbage_in_a_live_table_never_panics_or_hangs", Duration::from_secs(300));
    let dir = Scratch::new("garbage");
    let p = dir.path("t");
    const CAP: u64 = 16;
    let table = LeaseTable::create(&p, &TableOptions::new().capacity(CAP as u32)).unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("name-{i}")).collect();
    for n in &names[..6] {
        table.try_acquire(n, TTL).unwrap().detach().unwrap();
    }
    let clean = std::fs::read(&p).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    for seed in [0x5eed_1234_abcd_0001u64, 42, 0xdead_beef] {
        scribble(&table, &file, &clean, &p, &names, seed);
    }
    // With a clean header and slots the table works again.
    file.write_all_at(&clean, 0).unwrap();
    let t2 = LeaseTable::open(&p).unwrap();
    t2.try_acquire("after-garbage", TTL).unwrap().release().unwrap();
    drop(wd);
}

/// One seeded run of scribbling and operating on the table.
fn scribble(
    table: &LeaseTable,
    file: &std::fs::File,
    clean: &[u8],
    p: &Path,
    names: &[String],
    seed: u64,
) {
    const CAP: u64 = 16;
    let mut rng = Rng::new(seed);
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    let mut note = |what: &str, r: Result<(), String>| {
        let key = match r {
            Ok(()) => format!("{what}: ok"),
            Err(e) => format!("{what}: {}", e.split(|c: char| !c.is_alphabetic()).next().unwrap()),
        };
        *outcomes.entry(key).or_default() += 1;
    };
    let short = Some(Duration::from_millis(2));
    for round in 0..2000u32 {
        if rng.chance(30) {
            file.write_all_at(&clean[..256], 0).unwrap(); // a valid header again
        }
        if rng.chance(5) {
            file.write_all_at(clean, 0).unwrap(); // everything clean again
        }
        for _ in 0..1 + rng.below(4) {
            let value = match rng.below(8) {
                0 => 0,
                1 => u64::MAX,
                2 => 1 + rng.below(3),
                3 => 1 << 63 | rng.below(1 << 40),
                4 => rng.below(1 << 40),
                5 => u64::MAX - rng.below(1 << 20),
                _ => rng.next(),
            };
            let offset = match rng.below(4) {
                0 => rng.below(32) * 8,                              // a header word
                1 => 256 + rng.below(CAP) * 128 + rng.below(16) * 8, // a slot word
                2 => 256 + rng.below(CAP) * 128 + rng.below(4) * 8,  // grant/holder words
                _ => rng.below(256 + CAP * 128 - 8),                 // anywhere, unaligned
            };
            let len = 1 + rng.below(8) as usize;
            file.write_all_at(&value.to_ne_bytes()[..len], offset).unwrap();
        }
        let name = &names[rng.below(names.len() as u64) as usize];
        let ttl = Duration::from_millis(1 + rng.below(3000));
        match table.try_acquire(name, ttl) {
            Ok(mut l) => {
                note("try_acquire", Ok(()));
                let token = l.token();
                let _ = l.remaining();
                let _ = l.is_valid();
                note("renew", l.renew(ttl).map_err(|e| format!("{e:?}")));
                if rng.chance(20) {
                    note("keep_alive", l.keep_alive(ttl).map_err(|e| format!("{e:?}")));
                    let _ = l.lost();
                }
                note(
                    "table.renew",
                    table.renew(name, token, ttl).map(|_| ()).map_err(|e| format!("{e:?}")),
                );
                match rng.below(4) {
                    0 => note("release", l.release().map_err(|e| format!("{e:?}"))),
                    1 => note("detach", l.detach().map(|_| ()).map_err(|e| format!("{e:?}"))),
                    2 => note(
                        "table.release",
                        table.release(name, token).map_err(|e| format!("{e:?}")),
                    ),
                    _ => drop(l),
                }
            }
            Err(e) => note("try_acquire", Err(format!("{e:?}"))),
        }
        let r = table.acquire(name, ttl, short).map(drop);
        note("acquire", r.map_err(|e| format!("{e:?}")));
        let other = &names[rng.below(names.len() as u64) as usize];
        note("revoke", table.revoke(other).map(drop).map_err(|e| format!("{e:?}")));
        note("revoke_token", table.revoke_token(other, rng.next()).map_err(|e| format!("{e:?}")));
        note("release?", table.release(other, rng.next()).map_err(|e| format!("{e:?}")));
        note("get", table.get(other).map(drop).map_err(|e| format!("{e:?}")));
        note("list", table.list().map(drop).map_err(|e| format!("{e:?}")));
        let _ = table.info();
        if round % 5 == 0 {
            match LeaseTable::open(p) {
                Ok(t2) => {
                    note("reopen", Ok(()));
                    let _ = t2.info();
                    note("reopen.list", t2.list().map(drop).map_err(|e| format!("{e:?}")));
                    note(
                        "reopen.try_acquire",
                        t2.try_acquire(other, ttl).map(drop).map_err(|e| format!("{e:?}")),
                    );
                }
                Err(e) => {
                    assert!(
                        matches!(
                            e,
                            Error::Corrupt { .. }
                                | Error::Incompatible { .. }
                                | Error::NotATable { .. }
                        ),
                        "re-open of a scribbled table gave {e:?}"
                    );
                    note("reopen", Err(format!("{e:?}")));
                }
            }
        }
    }
    eprintln!("seed {seed:#x}:");
    for (k, v) in &outcomes {
        eprintln!("{v:6} {k}");
    }
}
