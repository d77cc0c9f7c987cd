#![allow(missing_docs)]
//! Every atomic the lease protocol touches comes from here, so that the protocol can be
//! model-checked: under `cfg(loom)` these are loom's instrumented types, otherwise the
//! real ones. The 128-bit word is `portable_atomic`'s, with its three operations inlined
//! on x86-64 where the CPU allows it (see [`AtomicU128`]).

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU64, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering};

/// A 128-bit atomic in memory that other processes share.
///
/// `portable_atomic::AtomicU128` chooses `cmpxchg16b` at run time on x86-64, through a
/// function pointer: every load and CAS is an out-of-line call (a tenth of the fast
/// path's cycles, BENCHMARKS.md). This wrapper decides once per process instead, and
/// then runs the instructions inline:
///
/// - CAS: `lock cmpxchg16b` (sequentially consistent, as every locked instruction).
/// - load and store: `vmovdqa` of the aligned 16 bytes, which Intel (SDM vol. 3A §9.1.1)
///   and AMD (APM vol. 1 §3.9.1.3) guarantee to be single atomic accesses on every
///   processor of theirs that enumerates AVX. A store with `SeqCst` adds `mfence`, as a
///   C++ compiler does for a 64-bit one.
///
/// Used only on a CPU that has `cmpxchg16b`, AVX (enabled by the OS) and an Intel or AMD
/// vendor string; anywhere else (other x86-64 vendors, aarch64, any other target) every
/// operation is `portable_atomic`'s, whose instructions are equally atomic: the two
/// paths may run on the same word in different processes. On aarch64 that is
/// `ldxp`/`stxp`, or `casp` where LSE is known (at compile time, or through
/// portable-atomic's own run-time dispatch); an inline `casp` path like the one here is
/// left for when an aarch64 machine can measure it. Where neither is lock-free, tables
/// refuse to open ([`AtomicU128::is_lock_free`]).
///
/// `SHMLEASE_ATOMICS=portable` in the environment makes a process use
/// `portable_atomic` everywhere, so that tests can run both paths on one table at once.
#[cfg(not(loom))]
#[repr(transparent)]
#[derive(Debug)]
pub struct AtomicU128(portable_atomic::AtomicU128);

#[cfg(not(loom))]
impl AtomicU128 {
    pub const fn new(v: u128) -> Self {
        Self(portable_atomic::AtomicU128::new(v))
    }

    /// Whether the operations are atomic across processes (not a process-local lock).
    pub fn is_lock_free() -> bool {
        portable_atomic::AtomicU128::is_lock_free()
    }

    #[inline(always)]
    pub fn load(&self, order: Ordering) -> u128 {
        #[cfg(target_arch = "x86_64")]
        if x86::inline_ok() {
            // SAFETY: the pointer is the word's own, 16-byte aligned (the type's
            // alignment) and valid for reads; `inline_ok` checked the CPU.
            return unsafe { x86::load(self.0.as_ptr()) };
        }
        self.0.load(order)
    }

    /// The high 64 bits alone (a grant word's token), in one 64-bit load where that is
    /// an atomic read of them (x86-64: an aligned 8-byte load, part of the same
    /// coherence order as the 16-byte accesses).
    #[inline(always)]
    pub fn load_high(&self, order: Ordering) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if x86::inline_ok() {
            // SAFETY: as in `load`; the high half is 8-byte aligned.
            return unsafe { x86::load_high(self.0.as_ptr()) };
        }
        (self.0.load(order) >> 64) as u64
    }

    #[inline(always)]
    pub fn store(&self, v: u128, order: Ordering) {
        #[cfg(target_arch = "x86_64")]
        if x86::inline_ok() {
            // SAFETY: as in `load`, and the word is writable (atomics are interior
            // mutable).
            return unsafe { x86::store(self.0.as_ptr(), v, order == Ordering::SeqCst) };
        }
        self.0.store(v, order)
    }

    #[inline(always)]
    pub fn compare_exchange(
        &self,
        current: u128,
        new: u128,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u128, u128> {
        #[cfg(target_arch = "x86_64")]
        if x86::inline_ok() {
            // SAFETY: as in `store`.
            let (previous, ok) = unsafe { x86::cmpxchg16b(self.0.as_ptr(), current, new) };
            return if ok { Ok(previous) } else { Err(previous) };
        }
        self.0.compare_exchange(current, new, success, failure)
    }
}

