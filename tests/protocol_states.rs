//! The slot protocol (`shmlease::protocol`) on plain memory, state by state and
//! transition by transition: every test builds a `Slot` in ordinary memory, binds it,
//! drives it with explicit times and checks the exact grant word, the token's growth and
//! the error kinds.
#![cfg(not(loom))]

use shmlease::layout::{bind, grant, holder, Slot};
use shmlease::protocol::{
    self, Granted, Lost, Observed, Refusal, Targeted, Took, Wait, IMPOSSIBLE_AHEAD_NS, MAX_TTL_NS,
    MIN_TTL_NS,
};
use std::cell::Cell;
use std::sync::atomic::Ordering::SeqCst;

const NAME: [u64; 8] = [u64::from_le_bytes(*b"db-migra"), 0x6e6f_6974, 0, 0, 0, 0, 0, 0];
const NAME_LEN: usize = 12;
const HASH: u32 = 0x00ad_beef;
const TTL: u64 = 10_000;
/// A table time far above every token the tests bind, whose sequence (low 16 bits) is
/// that of a slot's first grant (the binding's token 1, plus one), so that a first
/// grant at T0 takes T0 as token.
const T0: u64 = 16 << 16 | 2;

/// The token a grant at `now` must take after one with token `last`: the least value
/// ≥ `max(now, last + 1)` whose sequence (low 16 bits) is `last`'s plus one.
fn next(last: u64, now: u64) -> u64 {
    let least = (last + 1).max(now);
    least + ((last + 1).wrapping_sub(least) & 0xffff)
}

/// A holder record for process `pid` (the tag is filled in by the protocol).
fn rec(pid: u32, detached: bool) -> holder::Record {
    holder::Record {
        tag: 0,
        pidns: 4_026_531_836,
        pid,
        kind: holder::KIND_PIDFD_INODE,
        detached,
        ident: 1000 + pid as u64,
    }
}

/// A fresh slot bound to `NAME` with `floor`; returns the slot and its binding word.
fn bound(floor: u64) -> (Slot, u64) {
    let slot = Slot::new();
    let b = protocol::bind(&slot, bind::EMPTY, &NAME, NAME_LEN, 0, HASH, floor).expect("bind");
    (slot, b)
}

fn word(slot: &Slot) -> u128 {
    slot.grant.load(SeqCst)
}

fn set_word(slot: &Slot, deadline_bits: u64, token: u64) {
    slot.grant.store(grant::pack(deadline_bits, token), SeqCst);
}

/// A `holder_is_dead` that must never be asked.
fn never_asked(r: &holder::Record) -> bool {
    panic!("holder_is_dead must not be consulted here (asked about {r:?})")
}

/// Grants with a closure answering "alive" (and counting how often it was asked).
fn grant_alive(slot: &Slot, b: u64, now: u64, pid: u32) -> Result<Granted, Refusal> {
    protocol::try_grant(slot, b, now, TTL, rec(pid, false), 7, &mut |_| false)
}

// ---------------------------------------------------------------------------------------
// classify

#[test]
fn classify_covers_every_state_and_boundary() {
    let now = T0;
    assert_eq!(protocol::classify(grant::FREE, now), Observed::Free);
    assert_eq!(protocol::classify(grant::REVOKED, now), Observed::Revoked);
    assert_eq!(protocol::classify(grant::UNBOUND, now), Observed::Unbound);
    assert_eq!(protocol::classify(grant::WAITERS | grant::FREE, now), Observed::Free);
    assert_eq!(protocol::classify(grant::WAITERS | grant::UNBOUND, now), Observed::Unbound);
    assert_eq!(protocol::classify(3, now), Observed::Expired);
    assert_eq!(protocol::classify(now, now), Observed::Expired, "deadline == now is expired");
    assert_eq!(protocol::classify(now + 1, now), Observed::Held);
    assert_eq!(protocol::classify(grant::WAITERS | (now + 1), now), Observed::Held);
    assert_eq!(protocol::classify(now + IMPOSSIBLE_AHEAD_NS, now), Observed::Held);
    assert_eq!(protocol::classify(now + IMPOSSIBLE_AHEAD_NS + 1, now), Observed::Corrupt);
    assert_eq!(protocol::classify(grant::DEADLINE, now), Observed::Corrupt);
    assert_eq!(protocol::classify(u64::MAX, now), Observed::Corrupt);
}

// ---------------------------------------------------------------------------------------
// bind / Free after bind

#[test]
fn bind_leaves_a_free_slot_whose_token_is_above_the_floor() {
    let (slot, b) = bound(0);
    assert_eq!(bind::state(b), bind::BOUND);
    assert_eq!(bind::generation(b), 1);
    assert_eq!(bind::name_len(b), NAME_LEN);
    assert_eq!(bind::hash(b), HASH);
    assert_eq!(slot.bind.load(SeqCst), b);
    assert_eq!(word(&slot), grant::pack(grant::FREE, 1));
    for (w, n) in slot.name.iter().zip(NAME) {
        assert_eq!(w.load(SeqCst), n);
    }

    let (slot, _) = bound(500);
    assert_eq!(word(&slot), grant::pack(grant::FREE, 501), "first token above the floor");
}

