//! C programs are tests: each file in `ffi/tests/c/` (and the example in `ffi/examples/`)
//! is compiled against `include/shmlease.h` and the library cargo just built, with
//! `gcc -std=c99 -Wall -Wextra -Werror -pedantic`, then run and checked — plainly, with
//! `-fsanitize=address,undefined`, statically linked, and under valgrind. Two of them
//! meet Rust in the same table: a C process and this (Rust) process contending for one
//! name, and a C holder killed with SIGKILL whose lease Rust reclaims.
//!
//! Every run has a watchdog; nothing asserts how long anything took.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use shmlease_core::{Error, LeaseTable, TableOptions};

/// How long any one C program may run before it is presumed hung.
const WATCHDOG: Duration = Duration::from_secs(300);

/// The C test programs in `ffi/tests/c/`; `every_c_program_has_a_test` keeps this honest.
const PROGRAMS: [&str; 16] = [
    "lifecycle",
    "statuses",
    "nulls",
    "threads",
    "fork",
    "contend",
    "holder",
    "reclaim",
    "election",
    "permits",
    "shared",
    "fair",
    "storage",
    "interrupt",
    "interrupt_reenter",
    "no_syscall",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// Linked against libshmlease.so.
    Plain,
    /// `-fsanitize=address,undefined`, linked against libshmlease.so.
    Sanitized,
    /// Linked against libshmlease.a.
    Static,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("ffi/ has a parent").to_path_buf()
}

/// `target/<profile>`, holding a fresh libshmlease.so and libshmlease.a.
///
/// `cargo test` does not build a cdylib/staticlib-only library for the integration
/// tests, so the first call builds it with the same cargo, profile and target directory
/// (cargo does not hold its build lock while tests run; if another build holds it, this
/// waits for it).
fn lib_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_library).clone()
}

fn build_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // The test binary is target/<profile>/deps/<test>.
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let target = dir.parent().expect("target/<profile>");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "shmlease-ffi", "--target-dir"]).arg(target);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.current_dir(repo()).output().expect("running cargo build");
    assert!(
        out.status.success(),
        "cargo build -p shmlease-ffi failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for lib in ["libshmlease.so", "libshmlease.a"] {
        assert!(dir.join(lib).is_file(), "cargo built no {}", dir.join(lib).display());
    }
    dir.to_path_buf()
}

/// Whether `tool` runs; if not, says so loudly (the caller then skips its check).
fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("!!!!! SKIPPED: `{tool}` is not installed, so this check did not run !!!!!");
    }
    ok
}

