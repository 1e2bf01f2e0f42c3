//! Per-sandbox network namespaces for microVMs.
//!
//! Every sandbox gets a network namespace of its own holding a tap device for its VM and
//! one end of a veth pair whose other end is on the host:
//!
//! ```text
//!  guest eth0 172.16.0.2/30 ── tap0 172.16.0.1/30 ┐ netns atelier-<id>
//!                                 veth0 10.200.x.2/30 (MASQUERADE out of veth0)
//!                                   │
//!  host                           atl<id> 10.200.x.1/30 (MASQUERADE 10.200.x.2 out)
//! ```
//!
//! The inside addresses (guest, tap, its name, the guest's MAC) are the same in every
//! sandbox: clones of one memory snapshot wake up with the network the snapshot recorded
//! and need no re-addressing, since nothing they can see differs between them. Only the
//! veth's /30 is per sandbox, from a pool (`10.200.0.0/16`: 16384 sandboxes), allocated
//! by creating a slot file (`<state_dir>/slots/<n>`, holding the sandbox id) so that
//! concurrent launches and restarts agree on who owns which addresses.
//!
//! Outbound traffic is NATed twice: inside the namespace to the veth's address, and on
//! the host to the host's own. Both take `iptables`; without it the namespace and tap
//! are still made (the guest is isolated, with no way out) and [`Availability::nat`] says
//! why.
//!
//! All of it is a handful of `ip`, `sysctl` and `iptables` invocations run through a
//! [`CommandRunner`], so that tests can assert each argv and the teardown order. Host
//! rules carry the comment `<netns name>`, so that a teardown finds them by listing; a
//! sweep after a crash removes the networks of slots whose sandbox no longer exists.

pub mod dns;
pub mod forward;

/// The gateway services (host-service forwards, resolver) of each running sandbox of a
/// driver; a sandbox's close when it stops or goes.
#[derive(Debug, Default)]
pub struct GatewayServices {
    open: Mutex<HashMap<SandboxId, forward::HostForwards>>,
}

impl GatewayServices {
    /// Opens `id`'s services under `policy`, replacing (closing) any it had.
    pub fn open(
        &self,
        net: &NetnsManager,
        id: &SandboxId,
        policy: &NetworkSpec,
    ) -> Result<(), VmmError> {
        let services = net.open_services(id, policy)?;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), services);
        Ok(())
    }

    /// Closes `id`'s services; idempotent.
    pub fn close(&self, id: &SandboxId) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

use std::collections::HashMap;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use atelier_core::network::{Egress, Ipv4Net, NetworkSpec, BLOCKED_NETS, HOST_SERVICES_ADDRESS};
use atelier_core::SandboxId;
use atelier_proto::GuestNetwork;

use crate::driver::VmmError;
use crate::storage::{CommandOutput, CommandRunner};

/// The guest's address, the same in every sandbox.
pub const GUEST_ADDRESS: &str = "172.16.0.2/30";
/// The tap's address: the guest's gateway.
pub const TAP_ADDRESS: &str = "172.16.0.1/30";
pub const GATEWAY: &str = "172.16.0.1";
/// The tap inside every sandbox's namespace.
pub const TAP_NAME: &str = "tap0";
/// The namespace's end of the veth pair.
pub const NS_VETH: &str = "veth0";
/// The guest's MAC address (locally administered; the same in every sandbox).
pub const GUEST_MAC: &str = "06:00:ac:10:00:02";
/// Host veth names are this plus the sandbox id (3 + 12 characters: the most a Linux
/// interface name can have).
pub const HOST_VETH_PREFIX: &str = "atl";
/// Where every manager on the host takes its address slots (a tmpfs: namespaces, veths
/// and rules do not survive a reboot either).
pub const SHARED_SLOTS_DIR: &str = "/run/atelier/net-slots";
/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// How sandbox networks are laid out on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsConfig {
    /// This manager's own files (the namespaces' rule sets).
    pub state_dir: PathBuf,
    /// Slot files, shared by every manager on the host (two managers must never hand
    /// out one address pair); each names its sandbox and its manager's `state_dir`.
    pub slots_dir: PathBuf,
    /// Namespaces are named `<prefix><sandbox id>`; host rules carry that name as comment.
    pub netns_prefix: String,
    /// The pool the veth /30s come from.
    pub pool_base: Ipv4Addr,
    pub pool_prefix: u8,
    /// Owner of the tap (the jailer's uid and gid), so that an unprivileged Firecracker
    /// can open it.
    pub tap_owner: Option<(u32, u32)>,
    /// NAT the guest's traffic out (needs `iptables`).
    pub nat: bool,
    /// Name servers: those the manager's resolver asks (`ip` or `ip:port`) when
    /// `resolver` is on; else those handed to the guest (and the only private
    /// addresses it may reach on port 53).
    pub dns: Vec<String>,
    /// Answer the guest's name queries at its gateway ([`dns`]): the guest reaches no
    /// name server itself, and `allow` entries may name hosts.
    pub resolver: bool,
    /// A guest port the host reaches at the namespace's veth address (DNAT to the
    /// guest): how a VMM without vsock reaches its agent. `None`: nothing enters.
    pub agent_port: Option<u16>,
}

impl NetnsConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            slots_dir: PathBuf::from(SHARED_SLOTS_DIR),
            netns_prefix: "atelier-".into(),
            pool_base: Ipv4Addr::new(10, 200, 0, 0),
            pool_prefix: 16,
            tap_owner: None,
            nat: true,
            dns: vec![],
            resolver: false,
            agent_port: None,
        }
    }

    /// How many sandboxes the pool has addresses for (a /30 each).
    pub fn slots(&self) -> u32 {
        let bits = 32u32.saturating_sub(u32::from(self.pool_prefix)).min(31);
        (1u32 << bits) / 4
    }
}

/// One command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetCommand {
    pub program: &'static str,
    pub args: Vec<String>,
}

