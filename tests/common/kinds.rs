//! What a client process reports of its grants of a name's kinds (`x` exclusive, `pN`
//! N permits, `s` shared), and the check of those reports against invariant 9, from
//! the clients' own validity intervals (one host, one CLOCK_MONOTONIC): used by the
//! etcd suites, whose children take names of every kind.

/// The options of a kind as the children take it: `x`, `pN`, `s`.
pub fn kind_options(kind: &str) -> shmlease::AcquireOptions {
    match kind.strip_prefix('p') {
        Some(n) => shmlease::AcquireOptions::new().permits(n.parse().unwrap()).unwrap(),
        None if kind == "s" => shmlease::AcquireOptions::new().shared(true),
        None => shmlease::AcquireOptions::new(),
    }
}

/// A grant as a child reported it (`@@grant TOKEN START END BEGIN KIND`): its token, the
/// validity `[start, end)` it believed it had (monotonic ns), when its acquisition
/// began, and its kind (`x`, `pN`, `s`).
#[derive(Clone, Debug)]
pub struct Seen {
    pub token: u64,
    pub start: u64,
    pub end: u64,
    pub begin: u64,
    pub kind: String,
}

pub fn seen_of(kid: &super::Kid) -> Vec<Seen> {
    kid.reports("grant")
        .iter()
        .map(|rest| {
            let v: Vec<&str> = rest.split(' ').collect();
            let n = |i: usize| v[i].parse::<u64>().unwrap();
            Seen { token: n(0), start: n(1), end: n(2), begin: n(3), kind: v[4].to_owned() }
        })
        .collect()
}

/// How many grants of `kind` may be live at once (`x` 1, `pN` N, `s` 64).
pub fn seats_of(kind: &str) -> usize {
    match kind.strip_prefix('p') {
        Some(n) => n.parse().unwrap(),
        None if kind == "s" => 64,
        None => 1,
    }
}

/// From the clients' own validity intervals: at any instant the live grants are all of
/// one kind and no more than it allows (`pN`: N, `x`: one alone, `s`: shared only);
/// tokens distinct, and a grant whose acquisition began after another was returned has
/// a larger token.
pub fn check_kinds(grants: &[Seen]) {
    let mut edges: Vec<(u64, i32, usize)> = Vec::new();
    for (i, g) in grants.iter().enumerate() {
        if g.end > g.start {
            edges.push((g.start, 1, i));
            edges.push((g.end, -1, i));
        }
    }
    // Ends before starts at the same instant: touching intervals do not overlap.
    edges.sort_by_key(|e| (e.0, e.1));
    let mut live: std::collections::BTreeSet<usize> = Default::default();
    for (_, step, i) in edges {
        if step < 0 {
            live.remove(&i);
            continue;
        }
        live.insert(i);
        let all: Vec<&Seen> = live.iter().map(|j| &grants[*j]).collect();
        let kinds: std::collections::BTreeSet<&str> = all.iter().map(|g| g.kind.as_str()).collect();
        assert!(kinds.len() == 1, "grants of different kinds at once: {all:?}");
        let kind = kinds.into_iter().next().unwrap();
        assert!(all.len() <= seats_of(kind), "{} grants of {kind} at once: {all:?}", all.len());
    }
    let tokens: std::collections::BTreeSet<u64> = grants.iter().map(|g| g.token).collect();
    assert_eq!(tokens.len(), grants.len(), "a token handed out twice: {grants:?}");
    for a in grants {
        for b in grants.iter().filter(|b| b.begin > a.start && b.token != a.token) {
            assert!(b.token > a.token, "token {} began after {} was returned", b.token, a.token);
        }
    }
}

/// Waits (up to `limit` each) for every one of `kids` to exit with success, then returns
/// the grants they all reported.
pub fn grants_when_done(kids: &mut [super::Kid], limit: std::time::Duration) -> Vec<Seen> {
    let mut all = Vec::new();
    for k in kids {
        k.wait_ok(limit);
        all.extend(seen_of(k));
    }
    all
}
