//! Where an etcd table lives and how to reach it: `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`
//! (`etcds://` for TLS), with options in the query string. Parsing only; nothing here
//! touches the network.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default for every request's timeout (and for connecting).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// An etcd table: the cluster's endpoints, the key prefix that is the table, and how to
/// authenticate.
///
/// Written `etcd://HOST:PORT[,HOST:PORT…]/PREFIX[?OPTION=VALUE&…]`, or `etcds://…` for
/// TLS. Options:
///
/// | option | meaning |
/// |---|---|
/// | `ca=PATH` | PEM file of the CA that signed the servers' certificates (required with `etcds://`) |
/// | `cert=PATH`, `key=PATH` | PEM client certificate and key, for clusters that authenticate clients by certificate |
/// | `domain=NAME` | the name the servers' certificates carry, when it is not the host written in the location |
/// | `user=NAME` | etcd user (role-based access control) |
/// | `password_file=PATH` | file whose first line is that user's password |
/// | `timeout=DURATION` | bound on each request and on connecting (`250ms`, `5s`, `1m`; default 5 s) |
///
/// A password never appears in the location itself: locations are printed, logged, and
/// exported to child processes (`shmlease run` sets `SHMLEASE_TABLE`).
///
/// ```
/// use shmlease::etcd::EtcdLocation;
/// let loc = EtcdLocation::parse("etcds://10.0.0.1:2379,10.0.0.2:2379/jobs?ca=/etc/etcd/ca.pem&user=app&password_file=/run/secrets/etcd")?;
/// assert_eq!(loc.endpoints(), ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
/// assert_eq!(loc.prefix(), "/jobs");
/// assert_eq!(EtcdLocation::parse(&loc.to_string())?, loc);
/// # Ok::<(), shmlease::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EtcdLocation {
    pub(crate) tls: bool,
    /// `HOST:PORT` each, as written.
    pub(crate) hosts: Vec<String>,
    /// The table's key prefix, with its leading `/`, without a trailing one.
    pub(crate) prefix: String,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) domain: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) timeout: Duration,
}

fn invalid(reason: String) -> Error {
    Error::InvalidOptions { reason }
}

impl EtcdLocation {
    /// Whether `text` is written as an etcd location (`etcd://` or `etcds://`), valid or
    /// not: such a string never names a file or a shared-memory segment.
    pub fn is_etcd(text: &str) -> bool {
        text.starts_with("etcd://") || text.starts_with("etcds://")
    }

    /// Reads a location; [`Error::InvalidOptions`] says what is wrong with it.
    pub fn parse(text: &str) -> Result<EtcdLocation> {
        // Quoted in every refusal, with anything before an `@` hidden: a password
        // written into the location (refused below) must not reach a log.
        let shown = format!("{:?}", redacted(text));
        let (tls, rest) = if let Some(r) = text.strip_prefix("etcds://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("etcd://") {
            (false, r)
        } else {
            return Err(invalid(format!("{shown} does not start with etcd:// or etcds://")));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        // Before the query, an `@` is credentials (in the endpoints, or in a password
        // that holds a `/`): refused, whatever it would parse as.
        if rest.contains('@') {
            return Err(invalid(format!(
                "{shown}: credentials do not go in the location (it is printed and exported); \
                 use ?user=NAME&password_file=PATH"
            )));
        }
        let mut hosts = Vec::new();
        for host in authority.split(',') {
            hosts.push(parse_host(host, &shown)?);
        }
        let prefix = path.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(invalid(format!(
                "{shown} names no key prefix: write etcd://HOST:PORT/PREFIX (the prefix is the table)"
            )));
        }
        if prefix.contains('\0') || prefix.split('/').any(|c| c == ".shmlease") {
            return Err(invalid(format!(
                "key prefix {prefix:?} may contain neither NUL nor a \".shmlease\" component"
            )));
        }
        let mut loc = EtcdLocation {
            tls,
            hosts,
            prefix: format!("/{prefix}"),
            ca: None,
            cert: None,
            key: None,
            domain: None,
            user: None,
            password_file: None,
            timeout: DEFAULT_TIMEOUT,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if v.is_empty() {
                return Err(invalid(format!("{shown}: option {k:?} has no value")));
            }
            match k {
                "ca" => loc.ca = Some(v.into()),
                "cert" => loc.cert = Some(v.into()),
                "key" => loc.key = Some(v.into()),
                "domain" => loc.domain = Some(v.into()),
                "user" => loc.user = Some(v.into()),
                "password_file" => loc.password_file = Some(v.into()),
                "timeout" => {
                    loc.timeout = parse_duration(v).ok_or_else(|| {
                        invalid(format!(
                            "{shown}: timeout {v:?} is not a duration like 250ms, 5s or 1m"
                        ))
                    })?
                }
                _ => {
                    return Err(invalid(format!(
                        "{shown}: unknown option {k:?} (known: ca, cert, key, domain, user, \
                         password_file, timeout)"
                    )))
                }
            }
        }
        if loc.cert.is_some() != loc.key.is_some() {
            return Err(invalid(format!("{shown}: cert= and key= go together")));
        }
        if !tls && (loc.ca.is_some() || loc.cert.is_some() || loc.domain.is_some()) {
            return Err(invalid(format!("{shown}: TLS options need an etcds:// location")));
        }
        if tls && loc.ca.is_none() {
            return Err(invalid(format!(
                "{shown}: etcds:// needs ca=PATH, the CA that signed the servers' certificates"
            )));
        }
        if loc.password_file.is_some() && loc.user.is_none() {
            return Err(invalid(format!("{shown}: password_file= needs user=")));
        }
        if loc.timeout.is_zero() {
            return Err(invalid(format!("{shown}: timeout must be positive")));
        }
        Ok(loc)
    }

