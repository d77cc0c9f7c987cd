//! The keys an etcd table keeps under its prefix, and what their values say. Every value
//! read back is untrusted: decoding never panics, and a field that does not parse is
//! absent.
//!
//! Under `PREFIX/.shmlease/`:
//!
//! | key | value | lease | what it is |
//! |---|---|---|---|
//! | `table` | descriptor: format version, options, creator | none | written once by `create`; `open` checks it |
//! | `lease/NAME` | holder record | the grant's etcd lease | exists while the name is held; **create revision = fencing token** |
//! | `grants/NAME` | holder record of the latest grant | none | put by every grant in the same transaction: version = transitions, mod revision = latest token |
//! | `ends/NAME` | `released TOKEN` or `revoked TOKEN` | none | how the latest grant ended, when it did not expire |
//! | `asks/NAME` | `asked` | none | put by a request to release: the grant `T` is asked iff this key's mod revision is above `T` (revisions only grow, so an ask of an earlier grant never reaches a later one) |
//!
//! A fair waiter for `NAME` has a *place*, `queue/NAME\0<id>` (a random id), holding
//! its holder record and attached to an etcd lease of its own that it keeps alive while
//! it waits: places are served in create-revision order (see `super::fair`).
//!
//! A name with permits or shared grants keeps each grant under a *seat*: a key name of
//! its own, `NAME\0p<N>.<i>` (permit `i` of `N`) or `NAME\0s.<i>` (shared seat `i`),
//! with the four keys above (`lease/`, `grants/`, `ends/`, `asks/`) as an exclusive
//! name has. Names never hold a NUL, so a seat never collides with a name, and every
//! seat of `NAME` sorts in `[NAME\0, NAME\x01)`, right after `NAME` itself: one range
//! read or watch covers a name and all its seats (see `super::kinds`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::identity;
use crate::info::{Holder, Host, Label, ProcessIdentity};
use crate::layout::holder;

/// The format of the keys and values; `open` refuses a descriptor with another.
pub const FORMAT_VERSION: u32 = 1;

/// Key names of one table.
#[derive(Clone, Debug)]
pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { base: format!("{prefix}/.shmlease/") }
    }
    /// Everything the table owns (for `remove`).
    pub fn all(&self) -> Vec<u8> {
        self.base.clone().into_bytes()
    }
    pub fn descriptor(&self) -> Vec<u8> {
        format!("{}table", self.base).into_bytes()
    }
    pub fn lease_dir(&self) -> Vec<u8> {
        format!("{}lease/", self.base).into_bytes()
    }
    pub fn grants_dir(&self) -> Vec<u8> {
        format!("{}grants/", self.base).into_bytes()
    }
    pub fn ends_dir(&self) -> Vec<u8> {
        format!("{}ends/", self.base).into_bytes()
    }
    pub fn queue_dir(&self) -> Vec<u8> {
        format!("{}queue/", self.base).into_bytes()
    }
    /// The place `id` of a fair waiter for `name`.
    pub fn place(&self, name: &str, id: u64) -> Vec<u8> {
        [self.queue_dir(), format!("{name}\0{id:016x}").into_bytes()].concat()
    }
    /// Every place in `name`'s queue.
    pub fn queue_of(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        Keys::seats_in(&self.queue_dir(), name)
    }
    pub fn asks_dir(&self) -> Vec<u8> {
        format!("{}asks/", self.base).into_bytes()
    }
    pub fn lease(&self, name: &str) -> Vec<u8> {
        [self.lease_dir(), name.as_bytes().to_vec()].concat()
    }
    pub fn grants(&self, name: &str) -> Vec<u8> {
        [self.grants_dir(), name.as_bytes().to_vec()].concat()
    }
    pub fn ends(&self, name: &str) -> Vec<u8> {
        [self.ends_dir(), name.as_bytes().to_vec()].concat()
    }
    pub fn asks(&self, name: &str) -> Vec<u8> {
        [self.asks_dir(), name.as_bytes().to_vec()].concat()
    }
    /// The range `[start, end)` of every seat of `name` under `dir`.
    pub fn seats_in(dir: &[u8], name: &str) -> (Vec<u8>, Vec<u8>) {
        let base = [dir, name.as_bytes()].concat();
        ([base.as_slice(), b"\0"].concat(), [base.as_slice(), b"\x01"].concat())
    }
    /// The range of `name`'s seats whose suffix starts with `tag` (`p`, `p3.`, `s.`).
    pub fn seats_tagged(&self, name: &str, tag: &str) -> (Vec<u8>, Vec<u8>) {
        let start = [self.lease(name), b"\0".to_vec(), tag.as_bytes().to_vec()].concat();
        let mut end = start.clone();
        // The prefix's range end: its last byte plus one (tags end in a letter or a dot).
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        (start, end)
    }
    /// The range of `lease/` keys of `name` and all its seats: `[lease/NAME, lease/NAME\x01)`.
    pub fn name_and_seats(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        (self.lease(name), Keys::seats_in(&self.lease_dir(), name).1)
    }
    /// The name a key under `dir` stands for; `None` for a key that is not one.
    pub fn name_in<'k>(dir: &[u8], key: &'k [u8]) -> Option<&'k str> {
        key.strip_prefix(dir).and_then(|n| std::str::from_utf8(n).ok()).filter(|n| !n.is_empty())
    }
}

