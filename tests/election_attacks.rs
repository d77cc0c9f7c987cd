//! Adversarial process patterns against leader election (issue 11): identity by start
//! time, a leader in another PID namespace, leaks across many timed-out campaigns, fork
//! with inherited leadership and observers, a panicking runner closure, hand-over
//! requests racing resignation, and the CLI observer piped into `head -1`.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Kid, Rng, Scratch, SharedWords, Watchdog};
use shmlease::{Error, LeaseTable, TableOptions};

/// Entry point of every child process (see `common::run_child`).
#[test]
#[ignore = "child process entry point; run by the other tests"]
fn child_main() {
    if std::env::var(common::ROLE).as_deref() == Ok("adv_eintr") {
        std::process::exit(role_eintr());
    }
    if std::env::var(common::ROLE).as_deref() == Ok("adv_runner") {
        std::process::exit(role_runner());
    }
    common::run_child();
}

/// A runner (TTL 600 ms, stop margin 150 ms) whose closure waits to be told to stop:
/// reports `LEADING term`, then `REASON reason still_leader` when told, and
/// `STOPPED reason resigned` from on_stopped; exits.
fn role_runner() -> i32 {
    let table = LeaseTable::open(std::env::var("SHMLEASE_IT_TABLE").unwrap()).unwrap();
    let e = table.election("ctl").unwrap().ttl(Duration::from_millis(600)).unwrap();
    let runner = e
        .runner()
        .stop_margin(Duration::from_millis(150))
        .unwrap()
        .on_stopped(|st| println!("{}STOPPED {:?} {}", common::MARK, st.reason, st.resigned));
    let r = runner.run(|leading| {
        println!("{}LEADING {}", common::MARK, leading.term());
        let reason = leading.wait_stop(None);
        println!("{}REASON {:?} {}", common::MARK, reason, leading.is_leader());
    });
    println!("{}DONE {}", common::MARK, r.is_ok());
    0
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Like a C program with a SIGALRM handler installed without SA_RESTART and an interval
/// timer firing every millisecond: every blocking call is interrupted (EINTR) again and
/// again. Each must still wait its full time and report what it should.
fn role_eintr() -> i32 {
    // SAFETY: sigaction/setitimer with valid, zeroed-then-filled structures.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0; // no SA_RESTART
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let tick = libc::timeval { tv_sec: 0, tv_usec: 1000 };
        let it = libc::itimerval { it_interval: tick, it_value: tick };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
    let table = LeaseTable::open(std::env::var("SHMLEASE_IT_TABLE").unwrap()).unwrap();
    let e = table.election("ctl").unwrap();
    let wait = Duration::from_millis(300);
    let start = Instant::now();
    match e.campaign(Some(wait)) {
        Err(Error::TimedOut { .. }) if start.elapsed() >= wait => {}
        other => {
            eprintln!("campaign under EINTR: {other:?} after {:?}", start.elapsed());
            return 31;
        }
    }
    let start = Instant::now();
    match e.runner().campaign_timeout(Some(wait)).run(|_| ()) {
        Err(Error::TimedOut { .. }) if start.elapsed() >= wait => {}
        other => {
            eprintln!("runner under EINTR: {other:?} after {:?}", start.elapsed());
            return 32;
        }
    }
    let mut obs = e.observe();
    if !matches!(obs.next_change(None), Ok(Some(_))) {
        return 33;
    }
    let start = Instant::now();
    match obs.next_change(Some(wait)) {
        Ok(None) if start.elapsed() >= wait => {}
        other => {
            eprintln!("observer under EINTR: {other:?} after {:?}", start.elapsed());
            return 34;
        }
    }
    let own = table.election("own").unwrap().ttl(Duration::from_millis(300)).unwrap();
    let l = own.try_campaign().unwrap();
    let start = Instant::now();
    if l.wait_notice(Some(Duration::from_millis(1000))).is_some()
        || start.elapsed() < Duration::from_millis(1000)
    {
        eprintln!("wait_notice under EINTR ended early");
        return 35;
    }
    if !l.is_leader() {
        eprintln!("the keep-alive under EINTR let the lease lapse");
        return 36;
    }
    l.resign().unwrap();
    println!("{}OK 0", common::MARK);
    0
}

const LONG: Duration = Duration::from_secs(60);

/// Tests counting this process's threads and fds run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn table(dir: &Scratch) -> (LeaseTable, std::path::PathBuf) {
    let path = dir.path("table");
    (LeaseTable::create(&path, &TableOptions::new().capacity(16)).unwrap(), path)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits (bounded by LONG) until `f() <= limit`; returns the last value.
fn settle(limit: usize, f: fn() -> usize) -> usize {
    let end = Instant::now() + LONG;
    loop {
        let n = f();
        if n <= limit || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A leader identified by start time (`SHMLEASE_IDENTITY=start-time`) killed with
/// SIGKILL is still replaced long before its 600 s TTL: by the death watch or by the
/// 50 ms re-check.
#[test]
fn start_time_leader_killed_is_replaced_before_its_ttl() {
    let _serial = serial();
    let wd = Watchdog::new("start_time_leader_killed_is_replaced_before_its_ttl", LONG * 2);
    let dir = Scratch::new("adv-st-kill");
    let (t, path) = table(&dir);
    let env = [
        ("TABLE", s(path.display())),
        ("NAME", s("ctl")),
        ("TTL_MS", s(600_000)),
        ("IDENTITY", s("start-time")),
    ];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
    let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
    let e = t.election("ctl").unwrap();
    std::thread::scope(|scope| {
        let standby = scope.spawn(|| e.campaign(Some(LONG)));
        common::wait_for_waiter(&t, &path, "ctl", LONG);
        leader.signal(libc::SIGKILL);
        leader.wait(LONG);
        let l = standby.join().unwrap().expect("elected well before the 600 s TTL");
        assert!(l.term() > term);
    });
}

/// An observer identified by start time sees the death of a leader (identified by
/// pidfd) at once, as "nobody leads" with the same term and no skipped terms.
#[test]
fn start_time_observer_sees_the_leaders_death() {
    let _serial = serial();
    let wd = Watchdog::new("start_time_observer_sees_the_leaders_death", LONG * 2);
    let dir = Scratch::new("adv-st-obs");
    let (_t, path) = table(&dir);
    let base = [("TABLE", s(path.display())), ("NAME", s("ctl")), ("TTL_MS", s(600_000))];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &base);
    let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
    let mut env = base.to_vec();
    env.push(("IDENTITY", s("start-time")));
    env.push(("RUN_MS", s(120_000)));
    let mut obs = Kid::spawn(&wd, "observer", "observer", &env);
    assert_eq!(obs.expect("CHANGE", LONG), format!("{term} 1 0"));
    leader.signal(libc::SIGKILL);
    leader.wait(LONG);
    assert_eq!(obs.expect("CHANGE", LONG), format!("{term} 0 0"));
    obs.signal(libc::SIGKILL);
    obs.wait(LONG);
}

/// A leader in another PID namespace is unknown, not dead: nobody takes over before
/// its TTL, `leader()` names it, an observer reports it leading. Once it is gone, the
/// standby is elected at its TTL.
#[test]
fn leader_in_another_pid_namespace_is_not_taken_as_dead() {
    let _serial = serial();
    // SAFETY: a libc call taking plain integers (or null), on our own process or children.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for unshare -p");
        return;
    }
    let dir = Scratch::new("adv-pidns");
    let (t, path) = table(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("unshare");
    // sh stays PID 1 of the namespace and the leader is PID 2 there: in ours, PID 2 is
    // kthreadd, alive; what matters is that the pid is not probed in our namespace.
    cmd.args(["-p", "-f", "--mount-proc", "sh", "-c", "\"$0\" \"$@\"; :"])
        .arg(&exe)
        .args(["child_main", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(common::ROLE, "leader")
        .env("SHMLEASE_IT_TABLE", &path)
        .env("SHMLEASE_IT_NAME", "ctl")
        .env("SHMLEASE_IT_TTL_MS", "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let Ok(mut child) = cmd.spawn() else {
        eprintln!("skipped: unshare unavailable");
        return;
    };
    let pgid = child.id() as i32;
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            // SAFETY: a libc call taking plain integers (or null), on our own process or children.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
    let reap = Reap(pgid);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let term: u64 = loop {
        let line = lines.next().expect("the namespaced leader reports its term").unwrap();
        if let Some(v) = line.strip_prefix(&format!("{}TERM ", common::MARK)) {
            break v.trim().parse().unwrap();
        }
    };
    let e = t.election("ctl").unwrap();
    let info = t.get("ctl").unwrap().unwrap();
    assert_eq!(info.token, term);
    // Several TTLs' worth of renewals: a standby that took it for dead would win.
    for _ in 0..3 {
        match e.campaign(Some(Duration::from_millis(800))) {
            Err(Error::TimedOut { .. }) => {}
            other => panic!("a standby took over from a live namespaced leader: {other:?}"),
        }
        let leader = e.leader().unwrap().expect("the namespaced leader leads");
        assert_eq!(leader.term, term);
    }
    let mut obs = e.observe();
    let first = obs.next_change(None).unwrap().unwrap();
    assert_eq!((first.term, first.leader.is_some()), (term, true));
    assert_eq!(obs.next_change(Some(Duration::from_millis(500))).unwrap(), None);
    drop(reap);
    let _ = child.wait();
    let l = e.campaign(Some(LONG)).expect("elected at the namespaced leader's TTL");
    assert!(l.term() > term);
}

/// 1000 campaigns that time out against a live leader in another process leave no
/// thread and no fd behind (each armed a death watch).
#[test]
fn timed_out_campaigns_leak_no_thread_or_fd() {
    let _serial = serial();
    let wd = Watchdog::new("timed_out_campaigns_leak_no_thread_or_fd", LONG * 4);
    let dir = Scratch::new("adv-leak");
    let (t, path) = table(&dir);
    let env = [("TABLE", s(path.display())), ("NAME", s("ctl")), ("TTL_MS", s(600_000))];
    let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
    leader.expect("TERM", LONG);
    let e = t.election("ctl").unwrap();
    // Warm up (lazy statics, the liveness cache).
    let _ = e.campaign(Some(Duration::from_millis(2)));
    let (th0, fd0) = (threads(), fds());
    for _ in 0..1000 {
        match e.campaign(Some(Duration::from_millis(1))) {
            Err(Error::TimedOut { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for _ in 0..300 {
        let r = e.runner().campaign_timeout(Some(Duration::from_millis(1))).on_new_leader(|_| {});
        assert!(matches!(r.run(|_| ()), Err(Error::TimedOut { .. })));
    }
    let mut obs = e.observe();
    for _ in 0..300 {
        let _ = obs.next_change(Some(Duration::from_millis(1))).unwrap();
    }
    drop(obs);
    assert!(settle(th0, threads) <= th0, "threads left behind by timed-out campaigns");
    assert!(settle(fd0, fds) <= fd0, "fds left behind by timed-out campaigns");
    leader.signal(libc::SIGKILL);
    leader.wait(LONG);
}

/// 300 campaign/resign cycles (each starts a keep-alive thread, not joined) leave no
/// thread or fd behind.
#[test]
fn campaign_resign_cycles_leak_no_thread_or_fd() {
    let _serial = serial();
    let dir = Scratch::new("adv-cycles");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(3)).unwrap();
    e.try_campaign().unwrap().resign().unwrap();
    let (th0, fd0) = (threads(), fds());
    for _ in 0..300 {
        let l = e.try_campaign().unwrap();
        assert!(l.is_leader());
        l.resign().unwrap();
    }
    for _ in 0..100 {
        e.runner().run(|_| ()).unwrap().unwrap();
    }
    assert!(settle(th0, threads) <= th0, "keep-alive threads left behind");
    assert!(settle(fd0, fds) <= fd0, "fds left behind");
}

/// A child forked while the parent leads inherits the Leadership: it may read it, it
/// cannot resign it, and dropping it (or exiting) changes nothing: the parent keeps
/// leading and renewing past several TTLs. A child's inherited observer works on its
/// own.
#[test]
fn forked_child_with_inherited_leadership_and_observer() {
    let _serial = serial();
    let dir = Scratch::new("adv-fork");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_millis(300)).unwrap();
    let l = e.try_campaign().unwrap();
    let term = l.term();
    let mut obs = e.observe();
    assert!(obs.next_change(None).unwrap().unwrap().leader.is_some());
    // SAFETY: the child uses the library (documented as allowed after fork) and leaves
    // with _exit; the exit code tells the parent what it saw.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = (|| {
            if !l.is_leader() || l.term() != term {
                return 10;
            }
            if l.lost().is_some() || l.wait_notice(Some(Duration::from_millis(10))).is_some() {
                return 11;
            }
            // SAFETY: a bitwise copy that is consumed once (refused) and never dropped twice:
            // the child leaves with _exit.
            let l2 = unsafe { std::ptr::read(&l) };
            match l2.resign() {
                Err(Error::BoundToProcess { .. }) => {}
                _ => return 12,
            }
            // The inherited observer: no change while the parent leads.
            match obs.next_change(Some(Duration::from_millis(400))) {
                Ok(None) => {}
                _ => return 13,
            }
            if e.try_campaign().is_ok() {
                return 14;
            }
            0
        })();
        // SAFETY: a libc call taking plain integers (or null), on our own process or children.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: a libc call taking plain integers (or null), on our own process or children.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "the child crashed: status {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "the forked child saw something wrong");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(l.is_leader(), "the parent lost leadership after its child exited");
    assert_eq!(l.lost(), None);
    assert_eq!(obs.next_change(Some(Duration::from_millis(10))).unwrap(), None);
    drop(obs);
    l.resign().unwrap();
}

/// A runner's closure that panics: the panic propagates, leadership is released at
/// once (another candidate is elected), `on_stopped` is not called, and the stopper
/// stays harmless afterwards (it asks nobody else to release).
#[test]
fn runner_closure_panic_releases_and_skips_on_stopped() {
    let _serial = serial();
    let dir = Scratch::new("adv-panic");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let stopped = AtomicBool::new(false);
    let runner = e.runner().on_stopped(|_| stopped.store(true, Ordering::SeqCst));
    let stopper = runner.stopper();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runner.run(|_| -> () { panic!("closure fails") })
    }));
    std::panic::set_hook(hook);
    assert!(r.is_err(), "the panic propagates");
    assert!(!stopped.load(Ordering::SeqCst), "on_stopped after a panic");
    let next = e.try_campaign().expect("the panicking leader released");
    stopper.stop();
    assert!(!next.release_requested(), "a dead runner's stopper asked the next leader");
    next.resign().unwrap();
}

/// Hand-over requests hammered while the leader resigns and campaigns again: a request
/// never changes who holds the lease or until when, and never reaches a later term.
#[test]
fn request_release_racing_resign_never_changes_the_holder() {
    let _serial = serial();
    let dir = Scratch::new("adv-reqrace");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let _ = t.request_release("ctl", None);
            }
        });
        for _ in 0..2000 {
            let l = e.try_campaign().unwrap();
            let term = l.term();
            let before = t.get("ctl").unwrap().unwrap();
            std::thread::yield_now();
            let after = t.get("ctl").unwrap().unwrap();
            assert_eq!(after.token, term);
            assert!(l.is_leader(), "a request for release ended the lease");
            assert_eq!(after.holder.map(|h| h.pid), before.holder.map(|h| h.pid));
            l.resign().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    // A targeted request for an old term reaches nobody.
    let l = e.try_campaign().unwrap();
    assert!(t.request_release("ctl", Some(l.term() - 1)).is_err());
    assert!(!l.release_requested());
    l.resign().unwrap();
}

