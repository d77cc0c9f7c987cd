//! Shared pieces of the benchmark programs: shared-memory mappings, the baseline
//! locks (robust process-shared pthread mutex, process-shared POSIX semaphore, flock,
//! fcntl OFD locks), clock reads, and where results are written.
//!
//! Every baseline lives in a `MAP_SHARED` file mapping (in `/dev/shm`), exactly like a
//! lease table, so that the comparison is about the synchronisation, not the memory.

#![allow(dead_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A unique name for this process's scratch objects.
pub fn scratch_name(what: &str) -> String {
    format!("shmlease-bench-{what}-{}", std::process::id())
}

/// A path in `/dev/shm` (tmpfs, like a POSIX shm lease table).
pub fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name)
}

/// Where the custom harnesses write their JSON results: `target/shmlease-bench/NAME`,
/// where NAME is the `--save-baseline` argument (as for criterion) or `new`.
pub fn out_dir() -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    let tag = args
        .iter()
        .position(|a| a == "--save-baseline")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "new".to_string());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // target/release/deps/NAME-HASH -> target
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("shmlease-bench").join(tag);
    std::fs::create_dir_all(&dir).expect("creating the results directory");
    dir
}

/// Whether the program runs as a benchmark (`cargo bench` passes `--bench`); under
/// `cargo test` the custom harnesses do nothing and exit at once.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `clock_gettime(clock)` in nanoseconds.
#[inline(always)]
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and the clock ids used exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_MONOTONIC` in nanoseconds.
#[inline(always)]
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// A `MAP_SHARED` mapping of a file in `/dev/shm`, zero-filled when created.
pub struct Shm {
    ptr: *mut u8,
    len: usize,
    path: PathBuf,
    owner: bool,
    _file: File,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through atomics or
// process-shared primitives designed for concurrent use.
unsafe impl Send for Shm {}
// SAFETY: as above.
unsafe impl Sync for Shm {}

impl Shm {
    /// Creates (truncating) the file `path` with `len` zero bytes and maps it.
    pub fn create(path: &Path, len: usize) -> Shm {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .expect("creating a shared-memory file");
        file.set_len(len as u64).expect("sizing a shared-memory file");
        Shm::map(file, path, len, true)
    }

    /// Maps an existing file created by [`Shm::create`].
    pub fn open(path: &Path, len: usize) -> Shm {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("opening a shared-memory file");
        Shm::map(file, path, len, false)
    }

    fn map(file: File, path: &Path, len: usize, owner: bool) -> Shm {
        // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the
        // address; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert!(ptr != libc::MAP_FAILED, "mmap failed: {}", std::io::Error::last_os_error());
        Shm { ptr: ptr as *mut u8, len, path: path.to_path_buf(), owner, _file: file }
    }

    /// A pointer to byte `offset` of the mapping, as a `T`.
    pub fn at<T>(&self, offset: usize) -> *mut T {
        assert!(offset + std::mem::size_of::<T>() <= self.len);
        assert!(offset % std::mem::align_of::<T>() == 0);
        self.ptr.wrapping_add(offset) as *mut T
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and nothing refers to it after drop.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Initialises a robust, process-shared pthread mutex in place.
///
/// # Safety
/// `m` points to writable, suitably aligned shared memory that no one uses yet.
pub unsafe fn robust_mutex_init(m: *mut libc::pthread_mutex_t) {
    // SAFETY: the attribute object lives on our stack for the whole sequence; `m` is
    // valid per the caller's contract.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
        assert_eq!(libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED), 0);
        assert_eq!(libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST), 0);
        assert_eq!(libc::pthread_mutex_init(m, &attr), 0);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
}

/// Locks a robust mutex, making it consistent again if its owner died.
///
/// # Safety
/// `m` was initialised by [`robust_mutex_init`] and is still mapped.
#[inline(always)]
pub unsafe fn robust_lock(m: *mut libc::pthread_mutex_t) {
    // SAFETY: per the caller's contract.
    let rc = unsafe { libc::pthread_mutex_lock(m) };
    if rc == libc::EOWNERDEAD {
        // SAFETY: we own the mutex now (EOWNERDEAD hands it over).
        unsafe { libc::pthread_mutex_consistent(m) };
    } else {
        debug_assert_eq!(rc, 0);
    }
}

/// Unlocks a mutex locked by [`robust_lock`].
///
/// # Safety
/// The caller holds `m`.
#[inline(always)]
pub unsafe fn robust_unlock(m: *mut libc::pthread_mutex_t) {
    // SAFETY: per the caller's contract.
    unsafe { libc::pthread_mutex_unlock(m) };
}

/// Initialises a process-shared POSIX semaphore with value 1.
///
/// # Safety
/// `s` points to writable, suitably aligned shared memory that no one uses yet.
pub unsafe fn shared_sem_init(s: *mut libc::sem_t) {
    // SAFETY: per the caller's contract.
    assert_eq!(unsafe { libc::sem_init(s, 1, 1) }, 0);
}

/// A file to take `flock` and OFD locks on (each `open` is its own open file
/// description, as in two processes).
pub fn lock_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .expect("opening the lock file")
}

/// `flock(fd, op)`, retried on EINTR.
#[inline(always)]
pub fn flock(f: &File, op: libc::c_int) {
    loop {
        // SAFETY: a plain system call on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            debug_assert_eq!(rc, 0);
            return;
        }
    }
}

/// An OFD lock request on the whole file: `F_WRLCK` or `F_UNLCK` with `F_OFD_SETLK` /
/// `F_OFD_SETLKW`.
#[inline(always)]
pub fn ofd_lock(f: &File, cmd: libc::c_int, kind: libc::c_int) -> bool {
    // SAFETY: an all-zero flock struct is valid; l_pid must be 0 for OFD locks.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: a plain system call on a descriptor we own, with a valid flock struct.
    unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl as *mut libc::flock) == 0 }
}

/// A C string for the FFI.
pub fn c_string(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// Percentile `p` (0..=100) of sorted nanosecond samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A small, fast, deterministic generator (xorshift64*), for pre-generated index lists.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Pins the calling thread (the main thread: the whole process for these programs) to
/// one CPU, so that the placement of the two processes of a handoff is chosen, not left
/// to the scheduler.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it;
    // sched_setaffinity reads it for the duration of the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The CPU to put the second process on for a cross-core run (1 when there are two or
/// more CPUs, else 0).
pub fn other_cpu() -> usize {
    // Not available_parallelism(): that honours this process's affinity, which a
    // previous pin_to_cpu has narrowed to one CPU.
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::from(n > 1)
}