/// What kind of seat a key name is, as its suffix after the NUL says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatKind {
    /// A permit of a name with this many.
    Permits(u32),
    /// A shared seat of a shared name.
    Shared,
}

impl SeatKind {
    /// The tag that starts the suffix of every seat of this kind (`p3.`, `s.`).
    pub fn tag(self) -> String {
        match self {
            SeatKind::Permits(n) => format!("p{n}."),
            SeatKind::Shared => "s.".into(),
        }
    }
    /// How many seats a name of this kind has.
    pub fn seats(self) -> u32 {
        match self {
            SeatKind::Permits(n) => n,
            SeatKind::Shared => crate::layout::MAX_SHARED,
        }
    }
    pub fn lease_kind(self) -> crate::info::LeaseKind {
        match self {
            SeatKind::Permits(n) => crate::info::LeaseKind::Permits(n),
            SeatKind::Shared => crate::info::LeaseKind::Shared,
        }
    }
}

/// The key name of seat `i` of `name`.
pub fn seat(name: &str, kind: SeatKind, i: u32) -> String {
    format!("{name}\0{}{i}", kind.tag())
}

/// A key name read back, split into its name and, for a seat, the seat's kind and
/// index; `None` for a seat suffix that does not parse or is out of range (untrusted).
pub fn parse_seat(key_name: &str) -> Option<(&str, Option<(SeatKind, u32)>)> {
    let Some((name, suffix)) = key_name.split_once('\0') else { return Some((key_name, None)) };
    let (kind, index) = if let Some(i) = suffix.strip_prefix("s.") {
        (SeatKind::Shared, i)
    } else {
        let (digits, i) = suffix.strip_prefix('p')?.split_once('.')?;
        let n: u32 = digits.parse().ok()?;
        // Written as `seat` writes it, nothing else (`p02.` would dodge the range checks).
        if !(2..=crate::layout::MAX_SEATS).contains(&n) || n.to_string() != digits {
            return None;
        }
        (SeatKind::Permits(n), i)
    };
    let i: u32 = index.parse().ok()?;
    (i < kind.seats() && i.to_string() == index).then_some((name, Some((kind, i))))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// `key=value` fields separated by spaces, after a leading word.
fn fields<'v>(value: &'v str, first: &str) -> Option<impl Iterator<Item = (&'v str, &'v str)>> {
    let mut words = value.split(' ');
    (words.next()? == first).then(|| words.filter_map(|w| w.split_once('=')))
}

/// Who holds a grant and since when: the value of `lease/NAME` and `grants/NAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolderRecord {
    pub host: Host,
    pub pid: u32,
    pub pidns: u32,
    pub kind: u8,
    pub ident: u64,
    pub detached: bool,
    pub label: Label,
    /// The TTL etcd granted, in seconds.
    pub ttl_s: i64,
    /// The TTL asked for, in seconds (etcd may grant more: its minimum).
    pub asked_s: i64,
    pub acquired_ms: u64,
    pub renewed_ms: u64,
}

impl HolderRecord {
    /// This process, now.
    pub fn me(host: Host, label: Label, detached: bool, asked_s: i64, ttl_s: i64) -> HolderRecord {
        let me = identity::me();
        let now = unix_ms(SystemTime::now());
        HolderRecord {
            host,
            pid: me.pid,
            pidns: me.pidns,
            kind: me.kind,
            ident: me.ident & holder::IDENT_MASK,
            detached,
            label,
            ttl_s,
            asked_s,
            acquired_ms: now,
            renewed_ms: now,
        }
    }

