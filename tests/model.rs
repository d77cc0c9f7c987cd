//! Model-based test of the slot protocol: random sequences of operations by several
//! actors on several names — acquire, renew, release, revoke, waiting, detaching, clock
//! advances, crashes, and unbinding/re-binding names onto other slots of a small pool —
//! are applied to real `Slot`s with an injected clock and checked, step by step, against
//! a small reference model (who holds each name, until when, with which token).
//!
//! Checked after every step: every slot's grant word is exactly what the model predicts
//! (so slots and model agree on who holds what); at most one actor believes, on the
//! slots' evidence, that it holds a live grant for a name; tokens handed out for a name
//! strictly increase across revocations, crashes and slot reuse; every stale holder gets
//! `Lost` (and changes nothing); a grant is taken from a live holder only when that
//! holder crashed and its grant was not detached.
#![cfg(not(loom))]

use proptest::prelude::*;
use shmlease::layout::{bind, grant, holder, Slot};
use shmlease::protocol::{self, Granted, Lost, Observed, Refusal, Targeted, Took, Wait};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::SeqCst;

const NAMES: usize = 3;
const ACTORS: usize = 4;
const SLOTS: usize = 5;
const PIDNS: u32 = 4_026_531_836;

#[derive(Clone, Copy, Debug)]
enum Op {
    Acquire {
        actor: usize,
        name: usize,
        ttl: u64,
        detached: bool,
    },
    /// An acquire through a binding of the name that is no longer current.
    StaleAcquire {
        actor: usize,
        name: usize,
    },
    Renew {
        actor: usize,
        name: usize,
        ttl: u64,
    },
    Release {
        actor: usize,
        name: usize,
        exact_hint: bool,
    },
    /// `mode`: 0 revoke whatever, 1 only the current token, 2 only an older token.
    Revoke {
        name: usize,
        mode: u8,
    },
    Announce {
        name: usize,
    },
    Watch {
        actor: usize,
        name: usize,
    },
    Detach {
        actor: usize,
        name: usize,
    },
    Advance {
        dt: u64,
    },
    Crash {
        actor: usize,
    },
    /// An acquire whose process dies between its winning CAS and its holder-record
    /// store: the grant has no record, so it is reclaimable by its TTL only.
    CrashMidGrant {
        actor: usize,
        name: usize,
        ttl: u64,
    },
    /// A scribbler writes an impossible deadline (further than any TTL) over a grant,
    /// keeping its token: anyone may take the slot over; its holder may still renew.
    Scribble {
        name: usize,
        far: u64,
    },
    /// An unbinder retires the name's slot and dies before raising the floor and
    /// tombstoning it: the name stays bound to an ungrantable slot until re-bound.
    HalfUnbind {
        name: usize,
    },
    Rebind {
        name: usize,
        target: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let actor = 0..ACTORS;
    let name = 0..NAMES;
    let ttl = prop_oneof![Just(protocol::MIN_TTL_NS), 1_000u64..20_000];
    prop_oneof![
        6 => (actor.clone(), name.clone(), ttl.clone(), prop::bool::weighted(0.2))
            .prop_map(|(actor, name, ttl, detached)| Op::Acquire { actor, name, ttl, detached }),
        1 => (actor.clone(), name.clone()).prop_map(|(actor, name)| Op::StaleAcquire { actor, name }),
        3 => (actor.clone(), name.clone(), ttl).prop_map(|(actor, name, ttl)| Op::Renew { actor, name, ttl }),
        3 => (actor.clone(), name.clone(), any::<bool>())
            .prop_map(|(actor, name, exact_hint)| Op::Release { actor, name, exact_hint }),
        1 => (name.clone(), 0u8..3).prop_map(|(name, mode)| Op::Revoke { name, mode }),
        1 => name.clone().prop_map(|name| Op::Announce { name }),
        1 => (actor.clone(), name.clone()).prop_map(|(actor, name)| Op::Watch { actor, name }),
        1 => (actor.clone(), name.clone()).prop_map(|(actor, name)| Op::Detach { actor, name }),
        4 => prop_oneof![0u64..2_000, 0u64..30_000].prop_map(|dt| Op::Advance { dt }),
        1 => actor.clone().prop_map(|actor| Op::Crash { actor }),
        1 => name.clone().prop_map(|name| Op::HalfUnbind { name }),
        1 => (actor, name.clone(), 1_000u64..20_000)
            .prop_map(|(actor, name, ttl)| Op::CrashMidGrant { actor, name, ttl }),
        1 => (name.clone(), 1u64..1_000_000).prop_map(|(name, far)| Op::Scribble { name, far }),
        1 => (name, 0..SLOTS).prop_map(|(name, target)| Op::Rebind { name, target }),
    ]
}

/// The state of a name's grant in the model. `Held` includes expired grants that
/// nobody has replaced yet (the slot keeps their word until someone acts).
#[derive(Clone, Copy, Debug, PartialEq)]
enum St {
    Free,
    Revoked,
    Held {
        actor: usize,
        pid: u32,
        deadline: u64,
        detached: bool,
        /// Whether its holder record landed.
        recorded: bool,
    },
}

#[derive(Debug)]
struct NameM {
    slot: usize,
    bound_as: u64,
    old_bindings: Vec<(usize, u64)>,
    st: St,
    /// Token in the slot's grant word (the binding's token before the first grant).
    word_token: u64,
    waiters: bool,
    /// Retired (grant word `UNBOUND`) but still bound: an unbinding left half-done.
    retired: bool,
    /// Every token handed out for this name, in order.
    issued: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum SlotM {
    Empty,
    Bound(usize),
    Retired(u64),
}

#[derive(Clone, Copy, Debug)]
struct Belief {
    slot: usize,
    token: u64,
    deadline: u64,
}

#[derive(Debug)]
struct ActorM {
    pid: u32,
    incarnation: u32,
    beliefs: BTreeMap<usize, Belief>,
}

/// How a holder's grant stands, seen from the slot its belief points at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum View {
    Live,
    ExpiredUntaken,
    Released,
    Revoked,
    RetiredOwn,
    TakenOver,
}

struct World {
    slots: Vec<Slot>,
    slot_m: Vec<SlotM>,
    names: Vec<NameM>,
    actors: Vec<ActorM>,
    dead: BTreeSet<u32>,
    floor: u64,
    now: u64,
}

fn name_words(n: usize) -> ([u64; 8], usize, u32) {
    let mut w = [0u64; 8];
    w[0] = u64::from_le_bytes(*b"lease-\0\0") | ((b'a' + n as u8) as u64) << 48;
    (w, 7, 0x1000 + n as u32)
}

/// The model's own reading of a deadline word (independent of `protocol::classify`).
fn class(deadline_bits: u64, now: u64) -> Observed {
    match deadline_bits & !grant::WAITERS {
        0 => Observed::Free,
        1 => Observed::Revoked,
        2 => Observed::Unbound,
        d if d <= now => Observed::Expired,
        d if d - now > 2 * 365 * 24 * 3600 * 1_000_000_000 => Observed::Corrupt,
        _ => Observed::Held,
    }
}

fn pid_of(actor: usize, incarnation: u32) -> u32 {
    actor as u32 + 1 + ACTORS as u32 * incarnation
}

fn rec(pid: u32, detached: bool) -> holder::Record {
    holder::Record {
        tag: 0,
        pidns: PIDNS,
        pid,
        kind: holder::KIND_PIDFD_INODE,
        detached,
        ident: pid as u64,
    }
}

impl World {
    fn new(start: u64) -> World {
        let slots: Vec<Slot> = (0..SLOTS).map(|_| Slot::new()).collect();
        let mut slot_m = vec![SlotM::Empty; SLOTS];
        let mut names = Vec::new();
        for (n, m) in slot_m.iter_mut().enumerate().take(NAMES) {
            let (w, len, hash) = name_words(n);
            let b = protocol::bind(&slots[n], bind::EMPTY, &w, len, 0, hash, 0).unwrap();
            *m = SlotM::Bound(n);
            names.push(NameM {
                slot: n,
                bound_as: b,
                old_bindings: Vec::new(),
                st: St::Free,
                word_token: 1,
                waiters: false,
                retired: false,
                issued: Vec::new(),
            });
        }
        let actors = (0..ACTORS)
            .map(|a| ActorM { pid: pid_of(a, 0), incarnation: 0, beliefs: BTreeMap::new() })
            .collect();
        World { slots, slot_m, names, actors, dead: BTreeSet::new(), floor: 0, now: start }
    }

