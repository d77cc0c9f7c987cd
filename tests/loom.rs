//! Loom model checking of the slot protocol (`shmlease::protocol`): three or more
//! concurrent actors on one `Slot`, every interleaving up to a preemption bound.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --no-default-features --test loom`
//! (`--no-default-features` leaves out the CLI binary, which needs the parts of the
//! crate that `cfg(loom)` gates out.)
//! (`LOOM_MAX_PREEMPTIONS=N` overrides the bound each model sets.)
//!
//! What is checked:
//! - exclusivity: an "inside the critical section" marker that a winner sets and clears
//!   while it holds its grant is never set twice; and, where grants can also end by
//!   revocation or expiry, the history is re-played after the fact: every grant must
//!   have started from a state its predecessor genuinely left (released, revoked, or
//!   expired at the new grant's time past every deadline the predecessor was ever
//!   confirmed) — which is exclusivity in table time;
//! - fencing: tokens are distinct and increase in grant order;
//! - no lost wake-up: a waiter told to sleep on a futex value either finds the futex word
//!   changed or is woken by whoever freed the grant.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, AtomicUsize};
use loom::sync::{Arc, Mutex};
use loom::thread;
use shmlease::layout::{bind, grant, holder, Slot};
use shmlease::protocol::{self, Granted, Lost, Refusal, Targeted, Took, Wait};
use std::sync::atomic::Ordering::SeqCst;

const NAME: [u64; 8] = [u64::from_le_bytes(*b"leader\0\0"), 0, 0, 0, 0, 0, 0, 0];
const TTL: u64 = 1_000;
/// The dead process of the dead-holder models.
const DEAD_PID: u32 = 99;

fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(preemptions);
    }
    b.check(f);
}

fn rec(pid: u32) -> holder::Record {
    holder::Record {
        tag: 0,
        pidns: 7,
        pid,
        kind: holder::KIND_PIDFD_INODE,
        detached: false,
        ident: pid as u64,
    }
}

/// A slot bound to `NAME` (with token floor `floor`), shared between loom threads.
fn bound(floor: u64) -> (Arc<Slot>, u64) {
    let slot = Arc::new(Slot::new());
    let b = protocol::bind(&slot, bind::EMPTY, &NAME, 6, 0, 0xabcd, floor).unwrap();
    (slot, b)
}

fn dead(r: &holder::Record) -> bool {
    r.pid == DEAD_PID
}

/// One grant, as its winner saw it, and how it ended from the winner's side.
#[derive(Clone, Debug)]
struct History {
    token: u64,
    /// Table time the grant was taken at.
    at: u64,
    took: Took,
    /// Every deadline the protocol confirmed to the holder (grant and renewals).
    confirmed: Vec<u64>,
    /// True table times at which the holder judged its grant still valid.
    believed: Vec<u64>,
    released: bool,
    holder_dead: bool,
}

impl History {
    /// A grant taken at table time `at`, not (yet) renewed or released.
    fn of(g: &Granted, at: u64, holder_dead: bool) -> History {
        History {
            token: g.token,
            at,
            took: g.took,
            confirmed: vec![g.deadline],
            believed: Vec::new(),
            released: false,
            holder_dead,
        }
    }
}

/// Re-plays grants (sorted by token) and checks that each one started from a state its
/// predecessor had really left: exclusivity in table time, and tokens in grant order.
fn check_history(first_token: u64, mut grants: Vec<History>, revoked: &[u64]) {
    grants.sort_by_key(|g| g.token);
    for w in grants.windows(2) {
        assert!(w[0].token < w[1].token, "tokens not distinct: {grants:?}");
    }
    let mut prev: Option<&History> = None;
    for g in &grants {
        match prev {
            None => {
                assert!(g.token > first_token);
                assert_eq!(g.took, Took::Free, "first grant after bind: {grants:?}");
            }
            Some(p) => {
                let was_revoked = revoked.contains(&p.token);
                assert!(!(p.released && was_revoked), "released and revoked: {grants:?}");
                match g.took {
                    Took::Free => assert!(p.released, "took Free but {p:?} never released"),
                    Took::Revoked => assert!(was_revoked, "took Revoked but {p:?} not revoked"),
                    Took::Expired => {
                        assert!(!p.released && !was_revoked, "{p:?} ended twice");
                        let last = p.confirmed.iter().max().unwrap();
                        assert!(
                            g.at >= *last,
                            "grant {g:?} at {} while {p:?} was confirmed until {last}",
                            g.at
                        );
                        if let Some(b) = p.believed.iter().max() {
                            assert!(
                                g.at > *b,
                                "grant {g:?} at {} while {p:?} believed valid",
                                g.at
                            );
                        }
                    }
                    Took::DeadHolder => {
                        assert!(!p.released && !was_revoked);
                        assert!(p.holder_dead, "{g:?} reclaimed live holder {p:?}");
                    }
                    Took::Corrupt => panic!("no corrupt word in these models"),
                }
            }
        }
        prev = Some(g);
    }
    for t in revoked {
        assert!(grants.iter().any(|g| g.token == *t), "revoked an unknown token {t}");
    }
}

// ---------------------------------------------------------------------------------------
// Exclusivity and fencing