#[test]
fn bind_gives_a_token_above_the_slots_own_history_and_clears_side_records() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(slot.transitions.load(SeqCst), 1);
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Ok(false));
    let (last, wake) = protocol::retire(&slot, T0 + 1).unwrap();
    assert_eq!((last, wake), (g.token, false));
    protocol::tombstone(&slot);
    let tomb = slot.bind.load(SeqCst);
    assert_eq!(bind::state(tomb), bind::TOMBSTONE);
    assert_eq!(bind::generation(tomb), 1, "tombstoning keeps the generation");

    // Floor below the slot's history: the history wins.
    let other = [u64::from_le_bytes(*b"gpu0\0\0\0\0"), 0, 0, 0, 0, 0, 0, 0];
    let b2 = protocol::bind(&slot, tomb, &other, 4, 0, 7, 10).unwrap();
    assert_eq!(bind::generation(b2), 2);
    assert_ne!(b2, b);
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token + 1));
    assert_eq!(slot.transitions.load(SeqCst), 0);
    assert_eq!(slot.holder.load(SeqCst), 0);
    assert_eq!(slot.label.load(SeqCst), 0);
    assert_eq!(slot.renewed_at.load(SeqCst), 0);
    assert_eq!(slot.name[0].load(SeqCst), other[0]);
    assert_eq!(slot.name[1].load(SeqCst), 0, "old name bytes cleared");

    // Floor above the slot's history: the floor wins.
    protocol::retire(&slot, T0 + 2).unwrap();
    protocol::tombstone(&slot);
    let b3 = protocol::bind(&slot, slot.bind.load(SeqCst), &NAME, NAME_LEN, 0, HASH, 5 * T0);
    assert_eq!(bind::generation(b3.unwrap()), 3);
    assert_eq!(word(&slot), grant::pack(grant::FREE, 5 * T0 + 1));
    // And the next grant is above that even though `now` is smaller.
    let g = grant_alive(&slot, b3.unwrap(), T0 + 3, 1).unwrap();
    assert_eq!(g.token, 5 * T0 + 2);
}

#[test]
fn bind_refuses_an_exhausted_token_space() {
    let slot = Slot::new();
    assert_eq!(protocol::bind(&slot, bind::EMPTY, &NAME, NAME_LEN, 0, HASH, u64::MAX), None);
    let slot = Slot::new();
    set_word(&slot, grant::UNBOUND, u64::MAX);
    assert_eq!(protocol::bind(&slot, bind::EMPTY, &NAME, NAME_LEN, 0, HASH, 0), None);
    let slot = Slot::new();
    set_word(&slot, grant::UNBOUND, u64::MAX - 1);
    let b = protocol::bind(&slot, bind::EMPTY, &NAME, NAME_LEN, 0, HASH, 0).unwrap();
    assert_eq!(word(&slot), grant::pack(grant::FREE, u64::MAX));
    assert_eq!(
        protocol::try_grant(&slot, b, T0, TTL, rec(1, false), 0, &mut never_asked),
        Err(Refusal::TokenExhausted)
    );
}

// ---------------------------------------------------------------------------------------
// try_grant from each state

#[test]
fn grant_from_free_records_everything() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 42).unwrap();
    assert_eq!(g, Granted { token: T0, deadline: T0 + TTL, took: Took::Free, wake: false });
    assert_eq!(word(&slot), grant::pack(T0 + TTL, T0));
    let snap = protocol::snapshot(&slot).unwrap();
    assert_eq!(snap.grant, word(&slot));
    assert_eq!(snap.bind, b);
    assert_eq!(snap.name, NAME);
    assert_eq!(snap.label, 7);
    assert_eq!(snap.renewed_at, T0);
    assert_eq!(snap.transitions, 1);
    let h = snap.holder.expect("holder record of the current grant");
    assert_eq!(h, holder::Record { tag: holder::Record::tag_for(T0), ..rec(42, false) });
}

#[test]
fn grant_token_is_previous_plus_one_when_the_clock_is_behind() {
    let (slot, b) = bound(0);
    // `now` smaller than the slot's token + 1: the token still grows by one.
    let g = grant_alive(&slot, b, 1, 1).unwrap();
    assert_eq!(g.token, 2);
    assert_eq!(g.deadline, 1 + TTL);
    protocol::release(&slot, g.token, g.deadline).unwrap();
    let g2 = grant_alive(&slot, b, 2, 1).unwrap();
    assert_eq!(g2.token, 3);
    protocol::release(&slot, g2.token, g2.deadline).unwrap();
    let g3 = grant_alive(&slot, b, 100, 1).unwrap();
    assert_eq!(g3.token, 4 + 65536, "and jumps past the clock, keeping the sequence");
    assert_eq!(grant::seq(g3.token), grant::seq(g2.token) + 1);
    protocol::release(&slot, g3.token, g3.deadline).unwrap();
    let g4 = grant_alive(&slot, b, 3 << 16 | 6, 1).unwrap();
    assert_eq!(g4.token, 4 << 16 | 5, "the sequence wins over the clock's low bits");
}