/// `shmlease observe NAME | head -1` ends once head has gone, even while nothing
/// changes; so does `observe --json --count 2 | head -1` after a change.
#[test]
fn cli_observe_piped_into_head_ends() {
    let _serial = serial();
    let wd = Watchdog::new("cli_observe_piped_into_head_ends", LONG * 2);
    let dir = Scratch::new("adv-head");
    let (t, path) = table(&dir);
    let bin = env!("CARGO_BIN_EXE_shmlease");
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let l = e.try_campaign().unwrap();
    for args in [&["observe", "ctl"][..], &["observe", "ctl", "--json"][..]] {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("\"$0\" \"$@\" | head -1")
            .arg(bin)
            .arg("-t")
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = sh.spawn().unwrap();
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(LONG) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                // SAFETY: a libc call taking plain integers (or null), on our own process or children.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                panic!("`shmlease {} | head -1` did not end", args.join(" "));
            }
        };
        assert!(out.status.success(), "{:?}", out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&l.term().to_string()), "{text}");
        assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    drop(wd);
    l.resign().unwrap();
}

/// Regression (was a silent gap): an observer that sleeps through exactly 65,536 terms
/// (plus the one that now leads) must not report `skipped: Some(0)`: the 16-bit sequence
/// in each token wraps, so past 32,768 grants (by the slot's grant count) the count is
/// unknown (`None`).
#[test]
fn observer_skipped_count_does_not_wrap_into_a_silent_gap() {
    let _serial = serial();
    let dir = Scratch::new("adv-wrap");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap();
    let ttl = Duration::from_secs(30);
    let first = t.try_acquire("ctl", ttl).unwrap();
    let mut obs = e.observe();
    let c = obs.next_change(None).unwrap().unwrap();
    assert_eq!(c.term, first.token());
    first.release().unwrap();
    // 65,536 terms that begin and end unseen, then one that leads.
    for _ in 0..65_536 {
        t.try_acquire("ctl", ttl).unwrap().release().unwrap();
    }
    let now = t.try_acquire("ctl", ttl).unwrap();
    let c = obs.next_change(Some(LONG)).unwrap().unwrap();
    assert_eq!(c.term, now.token());
    assert!(
        c.skipped != Some(0),
        "65,536 terms were missed but the observer reports skipped = {:?}",
        c.skipped
    );
    now.release().unwrap();
}

