//! A table's life outside its slots: creating it (atomically), opening and validating
//! it (the header is untrusted input), rebasing its clock after a reboot, removing it.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use bytemuck::Zeroable;

use super::{Inner, LeaseTable};
use crate::error::{Error, Result};
use crate::fault::{point, Op};
use crate::identity;
use crate::info::{LeaseInfo, LeaseState};
use crate::layout::{self, grant, Header, HEADER_SIZE, NAME_MAX, SLOT_SIZE, TIME_LIMIT};
use crate::options::{Location, TableOptions};
use crate::sync::{AtomicU128, Ordering};
use crate::sys;

/// An etcd location's table: `$etcd`, with `$l` the parsed `EtcdLocation`.
#[cfg(feature = "etcd")]
macro_rules! on_etcd_location {
    ($text:expr, $l:ident => $etcd:expr) => {{
        let $l = crate::etcd::EtcdLocation::parse($text)?;
        $etcd
    }};
}

impl LeaseTable {
    /// Creates a new table at `location`; fails with [`Error::AlreadyExists`] if
    /// anything is there. The table appears fully initialised or not at all, even if
    /// this process is killed half-way.
    pub fn create(location: impl Into<Location>, options: &TableOptions) -> Result<LeaseTable> {
        let location = location.into();
        #[cfg(feature = "etcd")]
        if let Location::Etcd(text) = &location {
            return on_etcd_location!(text, l => crate::etcd::EtcdTable::create(&l, options).map(LeaseTable::from_etcd));
        }
        #[cfg(not(feature = "etcd"))]
        if let Some(refusal) = crate::options::etcd_not_built(&location) {
            return Err(refusal);
        }
        options.validate_for_create()?;
        let path = location.file_path()?;
        let capacity = options.get_capacity();
        let size = layout::table_size(capacity) as u64;
        let created =
            sys::create_linked(&path, options.get_mode(), size, |file| initialise(file, capacity));
        let file = match created {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists { location: location.to_string() })
            }
            Err(e) => return Err(open_error(&location, e, "creating")),
        };
        Self::from_file(location, file, options)
    }

    /// Opens an existing table with default options (same owner, not world-writable).
    pub fn open(location: impl Into<Location>) -> Result<LeaseTable> {
        Self::open_with(location, &TableOptions::new())
    }

    /// Opens an existing table; `options` says what ownership to accept.
    pub fn open_with(location: impl Into<Location>, options: &TableOptions) -> Result<LeaseTable> {
        let location = location.into();
        #[cfg(feature = "etcd")]
        if let Location::Etcd(text) = &location {
            // Ownership options have no meaning on etcd (its users and roles decide).
            return on_etcd_location!(text, l => crate::etcd::EtcdTable::open(&l).map(LeaseTable::from_etcd));
        }
        #[cfg(not(feature = "etcd"))]
        if let Some(refusal) = crate::options::etcd_not_built(&location) {
            return Err(refusal);
        }
        let path = location.file_path()?;
        let file = sys::open_nofollow(&path).map_err(|e| open_error(&location, e, "opening"))?;
        Self::from_file(location, file, options)
    }

    /// Opens the table, creating it with `options` if there is none. Any number of
    /// processes may race here: all end up with the same, single table.
    pub fn open_or_create(
        location: impl Into<Location>,
        options: &TableOptions,
    ) -> Result<LeaseTable> {
        let location = location.into();
        for _ in 0..16 {
            match Self::open_with(&location, options) {
                Err(Error::NotFound { .. }) => {}
                other => return other,
            }
            match Self::create(&location, options) {
                Err(Error::AlreadyExists { .. }) => {}
                other => return other,
            }
        }
        Err(Error::Busy {
            location: location.to_string(),
            reason: "it kept being removed and re-created while this call opened it".into(),
        })
    }

    /// Removes the table's name, refusing with [`Error::InUse`] while any grant in it
    /// is unexpired. Processes that have the table mapped keep using it, but new `open`s
    /// will not find it: the next `open_or_create` makes a *new* table there, whose
    /// grants do not exclude the old one's (two holders of a name, tokens starting
    /// over). So remove a table only when nothing uses it; the check is a safety net,
    /// not a lock (a grant made just after the check is not seen).
    ///
    /// Refuses ([`Error::NotATable`]) to remove anything that does not start like a
    /// lease table, so a mistyped location cannot delete another file, even with force.
    /// A damaged table (right magic, unusable contents) or another version's is removed
    /// only with force: whether it is in use cannot be told.
    pub fn remove(location: impl Into<Location>) -> Result<()> {
        Self::remove_with(location, &RemoveOptions::new())
    }

    /// [`LeaseTable::remove`] with options: [`RemoveOptions::force`] removes the table
    /// even while grants in it are live, or when it cannot be read.
    pub fn remove_with(location: impl Into<Location>, options: &RemoveOptions) -> Result<()> {
        let location = location.into();
        #[cfg(feature = "etcd")]
        if let Location::Etcd(text) = &location {
            let force = options.force;
            return on_etcd_location!(text, l => crate::etcd::EtcdTable::remove(&l, force));
        }
        #[cfg(not(feature = "etcd"))]
        if let Some(refusal) = crate::options::etcd_not_built(&location) {
            return Err(refusal);
        }
        let path = location.file_path()?;
        let file = sys::open_nofollow(&path).map_err(|e| open_error(&location, e, "opening"))?;
        let meta = file.metadata().map_err(|e| Error::io(format!("inspecting {location}"), e))?;
        let mut magic = [0u8; 8];
        let is_table = meta.file_type().is_file()
            && file.read_exact_at(&mut magic, 0).is_ok()
            && u64::from_ne_bytes(magic) == layout::MAGIC;
        if !is_table {
            return Err(Error::NotATable {
                location: location.to_string(),
                reason: "does not start with the lease table magic number; not removed".into(),
            });
        }
        if !options.force {
            // Whoever may remove it may look into it, whatever its owner or mode.
            let look = TableOptions::new().allow_foreign_owner(true).allow_world_writable(true);
            // A damaged table or another version's cannot be read here, so whether it
            // is in use cannot be told: processes that mapped it before the damage, or
            // of the other version, may be using it.
            let unreadable = |reason: String| {
                format!(
                    "{reason}; not removed, since whether other processes still use it \
                     cannot be told (remove it with force once none does)"
                )
            };
            match Self::from_file(location.clone(), file, &look) {
                Err(Error::NotATable { location, reason }) => {
                    return Err(Error::NotATable { location, reason: unreadable(reason) })
                }
                Err(Error::Incompatible { location, reason }) => {
                    return Err(Error::Incompatible { location, reason: unreadable(reason) })
                }
                Err(Error::Corrupt { location, reason }) => {
                    return Err(Error::Corrupt { location, reason: unreadable(reason) })
                }
                Err(e) => return Err(e),
                Ok(table) => {
                    let leases: Vec<LeaseInfo> =
                        table.list()?.into_iter().filter(|l| l.state == LeaseState::Held).collect();
                    if !leases.is_empty() {
                        return Err(Error::InUse { location: location.to_string(), leases });
                    }
                }
            }
        }
        std::fs::remove_file(&path).map_err(|e| open_error(&location, e, "removing"))
    }

    fn from_file(location: Location, file: File, options: &TableOptions) -> Result<LeaseTable> {
        if !AtomicU128::is_lock_free() {
            return Err(Error::Unsupported {
                reason: "this CPU has no lock-free 128-bit compare-and-swap (x86-64 needs \
                         cmpxchg16b); an emulated one would not be atomic across processes"
                    .into(),
            });
        }
        if let Err(why) = identity::timens_offset_known() {
            return Err(Error::Unsupported { reason: why.into() });
        }
        let loc = || location.to_string();
        let meta = file.metadata().map_err(|e| Error::io(format!("inspecting {location}"), e))?;
        if !meta.file_type().is_file() {
            return Err(Error::NotATable { location: loc(), reason: "not a regular file".into() });
        }
        if meta.uid() != sys::geteuid() && !options.foreign_owner_allowed() {
            return Err(Error::Permission {
                location: loc(),
                reason: format!(
                    "owned by uid {}, not by you (uid {}); opt in with allow_foreign_owner if you trust that user",
                    meta.uid(),
                    sys::geteuid()
                ),
            });
        }
        if meta.mode() & 0o002 != 0 && !options.world_writable_allowed() {
            return Err(Error::Permission {
                location: loc(),
                reason: format!(
                    "is world-writable (mode {:o}): any user could forge leases; opt in with allow_world_writable",
                    meta.mode() & 0o777
                ),
            });
        }
        let capacity = validate_header(&file, meta.len(), &location)?;
        let size = layout::table_size(capacity);
        let map = memmap2::MmapOptions::new()
            .len(size)
            .map_raw(&file)
            .map_err(|e| Error::io(format!("mapping {location}"), e))?;
        let mut inner = Inner { map, file, location, capacity, time_base: 0 };
        inner.time_base = inner.settle_clock()?;
        Ok(LeaseTable { backend: super::Backend::Shm(Arc::new(inner)) })
    }
}