/// Three actors race for a free lease, twice each; the winner holds it inside a
/// critical section (renewing once) and releases it.
#[test]
fn three_racers_are_exclusive_and_tokens_increase_in_grant_order() {
    model(3, || {
        let (slot, b) = bound(0);
        let inside = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..3u32)
            .map(|i| {
                let (slot, inside, order) = (slot.clone(), inside.clone(), order.clone());
                thread::spawn(move || {
                    let now = 1_000 + i as u64;
                    for _ in 0..2 {
                        match protocol::try_grant(&slot, b, now, TTL, rec(i + 1), 0, &mut |_| false)
                        {
                            Ok(g) => {
                                assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders");
                                order.lock().unwrap().push(g.token);
                                assert_eq!(
                                    protocol::renew(&slot, g.token, now, TTL),
                                    Ok(now + TTL)
                                );
                                inside.fetch_sub(1, SeqCst);
                                assert_eq!(
                                    protocol::release(&slot, g.token, g.deadline),
                                    Ok(false)
                                );
                            }
                            Err(Refusal::Held { .. }) => {}
                            Err(e) => panic!("unexpected refusal {e:?}"),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert!(!order.is_empty());
        assert!(order.windows(2).all(|w| w[0] < w[1]), "tokens out of grant order: {order:?}");
        assert!(order[0] > 1, "above the binding's token");
        let last = slot.grant.load(SeqCst);
        assert_eq!(last, grant::pack(grant::FREE, *order.last().unwrap()));
    });
}

/// Two actors race for a lease while a third revokes whatever is held; each winner
/// renews and then releases (either may fail, with the right reason).
#[test]
fn revocation_racing_two_grants() {
    model(3, || {
        let (slot, b) = bound(0);
        let racers: Vec<_> = (0..2u32)
            .map(|i| {
                let slot = slot.clone();
                thread::spawn(move || {
                    let now = 2_000 + i as u64;
                    let mut mine = Vec::new();
                    for _ in 0..2 {
                        let g = match protocol::try_grant(
                            &slot,
                            b,
                            now,
                            TTL,
                            rec(i + 1),
                            0,
                            &mut |_| false,
                        ) {
                            Ok(g) => g,
                            Err(Refusal::Held { .. }) => continue,
                            Err(e) => panic!("unexpected refusal {e:?}"),
                        };
                        let mut h = History::of(&g, now, false);
                        match protocol::renew(&slot, g.token, now, TTL) {
                            Ok(d) => h.confirmed.push(d),
                            Err(l) => {
                                assert!(matches!(l, Lost::Revoked | Lost::TakenOver), "{l:?}")
                            }
                        }
                        match protocol::release(&slot, g.token, g.deadline) {
                            Ok(wake) => {
                                assert!(!wake);
                                h.released = true;
                            }
                            Err(l) => {
                                assert!(matches!(l, Lost::Revoked | Lost::TakenOver), "{l:?}")
                            }
                        }
                        mine.push(h);
                    }
                    mine
                })
            })
            .collect();
        let revoker = {
            let slot = slot.clone();
            thread::spawn(move || match protocol::revoke(&slot, b, 2_000, None).unwrap() {
                Targeted::Done { token, wake } => {
                    assert!(!wake);
                    vec![token]
                }
                Targeted::NotHeld { .. } => vec![],
                Targeted::OtherToken { .. } => unreachable!("no token named"),
            })
        };
        let mut grants = Vec::new();
        for r in racers {
            grants.extend(r.join().unwrap());
        }
        let revoked = revoker.join().unwrap();
        check_history(1, grants, &revoked);
    });
}

/// A holder (granted before the model starts) renews and releases while two actors try
/// to take the lease; one of them first moves the shared clock past the holder's
/// deadline. Time is explicit: every actor reads the shared clock before each step.
#[test]
fn expiry_racing_renewal_and_two_grants() {
    model(3, || {
        let (slot, b) = bound(0);
        let clock = Arc::new(AtomicU64::new(500));
        // Granted at 400 until 1400; the clock reads 500 until an actor moves it to 1400.
        let g0 = protocol::try_grant(&slot, b, 400, TTL, rec(1), 0, &mut |_| false).unwrap();
        let holder = {
            let (slot, clock) = (slot.clone(), clock.clone());
            thread::spawn(move || {
                let mut h = History::of(&g0, 400, false);
                let now = clock.load(SeqCst);
                let mut hint = g0.deadline;
                match protocol::renew(&slot, g0.token, now, TTL) {
                    Ok(d) => {
                        assert_eq!(d, now + TTL);
                        assert!(now < g0.deadline, "renewed an expired grant");
                        h.confirmed.push(d);
                        hint = d;
                    }
                    Err(l) => assert!(matches!(l, Lost::Expired | Lost::TakenOver), "{l:?}"),
                }
                match protocol::release(&slot, g0.token, hint) {
                    Ok(wake) => {
                        assert!(!wake);
                        h.released = true;
                    }
                    Err(l) => assert_eq!(l, Lost::TakenOver),
                }
                vec![h]
            })
        };
        let takers: Vec<_> = (0..2u32)
            .map(|i| {
                let (slot, clock) = (slot.clone(), clock.clone());
                thread::spawn(move || {
                    if i == 0 {
                        clock.store(g0.deadline, SeqCst); // the holder's deadline passes
                    }
                    let now = clock.load(SeqCst);
                    match protocol::try_grant(&slot, b, now, TTL, rec(i + 2), 0, &mut |_| false) {
                        Ok(g) => vec![History::of(&g, now, false)],
                        Err(Refusal::Held { .. }) => vec![],
                        Err(e) => panic!("unexpected refusal {e:?}"),
                    }
                })
            })
            .collect();
        let mut grants = holder.join().unwrap();
        for t in takers {
            grants.extend(t.join().unwrap());
        }
        check_history(1, grants, &[]);
    });
}

/// A coarse clock's tick in the lagging-clock models: the reading is the precise one
/// rounded down to a tick, so it lags by less than a tick and never leads (as
/// `CLOCK_MONOTONIC_COARSE` does).
const TICK: u64 = 300;

fn lagging(t: u64) -> u64 {
    t / TICK * TICK
}

/// A holder (granted at 1,000 until 2,000) judges its grant with the precise clock, or
/// with a lagging one (`holder_lags`), and releases it; a precise actor moves the clock
/// just past the deadline (2,001, which a lagging reader sees as 1,800) and takes the
/// lease; a third actor takes it twice with a lagging clock through `try_grant_free`
/// (Free or Revoked only), falling back to a precise `try_grant`. Checked: exclusivity
/// in table time (no grant starts while its predecessor's holder believed it valid, or
/// before its confirmed deadline), tokens distinct and growing in grant order, and
/// every lagging grant's deadline at most `TTL` past the true time of its CAS.
fn lagging_clock_model(holder_lags: bool) {
    model(3, move || {
        let (slot, b) = bound(0);
        let clock = Arc::new(AtomicU64::new(1_250));
        let g0 = protocol::try_grant(&slot, b, 1_000, TTL, rec(1), 0, &mut |_| false).unwrap();
        let holder = {
            let (slot, clock) = (slot.clone(), clock.clone());
            thread::spawn(move || {
                let mut h = History::of(&g0, 1_000, false);
                let t = clock.load(SeqCst);
                let judged = if holder_lags { lagging(t) } else { t };
                if protocol::check_ours(slot.grant.load(SeqCst), g0.token, judged).is_ok() {
                    h.believed.push(t);
                }
                match protocol::release(&slot, g0.token, g0.deadline) {
                    Ok(_) => h.released = true,
                    Err(l) => assert_eq!(l, Lost::TakenOver),
                }
                vec![h]
            })
        };
        let precise = {
            let (slot, clock) = (slot.clone(), clock.clone());
            thread::spawn(move || {
                clock.store(g0.deadline + 1, SeqCst);
                let now = clock.load(SeqCst);
                match protocol::try_grant(&slot, b, now, TTL, rec(2), 0, &mut |_| false) {
                    Ok(g) => {
                        let mut h = History::of(&g, now, false);
                        h.released = protocol::release(&slot, g.token, g.deadline).is_ok();
                        vec![h]
                    }
                    Err(Refusal::Held { .. }) => vec![],
                    Err(e) => panic!("unexpected refusal {e:?}"),
                }
            })
        };
        let lagger = {
            let (slot, clock) = (slot.clone(), clock.clone());
            thread::spawn(move || {
                let mut mine = Vec::new();
                for _ in 0..2 {
                    let t = clock.load(SeqCst);
                    let mut h = match protocol::try_grant_free(&slot, b, lagging(t), TTL, rec(3), 0)
                    {
                        Some(g) => {
                            assert!(matches!(g.took, Took::Free | Took::Revoked), "{g:?}");
                            let after = clock.load(SeqCst);
                            assert!(g.deadline <= after + TTL, "{g:?} ends after {after} + TTL");
                            History::of(&g, lagging(t), false)
                        }
                        None => {
                            match protocol::try_grant(&slot, b, t, TTL, rec(3), 0, &mut |_| false) {
                                Ok(g) => History::of(&g, t, false),
                                Err(Refusal::Held { .. }) => continue,
                                Err(e) => panic!("unexpected refusal {e:?}"),
                            }
                        }
                    };
                    h.released = protocol::release(&slot, h.token, h.confirmed[0]).is_ok();
                    mine.push(h);
                }
                mine
            })
        };
        let mut grants = Vec::new();
        for t in [holder, precise, lagger] {
            grants.extend(t.join().unwrap());
        }
        let last = grants.iter().map(|g| g.token).max().unwrap();
        assert_eq!(grant::token(slot.grant.load(SeqCst)), last, "the slot's token went back");
        check_history(1, grants, &[]);
    });
}

/// Grants made with a lagging clock reading (`try_grant_free`) next to precise ones keep
/// exclusivity and token order.
#[test]
fn lagging_clock_grants_free_slots_only_and_keeps_exclusivity_and_token_order() {
    lagging_clock_model(false);
}

/// The model has teeth: a holder that judged its own grant with the lagging clock would
/// believe it valid after a precise acquirer saw it expire and took it.
#[test]
#[should_panic(expected = "believed valid")]
fn a_holder_judging_itself_with_a_lagging_clock_is_caught() {
    lagging_clock_model(true);
}

/// The holder of a lease is dead (its record says so); three actors race to reclaim it,
/// one of them after revoking whatever it finds.
#[test]
fn dead_holder_reclaim_by_three_actors() {
    model(3, || {
        let (slot, b) = bound(0);
        let g0 = protocol::try_grant(&slot, b, 100, TTL, rec(DEAD_PID), 0, &mut |_| false).unwrap();
        let dead0 = History::of(&g0, 100, true);
        let actors: Vec<_> = (0..3u32)
            .map(|i| {
                let slot = slot.clone();
                thread::spawn(move || {
                    let now = 200 + i as u64;
                    let mut revoked = None;
                    if i == 2 {
                        let r = protocol::revoke(&slot, b, now, None);
                        if let Ok(Targeted::Done { token, .. }) = r {
                            revoked = Some(token);
                        }
                    }
                    let r = protocol::try_grant(&slot, b, now, TTL, rec(i + 1), 0, &mut dead);
                    let h = match r {
                        Ok(g) => Some(History::of(&g, now, false)),
                        Err(Refusal::Held { holder, token, .. }) => {
                            // `None` between a winner's CAS and its record store. The dead
                            // holder only in a refusal that describes its own grant: the
                            // record changed under the probe (another actor reclaimed the
                            // lease meanwhile), and the refusal reports what was read.
                            if let Some(h) = holder {
                                assert!(h.pid != DEAD_PID || token == g0.token, "{h:?} {token}");
                            }
                            None
                        }
                        Err(e) => panic!("unexpected refusal {e:?}"),
                    };
                    (h, revoked)
                })
            })
            .collect();
        let mut grants = vec![dead0];
        let mut revoked = Vec::new();
        for a in actors {
            let (h, r) = a.join().unwrap();
            grants.extend(h);
            revoked.extend(r);
        }
        // Nobody releases and nothing expires: without a revocation exactly one actor
        // reclaims (two winners would be two holders); with one, at most two grants.
        let won = grants.len() - 1;
        if revoked.is_empty() {
            assert_eq!(won, 1, "{grants:?}");
        } else {
            assert!((1..=2).contains(&won), "{grants:?}");
        }
        check_history(1, grants, &revoked);
    });
}

/// Two actors use the binding of name A (one takes and releases the lease, the other
/// takes it or revokes it) while the table-lock holder unbinds A from the slot (retire,
/// raise the floor, tombstone) and binds name B to it, then takes a grant for B. No A
/// grant may survive the retirement, and B's tokens are above every A token.
#[test]
fn unbind_and_rebind_racing_grants_on_the_old_binding() {
    model(3, || {
        let (slot, b_a) = bound(0);
        let actors: Vec<_> = (0..2u32)
            .map(|i| {
                let slot = slot.clone();
                thread::spawn(move || {
                    let now = 300 + i as u64;
                    let r =
                        protocol::try_grant(&slot, b_a, now, TTL, rec(i + 1), 0, &mut |_| false);
                    match r {
                        Ok(g) => {
                            let released = if i == 0 {
                                protocol::release(&slot, g.token, g.deadline)
                            } else {
                                match protocol::revoke(&slot, b_a, now, Some(g.token)) {
                                    Ok(Targeted::Done { .. }) => Ok(false),
                                    Ok(other) => panic!("own live grant not revocable: {other:?}"),
                                    Err(e) => panic!("own binding refused: {e:?}"),
                                }
                            };
                            assert_eq!(released, Ok(false), "a live A grant was retired under us");
                            Some(g.token)
                        }
                        Err(Refusal::Held { .. } | Refusal::Rebound) => None,
                        Err(e) => panic!("unexpected refusal {e:?}"),
                    }
                })
            })
            .collect();
        let table = {
            let slot = slot.clone();
            thread::spawn(move || {
                let (last, wake) = protocol::retire(&slot, 300)?;
                assert!(!wake);
                let floor = last; // header.token_floor = max(floor, last)
                protocol::tombstone(&slot);
                let other = [7, 0, 0, 0, 0, 0, 0, 0];
                let b_b = protocol::bind(&slot, slot.bind.load(SeqCst), &other, 1, 0, 7, floor)?;
                assert_ne!(b_b, b_a);
                let g = protocol::try_grant(&slot, b_b, 310, TTL, rec(9), 0, &mut |_| false);
                let g = g.expect("B's first grant on a fresh binding");
                assert_eq!(g.took, Took::Free);
                Some((last, g.token))
            })
        };
        let a_tokens: Vec<u64> = actors.into_iter().filter_map(|a| a.join().unwrap()).collect();
        if let Some((last, b_token)) = table.join().unwrap() {
            for t in &a_tokens {
                assert!(*t <= last, "A grant {t} after the retirement (last {last})");
                assert!(*t < b_token, "B token {b_token} not above A token {t}");
            }
        } else {
            assert!(!a_tokens.is_empty(), "retire refused with nothing held");
        }
    });
}

/// Issue 9, item 3: two binders (each under the table lock, a mutex here) evict
/// whatever idle name the slot has and bind their own, while a third actor rotates the
/// current name (takes and releases it). Because each binder tries its first grant
/// before it lets go of the lock, its fresh binding is never re-bound before that
/// grant: the grant is won, or refused as held, never `Rebound`. (With the grant after
/// the unlock, as before the fix, the other binder could evict the name first, and a
/// full table under churn restarted until its retry limit said "corrupt".)
#[test]
fn a_name_bound_under_the_lock_keeps_its_slot_until_its_first_grant() {
    model(3, || {
        let (slot, b_a) = bound(0);
        let lock = Arc::new(Mutex::new(()));
        let binders: Vec<_> = (0..2u64)
            .map(|i| {
                let (slot, lock) = (slot.clone(), lock.clone());
                thread::spawn(move || {
                    let _held = lock.lock().unwrap();
                    let now = 400 + i;
                    let current = slot.bind.load(SeqCst);
                    let Some((last, _)) = protocol::retire(&slot, now) else {
                        return; // the rotating actor holds the name: this pass starts over
                    };
                    protocol::tombstone(&slot);
                    let name = [10 + i, 0, 0, 0, 0, 0, 0, 0];
                    let b =
                        protocol::bind(&slot, slot.bind.load(SeqCst), &name, 1, 0, i as u32, last)
                            .unwrap();
                    assert_ne!(b, current);
                    match protocol::try_grant(
                        &slot,
                        b,
                        now,
                        TTL,
                        rec(20 + i as u32),
                        0,
                        &mut |_| false,
                    ) {
                        Ok(_) | Err(Refusal::Held { .. }) => {}
                        Err(e) => panic!("a fresh binding refused under the lock: {e:?}"),
                    }
                })
            })
            .collect();
        let rotator = {
            let slot = slot.clone();
            thread::spawn(move || {
                if let Ok(g) = protocol::try_grant(&slot, b_a, 390, TTL, rec(1), 0, &mut |_| false)
                {
                    protocol::release(&slot, g.token, g.deadline).unwrap();
                }
            })
        };
        for b in binders {
            b.join().unwrap();
        }
        rotator.join().unwrap();
    });
}

/// Issue 9, item 2: a granter whose CAS loses writes nothing, so the winner's holder
/// record is in place as soon as its grant returns. (Before the fix every granter wiped
/// the record before its CAS, and a loser's wipe could land after the winner's store:
/// 6.8 % of grants in a herd had no record, so a killed holder was waited out for its
/// whole TTL.)
#[test]
fn a_losing_granter_never_wipes_the_winners_record() {
    model(3, || {
        let (slot, b) = bound(0);
        let g0 = protocol::try_grant(&slot, b, 50, TTL, rec(9), 0, &mut |_| false).unwrap();
        protocol::release(&slot, g0.token, g0.deadline).unwrap();
        let actors: Vec<_> = (0..3u32)
            .map(|i| {
                let slot = slot.clone();
                thread::spawn(move || {
                    let r = protocol::try_grant(
                        &slot,
                        b,
                        100 + i as u64,
                        TTL,
                        rec(i + 1),
                        0,
                        &mut |_| false,
                    );
                    if let Ok(g) = r {
                        // Nobody releases, revokes or expires it: the record must be ours.
                        let record = holder::Record::unpack(slot.holder.load(SeqCst));
                        assert_eq!(record.pid, i + 1, "winner {i}'s record is {record:?}");
                        assert_eq!(record.tag, holder::Record::tag_for(g.token));
                        true
                    } else {
                        false
                    }
                })
            })
            .collect();
        let winners = actors.into_iter().map(|a| a.join().unwrap()).filter(|w| *w).count();
        assert_eq!(winners, 1);
        let record = holder::Record::unpack(slot.holder.load(SeqCst));
        assert!((1..=3).contains(&record.pid), "final record {record:?}");
    });
}

/// Regression for the detach/liveness-probe race (see `protocol_states.rs`,
/// `detach_racing_the_liveness_probe_is_respected`): the holder detaches its lease and
/// exits (as `shmlease acquire` does); a contender that read the still-attached record
/// before the detach probes liveness after the exit, and reclaims a detached lease.
#[test]
fn detached_lease_is_never_reclaimed_early() {
    model(3, || {
        let (slot, b) = bound(0);
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let exited = Arc::new(AtomicUsize::new(0));
        let holder = {
            let (slot, exited) = (slot.clone(), exited.clone());
            thread::spawn(move || {
                let detached = holder::Record { detached: true, ..rec(1) };
                protocol::rewrite_holder(&slot, g.token, 110, detached).unwrap();
                exited.store(1, SeqCst); // `shmlease acquire` prints the token and exits
            })
        };
        let contender = {
            let (slot, exited) = (slot.clone(), exited.clone());
            thread::spawn(move || {
                let r = protocol::try_grant(&slot, b, 120, TTL, rec(2), 0, &mut |r| {
                    r.pid == 1 && exited.load(SeqCst) == 1
                });
                assert!(r.is_err(), "detached lease reclaimed before its deadline: {r:?}");
            })
        };
        holder.join().unwrap();
        contender.join().unwrap();
    });
}

/// A winner's holder-record store races a revocation and a re-grant of its lease, and
/// the winner dies right after granting; a third actor reclaims only what belongs to a
/// dead holder: a late record of the dead winner is never taken for the new holder's.
#[test]
fn late_record_of_a_revoked_winner_is_not_trusted() {
    model(3, || {
        let (slot, b) = bound(0);
        let w1_dead = Arc::new(AtomicUsize::new(0));
        let w1 = {
            let (slot, w1_dead) = (slot.clone(), w1_dead.clone());
            thread::spawn(move || {
                let r = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false);
                w1_dead.store(1, SeqCst); // and it dies
                r.ok().map(|g| History::of(&g, 100, true))
            })
        };
        let admin = {
            let slot = slot.clone();
            thread::spawn(move || {
                let revoked = match protocol::revoke(&slot, b, 110, None) {
                    Ok(Targeted::Done { token, .. }) => Some(token),
                    _ => None,
                };
                let g = protocol::try_grant(&slot, b, 110, TTL, rec(2), 0, &mut |_| false);
                let h = g.ok().map(|g| History::of(&g, 110, false));
                (revoked, h)
            })
        };
        let contender = {
            let (slot, w1_dead) = (slot.clone(), w1_dead.clone());
            thread::spawn(move || {
                let r = protocol::try_grant(&slot, b, 120, TTL, rec(3), 0, &mut |r| {
                    r.pid == 1 && w1_dead.load(SeqCst) == 1
                });
                r.ok().map(|g| History::of(&g, 120, false))
            })
        };
        let mut grants: Vec<History> = w1.join().unwrap().into_iter().collect();
        let (revoked, h) = admin.join().unwrap();
        grants.extend(h);
        grants.extend(contender.join().unwrap());
        let revoked: Vec<u64> = revoked.into_iter().collect();
        check_history(1, grants, &revoked);
    });
}

// ---------------------------------------------------------------------------------------
// Wake-ups

/// A stand-in for the kernel's futex: `wait` checks the word and queues the waiter
/// atomically (under the bucket lock), `wake` dequeues everyone.
struct Futex {
    queue: Mutex<Vec<u32>>,
}

impl Futex {
    fn new() -> Arc<Futex> {
        Arc::new(Futex { queue: Mutex::new(Vec::new()) })
    }
    /// Returns whether the waiter went to sleep.
    fn wait(&self, slot: &Slot, who: u32, expect: u32) -> bool {
        let mut q = self.queue.lock().unwrap();
        if protocol::futex_value(slot.grant.load(SeqCst)) == expect {
            q.push(who);
            true
        } else {
            false
        }
    }
    fn wake(&self) {
        self.queue.lock().unwrap().clear();
    }
    fn sleepers(&self) -> Vec<u32> {
        self.queue.lock().unwrap().clone()
    }
}

/// Spawns a waiter that announces itself and sleeps if told to.
fn waiter(slot: &Arc<Slot>, futex: &Arc<Futex>, b: u64, who: u32) -> thread::JoinHandle<bool> {
    let (slot, futex) = (slot.clone(), futex.clone());
    thread::spawn(move || match protocol::announce_waiter(&slot, b, 150) {
        Wait::Sleep { futex_expect, token, .. } => {
            assert!(token > 1);
            futex.wait(&slot, who, futex_expect)
        }
        Wait::Retry => false,
    })
}

/// Two waiters announce themselves while the holder releases (with the deadline it
/// knows, which lacks the waiters bit): nobody is left asleep on a free lease.
#[test]
fn no_lost_wakeup_on_release() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let w1 = waiter(&slot, &futex, b, 1);
        let w2 = waiter(&slot, &futex, b, 2);
        let h = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                let wake = protocol::release(&slot, g.token, g.deadline).unwrap();
                if wake {
                    futex.wake();
                }
                wake
            })
        };
        let slept = [w1.join().unwrap(), w2.join().unwrap()];
        let wake = h.join().unwrap();
        assert!(!slept.contains(&true) || wake, "a waiter slept but release said no wake");
        assert_eq!(futex.sleepers(), Vec::<u32>::new(), "lost wake-up");
        assert_eq!(slot.grant.load(SeqCst), grant::pack(grant::FREE, g.token));
    });
}