/// A `SeqCst` fence between a 128-bit CAS and a look at another word, for the two
/// sides of a Dekker pair (each side CASes its own word, then reads the other's: at
/// least one sees the other's CAS). Nothing on x86-64's inline path, where the CAS is
/// `lock cmpxchg16b`: a locked instruction is itself a full barrier (Intel SDM vol. 3A
/// §9.2.2: "Locked instructions have a total order"; reads are not reordered with
/// them), and the asm blocks are compiler barriers. Everywhere else (portable-atomic's
/// CAS, loom), `fence(SeqCst)`.
#[inline(always)]
pub fn fence_after_cas128() {
    #[cfg(all(not(loom), target_arch = "x86_64"))]
    if x86::inline_ok() {
        return;
    }
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// Whether this process runs the inline 128-bit instructions (else portable-atomic's).
#[cfg(not(loom))]
pub fn inline_128() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::inline_ok();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

#[cfg(all(not(loom), target_arch = "x86_64"))]
mod x86 {
    use core::arch::asm;
    use core::sync::atomic::{AtomicU8, Ordering};

    /// 0: not yet decided; 1: inline instructions; 2: portable-atomic.
    static CHOICE: AtomicU8 = AtomicU8::new(0);

    /// Whether this CPU runs the inline instructions (decided once per process).
    #[inline(always)]
    pub(super) fn inline_ok() -> bool {
        match CHOICE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => decide(),
        }
    }

    #[cold]
    #[inline(never)]
    fn decide() -> bool {
        let forced = std::env::var_os("SHMLEASE_ATOMICS").is_some_and(|v| v == "portable");
        let ok = !forced
            && std::is_x86_feature_detected!("cmpxchg16b")
            && std::is_x86_feature_detected!("avx")
            && intel_or_amd();
        CHOICE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        ok
    }

    /// The vendors whose manuals make AVX imply atomic aligned 16-byte loads and stores.
    fn intel_or_amd() -> bool {
        #[allow(unused_unsafe)]
        // SAFETY: `cpuid` exists on every x86-64 CPU; leaf 0 is always valid.
        let id = unsafe { core::arch::x86_64::__cpuid(0) };
        let vendor = [id.ebx, id.edx, id.ecx];
        vendor == [0x756e_6547, 0x4965_6e69, 0x6c65_746e] // "GenuineIntel"
            || vendor == [0x6874_7541, 0x6974_6e65, 0x444d_4163] // "AuthenticAMD"
    }

    /// # Safety
    /// `src` is 16-byte aligned and valid for reads; the CPU passed `inline_ok`.
    #[inline(always)]
    pub(super) unsafe fn load(src: *const u128) -> u128 {
        let (lo, hi): (u64, u64);
        // SAFETY: the caller guarantees alignment and validity; AVX is present.
        unsafe {
            asm!(
                "vmovdqa {x}, xmmword ptr [{src}]",
                "vmovq {lo}, {x}",
                "vpextrq {hi}, {x}, 1",
                src = in(reg) src,
                x = out(xmm_reg) _,
                lo = out(reg) lo,
                hi = out(reg) hi,
                // Not `readonly`: the asm must order like an acquire load, so the
                // compiler may move no later memory access above it.
                options(nostack, preserves_flags),
            );
        }
        (hi as u128) << 64 | lo as u128
    }

    /// # Safety
    /// As for [`load`].
    #[inline(always)]
    pub(super) unsafe fn load_high(src: *const u128) -> u64 {
        let hi: u64;
        // SAFETY: the caller guarantees alignment and validity.
        unsafe {
            asm!(
                "mov {hi}, qword ptr [{src} + 8]",
                src = in(reg) src,
                hi = out(reg) hi,
                // Not `readonly`, as in `load`.
                options(nostack, preserves_flags),
            );
        }
        hi
    }

    /// # Safety
    /// `dst` is 16-byte aligned and valid for writes; the CPU passed `inline_ok`.
    #[inline(always)]
    pub(super) unsafe fn store(dst: *mut u128, v: u128, seq_cst: bool) {
        // SAFETY: the caller guarantees alignment and validity; AVX is present.
        unsafe {
            asm!(
                "vmovq {x}, {lo}",
                "vpinsrq {x}, {x}, {hi}, 1",
                "vmovdqa xmmword ptr [{dst}], {x}",
                dst = in(reg) dst,
                x = out(xmm_reg) _,
                lo = in(reg) v as u64,
                hi = in(reg) (v >> 64) as u64,
                options(nostack, preserves_flags),
            );
            if seq_cst {
                asm!("mfence", options(nostack, preserves_flags));
            }
        }
    }

    /// `lock cmpxchg16b`: the previous value, and whether it was `old` (then `new` is
    /// stored).
    ///
    /// # Safety
    /// `dst` is 16-byte aligned and valid for reads and writes; the CPU passed
    /// `inline_ok`.
    #[inline(always)]
    pub(super) unsafe fn cmpxchg16b(dst: *mut u128, old: u128, new: u128) -> (u128, bool) {
        let (lo, hi, ok): (u64, u64, u64);
        // SAFETY: the caller guarantees alignment, validity and the instruction. rbx
        // cannot be an operand (LLVM may reserve it), so the new value's low half is
        // swapped into it for the instruction and rbx restored after; every other
        // register the sequence touches is named, so that none of them can be rbx (a
        // `reg` operand may be: the address once was, and the CAS wrote through
        // the swapped-in value).
        unsafe {
            asm!(
                "xchg {new_lo}, rbx",
                "lock cmpxchg16b xmmword ptr [rdi]",
                "sete cl",
                "mov rbx, {new_lo}",
                new_lo = inout(reg) new as u64 => _,
                in("rdi") dst,
                inout("rax") old as u64 => lo,
                inout("rdx") (old >> 64) as u64 => hi,
                inout("rcx") (new >> 64) as u64 => ok,
                options(nostack),
            );
        }
        ((hi as u128) << 64 | lo as u128, ok as u8 != 0)
    }
}

