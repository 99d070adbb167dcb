//! Web pages are not clients. A page the owner opens can send requests to 127.0.0.1 (a
//! form, or `fetch` with `text/plain`, needs no CORS preflight), and through DNS
//! rebinding (its own name re-resolved to 127.0.0.1) it can read the answers too.
//! Browsers mark what pages send: `Origin` on every POST and cross-origin fetch,
//! `Sec-Fetch-Site` on every request from current browsers, and a `Host` naming the
//! page's site. Local clients (curl, Home Assistant, `sudo-agent run`, MCP) send neither
//! of the first two, and a loopback address or `localhost` as `Host`. The loop checks
//! this before anything else, so a refused request reaches no route: it spends no code
//! and counts as no failure.

use std::fmt;

use crate::sys::{ip_literal, is_loopback, split_authority};

/// One header the gate reads, as the request carried it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Seen {
    #[default]
    Absent,
    Once(String),
    /// Given twice or more: which one counts depends on who reads it, so none does.
    Repeated,
}

impl Seen {
    pub fn add(&mut self, value: &str) {
        *self = match self {
            Seen::Absent => Seen::Once(value.to_string()),
            _ => Seen::Repeated,
        };
    }
}

/// What a request says about where it comes from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub host: Seen,
    pub origin: Seen,
    pub fetch_site: Seen,
}

impl Provenance {
    /// The refused header's value, for the audit log.
    pub fn shown(&self, refused: Refused) -> String {
        let seen = match refused {
            Refused::Host => &self.host,
            Refused::Origin => &self.origin,
            Refused::FetchSite => &self.fetch_site,
        };
        match seen {
            Seen::Absent => String::new(),
            Seen::Once(value) => format!("{value:?}"),
            Seen::Repeated => "given twice".to_string(),
        }
    }
}

/// The header that got a request refused; the answer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Host,
    Origin,
    FetchSite,
}

impl Refused {
    pub fn header(self) -> &'static str {
        match self {
            Refused::Host => "Host",
            Refused::Origin => "Origin",
            Refused::FetchSite => "Sec-Fetch-Site",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Host => f.write_str(
                "the Host header names neither a loopback address, localhost nor a name in \
                 allowed_hosts (a web page using DNS rebinding sends its own name); if a \
                 client of yours uses this name, add it to allowed_hosts",
            ),
            Refused::Origin => f.write_str(
                "requests from web pages are refused: the Origin header names a page not \
                 in allowed_origins",
            ),
            Refused::FetchSite => f.write_str(
                "requests from web pages are refused: the Sec-Fetch-Site header says \
                 another site sent it",
            ),
        }
    }
}

/// The Host and Origin allowlists from the config.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// `allowed_hosts`, split: host (lowercase) and port when the entry names one.
    hosts: Vec<(String, Option<String>)>,
    /// `allowed_origins`, lowercase, as browsers write them.
    origins: Vec<String>,
}

impl Gate {
    /// From validated config entries (lowercase; an entry that does not split is ignored,
    /// which validation already refused).
    pub fn new(allowed_hosts: &[String], allowed_origins: &[String]) -> Gate {
        let hosts = allowed_hosts
            .iter()
            .filter_map(|entry| split_authority(entry))
            .map(|(host, port)| (host.to_ascii_lowercase(), port.map(str::to_string)))
            .collect();
        Gate {
            hosts,
            origins: allowed_origins.to_vec(),
        }
    }