/// A herd of 30 candidates (half identified by start time) and two observers (one by
/// start time): leaders and random standbys killed with SIGKILL, leaders stopped around
/// their TTL; no two leaders overlap (fenced record), no term is granted twice, and the
/// observers' terms only grow with counts covering every known missed term.
#[test]
fn herd_of_thirty_with_kills_and_stops() {
    let _serial = serial();
    let run_ms = 10_000u64;
    let wd = Watchdog::new("herd_of_thirty_with_kills_and_stops", LONG * 3);
    let dir = Scratch::new("adv-herd");
    let (t, path) = table(&dir);
    let record = dir.path("record");
    SharedWords::create(&record, 8);
    let ttl_ms = 300u64;
    let env = |left: u64, i: usize| {
        let mut v = vec![
            ("TABLE", s(path.display())),
            ("NAME", s("ctl")),
            ("TTL_MS", s(ttl_ms)),
            ("RECORD", s(record.display())),
            ("RUN_MS", s(left)),
        ];
        if i % 2 == 1 {
            v.push(("IDENTITY", s("start-time")));
        }
        v
    };
    let start = Instant::now();
    let left = || run_ms.saturating_sub(start.elapsed().as_millis() as u64);
    let mut candidates: Vec<Kid> =
        (0..30).map(|i| Kid::spawn(&wd, &format!("c{i}"), "candidate", &env(run_ms, i))).collect();
    let mut observers: Vec<Kid> = (0..2)
        .map(|i| Kid::spawn(&wd, &format!("o{i}"), "observer", &env(run_ms + 1500, i)))
        .collect();
    let mut finished = Vec::new();
    let e = t.election("ctl").unwrap();
    let mut rng = Rng::new(0xadd);
    let mut spawned = 30;
    let mut kills = 0;
    while left() > 1_500 {
        std::thread::sleep(Duration::from_millis(20 + rng.below(60)));
        let leader_pid = e.leader().unwrap().and_then(|l| l.holder).map(|h| h.pid as i32);
        let i = match leader_pid.and_then(|p| candidates.iter().position(|k| k.pid() == p)) {
            Some(i) if rng.chance(80) => i,
            _ => rng.below(candidates.len() as u64) as usize,
        };
        if rng.chance(75) {
            candidates[i].signal(libc::SIGKILL);
            let mut dead = candidates.swap_remove(i);
            dead.wait(LONG);
            finished.push(dead);
            spawned += 1;
            candidates.push(Kid::spawn(
                &wd,
                &format!("c{spawned}"),
                "candidate",
                &env(left(), spawned),
            ));
            kills += 1;
        } else {
            candidates[i].signal(libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(ttl_ms - 50 + rng.below(150)));
            candidates[i].signal(libc::SIGCONT);
        }
    }
    let terms = common::check_run(&mut candidates, &finished, &mut observers, false).terms;
    eprintln!("herd: {} terms, {kills} kills", terms.len());
    assert!(terms.len() > 10, "too few terms: {}", terms.len());
}