/// A fresh, empty directory for one test run.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c-runs")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `src` into `out_dir` and returns the executable.
fn compile(src: &Path, build: Build, out_dir: &Path) -> PathBuf {
    let lib = lib_dir();
    let exe = out_dir.join(src.file_stem().unwrap());
    let mut cc = Command::new("gcc");
    cc.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-pthread"])
        .arg("-I")
        .arg(repo().join("include"))
        .arg("-I")
        .arg(repo().join("ffi/tests/c"));
    if build == Build::Sanitized {
        cc.args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
            .arg("-fno-omit-frame-pointer");
    }
    cc.arg(src).arg("-o").arg(&exe);
    match build {
        Build::Plain | Build::Sanitized => {
            cc.arg("-L").arg(&lib).arg("-lshmlease").arg(format!("-Wl,-rpath,{}", lib.display()));
        }
        Build::Static => {
            cc.arg(lib.join("libshmlease.a")).args([
                "-lpthread",
                "-ldl",
                "-lm",
                "-lrt",
                "-lutil",
                "-lgcc_s",
            ]);
        }
    }
    let out = cc.output().expect("running gcc");
    assert!(
        out.status.success(),
        "gcc failed for {} ({build:?}):\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `cmd` to completion under the watchdog; returns (exit code, stdout, stderr).
fn run(mut cmd: Command, what: &str, dir: &Path) -> (Option<i32>, String, String) {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
    // A process group of its own, so that the watchdog can kill what it forked too.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let status = wait_with_watchdog(&mut child, what);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.code(), read(&out_path), read(&err_path))
}

fn wait_with_watchdog(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > WATCHDOG {
            // Its process group, if it has one of its own (`run` gives it one): the
            // children a C program forked go too.
            // SAFETY: kill(2) takes plain integers; a missing group yields ESRCH.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: {what} still running after {WATCHDOG:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn c_source(name: &str) -> PathBuf {
    repo().join("ffi/tests/c").join(format!("{name}.c"))
}

/// Compiles and runs one self-checking C program (it gets a scratch directory as its
/// only argument and prints "NAME ok").
fn check_program(name: &str, build: Build, valgrind: bool) {
    if !have("gcc") || (valgrind && !have("valgrind")) {
        return;
    }
    let tag = format!("{name}-{build:?}{}", if valgrind { "-valgrind" } else { "" });
    let dir = scratch(&tag);
    let exe = compile(&c_source(name), build, &dir);
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args(["--error-exitcode=99", "--leak-check=full"]).arg(&exe).arg(&work);
        c
    } else {
        let mut c = Command::new(&exe);
        c.arg(&work);
        c
    };
    let (code, stdout, stderr) = run(cmd, &tag, &dir);
    assert!(
        code == Some(0) && stdout.contains(&format!("{name} ok")),
        "{tag} failed (exit {code:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    if valgrind {
        assert!(
            stderr.contains("ERROR SUMMARY: 0 errors"),
            "{tag}: valgrind found errors:\n{stderr}"
        );
    }
}

#[test]
fn every_c_program_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("ffi/tests/c"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "c").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    let mut known: Vec<String> = PROGRAMS.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(found, known, "add new C programs to PROGRAMS and give them a test");
}

#[test]
fn lifecycle() {
    check_program("lifecycle", Build::Plain, false);
}

#[test]
fn lifecycle_sanitized() {
    check_program("lifecycle", Build::Sanitized, false);
}

#[test]
fn lifecycle_static() {
    check_program("lifecycle", Build::Static, false);
}

#[test]
fn lifecycle_valgrind() {
    check_program("lifecycle", Build::Plain, true);
}

#[test]
fn every_status_is_reachable_and_named() {
    check_program("statuses", Build::Plain, false);
}

#[test]
fn every_status_is_reachable_and_named_sanitized() {
    check_program("statuses", Build::Sanitized, false);
}

#[test]
fn every_status_is_reachable_and_named_valgrind() {
    check_program("statuses", Build::Plain, true);
}

#[test]
fn null_in_every_pointer_argument() {
    check_program("nulls", Build::Plain, false);
}

#[test]
fn null_in_every_pointer_argument_sanitized() {
    check_program("nulls", Build::Sanitized, false);
}

#[test]
fn null_in_every_pointer_argument_valgrind() {
    check_program("nulls", Build::Plain, true);
}

#[test]
fn handles_are_shared_by_threads() {
    check_program("threads", Build::Plain, false);
}

#[test]
fn handles_are_shared_by_threads_sanitized() {
    check_program("threads", Build::Sanitized, false);
}

#[test]
fn handles_are_shared_by_threads_valgrind() {
    check_program("threads", Build::Plain, true);
}

#[test]
fn forked_children_share_the_table_handle_and_leave_the_parents_lease_alone() {
    check_program("fork", Build::Plain, false);
}

#[test]
fn forked_children_share_the_table_handle_and_leave_the_parents_lease_alone_sanitized() {
    check_program("fork", Build::Sanitized, false);
}

#[test]
fn forked_children_share_the_table_handle_and_leave_the_parents_lease_alone_static() {
    check_program("fork", Build::Static, false);
}

#[test]
fn forked_children_share_the_table_handle_and_leave_the_parents_lease_alone_valgrind() {
    check_program("fork", Build::Plain, true);
}

#[test]
fn leader_observer_request_release_and_runner_callbacks() {
    check_program("election", Build::Plain, false);
}

#[test]
fn leader_observer_request_release_and_runner_callbacks_sanitized() {
    check_program("election", Build::Sanitized, false);
}

#[test]
fn leader_observer_request_release_and_runner_callbacks_static() {
    check_program("election", Build::Static, false);
}

#[test]
fn leader_observer_request_release_and_runner_callbacks_valgrind() {
    check_program("election", Build::Plain, true);
}

#[test]
fn permits_admit_n_holders_each_with_its_own_grant_also_across_fork() {
    check_program("permits", Build::Plain, false);
}

#[test]
fn permits_admit_n_holders_each_with_its_own_grant_also_across_fork_sanitized() {
    check_program("permits", Build::Sanitized, false);
}

#[test]
fn permits_admit_n_holders_each_with_its_own_grant_also_across_fork_static() {
    check_program("permits", Build::Static, false);
}

#[test]
fn permits_admit_n_holders_each_with_its_own_grant_also_across_fork_valgrind() {
    check_program("permits", Build::Plain, true);
}

#[test]
fn shared_holders_at_once_and_an_exclusive_one_in_a_child_waits_for_them() {
    check_program("shared", Build::Plain, false);
}

#[test]
fn shared_holders_at_once_and_an_exclusive_one_in_a_child_waits_for_them_sanitized() {
    check_program("shared", Build::Sanitized, false);
}

#[test]
fn shared_holders_at_once_and_an_exclusive_one_in_a_child_waits_for_them_static() {
    check_program("shared", Build::Static, false);
}

#[test]
fn shared_holders_at_once_and_an_exclusive_one_in_a_child_waits_for_them_valgrind() {
    check_program("shared", Build::Plain, true);
}

#[test]
fn fair_waiters_in_forked_children_are_granted_in_line_order() {
    check_program("fair", Build::Plain, false);
}

#[test]
fn fair_waiters_in_forked_children_are_granted_in_line_order_sanitized() {
    check_program("fair", Build::Sanitized, false);
}

#[test]
fn fair_waiters_in_forked_children_are_granted_in_line_order_static() {
    check_program("fair", Build::Static, false);
}

#[test]
fn fair_waiters_in_forked_children_are_granted_in_line_order_valgrind() {
    check_program("fair", Build::Plain, true);
}

#[test]
fn leases_in_caller_storage_abi_misuse_races_and_fork() {
    check_program("storage", Build::Plain, false);
}

#[test]
fn leases_in_caller_storage_abi_misuse_races_and_fork_sanitized() {
    check_program("storage", Build::Sanitized, false);
}

#[test]
fn leases_in_caller_storage_abi_misuse_races_and_fork_static() {
    check_program("storage", Build::Static, false);
}

#[test]
fn leases_in_caller_storage_abi_misuse_races_and_fork_valgrind() {
    check_program("storage", Build::Plain, true);
}

#[test]
fn a_wait_ends_when_its_interrupt_callback_says_so_and_gives_up_its_place() {
    check_program("interrupt", Build::Plain, false);
}

#[test]
fn a_wait_ends_when_its_interrupt_callback_says_so_and_gives_up_its_place_sanitized() {
    check_program("interrupt", Build::Sanitized, false);
}

#[test]
fn a_wait_ends_when_its_interrupt_callback_says_so_and_gives_up_its_place_static() {
    check_program("interrupt", Build::Static, false);
}

#[test]
fn a_wait_ends_when_its_interrupt_callback_says_so_and_gives_up_its_place_valgrind() {
    check_program("interrupt", Build::Plain, true);
}

#[test]
fn an_interrupt_callback_may_call_into_shmlease_for_other_names() {
    check_program("interrupt_reenter", Build::Plain, false);
}

#[test]
fn an_interrupt_callback_may_call_into_shmlease_for_other_names_sanitized() {
    check_program("interrupt_reenter", Build::Sanitized, false);
}

#[test]
fn an_interrupt_callback_may_call_into_shmlease_for_other_names_valgrind() {
    check_program("interrupt_reenter", Build::Plain, true);
}

/// Invariant 7 through the C library: `no_syscall.c`'s loop (a try into caller storage,
/// renew and release; a try into a heap handle, release and free) makes as many system
/// calls at 101,000 rounds as at 1,000, counted by `strace -f -c`.
#[test]
fn the_c_fast_path_makes_no_system_call() {
    if !have("gcc") {
        return;
    }
    assert!(have("strace"), "strace is needed for this test (apt-get install strace)");
    let dir = scratch("no_syscall");
    let exe = compile(&c_source("no_syscall"), Build::Plain, &dir);
    let count = |loops: u32| -> u64 {
        let work = dir.join(format!("work-{loops}"));
        std::fs::create_dir(&work).unwrap();
        let summary = dir.join(format!("strace-{loops}.txt"));
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-c", "-o"]).arg(&summary).arg(&exe).arg(&work);
        cmd.env("SHMLEASE_IT_LOOPS", loops.to_string());
        let (code, stdout, stderr) = run(cmd, "no_syscall", &dir);
        assert!(code == Some(0) && stdout.contains("no_syscall ok"), "{stdout}\n{stderr}");
        let text = std::fs::read_to_string(&summary).unwrap();
        let total = text.lines().rev().find(|l| l.trim_end().ends_with("total"));
        let calls = total.and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
        calls.unwrap_or_else(|| panic!("no total in strace's summary:\n{text}"))
    };
    let (few, many) = (count(1_000), count(101_000));
    assert!(
        many <= few + 50,
        "100,000 more rounds made {} more system calls ({few} → {many})",
        many.saturating_sub(few)
    );
}

/// The state file `contend.c` and the Rust side share: occupant, last token, grants.
struct SharedState(File);

impl SharedState {
    fn read(&self) -> [u64; 3] {
        let mut b = [0u8; 24];
        self.0.read_exact_at(&mut b, 0).unwrap();
        std::array::from_fn(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
    }

    fn write(&self, s: [u64; 3]) {
        let b: Vec<u8> = s.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.0.write_all_at(&b, 0).unwrap();
    }
}

fn contention_with_rust(build: Build) {
    if !have("gcc") {
        return;
    }
    const ROUNDS: u64 = 300;
    let dir = scratch(&format!("contend-{build:?}"));
    let exe = compile(&c_source("contend"), build, &dir);
    let table_path = dir.join("table");
    let table = LeaseTable::create(&table_path, &TableOptions::new().capacity(8)).unwrap();
    let state_path = dir.join("state");
    std::fs::write(&state_path, [0u8; 24]).unwrap();
    let state = SharedState(OpenOptions::new().read(true).write(true).open(&state_path).unwrap());

    let mut cmd = Command::new(&exe);
    cmd.arg(&table_path).arg("shared-job").arg(&state_path).arg(ROUNDS.to_string());
    let c_side = std::thread::spawn(move || run(cmd, "contend (C side)", &dir));

    // Start once the C side is in, so that the two really overlap.
    let start = Instant::now();
    while state.read()[2] == 0 && !c_side.is_finished() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: the C side never took the lease");
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..ROUNDS {
        let lease = match table.acquire("shared-job", Duration::from_secs(10), Some(WATCHDOG)) {
            Ok(l) => l,
            Err(e @ Error::TimedOut { .. }) => {
                panic!("watchdog: Rust side never got the lease: {e}")
            }
            Err(e) => panic!("Rust side: {e}"),
        };
        let [occupant, last, grants] = state.read();
        assert_eq!(occupant, 0, "exclusivity: the C side is inside while Rust holds the lease");
        assert!(lease.token() > last, "fencing: token {} after {last}", lease.token());
        state.write([u64::from(b'R'), lease.token(), grants + 1]);
        std::thread::sleep(Duration::from_micros(100));
        assert_eq!(state.read()[0], u64::from(b'R'), "exclusivity: someone entered meanwhile");
        state.write([0, lease.token(), grants + 1]);
        lease.release().unwrap();
    }
    let (code, stdout, stderr) = c_side.join().unwrap();
    assert!(
        code == Some(0) && stdout.contains("contend ok"),
        "C side failed (exit {code:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let [occupant, last, grants] = state.read();
    assert_eq!((occupant, grants), (0, 2 * ROUNDS));
    let info = table.get("shared-job").unwrap().unwrap();
    assert_eq!(info.token, last, "the last grant recorded is the table's last grant");
}

#[test]
fn c_and_rust_processes_contend_for_one_name() {
    contention_with_rust(Build::Plain);
}

#[test]
fn c_and_rust_processes_contend_for_one_name_sanitized() {
    contention_with_rust(Build::Sanitized);
}

fn kill9_c_holder(build: Build) {
    if !have("gcc") {
        return;
    }
    let dir = scratch(&format!("kill9-{build:?}"));
    let exe = compile(&c_source("holder"), build, &dir);
    let table_path = dir.join("table");
    let table = LeaseTable::create(&table_path, &TableOptions::new().capacity(8)).unwrap();
    // A TTL long enough that the C holder is still within it when killed (the reclaim
    // then comes from proving it dead); short enough that expiry would still end the
    // test where the death cannot be proven.
    let mut child = Command::new(&exe)
        .arg(&table_path)
        .arg("victim")
        .arg("10000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(WATCHDOG) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("watchdog: the C holder never said it holds the lease");
        }
    };
    let c_token: u64 = line
        .strip_prefix("holding ")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected line from the C holder: {line:?}"));

    // Held by that C process, as Rust sees it.
    match table.try_acquire("victim", Duration::from_secs(10)) {
        Err(Error::Held { token, holder: Some(h), .. }) => {
            assert_eq!(token, c_token);
            assert_eq!(h.pid, child.id());
        }
        other => panic!("expected the lease held by the C process, got {other:?}"),
    }

    child.kill().unwrap(); // SIGKILL: no chance to release
    child.wait().unwrap();

    let lease = match table.acquire("victim", Duration::from_secs(10), Some(WATCHDOG)) {
        Ok(l) => l,
        Err(e) => panic!("Rust never reclaimed the dead C holder's lease: {e}"),
    };
    assert!(lease.token() > c_token, "fencing: {} after {c_token}", lease.token());
    assert!(lease.is_valid());
    lease.release().unwrap();
}

#[test]
fn kill_9_of_a_c_holder_is_reclaimed_by_rust() {
    kill9_c_holder(Build::Plain);
}

#[test]
fn kill_9_of_a_c_holder_is_reclaimed_by_rust_sanitized() {
    kill9_c_holder(Build::Sanitized);
}

/// Set for a copy of this test binary that is to act as a Rust lease holder.
const HELPER_ENV: &str = "SHMLEASE_FFI_TEST_RUST_HOLDER";

/// Not a test by itself: in a copy of this binary started by
/// `kill_9_of_a_rust_holder_is_reclaimed_by_c` (with `HELPER_ENV` = the table path), takes
/// the lease "victim", says so, and waits to be killed.
#[test]
fn rust_holder_helper() {
    let Some(table_path) = std::env::var_os(HELPER_ENV) else { return };
    let table = LeaseTable::open(PathBuf::from(table_path)).unwrap();
    let lease = table.try_acquire("victim", Duration::from_secs(10)).unwrap();
    println!("holding {}", lease.token());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn kill9_rust_holder(build: Build) {
    if !have("gcc") {
        return;
    }
    let dir = scratch(&format!("kill9-rust-{build:?}"));
    let exe = compile(&c_source("reclaim"), build, &dir);
    let table_path = dir.join("table");
    let table = LeaseTable::create(&table_path, &TableOptions::new().capacity(8)).unwrap();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rust_holder_helper", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, &table_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = holder.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // libtest prints "test rust_holder_helper ... " on the same line first.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(token) = line.split("holding ").nth(1) {
                let _ = tx.send(token.trim().parse::<u64>().ok());
                return;
            }
        }
        let _ = tx.send(None); // it exited without taking the lease
    });
    let Ok(Some(rust_token)) = rx.recv_timeout(WATCHDOG) else {
        let _ = holder.kill();
        panic!("the Rust holder never said it holds the lease (see its stderr above)");
    };
    match table.get("victim").unwrap() {
        Some(info) => assert_eq!(info.holder.map(|h| h.pid), Some(holder.id())),
        None => panic!("the Rust holder's lease is not in the table"),
    }
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();

    let mut cmd = Command::new(&exe);
    cmd.arg(&table_path).arg("victim").arg(rust_token.to_string());
    let (code, stdout, stderr) = run(cmd, "reclaim (C side)", &dir);
    assert!(
        code == Some(0) && stdout.contains("reclaim ok"),
        "C reclaim failed (exit {code:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let info = table.get("victim").unwrap().unwrap();
    assert!(info.token > rust_token);
}