    /// Held, unexpired, and not impossibly far.
    fn live(&self, st: St) -> bool {
        matches!(st, St::Held { deadline, .. } if class(deadline, self.now) == Observed::Held)
    }

    /// Held with an impossible deadline.
    fn corrupt(&self, st: St) -> bool {
        matches!(st, St::Held { deadline, .. } if class(deadline, self.now) == Observed::Corrupt)
    }

    fn expected_word(&self, s: usize) -> u128 {
        match self.slot_m[s] {
            SlotM::Empty => 0,
            SlotM::Retired(t) => grant::pack(grant::UNBOUND, t),
            SlotM::Bound(n) => {
                let m = &self.names[n];
                if m.retired {
                    return grant::pack(grant::UNBOUND, m.word_token);
                }
                let w = if m.waiters { grant::WAITERS } else { 0 };
                match m.st {
                    St::Free => grant::pack(grant::FREE | w, m.word_token),
                    St::Revoked => grant::pack(grant::REVOKED | w, m.word_token),
                    St::Held { deadline, .. } => grant::pack(deadline | w, m.word_token),
                }
            }
        }
    }

    fn view(&self, b: Belief) -> View {
        match self.slot_m[b.slot] {
            SlotM::Empty => unreachable!("beliefs point at slots that were bound"),
            SlotM::Retired(t) if t == b.token => View::RetiredOwn,
            SlotM::Retired(_) => View::TakenOver,
            SlotM::Bound(n) => {
                let m = &self.names[n];
                if m.word_token != b.token {
                    return View::TakenOver;
                }
                if m.retired {
                    return View::RetiredOwn;
                }
                match m.st {
                    St::Free => View::Released,
                    St::Revoked => View::Revoked,
                    // The holder of a scribbled grant still owns it (it may renew it).
                    St::Held { .. } if self.live(m.st) || self.corrupt(m.st) => View::Live,
                    St::Held { .. } => View::ExpiredUntaken,
                }
            }
        }
    }