#[test]
fn held_slot_refuses_and_reports_the_holder() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let before = word(&slot);
    let asked = Cell::new(0);
    let r = protocol::try_grant(&slot, b, T0 + 1, TTL, rec(2, false), 0, &mut |r| {
        asked.set(asked.get() + 1);
        assert_eq!(r.pid, 1);
        false
    });
    assert_eq!(
        r,
        Err(Refusal::Held {
            token: g.token,
            deadline: g.deadline,
            holder: Some(holder::Record { tag: holder::Record::tag_for(g.token), ..rec(1, false) }),
        })
    );
    assert_eq!(asked.get(), 1, "liveness asked once");
    assert_eq!(word(&slot), before, "a refusal changes nothing");
    // Even the holder itself is refused a second grant.
    assert!(matches!(grant_alive(&slot, b, T0 + 1, 1), Err(Refusal::Held { .. })));
    // One nanosecond before the deadline it is still held.
    assert!(matches!(grant_alive(&slot, b, g.deadline - 1, 2), Err(Refusal::Held { .. })));
}

#[test]
fn dead_holder_is_reclaimed_early() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let mut asked = Vec::new();
    let g2 = protocol::try_grant(&slot, b, T0 + 5, TTL, rec(2, false), 0, &mut |r| {
        asked.push(*r);
        r.pid == 1
    })
    .unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0], holder::Record { tag: holder::Record::tag_for(g.token), ..rec(1, false) });
    assert_eq!(g2.took, Took::DeadHolder);
    assert_eq!(g2.token, next(g.token, T0 + 5));
    assert!(g2.token > g.token);
    assert_eq!(word(&slot), grant::pack(T0 + 5 + TTL, g2.token));
    assert_eq!(protocol::snapshot(&slot).unwrap().holder.unwrap().pid, 2);
    // The dead holder is now stale.
    assert_eq!(protocol::renew(&slot, g.token, T0 + 6, TTL), Err(Lost::TakenOver));
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Err(Lost::TakenOver));
}

#[test]
fn liveness_is_not_consulted_for_a_record_of_another_grant() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    // A stale holder's late store: a record tagged with an older token.
    let stale = holder::Record { tag: holder::Record::tag_for(g.token - 1), ..rec(9, false) };
    slot.holder.store(stale.pack(), SeqCst);
    let r = protocol::try_grant(&slot, b, T0 + 1, TTL, rec(2, false), 0, &mut never_asked);
    assert_eq!(r, Err(Refusal::Held { token: g.token, deadline: g.deadline, holder: None }));
    assert!(protocol::snapshot(&slot).unwrap().holder.is_none());
    // The zeroed record a binding leaves behind is not attributed to a grant either.
    slot.holder.store(0, SeqCst);
    let r = protocol::try_grant(&slot, b, T0 + 1, TTL, rec(2, false), 0, &mut never_asked);
    assert!(matches!(r, Err(Refusal::Held { holder: None, .. })));
}

#[test]
fn liveness_is_not_consulted_for_a_detached_grant() {
    let (slot, b) = bound(0);
    let g = protocol::try_grant(&slot, b, T0, TTL, rec(1, true), 0, &mut never_asked).unwrap();
    let r = protocol::try_grant(&slot, b, T0 + 1, TTL, rec(2, false), 0, &mut never_asked);
    let want = holder::Record { tag: holder::Record::tag_for(g.token), ..rec(1, true) };
    assert_eq!(r, Err(Refusal::Held { token: g.token, deadline: g.deadline, holder: Some(want) }));

    // Detaching after the fact (rewrite_holder) has the same effect.
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(protocol::rewrite_holder(&slot, g.token, T0 + 1, rec(1, true)), Ok(()));
    let r = protocol::try_grant(&slot, b, T0 + 2, TTL, rec(2, false), 0, &mut never_asked);
    assert!(matches!(r, Err(Refusal::Held { holder: Some(h), .. }) if h.detached && h.pid == 1));
}

#[test]
fn expired_grant_is_taken_over() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    // Exactly at the deadline the grant is expired; the closure is not asked.
    let g2 =
        protocol::try_grant(&slot, b, g.deadline, TTL, rec(2, false), 0, &mut never_asked).unwrap();
    assert_eq!(g2.took, Took::Expired);
    assert_eq!(g2.token, next(g.token, g.deadline));
    assert!(g2.token > g.token);
    assert_eq!(word(&slot), grant::pack(g.deadline + TTL, g2.token));
    assert_eq!(slot.transitions.load(SeqCst), 2);
}

#[test]
fn revoked_slot_is_grantable() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(
        protocol::revoke(&slot, b, T0 + 1, None),
        Ok(Targeted::Done { token: g.token, wake: false })
    );
    assert_eq!(word(&slot), grant::pack(grant::REVOKED, g.token));
    let g2 =
        protocol::try_grant(&slot, b, T0 + 2, TTL, rec(2, false), 0, &mut never_asked).unwrap();
    assert_eq!(
        g2,
        Granted {
            token: next(g.token, T0 + 2),
            deadline: T0 + 2 + TTL,
            took: Took::Revoked,
            wake: false
        }
    );
}

