//! Lease names as the table stores them: checked, zero-padded little-endian words, and
//! the name hash that places them (part of the file format).

use crate::error::{Error, Result};
use crate::layout::NAME_MAX;

/// A lease name, checked and laid out as the table stores it.
#[derive(Clone)]
pub(crate) struct Key {
    pub(super) words: [u64; 8],
    pub(super) len: usize,
    pub(super) hash: u64,
    /// 0 for the name's own slot; 1..=255 for a seat of a multi-holder name.
    pub(super) seat: u8,
}

impl Key {
    /// Checks a lease name (1 to 64 bytes, no NUL) and lays it out. Builds the key in
    /// one pass, with validation folded in, and never moves a `Result<Key>` around:
    /// on the fast path that alone cost store-forwarding stalls worth several
    /// nanoseconds.
    #[inline(always)]
    pub(crate) fn new(name: &str) -> Result<Key> {
        let key = Key::build(name);
        if key.len == 0 {
            return Err(Key::invalid(name));
        }
        Ok(key)
    }

    /// The key of `name`, with `len == 0` when the name is invalid. The words are
    /// written in place, each loaded from the name once, and hashed in the same pass:
    /// building them in a local array and moving that into the key (or copying the
    /// chunks with `memcpy`) made the next reader's wide loads wait on narrow stores.
    #[inline(always)]
    pub(crate) fn build(name: &str) -> Key {
        let mut key = Key::EMPTY;
        key.fill(name);
        key
    }

    /// No name (`len == 0`): what [`Key::fill`] starts from.
    pub(crate) const EMPTY: Key = Key { words: [0u64; 8], len: 0, hash: 0, seat: 0 };

    /// [`Key::build`] into an empty key where it lies: returning the key moved it with
    /// 16-byte loads of the 8-byte stores that had just written its words, a
    /// store-forwarding stall worth 8% of an `acquire_with` (perf annotate).
    #[inline(always)]
    pub(crate) fn fill(&mut self, name: &str) {
        if let Some(hash) = scan(name.as_bytes(), |i, w| self.words[i] = w) {
            self.len = name.len();
            self.hash = hash;
        }
    }

    /// The key of seat `seat` of this name: the same name, placed apart from it (so
    /// that the seats of one name do not make one long probe chain).
    #[inline]
    pub(crate) fn seat(&self, seat: u8) -> Key {
        Key { seat, ..self.clone() }
    }

    /// The name, for messages.
    pub(super) fn name(&self) -> String {
        let mut bytes = [0u8; NAME_MAX];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&self.words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        String::from_utf8_lossy(&bytes[..self.len]).into_owned()
    }

    /// The key of the name stored in a slot's `words` (`len` bytes), at `seat`.
    pub(super) fn from_stored(words: [u64; 8], len: usize, seat: u8) -> Key {
        let len = len.min(NAME_MAX);
        let hash = name_hash(&words[..len.div_ceil(8)], len);
        Key { words, len, hash, seat }
    }

    /// Why `name` is not a valid lease name (for a key [`Key::build`] left empty).
    #[cold]
    pub(crate) fn invalid(name: &str) -> Error {
        let reason = if name.is_empty() {
            "name is empty".to_string()
        } else if name.len() > NAME_MAX {
            format!("name is {} bytes long; the limit is {NAME_MAX}", name.len())
        } else {
            "name contains a NUL byte".to_string()
        };
        Error::InvalidName { reason }
    }

    /// Words that hold name bytes (the rest are zero in both key and slot).
    pub(super) fn used_words(&self) -> &[u64] {
        &self.words[..self.len.div_ceil(8)]
    }

    #[inline(always)]
    pub(super) fn home(&self, capacity: u32) -> u32 {
        self.home_of_seat(self.seat, capacity)
    }

    /// [`Key::home`] of the name's seat `seat` (0: the name's own slot).
    #[inline(always)]
    pub(super) fn home_of_seat(&self, seat: u8, capacity: u32) -> u32 {
        let h = if seat == 0 { self.hash } else { fmix(self.hash ^ seat as u64) };
        ((h as u128 * capacity as u128) >> 64) as u32
    }

    /// The hash bits the binding word stores (see `layout::bind`).
    pub(super) fn hash_bits(&self) -> u32 {
        self.hash as u32 & crate::layout::bind::HASH_MASK
    }
}

/// Checks a lease name (1 to 64 bytes, no NUL) and hashes it, handing each word (as the
/// table stores it) to `word` on the way: its hash if valid.
#[inline(always)]
fn scan(bytes: &[u8], mut word: impl FnMut(usize, u64)) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    if bytes.is_empty() || bytes.len() > NAME_MAX {
        return None;
    }
    let mut zero_byte = false;
    let mut h = name_hash_start(bytes.len());
    let full = bytes.len() / 8;
    for i in 0..full {
        let w = u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        zero_byte |= (w.wrapping_sub(ONES) & !w & HIGHS) != 0;
        h = name_hash_step(h, w);
        word(i, w);
    }
    let tail = &bytes[8 * full..];
    if !tail.is_empty() {
        let w = load_partial(tail);
        // Padding bytes forced non-zero so that only real NULs count.
        let padded = w | (u64::MAX << (8 * tail.len()));
        zero_byte |= (padded.wrapping_sub(ONES) & !padded & HIGHS) != 0;
        h = name_hash_step(h, w);
        word(full, w);
    }
    (!zero_byte).then(|| fmix(h))
}

