//! The connection to a cluster and the runtime it runs on: a current-thread tokio
//! runtime on a thread of its own ("shmlease-etcd"), so that the public API stays
//! synchronous and a caller never needs a runtime. A blocking call spawns its future on
//! that runtime and waits for the answer on a channel. The thread blocks every signal:
//! a library thread must not take the signals its application waits for.
//!
//! # Fork
//!
//! `fork()` copies the connection's memory into the child but not its thread, and the
//! child shares the parent's sockets: a request written by the child on them would
//! corrupt the parent's HTTP/2 streams, and a wait for the (absent) runtime thread would
//! never end. So a [`Conn`] knows the pid that made it, and [`ConnSlot::get`] in any
//! other process connects afresh and leaves the inherited connection untouched: never
//! used, never dropped (dropping it would shut down streams on the parent's sockets),
//! only leaked — a few kilobytes, once per fork that uses the table. Nothing here takes
//! a lock that a thread of the parent could have held at the fork.

use std::future::Future;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use tokio::runtime::Handle;

use super::lease::Holdings;
use super::location::EtcdLocation;
use super::recipe::Spares;
use super::Fail;
use crate::identity;
use crate::info::Host;

/// A client connected to a cluster, with the runtime thread that drives it.
pub struct Conn {
    pid: u32,
    handle: Handle,
    client: Client,
    spares: Arc<Spares>,
    holdings: Holdings,
    /// Dropping it ends the runtime thread (its `block_on` waits on the receiver).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Conn {
    /// Starts the runtime thread and connects (authenticating, when a user is given).
    pub fn connect(loc: &EtcdLocation) -> Result<Conn, Fail> {
        let options = connect_options(loc)?;
        let endpoints = loc.endpoints();
        let timeout = loc.timeout;
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The thread (and any the runtime starts) blocks every signal, so that it never
        // takes a process-directed signal that the application waits for on a
        // signalfd or with sigwait (`shmlease run` reads SIGCHLD so): it is started
        // with the mask blocked here and inherits it; this thread's mask is restored.
        let mut mask = SigSet::empty();
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut mask));
        let spawned = std::thread::Builder::new()
            .name("shmlease-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Fail::Net(format!("starting a runtime: {e}"))));
                        return;
                    }
                };
                let handle = rt.handle().clone();
                rt.block_on(async move {
                    let connected =
                        tokio::time::timeout(timeout, Client::connect(&endpoints, Some(options)))
                            .await;
                    let result = match connected {
                        Ok(Ok(client)) => Ok((handle, client)),
                        Ok(Err(e)) => Err(Fail::from(e)),
                        Err(_) => Err(Fail::Net(format!("could not connect within {timeout:?}"))),
                    };
                    let ok = result.is_ok();
                    let _ = ready_tx.send(result);
                    if ok {
                        let _ = stop_rx.await;
                    }
                });
            })
            .map_err(|e| Fail::Net(format!("starting the etcd client thread: {e}")));
        if blocked.is_ok() {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
        }
        spawned?;
        let (handle, client) = ready_rx
            .recv()
            .map_err(|_| Fail::Net("the etcd client thread stopped while connecting".into()))??;
        Ok(Conn {
            pid: identity::pid(),
            handle,
            client,
            spares: Arc::default(),
            holdings: Holdings::default(),
            _stop: stop_tx,
        })
    }

    /// A client to move into a future (clones share the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The spare etcd leases of this connection (see [`Spares`]).
    pub fn spares(&self) -> Arc<Spares> {
        Arc::clone(&self.spares)
    }

    /// The leases this process holds through this connection (see [`Holdings`]).
    pub fn holdings(&self) -> &Holdings {
        &self.holdings
    }

    /// Runs `fut` on the runtime thread and waits for its result.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, Fail>> + Send + 'static,
    ) -> Result<T, Fail> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| Fail::Net("the etcd client thread has stopped".into()))?
    }

    /// Starts `fut` on the runtime thread without waiting for it.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(fut);
    }
}

fn connect_options(loc: &EtcdLocation) -> Result<ConnectOptions, Fail> {
    let mut o = ConnectOptions::new()
        .with_timeout(loc.timeout)
        .with_connect_timeout(loc.timeout)
        // A member that is stopped keeps its TCP connection open: HTTP/2 pings notice.
        .with_keep_alive(Duration::from_secs(1), loc.timeout.min(Duration::from_secs(3)))
        .with_keep_alive_while_idle(true)
        // A member without a leader refuses at once instead of queueing the request.
        .with_require_leader(true)
        .with_auto_token_refresh(true);
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p)
            .map_err(|e| Fail::Config(format!("reading the {what} {}: {e}", p.display())))
    };
    if loc.tls {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &loc.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
        }
        if let (Some(cert), Some(key)) = (&loc.cert, &loc.key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        if let Some(domain) = &loc.domain {
            tls = tls.domain_name(domain.clone());
        }
        o = o.with_tls(tls);
    }
    if let Some(user) = &loc.user {
        let password = match &loc.password_file {
            Some(p) => {
                let text = String::from_utf8(read(p, "password file")?).map_err(|_| {
                    Fail::Config(format!("the password file {} is not UTF-8", p.display()))
                })?;
                text.lines().next().unwrap_or("").to_owned()
            }
            None => String::new(),
        };
        o = o.with_user(user.clone(), password);
    }
    Ok(o)
}

/// The connection of one table, reconnected in a forked child (see the module docs).
pub struct ConnSlot {
    /// Always a pointer from `Box::into_raw`; freed only by `Drop`, and only if this
    /// process made it. Replaced pointers (a parent's, after fork) are leaked.
    current: AtomicPtr<Conn>,
    location: EtcdLocation,
}

impl ConnSlot {
    pub fn new(conn: Conn, location: EtcdLocation) -> ConnSlot {
        ConnSlot { current: AtomicPtr::new(Box::into_raw(Box::new(conn))), location }
    }

    /// This process's connection, made now if this process is a fork child.
    pub fn get(&self) -> Result<&Conn, Fail> {
        let me = identity::pid();
        loop {
            let p = self.current.load(Ordering::Acquire);
            // SAFETY: `current` always holds a pointer from `Box::into_raw` that is freed
            // only in `Drop` (which has `&mut self`, so no `&Conn` from `get` is alive);
            // a replaced pointer is never freed. So `p` is valid for `&self`'s lifetime.
            let conn = unsafe { &*p };
            if conn.pid == me {
                return Ok(conn);
            }
            let fresh = Box::into_raw(Box::new(Conn::connect(&self.location)?));
            match self.current.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
                // The inherited connection stays allocated: see the module docs.
                Ok(_) => {}
                // Another thread of this process connected first: use its connection.
                // SAFETY: `fresh` came from `Box::into_raw` above and was never shared.
                Err(_) => drop(unsafe { Box::from_raw(fresh) }),
            }
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let p = *self.current.get_mut();
        // SAFETY: see `get`; `&mut self` proves no borrow from `get` is alive.
        if unsafe { &*p }.pid == identity::pid() {
            // SAFETY: made by `Box::into_raw` in this process and not freed before.
            drop(unsafe { Box::from_raw(p) });
        }
        // Else it is a parent's connection, inherited through fork: leaked on purpose.
    }
}

/// This host's name, as recorded in holder records (`/proc/sys/kernel/hostname`).
pub fn host_name() -> Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    *HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .and_then(|h| Host::new(h.trim()))
            .unwrap_or_default()
    })
}