#[test]
fn corrupt_deadline_is_reclaimed() {
    let (slot, b) = bound(0);
    for bad in [
        T0 + IMPOSSIBLE_AHEAD_NS + 1,
        // Garbage with the group bit but no well-formed head (a shared head, with both
        // kind bits, is a head whose exclusive grant may be corrupt: not this path).
        grant::DEADLINE & !grant::SHARED,
        grant::SHARED | 12345,
        grant::WAITERS | (T0 + IMPOSSIBLE_AHEAD_NS + 1),
    ] {
        set_word(&slot, bad, 77);
        // Even a (garbage) holder record matching the token is not consulted.
        let junk = holder::Record { tag: holder::Record::tag_for(77), ..rec(5, false) };
        slot.holder.store(junk.pack(), SeqCst);
        let g = protocol::try_grant(&slot, b, T0, TTL, rec(2, false), 0, &mut never_asked).unwrap();
        let token = next(77, T0);
        assert_eq!(g, Granted { token, deadline: T0 + TTL, took: Took::Corrupt, wake: false });
        let waiters = bad & grant::WAITERS;
        assert_eq!(word(&slot), grant::pack(waiters | (T0 + TTL), token));
    }
}

#[test]
fn unbound_slot_is_never_granted() {
    let (slot, b) = bound(0);
    assert_eq!(protocol::retire(&slot, T0), Some((1, false)));
    assert_eq!(word(&slot), grant::pack(grant::UNBOUND, 1));
    let r = protocol::try_grant(&slot, b, T0, TTL, rec(2, false), 0, &mut never_asked);
    assert_eq!(r, Err(Refusal::Rebound));
    assert_eq!(protocol::revoke(&slot, b, T0, None), Err(Refusal::Rebound));
    assert_eq!(protocol::announce_waiter(&slot, b, T0), Wait::Retry);
    // Retiring twice is harmless.
    assert_eq!(protocol::retire(&slot, T0), Some((1, false)));
    protocol::tombstone(&slot);
    assert!(protocol::snapshot(&slot).is_none());
    let r = protocol::try_grant(&slot, b, T0, TTL, rec(2, false), 0, &mut never_asked);
    assert_eq!(r, Err(Refusal::Rebound));
    assert_eq!(word(&slot), grant::pack(grant::UNBOUND, 1));
}

#[test]
fn stale_binding_is_refused_even_when_the_slot_is_grantable() {
    let (slot, b) = bound(0);
    protocol::retire(&slot, T0).unwrap();
    protocol::tombstone(&slot);
    let b2 = protocol::bind(&slot, slot.bind.load(SeqCst), &NAME, NAME_LEN, 0, HASH, 0).unwrap();
    assert_ne!(b, b2, "same name re-bound to the same slot: another generation");
    let r = protocol::try_grant(&slot, b, T0, TTL, rec(2, false), 0, &mut never_asked);
    assert_eq!(r, Err(Refusal::Rebound));
    assert_eq!(protocol::revoke(&slot, b, T0, None), Err(Refusal::Rebound));
    assert_eq!(protocol::announce_waiter(&slot, b, T0), Wait::Retry);
    assert_eq!(word(&slot), grant::pack(grant::FREE, 2));
    assert!(grant_alive(&slot, b2, T0, 1).is_ok());
}

#[test]
fn token_near_the_end_of_its_space() {
    let (slot, b) = bound(0);
    set_word(&slot, grant::FREE, u64::MAX - 1);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(g.token, u64::MAX);
    assert_eq!(protocol::renew(&slot, u64::MAX, T0 + 1, TTL), Ok(T0 + 1 + TTL));
    assert!(matches!(grant_alive(&slot, b, T0 + 2, 2), Err(Refusal::Held { token: u64::MAX, .. })));
    assert_eq!(protocol::release(&slot, u64::MAX, T0 + 1 + TTL), Ok(false));
    let before = word(&slot);
    assert_eq!(grant_alive(&slot, b, T0 + 3, 2), Err(Refusal::TokenExhausted));
    assert_eq!(word(&slot), before, "no wrap-around to a small token");
    // Expired or revoked with an exhausted token: also refused, never wrapped.
    set_word(&slot, 3, u64::MAX);
    assert_eq!(grant_alive(&slot, b, T0, 2), Err(Refusal::TokenExhausted));
    set_word(&slot, grant::REVOKED, u64::MAX);
    assert_eq!(grant_alive(&slot, b, T0, 2), Err(Refusal::TokenExhausted));
    // Retire still works (so the name can move to another slot), and the floor it
    // yields makes any re-binding refuse rather than reuse tokens.
    assert_eq!(protocol::retire(&slot, T0), Some((u64::MAX, false)));
    let fresh = Slot::new();
    assert_eq!(protocol::bind(&fresh, bind::EMPTY, &NAME, NAME_LEN, 0, HASH, u64::MAX), None);
}

// ---------------------------------------------------------------------------------------
// renew

#[test]
fn renew_extends_shortens_and_keeps_waiters() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(protocol::renew(&slot, g.token, T0 + 100, 3 * TTL), Ok(T0 + 100 + 3 * TTL));
    assert_eq!(word(&slot), grant::pack(T0 + 100 + 3 * TTL, g.token));
    assert_eq!(slot.renewed_at.load(SeqCst), T0 + 100);
    assert_eq!(protocol::renew(&slot, g.token, T0 + 200, MIN_TTL_NS), Ok(T0 + 200 + MIN_TTL_NS));
    assert!(matches!(protocol::announce_waiter(&slot, b, T0 + 300), Wait::Sleep { .. }));
    assert_eq!(protocol::renew(&slot, g.token, T0 + 400, TTL), Ok(T0 + 400 + TTL));
    assert_eq!(word(&slot), grant::pack(grant::WAITERS | (T0 + 400 + TTL), g.token));
    assert_eq!(protocol::snapshot(&slot).unwrap().transitions, 1, "renewal is no grant");
}