    /// What renew/watch/rewrite_holder must answer for a grant that is not live.
    fn lost_for(v: View) -> Lost {
        match v {
            View::ExpiredUntaken | View::RetiredOwn => Lost::Expired,
            View::Released => Lost::Released,
            View::Revoked => Lost::Revoked,
            View::TakenOver => Lost::TakenOver,
            View::Live => unreachable!(),
        }
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Acquire { actor, name, ttl, detached } => {
                let pid = self.actors[actor].pid;
                let m = &self.names[name];
                let slot = &self.slots[m.slot];
                let mut asked = Vec::new();
                let r = protocol::try_grant(
                    slot,
                    m.bound_as,
                    now,
                    ttl,
                    rec(pid, detached),
                    9,
                    &mut |r| {
                        asked.push(*r);
                        self.dead.contains(&r.pid)
                    },
                );
                if m.retired {
                    assert_eq!(r, Err(Refusal::Rebound), "{op:?}: half-unbound name");
                    assert!(asked.is_empty());
                    return;
                }
                let tag = holder::Record::tag_for(m.word_token);
                let (want_took, want_asked) = match m.st {
                    St::Free => (Some(Took::Free), None),
                    St::Revoked => (Some(Took::Revoked), None),
                    St::Held { deadline, .. } if deadline <= now => (Some(Took::Expired), None),
                    St::Held { .. } if self.corrupt(m.st) => (Some(Took::Corrupt), None),
                    St::Held { deadline, recorded: false, .. } => {
                        let want = Refusal::Held { token: m.word_token, deadline, holder: None };
                        assert_eq!(r, Err(want), "{op:?}: held, without a record");
                        (None, None)
                    }
                    St::Held { pid: hp, detached: hd, deadline, .. } => {
                        let record = holder::Record { tag, ..rec(hp, hd) };
                        let ask = (!hd).then_some(record);
                        if !hd && self.dead.contains(&hp) {
                            (Some(Took::DeadHolder), ask)
                        } else {
                            let want = Refusal::Held {
                                token: m.word_token,
                                deadline,
                                holder: Some(record),
                            };
                            assert_eq!(r, Err(want), "{op:?}: held by a live or detached holder");
                            (None, ask)
                        }
                    }
                };
                assert_eq!(
                    asked,
                    want_asked.into_iter().collect::<Vec<_>>(),
                    "{op:?}: liveness asked"
                );
                let Some(took) = want_took else { return };
                // The least value ≥ max(now, last + 1) whose low 16 bits (the sequence)
                // are the last token's plus one.
                let least = (m.word_token + 1).max(now);
                let token = least + ((m.word_token + 1).wrapping_sub(least) & 0xffff);
                assert_eq!(
                    r,
                    Ok(Granted { token, deadline: now + ttl, took, wake: false }),
                    "{op:?}"
                );
                if let Some(&last) = m.issued.last() {
                    assert!(token > last, "token {token} not above {last} for name {name}");
                }
                if took == Took::DeadHolder {
                    let St::Held { pid: hp, .. } = m.st else { unreachable!() };
                    assert!(self.dead.contains(&hp), "reclaimed a live holder early");
                }
                let s = m.slot;
                let m = &mut self.names[name];
                m.st = St::Held { actor, pid, deadline: now + ttl, detached, recorded: true };
                m.word_token = token;
                m.issued.push(token);
                self.actors[actor]
                    .beliefs
                    .insert(name, Belief { slot: s, token, deadline: now + ttl });
            }
            Op::StaleAcquire { actor, name } => {
                let Some(&(s, b)) = self.names[name].old_bindings.last() else { return };
                let pid = self.actors[actor].pid;
                let r = protocol::try_grant(
                    &self.slots[s],
                    b,
                    now,
                    5_000,
                    rec(pid, false),
                    0,
                    &mut |r| panic!("stale binding: liveness must not be asked ({r:?})"),
                );
                assert_eq!(r, Err(Refusal::Rebound), "{op:?}");
                assert_eq!(protocol::revoke(&self.slots[s], b, now, None), Err(Refusal::Rebound));
                assert_eq!(protocol::announce_waiter(&self.slots[s], b, now), Wait::Retry);
            }
            Op::Renew { actor, name, ttl } => {
                let Some(&b) = self.actors[actor].beliefs.get(&name) else { return };
                let v = self.view(b);
                let r = protocol::renew(&self.slots[b.slot], b.token, now, ttl);
                if v == View::Live {
                    assert_eq!(r, Ok(now + ttl), "{op:?}");
                    let m = &mut self.names[name];
                    let St::Held { ref mut deadline, .. } = m.st else { unreachable!() };
                    *deadline = now + ttl;
                    self.actors[actor].beliefs.get_mut(&name).unwrap().deadline = now + ttl;
                } else {
                    assert_eq!(r, Err(Self::lost_for(v)), "{op:?} {v:?}");
                }
            }
            Op::Release { actor, name, exact_hint } => {
                let Some(&b) = self.actors[actor].beliefs.get(&name) else { return };
                let v = self.view(b);
                let hint = if exact_hint {
                    grant::deadline_bits(self.expected_word(b.slot))
                } else {
                    b.deadline
                };
                // (A hint of a special value is a protocol bug; see protocol_states.rs.)
                let hint = if hint & grant::DEADLINE <= grant::UNBOUND { b.deadline } else { hint };
                let r = protocol::release(&self.slots[b.slot], b.token, hint);
                match v {
                    View::Live | View::ExpiredUntaken => {
                        let m = &mut self.names[name];
                        assert_eq!(r, Ok(m.waiters), "{op:?} {v:?}");
                        m.st = St::Free;
                        m.waiters = false;
                    }
                    View::Released => assert_eq!(r, Err(Lost::Released), "{op:?}"),
                    View::Revoked => assert_eq!(r, Err(Lost::Revoked), "{op:?}"),
                    View::RetiredOwn => assert_eq!(r, Err(Lost::Expired), "{op:?}"),
                    View::TakenOver => assert_eq!(r, Err(Lost::TakenOver), "{op:?}"),
                }
            }
            Op::Revoke { name, mode } => {
                let m = &self.names[name];
                let only = match mode {
                    0 => None,
                    1 => Some(m.word_token),
                    _ => Some(m.word_token.saturating_sub(1)),
                };
                let r = protocol::revoke(&self.slots[m.slot], m.bound_as, now, only);
                if m.retired {
                    assert_eq!(r, Err(Refusal::Rebound), "{op:?}: half-unbound name");
                } else if !self.live(m.st) && !self.corrupt(m.st) {
                    assert_eq!(r, Ok(Targeted::NotHeld { token: m.word_token }), "{op:?}");
                } else if only.is_some_and(|t| t != m.word_token) {
                    assert_eq!(r, Ok(Targeted::OtherToken { token: m.word_token }), "{op:?}");
                } else {
                    let want = Targeted::Done { token: m.word_token, wake: m.waiters };
                    assert_eq!(r, Ok(want), "{op:?}");
                    let m = &mut self.names[name];
                    m.st = St::Revoked;
                    m.waiters = false;
                }
            }
            Op::Announce { name } => {
                let m = &self.names[name];
                let r = protocol::announce_waiter(&self.slots[m.slot], m.bound_as, now);
                match m.st {
                    St::Held { deadline, .. } if self.live(m.st) && !m.retired => {
                        let announced = grant::pack(deadline | grant::WAITERS, m.word_token);
                        let want = Wait::Sleep {
                            futex_expect: protocol::futex_value(announced),
                            deadline,
                            token: m.word_token,
                        };
                        assert_eq!(r, want, "{op:?}");
                        self.names[name].waiters = true;
                    }
                    _ => assert_eq!(r, Wait::Retry, "{op:?}"),
                }
            }
            Op::Watch { actor, name } => {
                let Some(&b) = self.actors[actor].beliefs.get(&name) else { return };
                let v = self.view(b);
                let r = protocol::watch(&self.slots[b.slot], b.token, now);
                if v == View::Live {
                    self.names[name].waiters = true;
                    let want = protocol::futex_value(self.expected_word(b.slot));
                    assert_eq!(r, Ok(want), "{op:?}");
                } else {
                    assert_eq!(r, Err(Self::lost_for(v)), "{op:?} {v:?}");
                }
            }
            Op::Detach { actor, name } => {
                let Some(&b) = self.actors[actor].beliefs.get(&name) else { return };
                let v = self.view(b);
                let pid = self.actors[actor].pid;
                let r = protocol::rewrite_holder(&self.slots[b.slot], b.token, now, rec(pid, true));
                if v == View::Live {
                    assert_eq!(r, Ok(()), "{op:?}");
                    let St::Held { ref mut detached, .. } = self.names[name].st else {
                        unreachable!()
                    };
                    *detached = true;
                } else {
                    assert_eq!(r, Err(Self::lost_for(v)), "{op:?} {v:?}");
                    // The stale store is tagged with the stale token: it must not be
                    // attributed to whatever grant the slot has now (checked in `check`).
                }
            }
            Op::Advance { dt } => self.now += dt,
            Op::Crash { actor } => {
                let a = &mut self.actors[actor];
                self.dead.insert(a.pid);
                a.incarnation += 1;
                a.pid = pid_of(actor, a.incarnation);
                a.beliefs.clear();
            }
            Op::CrashMidGrant { actor, name, ttl } => {
                let before = self.names[name].issued.len();
                self.apply(Op::Acquire { actor, name, ttl, detached: false });
                if self.names[name].issued.len() > before {
                    // The record was wiped before the CAS and is never written.
                    self.slots[self.names[name].slot].holder.store(0, SeqCst);
                    let St::Held { ref mut recorded, .. } = self.names[name].st else {
                        unreachable!()
                    };
                    *recorded = false;
                }
                self.apply(Op::Crash { actor });
            }
            Op::Scribble { name, far } => {
                let m = &self.names[name];
                let St::Held { .. } = m.st else { return };
                if m.retired {
                    return;
                }
                let garbage = now + protocol::IMPOSSIBLE_AHEAD_NS + far;
                let w = if m.waiters { grant::WAITERS } else { 0 };
                let slot = &self.slots[m.slot];
                slot.grant.store(grant::pack(garbage | w, m.word_token), SeqCst);
                let St::Held { ref mut deadline, .. } = self.names[name].st else { unreachable!() };
                *deadline = garbage;
            }
            Op::HalfUnbind { name } => {
                let m = &self.names[name];
                let r = protocol::retire(&self.slots[m.slot], now);
                if self.live(m.st) {
                    assert_eq!(r, None, "{op:?}: retire must refuse a held slot");
                    return;
                }
                assert_eq!(r, Some((m.word_token, m.waiters)), "{op:?}");
                let m = &mut self.names[name];
                m.retired = true;
                m.st = St::Free;
                m.waiters = false;
            }
            Op::Rebind { name, target } => {
                let m = &self.names[name];
                let s = m.slot;
                let r = protocol::retire(&self.slots[s], now);
                if self.live(m.st) {
                    assert_eq!(r, None, "{op:?}: retire must refuse a held slot");
                    return;
                }
                assert_eq!(r, Some((m.word_token, m.waiters)), "{op:?}");
                // What the table does: raise the floor past the slot's last token, then
                // tombstone it, then bind the name elsewhere with the floor.
                self.floor = self.floor.max(m.word_token);
                self.slot_m[s] = SlotM::Retired(m.word_token);
                protocol::tombstone(&self.slots[s]);
                assert_eq!(bind::state(self.slots[s].bind.load(SeqCst)), bind::TOMBSTONE);
                let free: Vec<usize> = (0..SLOTS)
                    .filter(|&i| i != s && !matches!(self.slot_m[i], SlotM::Bound(_)))
                    .collect();
                let t = free[target % free.len()];
                let history = match self.slot_m[t] {
                    SlotM::Empty => 0,
                    SlotM::Retired(tok) => tok,
                    SlotM::Bound(_) => unreachable!(),
                };
                let previous = self.slots[t].bind.load(SeqCst);
                let (w, len, hash) = name_words(name);
                let b =
                    protocol::bind(&self.slots[t], previous, &w, len, 0, hash, self.floor).unwrap();
                assert_eq!(bind::generation(b), bind::generation(previous) + 1);
                let first = history.max(self.floor) + 1;
                if let Some(&last) = self.names[name].issued.last() {
                    assert!(first > last, "re-bound name starts at {first}, not above {last}");
                }
                self.slot_m[t] = SlotM::Bound(name);
                let m = &mut self.names[name];
                m.old_bindings.push((s, m.bound_as));
                m.slot = t;
                m.bound_as = b;
                m.st = St::Free;
                m.word_token = first;
                m.waiters = false;
                m.retired = false;
            }
        }
    }

