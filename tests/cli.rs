//! The `shmlease` command-line tool, driven as users drive it: real processes, real
//! signals. Every wait has a watchdog, so a bug makes a test fail, never hang.

#![cfg(all(target_os = "linux", feature = "cli"))]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/procs.rs"]
mod procs;

/// How long anything may take before the test is declared hung.
const WATCHDOG: Duration = Duration::from_secs(60);

const BIN: &str = env!("CARGO_BIN_EXE_shmlease");

/// A command for a test to start, with the default action for the signals the tests
/// send: under `nohup` (SIGHUP ignored) or in a shell's background job (SIGINT and
/// SIGQUIT ignored), it would inherit them ignored (see [`procs::default_signals`]).
/// `cmd` run by `sh -c` at a pseudo-terminal that script(1) makes (stdin piped, to type
/// into it). `SHELL=/bin/sh` whatever the caller's, so the tests see the same shell
/// everywhere (CI's may be dash, which does not exec a lone command by itself).
fn at_a_terminal(cmd: &str, stdout: Stdio) -> Kid {
    command("script")
        .args(["-qec", cmd, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env_remove("SHMLEASE_TABLE")
        .stdin(Stdio::piped())
        .stdout(stdout)
        .kid()
}

fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    procs::default_signals(&mut c);
    c
}

/// A table file of its own for one test, removed at the end.
struct Table {
    path: PathBuf,
    dir: PathBuf,
}

impl Table {
    fn new(test: &str) -> Table {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shmlease-cli-{}-{}-{}",
            test,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        Table { path: dir.join("table"), dir }
    }

    /// `shmlease -t TABLE ARGS...`
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = command(BIN);
        c.arg("-t").arg(&self.path).args(args).env_remove("SHMLEASE_TABLE");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        output(self.cmd(args))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` to completion, capturing its output; kills it if the watchdog fires.
fn output(mut cmd: Command) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let child = child.expect("spawning shmlease");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(WATCHDOG) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            procs::kill_tree(pid);
            panic!("watchdog: {cmd:?} still running after {WATCHDOG:?}");
        }
    }
}

/// A child process that is killed (and reaped) if the test lets go of it while it still
/// runs, with every process below it (a `run`'s CMD and what CMD started): a failing
/// test leaves nothing behind. Pids it started that may have left its tree (`also`)
/// are killed too when the test fails.
struct Kid {
    child: Child,
    also: Vec<u32>,
}

impl Kid {
    /// Also kill `pid` (started by this child) if the test fails.
    fn also(&mut self, pid: u32) -> u32 {
        self.also.push(pid);
        pid
    }
}

impl std::ops::Deref for Kid {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Kid {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for &pid in &self.also {
                kill(pid, libc::SIGKILL);
            }
        }
        if let Ok(None) = self.child.try_wait() {
            procs::kill_tree(self.child.id());
            let _ = self.child.wait();
        }
    }
}

/// `Command::spawn`, guarded by a [`Kid`].
trait SpawnKid {
    fn kid(&mut self) -> Kid;
}

impl SpawnKid for Command {
    fn kid(&mut self) -> Kid {
        Kid { child: self.spawn().expect("spawning a test process"), also: Vec::new() }
    }
}

fn wait(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > WATCHDOG {
            procs::kill_tree(child.id());
            let _ = child.wait();
            panic!("watchdog: process {} still running after {WATCHDOG:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `cond` holds (the watchdog fails the test if it never does).
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: no pointers; a vanished pid only yields ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

fn alive(pid: u32) -> bool {
    // A zombie is as good as dead: it runs no more code.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An error is one line on stderr.
fn assert_one_line_error(out: &Output, expected_code: i32, mentions: &str) {
    let err = stderr(out);
    assert_eq!(code(out), expected_code, "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    assert!(err.starts_with("shmlease: "), "{err}");
    assert!(err.contains(mentions), "expected {mentions:?} in: {err}");
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn held(t: &Table) -> Vec<Value> {
    json(&t.run(&["ls", "--json"])).as_array().unwrap().clone()
}

/// A shell command that marks `ready` and then idles until killed (`exec sleep`).
fn ready_then_sleep(ready: &Path) -> String {
    format!("echo $$ > {}; exec sleep 60", ready.display())
}

fn read_pid(path: &Path) -> u32 {
    until("the pid file", || fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')));
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[test]
fn two_runs_without_waiting_exactly_one_runs_the_command() {
    let t = Table::new("two");
    t.run(&["create", "--capacity", "16"]);
    let ran = t.file("ran");
    let script = format!("echo $$ >> {}; sleep 2", ran.display());
    let spawn =
        || t.cmd(&["run", "-n", "job", "--", "sh", "-c", &script]).stderr(Stdio::piped()).kid();
    let (mut a, mut b) = (spawn(), spawn());
    let mut codes = [wait(&mut a).code(), wait(&mut b).code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(75)]);
    assert_eq!(fs::read_to_string(&ran).unwrap().lines().count(), 1, "CMD ran more than once");
}

#[test]
fn conflict_exit_code_replaces_75() {
    let t = Table::new("conflict");
    let token = stdout(&t.run(&["acquire", "job", "--ttl", "30s"]));
    assert!(token.trim().parse::<u64>().is_ok());
    let out = t.run(&["run", "-n", "--conflict-exit-code", "9", "job", "--", "true"]);
    assert_one_line_error(&out, 9, "held");
}

#[test]
fn run_exports_table_name_and_token_and_the_token_is_the_listed_one() {
    let t = Table::new("env");
    let script = r#"echo "$SHMLEASE_TABLE|$SHMLEASE_NAME|$SHMLEASE_TOKEN"; "$BIN" -t "$SHMLEASE_TABLE" ls --json"#;
    let mut cmd = t.cmd(&["run", "--label", "envtest", "report", "--", "sh", "-c", script]);
    cmd.env("BIN", BIN);
    let out = output(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let (first, rest) = text.split_once('\n').unwrap();
    let vars: Vec<&str> = first.split('|').collect();
    assert_eq!(vars[0], t.path.to_str().unwrap());
    assert_eq!(vars[1], "report");
    let token: u64 = vars[2].parse().unwrap();
    let leases: Value = serde_json::from_str(rest).unwrap();
    let lease = leases.as_array().unwrap().iter().find(|l| l["name"] == "report").unwrap();
    assert_eq!(lease["token"].as_u64(), Some(token));
    assert_eq!(lease["state"], "held");
    assert_eq!(lease["holder"]["label"], "envtest");
    // Released as soon as CMD is done.
    assert!(held(&t).is_empty());
}

#[test]
fn run_exits_with_the_commands_status_or_128_plus_its_signal() {
    let t = Table::new("status");
    let out = t.run(&["run", "job", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), 3);
    let out = t.run(&["run", "job", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(code(&out), 143);
    let out = t.run(&["run", "job", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(code(&out), 137);
    assert!(held(&t).is_empty(), "the lease outlived CMD");
    let out = t.run(&["run", "job", "--", "no-such-command-shmlease-test"]);
    assert_one_line_error(&out, 127, "not found");
}

#[test]
fn revoking_the_lease_stops_the_command_and_run_exits_79() {
    let t = Table::new("revoke");
    let (ready, got) = (t.file("ready"), t.file("got"));
    let script = format!(
        "trap 'echo TERM > {}; exit 0' TERM; echo $$ > {}; while :; do sleep 0.05; done",
        got.display(),
        ready.display()
    );
    let mut run = t.cmd(&["run", "job", "--", "sh", "-c", &script]).stderr(Stdio::piped()).kid();
    read_pid(&ready);
    let revoked = t.run(&["revoke", "job"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(wait(&mut run).code(), Some(79));
    assert_eq!(fs::read_to_string(&got).unwrap().trim(), "TERM");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("lost lease \"job\"") && err.contains("revoked"), "{err}");
}

#[test]
fn a_command_that_ignores_sigterm_gets_sigkill_after_kill_after() {
    let t = Table::new("killafter");
    let ready = t.file("ready");
    let script =
        format!("trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done", ready.display());
    let mut run = t.cmd(&["run", "--kill-after", "200ms", "job", "--", "sh", "-c", &script]).kid();
    let cmd_pid = read_pid(&ready);
    assert!(t.run(&["revoke", "job"]).status.success());
    assert_eq!(wait(&mut run).code(), Some(79));
    until("CMD to die", || !alive(cmd_pid));
}

#[test]
fn killing_the_supervisor_kills_the_command_and_frees_the_lease() {
    let t = Table::new("kill9");
    let ready = t.file("ready");
    let mut run =
        t.cmd(&["run", "--ttl", "60s", "job", "--", "sh", "-c", &ready_then_sleep(&ready)]).kid();
    let cmd_pid = read_pid(&ready);
    assert!(alive(cmd_pid));
    kill(run.id(), libc::SIGKILL);
    wait(&mut run);
    until("CMD to die with its supervisor", || !alive(cmd_pid));
    // The holder is provably dead: the lease is free long before its 60 s TTL.
    let out = t.run(&["run", "-n", "job", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn signals_sent_to_run_reach_the_command_once() {
    let t = Table::new("signals");
    let (ready, got) = (t.file("ready"), t.file("got"));
    let script = format!(
        "trap 'echo INT >> {g}' INT; trap 'echo HUP >> {g}' HUP; trap 'echo TERM >> {g}; exit 7' TERM; \
         echo $$ > {r}; while :; do sleep 0.05; done",
        g = got.display(),
        r = ready.display()
    );
    // In a process group of its own, like a job started by a shell or a service
    // manager: then CMD gets its own group too, and a signal to run's whole group
    // must still reach CMD only once.
    let mut cmd = t.cmd(&["run", "job", "--", "sh", "-c", &script]);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut run = cmd.kid();
    let group = run.id() as i32;
    read_pid(&ready);
    let lines = || fs::read_to_string(&got).unwrap_or_default().lines().count();
    kill(run.id(), libc::SIGINT);
    until("SIGINT to arrive", || lines() == 1);
    // SAFETY: no pointers; signals the test's own child process group.
    unsafe { libc::kill(-group, libc::SIGHUP) };
    until("SIGHUP to arrive", || lines() == 2);
    kill(run.id(), libc::SIGTERM);
    assert_eq!(wait(&mut run).code(), Some(7));
    assert_eq!(fs::read_to_string(&got).unwrap(), "INT\nHUP\nTERM\n", "a signal arrived twice");
}

#[test]
fn wait_gives_up_with_75_after_waiting() {
    let t = Table::new("wait");
    assert!(t.run(&["acquire", "job", "--ttl", "30s", "--label", "holder"]).status.success());
    for args in [
        &["run", "--wait", "200ms", "job", "--", "true"][..],
        &["acquire", "job", "--ttl", "5s", "--wait", "200ms"][..],
    ] {
        let start = Instant::now();
        let out = t.run(args);
        assert!(start.elapsed() >= Duration::from_millis(190), "did not wait: {args:?}");
        assert_one_line_error(&out, 75, "holder");
    }
    // A wait past one second says once who holds the lease.
    let out = t.run(&["run", "--wait", "1200ms", "job", "--", "true"]);
    assert_eq!(code(&out), 75);
    let err = stderr(&out);
    assert!(err.lines().next().unwrap().contains("waiting"), "{err}");
    assert!(err.contains("holder"), "{err}");
}

#[test]
fn a_waiting_run_gets_the_lease_when_it_is_released() {
    let t = Table::new("handover");
    let token = stdout(&t.run(&["acquire", "job", "--ttl", "30s"])).trim().to_owned();
    let mut waiting = t.cmd(&["run", "job", "--", "sh", "-c", "exit 5"]).kid();
    std::thread::sleep(Duration::from_millis(100));
    assert!(t.run(&["release", "job", "--token", &token]).status.success());
    assert_eq!(wait(&mut waiting).code(), Some(5));
}

#[test]
fn acquire_renew_release_and_wrong_tokens() {
    let t = Table::new("tokens");
    let out = t.run(&["acquire", "job", "--ttl", "30s", "--json"]);
    let granted = json(&out);
    let token = granted["token"].as_u64().unwrap();
    assert_eq!(granted["name"], "job");
    assert_eq!(granted["ttl_ms"], 30_000);
    assert!(granted["expires_at"].as_str().unwrap().ends_with('Z'));
    // The CLI process is gone; the detached lease is not.
    let leases = held(&t);
    assert_eq!(leases[0]["token"].as_u64(), Some(token));
    assert_eq!(leases[0]["holder"]["detached"], true);

    let wrong = (token + 1).to_string();
    let out = t.run(&["renew", "job", "--token", &wrong, "--ttl", "10s"]);
    assert_one_line_error(&out, 79, "never issued");
    let out = t.run(&["release", "job", "--token", &wrong]);
    assert_one_line_error(&out, 79, "never issued");
    let out = t.run(&["revoke", "job", "--token", &wrong]);
    assert_one_line_error(&out, 79, "nothing revoked");

    let right = token.to_string();
    let out = t.run(&["renew", "job", "--token", &right, "--ttl", "10s", "--json"]);
    assert_eq!(json(&out)["token"].as_u64(), Some(token));
    assert!(t.run(&["release", "job", "--token", &right]).status.success());
    let out = t.run(&["release", "job", "--token", &right]);
    assert_one_line_error(&out, 79, "already released");
    let out = t.run(&["renew", "job", "--token", &right, "--ttl", "10s"]);
    assert_one_line_error(&out, 79, "lost");
}

#[test]
fn revoke_reports_the_revoked_token() {
    let t = Table::new("revoketoken");
    let token: u64 = stdout(&t.run(&["acquire", "job", "--ttl", "30s"])).trim().parse().unwrap();
    let out = json(&t.run(&["revoke", "job", "--json"]));
    assert_eq!(out["revoked"], true);
    assert_eq!(out["token"].as_u64(), Some(token));
    let out = json(&t.run(&["revoke", "job", "--json"]));
    assert_eq!(out["revoked"], false);
    assert!(out["token"].is_null());
    let all = json(&t.run(&["ls", "--all", "--json"]));
    assert_eq!(all[0]["state"], "revoked");
}

#[test]
fn ls_and_info_json_carry_every_field() {
    let t = Table::new("json");
    assert!(t.run(&["create", "--capacity", "32"]).status.success());
    assert!(t.run(&["acquire", "job", "--ttl", "30s", "--label", "lbl"]).status.success());
    let leases = held(&t);
    assert_eq!(leases.len(), 1);
    let l = &leases[0];
    for key in [
        "name",
        "token",
        "state",
        "holder",
        "acquired_at",
        "renewed_at",
        "expires_at",
        "remaining_ms",
        "transitions",
        "slot",
    ] {
        assert!(l.get(key).is_some(), "ls --json lacks {key}: {l}");
    }
    assert_eq!(l["state"], "held");
    assert_eq!(l["transitions"], 1);
    assert!(l["remaining_ms"].as_u64().unwrap() > 0);
    for key in ["pid", "pid_namespace", "identity", "detached", "label"] {
        assert!(l["holder"].get(key).is_some(), "holder lacks {key}: {l}");
    }
    assert_eq!(l["holder"]["label"], "lbl");
    assert!(l["holder"]["identity"]["kind"].is_string());

    let info = json(&t.run(&["info", "--json"]));
    for key in [
        "location",
        "location_kind",
        "file",
        "format_version",
        "capacity",
        "names",
        "held",
        "size_bytes",
        "slot_size",
        "boot_id",
        "clock",
        "creator_pid",
        "creator_uid",
        "created_at",
        "counters",
    ] {
        assert!(info.get(key).is_some(), "info --json lacks {key}: {info}");
    }
    for key in [
        "grants",
        "renewals",
        "releases",
        "expired_reclaims",
        "dead_holder_reclaims",
        "corrupt_reclaims",
        "revocations",
        "contended",
        "binds",
        "unbinds",
    ] {
        assert!(info["counters"][key].is_u64(), "counters lack {key}: {info}");
    }
    assert_eq!(info["capacity"], 32);
    assert_eq!(info["held"], 1);
    assert_eq!(info["location_kind"], "path");
    assert!(info["counters"]["grants"].as_u64().unwrap() >= 1);

    // The human forms show the same lease.
    let text = stdout(&t.run(&["ls"]));
    assert!(text.starts_with("NAME") && text.contains("job") && text.contains("lbl"), "{text}");
    assert!(stdout(&t.run(&["info"])).contains("capacity"));
}

#[test]
fn bad_arguments_exit_64_with_one_helpful_line() {
    let t = Table::new("usage");
    let out = t.run(&["ls", "--bogus"]);
    assert_one_line_error(&out, 64, "--bogus");
    let out = t.run(&["run", "--ttl", "5", "job", "--", "true"]);
    assert_one_line_error(&out, 64, "no unit");
    let out = t.run(&["acquire", "job", "--ttl", "1x"]);
    assert_one_line_error(&out, 64, "unknown unit");
    let out = t.run(&["run", "job", "echo", "hi"]);
    assert_one_line_error(&out, 64, "--");
    let out = t.run(&["run", "job"]);
    assert_one_line_error(&out, 64, "CMD");
    let out = t.run(&["acquire", "job", "--ttl", "5s", "--label", "much-too-long"]);
    assert_one_line_error(&out, 64, "label");
    let out = t.run(&["run", "-n", "--wait", "1s", "job", "--", "true"]);
    assert_one_line_error(&out, 64, "--wait");
    let out = t.run(&["frobnicate"]);
    assert_one_line_error(&out, 64, "frobnicate");
    // Help is not an error.
    assert_eq!(code(&t.run(&["run", "--help"])), 0);
}

#[test]
fn a_file_that_is_not_a_lease_table_is_refused_and_left_alone() {
    let t = Table::new("foreign");
    let content = b"precious data, not a lease table\n".repeat(100);
    fs::write(&t.path, &content).unwrap();
    for args in [
        &["ls"][..],
        &["info"][..],
        &["rm"][..],
        &["rm", "--force"][..],
        &["create"][..],
        &["acquire", "job", "--ttl", "5s"][..],
        &["run", "job", "--", "true"][..],
        &["revoke", "job"][..],
    ] {
        let out = t.run(args);
        assert!(!out.status.success(), "{args:?} accepted a foreign file");
        let expected = if args[0] == "create" { 73 } else { 74 };
        assert_one_line_error(&out, expected, &t.path.display().to_string());
        assert_eq!(fs::read(&t.path).unwrap(), content, "{args:?} changed the file");
    }
}

#[test]
fn create_info_and_rm_administer_a_table() {
    let t = Table::new("admin");
    let out = t.run(&["ls"]);
    assert_one_line_error(&out, 66, "create");
    assert!(t.run(&["create", "--capacity", "8", "--mode", "0640"]).status.success());
    let mode = fs::metadata(&t.path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap();
    assert_eq!(mode & 0o777, 0o640);
    assert_one_line_error(&t.run(&["create"]), 73, "already exists");
    assert_eq!(json(&t.run(&["info", "--json"]))["capacity"], 8);
    assert!(t.run(&["rm"]).status.success());
    assert!(!t.path.exists());
    assert_one_line_error(&t.run(&["rm"]), 66, "no lease table");
}

#[test]
fn the_default_table_comes_from_the_environment() {
    let t = Table::new("envtable");
    let mut cmd = command(BIN);
    cmd.args(["acquire", "job", "--ttl", "30s"]).env("SHMLEASE_TABLE", &t.path);
    assert!(output(cmd).status.success());
    assert_eq!(held(&t).len(), 1, "acquire did not use $SHMLEASE_TABLE");
}

#[test]
fn completions_and_man_page() {
    let out = output({
        let mut c = command(BIN);
        c.args(["completions", "bash"]);
        c
    });
    assert!(out.status.success() && stdout(&out).contains("shmlease"));
    let out = output({
        let mut c = command(BIN);
        c.arg("man");
        c
    });
    assert!(out.status.success() && stdout(&out).contains(".TH"));
}

#[test]
fn shared_memory_tables_by_bare_name_or_shm_prefix() {
    let name = format!("shmlease-clitest-{}", std::process::id());
    let cli = |location: &str, args: &[&str]| {
        let mut c = command(BIN);
        c.arg("-t").arg(location).args(args).env_remove("SHMLEASE_TABLE");
        output(c)
    };
    assert!(cli(&name, &["create", "--capacity", "8"]).status.success());
    assert!(Path::new("/dev/shm").join(&name).exists());
    let info = json(&cli(&format!("shm:{name}"), &["info", "--json"]));
    assert_eq!(info["location"], name.as_str());
    assert_eq!(info["location_kind"], "shm");
    assert_eq!(info["capacity"], 8);
    // run exports the bare name, which -t accepts as it is.
    let out = cli(&name, &["run", "job", "--", "sh", "-c", "echo $SHMLEASE_TABLE"]);
    assert_eq!(stdout(&out).trim(), name);
    assert!(cli(&name, &["rm"]).status.success());
    assert!(!Path::new("/dev/shm").join(&name).exists());
}

#[test]
fn without_a_table_option_each_user_gets_a_shared_memory_table() {
    let mut c = command(BIN);
    c.args(["info", "--json"]).env_remove("SHMLEASE_TABLE");
    let out = output(c);
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !out.status.success() {
        // This machine's table may predate this build's format: the error must still
        // name the per-user location.
        assert!(stderr(&out).contains(&format!("shmlease-{uid}")), "{}", stderr(&out));
        return;
    }
    let info = json(&out);
    assert_eq!(info["location"], format!("shmlease-{uid}"));
    assert_eq!(info["location_kind"], "shm");
    // Left in place: it is this user's table, and other programs may be using it.
}

#[test]
fn at_a_terminal_ctrl_c_reaches_the_command_once() {
    // A pseudo-terminal from util-linux's script(1), if this machine has it.
    if command("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let t = Table::new("terminal");
    let (ready, got) = (t.file("ready"), t.file("got"));
    let cmd = format!(
        "exec {BIN} -t {table} run job -- sh -c 'trap \"echo INT >> {g}\" INT; trap \"echo QUIT >> {g}; exit 6\" QUIT; echo $$ > {r}; while :; do sleep 0.05; done'",
        table = t.path.display(),
        g = got.display(),
        r = ready.display()
    );
    // script(1) runs CMD with `$SHELL -c`; `exec` keeps that shell out of the terminal's
    // foreground group, where Ctrl-\ would kill it (dash does not exec by itself).
    let mut term = at_a_terminal(&cmd, Stdio::null());
    let mut keys = term.stdin.take().unwrap();
    read_pid(&ready);
    let lines = || fs::read_to_string(&got).unwrap_or_default().lines().count();
    // Ctrl-C signals the terminal's foreground group, where CMD shares run's group.
    // (A repeat from run would mostly merge with the pending signal, so this checks
    // the outcome; the decision itself is unit-tested in run.rs.)
    std::io::Write::write_all(&mut keys, b"\x03").unwrap();
    until("SIGINT to arrive", || lines() >= 1);
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut keys, b"\x1c").unwrap(); // Ctrl-\
    assert_eq!(wait(&mut term).code(), Some(6));
    assert_eq!(fs::read_to_string(&got).unwrap(), "INT\nQUIT\n", "a signal arrived twice");
}

#[test]
fn watch_redraws_until_q_and_restores_the_terminal() {
    let t = Table::new("watch");
    assert!(t.run(&["acquire", "watched-lease", "--ttl", "1m"]).status.success());
    // Not a terminal: refused, pointing to ls.
    assert_one_line_error(&t.run(&["watch"]), 64, "ls");
    if command("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let cmd = format!("exec {BIN} -t {} watch --interval 50ms", t.path.display());
    let mut term = at_a_terminal(&cmd, Stdio::piped());
    let mut keys = term.stdin.take().unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let (screen, mut out) = (screen.clone(), term.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut out, &mut buf) {
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let shown = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    until("two frames showing the lease", || shown().matches("watched-lease").count() >= 2);
    std::io::Write::write_all(&mut keys, b"q").unwrap();
    assert_eq!(wait(&mut term).code(), Some(0));
    until("the terminal to be restored", || shown().contains("\x1b[?1049l"));
}

#[test]
fn run_keeps_a_short_lease_alive_for_a_long_command() {
    let t = Table::new("keepalive");
    // CMD runs for several TTLs; the lease must stay this run's throughout.
    let out = t.run(&["run", "--ttl", "250ms", "job", "--", "sleep", "2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all = json(&t.run(&["ls", "--all", "--json"]));
    assert_eq!(all[0]["transitions"], 1, "the lease changed hands: {all}");
}

#[test]
fn a_stopped_run_loses_its_lease_and_stops_the_command_when_continued() {
    let t = Table::new("stopped");
    let ready = t.file("ready");
    let mut run = t
        .cmd(&["run", "--ttl", "250ms", "job", "--", "sh", "-c", &ready_then_sleep(&ready)])
        .stderr(Stdio::piped())
        .kid();
    let cmd_pid = read_pid(&ready);
    kill(run.id(), libc::SIGSTOP);
    // Stopped, run cannot renew: the lease expires and someone else takes it.
    let taken = t.run(&["acquire", "job", "--ttl", "30s", "--wait", "30s"]);
    assert!(taken.status.success(), "{}", stderr(&taken));
    kill(run.id(), libc::SIGCONT);
    assert_eq!(wait(&mut run).code(), Some(79));
    until("CMD to stop", || !alive(cmd_pid));
}

// ------------------------------------------------------------------------------------
// Issue 9: what the CLI says and does when tables are shared, damaged or in use
// ------------------------------------------------------------------------------------

/// Writes `bytes` at `offset` into the file at `path`.
fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, bytes, offset).unwrap();
}

/// The token of the live lease `name`, from `ls --json`.
fn live_token(t: &Table, name: &str) -> u64 {
    let leases = held(t);
    let lease = leases.iter().find(|l| l["name"] == name);
    lease.and_then(|l| l["token"].as_u64()).unwrap_or_else(|| panic!("{name} is not held"))
}

#[test]
fn a_table_location_that_is_not_utf8_is_refused_not_replaced_by_the_default() {
    use std::os::unix::ffi::OsStrExt;
    let t = Table::new("notutf8");
    let ran = t.file("ran");
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    let touch = ["run", "x", "--", "touch", ran.to_str().unwrap()];
    let mut c = command(BIN);
    c.args(touch).env("SHMLEASE_TABLE", bad);
    let out = output(c);
    assert_one_line_error(&out, 64, "SHMLEASE_TABLE");
    assert!(stderr(&out).contains("UTF-8"), "{}", stderr(&out));
    assert!(!ran.exists(), "CMD ran under a table nobody named");
    let mut c = command(BIN);
    c.arg("-t").arg(bad).args(touch).env_remove("SHMLEASE_TABLE");
    let out = output(c);
    assert_one_line_error(&out, 64, "-t/--table");
    assert!(!ran.exists(), "CMD ran under a table nobody named");
    // -t overrides a bad variable, and commands without a table do not need one.
    let mut c = command(BIN);
    c.arg("-t").arg(&t.path).args(touch).env("SHMLEASE_TABLE", bad);
    assert_eq!(code(&output(c)), 0);
    assert!(ran.exists());
    let mut c = command(BIN);
    c.args(["completions", "bash"]).env("SHMLEASE_TABLE", bad);
    assert_eq!(code(&output(c)), 0);
}

#[test]
fn control_characters_in_locations_are_printed_escaped() {
    let t = Table::new("controls");
    let odd = t.file("a\x1b[31mb\x07");
    let mut c = command(BIN);
    c.arg("-t").arg(&odd).arg("ls").env_remove("SHMLEASE_TABLE");
    let out = output(c);
    assert_one_line_error(&out, 66, "a\\x1b[31mb\\x07");
    assert!(!out.stderr.iter().any(|b| b.is_ascii_control() && *b != b'\n'), "{out:?}");
    // A hint to copy: quoted so that a shell gives back the same bytes.
    assert!(stderr(&out).contains("$'"), "{}", stderr(&out));
    let mut c = command(BIN);
    c.arg("-t").arg(&odd).arg("create").env_remove("SHMLEASE_TABLE");
    assert_eq!(code(&output(c)), 0);
    let mut c = command(BIN);
    c.arg("-t").arg(&odd).arg("info").env_remove("SHMLEASE_TABLE");
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("a\\x1b[31mb\\x07"), "{}", stdout(&out));
    assert!(!out.stdout.iter().any(|b| b.is_ascii_control() && *b != b'\n'), "{out:?}");
}

#[test]
fn a_damaged_or_foreign_version_table_is_never_advised_away_while_it_may_be_in_use() {
    let t = Table::new("damaged");
    // Byte 8: the format version; byte 24: the capacity (see tests/common).
    for (what, offset, bytes) in
        [("cannot use", 8, &99u32.to_ne_bytes()[..]), ("corrupt", 24, &0u64.to_ne_bytes()[..])]
    {
        let _ = fs::remove_file(&t.path);
        assert!(t.run(&["create", "--capacity", "4"]).status.success());
        patch(&t.path, offset, bytes);
        let out = t.run(&["ls"]);
        assert_one_line_error(&out, 74, what);
        let err = stderr(&out);
        assert!(!err.contains("create it again"), "{what}: {err}");
        assert!(err.contains("using it"), "{what}: says nothing of its users: {err}");
        if err.contains("rm --force") {
            assert!(err.contains("no process uses it"), "{what}: --force advised as is: {err}");
        }
        // Its leases cannot be read, so rm cannot tell whether it is in use.
        let out = t.run(&["rm"]);
        assert_one_line_error(&out, 74, "not removed");
        assert!(t.path.exists(), "{what}: rm removed a table that may be in use");
        let out = t.run(&["rm", "--force"]);
        assert_eq!(code(&out), 0, "{what}: {}", stderr(&out));
        assert!(!t.path.exists());
    }
}

#[test]
fn a_busy_table_exits_75_saying_to_try_again() {
    let t = Table::new("busy");
    assert!(t.run(&["create", "--capacity", "4"]).status.success());
    // The table lock (taken to bind new names) held by someone who never lets go.
    let file = fs::File::open(&t.path).unwrap();
    // SAFETY: flock on a descriptor this test owns; no pointers.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) }, 0);
    let out = t.run(&["acquire", "new-name", "--ttl", "5s"]);
    assert_one_line_error(&out, 75, "try again");
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    // Busy is not "held": run's conflict code does not hide it.
    let out = t.run(&["run", "-n", "--conflict-exit-code", "0", "new-name", "--", "true"]);
    assert_one_line_error(&out, 75, "try again");
    drop(file);
    assert!(t.run(&["acquire", "new-name", "--ttl", "5s"]).status.success());
}

/// Starts `run NAME` holding the lease with an idle CMD; returns it and CMD's pid.
fn holding_run(t: &Table, name: &str, label: &str) -> (Kid, u32) {
    let ready = t.file(&format!("{name}-ready"));
    let mut run = t
        .cmd(&["run", "--label", label, name, "--", "sh", "-c", &ready_then_sleep(&ready)])
        .stderr(Stdio::piped())
        .kid();
    let cmd = run.also(read_pid(&ready));
    (run, cmd)
}

#[test]
fn rm_refuses_while_leases_are_live_naming_them_and_force_says_what_it_risks() {
    let t = Table::new("rmlive");
    let (mut run, _cmd) = holding_run(&t, "job", "worker");
    let token = live_token(&t, "job");
    let out = t.run(&["rm"]);
    assert_one_line_error(&out, 76, "\"job\"");
    let err = stderr(&out);
    for fact in [token.to_string(), format!("pid {}", run.id()), "worker".into(), "left".into()] {
        assert!(err.contains(&fact), "the refusal does not name {fact:?}: {err}");
    }
    assert!(t.path.exists(), "rm removed a table in use");
    // Still the same table: the lease is still held.
    assert_eq!(live_token(&t, "job"), token);
    assert_eq!(code(&t.run(&["run", "-n", "job", "--", "true"])), 75);

    let out = t.run(&["rm", "--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!t.path.exists());
    let err = stderr(&out);
    assert!(err.contains("\"job\"") && err.contains(&token.to_string()), "{err}");
    assert!(err.contains("two holders") && err.contains("tokens start over"), "{err}");
    kill(run.id(), libc::SIGTERM);
    wait(&mut run);
}

#[test]
fn by_token_renew_and_release_of_a_process_bound_lease_are_refused_naming_its_holder() {
    let t = Table::new("bound");
    let (mut run, cmd) = holding_run(&t, "job", "svc");
    let token = live_token(&t, "job");
    let tok = token.to_string();
    for args in [
        &["release", "job", "--token", &tok][..],
        &["renew", "job", "--token", &tok, "--ttl", "1s"][..],
    ] {
        let out = t.run(args);
        assert_one_line_error(&out, 78, &format!("pid {}", run.id()));
        let err = stderr(&out);
        assert!(err.contains(&format!("revoke job --token {token}")), "{args:?}: {err}");
    }
    // Nothing changed: run still holds the very same grant, and CMD runs.
    assert_eq!(live_token(&t, "job"), token);
    assert!(alive(cmd) && run.try_wait().unwrap().is_none());
    assert!(t.run(&["revoke", "job", "--token", &tok]).status.success());
    assert_eq!(wait(&mut run).code(), Some(79));
}

#[test]
fn by_token_errors_say_what_is_true() {
    let t = Table::new("truth");
    let token: u64 = stdout(&t.run(&["acquire", "job", "--ttl", "30s"])).trim().parse().unwrap();
    // A name the table never had.
    let out = t.run(&["renew", "never-was", "--token", "5", "--ttl", "1s"]);
    assert_one_line_error(&out, 79, "no lease named \"never-was\"");
    assert!(!stderr(&out).contains("expired"), "{}", stderr(&out));
    // A token never issued: the latest one is named.
    let unissued = (token + 1).to_string();
    let out = t.run(&["renew", "job", "--token", &unissued, "--ttl", "1s"]);
    assert_one_line_error(&out, 79, "never issued");
    assert!(stderr(&out).contains(&format!("latest is {token}")), "{}", stderr(&out));
    assert!(!stderr(&out).contains("newer grant"), "{}", stderr(&out));
    // An administrator revoking by token never held the lease.
    for bad in [unissued.clone(), (token - 1).to_string()] {
        let out = t.run(&["revoke", "job", "--token", &bad]);
        assert_one_line_error(&out, 79, "nothing revoked");
        assert!(!stderr(&out).contains("no longer yours"), "{}", stderr(&out));
    }
    let out = t.run(&["revoke", "never-was", "--token", "5"]);
    assert_one_line_error(&out, 79, "nothing revoked: the table has no lease named");
    // Released twice: the second says so, and nothing else.
    assert!(t.run(&["release", "job", "--token", &token.to_string()]).status.success());
    let out = t.run(&["release", "job", "--token", &token.to_string()]);
    assert_one_line_error(&out, 79, "already released");
    assert!(!stderr(&out).contains("no longer yours"), "{}", stderr(&out));
}

#[test]
fn a_lost_lease_stops_processes_that_left_cmds_process_group() {
    let t = Table::new("escaped");
    let (ready, escaped) = (t.file("ready"), t.file("escaped"));
    // Not at a terminal: CMD has a process group of its own; `setsid` leaves it.
    let script = format!(
        "setsid sleep 300 & echo $! > {}; echo $$ > {}; wait",
        escaped.display(),
        ready.display()
    );
    let mut run = t
        .cmd(&["run", "--kill-after", "200ms", "job", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .kid();
    read_pid(&ready);
    let sleeper = run.also(read_pid(&escaped));
    assert!(t.run(&["revoke", "job"]).status.success());
    assert_eq!(wait(&mut run).code(), Some(79));
    assert!(!alive(sleeper), "a process CMD started outlived run on a lost lease");
}

#[test]
fn processes_cmd_leaves_behind_are_stopped_before_the_lease_is_released() {
    let t = Table::new("leftover");
    let left = t.file("left");
    let script = format!("sleep 300 & echo $! > {}", left.display());
    let mut run = t.cmd(&["run", "job", "--", "sh", "-c", &script]).stderr(Stdio::piped()).kid();
    let sleeper = run.also(read_pid(&left));
    assert_eq!(wait(&mut run).code(), Some(0));
    assert!(!alive(sleeper), "a process CMD left behind runs on without the lease");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains(&format!("pid {sleeper}")), "{err}");
    assert!(held(&t).is_empty());
}

/// run skips its search of `/proc` for CMD's leftovers once it has no child at all (the
/// common case: CMD exited alone). Every shape of leftover must still keep it a parent:
/// a grandchild whose own parent still runs, and a daemon that forked twice into a
/// session of its own, whose parent exited before CMD did.
#[test]
fn leftovers_deep_in_the_tree_or_in_a_session_of_their_own_are_stopped_when_cmd_exits() {
    let t = Table::new("deepleft");
    let (mid, deep, daemon) = (t.file("mid"), t.file("deep"), t.file("daemon"));
    let script = format!(
        "sh -c 'sleep 300 & echo $! > {deep}; wait' & echo $! > {mid}; \
         setsid sh -c 'sleep 300 & echo $! > {daemon}' & wait $!; \
         while [ ! -s {deep} ] || [ ! -s {daemon} ]; do sleep 0.01; done",
        deep = deep.display(),
        mid = mid.display(),
        daemon = daemon.display()
    );
    let mut run = t.cmd(&["run", "job", "--", "sh", "-c", &script]).stderr(Stdio::piped()).kid();
    let pids = [read_pid(&mid), read_pid(&deep), read_pid(&daemon)].map(|p| run.also(p));
    assert_eq!(wait(&mut run).code(), Some(0));
    for pid in pids {
        assert!(!alive(pid), "pid {pid}, left by CMD, runs on without the lease");
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("leaving 3 processes running"), "{err}");
    assert!(held(&t).is_empty());
}

/// The common case, for contrast: CMD exits alone, and run says nothing of leftovers.
#[test]
fn a_command_that_leaves_nothing_behind_gets_no_leftover_note() {
    let t = Table::new("noleft");
    let out = t.run(&["run", "job", "--", "sh", "-c", "sleep 0 & wait; exit 4"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(held(&t).is_empty());
}

#[test]
fn at_a_terminal_a_lost_lease_stops_the_commands_whole_job() {
    if command("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let t = Table::new("termjob");
    let (leader, ready, bg, rc) = (t.file("leader"), t.file("ready"), t.file("bg"), t.file("rc"));
    // The terminal's shell runs run in its own (foreground) process group, so CMD shares
    // it too; its background `sleep` must stop with it. The shell stays afterwards: the
    // hangup of its exit would otherwise kill the sleep whatever run did.
    let cmd = format!(
        "echo $$ > {l}; {BIN} -t {table} run --kill-after 200ms job -- sh -c 'sleep 300 & echo $! > {b}; echo $$ > {r}; wait'; echo $? > {rc}; exec sleep 60",
        l = leader.display(),
        table = t.path.display(),
        b = bg.display(),
        r = ready.display(),
        rc = rc.display()
    );
    let mut term = at_a_terminal(&cmd, Stdio::null());
    let leader = term.also(read_pid(&leader));
    let cmd_pid = term.also(read_pid(&ready));
    let sleeper = term.also(read_pid(&bg));
    assert!(t.run(&["revoke", "job"]).status.success());
    assert_eq!(read_pid(&rc), 79, "run's exit code");
    assert!(!alive(cmd_pid));
    assert!(!alive(sleeper), "CMD's background process outlived the lost lease");
    kill(leader, libc::SIGKILL);
    wait(&mut term);
}

// ------------------------------------------------------------------------------------
// Issue 10: first contact
// ------------------------------------------------------------------------------------

/// The repository root.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README's first command, `bash examples/cli-demo.sh`, runs the binary cargo reports
/// building, wherever that is (`CARGO_TARGET_DIR`, a shared target directory), never one
/// it guesses under `target/`. A stand-in `cargo` first on PATH reports this test's
/// binary, behind a wrapper that leaves a mark, as what it built.
#[test]
fn the_demo_runs_the_binary_cargo_built() {
    use std::os::unix::fs::PermissionsExt;
    let t = Table::new("demo");
    let (wrapper, mark, bin) = (t.file("shmlease"), t.file("used"), t.file("bin"));
    let script = |path: &Path, text: String| {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(&wrapper, format!("#!/bin/sh\necho >> '{}'\nexec '{BIN}' \"$@\"\n", mark.display()));
    fs::create_dir(&bin).unwrap();
    script(
        &bin.join("cargo"),
        format!(
            "#!/bin/sh\n[ \"$1\" = build ] || exit 2\nprintf '%s\\n' '{{\"reason\":\"compiler-artifact\",\"executable\":\"{}\"}}'\n",
            wrapper.display()
        ),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut demo = command("bash");
    demo.arg(repo().join("examples/cli-demo.sh"))
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", t.file("elsewhere"))
        .env("TMPDIR", &t.dir)
        .env_remove("SHMLEASE_TABLE");
    let out = output(demo);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(fs::read_to_string(&mark).is_ok_and(|m| !m.is_empty()), "the demo ran another binary");
    let text = stdout(&out);
    for line in ["exit code 75", "sleep 300 still running: no", "E: got it at once"] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

/// The tests' children start with the default action for the signals the tests send,
/// even when the test process ignores them (as under `nohup`, or in a background job of
/// a non-interactive shell), and whatever a shell script inherits it can `trap`.
#[test]
fn test_children_start_with_default_signal_actions_whatever_the_test_process_ignores() {
    let ignored = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];
    let mut previous = Vec::new();
    for sig in ignored {
        // SAFETY: signal(2) with a constant disposition; restored below.
        previous.push(unsafe { libc::signal(sig, libc::SIG_IGN) });
    }
    let out = output({
        let mut c = command("sh");
        c.args(["-c", "sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status"]);
        c
    });
    for (sig, old) in ignored.into_iter().zip(previous) {
        // SAFETY: puts back the disposition saved above.
        unsafe { libc::signal(sig, old) };
    }
    let mask = u64::from_str_radix(stdout(&out).trim(), 16).expect("a SigIgn mask");
    for sig in ignored {
        assert_eq!(mask & 1 << (sig - 1), 0, "signal {sig} starts ignored in a test's child");
    }
}

/// run starts CMD itself (a vfork-like clone, then exec), not through std's `Command`:
/// CMD must start as std started it. No signal blocked (run blocks the ones it reads
/// from a signalfd), SIGPIPE at its default (the Rust runtime ignores it), found on
/// PATH as execvp(3) finds it (a script without `#!` runs with sh), 126 and 127 when it
/// cannot be run, and the environment with run's three variables replacing any
/// inherited ones.
#[test]
fn cmd_starts_with_no_signal_blocked_sigpipe_at_its_default_and_execvp_lookup() {
    let t = Table::new("spawn");
    let out = {
        // Not through sh, which clears its signal mask itself.
        let mut c =
            t.cmd(&["run", "job", "--", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
        c.env("SHMLEASE_NAME", "inherited").env("SHMLEASE_TOKEN", "1");
        output(c)
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mask = |field: &str| {
        let line = stdout(&out).lines().find(|l| l.starts_with(field)).map(str::to_owned);
        let line = line.unwrap_or_else(|| panic!("no {field} in {}", stdout(&out)));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "CMD starts with signals blocked");
    assert_eq!(mask("SigIgn:") & 1 << (libc::SIGPIPE - 1), 0, "CMD starts ignoring SIGPIPE");

    let out = {
        let mut c = t.cmd(&["run", "job", "--", "sh", "-c", "echo $SHMLEASE_NAME $SHMLEASE_TOKEN"]);
        c.env("SHMLEASE_NAME", "inherited").env("SHMLEASE_TOKEN", "1");
        output(c)
    };
    let words: Vec<String> = stdout(&out).split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[0], "job");
    assert!(words[1].parse::<u64>().unwrap() > 1, "{words:?}");

    let script = t.file("no-shebang");
    fs::write(&script, "echo ran by sh; exit 6\n").unwrap();
    let bits = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    fs::set_permissions(&script, bits).unwrap();
    let out = t.run(&["run", "job", "--", script.to_str().unwrap()]);
    assert_eq!((code(&out), stdout(&out).trim()), (6, "ran by sh"), "{}", stderr(&out));
    let on_path = {
        let mut c = t.cmd(&["run", "job", "--", "no-shebang"]);
        c.env("PATH", format!("/nonexistent:{}:/usr/bin:/bin", t.dir.display()));
        output(c)
    };
    assert_eq!(code(&on_path), 6, "{}", stderr(&on_path));

    let not_executable = t.file("not-executable");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let out = t.run(&["run", "job", "--", not_executable.to_str().unwrap()]);
    assert_one_line_error(&out, 126, "permission denied");
    let out = t.run(&["run", "job", "--", "no-such-command-shmlease-test"]);
    assert_one_line_error(&out, 127, "not found");
    assert!(held(&t).is_empty(), "a CMD that could not start left the lease held");
}

/// The tool has its own entry point (not std's: see src/bin/shmlease/start.rs) and must
/// start as std started it: a closed stdin, stdout or stderr is opened on /dev/null
/// before anything else (or the table's descriptor would become stdout, and `acquire`
/// would print its token over the table's header), and SIGPIPE is ignored (a reader
/// gone is a write error, not death by signal).
#[test]
fn the_tool_starts_with_closed_standard_descriptors_on_dev_null_and_sigpipe_ignored() {
    use std::os::unix::process::ExitStatusExt;
    let t = Table::new("startup");
    assert_eq!(code(&t.run(&["create"])), 0);
    for (i, closed) in ["0<&-", ">&-", "2>&-", "<&- >&- 2>&-"].iter().enumerate() {
        let script = format!("exec \"$0\" -t \"$1\" acquire name{i} --ttl 1m {closed}");
        let mut c = command("sh");
        c.args(["-c", &script, BIN]).arg(&t.path).env_remove("SHMLEASE_TABLE");
        let out = output(c);
        assert_eq!(code(&out), 0, "acquire with {closed}: {}", stderr(&out));
        let info = t.run(&["info"]);
        assert_eq!(code(&info), 0, "the table after acquire with {closed}: {}", stderr(&info));
    }
    assert_eq!(held(&t).len(), 4, "a lease for each");

    // A pipe whose reader is gone before the tool writes.
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two descriptors it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closes the reading end this test owns.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the writing end is this test's, handed over to the Stdio.
    let writer = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let mut c = t.cmd(&["acquire", "piped", "--ttl", "1m"]);
    c.stdin(Stdio::null()).stdout(Stdio::from(writer)).stderr(Stdio::null());
    let status = wait(&mut c.kid());
    assert_eq!(status.signal(), None, "the tool died by a signal: {status:?}");
}

/// Processes whose command line contains `marker`.
fn with_marker(marker: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                && alive(*pid)
        })
        .collect()
}

/// SIGKILL of run at any moment while it starts CMD (before the clone, between the clone
/// and PR_SET_PDEATHSIG, after the exec) never leaves CMD running.
#[test]
fn killing_run_while_it_starts_cmd_never_leaves_cmd_running() {
    let t = Table::new("killstart");
    for i in 0..40u32 {
        // A `sleep` whose argument names this round (GNU sleep reads fractions).
        let marker = format!("300.{}{i:03}1", std::process::id());
        let mut run = t.cmd(&["run", "--ttl", "60s", "job", "--", "sleep", &marker]).kid();
        std::thread::sleep(Duration::from_micros(u64::from(i % 20) * 150));
        kill(run.id(), libc::SIGKILL);
        wait(&mut run);
        let start = Instant::now();
        while !with_marker(&marker).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = with_marker(&marker);
        for &pid in &left {
            kill(pid, libc::SIGKILL);
        }
        assert!(left.is_empty(), "round {i}: CMD outlived its killed supervisor: {left:?}");
    }
}

/// A test that lets go of a `run` (it failed, or is done with it) kills it with
/// everything below it: CMD and what CMD started, not only `run`.
#[test]
fn a_test_letting_go_of_a_run_kills_everything_below_it() {
    let t = Table::new("teardown");
    let (ready, bg) = (t.file("ready"), t.file("bg"));
    let script =
        format!("sleep 300 & echo $! > {}; echo $$ > {}; wait", bg.display(), ready.display());
    let run = t.cmd(&["run", "job", "--", "sh", "-c", &script]).kid();
    let (cmd, sleeper) = (read_pid(&ready), read_pid(&bg));
    drop(run);
    let start = Instant::now();
    while (alive(cmd) || alive(sleeper)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<u32> = [cmd, sleeper].into_iter().filter(|&p| alive(p)).collect();
    for &pid in &left {
        kill(pid, libc::SIGKILL);
    }
    assert!(left.is_empty(), "still running after the test let go of run: {left:?}");
}

#[test]
fn a_ttl_out_of_range_or_negative_is_refused_as_written_with_the_range() {
    let t = Table::new("ttlrange");
    for (ttl, says) in [("-1s", "negative"), ("0", "1µs to 365d"), ("366d", "1µs to 365d")] {
        for args in [
            &["acquire", "job", "--ttl", ttl][..],
            &["renew", "job", "--token", "1", "--ttl", ttl][..],
        ] {
            let out = t.run(args);
            assert_one_line_error(&out, 64, says);
            let err = stderr(&out);
            assert!(err.contains(&format!("'{ttl}'")), "not echoed as written: {err}");
            assert!(!err.contains("'-- "), "clap's advice to use `--`: {err}");
        }
    }
    // Where errors point, the limits are written.
    for (command, range) in
        [("acquire", "1µs to 365d"), ("renew", "1µs to 365d"), ("run", "250ms to 365d")]
    {
        let help = stdout(&t.run(&[command, "--help"]));
        assert!(help.contains(range) && help.contains("1 to 64 bytes"), "{help}");
    }
    let help = stdout(&t.run(&["--help"]));
    assert!(help.contains("1µs") && help.contains("1 to 64 bytes"), "{help}");
}

#[test]
fn a_capacity_out_of_range_gives_the_real_range() {
    let t = Table::new("capacity");
    for capacity in ["0", "16777217", "100000000000", "1e11", "-1", "many"] {
        let out = t.run(&["create", "--capacity", capacity]);
        assert_one_line_error(&out, 64, "1 to 16777216 slots");
        assert!(!stderr(&out).contains("4294967295"), "{}", stderr(&out));
        assert!(!t.path.exists());
    }
    assert!(t.run(&["create", "--capacity", "1"]).status.success());
    assert_eq!(json(&t.run(&["info", "--json"]))["capacity"], 1);
}

#[test]
fn a_too_long_shm_name_says_why() {
    let long = "a".repeat(300);
    let mut c = command(BIN);
    c.args(["-t", &long, "info"]).env_remove("SHMLEASE_TABLE");
    let out = output(c);
    assert_one_line_error(&out, 64, "300 bytes long: at most 250");
    assert!(!stderr(&out).contains(&long), "{}", stderr(&out));
}

#[test]
fn create_where_it_cannot_says_what_would_work() {
    let t = Table::new("createwhere");
    // In a missing directory: not "create it with `create`", the command just given.
    let missing = t.file("no/such/dir/table");
    let mut c = command(BIN);
    c.arg("-t").arg(&missing).arg("create").env_remove("SHMLEASE_TABLE");
    let out = output(c);
    assert_one_line_error(&out, 66, "does not exist");
    let err = stderr(&out);
    assert!(err.contains(&format!("mkdir -p {}", t.file("no/such/dir").display())), "{err}");
    assert!(!err.contains(" create`"), "advises the same create again: {err}");
    // On a directory: not `rm`, which removes nothing but a lease table.
    let mut c = command(BIN);
    c.arg("-t").arg(&t.dir).arg("create").env_remove("SHMLEASE_TABLE");
    let out = output(c);
    assert_one_line_error(&out, 73, "is a directory");
    assert!(!stderr(&out).contains(" rm"), "{}", stderr(&out));
    // On a file that is not a table: not `rm` either.
    fs::write(&t.path, b"not a table").unwrap();
    let out = t.run(&["create"]);
    assert_one_line_error(&out, 73, "not a lease table");
    assert!(!stderr(&out).contains(" rm"), "{}", stderr(&out));
    // On a lease table: use it, or rm it.
    fs::remove_file(&t.path).unwrap();
    assert!(t.run(&["create"]).status.success());
    let out = t.run(&["create"]);
    assert_one_line_error(&out, 73, "a lease table already exists");
    assert!(stderr(&out).contains(" rm`"), "{}", stderr(&out));
}

#[test]
fn info_labels_sampled_counters_as_estimates_and_names_a_file_once() {
    let t = Table::new("estimates");
    for _ in 0..3 {
        assert!(t.run(&["run", "job", "--", "true"]).status.success());
    }
    let info = json(&t.run(&["info", "--json"]));
    assert_eq!(info["sampled_counters"], serde_json::json!(["renewals", "releases"]), "{info}");
    assert_eq!(info["sample_period"], 64);
    for name in info["sampled_counters"].as_array().unwrap() {
        assert!(info["counters"][name.as_str().unwrap()].is_u64(), "{info}");
    }
    let text = stdout(&t.run(&["info"]));
    for counter in ["renewals", "releases"] {
        let line = text.lines().find(|l| l.starts_with(counter)).unwrap();
        assert!(line.contains('~') && line.contains("estimate"), "{line}");
    }
    let location = text.lines().find(|l| l.starts_with("location")).unwrap();
    assert_eq!(location.matches(t.path.to_str().unwrap()).count(), 1, "{location}");
}

#[test]
fn ls_aligns_columns_by_display_width_for_wide_names() {
    let t = Table::new("wide");
    // Columns a terminal gives these: CJK and emoji two each, ASCII one.
    let cols = |s: &str| s.chars().map(|c| if c as u32 >= 0x1100 { 2 } else { 1 }).sum::<usize>();
    let mut tokens = Vec::new();
    for (name, label) in [("日本語", "名前"), ("abc", "x"), ("🎉🎉", "y")] {
        let out = t.run(&["acquire", name, "--ttl", "1m", "--label", label]);
        tokens.push(stdout(&out).trim().to_owned());
    }
    let text = stdout(&t.run(&["ls"]));
    let mut ends = Vec::new(); // (column where the token ends, where STATE starts)
    for token in &tokens {
        let line = text.lines().find(|l| l.contains(token.as_str())).unwrap();
        let at = line.find(token.as_str()).unwrap();
        let state = line.find("held").unwrap();
        ends.push((cols(&line[..at]) + token.len(), cols(&line[..state])));
    }
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "misaligned ({ends:?}):\n{text}");
}

/// An installed user has `shmlease` but not the repository's docs/cli.md: `--help`
/// points to `shmlease man`, one page that documents every command and its options.
#[test]
fn help_points_to_a_manual_page_that_covers_every_command() {
    let t = Table::new("manual");
    let help = stdout(&t.run(&["--help"]));
    assert!(!help.contains("docs/cli.md"), "{help}");
    assert!(help.contains("shmlease man"), "{help}");
    let page = stdout(&t.run(&["man"]));
    for command in [
        "create", "rm", "info", "ls", "get", "watch", "acquire", "renew", "release", "revoke",
        "run",
    ] {
        let section = format!(".SH \"SHMLEASE {}\"", command.to_uppercase());
        assert!(page.contains(&section), "no section for {command}");
    }
    for option in
        ["kill\\-after", "conflict\\-exit\\-code", "capacity", "permits", "shared", "Exit codes"]
    {
        assert!(page.contains(option), "the page lacks {option}");
    }
    assert!(!page.contains("shmlease\\-run(1)"), "points to pages nobody installs");
}

/// `run` refuses a TTL too short for it to renew the lease in time on a busy machine
/// (`--ttl 1ms` lost its own lease nearly always), saying what the minimum is.
#[test]
fn run_refuses_a_ttl_too_short_to_renew_reliably() {
    let t = Table::new("shortttl");
    let ran = t.file("ran");
    for ttl in ["1ms", "100ms", "249ms", "366d"] {
        let out = t.run(&["run", "--ttl", ttl, "job", "--", "touch", ran.to_str().unwrap()]);
        assert_one_line_error(&out, 64, "250ms to 365d");
        assert!(!ran.exists(), "--ttl {ttl}: CMD ran");
    }
    let out = t.run(&["run", "--ttl", "1ms", "job", "--", "true"]);
    assert!(stderr(&out).contains("at least 250ms"), "{}", stderr(&out));
    let out = t.run(&["run", "--ttl", "250ms", "job", "--", "touch", ran.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(ran.exists());
}

// Leader election from the command line (issue 11): `leader`, `observe`,
// `request-release`, `revoke --grace`, `run --on-request`, and `run` as a hot standby.

/// The lines a child prints on stdout, as they come (read by a thread of their own).
fn lines_of(kid: &mut Kid) -> mpsc::Receiver<String> {
    let out = std::io::BufReader::new(kid.stdout.take().expect("stdout piped"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(out) {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line from `lines`, within the watchdog.
fn next_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    lines.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("watchdog: no line for {what}"))
}

/// The process's state letter in /proc (R, S, T, Z...).
fn proc_state(pid: u32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).unwrap_or('?')
}

#[test]
fn leader_says_who_leads_or_exits_1_when_nobody_does() {
    let t = Table::new("leader");
    t.run(&["create"]);
    let out = t.run(&["leader", "job"]);
    assert_eq!(code(&out), 1, "nobody leads: exit 1; {}", stderr(&out));
    assert!(stdout(&out).contains("nobody leads \"job\""), "{}", stdout(&out));
    let out = t.run(&["leader", "job", "--json"]);
    assert_eq!(code(&out), 1);
    let nobody: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((nobody["leading"].as_bool(), nobody["term"].as_u64()), (Some(false), Some(0)));
    assert!(nobody["pid"].is_null() && nobody["acquired_at"].is_null(), "{nobody}");

    let (run, _cmd) = holding_run(&t, "job", "cand-a");
    let term = live_token(&t, "job");
    let out = t.run(&["leader", "job", "--json"]);
    let leader = json(&out);
    assert_eq!(leader["name"], "job");
    assert_eq!(leader["leading"], true);
    assert_eq!(leader["term"].as_u64(), Some(term));
    assert_eq!(leader["pid"].as_u64(), Some(u64::from(run.id())));
    assert_eq!(leader["label"], "cand-a");
    assert_eq!(leader["detached"], false);
    assert!(leader["acquired_at"].as_str().unwrap().ends_with('Z'), "{leader}");
    assert!(leader["expires_at"].as_str().unwrap().ends_with('Z'), "{leader}");
    assert!(leader["remaining_ms"].as_u64().unwrap() > 0, "{leader}");
    let out = t.run(&["leader", "job"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for fact in [format!("term {term}"), format!("pid {} (cand-a)", run.id()), "left".into()] {
        assert!(text.contains(&fact), "no {fact:?} in: {text}");
    }
    // Once its leader is gone, the name's last term is still told.
    let mut run = run;
    kill(run.id(), libc::SIGTERM);
    wait(&mut run);
    let out = t.run(&["leader", "job", "--json"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let nobody: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nobody["term"].as_u64(), Some(term));
}

#[test]
fn observe_prints_a_json_line_per_change_with_skipped_terms_and_stops_after_count() {
    let t = Table::new("observe");
    t.run(&["create"]);
    let mut observer =
        t.cmd(&["observe", "job", "--json", "--count", "3"]).stdout(Stdio::piped()).kid();
    let lines = lines_of(&mut observer);
    let first: Value = serde_json::from_str(&next_line(&lines, "the state at start")).unwrap();
    assert_eq!(first["name"], "job");
    assert_eq!((first["leading"].as_bool(), first["term"].as_u64()), (Some(false), Some(0)));
    assert!(first.get("skipped").is_none(), "nothing skipped at start: {first}");
    assert!(first["at"].as_str().unwrap().ends_with('Z'), "{first}");

    // Stopped, the observer sleeps through two terms and wakes up to a third.
    kill(observer.id(), libc::SIGSTOP);
    until("the observer to stop", || proc_state(observer.id()) == 'T');
    for _ in 0..2 {
        let token = stdout(&t.run(&["acquire", "job", "--ttl", "30s"])).trim().to_owned();
        assert!(t.run(&["release", "job", "--token", &token]).status.success());
    }
    let out = t.run(&["acquire", "job", "--ttl", "30s", "--label", "third"]);
    let third: u64 = stdout(&out).trim().parse().unwrap();
    kill(observer.id(), libc::SIGCONT);
    let line = next_line(&lines, "the third term");
    let change: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(change["leading"], true, "{line}");
    assert_eq!(change["term"].as_u64(), Some(third), "{line}");
    assert_eq!(change["label"], "third", "{line}");
    assert_eq!(change["detached"], true, "{line}");
    assert!(change["pid"].as_u64().is_some() && change["remaining_ms"].as_u64() > Some(0));
    assert!(change["acquired_at"].as_str().is_some_and(|a| a.ends_with('Z')), "{line}");
    assert_eq!(change["skipped"].as_u64(), Some(2), "two terms missed, and said so: {line}");

    assert!(t.run(&["release", "job", "--token", &third.to_string()]).status.success());
    let line = next_line(&lines, "the end of the third term");
    let ended: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((ended["leading"].as_bool(), ended["term"].as_u64()), (Some(false), Some(third)));
    assert!(ended["pid"].is_null() && ended.get("skipped").is_none(), "{line}");
    assert_eq!(wait(&mut observer).code(), Some(0), "--count 3 ends it after 3 lines");
    assert!(lines.recv_timeout(WATCHDOG).is_err(), "a line after --count was reached");
}

#[test]
fn observe_runs_until_interrupted_and_then_exits_0() {
    let t = Table::new("observeint");
    t.run(&["create"]);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let name = format!("job-{signal}");
        let mut observer = t.cmd(&["observe", &name]).stdout(Stdio::piped()).kid();
        let lines = lines_of(&mut observer);
        let line = next_line(&lines, "the state at start");
        assert!(line.contains("nobody leads"), "{line}");
        let (run, _cmd) = holding_run(&t, &name, "obs");
        // Flushed at once, through a pipe: read while observe still runs.
        let line = next_line(&lines, "the new leader");
        assert!(line.contains(&format!("pid {} (obs) leads", run.id())), "{line}");
        kill(observer.id(), signal);
        assert_eq!(wait(&mut observer).code(), Some(0), "signal {signal}: a clean exit");
    }
}

/// `observe NAME | head -1`: observe ends when its reader does, without waiting for a
/// change to write.
#[test]
fn observe_ends_when_the_pipe_it_writes_to_is_closed() {
    let t = Table::new("observepipe");
    t.run(&["create"]);
    let mut observer = t.cmd(&["observe", "job"]).stdout(Stdio::piped()).kid();
    let mut reader = std::io::BufReader::new(observer.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.contains("nobody leads"), "{line}");
    drop(reader);
    assert_eq!(wait(&mut observer).code(), Some(0));
}

#[test]
fn request_release_reaches_cmd_as_the_chosen_signal_and_run_releases_when_it_exits() {
    let t = Table::new("request");
    t.run(&["create"]);
    let out = t.run(&["request-release", "job"]);
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("not held; nothing to ask"), "{}", stderr(&out));

    let (ready, got) = (t.file("ready"), t.file("got"));
    let script = format!(
        "trap 'echo USR1 > {}; exit 3' USR1; echo $$ > {}; while :; do sleep 0.05; done",
        got.display(),
        ready.display()
    );
    let mut run = t
        .cmd(&["run", "--on-request", "usr1", "job", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .kid();
    read_pid(&ready);
    let token = live_token(&t, "job");
    let out = t.run(&["request-release", "job", "--token", &(token + 1).to_string()]);
    assert_one_line_error(&out, 79, "nothing asked");
    let out = t.run(&["request-release", "job", "--json"]);
    let asked = json(&out);
    assert_eq!((asked["requested"].as_bool(), asked["token"].as_u64()), (Some(true), Some(token)));
    assert_eq!(wait(&mut run).code(), Some(3), "run exits with CMD's status");
    assert_eq!(fs::read_to_string(&got).unwrap().trim(), "USR1");
    assert!(held(&t).is_empty(), "released when CMD exited");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("requested: sending SIGUSR1 to CMD"), "{err}");
}

#[test]
fn revoke_grace_asks_first_and_revokes_only_a_holder_that_does_not_release_in_time() {
    let t = Table::new("grace");
    // A holder that hands over: run passes the request to CMD as SIGTERM, CMD exits,
    // run releases.
    let (ready, got) = (t.file("ready"), t.file("got"));
    let script = format!(
        "trap 'echo TERM > {}; exit 0' TERM; echo $$ > {}; while :; do sleep 0.05; done",
        got.display(),
        ready.display()
    );
    let mut run = t.cmd(&["run", "job", "--", "sh", "-c", &script]).stderr(Stdio::piped()).kid();
    read_pid(&ready);
    let token = live_token(&t, "job");
    let graced = json(&t.run(&["revoke", "job", "--grace", "50s", "--json"]));
    assert_eq!(graced["token"].as_u64(), Some(token));
    assert_eq!(graced["outcome"], "released", "{graced}");
    assert_eq!(graced["revoked"], false, "{graced}");
    assert_eq!(wait(&mut run).code(), Some(0));
    assert_eq!(fs::read_to_string(&got).unwrap().trim(), "TERM");
    let free = t.run(&["ls", "--all", "--json"]);
    assert_eq!(json(&free)[0]["state"], "free", "released, not revoked");

    // A holder that ignores requests keeps the lease until the grace is over.
    let ready = t.file("ready2");
    let mut run = t
        .cmd(&["run", "--on-request", "none", "job", "--", "sh", "-c", &ready_then_sleep(&ready)])
        .stderr(Stdio::piped())
        .kid();
    read_pid(&ready);
    let token = live_token(&t, "job");
    let out = t.run(&["revoke", "job", "--grace", "300ms"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("(token {token})")) && text.contains("revoked it"), "{text}");
    assert_eq!(wait(&mut run).code(), Some(79), "run lost its lease");
    let revoked = t.run(&["ls", "--all", "--json"]);
    assert_eq!(json(&revoked)[0]["state"], "revoked");
    // Nothing held: nothing asked, nothing revoked.
    let graced = json(&t.run(&["revoke", "job", "--grace", "1s", "--json"]));
    assert_eq!(graced["outcome"], "not_held", "{graced}");
}

/// Three `run NAME -- CMD` candidates: one runs CMD, and when it is killed with SIGKILL
/// a standby's CMD starts (its TTL is far beyond the watchdog: only the leader's death
/// can hand the lease over in time).
#[test]
fn hot_standby_a_killed_leader_is_replaced_by_a_standby() {
    let t = Table::new("standby");
    t.run(&["create"]);
    let started = t.file("started");
    let script = format!("echo $$ >> {}; exec sleep 300", started.display());
    let mut runs: Vec<Kid> = (0..3)
        .map(|i| {
            let label = format!("cand-{i}");
            t.cmd(&["run", "--ttl", "300s", "--label", &label, "job", "--", "sh", "-c", &script])
                .stderr(Stdio::null())
                .kid()
        })
        .collect();
    let cmds = || -> Vec<u32> {
        let text = fs::read_to_string(&started).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    };
    until("one CMD to start", || !cmds().is_empty());
    let first_cmd = cmds()[0];
    runs[0].also(first_cmd);
    let leader = json(&t.run(&["leader", "job", "--json"]));
    let leading_pid = leader["pid"].as_u64().unwrap() as u32;
    let at = runs.iter().position(|r| r.id() == leading_pid).expect("a candidate leads");
    // The others wait: one CMD only.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cmds().len(), 1, "a standby ran CMD while the leader held the lease");

    kill(leading_pid, libc::SIGKILL);
    wait(&mut runs[at]);
    until("a standby's CMD to start", || cmds().len() == 2);
    runs[0].also(cmds()[1]);
    until("the killed leader's CMD to die with it", || !alive(first_cmd));
    let leader = json(&t.run(&["leader", "job", "--json"]));
    let new_pid = leader["pid"].as_u64().unwrap() as u32;
    assert!(new_pid != leading_pid && runs.iter().any(|r| r.id() == new_pid), "{leader}");
    assert!(leader["term"].as_u64() > Some(0));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cmds().len(), 2, "two standbys took over");
}

// Names with permits (`--permits N`): up to N holders at once, each with a token of its
// own; every user must give the same N.

/// Starts `run --permits N NAME` whose CMD writes `$$ $SHMLEASE_TOKEN` to a file and then
/// runs `then` (a shell command); returns the run and (CMD's pid, its token).
fn permit_run(t: &Table, name: &str, n: &str, tag: &str, then: &str) -> (Kid, u32, u64) {
    holder_run(t, name, &["--permits", n], tag, then)
}

/// [`permit_run`] with any options for `run` (`--shared`, none for an exclusive holder).
fn holder_run(t: &Table, name: &str, kind: &[&str], tag: &str, then: &str) -> (Kid, u32, u64) {
    let ready = t.file(&format!("{name}-{tag}-ready"));
    let script = format!("echo \"$$ $SHMLEASE_TOKEN\" > {}; {then}", ready.display());
    let mut args = vec!["run", "--label", tag, name];
    args.extend_from_slice(kind);
    args.extend_from_slice(&["--", "sh", "-c", &script]);
    let mut run = t.cmd(&args).stderr(Stdio::piped()).kid();
    until("CMD to start", || fs::read_to_string(&ready).is_ok_and(|s| s.ends_with('\n')));
    let line = fs::read_to_string(&ready).unwrap();
    let (pid, token) = line.trim().split_once(' ').unwrap();
    let pid = run.also(pid.parse().unwrap());
    (run, pid, token.parse().unwrap())
}

const IDLE: &str = "exec sleep 60";

#[test]
fn run_with_permits_admits_n_holders_at_once_and_the_next_waits_for_one() {
    let t = Table::new("permitrun");
    let (mut a, a_cmd, a_token) = permit_run(&t, "gpus", "2", "a", IDLE);
    let (mut b, _b_cmd, b_token) = permit_run(&t, "gpus", "2", "b", IDLE);
    assert!(b_token > a_token, "tokens grow in the order taken: {a_token}, {b_token}");

    // Both permits taken: a third is refused at once with -n, and its CMD never runs.
    let ran = t.file("third-ran");
    let third = ["run", "-n", "--permits", "2", "gpus", "--", "touch", ran.to_str().unwrap()];
    let out = t.run(&third);
    assert_one_line_error(&out, 75, "all 2 permits of lease \"gpus\" are held");
    assert!(!ran.exists(), "a third holder ran");

    // ls shows the name once, with both holders under it.
    let leases = held(&t);
    assert_eq!(leases.len(), 1, "{leases:?}");
    let l = &leases[0];
    assert_eq!((l["kind"].as_str(), l["permits"].as_u64()), (Some("permits"), Some(2)));
    assert!(l["holder"].is_null(), "{l}");
    let holders = l["holders"].as_array().unwrap();
    let shown: Vec<(u64, u64, &str)> = holders
        .iter()
        .map(|h| {
            (h["token"].as_u64().unwrap(), h["pid"].as_u64().unwrap(), h["label"].as_str().unwrap())
        })
        .collect();
    assert_eq!(shown, [(a_token, a.id().into(), "a"), (b_token, b.id().into(), "b")]);
    assert!(holders.iter().all(|h| h["remaining_ms"].as_u64().unwrap() > 0));
    let text = stdout(&t.run(&["ls"]));
    assert!(text.contains("2 of 2 permits"), "{text}");
    for token in [a_token, b_token] {
        let under = text.lines().any(|l| l.contains('─') && l.contains(&token.to_string()));
        assert!(under, "each holder on a line under the name: {text}");
    }

    // A waiting third gets in as soon as one holder ends.
    let mut waiting =
        t.cmd(&["run", "--permits", "2", "gpus", "--", "touch", ran.to_str().unwrap()]).kid();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!ran.exists() && waiting.try_wait().unwrap().is_none(), "did not wait");
    kill(a.id(), libc::SIGTERM);
    wait(&mut a);
    assert!(!alive(a_cmd));
    assert_eq!(wait(&mut waiting).code(), Some(0));
    assert!(ran.exists());
    kill(b.id(), libc::SIGTERM);
    wait(&mut b);
    assert!(held(&t).is_empty());
}

#[test]
fn acquire_with_permits_prints_a_token_per_holder_and_get_lists_them() {
    let t = Table::new("permitacq");
    let take = |label: &str| {
        t.run(&["acquire", "pool", "--ttl", "30s", "--permits", "2", "--label", label])
    };
    let tokens: Vec<u64> =
        ["x", "y"].iter().map(|l| stdout(&take(l)).trim().parse().unwrap()).collect();
    assert!(tokens[0] < tokens[1], "{tokens:?}");
    assert_one_line_error(&take("z"), 75, "all 2 permits");

    let got = json(&t.run(&["get", "pool", "--json"]));
    assert_eq!(got["kind"], "permits");
    assert_eq!(got["permits"], 2);
    assert_eq!(got["state"], "held");
    assert_eq!(got["token"].as_u64(), Some(tokens[1]), "the latest token taken");
    let listed: Vec<u64> =
        got["holders"].as_array().unwrap().iter().map(|h| h["token"].as_u64().unwrap()).collect();
    assert_eq!(listed, tokens);
    assert!(got["holders"].as_array().unwrap().iter().all(|h| h["detached"] == true));
    let text = stdout(&t.run(&["get", "pool"]));
    assert!(
        text.contains("2 of 2 permits") && text.contains("(x)") && text.contains("(y)"),
        "{text}"
    );

    // Each permit is renewed and released by its own token; the other stays.
    let (x, y) = (tokens[0].to_string(), tokens[1].to_string());
    let out = t.run(&["renew", "pool", "--token", &x, "--ttl", "60s", "--json"]);
    assert_eq!(json(&out)["token"].as_u64(), Some(tokens[0]));
    assert!(t.run(&["release", "pool", "--token", &y]).status.success());
    let got = json(&t.run(&["get", "pool", "--json"]));
    let left = got["holders"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["token"].as_u64(), Some(tokens[0]));
    assert!(left[0]["remaining_ms"].as_u64().unwrap() > 30_000, "renewed to 60s: {got}");
    assert_one_line_error(&t.run(&["release", "pool", "--token", &y]), 79, "already released");
    // Its permit is free again: taken with a newer token.
    let third: u64 = stdout(&take("z")).trim().parse().unwrap();
    assert!(third > tokens[1]);

    // An exclusive lease has its one holder in "holders" too, and JSON for a name the
    // table does not know is null.
    let excl: u64 = stdout(&t.run(&["acquire", "solo", "--ttl", "30s"])).trim().parse().unwrap();
    let got = json(&t.run(&["get", "solo", "--json"]));
    assert_eq!((got["kind"].as_str(), got["permits"].as_u64()), (Some("exclusive"), Some(1)));
    assert_eq!(got["holders"][0]["token"].as_u64(), Some(excl));
    assert_eq!(got["holder"]["pid"], got["holders"][0]["pid"]);
    let out = t.run(&["get", "never-was", "--json"]);
    assert!(json(&out).is_null());
    let out = t.run(&["get", "never-was"]);
    assert_one_line_error(&out, 0, "no lease named \"never-was\"");
}

#[test]
fn every_user_of_a_name_must_give_the_same_permits_or_exits_65_told_which() {
    let t = Table::new("wrongkind");
    assert!(t.run(&["acquire", "pool", "--ttl", "30s", "--permits", "2"]).status.success());
    let ran = t.file("ran");
    let touch = ran.to_str().unwrap();
    for args in [
        &["acquire", "pool", "--ttl", "30s"][..],
        &["acquire", "pool", "--ttl", "30s", "--permits", "3"][..],
        &["run", "pool", "--", "touch", touch][..],
        &["run", "--permits", "3", "pool", "--", "touch", touch][..],
    ] {
        let out = t.run(args);
        assert_one_line_error(&out, 65, "in use with --permits 2");
        assert!(stderr(&out).contains("same --permits"), "{args:?}: {}", stderr(&out));
        assert!(!ran.exists(), "{args:?}: CMD ran");
    }
    // Still recorded once nobody holds a permit.
    assert!(t.run(&["revoke", "pool"]).status.success());
    assert_one_line_error(&t.run(&["acquire", "pool", "--ttl", "1s"]), 65, "--permits 2");

    // A held exclusive lease does not become a name with permits.
    assert!(t.run(&["acquire", "solo", "--ttl", "30s"]).status.success());
    let out = t.run(&["acquire", "solo", "--ttl", "30s", "--permits", "2"]);
    assert_one_line_error(&out, 65, "held as an exclusive lease");
    // An election has one leader: a name with permits is not one.
    assert_one_line_error(&t.run(&["leader", "pool"]), 65, "none of them leads");
    // Out of range is a usage error.
    for n in ["0", "256"] {
        let out = t.run(&["acquire", "x", "--ttl", "1s", "--permits", n]);
        assert_one_line_error(&out, 64, "--permits");
    }
    let help = stdout(&t.run(&["acquire", "--help"]));
    assert!(help.contains("--permits") && help.contains("exit 65"), "{help}");
    assert!(stdout(&t.run(&["--help"])).contains("65 "));
}

#[test]
fn revoke_takes_every_permit_or_one_by_token_and_request_release_asks_each_holder() {
    let t = Table::new("permitrevoke");
    let holders: Vec<(Kid, u32, u64)> =
        ["a", "b", "c"].iter().map(|tag| permit_run(&t, "pool", "3", tag, IDLE)).collect();
    let [(mut a, _, a_tok), (mut b, _, b_tok), (mut c, _, c_tok)]: [_; 3] =
        holders.try_into().ok().unwrap();

    // One by token: only its run loses the lease.
    let out = t.run(&["revoke", "pool", "--token", &b_tok.to_string()]);
    assert_eq!(stdout(&out).trim(), b_tok.to_string(), "{}", stderr(&out));
    assert_eq!(wait(&mut b).code(), Some(79));
    assert!(a.try_wait().unwrap().is_none() && c.try_wait().unwrap().is_none());
    let out = t.run(&["revoke", "pool", "--token", &b_tok.to_string()]);
    assert_one_line_error(&out, 79, "nothing revoked");
    let err = stderr(&out);
    assert!(err.contains(&a_tok.to_string()) && err.contains(&c_tok.to_string()), "{err}");

    // All of them: each revoked token printed.
    let out = json(&t.run(&["revoke", "pool", "--json"]));
    assert_eq!(out["revoked"], true);
    let tokens: Vec<u64> =
        out["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(tokens, [a_tok, c_tok]);
    assert_eq!(out["token"].as_u64(), Some(c_tok));
    assert_eq!(wait(&mut a).code(), Some(79));
    assert_eq!(wait(&mut c).code(), Some(79));
    assert!(held(&t).is_empty());

    // request-release asks every holder: each CMD gets SIGTERM and exits, each run
    // releases its permit.
    let trap = "trap 'exit 0' TERM; while :; do sleep 0.05; done";
    let (mut d, _, d_tok) = permit_run(&t, "pool", "3", "d", trap);
    let (mut e, _, e_tok) = permit_run(&t, "pool", "3", "e", trap);
    let out = t.run(&["request-release", "pool"]);
    assert_eq!(stdout(&out), format!("{d_tok}\n{e_tok}\n"), "{}", stderr(&out));
    assert_eq!(wait(&mut d).code(), Some(0));
    assert_eq!(wait(&mut e).code(), Some(0));
    assert!(held(&t).is_empty());

    // revoke --grace: the holder that hands over releases, the one that ignores the
    // request is revoked once the grace is over.
    let (mut f, _, f_tok) = permit_run(&t, "pool", "3", "f", trap);
    let (mut g, _, g_tok) = permit_run(&t, "pool", "3", "g", "trap '' TERM; exec sleep 60");
    let out = json(&t.run(&["revoke", "pool", "--grace", "500ms", "--json"]));
    let outcomes: Vec<(u64, &str, bool)> = out["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (h["token"].as_u64().unwrap(), h["outcome"].as_str().unwrap(), h["revoked"] == true)
        })
        .collect();
    assert_eq!(outcomes, [(f_tok, "released", false), (g_tok, "revoked", true)], "{out}");
    assert_eq!(wait(&mut f).code(), Some(0));
    assert_eq!(wait(&mut g).code(), Some(79));
}

#[test]
fn rm_names_each_holder_of_a_name_with_permits() {
    let t = Table::new("permitrm");
    let tokens: Vec<String> = (0..2)
        .map(|_| stdout(&t.run(&["acquire", "pool", "--ttl", "30s", "--permits", "2"])))
        .map(|s| s.trim().to_owned())
        .collect();
    let out = t.run(&["rm"]);
    assert_one_line_error(&out, 76, "\"pool\" (2 of 2 permits");
    assert!(tokens.iter().all(|tok| stderr(&out).contains(tok.as_str())), "{}", stderr(&out));
}

// Shared names (`--shared`): up to 64 shared holders at once, or one exclusive holder
// (the same command without --shared), never both.

/// `ls --json`'s holders of `name`: (token, shared) of each, oldest first.
fn holders_of(t: &Table, name: &str) -> Vec<(u64, bool)> {
    let got = json(&t.run(&["get", name, "--json"]));
    let holders = got["holders"].as_array().cloned().unwrap_or_default();
    holders.iter().map(|h| (h["token"].as_u64().unwrap(), h["shared"] == true)).collect()
}

#[test]
fn shared_runs_hold_a_name_at_once_and_a_plain_run_waits_for_all_of_them() {
    let t = Table::new("sharedrun");
    let (mut a, a_cmd, a_token) = holder_run(&t, "cat", &["--shared"], "a", IDLE);
    let (mut b, _b_cmd, b_token) = holder_run(&t, "cat", &["--shared"], "b", IDLE);
    assert!(b_token > a_token, "tokens grow in the order taken: {a_token}, {b_token}");

    // One name, two shared holders, each on a line of its own.
    let leases = held(&t);
    assert_eq!(leases.len(), 1, "{leases:?}");
    let l = &leases[0];
    assert_eq!((l["kind"].as_str(), l["permits"].as_u64()), (Some("shared"), Some(64)));
    assert!(l["holder"].is_null(), "no exclusive holder: {l}");
    let shown: Vec<(u64, u64, bool)> = l["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["token"].as_u64().unwrap(), h["pid"].as_u64().unwrap(), h["shared"] == true))
        .collect();
    assert_eq!(shown, [(a_token, a.id().into(), true), (b_token, b.id().into(), true)]);
    let text = stdout(&t.run(&["ls"]));
    assert!(text.contains("2 shared holders"), "{text}");
    for token in [a_token, b_token] {
        let line = text.lines().find(|l| l.contains(&token.to_string()) && l.contains('─'));
        assert!(line.is_some_and(|l| l.contains("shared")), "a shared line per holder: {text}");
    }

    // A plain run is the exclusive holder: it waits for both, and keeps new shared
    // holders out meanwhile.
    let wrote = t.file("writer-token");
    let script = format!("echo $SHMLEASE_TOKEN > {}", wrote.display());
    let mut writer = t.cmd(&["run", "--label", "w", "cat", "--", "sh", "-c", &script]).kid();
    until("the writer to wait for the shared holders", || {
        holders_of(&t, "cat").iter().any(|&(_, shared)| !shared)
    });
    let text = stdout(&t.run(&["ls"]));
    assert!(text.contains("2 shared, exclusive waiting"), "{text}");
    assert!(text.lines().any(|l| l.contains("└─ exclusive")), "{text}");
    let ran = t.file("late-reader-ran");
    let late = ["run", "-n", "--shared", "cat", "--", "touch", ran.to_str().unwrap()];
    assert_one_line_error(&t.run(&late), 75, "held exclusively");
    assert!(!ran.exists(), "a shared holder got in while the writer waited");

    // One shared holder leaving is not enough.
    kill(a.id(), libc::SIGTERM);
    wait(&mut a);
    assert!(!alive(a_cmd));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!wrote.exists() && writer.try_wait().unwrap().is_none(), "ran beside a reader");
    kill(b.id(), libc::SIGTERM);
    wait(&mut b);
    assert_eq!(wait(&mut writer).code(), Some(0));
    let w_token: u64 = fs::read_to_string(&wrote).unwrap().trim().parse().unwrap();
    assert!(w_token > b_token, "tokens grow across both kinds: {b_token}, {w_token}");
    assert!(held(&t).is_empty());
}

#[test]
fn acquire_shared_tokens_show_in_get_and_revoke_takes_every_holder_or_one() {
    let t = Table::new("sharedacq");
    let take = |label: &str| {
        let out = t.run(&["acquire", "cat", "--ttl", "30s", "--shared", "--label", label]);
        stdout(&out).trim().parse::<u64>().unwrap_or_else(|_| panic!("{}", stderr(&out)))
    };
    let (x, y) = (take("x"), take("y"));
    assert!(x < y);
    let got = json(&t.run(&["get", "cat", "--json"]));
    assert_eq!((got["kind"].as_str(), got["permits"].as_u64()), (Some("shared"), Some(64)));
    assert_eq!(got["token"].as_u64(), Some(y), "the latest token taken");
    assert!(got["holder"].is_null() && got["acquired_at"].is_null(), "{got}");
    assert_eq!(got["expires_at"], got["holders"][1]["expires_at"], "the longest-lasting");
    assert_eq!(holders_of(&t, "cat"), [(x, true), (y, true)]);
    let text = stdout(&t.run(&["get", "cat"]));
    assert!(text.contains("2 shared holders") && text.contains("(x)"), "{text}");

    // An exclusive acquisition is refused while they hold it, saying so.
    let out = t.run(&["acquire", "cat", "--ttl", "30s"]);
    assert_one_line_error(&out, 75, "has 2 shared holders");
    let out = t.run(&["acquire", "cat", "--ttl", "30s", "--wait", "200ms"]);
    assert_one_line_error(&out, 75, "gave up after waiting 200ms");

    // One by token, then the rest; each by-token renew and release finds its grant.
    let out = t.run(&["revoke", "cat", "--token", &x.to_string()]);
    assert_eq!(stdout(&out).trim(), x.to_string(), "{}", stderr(&out));
    assert_eq!(holders_of(&t, "cat"), [(y, true)]);
    let out = t.run(&["renew", "cat", "--token", &x.to_string(), "--ttl", "30s"]);
    assert_one_line_error(&out, 79, "revoked");
    assert!(t.run(&["renew", "cat", "--token", &y.to_string(), "--ttl", "60s"]).status.success());
    let z = take("z");
    let out = json(&t.run(&["revoke", "cat", "--json"]));
    let tokens: Vec<u64> =
        out["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(tokens, [y, z]);
    assert!(held(&t).is_empty());

    // The exclusive holder: the one holder, not shared; the name stays shared, and a
    // shared acquisition is refused while it holds it.
    let w: u64 =
        stdout(&t.run(&["acquire", "cat", "--ttl", "30s", "--label", "w"])).trim().parse().unwrap();
    assert!(w > z);
    let got = json(&t.run(&["get", "cat", "--json"]));
    assert_eq!(got["kind"], "shared");
    assert_eq!(got["holder"]["label"], "w", "the exclusive holder: {got}");
    assert_eq!(got["acquired_at"], got["holders"][0]["acquired_at"]);
    assert_eq!(holders_of(&t, "cat"), [(w, false)]);
    let text = stdout(&t.run(&["get", "cat"]));
    assert!(text.contains("exclusive holder") && text.contains("└─ exclusive"), "{text}");
    let out = t.run(&["acquire", "cat", "--ttl", "30s", "--shared"]);
    assert_one_line_error(&out, 75, "held exclusively");
    assert!(t.run(&["release", "cat", "--token", &w.to_string()]).status.success());
    assert!(take("v") > w);

    // rm names each holder.
    let out = t.run(&["rm"]);
    assert_one_line_error(&out, 76, "\"cat\" (1 shared holder: token");
}

#[test]
fn request_release_and_revoke_grace_reach_every_holder_of_a_shared_name() {
    let t = Table::new("sharedgrace");
    let trap = "trap 'exit 0' TERM; while :; do sleep 0.05; done";
    let (mut a, _, a_tok) = holder_run(&t, "cat", &["--shared"], "a", trap);
    let (mut b, _, b_tok) = holder_run(&t, "cat", &["--shared"], "b", trap);
    let out = t.run(&["request-release", "cat"]);
    assert_eq!(stdout(&out), format!("{a_tok}\n{b_tok}\n"), "{}", stderr(&out));
    assert_eq!(wait(&mut a).code(), Some(0));
    assert_eq!(wait(&mut b).code(), Some(0));
    assert!(held(&t).is_empty());

    // The one that hands over releases; the one that ignores the request is revoked.
    let (mut c, _, c_tok) = holder_run(&t, "cat", &["--shared"], "c", trap);
    let (mut d, _, d_tok) =
        holder_run(&t, "cat", &["--shared"], "d", "trap '' TERM; exec sleep 60");
    let out = json(&t.run(&["revoke", "cat", "--grace", "500ms", "--json"]));
    let outcomes: Vec<(u64, &str, bool)> = out["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (h["token"].as_u64().unwrap(), h["outcome"].as_str().unwrap(), h["revoked"] == true)
        })
        .collect();
    assert_eq!(outcomes, [(c_tok, "released", false), (d_tok, "revoked", true)], "{out}");
    assert_eq!(wait(&mut c).code(), Some(0));
    assert_eq!(wait(&mut d).code(), Some(79));

    // The exclusive holder of a shared name is asked like any other holder.
    let (mut e, _, e_tok) = holder_run(&t, "cat", &[], "e", trap);
    assert_eq!(holders_of(&t, "cat"), [(e_tok, false)]);
    let out = t.run(&["request-release", "cat", "--token", &e_tok.to_string()]);
    assert_eq!(stdout(&out).trim(), e_tok.to_string(), "{}", stderr(&out));
    assert_eq!(wait(&mut e).code(), Some(0));
    assert!(held(&t).is_empty());
}

#[test]
fn shared_is_refused_on_a_name_with_permits_and_with_permits_of_its_own() {
    let t = Table::new("sharedkind");
    assert!(t.run(&["acquire", "pool", "--ttl", "30s", "--permits", "2"]).status.success());
    let ran = t.file("ran");
    let touch = ran.to_str().unwrap();
    for args in [
        &["acquire", "pool", "--ttl", "30s", "--shared"][..],
        &["run", "--shared", "pool", "--", "touch", touch][..],
    ] {
        let out = t.run(args);
        assert_one_line_error(&out, 65, "in use with --permits 2");
        assert!(stderr(&out).contains("asked for a shared grant"), "{}", stderr(&out));
        assert!(!ran.exists(), "{args:?}: CMD ran");
    }
    // A shared name has no permits, and is no election.
    assert!(t.run(&["acquire", "cat", "--ttl", "30s", "--shared"]).status.success());
    let out = t.run(&["acquire", "cat", "--ttl", "30s", "--permits", "3"]);
    assert_one_line_error(&out, 65, "is a shared name");
    assert_one_line_error(&t.run(&["leader", "cat"]), 65, "is a shared name");
    // Both at once is a usage error, before anything is taken.
    for args in [
        &["acquire", "new", "--ttl", "30s", "--shared", "--permits", "2"][..],
        &["run", "--shared", "--permits", "2", "new", "--", "touch", touch][..],
    ] {
        assert_one_line_error(&t.run(args), 64, "--shared and --permits 2 exclude each other");
        assert!(!ran.exists(), "{args:?}: CMD ran");
    }
    assert!(json(&t.run(&["get", "new", "--json"])).is_null(), "a usage error took nothing");
    let help = stdout(&t.run(&["acquire", "--help"]));
    assert!(help.contains("--shared") && help.contains("64 shared holders"), "{help}");
    assert!(stdout(&t.run(&["run", "--help"])).contains("Shared leases"));
}

// Fair acquisition (--fair): waiters served in the order they took their place in line.

/// The queue of `name` as `get --json` shows it: (ticket, pid) of each place, in order.
fn queue_of(t: &Table, name: &str) -> Vec<(u64, u64)> {
    let got = json(&t.run(&["get", name, "--json"]));
    let queue = got["queue"].as_array().cloned().unwrap_or_default();
    queue.iter().map(|q| (q["ticket"].as_u64().unwrap(), q["pid"].as_u64().unwrap())).collect()
}

/// Starts `run NAME --fair ARGS... -- sh -c 'echo TAG >> ORDER'`, its stderr in a file;
/// returns once `get --json` shows it in NAME's queue, behind the `before` waiters.
fn fair_waiter(t: &Table, name: &str, args: &[&str], tag: &str, before: usize) -> (Kid, PathBuf) {
    let order = t.file("order");
    let err = t.file(&format!("{tag}.err"));
    let script = format!("echo {tag} >> {}", order.display());
    let mut all = vec!["run", name, "--fair", "--label", tag];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", &script]);
    let kid = t.cmd(&all).stderr(fs::File::create(&err).unwrap()).kid();
    let pid = u64::from(kid.id());
    until("the waiter to take its place in line", || {
        let q = queue_of(t, name);
        q.len() == before + 1 && q.last().is_some_and(|&(_, p)| p == pid)
    });
    (kid, err)
}

#[test]
fn fair_runs_are_served_in_the_order_they_queued_and_keep_their_place_past_the_note() {
    let t = Table::new("fairorder");
    let token = stdout(&t.run(&["acquire", "q", "--ttl", "60s"])).trim().to_string();
    let (mut a, a_err) = fair_waiter(&t, "q", &[], "a", 0);
    let (mut b, b_err) = fair_waiter(&t, "q", &[], "b", 1);
    let (mut c, c_err) = fair_waiter(&t, "q", &["--wait", "50s"], "c", 2);
    let queued = queue_of(&t, "q");
    let pids: Vec<u64> = [&a, &b, &c].iter().map(|k| u64::from(k.id())).collect();
    assert_eq!(queued.iter().map(|&(_, p)| p).collect::<Vec<_>>(), pids);
    assert!(queued.windows(2).all(|w| w[0].0 < w[1].0), "tickets in line order: {queued:?}");

    // After a second each says where it waits, and still has its place (the same
    // ticket): printing the note does not send it to the back of the line.
    for err in [&a_err, &b_err, &c_err] {
        until("the waiting note", || fs::read_to_string(err).unwrap().contains("waiting"));
    }
    assert_eq!(queue_of(&t, "q"), queued, "a waiter lost its place");
    for (err, place) in [(&a_err, "1st of 3"), (&b_err, "2nd of 3"), (&c_err, "3rd of 3")] {
        let note = fs::read_to_string(err).unwrap();
        assert!(note.contains(&format!("{place} in line")), "{note}");
        assert!(note.contains("held by pid") && note.contains(&token), "{note}");
    }
    assert!(fs::read_to_string(&c_err).unwrap().contains("waiting up to"));
    let text = stdout(&t.run(&["get", "q"]));
    let line = text.lines().find(|l| l.trim_start().starts_with("queue:"));
    let expected = format!(
        "queue: pid {} (ticket {}), pid {} (ticket {}), pid {} (ticket {})",
        pids[0], queued[0].0, pids[1], queued[1].0, pids[2], queued[2].0
    );
    assert_eq!(line.map(str::trim), Some(expected.as_str()), "{text}");

    // The holder lets go: they run one after another, in line order.
    assert!(t.run(&["release", "q", "--token", &token]).status.success());
    for kid in [&mut a, &mut b, &mut c] {
        assert_eq!(wait(kid).code(), Some(0));
    }
    assert_eq!(fs::read_to_string(t.file("order")).unwrap(), "a\nb\nc\n");
    assert!(queue_of(&t, "q").is_empty());
}

#[test]
fn a_fair_acquisition_that_does_not_wait_is_refused_while_anyone_waits_in_line() {
    let t = Table::new("fairnowait");
    // Fair with permits: both taken, a fair run waits in line for one.
    let pool = ["--permits", "2"];
    let tokens: Vec<String> = (0..2)
        .map(|_| {
            let out = t.run(&["acquire", "pool", "--ttl", "60s", "--permits", "2", "--fair"]);
            stdout(&out).trim().to_string()
        })
        .collect();
    let (mut w, _) = fair_waiter(&t, "pool", &pool, "w", 0);

    // The queue in JSON: one place, its waiter's fields, no label (places record none).
    let got = json(&t.run(&["get", "pool", "--json"]));
    let queue = got["queue"].as_array().unwrap();
    assert_eq!(queue.len(), 1, "{got}");
    let place = queue[0].as_object().unwrap();
    let mut keys: Vec<&str> = place.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["expires_at", "identity", "pid", "pid_namespace", "slot", "ticket"]);
    assert_eq!(place["pid"].as_u64(), Some(u64::from(w.id())));
    assert!(place["ticket"].as_u64().unwrap() > 0);
    assert!(place["identity"]["kind"].is_string());
    assert!(place["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got["holders"].as_array().unwrap().len(), 2, "a place is not a holder: {got}");
    let ls = held(&t);
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0]["queue"].as_array().map(Vec::len), Some(1), "ls --json has the queue");

    // A fair acquisition that does not wait may not pass it.
    let ran = t.file("ran");
    let touch = ran.to_str().unwrap();
    for args in [
        &["acquire", "pool", "--ttl", "1s", "--permits", "2", "--fair"][..],
        &["run", "-n", "--fair", "--permits", "2", "pool", "--", "touch", touch][..],
    ] {
        let out = t.run(args);
        assert_one_line_error(&out, 75, "1 fair acquirer in line");
        let err = stderr(&out);
        assert!(err.contains(&format!("first pid {}", w.id())), "{err}");
        assert!(err.contains("does not pass those in line"), "{err}");
    }
    assert!(!ran.exists());
    // Waiting in line, and giving up, leaves the line as it was.
    let wait_in_line = ["acquire", "pool", "--ttl", "1s", "--permits", "2", "--fair", "--wait"];
    let out = t.run(&[&wait_in_line[..], &["100ms"]].concat());
    assert_one_line_error(&out, 75, "gave up after waiting");
    assert!(stderr(&out).contains("in line (and left it)"), "{}", stderr(&out));
    let pids: Vec<u64> = queue_of(&t, "pool").iter().map(|&(_, p)| p).collect();
    assert_eq!(pids, [u64::from(w.id())]);

    // A permit ends: the waiter gets it, and leaves the line.
    assert!(t.run(&["release", "pool", "--token", &tokens[0]]).status.success());
    assert_eq!(wait(&mut w).code(), Some(0));
    assert!(queue_of(&t, "pool").is_empty());
    assert!(t.run(&["release", "pool", "--token", &tokens[1]]).status.success());

    // Permits are 1 to 128 (seats above are the queue's places).
    assert!(t.run(&["acquire", "big", "--ttl", "1s", "--permits", "128"]).status.success());
    let out = t.run(&["acquire", "big2", "--ttl", "1s", "--permits", "129"]);
    assert_one_line_error(&out, 64, "1..=128");
    let help = stdout(&t.run(&["run", "--help"]));
    for says in ["Fair acquisition", "2s", "50ms", "127", "--fair", "1 to 128"] {
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let says_flat = says.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&says_flat), "run --help lacks {says:?}: {help}");
    }
}