#[test]
fn renew_of_an_expired_grant_is_lost_even_if_nobody_took_it() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let before = word(&slot);
    assert_eq!(protocol::renew(&slot, g.token, g.deadline, TTL), Err(Lost::Expired));
    assert_eq!(word(&slot), before);
}

#[test]
fn renew_reports_why_the_grant_is_gone() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(protocol::renew(&slot, g.token + 1, T0 + 1, TTL), Err(Lost::TakenOver));
    assert_eq!(protocol::renew(&slot, g.token - 1, T0 + 1, TTL), Err(Lost::TakenOver));
    protocol::release(&slot, g.token, g.deadline).unwrap();
    assert_eq!(protocol::renew(&slot, g.token, T0 + 1, TTL), Err(Lost::Released));
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token), "no resurrection");
}

// ---------------------------------------------------------------------------------------
// release

#[test]
fn release_with_exact_and_stale_hints() {
    let (slot, b) = bound(0);
    // Exact hint: one CAS.
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Ok(false));
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token));

    // Stale hint (renewed since): still released.
    let g = grant_alive(&slot, b, T0 + 10, 1).unwrap();
    protocol::renew(&slot, g.token, T0 + 20, TTL).unwrap();
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Ok(false));
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token));

    // Nonsense hint: still released.
    let g = grant_alive(&slot, b, T0 + 30, 1).unwrap();
    assert_eq!(protocol::release(&slot, g.token, 12345), Ok(false));
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token));

    // Hint without the waiters bit while waiters announced: released, wake asked for.
    let g = grant_alive(&slot, b, T0 + 40, 1).unwrap();
    assert!(matches!(protocol::announce_waiter(&slot, b, T0 + 41), Wait::Sleep { .. }));
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Ok(true));
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token), "release clears WAITERS");
    // Exact hint with the waiters bit: one CAS, wake asked for.
    let g = grant_alive(&slot, b, T0 + 50, 1).unwrap();
    assert!(matches!(protocol::announce_waiter(&slot, b, T0 + 51), Wait::Sleep { .. }));
    assert_eq!(protocol::release(&slot, g.token, grant::WAITERS | g.deadline), Ok(true));
}

#[test]
fn release_of_an_expired_untaken_grant_succeeds() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    // No clock is read by release: an expired grant nobody replaced is still releasable.
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Ok(false));
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token));
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Err(Lost::Released));
}

/// Regression: `LeaseTable::release(name, token)` (detached leases, the CLI's
/// `release --token`) passes `deadline_hint = 0`, which is `grant::FREE`. Used as the
/// expected word, the CAS FREE → FREE "succeeded" and a second release of the same token
/// reported success instead of `Lost::Released`.
#[test]
fn release_twice_with_an_unknown_hint_is_lost() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(protocol::release(&slot, g.token, grant::FREE), Ok(false), "first: released");
    assert_eq!(protocol::release(&slot, g.token, grant::FREE), Err(Lost::Released));
}

/// Regression, same root cause with the other special values as hint: a release with
/// hint `REVOKED` (or `UNBOUND`) turned a revoked (or retiring) slot back to FREE. For
/// `UNBOUND` that re-opened a slot that `retire` had closed and whose token already went
/// into the table's floor, so the old name could be granted again in a slot about to be
/// re-bound. Only a garbage hint (e.g. a corrupted `RawLease` from the C library) gets
/// there, but the protocol must not trust it.
#[test]
fn release_with_a_special_hint_does_not_undo_revoke_or_retire() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    protocol::revoke(&slot, b, T0 + 1, None).unwrap();
    assert_eq!(protocol::release(&slot, g.token, grant::REVOKED), Err(Lost::Revoked));
    assert_eq!(word(&slot), grant::pack(grant::REVOKED, g.token));

    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    protocol::retire(&slot, g.deadline).unwrap();
    assert_eq!(protocol::release(&slot, g.token, grant::UNBOUND), Err(Lost::Expired));
    assert_eq!(word(&slot), grant::pack(grant::UNBOUND, g.token));
    let r = protocol::try_grant(&slot, b, g.deadline + 1, TTL, rec(2, false), 0, &mut never_asked);
    assert_eq!(r, Err(Refusal::Rebound), "a retired slot must stay ungrantable");
}

#[test]
fn release_after_retire_is_lost() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    protocol::retire(&slot, g.deadline).unwrap();
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Err(Lost::Expired));
    assert_eq!(protocol::renew(&slot, g.token, g.deadline, TTL), Err(Lost::Expired));
    assert_eq!(word(&slot), grant::pack(grant::UNBOUND, g.token));
    // Then bound to another name: the stale holder sees a takeover.
    protocol::tombstone(&slot);
    protocol::bind(&slot, slot.bind.load(SeqCst), &[1, 0, 0, 0, 0, 0, 0, 0], 1, 0, 1, 0).unwrap();
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Err(Lost::TakenOver));
    assert_eq!(protocol::renew(&slot, g.token, g.deadline, TTL), Err(Lost::TakenOver));
    assert_eq!(word(&slot), grant::pack(grant::FREE, g.token + 1));
}

