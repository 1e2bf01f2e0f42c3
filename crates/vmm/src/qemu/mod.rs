//! The `qemu` driver: `qemu-system-x86_64 -M microvm` with virtio-mmio devices.
//!
//! Per sandbox (`<data-dir>/sandboxes/<id>/`): `disk.qcow2` (a copy-on-write overlay of the
//! image's root filesystem, kept across stop/start), `config.img` (the guest config disk),
//! `console.log` (serial), `qemu.log`, `qmp.sock`, `machine.json` (the machine as
//! launched: what a snapshot must reproduce). The agent is reached through vhost-vsock
//! where the host has it, else over TCP (see below).
//!
//! Network: when the manager runs as root with `ip` and `iptables`, every VM runs in
//! its sandbox's own network namespace on `tap0` ([`crate::net`], as Firecracker does):
//! the egress policy is enforced there, the host services are forwarded into it, and the
//! host reaches the agent at the namespace's veth address. Otherwise (unprivileged), the
//! VM gets user-mode networking with `restrict=on`: nothing out at all, the agent behind
//! a `hostfwd` on a loopback port. `atelier system` says which and why.
//! Acceleration: KVM only when a boot probe succeeds, else TCG — the choice and its reason
//! are kept for `atelier system`. Snapshots and restores: [`snapshot`].

mod qmp;
pub mod snapshot;

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atelier_agent_client::AgentClient;
use atelier_core::SandboxId;
use atelier_proto::{AgentAddr, GuestNetwork, GUEST_AGENT_PORT};
use serde::{Deserialize, Serialize};

use crate::driver::{
    Driver, DriverInfo, DriverKind, Runtime, SandboxSpec, SnapshotInfo, StorageChoice, VmmError,
};
use crate::guest;
use crate::image::{BootArtifacts, ImageResolver};
use crate::images::initramfs::PROBE_MARKER;
use crate::net::{self, NetnsConfig, NetnsManager, SandboxNet};
use crate::process;
use crate::storage::SystemRunner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The accelerator in use and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

pub struct QemuDriver {
    sandboxes_dir: PathBuf,
    binary: PathBuf,
    images: Arc<dyn ImageResolver>,
    accel: AccelChoice,
    notes: Vec<String>,
    /// Per-sandbox namespaces, when this host can make them (root, ip, iptables).
    net: Option<NetnsManager>,
    /// Runs `nc` for user-mode host services (each guest connection spawns one).
    busybox: Option<PathBuf>,
    /// The host-service forwards and resolvers of running sandboxes.
    gateway: net::GatewayServices,
}

/// Per-sandbox namespaces for QEMU, or why not (then user-mode networking, restricted).
/// `ATELIER_QEMU_NETWORK=user` forces user mode.
fn qemu_networks(data_dir: &Path, notes: &mut Vec<String>) -> Option<NetnsManager> {
    if std::env::var("ATELIER_QEMU_NETWORK").is_ok_and(|v| v == "user") {
        notes.push(
            "qemu: network: user-mode, restricted (forced by ATELIER_QEMU_NETWORK=user): \
             sandboxes reach nothing outside but their host services"
                .into(),
        );
        return None;
    }
    let found = net::availability(&SystemRunner);
    if let Err(why) = found.netns.clone().and(found.nat.clone()) {
        notes.push(format!(
            "qemu: network: user-mode, restricted, because per-sandbox namespaces cannot \
             be made ({why}): sandboxes reach nothing outside but their host services"
        ));
        return None;
    }
    let mut config = NetnsConfig::new(data_dir.join("net"));
    config.dns = net::resolver_upstreams();
    config.resolver = true;
    config.agent_port = Some(GUEST_AGENT_PORT as u16);
    notes.push(format!(
        "qemu: network: a namespace per sandbox (guest {} behind NAT; names answered at \
         its gateway by the manager, asking {}; the host, the manager, metadata and other \
         sandboxes are refused)",
        net::GUEST_ADDRESS,
        config.dns.join(", ")
    ));
    net::enable_host_forwarding(&SystemRunner, "qemu", notes);
    Some(NetnsManager::new(config, Arc::new(SystemRunner)))
}