impl NetCommand {
    fn new(program: &'static str, args: &[&str]) -> Self {
        Self {
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    fn run(&self, runner: &dyn CommandRunner) -> io::Result<CommandOutput> {
        let args: Vec<std::ffi::OsString> = self.args.iter().map(Into::into).collect();
        runner.run(self.program, &args)
    }
}

impl fmt::Display for NetCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// The network of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNet {
    pub netns: String,
    /// `/var/run/netns/<netns>`: what the jailer's `--netns` (or `setns`) takes.
    pub netns_path: PathBuf,
    pub host_veth: String,
    pub slot: u32,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

/// What this host can do, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// Namespaces, veths and taps (root, `ip`, `/dev/net/tun`).
    pub netns: Result<(), String>,
    /// NAT out (`iptables`).
    pub nat: Result<(), String>,
}

/// Checks what sandbox networks need: root, a working `ip`, `/dev/net/tun`, and for NAT
/// a working `iptables`.
pub fn availability(runner: &dyn CommandRunner) -> Availability {
    let works = |program: &'static str, arg: &str, hint: &str| -> Result<(), String> {
        match NetCommand::new(program, &[arg]).run(runner) {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err(format!(
                "`{program} {arg}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(format!("{program} is not installed ({hint})"))
            }
            Err(e) => Err(format!("{program} cannot run: {e}")),
        }
    };
    let netns = if !nix::unistd::geteuid().is_root() {
        Err("network namespaces need root".to_owned())
    } else if !Path::new("/dev/net/tun").exists() {
        Err("/dev/net/tun does not exist (modprobe tun)".to_owned())
    } else {
        works("ip", "-V", "apt-get install iproute2")
    };
    let nat = works("iptables", "-V", "apt-get install iptables");
    Availability { netns, nat }
}

/// The non-loopback name servers of a `resolv.conf` (a guest cannot reach the host's
/// loopback resolver, e.g. systemd-resolved's 127.0.0.53).
pub fn host_nameservers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter(|a| {
            a.parse::<std::net::IpAddr>()
                .map(|ip| !ip.is_loopback() && ip.is_ipv4())
                .unwrap_or(false)
        })
        .map(str::to_owned)
        .collect()
}

/// The host's name servers a guest can use (its non-loopback ones, else a public one).
pub fn host_dns() -> Vec<String> {
    let found = std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| host_nameservers(&t))
        .unwrap_or_default();
    if found.is_empty() {
        vec!["1.1.1.1".into()]
    } else {
        found
    }
}

/// The name servers a sandbox's resolver (which runs in the manager, on the host) asks:
/// `ATELIER_NAME_SERVERS` (comma-separated `ip` or `ip:port`), else every IPv4 one of
/// the host's `resolv.conf`, loopback ones included, else a public one.
pub fn resolver_upstreams() -> Vec<String> {
    if let Ok(given) = std::env::var("ATELIER_NAME_SERVERS") {
        let given: Vec<String> = given
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !given.is_empty() {
            return given;
        }
    }
    let found: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter(|a| a.parse::<Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect();
    if found.is_empty() {
        vec!["1.1.1.1".into()]
    } else {
        found
    }
}

/// NAT out of the host needs IPv4 forwarding, a host-wide setting: turned on once (and
/// said, under `label`, in `notes`).
pub fn enable_host_forwarding(runner: &dyn CommandRunner, label: &str, notes: &mut Vec<String>) {
    let on = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|v| v.trim() == "1")
        .unwrap_or(false);
    if on {
        return;
    }
    match NetCommand::new("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]).run(runner) {
        Ok(out) if out.success() => notes.push(format!(
            "{label}: turned on IPv4 forwarding on the host (for NAT)"
        )),
        _ => notes.push(format!(
            "{label}: IPv4 forwarding is off on the host and could not be turned on: \
             guests cannot reach the outside"
        )),
    }
}

/// Makes and removes sandbox networks.
#[derive(Clone)]
pub struct NetnsManager {
    config: NetnsConfig,
    runner: Arc<dyn CommandRunner>,
}

impl fmt::Debug for NetnsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetnsManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn net_error(what: &str, cmd: &NetCommand, detail: String) -> VmmError {
    VmmError::Io {
        context: format!("{what}: `{cmd}`"),
        source: io::Error::other(detail),
    }
}

/// Whether a failed removal failed because there was nothing to remove.
fn already_gone(out: &CommandOutput) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    [
        "Cannot find device",
        "No such file or directory",
        "does a matching rule exist",
        "No chain/target/match by that name",
        "Bad rule",
    ]
    .iter()
    .any(|m| err.contains(m))
}

impl NetnsManager {
    pub fn new(config: NetnsConfig, runner: Arc<dyn CommandRunner>) -> Self {
        Self { config, runner }
    }

    pub fn config(&self) -> &NetnsConfig {
        &self.config
    }

    pub fn netns_name(&self, id: &SandboxId) -> String {
        format!("{}{}", self.config.netns_prefix, id.as_str())
    }

    pub fn netns_path(&self, id: &SandboxId) -> PathBuf {
        Path::new(NETNS_DIR).join(self.netns_name(id))
    }

    pub fn host_veth(id: &SandboxId) -> String {
        format!("{HOST_VETH_PREFIX}{}", id.as_str())
    }

    /// The host resources a sandbox's network consists of (for the manager's record).
    pub fn planned_resources(&self, id: &SandboxId) -> Vec<(String, String)> {
        let mut out = vec![
            ("netns".to_owned(), self.netns_name(id)),
            ("veth".to_owned(), Self::host_veth(id)),
        ];
        if self.config.nat {
            out.push(("iptables".to_owned(), self.netns_name(id)));
        }
        out
    }

    /// What the guest is told about its network (the same in every sandbox).
    pub fn guest_network(&self) -> GuestNetwork {
        GuestNetwork {
            address: GUEST_ADDRESS.into(),
            gateway: GATEWAY.into(),
            dns: if self.config.resolver {
                vec![GATEWAY.into()]
            } else {
                self.config.dns.clone()
            },
        }
    }

    /// The resolver the guest of `id` asks under `policy`; `None` when this manager
    /// runs none (the guest then asks the host's name servers itself) or the policy
    /// reaches nothing.
    pub fn resolver(&self, id: &SandboxId, policy: &NetworkSpec) -> Option<dns::Resolver> {
        (self.config.resolver && policy.egress != Egress::None).then(|| {
            dns::Resolver::new(
                policy.clone(),
                dns::parse_upstreams(&self.config.dns),
                self.netns_name(id),
                self.runner.clone(),
            )
        })
    }

    /// Opens what the guest of `id` reaches at its gateway under `policy`: a forward for
    /// each host service and the resolver. They run until the result is dropped.
    pub fn open_services(
        &self,
        id: &SandboxId,
        policy: &NetworkSpec,
    ) -> Result<forward::HostForwards, VmmError> {
        let netns = self.netns_path(id);
        let mut forwards = forward::open(&netns, HOST_SERVICES_ADDRESS, &policy.host_services)?;
        if let Some(resolver) = self.resolver(id, policy) {
            forwards.push(resolver.serve(&netns, HOST_SERVICES_ADDRESS)?);
        }
        Ok(forwards)
    }

    /// The veth addresses of `slot`: host side, namespace side.
    pub fn slot_addresses(&self, slot: u32) -> (Ipv4Addr, Ipv4Addr) {
        let block = u32::from(self.config.pool_base).wrapping_add(slot.wrapping_mul(4));
        (Ipv4Addr::from(block + 1), Ipv4Addr::from(block + 2))
    }

