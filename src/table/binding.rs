//! Binding names to slots, and unbinding idle names to reuse theirs, under the table
//! lock: an `flock` on a file description opened for each acquisition (see the
//! module docs of `table` for why), released by the kernel if its holder dies.

use std::fs::File;
use std::time::{Duration, Instant};

use super::{interference, token_exhausted, Attempt, Inner, Key, BIND_PASSES};
use crate::error::{Error, Result};
use crate::fault::{point, Op};
use crate::info::Label;
use crate::layout::{bind, counter, grant};
use crate::protocol::{self, Observed};
use crate::sync::Ordering;
use crate::sys;

/// How long an operation waits for the table lock before giving up with `Error::Busy`.
const LOCK_PATIENCE: Duration = Duration::from_secs(5);

/// Held by whoever may bind or unbind names (and rebase the clock after a reboot): an
/// `flock` on a description of the table file opened for this lock alone (see the
/// module docs), unlocked and closed on drop.
pub(super) struct TableLock {
    file: File,
}

impl Drop for TableLock {
    fn drop(&mut self) {
        sys::unlock(&self.file);
    }
}

impl Inner {
    pub(super) fn lock(&self) -> Result<TableLock> {
        let path = self.location.file_path()?;
        let file = sys::reopen(&self.file, &path)
            .map_err(|e| Error::io(format!("opening {} to lock it", self.location), e))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            match sys::try_lock_exclusive(&file) {
                Ok(true) => return Ok(TableLock { file }),
                Ok(false) => {}
                Err(e) => return Err(Error::io(format!("locking {}", self.location), e)),
            }
            if start.elapsed() >= LOCK_PATIENCE {
                return Err(Error::Busy {
                    location: self.location.to_string(),
                    reason: format!(
                        "another process has held its lock for over {LOCK_PATIENCE:?} (is it stopped?)"
                    ),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// The slow path of [`Inner::attempt`]: binds the name if needed and tries the
    /// grant, all under the table lock. Only the lock's holder binds or unbinds, so the
    /// slot found or bound here keeps standing for the name until the grant has been
    /// tried: a name just bound cannot be evicted by another binder before its first
    /// grant (which, in a full table under churn, happened often enough to exhaust any
    /// retry limit).
    #[cold]
    #[inline(never)]
    pub(super) fn attempt_locked(&self, key: &Key, ttl: u64, label: Label) -> Result<Attempt> {
        let _lock = self.lock()?;
        point(Op::Bind);
        for _ in 0..BIND_PASSES {
            let Some((index, bound_as)) = self.bind_locked(key)? else { continue };
            return match self.grant_at(key, index, bound_as, ttl, label)? {
                Some(attempt) => Ok(attempt),
                // Nobody but us re-binds while we hold the lock.
                None => Err(interference(&self.location, index)),
            };
        }
        Err(Error::Busy {
            location: self.location.to_string(),
            reason: format!(
                "every slot is bound to a name, and each idle name this call tried to evict \
                 was granted again first, {BIND_PASSES} times over (the table is too small for \
                 the names in use)"
            ),
        })
    }

    /// One binding pass, table lock held: the slot bound to `key` (found, or bound now)
    /// and its binding word, or `None` when the picture changed and the pass must start
    /// over.
    pub(super) fn bind_locked(&self, key: &Key) -> Result<Option<(u32, u64)>> {
        /// Idle names (bound, not held) a pass may try to evict, nearest first.
        const IDLE_CANDIDATES: usize = 8;
        let header = self.header();
        let now = self.now();
        let mut reusable = None; // tombstone, dead binder's leftovers, finished unbinding
        let mut idle = [None; IDLE_CANDIDATES];
        let mut idles = 0;
        let mut empty = None;
        let mut index = key.home(self.capacity);
        for _ in 0..self.capacity {
            let slot = self.slot(index);
            let word = slot.bind.load(Ordering::Acquire);
            match bind::state(word) {
                bind::EMPTY => {
                    empty = Some((index, word));
                    break;
                }
                bind::TOMBSTONE | bind::BINDING => {
                    reusable.get_or_insert((index, word));
                }
                _ => {
                    let deadline = grant::deadline(slot.grant.load(Ordering::Acquire));
                    if deadline == grant::UNBOUND {
                        // An unbinding left half-done by a dead process: finish it.
                        self.finish_unbind(index);
                        reusable.get_or_insert((index, slot.bind.load(Ordering::Acquire)));
                    } else if self.name_matches(slot, word, key, key.seat) {
                        return Ok(Some((index, word))); // bound already (by anyone)
                    } else if idles < IDLE_CANDIDATES
                        && !matches!(protocol::classify(deadline, now), Observed::Held)
                        // Never the head or a seat of the name being bound: binding a
                        // seat would evict its own idle head, and the head its seats.
                        && !self.same_name(slot, word, key)
                        // Nor a head whose seats are bound: it cannot go before them
                        // (counting it as idle, a full table answered Busy, not TableFull).
                        && !self.pinned_by_seats(index)
                    {
                        idle[idles] = Some(index);
                        idles += 1;
                    }
                }
            }
            index = if index + 1 == self.capacity { 0 } else { index + 1 };
        }
        let names = header.bound.load(Ordering::Relaxed).min(self.capacity as u64);
        let crowded = names >= self.capacity as u64 - self.capacity as u64 / 8;
        let target = match (reusable, empty) {
            (Some(r), _) => Some(r),
            (None, Some(e)) if !crowded || idles == 0 => Some(e),
            (None, empty) => {
                // Evict the first idle name that is still idle; if all were granted
                // meanwhile, an empty slot still does, else start over.
                let evicted = idle[..idles]
                    .iter()
                    .flatten()
                    .find_map(|&i| self.unbind_idle(i).map(|w| (i, w)));
                if evicted.is_none() && empty.is_none() && idles == 0 {
                    return Err(Error::TableFull { capacity: self.capacity });
                }
                evicted.or(empty)
            }
        };
        let Some((index, previous)) = target else { return Ok(None) };
        let floor = header.token_floor.load(Ordering::Acquire);
        match protocol::bind(
            self.slot(index),
            previous,
            &key.words,
            key.len,
            key.seat,
            key.hash_bits(),
            floor,
        ) {
            Some(bound) => {
                // Re-read: unbinding an idle name above changed it.
                let names = header.bound.load(Ordering::Relaxed).min(self.capacity as u64 - 1);
                header.bound.store(names + 1, Ordering::Relaxed);
                point(Op::Bind);
                self.count(counter::BINDS);
                self.name_event();
                Ok(Some((index, bound)))
            }
            None => Err(token_exhausted(&self.location, index)),
        }
    }

    /// Whether slot `index` is the head of a name with permits or shared holders whose
    /// seats are (some of them) bound: such a head goes last, once none of its seats is
    /// bound (only the lock's holder binds seats, so none can appear meanwhile).
    fn pinned_by_seats(&self, index: u32) -> bool {
        let bits = grant::deadline_bits(self.slot(index).grant.load(Ordering::Acquire));
        let seats = match grant::permits(bits) {
            Some(permits) => permits,
            None if grant::is_shared(bits) => crate::layout::MAX_SHARED,
            None => 0,
        };
        seats > 0 && self.any_seat_bound(index, seats)
    }

    /// Unbinds the idle name in slot `index`; returns its binding word after, or `None`
    /// when it turned out to be held.
    fn unbind_idle(&self, index: u32) -> Option<u64> {
        let slot = self.slot(index);
        if self.pinned_by_seats(index) {
            return None;
        }
        let (_, wake) = protocol::retire(slot, self.now())?;
        if wake {
            self.freed(index);
        }
        self.finish_unbind(index);
        Some(slot.bind.load(Ordering::Acquire))
    }

    /// Unbinding after [`protocol::retire`]: raise the token floor past the slot's last
    /// token (so the name's tokens keep growing wherever it is bound next), then
    /// tombstone the slot. Table lock held.
    fn finish_unbind(&self, index: u32) {
        let header = self.header();
        let slot = self.slot(index);
        let last = grant::token(slot.grant.load(Ordering::Acquire));
        header.token_floor.fetch_max(last, Ordering::AcqRel);
        point(Op::Bind);
        header.counters[counter::RETIRED_GRANTS]
            .fetch_add(slot.transitions.load(Ordering::Relaxed), Ordering::Relaxed);
        protocol::tombstone(slot);
        let names = header.bound.load(Ordering::Relaxed);
        header.bound.store(names.saturating_sub(1).min(self.capacity as u64), Ordering::Relaxed);
        point(Op::Bind);
        self.count(counter::UNBINDS);
        self.name_event();
        self.sweep_tombstones(index);
    }

    /// A run of tombstones that ends at an EMPTY slot ends every probe chain through it,
    /// so it can become EMPTY too, keeping lookups of absent names short.
    fn sweep_tombstones(&self, index: u32) {
        let next = if index + 1 == self.capacity { 0 } else { index + 1 };
        if bind::state(self.slot(next).bind.load(Ordering::Acquire)) != bind::EMPTY {
            return;
        }
        let mut i = index;
        for _ in 0..self.capacity {
            let slot = self.slot(i);
            let word = slot.bind.load(Ordering::Acquire);
            if !matches!(bind::state(word), bind::TOMBSTONE | bind::BINDING) {
                break;
            }
            slot.bind.store(bind::with_state(word, bind::EMPTY, 0), Ordering::Release);
            point(Op::Bind);
            i = if i == 0 { self.capacity - 1 } else { i - 1 };
        }
    }
}
