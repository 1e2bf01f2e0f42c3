//! What a sandbox's network may reach: a workspace's egress policy and the host services
//! it names.
//!
//! A sandbox never reaches the host, the manager, link-local (cloud metadata) addresses
//! or another sandbox, whatever its policy says: those networks ([`BLOCKED_NETS`]) are
//! refused before any rule that lets traffic out, unless an `allow` entry names an
//! address in them explicitly. A host service is a port on the host's loopback that the
//! manager forwards for that sandbox alone, reached in the guest at [`HOST_SERVICES_ADDRESS`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, ValidationErrors};

/// Where a guest reaches its host services (its gateway, in the sandbox's namespace).
pub const HOST_SERVICES_ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

/// Networks no sandbox reaches unless an `allow` entry names an address in them:
/// "this network", private ranges (the host's LAN, other sandboxes' veths), shared
/// address space, loopback, link-local (169.254.169.254 metadata), multicast, reserved.
pub const BLOCKED_NETS: [&str; 9] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// How much of the outside a sandbox reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// The internet (never the host, the manager, metadata or other sandboxes).
    #[default]
    Open,
    /// Nothing but the host services the workspace names.
    None,
    /// Only what `allow` names (host names through the manager's resolver).
    Allow,
}

impl Egress {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::None => "none",
            Self::Allow => "allow",
        }
    }
}

/// A port on the host's loopback that sandboxes of the workspace may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostService {
    #[schema(example = 8080)]
    pub port: u16,
    /// What it is, for people (`model server`, `package cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A workspace's network policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub egress: Egress,
    /// With `egress: allow`: IPv4 addresses or CIDRs, or host names (`*.example.com`
    /// for the names under one), each optionally with `:port` (TCP), e.g.
    /// `203.0.113.7:443`, `198.51.100.0/24`, `api.openai.com:443`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!(["203.0.113.7:443"]))]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_services: Vec<HostService>,
}

/// An IPv4 network (`addr/prefix`, host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr)
    }

    fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 address or CIDR"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix must be 0 to 32"))?;
        let net = Self { addr, prefix };
        let masked = Ipv4Addr::from(
            u32::from(addr) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0),
        );
        if masked != addr {
            return Err(format!(
                "{s:?} has host bits set (did you mean {masked}/{prefix}?)"
            ));
        }
        Ok(net)
    }
}

/// A host name an `allow` entry names: `api.example.com`, or `*.example.com` for every
/// name under it (not the name itself). Kept lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    name: String,
    subdomains: bool,
}

impl HostPattern {
    /// Whether a queried name (any case, trailing dot or not) is one this pattern names.
    pub fn matches(&self, queried: &str) -> bool {
        let queried = queried.trim_end_matches('.').to_ascii_lowercase();
        if self.subdomains {
            queried
                .strip_suffix(self.name.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            queried == self.name
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subdomains {
            write!(f, "*.")?;
        }
        f.write_str(&self.name)
    }
}

impl FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (subdomains, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a host name (labels of letters, digits and '-', at least two, \
                 optionally after \"*.\")"
            ));
        }
        Ok(Self { name, subdomains })
    }
}

/// What an `allow` entry opens: addresses, or the addresses a host name resolves to
/// (learnt from the answers of the manager's resolver, so they hold only for names it
/// answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowTarget {
    Net(Ipv4Net),
    Host(HostPattern),
}

/// One parsed `allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub target: AllowTarget,
    /// A TCP port; `None` allows every port and protocol.
    pub port: Option<u16>,
}

impl FromStr for AllowRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (target, port) = match s.rsplit_once(':') {
            Some((target, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{s:?}: the port must be 1 to 65535"))?;
                (target, Some(port))
            }
            None => (s, None),
        };
        let target = if target.chars().any(|c| c.is_ascii_alphabetic() || c == '*') {
            AllowTarget::Host(target.parse()?)
        } else {
            AllowTarget::Net(target.parse()?)
        };
        Ok(Self { target, port })
    }
}