    fn check(&self, step: usize, op: Op) {
        let now = self.now;
        for s in 0..SLOTS {
            let want = self.expected_word(s);
            let got = self.slots[s].grant.load(SeqCst);
            assert_eq!(
                (grant::deadline_bits(got), grant::token(got)),
                (grant::deadline_bits(want), grant::token(want)),
                "step {step} ({op:?}): slot {s} ({:?}) grant word (deadline bits, token)",
                self.slot_m[s]
            );
        }
        for (n, m) in self.names.iter().enumerate() {
            let snap = protocol::snapshot(&self.slots[m.slot]).expect("bound slot");
            assert_eq!(snap.bind, m.bound_as, "step {step}: binding of name {n}");
            assert_eq!(snap.name, name_words(n).0);
            match m.st {
                St::Held { pid, detached, recorded: true, .. } => {
                    let h = snap.holder.expect("holder record of the current grant");
                    assert_eq!((h.pid, h.detached), (pid, detached), "step {step}: holder of {n}");
                }
                St::Held { recorded: false, .. } => assert_eq!(snap.holder, None),
                _ => {}
            }
            // Fencing: strictly increasing over the name's whole life.
            assert!(m.issued.windows(2).all(|w| w[0] < w[1]), "name {n}: {:?}", m.issued);
            // Exclusivity, on the slots' own evidence: who can prove a live grant?
            let mut believers = Vec::new();
            for (a, actor) in self.actors.iter().enumerate() {
                let Some(b) = actor.beliefs.get(&n) else { continue };
                let word = self.slots[b.slot].grant.load(SeqCst);
                let bound_here = self.slots[b.slot].bind.load(SeqCst) == m.bound_as;
                if bound_here
                    && grant::token(word) == b.token
                    && class(grant::deadline_bits(word), now) == Observed::Held
                {
                    believers.push(a);
                }
            }
            assert!(believers.len() <= 1, "step {step}: name {n} held by {believers:?}");
            if let Some(&a) = believers.first() {
                assert!(
                    matches!(m.st, St::Held { actor, pid, .. } if actor == a && pid == self.actors[a].pid)
                        && self.live(m.st),
                    "step {step}: actor {a} holds {n} but the model says {:?}",
                    m.st
                );
            }
        }
        // Every stale holder is told so, and its attempt changes nothing.
        for actor in &self.actors {
            for (&n, &b) in &actor.beliefs {
                let v = self.view(b);
                if v == View::Live {
                    continue;
                }
                let slot = &self.slots[b.slot];
                let before = slot.grant.load(SeqCst);
                assert_eq!(
                    protocol::renew(slot, b.token, now, 1_000),
                    Err(Self::lost_for(v)),
                    "step {step}: stale holder of name {n} ({v:?})"
                );
                assert_eq!(protocol::watch(slot, b.token, now), Err(Self::lost_for(v)));
                assert_eq!(slot.grant.load(SeqCst), before);
            }
        }
    }
}