/// Loom has no 128-bit atomic; a loom mutex around a `u128` is an exact model of one
/// (every operation is a single linearisable step), which is all the protocol assumes.
#[cfg(loom)]
#[derive(Debug)]
#[doc(hidden)]
pub struct AtomicU128(loom::sync::Mutex<u128>);

#[cfg(loom)]
impl AtomicU128 {
    pub fn new(v: u128) -> Self {
        Self(loom::sync::Mutex::new(v))
    }
    pub fn load(&self, _: Ordering) -> u128 {
        *self.0.lock().unwrap()
    }
    pub fn store(&self, v: u128, _: Ordering) {
        *self.0.lock().unwrap() = v;
    }
    pub fn load_high(&self, _: Ordering) -> u64 {
        (*self.0.lock().unwrap() >> 64) as u64
    }
    pub fn compare_exchange(
        &self,
        current: u128,
        new: u128,
        _: Ordering,
        _: Ordering,
    ) -> Result<u128, u128> {
        let mut g = self.0.lock().unwrap();
        if *g == current {
            *g = new;
            Ok(current)
        } else {
            Err(*g)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{AtomicU128, Ordering::*};

    #[test]
    fn operations_see_and_keep_both_halves() {
        #[cfg(target_arch = "x86_64")]
        eprintln!("inline 128-bit atomics: {}", super::x86::inline_ok());
        let a = AtomicU128::new(1 << 64 | 2);
        assert_eq!(a.load(Acquire), 1 << 64 | 2);
        a.store(3 << 64 | 4, Release);
        assert_eq!(a.load(Relaxed), 3 << 64 | 4);
        a.store(5 << 64 | 6, SeqCst);
        assert_eq!(a.compare_exchange(5 << 64 | 7, 0, AcqRel, Acquire), Err(5 << 64 | 6));
        assert_eq!(a.compare_exchange(6 << 64 | 6, 0, AcqRel, Acquire), Err(5 << 64 | 6));
        assert_eq!(a.compare_exchange(5 << 64 | 6, u128::MAX, AcqRel, Acquire), Ok(5 << 64 | 6));
        assert_eq!(a.load(SeqCst), u128::MAX);
    }

    /// Two threads move both halves together; no load or failed CAS ever sees them apart.
    #[test]
    fn no_torn_values_under_contention() {
        let a = std::sync::Arc::new(AtomicU128::new(!0u64 as u128));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let mut seen = a.load(Acquire);
                    for _ in 0..100_000 {
                        let (hi, lo) = ((seen >> 64) as u64, seen as u64);
                        assert_eq!(hi, !lo, "torn value {seen:#x}");
                        let next = ((hi + 1) as u128) << 64 | !(hi + 1) as u128;
                        seen = match a.compare_exchange(seen, next, AcqRel, Acquire) {
                            Ok(_) => a.load(Acquire),
                            Err(actual) => actual,
                        };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