    /// The network `id` would have with `slot`.
    pub fn describe(&self, id: &SandboxId, slot: u32) -> SandboxNet {
        let (host_ip, ns_ip) = self.slot_addresses(slot);
        SandboxNet {
            netns: self.netns_name(id),
            netns_path: self.netns_path(id),
            host_veth: Self::host_veth(id),
            slot,
            host_ip,
            ns_ip,
        }
    }

    /// The host rules of `net` (without the `-A`/`-D`), table first when not `filter`.
    fn host_rules(&self, net: &SandboxNet) -> Vec<Vec<String>> {
        let tag = net.netns.as_str();
        let src = format!("{}/32", net.ns_ip);
        let veth = net.host_veth.as_str();
        let rule = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect();
        vec![
            rule(&[
                "-t",
                "nat",
                "POSTROUTING",
                "-s",
                &src,
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "MASQUERADE",
            ]),
            rule(&[
                "FORWARD",
                "-i",
                veth,
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "ACCEPT",
            ]),
            rule(&[
                "FORWARD",
                "-o",
                veth,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "ACCEPT",
            ]),
            // Inserted last, so first in the chain: never to another sandbox.
            rule(&[
                "FORWARD",
                "-i",
                veth,
                "-o",
                &format!("{HOST_VETH_PREFIX}+"),
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "REJECT",
            ]),
            // Nothing of the host itself (the manager, its services, any address of
            // it), but the answers to the host's own connections (the agent's).
            rule(&[
                "INPUT",
                "-i",
                veth,
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "REJECT",
            ]),
            rule(&[
                "INPUT",
                "-i",
                veth,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "ACCEPT",
            ]),
        ]
    }