// ---------------------------------------------------------------------------------------
// stale holders

#[test]
fn stale_holder_after_expiry_and_takeover_is_lost() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let g2 = grant_alive(&slot, b, g.deadline + 1, 2).unwrap();
    assert_eq!(g2.took, Took::Expired);
    assert!(g2.token > g.token);
    let live = word(&slot);
    // The stale holder, with any clock reading, any hint.
    for now in [T0, g.deadline - 1, g.deadline + 2] {
        assert_eq!(protocol::renew(&slot, g.token, now, TTL), Err(Lost::TakenOver));
        assert_eq!(protocol::watch(&slot, g.token, now), Err(Lost::TakenOver));
        assert_eq!(
            protocol::rewrite_holder(&slot, g.token, now, rec(1, true)),
            Err(Lost::TakenOver)
        );
    }
    for hint in [g.deadline, g2.deadline, grant::deadline_bits(live), 0] {
        assert_eq!(protocol::release(&slot, g.token, hint), Err(Lost::TakenOver));
    }
    assert_eq!(word(&slot), live, "the stale holder changed nothing");
    // rewrite_holder may have stored a stale record, but readers ignore it.
    let h = protocol::snapshot(&slot).unwrap().holder;
    assert!(h.is_none() || h.unwrap().pid == 2, "{h:?}");
    // A revoke naming the stale token does nothing either.
    assert_eq!(
        protocol::revoke(&slot, b, g.deadline + 2, Some(g.token)),
        Ok(Targeted::OtherToken { token: g2.token })
    );
    assert_eq!(protocol::release(&slot, g2.token, g2.deadline), Ok(false));
}

#[test]
fn revoked_holder_is_lost_with_revoked() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    protocol::revoke(&slot, b, T0 + 1, None).unwrap();
    assert_eq!(protocol::renew(&slot, g.token, T0 + 2, TTL), Err(Lost::Revoked));
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Err(Lost::Revoked));
    assert_eq!(protocol::watch(&slot, g.token, T0 + 2), Err(Lost::Revoked));
    assert_eq!(protocol::rewrite_holder(&slot, g.token, T0 + 2, rec(1, true)), Err(Lost::Revoked));
    assert_eq!(word(&slot), grant::pack(grant::REVOKED, g.token));
    // After a new grant the revoked holder is simply stale.
    let g2 = grant_alive(&slot, b, T0 + 3, 2).unwrap();
    assert_eq!(protocol::renew(&slot, g.token, T0 + 4, TTL), Err(Lost::TakenOver));
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Err(Lost::TakenOver));
    assert!(g2.token > g.token);
}

// ---------------------------------------------------------------------------------------
// revoke

#[test]
fn revoke_with_and_without_token() {
    let (slot, b) = bound(0);
    assert_eq!(protocol::revoke(&slot, b, T0, None), Ok(Targeted::NotHeld { token: 1 }));
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let live = word(&slot);
    assert_eq!(
        protocol::revoke(&slot, b, T0 + 1, Some(g.token + 1)),
        Ok(Targeted::OtherToken { token: g.token })
    );
    assert_eq!(word(&slot), live);
    assert_eq!(
        protocol::revoke(&slot, b, T0 + 1, Some(g.token)),
        Ok(Targeted::Done { token: g.token, wake: false })
    );
    assert_eq!(word(&slot), grant::pack(grant::REVOKED, g.token));
    assert_eq!(protocol::revoke(&slot, b, T0 + 1, None), Ok(Targeted::NotHeld { token: g.token }));
    assert_eq!(
        protocol::revoke(&slot, b, T0 + 1, Some(g.token)),
        Ok(Targeted::NotHeld { token: g.token })
    );
    // Expired and released grants are not held.
    let g = grant_alive(&slot, b, T0 + 2, 1).unwrap();
    assert_eq!(
        protocol::revoke(&slot, b, g.deadline, None),
        Ok(Targeted::NotHeld { token: g.token })
    );
    assert_eq!(word(&slot), grant::pack(g.deadline, g.token));
    protocol::release(&slot, g.token, g.deadline).unwrap();
    assert_eq!(protocol::revoke(&slot, b, T0, None), Ok(Targeted::NotHeld { token: g.token }));
    // A corrupt deadline is revocable.
    set_word(&slot, grant::DEADLINE, 99);
    assert_eq!(protocol::revoke(&slot, b, T0, None), Ok(Targeted::Done { token: 99, wake: false }));
    // A wrong binding is refused.
    assert_eq!(protocol::revoke(&slot, b ^ (1 << 9), T0, None), Err(Refusal::Rebound));
}

// ---------------------------------------------------------------------------------------
// waiters: announce_waiter, watch, and who reports wake