/// Busybox (for its `nc`), on PATH or in `/bin`.
fn find_busybox() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/bin")])
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
}

/// User-mode networking's addresses for new machines: the guest at 172.16.0.2 and its
/// host services (`guestfwd`s) at 172.16.0.1, as in a namespace, so a workspace names
/// `172.16.0.1:<port>` whichever mode runs. QEMU's virtual host (the gateway) cannot
/// carry a `guestfwd`, so it sits at [`USER_GATEWAY`].
const USER_NET: &str = "172.16.0.0/24";
const USER_GATEWAY: &str = "172.16.0.254";
const USER_GUEST: &str = "172.16.0.2";

/// The QEMU binary on PATH, or why there is none.
pub fn find_qemu() -> Result<PathBuf, String> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".to_owned()
        })
}

/// The host TSC frequency in kHz: under TCG the guest stalls calibrating it otherwise.
fn tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

fn kernel_args(extra: &str) -> String {
    let mut args = String::from("console=ttyS0 panic=-1 quiet");
    if let Some(khz) = tsc_khz() {
        args.push_str(&format!(" tsc_early_khz={khz}"));
    }
    if !extra.is_empty() {
        args.push(' ');
        args.push_str(extra);
    }
    args
}

/// Decides KVM or TCG: KVM only if `/dev/kvm` opens and the kernel boots to its init under
/// it within `within` (nested hosts can hang right after early boot). Cached per
/// kernel/QEMU/host in `cache`.
pub fn choose_accel(
    binary: &Path,
    artifacts: &BootArtifacts,
    cache: &Path,
    within: Duration,
) -> AccelChoice {
    if let Ok(v) = std::env::var("ATELIER_QEMU_ACCEL") {
        let accel = if v == "kvm" { Accel::Kvm } else { Accel::Tcg };
        return AccelChoice {
            accel,
            reason: format!("forced by ATELIER_QEMU_ACCEL={v}"),
        };
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm is not usable ({e}); using TCG emulation"),
        };
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let key = format!(
        "{}|{}|{}",
        binary.display(),
        artifacts.bzimage.display(),
        host.trim()
    );
    if let Some(cached) = std::fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<(String, AccelChoice)>(&b).ok())
        .filter(|(k, _)| *k == key)
    {
        return cached.1;
    }
    let choice = match probe_kvm(binary, artifacts, within) {
        Ok(took) => AccelChoice {
            accel: Accel::Kvm,
            reason: format!("KVM boot probe reached init in {took:?}"),
        },
        Err(why) => AccelChoice {
            accel: Accel::Tcg,
            reason: format!("KVM boot probe failed ({why}); using TCG emulation"),
        },
    };
    if let Ok(json) = serde_json::to_vec(&(key, &choice)) {
        let _ = std::fs::write(cache, json);
    }
    choice
}

fn probe_kvm(
    binary: &Path,
    artifacts: &BootArtifacts,
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args([
            "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&artifacts.bzimage)
        .arg("-initrd")
        .arg(&artifacts.initramfs)
        .arg("-append")
        .arg(kernel_args("atelier.probe"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut out = String::new();
        if let Some(mut s) = stdout {
            let _ = s.read_to_string(&mut out);
        }
        out
    });
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < within => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no init within {within:?}"));
            }
        }
    }
    let out = reader.join().unwrap_or_default();
    if out.contains(PROBE_MARKER) {
        Ok(started.elapsed())
    } else {
        Err("the guest did not reach init".into())
    }
}

impl QemuDriver {
    pub fn new(
        data_dir: &Path,
        binary: PathBuf,
        images: Arc<dyn ImageResolver>,
        accel: AccelChoice,
        mut notes: Vec<String>,
    ) -> Result<Self, VmmError> {
        let sandboxes_dir = data_dir.join("sandboxes");
        std::fs::create_dir_all(&sandboxes_dir).map_err(VmmError::io(format!(
            "creating {}",
            sandboxes_dir.display()
        )))?;
        let net = qemu_networks(data_dir, &mut notes);
        Ok(Self {
            sandboxes_dir,
            binary,
            images,
            accel,
            notes,
            net,
            busybox: find_busybox(),
            gateway: Default::default(),
        })
    }