    /// The rules inside the namespace of `net` under `policy`, as `iptables-restore`
    /// reads them. Everything from the guest is refused but, in this order: answers,
    /// the host services it names (at the tap's address), name servers (the manager's
    /// resolver at the gateway, else the host's; not under `egress: none`), its `allow`
    /// entries (those naming hosts in the [`NAMES_CHAIN`] the resolver fills), then
    /// (`egress: open`) everything outside the
    /// [`BLOCKED_NETS`](atelier_core::network::BLOCKED_NETS).
    pub fn namespace_rules(&self, net: &SandboxNet, policy: &NetworkSpec) -> String {
        let mut filter = vec![
            "*filter".to_owned(),
            ":INPUT DROP [0:0]".to_owned(),
            ":FORWARD DROP [0:0]".to_owned(),
            ":OUTPUT ACCEPT [0:0]".to_owned(),
            "-A INPUT -i lo -j ACCEPT".to_owned(),
            "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_owned(),
        ];
        let names = self.config.resolver && policy.egress == Egress::Allow;
        if names {
            filter.insert(4, format!(":{NAMES_CHAIN} - [0:0]"));
        }
        if self.config.resolver && policy.egress != Egress::None {
            for proto in ["udp", "tcp"] {
                filter.push(format!(
                    "-A INPUT -i {TAP_NAME} -d {GATEWAY}/32 -p {proto} --dport 53 -j ACCEPT"
                ));
            }
        }
        for s in &policy.host_services {
            filter.push(format!(
                "-A INPUT -i {TAP_NAME} -d {GATEWAY}/32 -p tcp --dport {} -j ACCEPT",
                s.port
            ));
        }
        filter.push(format!("-A INPUT -i {TAP_NAME} -j REJECT"));
        filter.push("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_owned());
        let guest = GUEST_ADDRESS.split('/').next().unwrap_or(GUEST_ADDRESS);
        if let Some(port) = self.config.agent_port {
            filter.push(format!(
                "-A FORWARD -i {NS_VETH} -o {TAP_NAME} -s {}/32 -d {guest}/32 -p tcp --dport {port} -j ACCEPT",
                net.host_ip
            ));
        }
        let out = format!("-A FORWARD -i {TAP_NAME} -o {NS_VETH}");
        if policy.egress != Egress::None && !self.config.resolver {
            for dns in &self.config.dns {
                for proto in ["udp", "tcp"] {
                    filter.push(format!("{out} -d {dns}/32 -p {proto} --dport 53 -j ACCEPT"));
                }
            }
        }
        if policy.egress == Egress::Allow {
            for (net, port) in policy.allowed_nets() {
                filter.push(allow_line(&out, net, port));
            }
        }
        if names {
            filter.push(format!("{out} -j {NAMES_CHAIN}"));
        }
        if policy.egress == Egress::Open {
            for blocked in BLOCKED_NETS {
                filter.push(format!("-A FORWARD -i {TAP_NAME} -d {blocked} -j REJECT"));
            }
            filter.push(format!("{out} -j ACCEPT"));
        }
        filter.push(format!("-A FORWARD -i {TAP_NAME} -j REJECT"));
        filter.push("COMMIT".to_owned());
        let mut nat = vec![
            "*nat".to_owned(),
            ":PREROUTING ACCEPT [0:0]".to_owned(),
            ":INPUT ACCEPT [0:0]".to_owned(),
            ":OUTPUT ACCEPT [0:0]".to_owned(),
            ":POSTROUTING ACCEPT [0:0]".to_owned(),
        ];
        if let Some(port) = self.config.agent_port {
            nat.push(format!(
                "-A PREROUTING -i {NS_VETH} -s {}/32 -p tcp --dport {port} -j DNAT --to-destination {guest}:{port}",
                net.host_ip
            ));
        }
        nat.push(format!("-A POSTROUTING -o {NS_VETH} -j MASQUERADE"));
        nat.push("COMMIT".to_owned());
        filter.extend(nat);
        filter.join("\n") + "\n"
    }

    /// The files setup writes for `id` (in the rules directory): the namespace's rule
    /// set, the host's tagged rules, and the `ip -batch` scripts for the host's links and
    /// the namespace's.
    fn setup_files(&self, id: &SandboxId) -> SetupFiles {
        let dir = self.config.state_dir.join("rules");
        let ns = self.netns_name(id);
        SetupFiles {
            rules: dir.join(format!("{ns}.rules")),
            host_rules: dir.join(format!("{ns}.host-rules")),
            host_links: dir.join(format!("{ns}.host-links")),
            links: dir.join(format!("{ns}.links")),
        }
    }

    /// The `ip -batch` scripts that make `net`'s links: on the host (the namespace, the
    /// veth pair, the host's end) and inside the namespace (its end, the route, the tap).
    /// Two processes instead of a dozen: each `ip` costs milliseconds to start.
    pub fn link_batches(&self, net: &SandboxNet) -> (String, String) {
        let (ns, veth) = (net.netns.as_str(), net.host_veth.as_str());
        let host = format!(
            "netns add {ns}\n\
             link add {veth} type veth peer name {NS_VETH} netns {ns}\n\
             addr add {}/30 dev {veth}\n\
             link set {veth} up\n",
            net.host_ip
        );
        let owner = self
            .config
            .tap_owner
            .map(|(u, g)| format!(" user {u} group {g}"))
            .unwrap_or_default();
        let inside = format!(
            "link set lo up\n\
             addr add {}/30 dev {NS_VETH}\n\
             link set {NS_VETH} up\n\
             route add default via {}\n\
             tuntap add dev {TAP_NAME} mode tap{owner}\n\
             addr add {TAP_ADDRESS} dev {TAP_NAME}\n\
             link set {TAP_NAME} up\n",
            net.ns_ip, net.host_ip
        );
        (host, inside)
    }

    /// The host's tagged rules of `net` as `iptables-restore --noflush` reads them.
    /// Each FORWARD/INPUT rule is inserted (`-I`) so it comes before a host firewall's
    /// final DROP; one by one, so the last is first, as separate `iptables -I` would.
    pub fn host_rules_restore(&self, net: &SandboxNet) -> String {
        let (mut nat, mut filter) = (vec!["*nat".to_owned()], vec!["*filter".to_owned()]);
        for rule in self.host_rules(net) {
            if rule[0] == "-t" {
                nat.push(format!("-A {}", rule[2..].join(" ")));
            } else {
                filter.push(format!("-I {}", rule.join(" ")));
            }
        }
        nat.push("COMMIT".into());
        filter.push("COMMIT".into());
        nat.extend(filter);
        nat.join("\n") + "\n"
    }

    /// The commands that make `net`'s links (what a VM needs to start), in order.
    pub fn link_commands(&self, net: &SandboxNet, files: &SetupFiles) -> Vec<NetCommand> {
        let host = files.host_links.to_string_lossy();
        let inside = files.links.to_string_lossy();
        vec![
            NetCommand::new("ip", &["-batch", &host]),
            NetCommand::new("ip", &["-n", &net.netns, "-batch", &inside]),
        ]
    }

    /// The commands that put `net`'s rules in place (with NAT): forwarding inside the
    /// namespace, its rule set, the host's tagged rules.
    pub fn firewall_commands(&self, net: &SandboxNet, files: &SetupFiles) -> Vec<NetCommand> {
        if !self.config.nat {
            return vec![];
        }
        let ns = net.netns.as_str();
        vec![
            NetCommand::new(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv4.ip_forward=1",
                ],
            ),
            NetCommand::new(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "iptables-restore",
                    &files.rules.to_string_lossy(),
                ],
            ),
            NetCommand::new(
                "iptables-restore",
                &["-w", "--noflush", &files.host_rules.to_string_lossy()],
            ),
        ]
    }

    /// Every command that makes `net`, in order.
    pub fn setup_commands(&self, net: &SandboxNet, files: &SetupFiles) -> Vec<NetCommand> {
        let mut out = self.link_commands(net, files);
        out.extend(self.firewall_commands(net, files));
        out
    }

    pub fn teardown_commands(&self, id: &SandboxId, rules: &[Vec<String>]) -> Vec<NetCommand> {
        let mut out: Vec<NetCommand> = rules.iter().map(|r| iptables_command("-D", r)).collect();
        out.push(NetCommand::new(
            "ip",
            &["link", "del", &Self::host_veth(id)],
        ));
        out.push(NetCommand::new(
            "ip",
            &["netns", "del", &self.netns_name(id)],
        ));
        out
    }

    fn run_checked(&self, what: &str, cmd: &NetCommand) -> Result<CommandOutput, VmmError> {
        match cmd.run(self.runner.as_ref()) {
            Ok(out) if out.success() => Ok(out),
            Ok(out) => Err(net_error(
                what,
                cmd,
                format!(
                    "exit {}: {}",
                    out.status
                        .map_or("by a signal".to_owned(), |c| c.to_string()),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )),
            Err(e) => Err(net_error(what, cmd, e.to_string())),
        }
    }

    /// Makes the network of `id` (allocating its addresses). On failure, whatever was
    /// made is removed again.
    pub fn setup(&self, id: &SandboxId, policy: &NetworkSpec) -> Result<SandboxNet, VmmError> {
        let net = self.setup_links(id, policy)?;
        self.setup_firewall(id, &net)?;
        Ok(net)
    }

    /// The first half of [`Self::setup`]: addresses, namespace, veth pair and tap —
    /// what a VM needs to start — with the rule files written. Until
    /// [`Self::setup_firewall`] has run the namespace has no rules, so nothing may run
    /// in it: a VM is started paused. On failure, whatever was made is removed again.
    pub fn setup_links(
        &self,
        id: &SandboxId,
        policy: &NetworkSpec,
    ) -> Result<SandboxNet, VmmError> {
        let slot = self.allocate_slot(id)?;
        let net = self.describe(id, slot);
        let files = self.setup_files(id);
        let (host_links, links) = self.link_batches(&net);
        let mut contents = vec![(&files.host_links, host_links), (&files.links, links)];
        if self.config.nat {
            contents.push((&files.rules, self.namespace_rules(&net, policy)));
            contents.push((&files.host_rules, self.host_rules_restore(&net)));
        }
        for (path, text) in contents {
            let write = || -> io::Result<()> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(path, &text)
            };
            if let Err(e) = write() {
                self.release_slot(id);
                return Err(VmmError::Io {
                    context: format!("writing {}", path.display()),
                    source: e,
                });
            }
        }
        let mut retried = false;
        let cmds = self.link_commands(&net, &files);
        let mut i = 0;
        while i < cmds.len() {
            match self.run_checked("setting up the sandbox's network", &cmds[i]) {
                Ok(_) => i += 1,
                // A namespace left by a crash (the sweep had not run yet): start over.
                Err(_) if i == 0 && !retried => {
                    retried = true;
                    let _ = self.remove_network(id);
                }
                Err(e) => {
                    self.undo(id);
                    return Err(e);
                }
            }
        }
        Ok(net)
    }

    /// The second half of [`Self::setup`]: the namespace's rules and the host's. On
    /// failure the whole network is removed.
    pub fn setup_firewall(&self, id: &SandboxId, net: &SandboxNet) -> Result<(), VmmError> {
        for cmd in self.firewall_commands(net, &self.setup_files(id)) {
            if let Err(e) = self.run_checked("setting up the sandbox's firewall", &cmd) {
                self.undo(id);
                return Err(e);
            }
        }
        Ok(())
    }

    fn undo(&self, id: &SandboxId) {
        if let Err(undo) = self.teardown(id) {
            tracing::warn!(sandbox = %id, error = %undo, "could not undo a failed network setup");
        }
    }

    /// The host rules tagged for `id`, as `iptables -S` lists them (table prefixed).
    fn tagged_rules(&self) -> Vec<(String, Vec<String>)> {
        if !self.config.nat {
            return vec![];
        }
        let mut out = vec![];
        for (table, chain) in [
            ("nat", "POSTROUTING"),
            ("filter", "FORWARD"),
            ("filter", "INPUT"),
        ] {
            let cmd = NetCommand::new("iptables", &["-t", table, "-S", chain]);
            let listing = match cmd.run(self.runner.as_ref()) {
                Ok(o) if o.success() => o.stdout,
                _ => continue,
            };
            for line in String::from_utf8_lossy(&listing).lines() {
                let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
                if words.first().map(String::as_str) != Some("-A") {
                    continue;
                }
                let Some(tag) = words
                    .windows(2)
                    .find(|w| w[0] == "--comment")
                    .map(|w| w[1].trim_matches('"').to_owned())
                else {
                    continue;
                };
                let mut rule = vec![];
                if table != "filter" {
                    rule.extend(["-t".to_owned(), table.to_owned()]);
                }
                rule.extend(words.into_iter().skip(1));
                out.push((tag, rule));
            }
        }
        out
    }

    /// Removes the rules, veth and namespace of `id`; what is already gone is fine.
    fn remove_network(&self, id: &SandboxId) -> Result<(), VmmError> {
        let tag = self.netns_name(id);
        let rules: Vec<Vec<String>> = self
            .tagged_rules()
            .into_iter()
            .filter(|(t, _)| *t == tag)
            .map(|(_, r)| r)
            .collect();
        let mut first_error = None;
        for cmd in self.teardown_commands(id, &rules) {
            match cmd.run(self.runner.as_ref()) {
                Ok(out) if out.success() || already_gone(&out) => {}
                Ok(out) => {
                    let e = net_error(
                        "removing the sandbox's network",
                        &cmd,
                        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    );
                    tracing::warn!(sandbox = %id, error = %e, "network teardown");
                    first_error.get_or_insert(e);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(net_error(
                        "removing the sandbox's network",
                        &cmd,
                        e.to_string(),
                    ));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes the network of `id` and frees its addresses; idempotent.
    pub fn teardown(&self, id: &SandboxId) -> Result<(), VmmError> {
        let removed = self.remove_network(id);
        // The addresses are freed only once nothing uses them any more.
        if removed.is_ok() {
            let files = self.setup_files(id);
            for f in [files.rules, files.host_rules, files.host_links, files.links] {
                let _ = std::fs::remove_file(f);
            }
            self.release_slot(id);
        }
        removed
    }

    /// Removes the networks of sandboxes not in `keep`. Found by their slot files: a
    /// slot is taken before anything is made and freed only once everything is gone, so
    /// the slots are a complete record — and they are this manager's own (another
    /// manager's namespaces on the same host are never touched). Returns what was removed.
    pub fn sweep(&self, keep: &HashSet<SandboxId>) -> Vec<String> {
        let owners: BTreeSet<String> = self.slots().into_iter().map(|(_, id)| id).collect();
        let mut removed = vec![];
        for name in owners {
            let Some(id) = SandboxId::parse(&name) else {
                continue;
            };
            if keep.contains(&id) {
                continue;
            }
            match self.teardown(&id) {
                Ok(()) => removed.push(format!("network namespace {}", self.netns_name(&id))),
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "could not remove a leftover network")
                }
            }
        }
        removed
    }

    fn slots_dir(&self) -> PathBuf {
        self.config.slots_dir.clone()
    }

    /// Every allocated slot on the host: its number, its sandbox, and whether it is this
    /// manager's (or belongs to a manager whose state directory is gone for good: a
    /// deleted data directory leaves nobody else to clean up).
    fn all_slots(&self) -> Vec<(u32, String, bool)> {
        let Ok(entries) = std::fs::read_dir(self.slots_dir()) else {
            return vec![];
        };
        let me = self.config.state_dir.to_string_lossy().into_owned();
        entries
            .flatten()
            .filter_map(|e| {
                let n: u32 = e.file_name().to_str()?.parse().ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                let mut lines = text.lines();
                let id = lines.next()?.trim().to_owned();
                let ours = match lines.next().map(str::trim) {
                    Some(owner) => owner == me || !Path::new(owner).exists(),
                    None => true,
                };
                Some((n, id, ours))
            })
            .collect()
    }

    /// The slots this manager answers for, and their sandboxes.
    fn slots(&self) -> Vec<(u32, String)> {
        self.all_slots()
            .into_iter()
            .filter(|(_, _, ours)| *ours)
            .map(|(n, id, _)| (n, id))
            .collect()
    }

    /// The slot of `id`: the one it holds already, else the lowest free one.
    pub fn allocate_slot(&self, id: &SandboxId) -> Result<u32, VmmError> {
        let dir = self.slots_dir();
        std::fs::create_dir_all(&dir)
            .map_err(VmmError::io(format!("creating {}", dir.display())))?;
        let taken = self.all_slots();
        if let Some((n, _, _)) = taken.iter().find(|(_, owner, _)| owner == id.as_str()) {
            return Ok(*n);
        }
        let used: HashSet<u32> = taken.iter().map(|(n, _, _)| *n).collect();
        for n in (0..self.config.slots()).filter(|n| !used.contains(n)) {
            let path = dir.join(n.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let record = format!("{}\n{}\n", id.as_str(), self.config.state_dir.display());
                    f.write_all(record.as_bytes())
                        .map_err(VmmError::io(format!("writing {}", path.display())))?;
                    return Ok(n);
                }
                // Taken by a concurrent launch since we looked.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(VmmError::Io {
                        context: format!("creating {}", path.display()),
                        source: e,
                    })
                }
            }
        }
        Err(VmmError::Io {
            context: "allocating the sandbox's network addresses".into(),
            source: io::Error::other(format!(
                "all {} slots of {}/{} are in use",
                self.config.slots(),
                self.config.pool_base,
                self.config.pool_prefix
            )),
        })
    }

    fn release_slot(&self, id: &SandboxId) {
        for (n, owner) in self.slots() {
            if owner == id.as_str() {
                let _ = std::fs::remove_file(self.slots_dir().join(n.to_string()));
            }
        }
    }
}

