//! What `ls`, `info` and `watch` print: aligned tables for people, stable JSON for
//! programs. Field names in the JSON are part of the tool's interface.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use shmlease::{
    GrantInfo, Holder, LeaseInfo, LeaseKind, LeaseState, ProcessIdentity, QueuedInfo, TableInfo,
};

use crate::duration::human;
use crate::{printable, TableArg};

/// One lease, as `ls --json` and `get --json` print it. For a name with permits or a
/// shared name, `token` is the latest taken and `remaining_ms` the longest left, and
/// `holder` is null (except a shared name's exclusive holder); its holders are in
/// `holders`.
#[derive(Serialize)]
pub struct LeaseJson {
    name: String,
    token: u64,
    state: &'static str,
    holder: Option<HolderJson>,
    acquired_at: Option<String>,
    renewed_at: Option<String>,
    expires_at: Option<String>,
    remaining_ms: u64,
    transitions: u64,
    slot: u32,
    /// "exclusive", "permits" or "shared".
    kind: &'static str,
    /// How many may hold the name at once (1 for an exclusive lease, 64 shared holders
    /// for a shared name).
    permits: u32,
    /// Every live grant, oldest first (an exclusive lease's one holder, while held).
    holders: Vec<GrantJson>,
    /// Fair acquirers waiting for the name (`--fair`), first in line first.
    queue: Vec<QueuedJson>,
}

/// One place in a name's fair queue: its ticket (places are served in ticket order) and
/// its waiter (null fields when the table does not record one).
#[derive(Serialize)]
struct QueuedJson {
    ticket: u64,
    pid: Option<u32>,
    pid_namespace: Option<u32>,
    identity: Option<IdentityJson>,
    /// Omitted when empty (a place records no label).
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    /// When the place expires unless its waiter renews it (it does while it waits).
    expires_at: Option<String>,
    slot: u32,
}

impl QueuedJson {
    fn new(q: &QueuedInfo) -> QueuedJson {
        let h = q.holder.as_ref().map(holder_json);
        QueuedJson {
            ticket: q.ticket,
            pid: h.as_ref().map(|h| h.pid),
            pid_namespace: h.as_ref().map(|h| h.pid_namespace),
            label: h.as_ref().map(|h| h.label.clone()).filter(|l| !l.is_empty()),
            identity: h.map(|h| h.identity),
            expires_at: q.expires_at.map(rfc3339),
            slot: q.slot,
        }
    }
}

/// One live grant of a name: its token and its holder's fields side by side (the
/// holder's are null when the table does not record one).
#[derive(Serialize)]
struct GrantJson {
    token: u64,
    /// A shared holder of a shared name (false for an exclusive holder, or a permit).
    shared: bool,
    pid: Option<u32>,
    pid_namespace: Option<u32>,
    identity: Option<IdentityJson>,
    detached: Option<bool>,
    label: Option<String>,
    acquired_at: Option<String>,
    renewed_at: Option<String>,
    expires_at: Option<String>,
    remaining_ms: u64,
    slot: u32,
}

impl GrantJson {
    fn new(g: &GrantInfo) -> GrantJson {
        let h = g.holder.as_ref().map(holder_json);
        GrantJson {
            token: g.token,
            shared: g.shared,
            pid: h.as_ref().map(|h| h.pid),
            pid_namespace: h.as_ref().map(|h| h.pid_namespace),
            detached: h.as_ref().map(|h| h.detached),
            label: h.as_ref().map(|h| h.label.clone()),
            identity: h.map(|h| h.identity),
            acquired_at: g.acquired_at.map(rfc3339),
            renewed_at: g.renewed_at.map(rfc3339),
            expires_at: g.expires_at.map(rfc3339),
            remaining_ms: g.remaining.as_millis() as u64,
            slot: g.slot,
        }
    }
}