    pub fn accel(&self) -> &AccelChoice {
        &self.accel
    }

    fn dir(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes_dir.join(id.as_str())
    }

    /// The machine a sandbox of `spec` gets, booting `artifacts`.
    fn machine(&self, spec: &SandboxSpec, artifacts: &BootArtifacts, vsock: bool) -> Machine {
        Machine {
            accel: self.accel.accel,
            cpu: match self.accel.accel {
                Accel::Kvm => "host",
                Accel::Tcg => "max",
            }
            .to_owned(),
            vcpus: spec.resources.vcpus,
            memory_mib: spec.resources.memory_mib,
            kernel: artifacts.bzimage.clone(),
            initramfs: artifacts.initramfs.clone(),
            append: kernel_args(""),
            vsock,
            netns: self.net.is_some(),
            user_net: self.net.is_none().then(|| USER_NET.to_owned()),
            host_services: if self.net.is_none() {
                spec.network.host_services.iter().map(|h| h.port).collect()
            } else {
                vec![]
            },
        }
    }

    /// Makes the sandbox's namespace (when this driver uses them).
    fn set_up_network(&self, spec: &SandboxSpec) -> Result<Option<SandboxNet>, VmmError> {
        match &self.net {
            Some(m) => m.setup(&spec.id, &spec.network).map(Some),
            None if !spec.network.host_services.is_empty() && self.busybox.is_none() => {
                Err(VmmError::NotAvailable {
                    driver: DriverKind::Qemu,
                    reason: "the workspace names host services; without a network namespace \
                             per sandbox (root, iproute2, iptables) they need busybox's nc \
                             on the host (apt-get install busybox-static)"
                        .into(),
                })
            }
            None => Ok(None),
        }
    }

    /// Opens the sandbox's host-service forwards (replacing any it had).
    fn open_forwards(&self, spec: &SandboxSpec) -> Result<(), VmmError> {
        match &self.net {
            Some(m) => self.gateway.open(m, &spec.id, &spec.network),
            None => Ok(()),
        }
    }

    /// Closes the forwards and removes the namespace of `id`; idempotent.
    fn tear_down_network(&self, id: &SandboxId) -> Result<(), VmmError> {
        self.gateway.close(id);
        match &self.net {
            Some(m) => m.teardown(id),
            None => Ok(()),
        }
    }

    /// The guest's network as told on its config disk.
    fn guest_network(&self, machine: &Machine) -> GuestNetwork {
        match (&self.net, machine.netns, &machine.user_net) {
            (Some(m), true, _) => m.guest_network(),
            // Restricted: no name server answers, so none is named.
            (_, _, Some(_)) => GuestNetwork {
                address: format!("{USER_GUEST}/24"),
                gateway: USER_GATEWAY.into(),
                dns: vec![],
            },
            _ => GuestNetwork {
                address: "10.0.2.15/24".into(),
                gateway: "10.0.2.2".into(),
                dns: vec!["10.0.2.3".into()],
            },
        }
    }

    /// The namespace file of a sandbox whose machine runs in one.
    fn netns_of(&self, id: &SandboxId, machine: &Machine) -> Result<Option<PathBuf>, VmmError> {
        match (&self.net, machine.netns) {
            (Some(m), true) => Ok(Some(m.netns_path(id))),
            (None, true) => Err(VmmError::Snapshot(
                "the machine ran in a network namespace of its own, and this driver makes \
                 none (it needs root, iproute2 and iptables)"
                    .into(),
            )),
            (_, false) => Ok(None),
        }
    }