/// Where [`NetnsManager::setup`] writes what it hands to `ip` and `iptables-restore`.
#[derive(Debug, Clone)]
pub struct SetupFiles {
    pub rules: PathBuf,
    pub host_rules: PathBuf,
    pub host_links: PathBuf,
    pub links: PathBuf,
}

/// The chain in a sandbox's namespace that the resolver adds the addresses of allowed
/// host names to, as it answers.
pub const NAMES_CHAIN: &str = "atelier-names";

/// An `iptables` rule (after `-A <chain>` / `-A FORWARD -i .. -o ..` in `head`) letting
/// the guest reach `net` (on TCP `port`, or everything).
fn allow_line(head: &str, net: Ipv4Net, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("{head} -d {net} -p tcp --dport {port} -j ACCEPT"),
        None => format!("{head} -d {net} -j ACCEPT"),
    }
}

fn iptables_command(op: &str, rule: &[String]) -> NetCommand {
    // `-t <table>` stays in front of the operation, as iptables prints it.
    let mut args: Vec<String> = vec![];
    let mut rest = rule;
    if rule.first().map(String::as_str) == Some("-t") && rule.len() >= 2 {
        args.extend(rule[..2].iter().cloned());
        rest = &rule[2..];
    }
    args.push(op.to_owned());
    args.extend(rest.iter().cloned());
    NetCommand {
        program: "iptables",
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::sync::Mutex;

    /// Records every command line; answers from a script keyed by a prefix of the line,
    /// success with no output otherwise.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        answers: Mutex<VecDeque<(String, CommandOutput)>>,
    }

    impl Recorder {
        fn answer(self, prefix: &str, out: CommandOutput) -> Self {
            self.answers
                .lock()
                .unwrap()
                .push_back((prefix.to_owned(), out));
            self
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl CommandRunner for Recorder {
        fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput> {
            let mut line = program.to_owned();
            for a in args {
                line.push(' ');
                line.push_str(&a.to_string_lossy());
            }
            self.calls.lock().unwrap().push(line.clone());
            let mut answers = self.answers.lock().unwrap();
            if let Some(i) = answers.iter().position(|(p, _)| line.starts_with(p)) {
                return Ok(answers.remove(i).map(|(_, o)| o).unwrap_or_default());
            }
            Ok(CommandOutput::ok(""))
        }
    }

    fn id(s: &str) -> SandboxId {
        SandboxId::parse(s).unwrap()
    }

    fn manager(dir: &Path, runner: Arc<Recorder>) -> NetnsManager {
        let mut c = NetnsConfig::new(dir);
        c.slots_dir = dir.join("slots");
        c.tap_owner = Some((123, 456));
        c.dns = vec!["10.255.255.53".into()];
        NetnsManager::new(c, runner)
    }

    const A: &str = "sabcdefghjkm";
    const B: &str = "snpqrstuvwxy";

    #[test]
    fn setup_runs_exactly_these_commands() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(Recorder::default());
        let m = manager(dir.path(), r.clone());
        let net = m.setup(&id(A), &NetworkSpec::default()).unwrap();
        assert_eq!(net.slot, 0);
        assert_eq!(net.host_ip, Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(net.ns_ip, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(
            net.netns_path,
            Path::new("/var/run/netns/atelier-sabcdefghjkm")
        );
        let file = |name: &str| dir.path().join("rules").join(name).display().to_string();
        assert_eq!(
            r.calls(),
            [
                format!("ip -batch {}", file("atelier-sabcdefghjkm.host-links")),
                format!(
                    "ip -n atelier-sabcdefghjkm -batch {}",
                    file("atelier-sabcdefghjkm.links")
                ),
                "ip netns exec atelier-sabcdefghjkm sysctl -q -w net.ipv4.ip_forward=1".into(),
                format!(
                    "ip netns exec atelier-sabcdefghjkm iptables-restore {}",
                    file("atelier-sabcdefghjkm.rules")
                ),
                format!(
                    "iptables-restore -w --noflush {}",
                    file("atelier-sabcdefghjkm.host-rules")
                ),
            ]
        );
        let read = |name: &str| std::fs::read_to_string(file(name)).unwrap();
        assert_eq!(
            read("atelier-sabcdefghjkm.host-links"),
            "netns add atelier-sabcdefghjkm\n\
             link add atlsabcdefghjkm type veth peer name veth0 netns atelier-sabcdefghjkm\n\
             addr add 10.200.0.1/30 dev atlsabcdefghjkm\n\
             link set atlsabcdefghjkm up\n"
        );
        assert_eq!(
            read("atelier-sabcdefghjkm.links"),
            "link set lo up\n\
             addr add 10.200.0.2/30 dev veth0\n\
             link set veth0 up\n\
             route add default via 10.200.0.1\n\
             tuntap add dev tap0 mode tap user 123 group 456\n\
             addr add 172.16.0.1/30 dev tap0\n\
             link set tap0 up\n"
        );
        // Inserted in this order, so the refusal of neighbours ends up first in FORWARD.
        assert_eq!(
            read("atelier-sabcdefghjkm.host-rules"),
            "*nat\n\
             -A POSTROUTING -s 10.200.0.2/32 -m comment --comment atelier-sabcdefghjkm -j MASQUERADE\n\
             COMMIT\n\
             *filter\n\
             -I FORWARD -i atlsabcdefghjkm -m comment --comment atelier-sabcdefghjkm -j ACCEPT\n\
             -I FORWARD -o atlsabcdefghjkm -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment atelier-sabcdefghjkm -j ACCEPT\n\
             -I FORWARD -i atlsabcdefghjkm -o atl+ -m comment --comment atelier-sabcdefghjkm -j REJECT\n\
             -I INPUT -i atlsabcdefghjkm -m comment --comment atelier-sabcdefghjkm -j REJECT\n\
             -I INPUT -i atlsabcdefghjkm -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment atelier-sabcdefghjkm -j ACCEPT\n\
             COMMIT\n"
        );
        // The namespace's own rules: the default (open) policy.
        let rules =
            std::fs::read_to_string(dir.path().join("rules/atelier-sabcdefghjkm.rules")).unwrap();
        assert_eq!(rules, m.namespace_rules(&net, &NetworkSpec::default()));
        // A second sandbox gets the next /30; the inside stays the same.
        let other = m.setup(&id(B), &NetworkSpec::default()).unwrap();
        assert_eq!(other.slot, 1);
        assert_eq!(other.host_ip, Ipv4Addr::new(10, 200, 0, 5));
        assert_eq!(m.guest_network().address, "172.16.0.2/30");
        assert_eq!(m.guest_network().gateway, "172.16.0.1");
        // Setting up again reuses the slot the sandbox holds.
        assert_eq!(m.allocate_slot(&id(A)).unwrap(), 0);
    }

    #[test]
    fn namespace_rules_refuse_the_host_and_neighbours_and_follow_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = NetnsConfig::new(dir.path());
        c.slots_dir = dir.path().join("slots");
        c.dns = vec!["10.255.255.53".into()];
        c.agent_port = Some(1024);
        let m = NetnsManager::new(c, Arc::new(Recorder::default()));
        let net = m.describe(&id(A), 0);
        let open = m.namespace_rules(&net, &NetworkSpec::default());
        let lines: Vec<&str> = open.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| *l == needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{open}"))
        };
        // Name servers before the private ranges they live in; metadata and the other
        // sandboxes' /30s refused before the way out.
        let dns = at("-A FORWARD -i tap0 -o veth0 -d 10.255.255.53/32 -p udp --dport 53 -j ACCEPT");
        let private = at("-A FORWARD -i tap0 -d 10.0.0.0/8 -j REJECT");
        let metadata = at("-A FORWARD -i tap0 -d 169.254.0.0/16 -j REJECT");
        let out = at("-A FORWARD -i tap0 -o veth0 -j ACCEPT");
        assert!(dns < private && private < out && metadata < out);
        at(":INPUT DROP [0:0]");
        at("-A INPUT -i tap0 -j REJECT");
        at("-A PREROUTING -i veth0 -s 10.200.0.1/32 -p tcp --dport 1024 -j DNAT --to-destination 172.16.0.2:1024");
        assert_eq!(lines.last(), Some(&"COMMIT"));

        let none = m.namespace_rules(
            &net,
            &NetworkSpec {
                egress: Egress::None,
                allow: vec![],
                host_services: vec![atelier_core::HostService {
                    port: 8080,
                    name: None,
                }],
            },
        );
        assert!(!none.contains("-o veth0 -d"), "{none}");
        assert!(!none.contains("-o veth0 -j ACCEPT"), "{none}");
        assert!(none.contains("-A INPUT -i tap0 -d 172.16.0.1/32 -p tcp --dport 8080 -j ACCEPT"));

        let allow = m.namespace_rules(
            &net,
            &NetworkSpec {
                egress: Egress::Allow,
                allow: vec!["203.0.113.7:443".into(), "198.51.100.0/24".into()],
                host_services: vec![],
            },
        );
        assert!(allow.contains(
            "-A FORWARD -i tap0 -o veth0 -d 203.0.113.7/32 -p tcp --dport 443 -j ACCEPT"
        ));
        assert!(allow.contains("-A FORWARD -i tap0 -o veth0 -d 198.51.100.0/24 -j ACCEPT"));
        assert!(!allow.contains("-o veth0 -j ACCEPT"), "{allow}");
    }

    #[test]
    fn with_the_resolver_the_guest_asks_only_its_gateway_and_names_fill_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = NetnsConfig::new(dir.path());
        c.slots_dir = dir.path().join("slots");
        c.dns = vec!["10.255.255.53".into()];
        c.resolver = true;
        let m = NetnsManager::new(c, Arc::new(Recorder::default()));
        let net = m.describe(&id(A), 0);
        assert_eq!(m.guest_network().dns, ["172.16.0.1"]);
        let policy = |egress, allow: &[&str]| NetworkSpec {
            egress,
            allow: allow.iter().map(|a| (*a).to_owned()).collect(),
            host_services: vec![],
        };
        let ask_gateway = "-A INPUT -i tap0 -d 172.16.0.1/32 -p udp --dport 53 -j ACCEPT";
        let allow = m.namespace_rules(
            &net,
            &policy(Egress::Allow, &["api.example.com:443", "203.0.113.7"]),
        );
        let lines: Vec<&str> = allow.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| *l == needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{allow}"))
        };
        at(":atelier-names - [0:0]");
        assert!(at(ask_gateway) < at("-A INPUT -i tap0 -j REJECT"));
        let chain = at("-A FORWARD -i tap0 -o veth0 -j atelier-names");
        assert!(at("-A FORWARD -i tap0 -o veth0 -d 203.0.113.7/32 -j ACCEPT") < chain);
        assert!(chain < at("-A FORWARD -i tap0 -j REJECT"));
        // No name server of the host's, and nothing by name in the static rules.
        assert!(
            !allow.contains("--dport 53 -j ACCEPT\n-A FORWARD"),
            "{allow}"
        );
        assert!(!allow.contains("10.255.255.53"), "{allow}");
        assert!(!allow.contains("example"), "{allow}");
        let open = m.namespace_rules(&net, &policy(Egress::Open, &[]));
        assert!(
            open.contains(ask_gateway) && !open.contains("atelier-names"),
            "{open}"
        );
        let none = m.namespace_rules(&net, &policy(Egress::None, &[]));
        assert!(!none.contains("--dport 53"), "{none}");
        assert!(m.resolver(&id(A), &policy(Egress::None, &[])).is_none());
        assert!(m.resolver(&id(A), &policy(Egress::Open, &[])).is_some());
    }

    #[test]
    fn without_nat_only_the_namespace_veth_and_tap_are_made() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(Recorder::default());
        let mut c = NetnsConfig::new(dir.path());
        c.slots_dir = dir.path().join("slots");
        c.nat = false;
        let m = NetnsManager::new(c, r.clone());
        m.setup(&id(A), &NetworkSpec::default()).unwrap();
        let calls = r.calls();
        assert_eq!(calls.len(), 2, "{calls:#?}");
        assert!(calls.iter().all(|c| !c.contains("iptables")));
        let links = std::fs::read_to_string(dir.path().join("rules/atelier-sabcdefghjkm.links"));
        assert!(links.unwrap().contains("tuntap add dev tap0 mode tap\n"));
        assert!(!dir.path().join("rules/atelier-sabcdefghjkm.rules").exists());
        assert!(!m
            .planned_resources(&id(A))
            .iter()
            .any(|(k, _)| k == "iptables"));
    }

    const FORWARD_LISTING: &str = "-P FORWARD DROP\n\
        -A FORWARD -j DOCKER-USER\n\
        -A FORWARD -i atlsabcdefghjkm -m comment --comment atelier-sabcdefghjkm -j ACCEPT\n\
        -A FORWARD -o atlsabcdefghjkm -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment atelier-sabcdefghjkm -j ACCEPT\n\
        -A FORWARD -i atlsnpqrstuvwxy -m comment --comment atelier-snpqrstuvwxy -j ACCEPT\n";
    const NAT_LISTING: &str = "-P POSTROUTING ACCEPT\n\
        -A POSTROUTING -s 10.200.0.2/32 -m comment --comment atelier-sabcdefghjkm -j MASQUERADE\n\
        -A POSTROUTING -s 10.200.0.6/32 -m comment --comment atelier-snpqrstuvwxy -j MASQUERADE\n";

    #[test]
    fn teardown_removes_rules_then_veth_then_namespace_and_frees_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(
            Recorder::default()
                .answer("iptables -t nat -S", CommandOutput::ok(NAT_LISTING))
                .answer("iptables -t filter -S", CommandOutput::ok(FORWARD_LISTING))
                // The namespace is already gone: fine.
                .answer(
                    "ip netns del",
                    CommandOutput::failed(
                        1,
                        "Cannot remove namespace file \"/var/run/netns/atelier-sabcdefghjkm\": No such file or directory",
                    ),
                ),
        );
        let m = manager(dir.path(), r.clone());
        assert_eq!(m.allocate_slot(&id(A)).unwrap(), 0);
        m.teardown(&id(A)).unwrap();
        assert_eq!(
            r.calls(),
            [
                "iptables -t nat -S POSTROUTING",
                "iptables -t filter -S FORWARD",
                "iptables -t filter -S INPUT",
                "iptables -t nat -D POSTROUTING -s 10.200.0.2/32 -m comment --comment atelier-sabcdefghjkm -j MASQUERADE",
                "iptables -D FORWARD -i atlsabcdefghjkm -m comment --comment atelier-sabcdefghjkm -j ACCEPT",
                "iptables -D FORWARD -o atlsabcdefghjkm -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment atelier-sabcdefghjkm -j ACCEPT",
                "ip link del atlsabcdefghjkm",
                "ip netns del atelier-sabcdefghjkm",
            ]
        );
        assert!(m.slots().is_empty(), "the slot is free again");
    }

    #[test]
    fn a_failed_removal_keeps_the_slot_and_says_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(Recorder::default().answer(
            "ip link del",
            CommandOutput::failed(2, "RTNETLINK answers: Operation not permitted"),
        ));
        let mut c = NetnsConfig::new(dir.path());
        c.slots_dir = dir.path().join("slots");
        c.nat = false;
        let m = NetnsManager::new(c, r.clone());
        m.allocate_slot(&id(A)).unwrap();
        let e = m.teardown(&id(A)).unwrap_err();
        assert!(
            e.to_string().contains("ip link del atlsabcdefghjkm")
                && e.to_string().contains("Operation not permitted"),
            "{e}"
        );
        // The namespace is still removed after the failure.
        assert_eq!(
            r.calls().last().unwrap(),
            "ip netns del atelier-sabcdefghjkm"
        );
        assert_eq!(
            m.slots().len(),
            1,
            "addresses stay taken while the veth may exist"
        );
    }

    #[test]
    fn a_failed_setup_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(Recorder::default().answer(
            "ip -n atelier-sabcdefghjkm -batch",
            CommandOutput::failed(1, "ioctl(TUNSETIFF): Device or resource busy"),
        ));
        let mut c = NetnsConfig::new(dir.path());
        c.slots_dir = dir.path().join("slots");
        c.nat = false;
        let m = NetnsManager::new(c, r.clone());
        let e = m.setup(&id(A), &NetworkSpec::default()).unwrap_err();
        assert!(e.to_string().contains("TUNSETIFF"), "{e}");
        let calls = r.calls();
        let failed = calls
            .iter()
            .position(|c| c.contains("-n atelier-sabcdefghjkm -batch"))
            .unwrap();
        assert_eq!(
            &calls[failed + 1..],
            [
                "ip link del atlsabcdefghjkm",
                "ip netns del atelier-sabcdefghjkm"
            ]
        );
        assert!(m.slots().is_empty());
    }

    #[test]
    fn a_namespace_left_by_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(Recorder::default().answer(
            "ip -batch",
            CommandOutput::failed(1, "Cannot create namespace file: File exists"),
        ));
        let mut c = NetnsConfig::new(dir.path());
        c.slots_dir = dir.path().join("slots");
        c.nat = false;
        let m = NetnsManager::new(c, r.clone());
        m.setup(&id(A), &NetworkSpec::default()).unwrap();
        let calls = r.calls();
        let host_links = dir.path().join("rules/atelier-sabcdefghjkm.host-links");
        assert_eq!(
            &calls[..4],
            [
                format!("ip -batch {}", host_links.display()),
                "ip link del atlsabcdefghjkm".into(),
                "ip netns del atelier-sabcdefghjkm".into(),
                format!("ip -batch {}", host_links.display()),
            ]
        );
        assert_eq!(calls.len(), 5, "{calls:?}");
    }

    #[test]
    fn sweep_removes_the_networks_of_unknown_sandboxes_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = Arc::new(
            Recorder::default()
                .answer("iptables -t nat -S", CommandOutput::ok(NAT_LISTING))
                .answer("iptables -t filter -S", CommandOutput::ok(FORWARD_LISTING)),
        );
        let m = manager(dir.path(), r.clone());
        m.allocate_slot(&id(A)).unwrap();
        m.allocate_slot(&id(B)).unwrap();
        let removed = m.sweep(&HashSet::from([id(A)]));
        assert_eq!(removed, ["network namespace atelier-snpqrstuvwxy"]);
        let deletions: Vec<String> = r
            .calls()
            .into_iter()
            .filter(|c| c.contains(" -D ") || c.contains(" del "))
            .collect();
        assert_eq!(
            deletions,
            [
                "iptables -t nat -D POSTROUTING -s 10.200.0.6/32 -m comment --comment atelier-snpqrstuvwxy -j MASQUERADE",
                "iptables -D FORWARD -i atlsnpqrstuvwxy -m comment --comment atelier-snpqrstuvwxy -j ACCEPT",
                "ip link del atlsnpqrstuvwxy",
                "ip netns del atelier-snpqrstuvwxy",
            ]
        );
        assert_eq!(
            m.slots(),
            [(0, A.to_owned())],
            "the kept sandbox keeps its slot"
        );
        // Nothing of anyone else's was even looked at.
        assert!(!r.calls().iter().any(|c| c.contains("netns list")));
    }

    #[test]
    fn slots_run_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = NetnsConfig::new(dir.path());
        c.slots_dir = dir.path().join("slots");
        c.pool_prefix = 29; // two /30s
        assert_eq!(c.slots(), 2);
        let m = NetnsManager::new(c, Arc::new(Recorder::default()));
        m.allocate_slot(&id(A)).unwrap();
        m.allocate_slot(&id(B)).unwrap();
        let e = m.allocate_slot(&id("s23456789abc")).unwrap_err();
        assert!(
            e.to_string().contains("all 2 slots of 10.200.0.0/29"),
            "{e}"
        );
    }

    #[test]
    fn host_veth_names_fit_an_interface_name() {
        let name = NetnsManager::host_veth(&SandboxId::generate());
        assert!(name.len() <= 15, "{name}");
    }

    #[test]
    fn guests_get_the_hosts_reachable_name_servers() {
        let text = "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\n\
                    nameserver ::1\nsearch lan\nnameserver 1.1.1.1 # x\n";
        assert_eq!(host_nameservers(text), ["10.255.255.53", "1.1.1.1"]);
    }
}