/// A waiter announces itself while the holder renews and an administrator revokes.
#[test]
fn no_lost_wakeup_on_revoke_racing_renewal() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let w = waiter(&slot, &futex, b, 1);
        let holder = {
            let slot = slot.clone();
            thread::spawn(move || match protocol::renew(&slot, g.token, 120, TTL) {
                Ok(d) => assert_eq!(d, 120 + TTL),
                Err(l) => assert_eq!(l, Lost::Revoked),
            })
        };
        let admin = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || match protocol::revoke(&slot, b, 130, None).unwrap() {
                Targeted::Done { token, wake } => {
                    assert_eq!(token, g.token);
                    if wake {
                        futex.wake();
                    }
                    wake
                }
                other => panic!("held, must be revoked: {other:?}"),
            })
        };
        let slept = w.join().unwrap();
        holder.join().unwrap();
        let wake = admin.join().unwrap();
        assert!(!slept || wake, "the waiter slept but revoke said no wake");
        assert_eq!(futex.sleepers(), Vec::<u32>::new(), "lost wake-up");
        assert_eq!(slot.grant.load(SeqCst), grant::pack(grant::REVOKED, g.token));
        assert_eq!(protocol::release(&slot, g.token, g.deadline), Err(Lost::Revoked));
    });
}