/// Options for [`LeaseTable::remove_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoveOptions {
    force: bool,
}

impl RemoveOptions {
    /// Refuse while grants are live.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove even while grants are live. Their holders keep the old table while new
    /// users get a new one: neither excludes the other.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

fn open_error(location: &Location, e: std::io::Error, doing: &str) -> Error {
    let loc = location.to_string();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound { location: loc },
        Some(libc::ELOOP) => Error::NotATable {
            location: loc,
            reason: "is a symbolic link (not followed, for safety)".into(),
        },
        Some(libc::EISDIR) => Error::NotATable { location: loc, reason: "is a directory".into() },
        Some(libc::EACCES | libc::EPERM) => Error::Permission {
            location: loc,
            reason: format!("permission denied while {doing} it"),
        },
        _ => Error::io(format!("{doing} {loc}"), e),
    }
}

/// Writes a fresh header into a new table file with `pwrite`: the file is not linked into
/// the file system yet, so nobody else can have mapped it.
fn initialise(file: &File, capacity: u32) -> std::io::Result<()> {
    let boot = sys::boot_id().unwrap_or([0; 16]);
    let me = identity::me();
    let header = layout::HeaderImage {
        descriptor: layout::Descriptor {
            magic: layout::MAGIC,
            version_endian: layout::FORMAT_VERSION as u64 | (layout::ENDIAN_MARK as u64) << 32,
            geometry: layout::GEOMETRY,
            capacity: capacity as u64,
            created_unix_ns: sys::realtime_ns(),
            creator: me.pid as u64 | (sys::geteuid() as u64) << 32,
            clock_id: layout::CLOCK_ID_MONOTONIC as u64,
            reserved0: 0,
        },
        boot_id: [
            u64::from_le_bytes(boot[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(boot[8..].try_into().expect("8 bytes")),
        ],
        ..Zeroable::zeroed()
    };
    let bytes = bytemuck::bytes_of(&header);
    let line1 = std::mem::size_of::<layout::Descriptor>();
    // Line 0 after the magic, the other lines, and the magic last: a file with it is a
    // complete header.
    file.write_all_at(&bytes[8..line1], 8)?;
    point(Op::Create);
    file.write_all_at(&bytes[line1..], line1 as u64)?;
    point(Op::Create);
    file.write_all_at(&bytes[..8], 0)?;
    point(Op::Create);
    file.sync_data()
}

/// Checks a table file's header (read with `pread`, so a foreign file is never mapped
/// or modified); returns its capacity.
fn validate_header(file: &File, len: u64, location: &Location) -> Result<u32> {
    let loc = || location.to_string();
    if len == 0 {
        return Err(Error::NotATable { location: loc(), reason: "empty file".into() });
    }
    if len < HEADER_SIZE as u64 {
        return Err(Error::NotATable {
            location: loc(),
            reason: format!(
                "{len} bytes is too small for a lease table header ({HEADER_SIZE} bytes)"
            ),
        });
    }
    let mut header: layout::Descriptor = Zeroable::zeroed();
    file.read_exact_at(bytemuck::bytes_of_mut(&mut header), 0)
        .map_err(|e| Error::io(format!("reading {location}"), e))?;
    if header.magic != layout::MAGIC {
        return Err(Error::NotATable { location: loc(), reason: "wrong magic number".into() });
    }
    let version = header.version();
    if header.endian_mark() != layout::ENDIAN_MARK {
        return Err(Error::Incompatible {
            location: loc(),
            reason: "written on a machine of the other byte order".into(),
        });
    }
    if version != layout::FORMAT_VERSION {
        let rel = if version > layout::FORMAT_VERSION { "newer" } else { "older" };
        return Err(Error::Incompatible {
            location: loc(),
            reason: format!(
                "format version {version} is {rel} than this library's ({})",
                layout::FORMAT_VERSION
            ),
        });
    }
    if header.geometry != layout::GEOMETRY {
        let g = header.geometry;
        return Err(Error::Incompatible {
            location: loc(),
            reason: format!(
                "layout differs: header {} / slot {} / name {} / align {} bytes, expected {HEADER_SIZE} / {SLOT_SIZE} / {NAME_MAX} / {}",
                g & 0xffff,
                (g >> 16) & 0xffff,
                (g >> 32) & 0xffff,
                g >> 48,
                layout::SLOT_ALIGN
            ),
        });
    }
    if header.clock_id != layout::CLOCK_ID_MONOTONIC as u64 {
        return Err(Error::Incompatible {
            location: loc(),
            reason: format!("unknown clock id {}", header.clock_id),
        });
    }
    let capacity = header.capacity;
    if capacity == 0 || capacity > layout::MAX_CAPACITY as u64 {
        return Err(Error::Corrupt {
            location: loc(),
            reason: format!("impossible capacity {capacity}"),
        });
    }
    let capacity = capacity as u32;
    let expected = layout::table_size(capacity) as u64;
    if len != expected {
        return Err(Error::Corrupt {
            location: loc(),
            reason: format!(
                "file is {len} bytes but a table of {capacity} slots is {expected} bytes{}",
                if len < expected { " (truncated?)" } else { "" }
            ),
        });
    }
    Ok(capacity)
}

impl Inner {
    /// Returns the table's time base, first rebasing it if the table's clock belongs to
    /// an earlier boot: after a reboot CLOCK_MONOTONIC restarts near zero, so every
    /// recorded deadline would look far away. The new base puts table time past every
    /// deadline and token in the table, voiding all leases while tokens keep growing.
    fn settle_clock(&self) -> Result<u64> {
        let boot = sys::boot_id().map_err(|e| Error::io("reading the boot id", e))?;
        let boot = [
            u64::from_le_bytes(boot[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(boot[8..].try_into().expect("8 bytes")),
        ];
        let h = self.header();
        let same_boot = |h: &Header| {
            h.boot_id[1].load(Ordering::Acquire) == boot[1]
                && h.boot_id[0].load(Ordering::Acquire) == boot[0]
        };
        if !same_boot(h) {
            let _lock = self.lock()?;
            point(Op::Rebase);
            if !same_boot(h) {
                let mut high = h.token_floor.load(Ordering::Acquire);
                for index in 0..self.capacity {
                    let g = self.slot(index).grant.load(Ordering::Acquire);
                    for v in [grant::deadline(g), grant::token(g)] {
                        if v < TIME_LIMIT {
                            high = high.max(v);
                        }
                    }
                }
                let host_now =
                    sys::monotonic_ns().wrapping_sub(identity::me().timens_offset_ns as u64);
                let base = high.saturating_add(1).wrapping_sub(host_now);
                h.time_base.store(base, Ordering::Release);
                point(Op::Rebase);
                h.boot_id[0].store(boot[0], Ordering::Release);
                point(Op::Rebase);
                h.boot_id[1].store(boot[1], Ordering::Release);
                point(Op::Rebase);
            }
        }
        let base = h.time_base.load(Ordering::Acquire);
        let host_now = sys::monotonic_ns().wrapping_sub(identity::me().timens_offset_ns as u64);
        if host_now.wrapping_add(base) >= TIME_LIMIT {
            return Err(Error::Corrupt {
                location: self.location.to_string(),
                reason: "the table's clock base is out of range".into(),
            });
        }
        Ok(base)
    }
}