    /// `Ok(Some(origin))` for a page of an allowed origin (its answers say so, for CORS),
    /// `Ok(None)` for a client that is not a browser page, else the header to name.
    pub fn check(&self, p: &Provenance) -> Result<Option<String>, Refused> {
        let origin = match &p.origin {
            Seen::Absent => None,
            Seen::Once(origin) if self.origin_allowed(origin) => Some(origin.clone()),
            _ => return Err(Refused::Origin),
        };
        // A page of an allowed origin is cross-site by nature; without an origin, only
        // what the user typed or the agent's own (absent) pages may ask.
        if origin.is_none() {
            match &p.fetch_site {
                Seen::Absent => {}
                Seen::Once(site) if matches!(site.as_str(), "none" | "same-origin") => {}
                _ => return Err(Refused::FetchSite),
            }
        }
        match &p.host {
            // Every browser sends Host, so a request without one is no web page's:
            // HTTP/1.0 tools and hand-written clients are served.
            Seen::Absent => {}
            Seen::Once(host) if self.host_allowed(host) => {}
            _ => return Err(Refused::Host),
        }
        Ok(origin)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    fn host_allowed(&self, value: &str) -> bool {
        let Some((host, port)) = split_authority(value) else {
            return false;
        };
        if host.eq_ignore_ascii_case("localhost") || ip_literal(host).is_some_and(is_loopback) {
            return true;
        }
        self.hosts.iter().any(|(name, only_port)| {
            name.eq_ignore_ascii_case(host)
                && only_port.as_ref().is_none_or(|p| Some(p.as_str()) == port)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(value: Option<&str>) -> Seen {
        value.map_or(Seen::Absent, |v| Seen::Once(v.to_string()))
    }

    fn ask(
        gate: &Gate,
        host: Option<&str>,
        origin: Option<&str>,
        site: Option<&str>,
    ) -> Result<Option<String>, Refused> {
        gate.check(&Provenance {
            host: seen(host),
            origin: seen(origin),
            fetch_site: seen(site),
        })
    }

    #[test]
    fn local_clients_pass() {
        let gate = Gate::default();
        for host in [
            "127.0.0.1:9999",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:9999",
            "[::ffff:127.0.0.1]",
            "localhost:9999",
            "LocalHost",
        ] {
            assert_eq!(ask(&gate, Some(host), None, None), Ok(None), "{host}");
        }
        assert_eq!(
            ask(&gate, None, None, None),
            Ok(None),
            "HTTP/1.0 without Host"
        );
        // The owner typing the URL into the address bar.
        assert_eq!(
            ask(&gate, Some("localhost:9999"), None, Some("none")),
            Ok(None)
        );
    }

    #[test]
    fn pages_and_rebound_names_are_refused() {
        let gate = Gate::default();
        for host in [
            "rebind.example",
            "rebind.example:9999",
            "127.0.0.1.nip.io",
            "localhost.",
            "127.1",
            "2130706433",
            "0.0.0.0",
            "[::]",
            "192.168.1.5:9999",
            "",
            "a b",
        ] {
            assert_eq!(
                ask(&gate, Some(host), None, None),
                Err(Refused::Host),
                "{host:?}"
            );
        }
        let local = Some("127.0.0.1:9999");
        for origin in ["https://evil.example", "null", "http://127.0.0.1:9999", ""] {
            assert_eq!(
                ask(&gate, local, Some(origin), None),
                Err(Refused::Origin),
                "{origin:?}"
            );
        }
        for site in ["cross-site", "same-site", "Cross-Site", ""] {
            assert_eq!(
                ask(&gate, local, None, Some(site)),
                Err(Refused::FetchSite),
                "{site:?}"
            );
        }
        let twice = Provenance {
            host: Seen::Repeated,
            ..Provenance::default()
        };
        assert_eq!(gate.check(&twice), Err(Refused::Host));
    }

    #[test]
    fn listed_hosts_and_origins_pass() {
        let gate = Gate::new(
            &["nas.lan".into(), "pi.lan:9999".into(), "[fd00::5]".into()],
            &["https://ha.example:8123".into()],
        );
        for host in ["nas.lan", "NAS.lan:1234", "pi.lan:9999", "[fd00::5]:9999"] {
            assert_eq!(ask(&gate, Some(host), None, None), Ok(None), "{host}");
        }
        assert_eq!(
            ask(&gate, Some("pi.lan:80"), None, None),
            Err(Refused::Host)
        );
        assert_eq!(ask(&gate, Some("pi.lan"), None, None), Err(Refused::Host));
        let ha = Some("https://ha.example:8123");
        assert_eq!(
            ask(&gate, Some("nas.lan"), ha, Some("cross-site")),
            Ok(Some("https://ha.example:8123".into()))
        );
        // An allowed page still cannot name a host nobody allowed.
        assert_eq!(
            ask(&gate, Some("rebind.example"), ha, None),
            Err(Refused::Host)
        );
        assert_eq!(
            ask(&gate, Some("nas.lan"), Some("https://ha.example"), None),
            Err(Refused::Origin)
        );
    }
}