#[derive(Serialize)]
struct HolderJson {
    pid: u32,
    pid_namespace: u32,
    identity: IdentityJson,
    detached: bool,
    label: String,
}

#[derive(Serialize)]
struct IdentityJson {
    kind: &'static str,
    value: Option<u64>,
}

impl LeaseJson {
    /// The JSON form of `info`.
    pub fn new(info: &LeaseInfo) -> LeaseJson {
        let Own { holder, acquired_at, renewed_at, expires_at } = Own::of(info);
        LeaseJson {
            name: info.name.clone(),
            token: info.token,
            state: info.state.as_str(),
            holder: holder.as_ref().map(holder_json),
            acquired_at: acquired_at.map(rfc3339),
            renewed_at: renewed_at.map(rfc3339),
            expires_at: expires_at.map(rfc3339),
            remaining_ms: info.remaining.as_millis() as u64,
            transitions: info.transitions,
            slot: info.slot,
            kind: info.kind.as_str(),
            permits: info.kind.permits(),
            holders: info.grants.iter().map(GrantJson::new).collect(),
            queue: info.queue.iter().map(QueuedJson::new).collect(),
        }
    }
}

/// What the top-level fields of a lease show: the library's, but for a shared name
/// those of its exclusive holder's grant while it has one (also while it waits for
/// shared holders to leave), and the expiry of its longest-lasting grant.
struct Own {
    holder: Option<Holder>,
    acquired_at: Option<SystemTime>,
    renewed_at: Option<SystemTime>,
    expires_at: Option<SystemTime>,
}

impl Own {
    fn of(info: &LeaseInfo) -> Own {
        if info.kind != LeaseKind::Shared {
            let LeaseInfo { holder, acquired_at, renewed_at, expires_at, .. } = *info;
            return Own { holder, acquired_at, renewed_at, expires_at };
        }
        let exclusive = info.grants.iter().find(|g| !g.shared);
        Own {
            holder: exclusive.and_then(|g| g.holder),
            acquired_at: exclusive.and_then(|g| g.acquired_at),
            renewed_at: exclusive.and_then(|g| g.renewed_at),
            expires_at: info.grants.iter().filter_map(|g| g.expires_at).max(),
        }
    }
}

fn holder_json(h: &Holder) -> HolderJson {
    let (kind, value) = match h.identity {
        ProcessIdentity::PidfdInode(v) => ("pidfd_inode", Some(v)),
        ProcessIdentity::StartTime(v) => ("start_time", Some(v)),
        _ => ("unknown", None),
    };
    HolderJson {
        pid: h.pid,
        pid_namespace: h.pid_namespace,
        identity: IdentityJson { kind, value },
        detached: h.detached,
        label: h.label.as_str().into_owned(),
    }
}