/// A waiter announces itself while the holder releases and a third actor takes the
/// lease and releases it in turn: whichever grant the waiter slept on, it is woken.
#[test]
fn no_lost_wakeup_across_a_regrant() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let w = waiter(&slot, &futex, b, 1);
        let h = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                if protocol::release(&slot, g.token, g.deadline).unwrap() {
                    futex.wake();
                }
            })
        };
        let other = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                if let Ok(g2) = protocol::try_grant(&slot, b, 140, TTL, rec(2), 0, &mut |_| false) {
                    assert!(g2.token > g.token);
                    if protocol::release(&slot, g2.token, g2.deadline).unwrap() {
                        futex.wake();
                    }
                }
            })
        };
        w.join().unwrap();
        h.join().unwrap();
        other.join().unwrap();
        assert_eq!(futex.sleepers(), Vec::<u32>::new(), "lost wake-up");
        assert_eq!(grant::deadline_bits(slot.grant.load(SeqCst)), grant::FREE);
    });
}

/// A waiter sleeps on a grant that expires; a taker takes it over (the waiters bit is
/// carried into its grant) and releases it, while the old holder's late release fails.
/// Whoever frees the lease last reports the wake-up, so nobody is left asleep (the
/// futex value of the taker's grant may equal the old one: both deadlines share their
/// high 32 bits).
#[test]
fn no_lost_wakeup_when_an_expired_grant_is_taken_over() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let w = waiter(&slot, &futex, b, 1);
        let taker = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                let now = g.deadline; // the grant has just expired
                match protocol::try_grant(&slot, b, now, TTL, rec(2), 0, &mut |_| false) {
                    Ok(g2) => {
                        assert!(matches!(g2.took, Took::Expired | Took::Free), "{g2:?}");
                        assert!(g2.token > g.token);
                        if protocol::release(&slot, g2.token, g2.deadline).unwrap() {
                            futex.wake();
                        }
                    }
                    Err(e) => panic!("expired or free, must be granted: {e:?}"),
                }
            })
        };
        let late = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || match protocol::release(&slot, g.token, g.deadline) {
                Ok(wake) => {
                    if wake {
                        futex.wake();
                    }
                }
                Err(l) => assert_eq!(l, Lost::TakenOver),
            })
        };
        w.join().unwrap();
        taker.join().unwrap();
        late.join().unwrap();
        assert_eq!(futex.sleepers(), Vec::<u32>::new(), "lost wake-up");
        assert_eq!(grant::deadline_bits(slot.grant.load(SeqCst)), grant::FREE);
    });
}