    /// User-mode networking for `machine`. `restrict=on`: the guest reaches nothing of
    /// the host's loopback at its gateway, and nothing outside; only the agent's forward
    /// enters, and only its host services leave (`guestfwd`: each connection runs busybox's
    /// `nc` to that port of the host's loopback).
    fn user_netdev(&self, machine: &Machine, transport: Transport) -> String {
        let mut netdev = "user,id=n0,restrict=on".to_owned();
        if let Some(user_net) = &machine.user_net {
            let host = atelier_core::network::HOST_SERVICES_ADDRESS;
            netdev.push_str(&format!(",net={user_net},host={USER_GATEWAY}"));
            if let Some(busybox) = &self.busybox {
                for port in &machine.host_services {
                    netdev.push_str(&format!(
                        ",guestfwd=tcp:{host}:{port}-cmd:{} nc 127.0.0.1 {port}",
                        busybox.display()
                    ));
                }
            }
        }
        if let Transport::Tcp { port } = transport {
            // Without an address the forward goes to QEMU's DHCP start (.15).
            let guest = if machine.user_net.is_some() {
                USER_GUEST
            } else {
                ""
            };
            netdev.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{port}-{guest}:{GUEST_AGENT_PORT}"
            ));
        }
        netdev
    }

    /// The QEMU command line of `machine` for the sandbox in `dir`. Devices come in a
    /// fixed order: a restore must rebuild the captured machine device for device.
    fn command(&self, machine: &Machine, dir: &Path, transport: Transport) -> Command {
        let mut cmd = Command::new(&self.binary);
        let accel = match machine.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        };
        if let Transport::Vsock { cid } = transport {
            cmd.arg("-device")
                .arg(format!("vhost-vsock-device,guest-cid={cid}"));
        }
        cmd.args(["-M", "microvm", "-accel", accel, "-cpu", &machine.cpu])
            .args([
                "-m",
                &machine.memory_mib.to_string(),
                "-smp",
                &machine.vcpus.to_string(),
            ])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&machine.kernel)
            .arg("-initrd")
            .arg(&machine.initramfs)
            .arg("-append")
            .arg(&machine.append)
            .arg("-serial")
            .arg(format!("file:{}", dir.join("console.log").display()))
            .arg("-drive")
            .arg(format!(
                "id=root,file={},format=qcow2,if=none,discard=unmap",
                dir.join("disk.qcow2").display()
            ))
            .args(["-device", "virtio-blk-device,drive=root"])
            .arg("-drive")
            .arg(format!(
                "id=cfg,file={},format=raw,if=none,readonly=on",
                dir.join("config.img").display()
            ))
            .args(["-device", "virtio-blk-device,drive=cfg"])
            .arg("-netdev")
            .arg(if machine.netns {
                format!("tap,id=n0,ifname={},script=no,downscript=no", net::TAP_NAME)
            } else {
                self.user_netdev(machine, transport)
            })
            .args([
                "-device",
                "virtio-net-device,netdev=n0",
                "-device",
                "virtio-rng-device",
            ])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.join("qmp.sock").display()
            ));
        cmd
    }
}

/// The machine a sandbox runs, as launched (`machine.json` in its directory): what a
/// snapshot records and a restore rebuilds exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub accel: Accel,
    /// `-cpu` model (`host` under KVM, `max` under TCG).
    pub cpu: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The kernel command line it booted with.
    pub append: String,
    /// The agent listens on vsock (vhost-vsock) rather than on TCP.
    pub vsock: bool,
    /// The VM runs in its sandbox's network namespace on `tap0` (else user-mode
    /// networking, restricted). Older machines had user mode.
    #[serde(default)]
    pub netns: bool,
    /// User mode's `net=` (the guest at .2, the host at .1); `None`: QEMU's default
    /// 10.0.2.0/24, as older machines had.
    #[serde(default)]
    pub user_net: Option<String>,
    /// User mode's host service ports (`guestfwd`s), part of the machine a restore
    /// rebuilds.
    #[serde(default)]
    pub host_services: Vec<u16>,
}

/// How the host reaches the guest's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// vhost-vsock (`/dev/vhost-vsock` exists): AF_VSOCK to the guest's CID.
    Vsock { cid: u32 },
    /// A loopback port forwarded by user-mode networking.
    Tcp { port: u16 },
    /// The namespace's veth address, which the namespace forwards to the guest's agent.
    Routed { addr: std::net::Ipv4Addr },
}

