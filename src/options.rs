//! Where a table lives and how it is created and opened ([`Location`], [`TableOptions`]),
//! and how a lease is acquired ([`AcquireOptions`]: waiting, label, permits, shared, fair).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::info::Label;
use crate::layout::{self, MAX_CAPACITY};
#[allow(unused_imports)] // rustdoc links
use crate::{LeaseInfo, LeaseTable};

/// Where a lease table lives: a file path, a POSIX shared-memory name, or a key prefix
/// on an etcd cluster.
///
/// Converting from a string follows the CLI's rule: `etcd://…` and `etcds://…` name an
/// etcd table; anything else containing `/` is a path; a bare name is a shared-memory
/// segment, the object `shm_open("/NAME")` opens (`/dev/shm/NAME` on Linux). `shm:NAME`,
/// as `Display` prints it, is read back as the segment `NAME`.
///
/// ```
/// use shmlease::Location;
/// assert_eq!(Location::from("/var/lib/app/leases"), Location::Path("/var/lib/app/leases".into()));
/// assert_eq!(Location::from("app-leases"), Location::Shm("app-leases".into()));
/// assert_eq!(Location::from(Location::from("app-leases").to_string()), Location::Shm("app-leases".into()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A file (any file system that supports shared `mmap`; tables survive reboots).
    Path(PathBuf),
    /// A POSIX shared-memory object (in RAM; gone at reboot).
    Shm(String),
    /// A table on an etcd cluster, as written: `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`
    /// or `etcds://…` (see [`crate::etcd::EtcdLocation`] for its options), checked when
    /// the table is opened. Only with the cargo feature `etcd`: a build without it reads
    /// such a string as a path, and `open`/`create`/`remove` refuse it saying how to
    /// build with the feature.
    #[cfg(feature = "etcd")]
    Etcd(String),
}

impl Location {
    /// The per-user default table every front end uses when none is named: the
    /// shared-memory segment `shmlease-<euid>` (`/dev/shm/shmlease-<euid>`), so Rust,
    /// C, Python and `shmlease ls` see the same leases.
    ///
    /// ```
    /// let uid = nix::unistd::geteuid().as_raw();
    /// assert_eq!(shmlease::Location::user_default(), shmlease::Location::Shm(format!("shmlease-{uid}")));
    /// ```
    pub fn user_default() -> Location {
        Location::Shm(format!("shmlease-{}", nix::unistd::geteuid().as_raw()))
    }

    /// The table `$SHMLEASE_TABLE` names (read as [`Location::from`] reads a string),
    /// or `None` when it is unset or empty. A value that is not UTF-8 is an error, not
    /// a fallback: mutual exclusion on a table nobody meant would be worse than none.
    pub fn from_env() -> Result<Option<Location>> {
        match std::env::var_os("SHMLEASE_TABLE") {
            Some(raw) if !raw.is_empty() => match raw.to_str() {
                Some(s) => Ok(Some(Location::from(s))),
                None => Err(Error::InvalidOptions {
                    reason: format!(
                        "$SHMLEASE_TABLE is not valid UTF-8 ({raw:?}); lease table locations must be UTF-8"
                    ),
                }),
            },
            _ => Ok(None),
        }
    }

    /// The file the location names (none for an etcd table).
    pub fn file_path(&self) -> Result<PathBuf> {
        match self {
            Location::Path(p) => Ok(p.clone()),
            #[cfg(feature = "etcd")]
            Location::Etcd(text) => Err(Error::InvalidOptions {
                reason: format!("{text} is a table on an etcd cluster, not a file"),
            }),
            Location::Shm(name) => {
                // The segment is the file /dev/shm/NAME: a file name of at most 255 bytes.
                const SHM_NAME_MAX: usize = 250;
                let invalid = |why: String| Err(Error::InvalidOptions { reason: why });
                if name.is_empty() {
                    return invalid("a shared-memory name cannot be empty".into());
                }
                if name == "." || name == ".." {
                    return invalid(format!("{name:?} cannot name a shared-memory segment"));
                }
                if name.len() > SHM_NAME_MAX {
                    // Quoting all of it would bury the reason.
                    let cut = (0..=32).rev().find(|&i| name.is_char_boundary(i)).unwrap_or(0);
                    return invalid(format!(
                        "shared-memory name {:?}... is {} bytes long: at most {SHM_NAME_MAX} (it names the file /dev/shm/NAME)",
                        &name[..cut],
                        name.len()
                    ));
                }
                if name.contains('/') || name.contains('\0') {
                    return Err(Error::InvalidOptions {
                        reason: format!("shared-memory name {name:?} must not contain '/' or NUL"),
                    });
                }
                Ok(Path::new("/dev/shm").join(name))
            }
        }
    }
}