/// A waiter sleeps while the holder renews and the table-lock holder tries to retire the
/// slot (to unbind the name) once the first deadline has passed: either the renewal wins
/// and the slot stays held (the waiter may sleep on), or the retirement wins and wakes
/// the waiter.
#[test]
fn retire_wakes_waiters() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let w = waiter(&slot, &futex, b, 1);
        let holder = {
            let slot = slot.clone();
            thread::spawn(move || match protocol::renew(&slot, g.token, 160, 2 * TTL) {
                Ok(d) => Some(d),
                Err(l) => {
                    assert_eq!(l, Lost::Expired);
                    None
                }
            })
        };
        let unbinder = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                let r = protocol::retire(&slot, g.deadline);
                if let Some((token, wake)) = r {
                    assert_eq!(token, g.token);
                    if wake {
                        futex.wake();
                    }
                }
                r.is_some()
            })
        };
        w.join().unwrap();
        let renewed = holder.join().unwrap();
        let retired = unbinder.join().unwrap();
        assert!(renewed.is_some() != retired, "exactly one of renewal and retirement wins");
        let word = slot.grant.load(SeqCst);
        if retired {
            assert_eq!(word, grant::pack(grant::UNBOUND, g.token));
            assert_eq!(futex.sleepers(), Vec::<u32>::new(), "lost wake-up");
        } else {
            assert_eq!(grant::deadline(word), renewed.unwrap());
            for _ in futex.sleepers() {
                // Still asleep on a live grant: its release will wake them.
                assert_ne!(grant::deadline_bits(word) & grant::WAITERS, 0);
            }
        }
    });
}

/// A keep-alive thread watches its own grant while the holder renews and an
/// administrator revokes: the watcher is woken (or sees the change) and learns of it.
#[test]
fn watcher_is_woken_by_revoke() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let watcher = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || match protocol::watch(&slot, g.token, 110) {
                Ok(expect) => futex.wait(&slot, 9, expect),
                Err(l) => {
                    assert_eq!(l, Lost::Revoked);
                    false
                }
            })
        };
        let holder = {
            let slot = slot.clone();
            thread::spawn(move || {
                let _ = protocol::renew(&slot, g.token, 120, TTL);
            })
        };
        let admin = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                let Targeted::Done { wake, .. } = protocol::revoke(&slot, b, 130, None).unwrap()
                else {
                    panic!("held, must be revoked")
                };
                if wake {
                    futex.wake();
                }
                wake
            })
        };
        let slept = watcher.join().unwrap();
        holder.join().unwrap();
        let wake = admin.join().unwrap();
        assert!(!slept || wake);
        assert_eq!(futex.sleepers(), Vec::<u32>::new(), "keep-alive never learns");
        assert_eq!(protocol::watch(&slot, g.token, 140), Err(Lost::Revoked));
    });
}