/// A checked lease name as the fast path looks it up (its own slot, seat 0): the name's
/// bytes and hash, with its words made from the bytes when compared. Nothing is laid out
/// in memory, so the grant's CAS has no stores of a key to wait behind; a [`Key`] is
/// built only when the name must be bound or judged on a slower path.
#[derive(Clone, Copy)]
pub(crate) struct NameRef<'a> {
    bytes: &'a [u8],
    hash: u64,
}

impl<'a> NameRef<'a> {
    /// `None` when `name` is not a valid lease name ([`Key::new`] says why).
    #[inline(always)]
    pub(crate) fn new(name: &'a str) -> Option<NameRef<'a>> {
        let hash = scan(name.as_bytes(), |_, _| {})?;
        Some(NameRef { bytes: name.as_bytes(), hash })
    }

    /// As [`Key::home`] for seat 0.
    #[inline(always)]
    pub(super) fn home(&self, capacity: u32) -> u32 {
        ((self.hash as u128 * capacity as u128) >> 64) as u32
    }

    /// As [`Key::hash_bits`].
    #[inline(always)]
    pub(super) fn hash_bits(&self) -> u32 {
        self.hash as u32 & crate::layout::bind::HASH_MASK
    }

    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// How many words hold name bytes.
    #[inline(always)]
    pub(super) fn used_words(&self) -> usize {
        self.bytes.len().div_ceil(8)
    }

    /// Word `i` (below [`NameRef::used_words`]) as the table stores it.
    #[inline(always)]
    pub(super) fn word(&self, i: usize) -> u64 {
        let rest = &self.bytes[8 * i..];
        match rest.get(..8) {
            Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
            None => load_partial(rest),
        }
    }
}

/// 1 to 7 bytes as a little-endian word, in registers (two possibly overlapping loads):
/// copying them into a stack buffer and loading a word would stall on store forwarding.
#[inline(always)]
fn load_partial(t: &[u8]) -> u64 {
    let n = t.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let lo = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as u64;
        let hi = u32::from_le_bytes([t[n - 4], t[n - 3], t[n - 2], t[n - 1]]) as u64;
        lo | hi << (8 * (n - 4))
    } else if n >= 2 {
        let lo = u16::from_le_bytes([t[0], t[1]]) as u64;
        let hi = u16::from_le_bytes([t[n - 2], t[n - 1]]) as u64;
        lo | hi << (8 * (n - 2))
    } else {
        t[0] as u64
    }
}

/// The table's name hash. Part of the format: every process must compute the same one.
fn name_hash(words: &[u64], len: usize) -> u64 {
    fmix(words.iter().fold(name_hash_start(len), |h, w| name_hash_step(h, *w)))
}

/// [`name_hash`]'s state before the first word of a `len`-byte name.
#[inline(always)]
fn name_hash_start(len: usize) -> u64 {
    0x243f_6a88_85a3_08d3 ^ len as u64
}

/// [`name_hash`]'s state after one more word.
#[inline(always)]
fn name_hash_step(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ h >> 29
}

/// murmur3's fmix64. Part of the format, like [`name_hash`].
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rejects_bad_names() {
        assert!(matches!(Key::new(""), Err(Error::InvalidName { .. })));
        assert!(matches!(Key::new(&"x".repeat(65)), Err(Error::InvalidName { .. })));
        assert!(matches!(Key::new("a\0b"), Err(Error::InvalidName { .. })));
        assert!(Key::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Part of the file format: a change here breaks every existing table.
        assert_eq!(
            Key::new("gpu0").unwrap().hash,
            name_hash(&[u64::from_le_bytes(*b"gpu0\0\0\0\0")], 4)
        );
        assert_eq!(Key::new("leader").unwrap().hash, 0x1e5f_6d96_b46e_bbb6);
    }

    /// The fast path's lookup must see exactly the key the slow path binds.
    #[test]
    fn name_refs_agree_with_keys() {
        let long = "x".repeat(64);
        let names = ["a", "abcdefg", "abcdefgh", "abcdefghi", "gpu0", "a-64-byte", &long];
        for name in names.iter().copied().chain([&long[..63], &long[..17]]) {
            let (key, fast) = (Key::new(name).unwrap(), NameRef::new(name).unwrap());
            assert_eq!(
                (fast.hash, fast.len(), fast.home(4096)),
                (key.hash, key.len, key.home(4096))
            );
            assert_eq!(fast.hash_bits(), key.hash_bits());
            let words: Vec<u64> = (0..fast.used_words()).map(|i| fast.word(i)).collect();
            assert_eq!(words, key.used_words(), "{name:?}");
        }
        let too_long = "x".repeat(65);
        for bad in ["", "a\0b", "abcdefgh\0", too_long.as_str()] {
            assert!(NameRef::new(bad).is_none() && Key::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partial_loads_match_bytewise_assembly() {
        let bytes = b"abcdefg";
        for n in 1..8 {
            let t = &bytes[..n];
            let expected = t.iter().rev().fold(0u64, |w, b| w << 8 | *b as u64);
            assert_eq!(load_partial(t), expected, "{n} bytes");
        }
        for name in
            ["a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh", "abcdefghi"]
        {
            assert!(Key::new(name).is_ok());
        }
        for name in ["\0", "a\0", "abcdefg\0", "abcdefgh\0", "\0bcdefgh"] {
            assert!(matches!(Key::new(name), Err(Error::InvalidName { .. })), "{name:?}");
        }
    }
}