/// The table, as `info --json` prints it.
#[derive(Serialize)]
pub struct TableJson {
    location: String,
    location_kind: &'static str,
    file: String,
    format_version: u32,
    capacity: u32,
    names: u32,
    held: u32,
    size_bytes: u64,
    slot_size: u32,
    boot_id: String,
    clock: &'static str,
    creator_pid: u32,
    creator_uid: u32,
    created_at: String,
    counters: CountersJson,
    /// The counters in `counters` that are estimates, not counts.
    sampled_counters: [&'static str; 2],
    /// How they are estimated: about one event in this many is counted, as this many.
    sample_period: u64,
}

#[derive(Serialize)]
struct CountersJson {
    grants: u64,
    renewals: u64,
    releases: u64,
    expired_reclaims: u64,
    dead_holder_reclaims: u64,
    corrupt_reclaims: u64,
    revocations: u64,
    contended: u64,
    binds: u64,
    unbinds: u64,
}

impl TableJson {
    /// The JSON form of `info`.
    pub fn new(table: &TableArg, info: &TableInfo) -> TableJson {
        let c = &info.counters;
        TableJson {
            location: table.export.clone(),
            location_kind: if table.is_shm() { "shm" } else { "path" },
            file: table.file(),
            format_version: info.format_version,
            capacity: info.capacity,
            names: info.names,
            held: info.held,
            size_bytes: info.size_bytes,
            slot_size: info.slot_size,
            boot_id: info.boot_id.clone(),
            clock: info.clock,
            creator_pid: info.creator_pid,
            creator_uid: info.creator_uid,
            created_at: rfc3339(info.created_at),
            counters: CountersJson {
                grants: c.grants,
                renewals: c.renewals,
                releases: c.releases,
                expired_reclaims: c.expired_reclaims,
                dead_holder_reclaims: c.dead_holder_reclaims,
                corrupt_reclaims: c.corrupt_reclaims,
                revocations: c.revocations,
                contended: c.contended,
                binds: c.binds,
                unbinds: c.unbinds,
            },
            sampled_counters: ["renewals", "releases"],
            sample_period: SAMPLE,
        }
    }
}

/// Renewals and releases are counted one in `SAMPLE` (so that the fast path does not
/// write the shared header), as `SAMPLE`: their counters are estimates.
const SAMPLE: u64 = shmlease::layout::counter::SAMPLE;

/// `info` for people.
pub fn table_text(table: &TableArg, info: &TableInfo) -> String {
    let c = &info.counters;
    let file = table.file();
    let location = if file == table.export {
        printable(&file)
    } else {
        printable(&format!("{} ({file})", table.export))
    };
    let estimate = |n: u64| format!("~{n} (an estimate: about 1 in {SAMPLE} is counted)");
    let mut rows: Vec<(&str, String)> = vec![
        ("location", location),
        ("format version", info.format_version.to_string()),
        (
            "capacity",
            format!(
                "{} slots of {} bytes ({})",
                info.capacity,
                info.slot_size,
                bytes(info.size_bytes)
            ),
        ),
        ("names", format!("{} known, {} held", info.names, info.held)),
        ("boot id", info.boot_id.clone()),
        ("clock", info.clock.to_string()),
        (
            "created",
            format!(
                "{} by pid {}, uid {}",
                rfc3339(info.created_at),
                info.creator_pid,
                info.creator_uid
            ),
        ),
        ("grants", c.grants.to_string()),
        ("renewals", estimate(c.renewals)),
        ("releases", estimate(c.releases)),
        ("expired reclaims", c.expired_reclaims.to_string()),
        ("dead holder reclaims", c.dead_holder_reclaims.to_string()),
        ("corrupt reclaims", c.corrupt_reclaims.to_string()),
        ("revocations", c.revocations.to_string()),
        ("contended", c.contended.to_string()),
        ("names bound", c.binds.to_string()),
        ("names unbound", c.unbinds.to_string()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows.drain(..) {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// A holder as the HOLDER column shows it: "4242 (web) detached".
fn holder_cell(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => {
            let mut s = h.pid.to_string();
            if !h.label.is_empty() {
                s.push_str(&format!(" ({})", printable(&h.label.as_str())));
            }
            if h.detached {
                s.push_str(" detached");
            }
            s
        }
        None => "-".into(),
    }
}

/// "1 shared holder", "3 shared holders".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Who holds a name with permits ("2 of 3 permits") or a shared name ("3 shared
/// holders", "exclusive holder", "2 shared, exclusive waiting": an exclusive holder next
/// to shared ones waits for them to leave, and keeps new ones out meanwhile).
pub fn holders_summary(l: &LeaseInfo) -> String {
    if l.kind != LeaseKind::Shared {
        return format!("{} of {} permits", l.grants.len(), l.kind.permits());
    }
    let shared = l.grants.iter().filter(|g| g.shared).count();
    match (shared, l.grants.len() > shared) {
        (0, true) => "exclusive holder".into(),
        (n, true) => format!("{n} shared, exclusive waiting"),
        (n, false) => count(n, "shared holder"),
    }
}

/// `ls` for people: aligned columns, ages relative to now. A name with permits or a
/// shared name is a line for the name ([`holders_summary`]) and one below it for each
/// holder (on a shared name marked shared or exclusive). A name with fair acquirers
/// waiting has a line for its queue below ([`queue_line`]). Empty input gives a
/// one-line note instead of a bare header.
pub fn leases_text(leases: &[LeaseInfo], all: bool) -> String {
    if leases.is_empty() {
        return if all {
            "no leases: the table knows no names\n".into()
        } else {
            "no leases held (--all also shows released, expired and revoked names)\n".into()
        };
    }
    let now = SystemTime::now();
    let header =
        ["NAME", "TOKEN", "HOLDER", "STATE", "REMAINING", "ACQUIRED", "RENEWED", "TRANSITIONS"];
    let mut rows: Vec<Row> = vec![Row::Cells(header.map(String::from))];
    for l in leases {
        let several = l.kind != LeaseKind::Exclusive;
        let holder = if several { holders_summary(l) } else { holder_cell(l.holder.as_ref()) };
        let remaining = if l.state == LeaseState::Held { human(l.remaining) } else { "-".into() };
        let own = Own::of(l);
        rows.push(Row::Cells([
            printable(&l.name),
            l.token.to_string(),
            holder,
            l.state.as_str().into(),
            remaining,
            ago(now, own.acquired_at),
            ago(now, own.renewed_at),
            l.transitions.to_string(),
        ]));
        let queue = (!l.queue.is_empty()).then(|| Row::Line(queue_line(&l.queue)));
        if !several {
            rows.extend(queue);
            continue;
        }
        for (i, g) in l.grants.iter().enumerate() {
            let mut branch = if i + 1 == l.grants.len() { " └─" } else { " ├─" }.to_string();
            if l.kind == LeaseKind::Shared {
                branch.push_str(if g.shared { " shared" } else { " exclusive" });
            }
            rows.push(Row::Cells([
                branch,
                g.token.to_string(),
                holder_cell(g.holder.as_ref()),
                LeaseState::Held.as_str().into(),
                human(g.remaining),
                ago(now, g.acquired_at),
                ago(now, g.renewed_at),
                String::new(),
            ]));
        }
        rows.extend(queue);
    }
    // Columns as a terminal shows them: CJK and emoji take two, combining marks none.
    let width = |cell: &str| unicode_width::UnicodeWidthStr::width(cell);
    let mut widths = [0usize; 8];
    for row in &rows {
        let Row::Cells(row) = row else { continue };
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    for row in &rows {
        let row = match row {
            Row::Cells(cells) => cells,
            Row::Line(text) => {
                out.push_str(text);
                out.push('\n');
                continue;
            }
        };
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[i] - width(cell));
            // Numbers right-aligned, text left-aligned.
            if i == 1 || i == 7 {
                line.push_str(&format!("{pad}{cell}  "));
            } else {
                line.push_str(&format!("{cell}{pad}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A line of [`leases_text`]: aligned cells, or free text under a name (its queue).
enum Row {
    Cells([String; 8]),
    Line(String),
}

/// A name's fair queue, on one line under it, first in line first:
/// " queue: pid 12 (ticket 40), pid 15 (ticket 41)".
fn queue_line(queue: &[QueuedInfo]) -> String {
    let places: Vec<String> = queue
        .iter()
        .map(|q| {
            let who = q.holder.map_or_else(|| "unknown".to_string(), |h| printable(&h.to_string()));
            format!("{who} (ticket {})", q.ticket)
        })
        .collect();
    format!(" queue: {}", places.join(", "))
}

fn ago(now: SystemTime, t: Option<SystemTime>) -> String {
    match t {
        None => "-".into(),
        Some(t) => match now.duration_since(t) {
            Ok(d) => format!("{} ago", human(d)),
            Err(_) => "just now".into(),
        },
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T11:04:57.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }
}