#[test]
fn kill_9_of_a_rust_holder_is_reclaimed_by_c() {
    kill9_rust_holder(Build::Plain);
}

#[test]
fn kill_9_of_a_rust_holder_is_reclaimed_by_c_sanitized() {
    kill9_rust_holder(Build::Sanitized);
}

/// The example worker: two at once take turns on one job.
fn worker_example(build: Build) {
    if !have("gcc") {
        return;
    }
    let dir = scratch(&format!("worker-{build:?}"));
    let exe = compile(&repo().join("ffi/examples/worker.c"), build, &dir);
    let table = dir.join("table");
    let runs: Vec<_> = (0..2)
        .map(|i| {
            let d = dir.join(format!("run{i}"));
            std::fs::create_dir(&d).unwrap();
            let mut cmd = Command::new(&exe);
            cmd.arg(&table).arg("report").arg("3");
            std::thread::spawn(move || run(cmd, "worker example", &d))
        })
        .collect();
    let mut tokens = Vec::new();
    for r in runs {
        let (code, stdout, stderr) = r.join().unwrap();
        assert!(
            code == Some(0) && stdout.contains("done with report"),
            "worker failed (exit {code:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        let token = stdout.split("token ").nth(1).and_then(|t| t.split_whitespace().next());
        tokens.push(token.unwrap().parse::<u64>().unwrap());
    }
    assert_ne!(tokens[0], tokens[1]);
}

#[test]
fn worker_example_runs() {
    worker_example(Build::Plain);
}

#[test]
fn worker_example_runs_sanitized() {
    worker_example(Build::Sanitized);
}

/// `ffi/install.sh` installs a prefix that pkg-config describes correctly: the worker
/// example builds from `pkg-config --cflags --libs shmlease` alone, dynamically and
/// statically (ffi/README.md's recipes), and runs. The libraries are installed without
/// debug information, and the pkg-config file's comments are left as prose.
#[test]
fn install_script_and_pkg_config() {
    if !have("gcc") || !have("pkg-config") {
        return;
    }
    let dir = scratch("install");
    let prefix = dir.join("prefix");
    let out = Command::new("sh")
        .arg(repo().join("ffi/install.sh"))
        .arg(&prefix)
        .env("SHMLEASE_LIB_DIR", lib_dir())
        .env_remove("DESTDIR")
        .env_remove("LIBDIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let libdir = prefix.join("lib");
    if have("readelf") {
        let debug_sections = |f: &Path| {
            let o = Command::new("readelf").args(["-S", "--wide"]).arg(f).output().unwrap();
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains(".debug_info") || l.contains(".debug_line"))
                .count()
        };
        for lib in ["libshmlease.a", "libshmlease.so"] {
            // The test's libraries are a debug build: without debug information there,
            // the check would prove nothing.
            assert!(debug_sections(&lib_dir().join(lib)) > 0, "{lib} was built without debug info");
            assert_eq!(debug_sections(&libdir.join(lib)), 0, "{lib} installed with debug info");
        }
    }
    let pc = std::fs::read_to_string(libdir.join("pkgconfig/shmlease.pc")).unwrap();
    for comment in pc.lines().filter(|l| l.starts_with('#')) {
        let mangled = comment.contains('@') || comment.contains(prefix.to_str().unwrap());
        assert!(!mangled, "a substitution reached the comment: {comment}\n{pc}");
    }
    let pkg = |args: &[&str]| {
        let o = Command::new("pkg-config")
            .args(args)
            .arg("shmlease")
            .env("PKG_CONFIG_PATH", libdir.join("pkgconfig"))
            .output()
            .unwrap();
        assert!(o.status.success(), "pkg-config {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(pkg(&["--modversion"]), [env!("CARGO_PKG_VERSION")]);
    let cflags = pkg(&["--cflags"]);
    let libs = pkg(&["--libs"]);
    let static_libs: Vec<String> =
        pkg(&["--static", "--libs-only-l"]).into_iter().filter(|l| l != "-lshmlease").collect();
    let worker = repo().join("ffi/examples/worker.c");
    for (name, link) in [
        ("dynamic", [libs, vec![format!("-Wl,-rpath,{}", libdir.display())]].concat()),
        (
            // The archive by its path: beside the shared library, -lshmlease picks that.
            "static",
            [
                pkg(&["--variable=libdir"]).into_iter().map(|d| d + "/libshmlease.a").collect(),
                static_libs.clone(),
            ]
            .concat(),
        ),
    ] {
        let exe = dir.join(format!("worker-{name}"));
        let o = Command::new("gcc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
            .arg(&worker)
            .args(&cflags)
            .arg("-o")
            .arg(&exe)
            .args(&link)
            .output()
            .unwrap();
        assert!(o.status.success(), "{name} build: {}", String::from_utf8_lossy(&o.stderr));
        let run_dir = dir.join(format!("run-{name}"));
        std::fs::create_dir(&run_dir).unwrap();
        let mut cmd = Command::new(&exe);
        cmd.arg(dir.join("table")).arg("job").arg("1");
        let (code, stdout, stderr) = run(cmd, "installed worker", &run_dir);
        assert!(code == Some(0) && stdout.contains("done with job"), "{name}: {stdout}{stderr}");
    }
}

/// Without `SHMLEASE_LIB_DIR`, `ffi/install.sh` takes the libraries from cargo's target
/// directory (here a `CARGO_TARGET_DIR` with nothing built in it), not from `target/`;
/// when they are missing it says where it looked and how to point it elsewhere.
#[test]
fn install_script_looks_where_cargo_builds_and_names_its_knob() {
    let dir = scratch("install-unbuilt");
    let elsewhere = dir.join("elsewhere");
    let out = Command::new("sh")
        .arg(repo().join("ffi/install.sh"))
        .arg(dir.join("prefix"))
        .env("CARGO_TARGET_DIR", &elsewhere)
        .env_remove("SHMLEASE_LIB_DIR")
        .env_remove("DESTDIR")
        .env_remove("LIBDIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!dir.join("prefix").exists(), "installed something: {err}");
    assert!(err.contains("SHMLEASE_LIB_DIR"), "{err}");
    let cargo_found = !err.contains("cannot ask cargo");
    if cargo_found {
        let looked = elsewhere.join("release/libshmlease.so");
        assert!(err.contains(looked.to_str().unwrap()), "{err}");
    }
}