    /// Whether the record names this very process on this host.
    pub fn is_me(&self, host: &Host) -> bool {
        let me = identity::me();
        self.host == *host
            && self.pid == me.pid
            && self.pidns == me.pidns
            && self.kind == me.kind
            && self.ident == me.ident & holder::IDENT_MASK
    }

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "holder host={} pid={} pidns={} kind={} ident={} detached={} label={} ttl={} asked={} acquired={} renewed={}",
            hex(self.host.as_str().as_bytes()),
            self.pid,
            self.pidns,
            self.kind,
            self.ident,
            self.detached as u8,
            hex(self.label.as_str().as_bytes()),
            self.ttl_s,
            self.asked_s,
            self.acquired_ms,
            self.renewed_ms,
        )
        .into_bytes()
    }

    /// Reads a value back; `None` unless it is a holder record. Fields that do not
    /// parse keep their defaults.
    pub fn decode(value: &[u8]) -> Option<HolderRecord> {
        let text = std::str::from_utf8(value).ok()?;
        let mut r = HolderRecord::default();
        for (k, v) in fields(text, "holder")? {
            let text_of = |v: &str| unhex(v).and_then(|b| String::from_utf8(b).ok());
            match k {
                "host" => r.host = text_of(v).and_then(|h| Host::new(&h)).unwrap_or_default(),
                "pid" => r.pid = v.parse().unwrap_or(0),
                "pidns" => r.pidns = v.parse().unwrap_or(0),
                "kind" => r.kind = v.parse().unwrap_or(0),
                "ident" => r.ident = v.parse::<u64>().unwrap_or(0) & holder::IDENT_MASK,
                "detached" => r.detached = v == "1",
                "label" => r.label = text_of(v).and_then(|l| Label::new(&l)).unwrap_or_default(),
                "ttl" => r.ttl_s = v.parse().unwrap_or(0),
                "asked" => r.asked_s = v.parse().unwrap_or(0),
                "acquired" => r.acquired_ms = v.parse().unwrap_or(0),
                "renewed" => r.renewed_ms = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(r)
    }

    pub fn holder(&self) -> Holder {
        Holder {
            pid: self.pid,
            pid_namespace: self.pidns,
            identity: match self.kind {
                holder::KIND_PIDFD_INODE => ProcessIdentity::PidfdInode(self.ident),
                holder::KIND_START_TIME => ProcessIdentity::StartTime(self.ident),
                _ => ProcessIdentity::Unknown,
            },
            detached: self.detached,
            label: self.label,
            host: self.host,
        }
    }

    pub fn acquired_at(&self) -> Option<SystemTime> {
        (self.acquired_ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(self.acquired_ms))
    }

    pub fn renewed_at(&self) -> Option<SystemTime> {
        (self.renewed_ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(self.renewed_ms))
    }

    /// Whether renewing for `ttl_s` keeps the current etcd lease (etcd renews a lease
    /// only for the TTL it granted): `ttl_s` is what was asked or what was granted.
    pub fn same_ttl(&self, ttl_s: i64) -> bool {
        ttl_s == self.ttl_s || ttl_s == self.asked_s
    }

    /// The same record, renewed now.
    pub fn renewed_now(&self) -> HolderRecord {
        HolderRecord { renewed_ms: unix_ms(SystemTime::now()), ..self.clone() }
    }
}

/// How a grant ended, when it did not simply expire: the value of `ends/NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Released(u64),
    Revoked(u64),
}

impl End {
    pub fn encode(self) -> Vec<u8> {
        match self {
            End::Released(t) => format!("released {t}"),
            End::Revoked(t) => format!("revoked {t}"),
        }
        .into_bytes()
    }

    pub fn decode(value: &[u8]) -> Option<End> {
        let (word, token) = std::str::from_utf8(value).ok()?.split_once(' ')?;
        let token = token.parse().ok()?;
        match word {
            "released" => Some(End::Released(token)),
            "revoked" => Some(End::Revoked(token)),
            _ => None,
        }
    }

    pub fn token(self) -> u64 {
        match self {
            End::Released(t) | End::Revoked(t) => t,
        }
    }
}

/// What `create` records and `open` checks: the value of `table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub format: u32,
    pub capacity: u32,
    pub created_ms: u64,
    pub creator_pid: u32,
    pub creator_uid: u32,
    pub creator_host: Host,
}

impl Descriptor {
    pub fn new(capacity: u32, host: Host) -> Descriptor {
        Descriptor {
            format: FORMAT_VERSION,
            capacity,
            created_ms: unix_ms(SystemTime::now()),
            creator_pid: identity::pid(),
            creator_uid: nix::unistd::geteuid().as_raw(),
            creator_host: host,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "shmlease-etcd-table format={} capacity={} created={} creator_pid={} creator_uid={} creator_host={}",
            self.format,
            self.capacity,
            self.created_ms,
            self.creator_pid,
            self.creator_uid,
            hex(self.creator_host.as_str().as_bytes()),
        )
        .into_bytes()
    }