/// vhost-vsock when the host has it (and `ATELIER_QEMU_TRANSPORT` does not say `tcp`),
/// else TCP: routed into the namespace `net`, or a forwarded loopback port.
fn pick_transport(id: &SandboxId, net: Option<&SandboxNet>) -> Result<Transport, VmmError> {
    let forced_tcp = std::env::var("ATELIER_QEMU_TRANSPORT").is_ok_and(|v| v == "tcp");
    if !forced_tcp
        && OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vhost-vsock")
            .is_ok()
    {
        // A CID per sandbox, stable across restarts, derived from its id (3 and up).
        let h = id
            .as_str()
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        return Ok(Transport::Vsock {
            cid: 3 + h % (u32::MAX / 2),
        });
    }
    tcp_transport(net)
}

fn tcp_transport(net: Option<&SandboxNet>) -> Result<Transport, VmmError> {
    match net {
        Some(n) => Ok(Transport::Routed { addr: n.ns_ip }),
        None => Ok(Transport::Tcp { port: free_port()? }),
    }
}

/// A transport of the given kind for a sandbox: a restore must keep the kind the
/// captured agent listens on (a new CID or port, though).
fn transport_of_kind(
    id: &SandboxId,
    vsock: bool,
    net: Option<&SandboxNet>,
) -> Result<Transport, VmmError> {
    if vsock {
        match pick_transport(id, net)? {
            t @ Transport::Vsock { .. } => Ok(t),
            Transport::Tcp { .. } | Transport::Routed { .. } => Err(VmmError::Snapshot(
                "the snapshot's agent listens on vsock, and this host has no usable /dev/vhost-vsock (or ATELIER_QEMU_TRANSPORT=tcp)".into(),
            )),
        }
    } else {
        tcp_transport(net)
    }
}

/// A free loopback TCP port (the kernel picks; QEMU binds it right after).
fn free_port() -> Result<u16, VmmError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(VmmError::io("picking a port"))?;
    Ok(l.local_addr()
        .map_err(VmmError::io("picking a port"))?
        .port())
}

/// The last lines of a QEMU sandbox's log, for boot errors.
fn tail(path: &Path) -> String {
    guest::console_tail(path, 25)
}

/// Writes the guest config disk of `spec` (host name, token, listen address, clock,
/// network, environment).
fn write_config_disk(
    dir: &Path,
    spec: &SandboxSpec,
    transport: Transport,
    network: GuestNetwork,
) -> Result<(), VmmError> {
    let listen = match transport {
        Transport::Tcp { .. } | Transport::Routed { .. } => {
            format!("tcp:0.0.0.0:{GUEST_AGENT_PORT}")
        }
        Transport::Vsock { .. } => format!("vsock:{}:{GUEST_AGENT_PORT}", u32::MAX),
    };
    let cfg = guest::guest_config(spec, listen, Some(network));
    guest::write_config_disk(&dir.join("config.img"), &cfg)
}

/// Records the machine as launched (`machine.json`), for a later snapshot.
fn write_machine(dir: &Path, machine: &Machine) -> Result<(), VmmError> {
    let json = serde_json::to_vec_pretty(machine).map_err(|e| VmmError::Corrupt(e.to_string()))?;
    std::fs::write(dir.join("machine.json"), json).map_err(VmmError::io("writing machine.json"))
}

/// The machine recorded at launch.
fn read_machine(dir: &Path) -> Result<Machine, VmmError> {
    let bytes = std::fs::read(dir.join("machine.json")).map_err(VmmError::io(format!(
        "reading {} (a sandbox launched before snapshots existed must be restarted first)",
        dir.join("machine.json").display()
    )))?;
    serde_json::from_slice(&bytes).map_err(|e| VmmError::Corrupt(format!("machine.json: {e}")))
}

fn agent_addr(transport: Transport) -> AgentAddr {
    match transport {
        Transport::Tcp { port } => {
            AgentAddr::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        }
        Transport::Routed { addr } => {
            AgentAddr::Tcp(std::net::SocketAddr::from((addr, GUEST_AGENT_PORT as u16)))
        }
        Transport::Vsock { cid } => AgentAddr::Vsock {
            cid,
            port: GUEST_AGENT_PORT,
        },
    }
}