/// Whether `text` is written as an etcd location.
pub(crate) fn is_etcd_text(text: &str) -> bool {
    text.starts_with("etcd://") || text.starts_with("etcds://")
}

/// In a build without the `etcd` feature, the refusal of a location written as an etcd
/// one (read as a path there): `None` for any other location.
#[cfg(not(feature = "etcd"))]
pub(crate) fn etcd_not_built(location: &Location) -> Option<Error> {
    let Location::Path(p) = location else { return None };
    let text = p.to_str().filter(|t| is_etcd_text(t))?;
    Some(etcd_unsupported(text))
}

#[cfg(not(feature = "etcd"))]
fn etcd_unsupported(text: &str) -> Error {
    Error::Unsupported {
        reason: format!(
            "{text} is a table on an etcd cluster, and this build of shmlease has no etcd \
             backend: rebuild with the cargo feature `etcd` (`cargo build --features etcd`; \
             it needs protoc, e.g. apt-get install protobuf-compiler)"
        ),
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Path(p) => write!(f, "{}", p.display()),
            Location::Shm(n) => write!(f, "shm:{n}"),
            #[cfg(feature = "etcd")]
            Location::Etcd(text) => f.write_str(text),
        }
    }
}

impl From<&str> for Location {
    fn from(s: &str) -> Location {
        #[cfg(feature = "etcd")]
        if is_etcd_text(s) {
            return Location::Etcd(s.to_owned());
        }
        if let Some(name) = s.strip_prefix("shm:") {
            Location::Shm(name.to_owned())
        } else if s.contains('/') {
            Location::Path(PathBuf::from(s))
        } else {
            Location::Shm(s.to_owned())
        }
    }
}

impl From<String> for Location {
    fn from(s: String) -> Location {
        Location::from(s.as_str())
    }
}

impl From<&String> for Location {
    fn from(s: &String) -> Location {
        Location::from(s.as_str())
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::Path(p.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::Path(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::Path(p.clone())
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Location {
        l.clone()
    }
}

/// How to create and open a table.
///
/// ```
/// let options = shmlease::TableOptions::new().capacity(100_000).mode(0o660);
/// assert_eq!(options.get_capacity(), 100_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableOptions {
    capacity: u32,
    mode: u32,
    allow_foreign_owner: bool,
    allow_world_writable: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            capacity: 4096,
            mode: 0o600,
            allow_foreign_owner: false,
            allow_world_writable: false,
        }
    }
}

impl TableOptions {
    /// Defaults: 4096 slots, mode 0600, refuse tables owned by another user or writable
    /// by everyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of slots (names that can have a lease at once), 1 ..= 16,777,216. Each
    /// takes 128 bytes. Used only when creating.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// Permission bits of a new table (exactly these: the umask does not apply). Used
    /// only when creating. Default 0600: only the creating user can use it.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Open a table owned by another user. Off by default: whoever owns a table can
    /// truncate or rewrite it under you.
    pub fn allow_foreign_owner(mut self, allow: bool) -> Self {
        self.allow_foreign_owner = allow;
        self
    }

    /// Open a table that every user may write. Off by default: any local user could
    /// then forge or steal leases.
    pub fn allow_world_writable(mut self, allow: bool) -> Self {
        self.allow_world_writable = allow;
        self
    }

    /// The capacity that will be used.
    pub fn get_capacity(&self) -> u32 {
        self.capacity
    }