/// Regression (was a livelock): observers of more idle names than the table has free
/// slots must not evict each other in a loop (observers once bound the names they
/// watched: ~25,000 binds per second, all CPU, nothing happening). Observers never bind.
#[test]
fn observers_of_idle_names_on_a_full_table_do_not_spin() {
    let _serial = serial();
    let dir = Scratch::new("adv-evict");
    let path = dir.path("table");
    let t = LeaseTable::create(&path, &TableOptions::new().capacity(2)).unwrap();
    let held = t.try_acquire("busy", Duration::from_secs(60)).unwrap();
    let before = t.info().counters.binds;
    let errors = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|scope| {
        for name in ["x", "y", "z"] {
            let (t, errors) = (&t, &errors);
            scope.spawn(move || {
                let e = t.election(name).unwrap();
                let mut obs = e.observe();
                let end = Instant::now() + Duration::from_millis(1000);
                while let Some(left) = end.checked_duration_since(Instant::now()) {
                    if obs.next_change(Some(left)).is_err() {
                        errors.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
    });
    let binds = t.info().counters.binds - before;
    eprintln!("binds in 1 s: {binds}, errors: {}", errors.load(Ordering::SeqCst));
    assert!(binds < 1000, "observers evicted each other {binds} times in one second");
    held.release().unwrap();
}

/// Regression (same root as the livelock above): an observer of a name that is not in a
/// full table waits (it once failed with `Error::TableFull`, so `shmlease observe x`
/// exited with a table error).
#[test]
fn observer_of_an_evicted_name_waits_for_a_slot() {
    let _serial = serial();
    let dir = Scratch::new("adv-evict1");
    let path = dir.path("table");
    let t = LeaseTable::create(&path, &TableOptions::new().capacity(2)).unwrap();
    let busy = t.try_acquire("busy", Duration::from_secs(60)).unwrap();
    let e = t.election("x").unwrap();
    let mut obs = e.observe();
    let first = obs.next_change(None).unwrap().unwrap();
    assert_eq!((first.term, first.leader.is_none()), (0, true));
    let y = t.try_acquire("y", Duration::from_secs(60)).unwrap();
    let before = t.info().counters.binds;
    let r = obs.next_change(Some(Duration::from_millis(500)));
    let binds = t.info().counters.binds - before;
    eprintln!("while full: {r:?}, {binds} binds");
    assert!(matches!(r, Ok(None)), "an observer of an evicted idle name: {r:?}");
    y.release().unwrap();
    busy.release().unwrap();
}

/// A killed leader that nobody reaps (a zombie: its parent is busy or careless) is dead:
/// a standby takes over long before the 600 s TTL, whether the leader was identified
/// by pidfd or by start time, and `leader()` says nobody leads meanwhile.
#[test]
fn unreaped_zombie_leader_is_replaced_before_its_ttl() {
    let _serial = serial();
    let wd = Watchdog::new("unreaped_zombie_leader_is_replaced_before_its_ttl", LONG * 2);
    for identity in ["pidfd", "start-time"] {
        let dir = Scratch::new(&format!("adv-zombie-{identity}"));
        let (t, path) = table(&dir);
        let mut env =
            vec![("TABLE", s(path.display())), ("NAME", s("ctl")), ("TTL_MS", s(600_000))];
        if identity == "start-time" {
            env.push(("IDENTITY", s(identity)));
        }
        let mut leader = Kid::spawn(&wd, "leader", "leader", &env);
        let term: u64 = leader.expect("TERM", LONG).parse().unwrap();
        leader.signal(libc::SIGKILL);
        leader.wait_state(b'Z', LONG); // not reaped
        let e = t.election("ctl").unwrap();
        // The main thread shows `Z` while the process's other threads (its keep-alive)
        // may still be on their way out; the process is dead (its pidfd readable) once
        // they are: from then on, nobody leads.
        let end = std::time::Instant::now() + LONG;
        while e.leader().unwrap().is_some() {
            assert!(std::time::Instant::now() < end, "{identity}: a zombie leads");
            std::thread::sleep(Duration::from_millis(1));
        }
        let l = e.campaign(Some(LONG)).expect("elected before the TTL");
        assert!(l.term() > term);
        leader.wait(LONG);
    }
}

/// Eight threads of one process share one `Election` and campaign/resign in a loop:
/// at most one leads at any instant (a fenced in-process record), terms only grow, and
/// every blocked campaign is woken by the resignation (no hang).
#[test]
fn threads_sharing_one_election_take_turns() {
    let _serial = serial();
    let wd = Watchdog::new("threads_sharing_one_election_take_turns", LONG * 2);
    let dir = Scratch::new("adv-threads");
    let (t, _) = table(&dir);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let inside = std::sync::atomic::AtomicU32::new(0);
    let highest = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let (e, inside, highest) = (&e, &inside, &highest);
            scope.spawn(move || {
                for _ in 0..150 {
                    let l = e.campaign(Some(LONG)).expect("a blocked campaign was not woken");
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two leaders at once");
                    let before = highest.fetch_max(l.term(), Ordering::SeqCst);
                    assert!(before < l.term(), "term {} after {before}", l.term());
                    assert!(l.is_leader());
                    std::thread::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                    l.resign().unwrap();
                }
            });
        }
    });
    drop(wd);
}

/// Blocking calls interrupted every millisecond by a signal handler installed without
/// SA_RESTART (as C programs do): campaigns and observers wait their full time, the
/// keep-alive keeps renewing (see `role_eintr`).
#[test]
fn blocking_calls_survive_eintr_storms() {
    let _serial = serial();
    let wd = Watchdog::new("blocking_calls_survive_eintr_storms", LONG * 2);
    let dir = Scratch::new("adv-eintr");
    let (t, path) = table(&dir);
    let l =
        t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap().try_campaign().unwrap();
    let mut kid = Kid::spawn(&wd, "eintr", "adv_eintr", &[("TABLE", s(path.display()))]);
    kid.expect("OK", LONG);
    let status = kid.wait(LONG);
    assert!(status.success(), "{status:?}\n{}", kid.transcript());
    l.resign().unwrap();
}

/// A runner stopped (SIGSTOP) past its TTL while a standby campaigns: the standby is
/// elected; when the runner resumes, its closure hears `Lost(TakenOver)` and already
/// sees `is_leader() == false`, on_stopped reports it did not resign, and the standby
/// still leads. Stopped for less than the TTL but past the margin with nobody waiting:
/// the closure hears `Late` (or `Lost(Expired)` if the deadline passed; or nothing, if
/// the keep-alive renewed first: then a hand-over request stops it), and on_stopped
/// reports a resignation exactly when the lease was still ours.
#[test]
fn runner_stopped_around_its_ttl_and_margin() {
    let _serial = serial();
    let wd = Watchdog::new("runner_stopped_around_its_ttl_and_margin", LONG * 2);
    let dir = Scratch::new("adv-runstop");
    let (t, path) = table(&dir);
    let env = [("TABLE", s(path.display()))];
    // Past the TTL, with a standby.
    let mut kid = Kid::spawn(&wd, "runner", "adv_runner", &env);
    let term: u64 = kid.expect("LEADING", LONG).parse().unwrap();
    kid.signal(libc::SIGSTOP);
    kid.wait_state(b'T', LONG);
    let e = t.election("ctl").unwrap().ttl(Duration::from_secs(30)).unwrap();
    let l = e.campaign(Some(LONG)).unwrap();
    assert!(l.term() > term);
    kid.signal(libc::SIGCONT);
    assert_eq!(kid.expect("REASON", LONG), "Some(Lost(TakenOver)) false");
    assert_eq!(kid.expect("STOPPED", LONG), "Some(Lost(TakenOver)) false");
    kid.wait_ok(LONG);
    assert!(l.is_leader());
    l.resign().unwrap();
    // Past the margin, nobody waiting.
    for _ in 0..6 {
        let mut kid = Kid::spawn(&wd, "runner", "adv_runner", &env);
        kid.expect("LEADING", LONG);
        kid.signal(libc::SIGSTOP);
        kid.wait_state(b'T', LONG);
        std::thread::sleep(Duration::from_millis(480));
        kid.signal(libc::SIGCONT);
        // If the keep-alive renewed before the closure looked, the term simply goes on
        // (nothing to stop for): then ask for a hand-over.
        std::thread::sleep(Duration::from_millis(300));
        let _ = t.request_release("ctl", None);
        let reason = kid.expect("REASON", LONG);
        let stopped = kid.expect("STOPPED", LONG);
        eprintln!("REASON {reason}; STOPPED {stopped}");
        match reason.as_str() {
            "Some(Late) true" => assert_eq!(stopped, "Some(Late) true"),
            "Some(Requested) true" => assert_eq!(stopped, "Some(Requested) true"),
            "Some(Lost(Expired)) false" => assert_eq!(stopped, "Some(Lost(Expired)) false"),
            other => panic!("told to stop for {other}"),
        }
        kid.wait_ok(LONG);
        assert!(t.election("ctl").unwrap().leader().unwrap().is_none());
    }
}