impl QemuDriver {
    /// Starts `cmd` in its own session (so the VM outlives the manager), logging to
    /// `qemu.log`, with a thread reaping it.
    fn spawn(
        &self,
        mut cmd: Command,
        dir: &Path,
        transport: Transport,
        netns: Option<&Path>,
    ) -> Result<Runtime, VmmError> {
        let _ = std::fs::remove_file(dir.join("console.log"));
        let _ = std::fs::remove_file(dir.join("qmp.sock"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("qemu.log"))
            .map_err(VmmError::io("opening qemu.log"))?;
        let log_err = log
            .try_clone()
            .map_err(VmmError::io("duplicating the log handle"))?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .current_dir(dir);
        // The VM joins the sandbox's namespace (to open tap0) in a session of its own.
        let netns_file = process::detach_into_netns(&mut cmd, netns)
            .map_err(VmmError::io("opening the sandbox's network namespace"))?;
        let spawned = cmd.spawn();
        drop(netns_file);
        let mut child =
            spawned.map_err(VmmError::io(format!("starting {}", self.binary.display())))?;
        let pid = child.id();
        let pid_start = process::start_time(pid);
        std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || child.wait())
            .map_err(VmmError::io("starting the reaper thread"))?;
        Ok(Runtime {
            agent: agent_addr(transport).to_string(),
            pid: Some(pid),
            pid_start,
            dir: dir.to_path_buf(),
        })
    }

    /// Polls the agent's health through `client` until it answers, the VM dies, or `within`
    /// passes. A refusal of the token (401) ends the wait at once with `Ok(false)`.
    async fn wait_health(
        &self,
        runtime: &Runtime,
        client: &AgentClient,
        within: Duration,
        started: Instant,
    ) -> Result<bool, VmmError> {
        let console = runtime.dir.join("console.log");
        loop {
            if !self.is_alive(runtime) {
                let why = tail(&runtime.dir.join("qemu.log"));
                return Err(VmmError::ExitedEarly {
                    log_tail: format!("{why}\n{}", tail(&console)).trim().to_owned(),
                });
            }
            let left = within.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(VmmError::BootTimeout {
                    waited: within,
                    reason: "no answer from the agent".into(),
                    log_tail: tail(&console),
                });
            }
            match client
                .wait_healthy(left.min(Duration::from_millis(500)))
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if e.status() == Some(401) => return Ok(false),
                // Another answer (or a garbled one) from a live agent: retry, not in a spin.
                Err(
                    e @ (atelier_agent_client::Error::Agent { .. }
                    | atelier_agent_client::Error::Decode(_)),
                ) => {
                    tracing::debug!(error = %e, "the agent is not healthy yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => {}
            }
        }
    }
}

#[async_trait]
impl Driver for QemuDriver {
    fn sandboxes_dir(&self) -> &Path {
        &self.sandboxes_dir
    }

    /// QEMU's disks are always qcow2 overlays, whatever the filesystem.
    fn storage(&self) -> StorageChoice {
        StorageChoice {
            kind: "qcow2".into(),
            reason:
                "QEMU disks are qcow2 overlays of their image or prebuild snapshot (O(1) clones)"
                    .into(),
        }
    }

    fn info(&self) -> DriverInfo {
        let mut notes = self.notes.clone();
        notes.push(format!(
            "qemu: accelerator {:?}: {}",
            self.accel.accel, self.accel.reason
        ));
        DriverInfo {
            kind: DriverKind::Qemu,
            isolated: true,
            can_pause: true,
            notes,
        }
    }

    fn planned_resources(&self, id: &SandboxId) -> Vec<(String, String)> {
        let mut out = vec![("dir".into(), self.dir(id).display().to_string())];
        if let Some(m) = &self.net {
            out.extend(m.planned_resources(id));
        }
        out
    }