#[test]
fn announce_waiter_sets_the_bit_and_release_reports_wake() {
    let (slot, b) = bound(0);
    assert_eq!(protocol::announce_waiter(&slot, b, T0), Wait::Retry, "free: retry");
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let w = protocol::announce_waiter(&slot, b, T0 + 1);
    let announced = grant::pack(grant::WAITERS | g.deadline, g.token);
    assert_eq!(
        w,
        Wait::Sleep {
            futex_expect: protocol::futex_value(announced),
            deadline: g.deadline,
            token: g.token
        }
    );
    assert_eq!(word(&slot), announced);
    assert_eq!(protocol::futex_value(announced), ((g.deadline >> 32) as u32) | (1 << 31));
    // A second waiter finds the bit set and sleeps on the same value.
    assert_eq!(protocol::announce_waiter(&slot, b, T0 + 2), w);
    assert_eq!(word(&slot), announced);
    // Another contender is refused (and the bit survives the refusal).
    assert!(matches!(grant_alive(&slot, b, T0 + 3, 2), Err(Refusal::Held { .. })));
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Ok(true));
    let freed = word(&slot);
    assert_eq!(freed, grant::pack(grant::FREE, g.token));
    let Wait::Sleep { futex_expect, .. } = w else { unreachable!() };
    assert_ne!(protocol::futex_value(freed), futex_expect, "freeing changes the futex word");
    // An expired grant: retry (go and take it).
    let g = grant_alive(&slot, b, T0 + 4, 1).unwrap();
    assert_eq!(protocol::announce_waiter(&slot, b, g.deadline), Wait::Retry);
    assert_eq!(word(&slot), grant::pack(g.deadline, g.token), "no bit on an expired grant");
}

#[test]
fn revoke_reports_wake_when_waiters_announced() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let Wait::Sleep { futex_expect, .. } = protocol::announce_waiter(&slot, b, T0 + 1) else {
        panic!("held: must sleep")
    };
    assert_eq!(
        protocol::revoke(&slot, b, T0 + 2, None),
        Ok(Targeted::Done { token: g.token, wake: true })
    );
    assert_eq!(word(&slot), grant::pack(grant::REVOKED, g.token), "revoke clears WAITERS");
    assert_ne!(protocol::futex_value(word(&slot)), futex_expect);
}

#[test]
fn waiters_survive_a_takeover_of_an_expired_grant_but_not_a_fresh_grant() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert!(matches!(protocol::announce_waiter(&slot, b, T0 + 1), Wait::Sleep { .. }));
    // Taken over after expiry: the still-sleeping waiters remain announced.
    let g2 = grant_alive(&slot, b, g.deadline, 2).unwrap();
    assert_eq!(word(&slot), grant::pack(grant::WAITERS | g2.deadline, g2.token));
    assert_eq!(protocol::release(&slot, g2.token, g2.deadline), Ok(true));
    // From Free: no bit.
    let g3 = grant_alive(&slot, b, g2.deadline + 1, 3).unwrap();
    assert_eq!(word(&slot), grant::pack(g3.deadline, g3.token));
    assert_eq!(protocol::release(&slot, g3.token, g3.deadline), Ok(false));
    // Dead-holder takeover keeps the bit too.
    let g4 = grant_alive(&slot, b, T0 * 2, 4).unwrap();
    assert!(matches!(protocol::announce_waiter(&slot, b, T0 * 2 + 1), Wait::Sleep { .. }));
    let g5 = protocol::try_grant(&slot, b, T0 * 2 + 2, TTL, rec(5, false), 0, &mut |r| r.pid == 4)
        .unwrap();
    assert_eq!(g5.took, Took::DeadHolder);
    assert!(g5.token > g4.token);
    assert_eq!(word(&slot), grant::pack(grant::WAITERS | g5.deadline, g5.token));
}

#[test]
fn watch_marks_the_holders_own_grant() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let announced = grant::pack(grant::WAITERS | g.deadline, g.token);
    assert_eq!(protocol::watch(&slot, g.token, T0 + 1), Ok(protocol::futex_value(announced)));
    assert_eq!(word(&slot), announced);
    assert_eq!(protocol::watch(&slot, g.token, T0 + 1), Ok(protocol::futex_value(announced)));
    assert_eq!(protocol::watch(&slot, g.token + 1, T0 + 1), Err(Lost::TakenOver));
    assert_eq!(protocol::watch(&slot, g.token, g.deadline), Err(Lost::Expired));
    // The holder's own release wakes its watcher.
    assert_eq!(protocol::release(&slot, g.token, g.deadline), Ok(true));
    assert_eq!(protocol::watch(&slot, g.token, T0 + 2), Err(Lost::Released));
}

// ---------------------------------------------------------------------------------------
// rewrite_holder, retire, tombstone, snapshot

#[test]
fn rewrite_holder_only_for_the_live_grant() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    assert_eq!(protocol::rewrite_holder(&slot, g.token, T0 + 1, rec(1, true)), Ok(()));
    let h = protocol::snapshot(&slot).unwrap().holder.unwrap();
    assert_eq!(h, holder::Record { tag: holder::Record::tag_for(g.token), ..rec(1, true) });
    assert_eq!(
        protocol::rewrite_holder(&slot, g.token, g.deadline, rec(1, false)),
        Err(Lost::Expired)
    );
    assert!(protocol::snapshot(&slot).unwrap().holder.unwrap().detached, "unchanged");
}