    /// The endpoints as URLs (`http://HOST:PORT`, or `https://` for TLS).
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.hosts.iter().map(|h| format!("{scheme}://{h}")).collect()
    }

    /// The key prefix that is the table, with its leading `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bound on each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The endpoint `host` of the location quoted as `shown` (hidden there when the
/// location has an `@`: the endpoint may then be a piece of a password).
fn parse_host(host: &str, shown: &str) -> Result<String> {
    let quoted = if shown.contains('@') { "(hidden)".to_owned() } else { format!("{host:?}") };
    let bad = |why: &str| invalid(format!("{shown}: endpoint {quoted} {why}"));
    let (name, port) = host.rsplit_once(':').ok_or_else(|| bad("needs a port: HOST:PORT"))?;
    if name.is_empty() {
        return Err(bad("has no host"));
    }
    port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("has an invalid port"))?;
    let bracketed = name.starts_with('[') && name.ends_with(']');
    if !bracketed && name.contains(':') {
        return Err(bad("is an IPv6 address without [brackets]"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c)) {
        return Err(bad("contains a character a host name cannot have"));
    }
    Ok(host.to_owned())
}

/// `250ms`, `5s`, `2m`, `1h` (a number and a unit).
/// `text` with what precedes its last `@` in the part after the scheme hidden.
fn redacted(text: &str) -> std::borrow::Cow<'_, str> {
    match (text.split_once("://"), text.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://(hidden)@{}", &text[at + 1..]).into(),
        _ => text.into(),
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl fmt::Display for EtcdLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        write!(f, "{scheme}://{}{}", self.hosts.join(","), self.prefix)?;
        let mut sep = '?';
        let mut opt = |f: &mut fmt::Formatter<'_>, k: &str, v: &dyn fmt::Display| {
            let r = write!(f, "{sep}{k}={v}");
            sep = '&';
            r
        };
        if let Some(p) = &self.ca {
            opt(f, "ca", &p.display())?;
        }
        if let Some(p) = &self.cert {
            opt(f, "cert", &p.display())?;
        }
        if let Some(p) = &self.key {
            opt(f, "key", &p.display())?;
        }
        if let Some(d) = &self.domain {
            opt(f, "domain", d)?;
        }
        if let Some(u) = &self.user {
            opt(f, "user", u)?;
        }
        if let Some(p) = &self.password_file {
            opt(f, "password_file", &p.display())?;
        }
        if self.timeout != DEFAULT_TIMEOUT {
            opt(f, "timeout", &format_duration(self.timeout))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match EtcdLocation::parse(text) {
            Err(Error::InvalidOptions { reason }) => reason,
            other => panic!("{text:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn parses_and_prints_back() {
        for text in [
            "etcd://127.0.0.1:2379/jobs",
            "etcd://a:1,b:2,[::1]:3/x/y?user=u&password_file=/p&timeout=250ms",
            "etcds://h:2379/t?ca=/ca.pem&cert=/c.pem&key=/k.pem&domain=etcd.local",
        ] {
            let loc = EtcdLocation::parse(text).unwrap();
            assert_eq!(loc.to_string(), text);
            assert_eq!(EtcdLocation::parse(&loc.to_string()).unwrap(), loc);
        }
        let loc = EtcdLocation::parse("etcd://h:1/jobs/?timeout=2m").unwrap();
        assert_eq!(loc.prefix(), "/jobs");
        assert_eq!(loc.timeout(), Duration::from_secs(120));
        assert_eq!(loc.endpoints(), ["http://h:1"]);
    }

    #[test]
    fn refuses_what_cannot_work_saying_why() {
        assert!(reason("etcd://h:1").contains("no key prefix"));
        assert!(reason("etcd://h:1/").contains("no key prefix"));
        assert!(reason("etcd://h/x").contains("needs a port"));
        assert!(reason("etcd://h:0/x").contains("invalid port"));
        assert!(reason("etcd://h:99999/x").contains("invalid port"));
        assert!(reason("etcd://:1/x").contains("no host"));
        assert!(reason("etcd://::1:2/x").contains("brackets"));
        assert!(reason("etcd://u:pw@h:1/x").contains("credentials"));
        // Refusals never quote a password, wherever it ends up being split.
        for leaky in [
            "etcd://u:s3cr3t@h:1/x",
            "etcd://u:s3/cr3t@h:1/x",
            "etcd://u:123/s3cr3t@h:1/x",
            "etcd://u:s3?cr3t@h:1/x",
        ] {
            let why = reason(leaky);
            assert!(!why.contains("s3") && !why.contains("cr3t"), "{why}");
        }
        assert!(reason("etcd://h:1/x?bogus=1").contains("unknown option"));
        assert!(reason("etcd://h:1/x?ca=/c").contains("etcds://"));
        assert!(reason("etcds://h:1/x").contains("ca=PATH"));
        assert!(reason("etcds://h:1/x?ca=/c&cert=/c").contains("go together"));
        assert!(reason("etcd://h:1/x?password_file=/p").contains("needs user"));
        assert!(reason("etcd://h:1/x?timeout=5").contains("duration"));
        assert!(reason("etcd://h:1/x?timeout=0s").contains("positive"));
        assert!(reason("etcd://h:1/a/.shmlease/b").contains(".shmlease"));
        assert!(reason("etcd://h:1/x?user").contains("no value"));
        assert!(reason("http://h:1/x").contains("etcd://"));
    }
}