// ---------------------------------------------------------------------------------------
// Holder-record races

/// Regression for the holder-record tag collision: the dead holder's grant was taken at
/// table time `T`; two actors reclaim it at `T + 2³²` (4.29 s later, within its 10 s
/// TTL). The winner's token is `T + 2³²`, whose low 32 bits equal the dead holder's tag,
/// so if the dead holder's record were still visible between the winner's CAS and its
/// record store, the other actor would take it for the new grant's and reclaim that too.
/// (Fixed by wiping the record before the grant's CAS.)
#[test]
fn dead_holder_reclaim_with_colliding_tag_is_exclusive() {
    model(3, || {
        let (slot, b) = bound(0);
        let t = 1_000_000;
        let ttl = 10_000_000_000;
        protocol::try_grant(&slot, b, t, ttl, rec(DEAD_PID), 0, &mut |_| false).unwrap();
        let now = t + (1 << 32);
        let winners = Arc::new(AtomicUsize::new(0));
        let actors: Vec<_> = (0..2u32)
            .map(|i| {
                let (slot, winners) = (slot.clone(), winners.clone());
                thread::spawn(move || {
                    let r: Result<Granted, Refusal> =
                        protocol::try_grant(&slot, b, now, ttl, rec(i + 1), 0, &mut dead);
                    if r.is_ok() {
                        assert_eq!(winners.fetch_add(1, SeqCst), 0, "two holders: {r:?}");
                    }
                })
            })
            .collect();
        for a in actors {
            a.join().unwrap();
        }
    });
}

// ---------------------------------------------------------------------------------------
// Observers and release requests (election)

/// An observer announces itself while the holder releases and another actor takes the
/// lease: each change of holder either wakes the observer or is seen by it before it
/// sleeps (no lost wake-up), and a grant never leaves the `OBSERVERS` flag set for
/// observers it has already woken.
#[test]
fn observer_is_woken_by_the_next_change_of_holder() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let observer = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                let o = protocol::announce_observer(&slot, b).expect("bound");
                futex.wait(&slot, 7, o.futex_expect).then_some(o.word)
            })
        };
        let holder = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                if protocol::release(&slot, g.token, g.deadline).unwrap() {
                    futex.wake();
                }
            })
        };
        let taker = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                if let Ok(g2) = protocol::try_grant(&slot, b, 140, TTL, rec(2), 0, &mut |_| false) {
                    assert!(g2.token > g.token);
                    if g2.wake {
                        futex.wake();
                    }
                }
            })
        };
        let slept_on = observer.join().unwrap();
        holder.join().unwrap();
        taker.join().unwrap();
        // Still asleep only on the state it saw, which then is the final one.
        if !futex.sleepers().is_empty() {
            let flagless = |w: u128| w & !(grant::FLAGS as u128);
            let seen = slept_on.expect("asleep, so it slept");
            assert_eq!(flagless(seen), flagless(slot.grant.load(SeqCst)), "slept through a change");
        }
    });
}

/// A release request races the holder's renewal and its keep-alive's watch: the request
/// never changes the token or the deadline, survives the renewal, wakes (or is seen by)
/// the watcher, and the holder can still release; a later grant does not inherit it.
#[test]
fn release_request_racing_renewal_and_watch() {
    model(3, || {
        let (slot, b) = bound(0);
        let futex = Futex::new();
        let g = protocol::try_grant(&slot, b, 100, TTL, rec(1), 0, &mut |_| false).unwrap();
        let watcher = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || {
                // The keep-alive's order: watch (announce), look, then sleep.
                let expect = protocol::watch(&slot, g.token, 110).unwrap();
                if protocol::release_requested(&slot, g.token, 110) == Ok(true) {
                    return false;
                }
                futex.wait(&slot, 9, expect)
            })
        };
        let holder = {
            let slot = slot.clone();
            thread::spawn(move || protocol::renew(&slot, g.token, 120, TTL).unwrap())
        };
        let requester = {
            let (slot, futex) = (slot.clone(), futex.clone());
            thread::spawn(move || match protocol::request_release(&slot, b, 130, None).unwrap() {
                Targeted::Done { token, wake } => {
                    assert_eq!(token, g.token);
                    if wake {
                        futex.wake();
                    }
                }
                other => panic!("held, must be asked: {other:?}"),
            })
        };
        watcher.join().unwrap();
        let renewed = holder.join().unwrap();
        requester.join().unwrap();
        assert_eq!(futex.sleepers(), Vec::<u32>::new(), "the keep-alive never hears the request");
        let word = slot.grant.load(SeqCst);
        assert_eq!(grant::token(word), g.token);
        assert_eq!(grant::deadline(word), renewed);
        assert_eq!(protocol::release_requested(&slot, g.token, 140), Ok(true));
        protocol::release(&slot, g.token, renewed).unwrap();
        let g2 = protocol::try_grant(&slot, b, 150, TTL, rec(2), 0, &mut |_| false).unwrap();
        assert_eq!(protocol::release_requested(&slot, g2.token, 150), Ok(false));
    });
}

// ---------------------------------------------------------------------------------------
// Names with permits: a head and its seats

const PERMITS: u32 = 2;

/// A group of `PERMITS` permits: the head (made a group from its first binding) and its
/// seats 1..=PERMITS, each bound, as the table lays them out.
fn group() -> (Arc<Slot>, u64, Vec<(Arc<Slot>, u64)>) {
    let (head, hb) = bound(0);
    protocol::make_group(&head, hb, PERMITS, 100, &mut |_| false).unwrap();
    let seats = (1..=PERMITS as u8)
        .map(|seat| {
            let slot = Arc::new(Slot::new());
            let b = protocol::bind(&slot, bind::EMPTY, &NAME, 6, seat, 0xabcd, 0).unwrap();
            (slot, b)
        })
        .collect();
    (head, hb, seats)
}

/// Takes a permit of the group at `now`: tries each seat once, from `start`.
fn take_permit(
    head: &Slot,
    hb: u64,
    seats: &[(Arc<Slot>, u64)],
    start: usize,
    now: u64,
    who: u32,
) -> Option<(usize, Granted)> {
    for k in 0..seats.len() {
        let i = (start + k) % seats.len();
        let (seat, b) = &seats[i];
        let r =
            protocol::try_grant_with(seat, *b, now, TTL, rec(who), 0, &mut |_| false, false, |t| {
                protocol::take_token(head, hb, PERMITS, now, t)
            });
        match r {
            Ok(g) => return Some((i, g)),
            Err(Refusal::Held { .. }) => {}
            Err(e) => panic!("unexpected refusal {e:?}"),
        }
    }
    None
}