    /// `None` unless the value is a descriptor with a format version.
    pub fn decode(value: &[u8]) -> Option<Descriptor> {
        let text = std::str::from_utf8(value).ok()?;
        let mut format = None;
        let mut d = Descriptor {
            format: 0,
            capacity: 0,
            created_ms: 0,
            creator_pid: 0,
            creator_uid: 0,
            creator_host: Host::default(),
        };
        for (k, v) in fields(text, "shmlease-etcd-table")? {
            match k {
                "format" => format = v.parse().ok(),
                "capacity" => d.capacity = v.parse().unwrap_or(0),
                "created" => d.created_ms = v.parse().unwrap_or(0),
                "creator_pid" => d.creator_pid = v.parse().unwrap_or(0),
                "creator_uid" => d.creator_uid = v.parse().unwrap_or(0),
                "creator_host" => {
                    d.creator_host = unhex(v)
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|h| Host::new(&h))
                        .unwrap_or_default()
                }
                _ => {}
            }
        }
        d.format = format?;
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_decodes_to_nothing_or_defaults() {
        let r =
            HolderRecord::me(Host::new("box-1").unwrap(), Label::new("w1").unwrap(), true, 1, 7);
        assert_eq!(HolderRecord::decode(&r.encode()), Some(r.clone()));
        assert!(r.is_me(&Host::new("box-1").unwrap()));
        assert!(!r.is_me(&Host::new("box-2").unwrap()));
        assert_eq!(HolderRecord::decode(b"\xff\xfe"), None);
        assert_eq!(HolderRecord::decode(b"other pid=3"), None);
        let odd =
            HolderRecord::decode(b"holder pid=x host=zz label=414243444546474849 ttl=-1 junk")
                .unwrap();
        assert_eq!(
            (odd.pid, odd.host, odd.label, odd.ttl_s),
            (0, Host::default(), Label::default(), -1)
        );

        for e in [End::Released(5), End::Revoked(u64::MAX)] {
            assert_eq!(End::decode(&e.encode()), Some(e));
        }
        assert_eq!(End::decode(b"released"), None);
        assert_eq!(End::decode(b"gone 5"), None);
        assert_eq!(End::decode(b"released -1"), None);

        let d = Descriptor::new(64, Host::new("h").unwrap());
        assert_eq!(Descriptor::decode(&d.encode()), Some(d));
        assert_eq!(Descriptor::decode(b"shmlease-etcd-table capacity=3"), None);
        assert_eq!(Descriptor::decode(b""), None);
    }

    #[test]
    fn seat_key_names_round_trip_and_odd_ones_are_refused() {
        for kind in [SeatKind::Permits(2), SeatKind::Permits(128), SeatKind::Shared] {
            let last = kind.seats() - 1;
            assert_eq!(parse_seat(&seat("a/b", kind, last)), Some(("a/b", Some((kind, last)))));
        }
        assert_eq!(parse_seat("plain"), Some(("plain", None)));
        for odd in [
            "n\0p2.2",
            "n\0p02.0",
            "n\0p1.0",
            "n\0p129.0",
            "n\0p2.01",
            "n\0p2.",
            "n\0p.0",
            "n\0s.64",
            "n\0s.-1",
            "n\0x.0",
            "n\0",
            "n\0p2.0\0s.1",
            "n\0p99999999999.0",
        ] {
            assert_eq!(parse_seat(odd), None, "{odd:?}");
        }
        let k = Keys::new("/t");
        let (start, end) = Keys::seats_in(&k.lease_dir(), "n");
        let seat_key = k.lease(&seat("n", SeatKind::Shared, 3));
        assert!(start <= seat_key && seat_key < end);
        // Neither the name itself nor a longer name falls among its seats.
        for other in [k.lease("n"), k.lease("n0"), k.lease("n/x"), k.lease("m")] {
            assert!(!(start <= other && other < end));
        }
        let (ps, pe) = k.seats_tagged("n", &SeatKind::Permits(2).tag());
        let p20 = k.lease(&seat("n", SeatKind::Permits(20), 0));
        assert!(!(ps <= p20 && p20 < pe), "p20 is not among p2's seats");
        assert_eq!(k.name_and_seats("n"), (k.lease("n"), end));
    }

    #[test]
    fn names_come_back_only_from_their_directory() {
        let k = Keys::new("/t");
        assert_eq!(k.lease("a/b"), b"/t/.shmlease/lease/a/b");
        assert_eq!(Keys::name_in(&k.lease_dir(), &k.lease("a/b")), Some("a/b"));
        assert_eq!(Keys::name_in(&k.lease_dir(), &k.grants("a")), None);
        assert_eq!(Keys::name_in(&k.lease_dir(), &k.lease_dir()), None);
    }
}