impl NetworkSpec {
    /// The `allow` entries, parsed (invalid ones are left out; [`Self::validate`] names them).
    pub fn allow_rules(&self) -> Vec<AllowRule> {
        self.allow.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The `allow` entries that name addresses: each network and its port.
    pub fn allowed_nets(&self) -> Vec<(Ipv4Net, Option<u16>)> {
        self.allow_rules()
            .into_iter()
            .filter_map(|r| match r.target {
                AllowTarget::Net(net) => Some((net, r.port)),
                AllowTarget::Host(_) => None,
            })
            .collect()
    }

    /// Whether any `allow` entry names a host (which then needs the manager's resolver).
    pub fn names_hosts(&self) -> bool {
        self.allow_rules()
            .iter()
            .any(|r| matches!(r.target, AllowTarget::Host(_)))
    }

    /// The ports `allow` entries open for the addresses of the host `queried`
    /// (`None` in the list: every port); empty when no entry names it.
    pub fn ports_for_host(&self, queried: &str) -> Vec<Option<u16>> {
        if self.egress != Egress::Allow {
            return vec![];
        }
        self.allow_rules()
            .into_iter()
            .filter_map(|r| match &r.target {
                AllowTarget::Host(h) if h.matches(queried) => Some(r.port),
                _ => None,
            })
            .collect()
    }

    /// Whether a guest may open a TCP connection to `ip:port` out of its sandbox, by
    /// address (a host name's addresses are opened as the resolver answers).
    pub fn allows(&self, ip: Ipv4Addr, port: u16) -> bool {
        let named = self
            .allowed_nets()
            .iter()
            .any(|(net, p)| net.contains(ip) && p.is_none_or(|p| p == port));
        match self.egress {
            Egress::None => false,
            Egress::Allow => named,
            Egress::Open => named || !is_blocked(ip),
        }
    }

    pub fn validate(&self, prefix: &str, errors: &mut ValidationErrors) {
        for (i, entry) in self.allow.iter().enumerate() {
            if let Err(msg) = entry.parse::<AllowRule>() {
                errors.push(FieldError::new(format!("{prefix}.allow[{i}]"), msg));
            }
        }
        if self.egress != Egress::Allow && !self.allow.is_empty() {
            errors.push(FieldError::new(
                format!("{prefix}.allow"),
                format!(
                    "only used with egress: allow (egress is {})",
                    self.egress.as_str()
                ),
            ));
        }
        if self.allow.len() > 256 {
            errors.push(FieldError::new(
                format!("{prefix}.allow"),
                "at most 256 entries",
            ));
        }
        let mut ports = std::collections::BTreeSet::new();
        for (i, s) in self.host_services.iter().enumerate() {
            if s.port == 0 {
                errors.push(FieldError::new(
                    format!("{prefix}.host_services[{i}].port"),
                    "must be 1 to 65535",
                ));
            } else if !ports.insert(s.port) {
                errors.push(FieldError::new(
                    format!("{prefix}.host_services[{i}].port"),
                    format!("port {} is named twice", s.port),
                ));
            }
            if s.name.as_ref().is_some_and(|n| n.chars().count() > 64) {
                errors.push(FieldError::new(
                    format!("{prefix}.host_services[{i}].name"),
                    "must be at most 64 characters",
                ));
            }
        }
        if self.host_services.len() > 32 {
            errors.push(FieldError::new(
                format!("{prefix}.host_services"),
                "at most 32 host services",
            ));
        }
    }
}

/// Whether `ip` lies in one of the [`BLOCKED_NETS`].
pub fn is_blocked(ip: Ipv4Addr) -> bool {
    blocked_nets().iter().any(|n| n.contains(ip))
}

pub fn blocked_nets() -> Vec<Ipv4Net> {
    BLOCKED_NETS.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Whether an `allow` rule opens part of a blocked network (said in `atelier system`
/// and the sandbox's events: it is allowed, but worth a second look).
pub fn opens_blocked(rule: &AllowRule) -> bool {
    match &rule.target {
        AllowTarget::Net(net) => blocked_nets().iter().any(|b| b.overlaps(net)),
        AllowTarget::Host(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(egress: Egress, allow: &[&str]) -> NetworkSpec {
        NetworkSpec {
            egress,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            host_services: vec![],
        }
    }

    #[test]
    fn open_reaches_the_internet_but_never_the_host_metadata_or_neighbours() {
        let s = NetworkSpec::default();
        assert!(s.allows(Ipv4Addr::new(203, 0, 113, 1), 80));
        for blocked in [
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(169, 254, 169, 254),
            Ipv4Addr::new(10, 200, 0, 6),
            Ipv4Addr::new(172, 16, 0, 1),
            Ipv4Addr::new(192, 168, 1, 1),
        ] {
            assert!(!s.allows(blocked, 80), "{blocked}");
        }
    }

    #[test]
    fn allow_reaches_only_what_it_names_and_none_reaches_nothing() {
        let s = spec(Egress::Allow, &["203.0.113.7:443", "198.51.100.0/24"]);
        assert!(s.allows(Ipv4Addr::new(203, 0, 113, 7), 443));
        assert!(!s.allows(Ipv4Addr::new(203, 0, 113, 7), 80));
        assert!(s.allows(Ipv4Addr::new(198, 51, 100, 9), 22));
        assert!(!s.allows(Ipv4Addr::new(203, 0, 113, 8), 443));
        let none = spec(Egress::None, &[]);
        assert!(!none.allows(Ipv4Addr::new(203, 0, 113, 7), 443));
    }

    #[test]
    fn host_names_open_only_the_names_they_say() {
        let s = spec(
            Egress::Allow,
            &["api.example.com:443", "*.pkg.example.org", "203.0.113.7"],
        );
        assert!(s.names_hosts());
        assert_eq!(s.ports_for_host("API.example.com."), vec![Some(443)]);
        assert_eq!(s.ports_for_host("deb.pkg.example.org"), vec![None]);
        assert_eq!(s.ports_for_host("a.b.pkg.example.org"), vec![None]);
        for other in [
            "pkg.example.org",
            "evilpkg.example.org",
            "example.com",
            "api.example.com.evil.test",
        ] {
            assert!(s.ports_for_host(other).is_empty(), "{other}");
        }
        assert_eq!(s.allowed_nets().len(), 1);
        // Under another policy a name opens nothing.
        let mut open = s.clone();
        open.egress = Egress::Open;
        assert!(open.ports_for_host("api.example.com").is_empty());
        for bad in [
            "*.com.",
            "-a.example.com",
            "a..example.com",
            "localhost",
            "*",
        ] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_entries_are_named_by_field() {
        let mut s = spec(
            Egress::Allow,
            &[
                "exa_mple.com",
                "10.0.0.1/33",
                "10.0.0.1/8",
                "1.2.3.4:0",
                "1.2.3.4:22",
            ],
        );
        s.host_services = vec![
            HostService {
                port: 8080,
                name: None,
            },
            HostService {
                port: 8080,
                name: None,
            },
            HostService {
                port: 0,
                name: None,
            },
        ];
        let mut errors = ValidationErrors::default();
        s.validate("network", &mut errors);
        let text = format!("{errors:?}");
        for needle in [
            "network.allow[0]",
            "is not a host name",
            "network.allow[1]",
            "network.allow[2]",
            "did you mean 10.0.0.0/8",
            "network.allow[3]",
            "network.host_services[1].port",
            "network.host_services[2].port",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(!text.contains("network.allow[4]"), "{text}");
        let mut errors = ValidationErrors::default();
        spec(Egress::Open, &["1.2.3.4"]).validate("network", &mut errors);
        assert!(format!("{errors:?}").contains("only used with egress: allow"));
    }

    #[test]
    fn the_policy_reads_as_yaml_a_person_writes() {
        let s: NetworkSpec = serde_json::from_value(serde_json::json!({
            "egress": "allow",
            "allow": ["203.0.113.7:443"],
            "host_services": [{"port": 8080, "name": "model"}]
        }))
        .unwrap();
        assert_eq!(s.egress, Egress::Allow);
        assert_eq!(s.host_services[0].port, 8080);
        assert!(
            serde_json::from_value::<NetworkSpec>(serde_json::json!({"egres": "open"})).is_err()
        );
        assert!(opens_blocked(&"10.1.0.0/16".parse().unwrap()));
        assert!(!opens_blocked(&"203.0.113.0/24".parse().unwrap()));
    }
}