/// Takes a permit as the table's fast path does (`Inner::grant_permit_free`): one try of
/// seat `seat` with a lagging reading, Free or Revoked only, the token taken from the
/// head with the same reading; else the precise path at `now` ([`take_permit`]).
fn take_permit_fast(
    head: &Slot,
    hb: u64,
    seats: &[(Arc<Slot>, u64)],
    seat: usize,
    now: u64,
    who: u32,
) -> Option<(usize, Granted)> {
    let (slot, b) = &seats[seat];
    let lagging_now = lagging(now);
    let fast = protocol::try_grant_free_with(slot, *b, lagging_now, TTL, rec(who), 0, |t| {
        protocol::take_token(head, hb, PERMITS, lagging_now, t).ok()
    });
    match fast {
        Some(g) => {
            assert!(matches!(g.took, Took::Free | Took::Revoked), "{g:?}");
            assert!(g.deadline <= now + TTL, "{g:?} ends after {now} + TTL");
            Some((seat, g))
        }
        None => take_permit(head, hb, seats, seat, now, who),
    }
}

/// Three actors take and release permits of a two-permit name: tokens are distinct
/// across the name, grow per seat in grant order, grow for each actor (a grant that
/// starts after another was returned has a larger token), and the head's counter is
/// never behind a token handed out.
#[test]
fn three_actors_on_two_permits_take_distinct_growing_tokens() {
    three_permit_actors(&[]);
}

/// The same with two of the actors on the fast path (a lagging clock, 900 against the
/// precise 1,000..1,002, Free or Revoked seats only): the same guarantees, and no fast
/// grant's deadline is later than a precise one's would be.
#[test]
fn permit_grants_with_a_lagging_clock_next_to_precise_ones() {
    three_permit_actors(&[0, 2]);
}