fn run(start: u64, ops: &[Op]) {
    let mut w = World::new(start);
    w.check(0, Op::Advance { dt: 0 });
    for (i, &op) in ops.iter().enumerate() {
        w.apply(op);
        w.check(i + 1, op);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 700,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Starting near zero, tokens often come from `token + 1`; starting late, from `now`.
    #[test]
    fn slots_agree_with_the_model(
        start in prop_oneof![Just(3u64), 3u64..5_000, 1_000_000u64..2_000_000],
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run(start, &ops);
    }
}

/// A fixed scenario that exercises every kind of step, as a smoke test of the harness.
#[test]
fn scripted_scenario() {
    use Op::*;
    run(
        1_000,
        &[
            Acquire { actor: 0, name: 0, ttl: 5_000, detached: false },
            Acquire { actor: 1, name: 0, ttl: 5_000, detached: false },
            Announce { name: 0 },
            Watch { actor: 0, name: 0 },
            Renew { actor: 0, name: 0, ttl: 8_000 },
            Crash { actor: 0 },
            Acquire { actor: 1, name: 0, ttl: 5_000, detached: false },
            Renew { actor: 1, name: 0, ttl: 5_000 },
            Detach { actor: 1, name: 0 },
            Crash { actor: 1 },
            Acquire { actor: 2, name: 0, ttl: 5_000, detached: true },
            Advance { dt: 6_000 },
            Acquire { actor: 3, name: 0, ttl: 5_000, detached: false },
            Revoke { name: 0, mode: 2 },
            Revoke { name: 0, mode: 1 },
            Renew { actor: 3, name: 0, ttl: 5_000 },
            Release { actor: 3, name: 0, exact_hint: false },
            HalfUnbind { name: 0 },
            Acquire { actor: 2, name: 0, ttl: 5_000, detached: false },
            Renew { actor: 3, name: 0, ttl: 5_000 },
            Rebind { name: 0, target: 0 },
            StaleAcquire { actor: 2, name: 0 },
            Acquire { actor: 2, name: 0, ttl: 5_000, detached: false },
            Rebind { name: 1, target: 0 },
            Release { actor: 2, name: 0, exact_hint: true },
            Release { actor: 2, name: 0, exact_hint: true },
            Rebind { name: 0, target: 1 },
            Acquire { actor: 2, name: 0, ttl: 5_000, detached: false },
        ],
    );
}
