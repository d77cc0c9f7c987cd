//! A real etcd cluster for the tests: `members` etcd processes on free loopback ports in
//! a temporary directory, started, waited for until every member is healthy, and always
//! stopped — on drop (also while a failing test unwinds), and by the kernel if the test
//! process dies (each member gets `PR_SET_PDEATHSIG`). One cluster at a time per test
//! process: [`Cluster::start`] holds a lock until the cluster is dropped, so that the
//! tests of a binary do not run a dozen etcd processes at once on a small machine.
//!
//! Fault injection: [`Cluster::kill`] (SIGKILL), [`Cluster::restart`],
//! [`Cluster::pause`] / [`Cluster::resume`] (SIGSTOP / SIGCONT), [`Cluster::leader`].
//! TLS: certificates made with `openssl` in the cluster's directory. Auth:
//! [`Cluster::enable_auth`] adds users through `etcdctl`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Scratch;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How to start a cluster.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub members: usize,
    pub tls: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { members: 3, tls: false }
    }
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// Paths of the certificates of a TLS cluster.
pub struct Certs {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing of this cluster's.
    pub other_ca: PathBuf,
}

pub struct Cluster {
    scratch: Scratch,
    members: Vec<Member>,
    pub certs: Option<Certs>,
    /// `root`'s password once auth is enabled (for etcdctl).
    root_password: Option<String>,
    _one: MutexGuard<'static, ()>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `cmd`, panicking with its output if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn make_certs(dir: &Path) -> Certs {
    let p = |n: &str| dir.join(n);
    let ssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    for ca in ["ca", "other-ca"] {
        ssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-subj",
            &format!("/CN=shmlease test {ca}"),
        ]);
    }
    std::fs::write(p("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (who, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN={who}"),
        ]);
        ssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            &format!("{who}.pem"),
        ]);
    }
    Certs {
        ca: p("ca.pem"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
        other_ca: p("other-ca.pem"),
    }
}

impl Cluster {
    /// Starts a cluster and waits until every member is healthy.
    pub fn start(test: &str, setup: Setup) -> Cluster {
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let scratch = Scratch::new(&format!("etcd-{test}"));
        let certs = setup.tls.then(|| make_certs(&scratch.dir));
        let members = (0..setup.members)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut c = Cluster { scratch, members, certs, root_password: None, _one: one };
        for i in 0..setup.members {
            c.spawn(i, true);
        }
        c.wait_healthy(Duration::from_secs(60));
        c
    }

    fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn spawn(&mut self, i: usize, new: bool) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let scheme = self.scheme();
        let m = &self.members[i];
        let data = self.scratch.dir.join(&m.name);
        let client_url = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer_url = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .arg("--initial-cluster-state")
            .arg(if new { "new" } else { "existing" })
            .arg("--initial-cluster-token")
            .arg(format!("shmlease-{}", std::process::id()))
            // Fast elections, so that fault tests recover in about a second; the
            // server's minimum lease TTL follows (1.5 election timeouts: 1 s).
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.scratch.dir.join(format!("{}.log", m.name))).unwrap(),
            ));
        if let Some(certs) = &self.certs {
            let dir = &self.scratch.dir;
            cmd.arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(&certs.ca)
                .arg("--client-cert-auth");
        }
        // SAFETY: prctl(2) with plain integers is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Die with the test process, however it ends.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.members[i].child =
            Some(cmd.spawn().expect("starting etcd (apt-get install etcd-server)"));
    }

    /// `HOST:PORT,…` of every member.
    pub fn hosts(&self) -> String {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client)).collect::<Vec<_>>().join(",")
    }

    /// An `etcd://` (or `etcds://`, with the CA and client certificate) location.
    pub fn location(&self, prefix: &str) -> String {
        match &self.certs {
            None => format!("etcd://{}/{prefix}", self.hosts()),
            Some(c) => format!(
                "etcds://{}/{prefix}?ca={}&cert={}&key={}",
                self.hosts(),
                c.ca.display(),
                c.client_cert.display(),
                c.client_key.display()
            ),
        }
    }

    fn etcdctl(&self, endpoints: &str) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(endpoints).arg("--command-timeout=5s");
        if let Some(c) = &self.certs {
            cmd.arg("--cacert")
                .arg(&c.ca)
                .arg("--cert")
                .arg(&c.client_cert)
                .arg("--key")
                .arg(&c.client_key);
        }
        if let Some(pw) = &self.root_password {
            cmd.arg("--user").arg(format!("root:{pw}"));
        }
        cmd
    }

    fn endpoint(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.members[i].client)
    }

    fn all_endpoints(&self) -> String {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect::<Vec<_>>().join(",")
    }

    /// `etcdctl` against every member, for the tests' own use.
    pub fn ctl(&self, args: &[&str]) -> String {
        run(self.etcdctl(&self.all_endpoints()).args(args))
    }

    /// Whether member `i` answers its health check.
    fn healthy(&self, i: usize) -> bool {
        self.etcdctl(&self.endpoint(i))
            .args(["endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until every running member is healthy (panics after `limit`).
    pub fn wait_healthy(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            while !self.healthy(i) {
                if let Some(Some(status)) =
                    self.members[i].child.as_mut().map(|c| c.try_wait().ok().flatten())
                {
                    let log = std::fs::read_to_string(self.scratch.dir.join(format!("m{i}.log")))
                        .unwrap_or_default();
                    panic!("etcd member {i} exited ({status}):\n{log}");
                }
                assert!(Instant::now() < end, "etcd member {i} not healthy after {limit:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The index of the member that leads, asked of the members themselves.
    pub fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            // endpoint, id, version, db size, is leader, …
            let out = self
                .etcdctl(&self.endpoint(i))
                .args(["endpoint", "status", "-w", "simple"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.split(", ").nth(4) == Some("true") {
                return Some(i);
            }
        }
        None
    }

    /// Waits until some member leads.
    pub fn wait_leader(&self, limit: Duration) -> usize {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < end, "no etcd leader after {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self, i: usize) -> i32 {
        self.members[i].child.as_ref().map(|c| c.id() as i32).expect("member not running")
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i, false);
    }

    /// SIGSTOP of member `i`.
    pub fn pause(&self, i: usize) {
        super::signal(self.pid(i), libc::SIGSTOP);
    }

    /// SIGCONT of member `i`.
    pub fn resume(&self, i: usize) {
        super::signal(self.pid(i), libc::SIGCONT);
    }

    /// Turns on authentication: `root` (password `root_password`) and `user` with
    /// `password`, allowed to read and write everything under `/{prefix}`.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) {
        let root_pw = "root-secret";
        self.ctl(&["user", "add", &format!("root:{root_pw}")]);
        self.ctl(&["user", "add", &format!("{user}:{password}")]);
        self.ctl(&["role", "add", "app"]);
        self.ctl(&[
            "role",
            "grant-permission",
            "app",
            "--prefix=true",
            "readwrite",
            &format!("/{prefix}"),
        ]);
        self.ctl(&["user", "grant-role", user, "app"]);
        self.ctl(&["auth", "enable"]);
        self.root_password = Some(root_pw.to_owned());
    }

    /// Requests each gRPC method has answered so far, summed over the running members
    /// (from their Prometheus `/metrics`): the tests count round trips with it.
    pub fn rpc_counts(&self) -> std::collections::BTreeMap<String, u64> {
        use std::io::{Read, Write};
        assert!(self.certs.is_none(), "rpc_counts reads /metrics over plain HTTP");
        let mut counts = std::collections::BTreeMap::new();
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", m.client)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            for line in text.lines().filter(|l| l.starts_with("grpc_server_handled_total{")) {
                let method = line.split("grpc_method=\"").nth(1).and_then(|r| r.split('"').next());
                let n = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok());
                if let (Some(method), Some(n)) = (method, n) {
                    *counts.entry(method.to_owned()).or_default() += n as u64;
                }
            }
        }
        counts
    }

    /// The directory of the cluster's files.
    pub fn dir(&self) -> &Path {
        &self.scratch.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                // A paused member dies of SIGKILL too.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A process a test started (a CLI command that runs on), killed when dropped — also while a failing test unwinds — and by the kernel if the thread
/// that started it dies first (`PR_SET_PDEATHSIG`).
pub struct Guarded(pub std::process::Child);

impl Guarded {
    pub fn spawn(cmd: &mut Command) -> Guarded {
        // SAFETY: prctl(2) with plain integers is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Guarded(cmd.spawn().expect("starting a process"))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // (`shmlease run` arranges that its CMD dies with it.)
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A location, parsed (a test's own text: it is valid).
pub fn loc(text: &str) -> shmlease::etcd::EtcdLocation {
    shmlease::etcd::EtcdLocation::parse(text).unwrap()
}

/// The table under `prefix` on `cluster`, created if need be.
pub fn table(cluster: &Cluster, prefix: &str) -> shmlease::etcd::EtcdTable {
    shmlease::etcd::EtcdTable::open_or_create(
        &loc(&cluster.location(prefix)),
        &shmlease::TableOptions::new(),
    )
    .unwrap()
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the host.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An `Instant` on CLOCK_MONOTONIC, in nanoseconds (Instant is that clock on Linux).
pub fn mono_of(t: Instant) -> u64 {
    let (now, mono) = (Instant::now(), mono_ns());
    if t >= now {
        mono + (t - now).as_nanos() as u64
    } else {
        mono.saturating_sub((now - t).as_nanos() as u64)
    }
}