    /// The mode that will be used.
    pub fn get_mode(&self) -> u32 {
        self.mode
    }

    pub(crate) fn foreign_owner_allowed(&self) -> bool {
        self.allow_foreign_owner
    }

    pub(crate) fn world_writable_allowed(&self) -> bool {
        self.allow_world_writable
    }

    pub(crate) fn validate_for_create(&self) -> Result<()> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::InvalidOptions {
                reason: format!("capacity {} is outside 1 ..= {MAX_CAPACITY}", self.capacity),
            });
        }
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidOptions {
                reason: format!("mode {:o} has bits outside 0777", self.mode),
            });
        }
        if self.mode & 0o600 != 0o600 {
            return Err(Error::InvalidOptions {
                reason: format!("mode {:o} does not let the owner read and write", self.mode),
            });
        }
        if self.mode & 0o002 != 0 && !self.allow_world_writable {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "mode {:o} is world-writable; call allow_world_writable(true) if you mean it",
                    self.mode
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        match Location::Shm(name.into()).file_path() {
            Err(Error::InvalidOptions { reason }) => reason,
            other => panic!("{name:?} accepted: {other:?}"),
        }
    }

    #[test]
    #[cfg(feature = "etcd")]
    fn an_etcd_location_is_neither_a_file_nor_a_segment() {
        let text = "etcds://h:1,h:2/jobs?ca=/ca.pem";
        let loc = Location::from(text);
        assert_eq!(loc, Location::Etcd(text.into()));
        assert_eq!(loc.to_string(), text);
        assert!(matches!(loc.file_path(), Err(Error::InvalidOptions { .. })));
    }

    #[test]
    #[cfg(not(feature = "etcd"))]
    fn without_the_feature_an_etcd_location_says_how_to_build() {
        for r in [
            crate::LeaseTable::open("etcd://127.0.0.1:2379/jobs").map(|_| ()),
            crate::LeaseTable::create("etcd://127.0.0.1:2379/jobs", &TableOptions::new())
                .map(|_| ()),
            crate::LeaseTable::remove("etcd://127.0.0.1:2379/jobs"),
        ] {
            match r {
                Err(Error::Unsupported { reason }) => {
                    assert!(reason.contains("--features etcd"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_invalid_shm_name_is_refused_saying_why() {
        assert!(reason("").contains("empty"));
        assert!(reason("..").contains("cannot name"));
        let long = reason(&"a".repeat(300));
        assert!(long.contains("300 bytes long: at most 250"), "{long}");
        assert!(long.len() < 150, "quotes the whole name: {long}");
        assert!(reason(&"é".repeat(200)).contains("400 bytes"));
        assert!(reason("a/b").contains("'/'"));
        let ok = "a".repeat(250);
        assert_eq!(Location::Shm(ok.clone()).file_path().unwrap(), Path::new("/dev/shm").join(ok));
    }
}

/// How often a waiting acquisition with an [`Interrupt`] asks it whether to stop, at
/// the longest.
pub const INTERRUPT_POLL: Duration = Duration::from_millis(50);

/// A caller's way to end a waiting acquisition early: a check the wait calls, on the
/// waiting thread, each time it wakes and at least every [`INTERRUPT_POLL`]; when it
/// returns `true` the wait ends with [`Error::Interrupted`]. For a front end that must
/// run signal handlers during a long wait (Python's Ctrl-C), or a cancel flag set by
/// another thread. See [`AcquireOptions::interrupt`].
#[derive(Clone)]
pub struct Interrupt(Arc<dyn Fn() -> bool + Send + Sync>);

impl Interrupt {
    /// An interrupt that asks `check`.
    pub fn new(check: impl Fn() -> bool + Send + Sync + 'static) -> Interrupt {
        Interrupt(Arc::new(check))
    }

    /// Whether the caller asks the wait to stop.
    pub(crate) fn asked(&self) -> bool {
        (self.0)()
    }
}

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Interrupt(..)")
    }
}

/// Options for [`LeaseTable::acquire_with`].
#[derive(Clone, Debug, Default)]
pub struct AcquireOptions {
    pub(crate) wait: Option<Option<Duration>>,
    pub(crate) label: Label,
    /// 0 or 1: exclusive.
    pub(crate) permits: u32,
    /// A shared grant of a shared name.
    pub(crate) shared: bool,
    /// Granted in arrival order among fair acquirers.
    pub(crate) fair: bool,
    /// Asked while waiting whether to stop.
    pub(crate) interrupt: Option<Interrupt>,
}

impl AcquireOptions {
    pub(crate) fn label_word(&self) -> Label {
        self.label
    }

    /// Don't wait, no label.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wait while the lease is held: up to `timeout`, or forever with `None`.
    pub fn wait(mut self, timeout: Option<Duration>) -> Self {
        self.wait = Some(timeout);
        self
    }

    /// Admit up to `permits` holders of the name at once (1 ..= 128; 1, the default,
    /// is an exclusive lease). Each holder gets a grant of its own, with its own TTL
    /// and token. Every user of a name must ask for the same number: the first use
    /// records it, and a call asking for another fails with [`Error::WrongKind`].
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("shmlease-doc-permits-{}", std::process::id()));
    /// # let table = shmlease::LeaseTable::open_or_create(&path, &Default::default())?;
    /// use shmlease::AcquireOptions;
    /// use std::time::Duration;
    ///
    /// let two = AcquireOptions::new().permits(2)?;
    /// let ttl = Duration::from_secs(30);
    /// let a = table.acquire_with("gpu-pool", ttl, &two)?;
    /// let b = table.acquire_with("gpu-pool", ttl, &two)?;
    /// assert!(b.token() > a.token());
    /// // Both permits are taken: a third holder is refused.
    /// assert!(matches!(table.acquire_with("gpu-pool", ttl, &two), Err(shmlease::Error::Held { .. })));
    /// // And nobody may use the name with another number.
    /// assert!(matches!(table.try_acquire("gpu-pool", ttl), Err(shmlease::Error::WrongKind { .. })));
    /// # drop((a, b));
    /// # shmlease::LeaseTable::remove(&path)?;
    /// # Ok::<(), shmlease::Error>(())
    /// ```
    pub fn permits(mut self, permits: u32) -> Result<Self> {
        if !(1..=layout::MAX_SEATS).contains(&permits) {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "permits must be between 1 and {}, not {permits}",
                    layout::MAX_SEATS
                ),
            });
        }
        self.permits = permits;
        Ok(self)
    }

    /// Take a *shared* grant: the name admits up to 64 shared holders at once, or one
    /// exclusive holder, never both. The first shared acquisition makes the name shared
    /// (an exclusive holder it has then stays, as the name's exclusive holder); from
    /// then on, an exclusive acquisition of it ([`LeaseTable::try_acquire`], or
    /// [`acquire_with`](LeaseTable::acquire_with) without `shared`) waits until its
    /// shared holders have left, and blocks new shared grants while it waits, so that
    /// exclusive acquirers never starve. Each holder has its own TTL and token; tokens of
    /// the name grow across both kinds. Not combinable with [`permits`](Self::permits)
    /// (a shared name cannot have permits): [`Error::WrongKind`] names the conflict.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("shmlease-doc-shared-{}", std::process::id()));
    /// # let table = shmlease::LeaseTable::open_or_create(&path, &Default::default())?;
    /// use shmlease::{AcquireOptions, Error};
    /// use std::time::Duration;
    ///
    /// let ttl = Duration::from_secs(30);
    /// let shared = AcquireOptions::new().shared(true);
    /// let r1 = table.acquire_with("catalog", ttl, &shared)?;
    /// let r2 = table.acquire_with("catalog", ttl, &shared)?;
    /// // An exclusive holder must wait for both readers.
    /// assert!(matches!(table.try_acquire("catalog", ttl), Err(Error::Held { .. })));
    /// drop((r1, r2));
    /// let writer = table.try_acquire("catalog", ttl)?;
    /// assert!(matches!(table.acquire_with("catalog", ttl, &shared), Err(Error::Held { .. })));
    /// # drop(writer);
    /// # shmlease::LeaseTable::remove(&path)?;
    /// # Ok::<(), shmlease::Error>(())
    /// ```
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Wait in arrival order: among acquirers of the name that ask for fairness, the one
    /// that started waiting first is granted first, whatever the name's kind. A fair
    /// acquirer that has to wait takes a place in the name's queue (shown in
    /// [`LeaseInfo::queue`](crate::LeaseInfo::queue)); a waiter ahead that dies is
    /// passed over once its death is provable (within 50 ms), one that is stopped or
    /// hung once its place expires (2 s, [`PLACE_TTL`](crate::PLACE_TTL)), one that
    /// times out or gives up at once. Without waiting, a fair acquisition does not pass
    /// waiters in line: it fails with [`Error::Held`] while any wait. Acquirers that do
    /// not ask for fairness (the default, and the fast path) ignore the queue and may
    /// take the name between two fair ones. At most 127 fair acquirers can wait for a
    /// name at once ([`Error::Busy`] past that).
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("shmlease-doc-fair-{}", std::process::id()));
    /// # let table = shmlease::LeaseTable::open_or_create(&path, &Default::default())?;
    /// use shmlease::AcquireOptions;
    /// use std::time::Duration;
    ///
    /// let fair = AcquireOptions::new().fair(true).wait(Some(Duration::from_secs(5)));
    /// let lease = table.acquire_with("printer", Duration::from_secs(30), &fair)?;
    /// # drop(lease);
    /// # shmlease::LeaseTable::remove(&path)?;
    /// # Ok::<(), shmlease::Error>(())
    /// ```
    pub fn fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// Let the caller end the wait early: `check` is called on the waiting thread each
    /// time the wait wakes, and at least every [`INTERRUPT_POLL`] (50 ms); once it
    /// returns `true`, the acquisition gives up what its wait held (a fair queue's
    /// place, an exclusive acquirer's hold on a shared name) and fails with
    /// [`Error::Interrupted`]. Without waiting ([`wait`](Self::wait) not set) it is
    /// never called. A check that panics ends the wait the same way, and its panic then
    /// goes on from `acquire_with`. One wait with an interrupt, rather than many short waits, keeps
    /// what a wait holds between its wake-ups: a fair waiter its place, a waiting
    /// exclusive acquirer of a shared name its precedence over shared ones. The check
    /// may take as long as it likes (a signal handler that runs long): a helper thread
    /// keeps what the wait holds renewed meanwhile.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("shmlease-doc-interrupt-{}", std::process::id()));
    /// # let table = shmlease::LeaseTable::open_or_create(&path, &Default::default())?;
    /// use shmlease::{AcquireOptions, Error, Interrupt};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let ttl = Duration::from_secs(30);
    /// let held = table.try_acquire("report", ttl)?;
    /// let stop = Arc::new(AtomicBool::new(false));
    /// let flag = Arc::clone(&stop);
    /// let options = AcquireOptions::new()
    ///     .wait(None) // forever, unless interrupted
    ///     .interrupt(Interrupt::new(move || flag.load(Ordering::Relaxed)));
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         std::thread::sleep(Duration::from_millis(20));
    ///         stop.store(true, Ordering::Relaxed);
    ///     });
    ///     let e = table.acquire_with("report", ttl, &options).unwrap_err();
    ///     assert!(matches!(e, Error::Interrupted { .. }));
    /// });
    /// # drop(held);
    /// # shmlease::LeaseTable::remove(&path)?;
    /// # Ok::<(), shmlease::Error>(())
    /// ```
    pub fn interrupt(mut self, check: Interrupt) -> Self {
        self.interrupt = Some(check);
        self
    }

    /// Attach a label (up to 8 bytes, shown to others inspecting the lease).
    pub fn label(mut self, label: &str) -> Result<Self> {
        self.label = Label::new(label).ok_or_else(|| Error::InvalidLabel {
            reason: format!("{label:?} is longer than 8 bytes or contains NUL"),
        })?;
        Ok(self)
    }
}