/// Three actors, those in `fast` on the fast path; see the two tests above.
fn three_permit_actors(fast: &'static [u32]) {
    model(2, move || {
        let (head, hb, seats) = group();
        let seats = Arc::new(seats);
        let inside: Arc<Vec<AtomicUsize>> =
            Arc::new((0..PERMITS).map(|_| AtomicUsize::new(0)).collect());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..3u32)
            .map(|i| {
                let (head, seats, inside, log) =
                    (head.clone(), seats.clone(), inside.clone(), log.clone());
                thread::spawn(move || {
                    let now = 1_000 + i as u64;
                    let mut mine = Vec::new();
                    for _ in 0..2 {
                        let taken = if fast.contains(&i) {
                            take_permit_fast(&head, hb, &seats, i as usize % 2, now, i + 1)
                        } else {
                            take_permit(&head, hb, &seats, i as usize, now, i + 1)
                        };
                        if let Some((s, g)) = taken {
                            assert_eq!(
                                inside[s].fetch_add(1, SeqCst),
                                0,
                                "two holders of one seat"
                            );
                            log.lock().unwrap().push((s, g.token));
                            mine.push(g.token);
                            inside[s].fetch_sub(1, SeqCst);
                            protocol::release(&seats[s].0, g.token, g.deadline).unwrap();
                        }
                    }
                    assert!(mine.windows(2).all(|w| w[0] < w[1]), "one actor's tokens: {mine:?}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let log = log.lock().unwrap().clone();
        let mut all: Vec<u64> = log.iter().map(|(_, t)| *t).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), log.len(), "a token was granted twice: {log:?}");
        for s in 0..PERMITS as usize {
            let per: Vec<u64> = log.iter().filter(|(x, _)| *x == s).map(|(_, t)| *t).collect();
            assert!(per.windows(2).all(|w| w[0] < w[1]), "seat {s} out of order: {per:?}");
        }
        assert!(grant::token(head.grant.load(SeqCst)) >= *all.last().unwrap(), "counter behind");
    });
}

/// An exclusive acquirer races a permits acquirer that turns the free name into a group
/// and takes a permit, and a third actor that tries either: an exclusive holder and a
/// permit holder never coexist.
#[test]
fn making_a_group_races_exclusive_grants() {
    model(3, || {
        let (head, hb) = bound(0);
        let seat = Arc::new(Slot::new());
        let sb = protocol::bind(&seat, bind::EMPTY, &NAME, 6, 1, 0xabcd, 0).unwrap();
        let exclusive = Arc::new(AtomicUsize::new(0));
        let permit = Arc::new(AtomicUsize::new(0));
        let excl = |head: Arc<Slot>, exclusive: Arc<AtomicUsize>, permit: Arc<AtomicUsize>, who| {
            thread::spawn(move || {
                match protocol::try_grant(&head, hb, 100, TTL, rec(who), 0, &mut |_| false) {
                    Ok(g) => {
                        exclusive.fetch_add(1, SeqCst);
                        assert_eq!(permit.load(SeqCst), 0, "exclusive holder beside a permit");
                        exclusive.fetch_sub(1, SeqCst);
                        protocol::release(&head, g.token, g.deadline).unwrap();
                    }
                    Err(Refusal::Held { .. } | Refusal::Group { permits: PERMITS }) => {}
                    Err(e) => panic!("{e:?}"),
                }
            })
        };
        let a = excl(head.clone(), exclusive.clone(), permit.clone(), 1);
        let c = excl(head.clone(), exclusive.clone(), permit.clone(), 3);
        let b = {
            let (head, seat, exclusive, permit) =
                (head.clone(), seat.clone(), exclusive.clone(), permit.clone());
            thread::spawn(move || {
                match protocol::make_group(&head, hb, PERMITS, 100, &mut |_| false) {
                    Ok(()) => {
                        let seats = [(seat, sb)];
                        if let Some((_, g)) = take_permit(&head, hb, &seats, 0, 100, 2) {
                            permit.fetch_add(1, SeqCst);
                            assert_eq!(
                                exclusive.load(SeqCst),
                                0,
                                "a permit beside an exclusive holder"
                            );
                            permit.fetch_sub(1, SeqCst);
                            protocol::release(&seats[0].0, g.token, g.deadline).unwrap();
                        }
                    }
                    Err(Refusal::Held { .. }) => {}
                    Err(e) => panic!("{e:?}"),
                }
            })
        };
        for h in [a, b, c] {
            h.join().unwrap();
        }
    });
}

/// A stand-in for the futex on the table's seat-event count: `wait` checks the count and
/// queues the waiter atomically, `wake` dequeues everyone.
struct CountFutex {
    count: AtomicU64,
    queue: Mutex<Vec<u32>>,
}

impl CountFutex {
    fn wait(&self, who: u32, expect: u64) -> bool {
        let mut q = self.queue.lock().unwrap();
        if self.count.load(SeqCst) == expect {
            q.push(who);
            true
        } else {
            false
        }
    }
    /// What a seat's freer does when the seat had waiters: bump, then wake.
    fn event(&self) {
        self.count.fetch_add(1, SeqCst);
        self.queue.lock().unwrap().clear();
    }
}

/// Two waiters for a permit (both held) each read the seat-event count, announce
/// themselves on each seat and sleep on the count, while both holders release: nobody
/// is left asleep with a permit free. (With a flag on the head instead of a count, one
/// waiter re-setting the flag restored the value the other was about to sleep on.)
#[test]
fn no_lost_wakeup_for_permit_waiters() {
    model(3, || {
        let (head, hb, seats) = group();
        let futex =
            Arc::new(CountFutex { count: AtomicU64::new(0), queue: Mutex::new(Vec::new()) });
        let g1 = take_permit(&head, hb, &seats, 0, 100, 1).unwrap().1;
        let g2 = take_permit(&head, hb, &seats, 1, 100, 2).unwrap().1;
        let seats = Arc::new(seats);
        let waiter = |who: u32| {
            let (seats, futex) = (seats.clone(), futex.clone());
            thread::spawn(move || {
                let seen = futex.count.load(SeqCst);
                for (seat, b) in seats.iter() {
                    if let Wait::Retry = protocol::announce_waiter(seat, *b, 150) {
                        return false; // a seat is free: try again instead of sleeping
                    }
                }
                futex.wait(who, seen)
            })
        };
        let w1 = waiter(8);
        let w2 = waiter(9);
        let (s1, f1) = (seats.clone(), futex.clone());
        let r = thread::spawn(move || {
            for (i, g) in [(0, g1), (1, g2)] {
                if protocol::release(&s1[i].0, g.token, g.deadline).unwrap() {
                    f1.event();
                }
            }
        });
        w1.join().unwrap();
        w2.join().unwrap();
        r.join().unwrap();
        assert_eq!(futex.queue.lock().unwrap().clone(), Vec::<u32>::new(), "lost wake-up");
    });
}

// ---------------------------------------------------------------------------------------
// Shared names: an exclusive holder in the head, shared holders in seats

/// A shared name: the head made shared, and two seats bound.
fn shared_name() -> (Arc<Slot>, u64, Vec<(Arc<Slot>, u64)>) {
    let (head, hb) = bound(0);
    protocol::make_shared(&head, hb).unwrap();
    let seats = (1..=2u8)
        .map(|seat| {
            let slot = Arc::new(Slot::new());
            let b = protocol::bind(&slot, bind::EMPTY, &NAME, 6, seat, 0xabcd, 0).unwrap();
            (slot, b)
        })
        .collect();
    (head, hb, seats)
}

/// A shared acquirer, as `table::shared` does it: a seat with a token from the head
/// (refused while an exclusive grant is live), then a second look at the head, and a
/// withdrawal if an exclusive grant appeared. Returns the grant it keeps.
fn take_shared(head: &Slot, hb: u64, seat: &Slot, sb: u64, now: u64, who: u32) -> Option<Granted> {
    let r = protocol::try_grant_with(seat, sb, now, TTL, rec(who), 0, &mut |_| false, false, |t| {
        protocol::take_shared_token(head, hb, now, t, &mut |_| false)
    });
    let g = match r {
        Ok(g) => g,
        Err(Refusal::Held { .. }) => return None,
        Err(e) => panic!("{e:?}"),
    };
    loom::sync::atomic::fence(SeqCst);
    let word = head.grant.load(SeqCst);
    if protocol::classify(grant::deadline_bits(word), now) == protocol::Observed::Held {
        protocol::release(seat, g.token, g.deadline).unwrap();
        return None;
    }
    Some(g)
}

/// A shared acquirer on the table's fast path (`Inner::grant_shared_free`): a Free or
/// Revoked seat granted with a lagging reading, the token from the head with the same
/// reading (refused while the head's exclusive grant looks live, never ending one),
/// then the second look at the head after `fence_after_cas128`, judged with the same
/// reading; `None` (the caller goes to the precise path) after a withdrawal. (Loom's
/// 128-bit word is a mutex, sequentially consistent by itself: the model checks the
/// withdrawal — it fails without it — but cannot tell whether the fence is there. On
/// x86-64's inline path the `lock cmpxchg16b` is that fence; see `fence_after_cas128`.)
fn take_shared_fast(
    head: &Slot,
    hb: u64,
    seat: &Slot,
    sb: u64,
    now: u64,
    who: u32,
) -> Option<Granted> {
    let lagging_now = lagging(now);
    let g = protocol::try_grant_free_with(seat, sb, lagging_now, TTL, rec(who), 0, |t| {
        protocol::take_shared_token(head, hb, lagging_now, t, &mut |_| false).ok()
    })?;
    shmlease::sync::fence_after_cas128();
    let word = head.grant.load(SeqCst);
    if protocol::classify(grant::deadline_bits(word), lagging_now) == protocol::Observed::Held {
        protocol::release(seat, g.token, g.deadline).unwrap();
        return None;
    }
    Some(g)
}

/// Two shared acquirers and an exclusive acquirer (head grant, then a scan of the
/// seats, giving up if a shared grant is live) race: an exclusive grant and a shared
/// grant are never both kept at once, and tokens are distinct across both kinds.
#[test]
fn shared_and_exclusive_acquirers_never_both_keep_their_grants() {
    shared_and_exclusive(false);
}

/// The same with both shared acquirers on the fast path (a lagging clock).
#[test]
fn fast_shared_grants_and_an_exclusive_acquirer_never_both_keep_theirs() {
    shared_and_exclusive(true);
}

/// See the two tests above: the shared acquirers on the fast path when `fast`.
fn shared_and_exclusive(fast: bool) {
    model(3, move || {
        let (head, hb, seats) = shared_name();
        let seats = Arc::new(seats);
        let exclusive = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(AtomicUsize::new(0));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let reader = |i: usize| {
            let (head, seats, exclusive, shared, tokens) =
                (head.clone(), seats.clone(), exclusive.clone(), shared.clone(), tokens.clone());
            thread::spawn(move || {
                let (seat, sb) = &seats[i];
                let taken = if fast {
                    take_shared_fast(&head, hb, seat, *sb, 1_000, i as u32 + 1)
                } else {
                    take_shared(&head, hb, seat, *sb, 100, i as u32 + 1)
                };
                if let Some(g) = taken {
                    shared.fetch_add(1, SeqCst);
                    assert_eq!(exclusive.load(SeqCst), 0, "a shared grant beside an exclusive one");
                    tokens.lock().unwrap().push(g.token);
                    shared.fetch_sub(1, SeqCst);
                    protocol::release(seat, g.token, g.deadline).unwrap();
                }
            })
        };
        let r1 = reader(0);
        let r2 = reader(1);
        let w = {
            let (head, seats, exclusive, shared, tokens) =
                (head.clone(), seats.clone(), exclusive.clone(), shared.clone(), tokens.clone());
            thread::spawn(move || {
                let next = |t| protocol::next_token(t, 100).ok_or(Refusal::TokenExhausted);
                let g = match protocol::try_grant_with(
                    &head,
                    hb,
                    100,
                    TTL,
                    rec(9),
                    0,
                    &mut |_| false,
                    true,
                    next,
                ) {
                    Ok(g) => g,
                    Err(Refusal::Held { .. }) => return,
                    Err(e) => panic!("{e:?}"),
                };
                loom::sync::atomic::fence(SeqCst);
                let busy = seats.iter().any(|(s, _)| {
                    protocol::classify(grant::deadline_bits(s.grant.load(SeqCst)), 100)
                        == protocol::Observed::Held
                });
                if !busy {
                    exclusive.fetch_add(1, SeqCst);
                    assert_eq!(shared.load(SeqCst), 0, "an exclusive grant beside a shared one");
                    tokens.lock().unwrap().push(g.token);
                    exclusive.fetch_sub(1, SeqCst);
                }
                protocol::release(&head, g.token, g.deadline).unwrap();
                assert!(
                    grant::is_shared(grant::deadline_bits(head.grant.load(SeqCst))),
                    "kind kept"
                );
            })
        };
        for h in [r1, r2, w] {
            h.join().unwrap();
        }
        let mut all = tokens.lock().unwrap().clone();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a token taken twice");
    });
}