#[test]
fn retire_refuses_a_held_slot_and_reports_waiters() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let live = word(&slot);
    assert_eq!(protocol::retire(&slot, T0 + 1), None);
    assert_eq!(protocol::retire(&slot, g.deadline - 1), None);
    assert_eq!(word(&slot), live);
    assert!(matches!(protocol::announce_waiter(&slot, b, T0 + 2), Wait::Sleep { .. }));
    // Expired with waiters: retired, wake asked for.
    assert_eq!(protocol::retire(&slot, g.deadline), Some((g.token, true)));
    assert_eq!(word(&slot), grant::pack(grant::UNBOUND, g.token));

    // From Revoked and from Corrupt.
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    protocol::revoke(&slot, b, T0, None).unwrap();
    assert_eq!(protocol::retire(&slot, T0), Some((g.token, false)));
    let (slot, _) = bound(0);
    set_word(&slot, grant::DEADLINE, 50);
    assert_eq!(protocol::retire(&slot, T0), Some((50, false)));
    assert_eq!(word(&slot), grant::pack(grant::UNBOUND, 50));
}

#[test]
fn snapshot_reads_only_bound_slots() {
    let slot = Slot::new();
    assert!(protocol::snapshot(&slot).is_none(), "EMPTY");
    let (slot, b) = bound(0);
    let s = protocol::snapshot(&slot).unwrap();
    assert_eq!(s.bind, b);
    assert_eq!(s.grant, grant::pack(grant::FREE, 1));
    assert!(s.holder.is_none());
    assert_eq!((s.label, s.renewed_at, s.transitions), (0, 0, 0));
    protocol::retire(&slot, T0).unwrap();
    // Retired but not yet tombstoned: still readable, shows UNBOUND.
    let s = protocol::snapshot(&slot).unwrap();
    assert_eq!(grant::deadline(s.grant), grant::UNBOUND);
    protocol::tombstone(&slot);
    assert!(protocol::snapshot(&slot).is_none(), "TOMBSTONE");
    slot.bind.store(bind::pack(bind::BINDING, NAME_LEN, 5, 0, HASH), SeqCst);
    assert!(protocol::snapshot(&slot).is_none(), "BINDING");
}

// ---------------------------------------------------------------------------------------
// Races played deterministically. (The holder-record tag collision between a grant's CAS
// and its record store is checked by the loom model
// `dead_holder_reclaim_with_colliding_tag_is_exclusive` in tests/loom.rs: a plain test
// cannot stop a grant between its CAS and its record store.)

/// Regression: `try_grant` read the holder record, asked `holder_is_dead`, then CASed
/// the grant word from the value it read before the record. `rewrite_holder` (what
/// `Lease::detach` does) changes only the holder word, so that CAS could not notice a
/// detach landing between the record read and the liveness probe. `shmlease acquire`
/// takes a lease, detaches it and exits at once: a contender that read the
/// still-attached record just before the detach and probed just after the exit found the
/// holder "provably dead" and reclaimed a detached lease meant to last its whole TTL.
///
/// The closure below plays the holder detaching and exiting during the probe.
#[test]
fn detach_racing_the_liveness_probe_is_respected() {
    let (slot, b) = bound(0);
    let g = grant_alive(&slot, b, T0, 1).unwrap();
    let r = protocol::try_grant(&slot, b, T0 + 1, TTL, rec(2, false), 0, &mut |r| {
        assert!(!r.detached, "read before the detach");
        protocol::rewrite_holder(&slot, g.token, T0 + 1, rec(1, true)).unwrap();
        true // ...and pid 1 has exited by the time it is probed
    });
    assert!(matches!(r, Err(Refusal::Held { .. })), "detached lease reclaimed early: {r:?}");
}

/// Regression: a grant with the longest TTL allowed (`MAX_TTL_NS`, which `LeaseTable`
/// accepts — the natural pick for "hold it indefinitely") has deadline
/// `now_p + MAX_TTL_NS`. An actor whose clock reading is even 1 ns older than the
/// granter's (it read the clock, then the grant landed, then it loaded the grant word:
/// an ordinary race) computed `deadline - now > MAX_TTL_NS` and classified the live
/// grant as Corrupt, so `try_grant` took it over and `retire` (the table's unbinding of
/// idle names, whose `now` is read before its scan) unbound it. A stale `now` is
/// otherwise always the safe side (grants look *less* expired); only the Corrupt bound
/// turned it against the holder. Corrupt now starts past `IMPOSSIBLE_AHEAD_NS`.
#[test]
fn a_max_ttl_grant_is_held_for_an_observer_with_an_older_clock_reading() {
    let (slot, b) = bound(0);
    let now_q = T0; // Q reads the clock...
    let now_p = T0 + 10; // ...then P reads it and takes the lease for the longest TTL
    let g =
        protocol::try_grant(&slot, b, now_p, MAX_TTL_NS, rec(1, false), 0, &mut |_| false).unwrap();
    assert_eq!(protocol::classify(grant::deadline_bits(word(&slot)), now_q), Observed::Held);
    let r = protocol::try_grant(&slot, b, now_q, TTL, rec(2, false), 0, &mut |_| false);
    assert!(matches!(r, Err(Refusal::Held { .. })), "P's live lease taken over: {r:?}");
    assert_eq!(protocol::retire(&slot, now_q), None, "P's live lease retired");
    assert_eq!(protocol::renew(&slot, g.token, now_p + 1, TTL), Ok(now_p + 1 + TTL));
}