    async fn launch(&self, spec: &SandboxSpec) -> Result<Runtime, VmmError> {
        let images = self.images.clone();
        let image = spec.image.clone();
        let artifacts = tokio::task::spawn_blocking(move || images.resolve(&image))
            .await
            .map_err(|e| VmmError::Corrupt(e.to_string()))??;
        let dir = self.dir(&spec.id);
        std::fs::create_dir_all(&dir)
            .map_err(VmmError::io(format!("creating {}", dir.display())))?;
        let disk = dir.join("disk.qcow2");
        if !disk.exists() {
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&artifacts.rootfs)
                .arg(&disk)
                .output()
                .map_err(VmmError::io(
                    "running qemu-img (apt-get install qemu-utils)",
                ))?;
            if !out.status.success() {
                return Err(VmmError::Io {
                    context: "qemu-img create".into(),
                    source: std::io::Error::other(
                        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    ),
                });
            }
        }
        let net = self.set_up_network(spec)?;
        let launched = (|| {
            let transport = pick_transport(&spec.id, net.as_ref())?;
            let machine = self.machine(
                spec,
                &artifacts,
                matches!(transport, Transport::Vsock { .. }),
            );
            write_config_disk(&dir, spec, transport, self.guest_network(&machine))?;
            write_machine(&dir, &machine)?;
            let cmd = self.command(&machine, &dir, transport);
            let runtime = self.spawn(
                cmd,
                &dir,
                transport,
                net.as_ref().map(|n| n.netns_path.as_path()),
            )?;
            self.open_forwards(spec)?;
            Ok(runtime)
        })();
        if launched.is_err() {
            process::stop_sandbox_processes(None, &[&dir], Duration::from_secs(5)).await;
            let _ = self.tear_down_network(&spec.id);
        }
        launched
    }

    async fn wait_ready(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        within: Duration,
    ) -> Result<(), VmmError> {
        let started = Instant::now();
        if let Some(old) = &spec.restore_token {
            return self
                .refresh_identity(spec, old, runtime, within, started)
                .await;
        }
        let client = self.agent(runtime, &spec.agent_token)?;
        if self.wait_health(runtime, &client, within, started).await? {
            Ok(())
        } else {
            Err(VmmError::BootTimeout {
                waited: started.elapsed(),
                reason: "the agent refuses the sandbox's token".into(),
                log_tail: tail(&runtime.dir.join("console.log")),
            })
        }
    }

    async fn stop(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError> {
        process::stop_sandbox_processes(runtime, &[&self.dir(id)], Duration::from_secs(5)).await;
        let _ = std::fs::remove_file(self.dir(id).join("qmp.sock"));
        self.tear_down_network(id)
    }

    async fn adopt(&self, spec: &SandboxSpec, _runtime: &Runtime) -> Result<(), VmmError> {
        // The forwards lived in the previous manager process.
        self.open_forwards(spec)
    }

    async fn destroy(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError> {
        self.stop(id, runtime).await?;
        match std::fs::remove_dir_all(self.dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VmmError::Io {
                context: format!("removing {}", self.dir(id).display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    async fn snapshot(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        dest_dir: &Path,
    ) -> Result<SnapshotInfo, VmmError> {
        self.take_snapshot(spec, runtime, dest_dir).await
    }

    async fn launch_from_snapshot(
        &self,
        spec: &SandboxSpec,
        snapshot: &SnapshotInfo,
    ) -> Result<Runtime, VmmError> {
        self.restore(spec, snapshot).await
    }

    async fn pause(&self, runtime: &Runtime) -> Result<(), VmmError> {
        qmp::execute(&runtime.dir.join("qmp.sock"), "stop")
            .await
            .map(|_| ())
    }

    async fn resume(&self, runtime: &Runtime) -> Result<(), VmmError> {
        qmp::execute(&runtime.dir.join("qmp.sock"), "cont")
            .await
            .map(|_| ())
    }

    async fn sweep(&self, keep: &HashSet<SandboxId>) -> Vec<String> {
        let mut removed = process::sweep_sandbox_dirs(&self.sandboxes_dir, keep).await;
        if let Some(m) = &self.net {
            removed.extend(m.sweep(keep));
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_carry_the_tsc_frequency_under_emulation() {
        let args = kernel_args("atelier.probe");
        assert!(args.starts_with("console=ttyS0"));
        assert!(args.ends_with("atelier.probe"));
        if tsc_khz().is_some() {
            assert!(args.contains("tsc_early_khz="));
        }
    }
}
