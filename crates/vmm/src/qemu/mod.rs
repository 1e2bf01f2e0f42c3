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
use atelier_proto::{AgentAddr, GuestMount, GuestMountFs, GuestNetwork, GUEST_AGENT_PORT};
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
    /// How host folders are shared: virtio-fs with this `virtiofsd`, else 9p.
    virtiofsd: Option<PathBuf>,
}

/// `virtiofsd`: `ATELIER_VIRTIOFSD` (empty or `none`: use 9p), else on PATH, else where
/// Debian's QEMU and the virtiofsd package put it.
fn find_virtiofsd() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("ATELIER_VIRTIOFSD") {
        return (!v.is_empty() && v != "none").then(|| PathBuf::from(v));
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|d| d.join("virtiofsd"))
        .chain([
            PathBuf::from("/usr/libexec/virtiofsd"),
            PathBuf::from("/usr/lib/qemu/virtiofsd"),
        ])
        .find(|p| p.is_file())
}

/// A host folder as a machine shares it: through which file system, under which tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub fs: GuestMountFs,
    /// The device's mount tag (and id): `share0`, `share1`…
    pub tag: String,
    pub host_path: PathBuf,
    pub guest_path: String,
    pub read_only: bool,
}

impl Share {
    /// The shares of `folders`, through `virtiofs` (or 9p without it), tagged in order.
    fn of(folders: &[atelier_core::SharedFolder], virtiofs: bool) -> Vec<Share> {
        folders
            .iter()
            .enumerate()
            .map(|(i, f)| Share {
                fs: if virtiofs {
                    GuestMountFs::Virtiofs
                } else {
                    GuestMountFs::NineP
                },
                tag: format!("share{i}"),
                host_path: PathBuf::from(&f.host_path),
                guest_path: f.guest_path.clone(),
                read_only: f.read_only,
            })
            .collect()
    }

    /// The vhost-user socket of a virtio-fs share, in the sandbox's directory.
    fn socket(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sock", self.tag))
    }

    /// What the guest mounts.
    fn guest_mount(&self) -> GuestMount {
        GuestMount {
            fs: self.fs,
            tag: self.tag.clone(),
            path: self.guest_path.clone(),
            read_only: self.read_only,
        }
    }
}

/// True when the kernel's config (beside it, as Debian ships it) says it has no 9p: its
/// guests cannot mount a 9p share.
fn kernel_lacks_9p(bzimage: &Path) -> bool {
    let Some(name) = bzimage.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let config = bzimage.with_file_name(name.replacen("vmlinuz", "config", 1));
    std::fs::read_to_string(config).is_ok_and(|c| c.contains("# CONFIG_NET_9P is not set"))
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
        let virtiofsd = find_virtiofsd();
        notes.push(match &virtiofsd {
            Some(v) => format!(
                "qemu: shared folders: virtio-fs ({}, one per folder)",
                v.display()
            ),
            None => "qemu: shared folders: 9p (virtio-9p-device); no virtiofsd found".into(),
        });
        Ok(Self {
            sandboxes_dir,
            binary,
            images,
            accel,
            notes,
            net,
            busybox: find_busybox(),
            gateway: Default::default(),
            virtiofsd,
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
            shares: Share::of(&spec.shared_folders, self.virtiofsd.is_some()),
        }
    }

    /// Starts one `virtiofsd` per virtio-fs share of `machine`, each serving only its
    /// folder on a socket in `dir`, and waits for the sockets. They end with the VM
    /// (when QEMU hangs up) and are stopped with its directory's processes otherwise.
    async fn start_virtiofsd(&self, machine: &Machine, dir: &Path) -> Result<(), VmmError> {
        let Some(binary) = &self.virtiofsd else {
            return Ok(());
        };
        for share in machine
            .shares
            .iter()
            .filter(|s| s.fs == GuestMountFs::Virtiofs)
        {
            let socket = share.socket(dir);
            let _ = std::fs::remove_file(&socket);
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("virtiofsd-{}.log", share.tag)))
                .map_err(VmmError::io("opening virtiofsd's log"))?;
            let log_err = log
                .try_clone()
                .map_err(VmmError::io("duplicating the log handle"))?;
            let mut cmd = Command::new(binary);
            cmd.args(virtiofsd_args(share, dir))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .current_dir(dir);
            let netns_file = process::detach_into_netns(&mut cmd, None)
                .map_err(VmmError::io("starting virtiofsd"))?;
            let spawned = cmd.spawn();
            drop(netns_file);
            let mut child = spawned.map_err(VmmError::io(format!(
                "starting {} (for the shared folder {})",
                binary.display(),
                share.host_path.display()
            )))?;
            let started = Instant::now();
            while !socket.exists() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(VmmError::Io {
                        context: format!("virtiofsd for {}", share.host_path.display()),
                        source: std::io::Error::other(format!(
                            "exited with {status}: {}",
                            tail(&dir.join(format!("virtiofsd-{}.log", share.tag)))
                        )),
                    });
                }
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    return Err(VmmError::Io {
                        context: format!("virtiofsd for {}", share.host_path.display()),
                        source: std::io::Error::other("its socket did not appear within 10s"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            std::thread::Builder::new()
                .name(format!("reap-{}", child.id()))
                .spawn(move || child.wait())
                .map_err(VmmError::io("starting the reaper thread"))?;
        }
        Ok(())
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
        if machine.shares_memory() {
            // virtiofsd maps the guest's memory, and speaks only modern virtio (microvm's
            // virtio-mmio devices are legacy unless told otherwise).
            cmd.arg("-object")
                .arg(format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    machine.memory_mib
                ))
                .args(["-global", "virtio-mmio.force-legacy=false"]);
        }
        let microvm = if machine.shares_memory() {
            "microvm,memory-backend=mem"
        } else {
            "microvm"
        };
        cmd.args(["-M", microvm, "-accel", accel, "-cpu", &machine.cpu])
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
            .args(share_args(machine, dir))
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
    /// Host folders shared into the guest. A machine with any is never captured.
    #[serde(default)]
    pub shares: Vec<Share>,
}

/// `virtiofsd`'s arguments for `share`: its socket in `dir`, only its folder, no cache
/// (what either side writes, the other sees at once), in its own namespaces.
fn virtiofsd_args(share: &Share, dir: &Path) -> Vec<String> {
    vec![
        format!("--socket-path={}", share.socket(dir).display()),
        "-o".into(),
        format!("source={}", share.host_path.display()),
        "-o".into(),
        "cache=none".into(),
        "-o".into(),
        "sandbox=namespace".into(),
    ]
}

/// The QEMU arguments of `machine`'s shares: a 9p device (`-fsdev local`, the guest's
/// owners and modes kept in extended attributes, never applied to the host's files) or
/// a vhost-user-fs device on its `virtiofsd` socket, per folder.
fn share_args(machine: &Machine, dir: &Path) -> Vec<String> {
    let mut args = vec![];
    for share in &machine.shares {
        match share.fs {
            GuestMountFs::NineP => {
                let ro = if share.read_only { ",readonly=on" } else { "" };
                args.extend([
                    "-fsdev".into(),
                    format!(
                        "local,id={tag},path={path},security_model=mapped-xattr{ro}",
                        tag = share.tag,
                        path = share.host_path.display()
                    ),
                    "-device".into(),
                    format!(
                        "virtio-9p-device,fsdev={tag},mount_tag={tag}",
                        tag = share.tag
                    ),
                ]);
            }
            GuestMountFs::Virtiofs => args.extend([
                "-chardev".into(),
                format!(
                    "socket,id={},path={}",
                    share.tag,
                    share.socket(dir).display()
                ),
                "-device".into(),
                format!(
                    "vhost-user-fs-device,chardev={tag},tag={tag}",
                    tag = share.tag
                ),
            ]),
        }
    }
    args
}

impl Machine {
    /// virtio-fs needs the guest's memory shared with `virtiofsd`.
    fn shares_memory(&self) -> bool {
        self.shares.iter().any(|s| s.fs == GuestMountFs::Virtiofs)
    }
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
    shares: &[Share],
) -> Result<(), VmmError> {
    let listen = match transport {
        Transport::Tcp { .. } | Transport::Routed { .. } => {
            format!("tcp:0.0.0.0:{GUEST_AGENT_PORT}")
        }
        Transport::Vsock { .. } => format!("vsock:{}:{GUEST_AGENT_PORT}", u32::MAX),
    };
    let mut cfg = guest::guest_config(spec, listen, Some(network));
    cfg.mounts = shares.iter().map(Share::guest_mount).collect();
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

    fn shares_folders(&self) -> Result<(), String> {
        Ok(())
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
        if self.virtiofsd.is_none()
            && !spec.shared_folders.is_empty()
            && kernel_lacks_9p(&artifacts.bzimage)
        {
            return Err(VmmError::NotAvailable {
                driver: DriverKind::Qemu,
                reason: format!(
                    "shared folders need virtiofsd on the host (apt-get install virtiofsd),                      or a guest kernel with 9p, which {} lacks (CONFIG_NET_9P)",
                    artifacts.bzimage.display()
                ),
            });
        }
        let net = self.set_up_network(spec)?;
        let launched = async {
            let transport = pick_transport(&spec.id, net.as_ref())?;
            let machine = self.machine(
                spec,
                &artifacts,
                matches!(transport, Transport::Vsock { .. }),
            );
            write_config_disk(
                &dir,
                spec,
                transport,
                self.guest_network(&machine),
                &machine.shares,
            )?;
            write_machine(&dir, &machine)?;
            self.start_virtiofsd(&machine, &dir).await?;
            let cmd = self.command(&machine, &dir, transport);
            let runtime = self.spawn(
                cmd,
                &dir,
                transport,
                net.as_ref().map(|n| n.netns_path.as_path()),
            )?;
            self.open_forwards(spec)?;
            Ok(runtime)
        }
        .await;
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

    struct NoImages;

    impl ImageResolver for NoImages {
        fn resolve(&self, image: &str) -> Result<BootArtifacts, VmmError> {
            Err(VmmError::Corrupt(format!("no image {image} in unit tests")))
        }
    }

    fn driver(virtiofsd: Option<&str>) -> QemuDriver {
        QemuDriver {
            sandboxes_dir: PathBuf::from("/srv/data/sandboxes"),
            binary: PathBuf::from("qemu-system-x86_64"),
            images: Arc::new(NoImages),
            accel: AccelChoice {
                accel: Accel::Tcg,
                reason: "unit test".into(),
            },
            notes: vec![],
            net: None,
            busybox: None,
            gateway: Default::default(),
            virtiofsd: virtiofsd.map(PathBuf::from),
        }
    }

    fn folders() -> Vec<atelier_core::SharedFolder> {
        vec![
            atelier_core::SharedFolder {
                host_path: "/srv/app".into(),
                guest_path: "/workspace".into(),
                read_only: false,
            },
            atelier_core::SharedFolder {
                host_path: "/srv/data".into(),
                guest_path: "/data".into(),
                read_only: true,
            },
        ]
    }

    fn machine_of(driver: &QemuDriver) -> Machine {
        let spec = SandboxSpec {
            id: SandboxId::from_trusted("sabc".into()),
            name: "dev".into(),
            resources: atelier_core::Resources {
                vcpus: 1,
                memory_mib: 1024,
                disk_mib: 1024,
            },
            image: "minimal".into(),
            agent_token: "t".repeat(32),
            env: Default::default(),
            restore_token: None,
            network: Default::default(),
            shared_folders: folders(),
        };
        let artifacts = BootArtifacts {
            bzimage: "/srv/k/vmlinuz".into(),
            vmlinux: "/srv/k/vmlinux".into(),
            initramfs: "/srv/k/initramfs.img".into(),
            rootfs: "/srv/k/rootfs.ext4".into(),
        };
        driver.machine(&spec, &artifacts, false)
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The value following each occurrence of `flag`.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn without_virtiofsd_folders_are_9p_devices_exposing_only_themselves() {
        let d = driver(None);
        let machine = machine_of(&d);
        let dir = Path::new("/srv/data/sandboxes/sabc");
        let a = args(&d.command(&machine, dir, Transport::Tcp { port: 4100 }));
        assert_eq!(
            values(&a, "-fsdev"),
            [
                "local,id=share0,path=/srv/app,security_model=mapped-xattr",
                "local,id=share1,path=/srv/data,security_model=mapped-xattr,readonly=on",
            ]
        );
        let devices = values(&a, "-device");
        assert!(devices.contains(&"virtio-9p-device,fsdev=share0,mount_tag=share0"));
        assert!(devices.contains(&"virtio-9p-device,fsdev=share1,mount_tag=share1"));
        assert_eq!(values(&a, "-M"), ["microvm"], "no shared memory for 9p");
        assert!(
            values(&a, "-global").is_empty(),
            "9p works on legacy virtio"
        );
        assert!(values(&a, "-object").is_empty());
        assert!(values(&a, "-chardev").is_empty());
    }

    #[test]
    fn with_virtiofsd_folders_are_vhost_user_fs_devices_over_shared_memory() {
        let d = driver(Some("/usr/libexec/virtiofsd"));
        let machine = machine_of(&d);
        let dir = Path::new("/srv/data/sandboxes/sabc");
        let a = args(&d.command(&machine, dir, Transport::Tcp { port: 4100 }));
        assert_eq!(
            values(&a, "-chardev"),
            [
                "socket,id=share0,path=/srv/data/sandboxes/sabc/share0.sock",
                "socket,id=share1,path=/srv/data/sandboxes/sabc/share1.sock",
            ]
        );
        let devices = values(&a, "-device");
        assert!(devices.contains(&"vhost-user-fs-device,chardev=share0,tag=share0"));
        assert_eq!(
            values(&a, "-object"),
            ["memory-backend-memfd,id=mem,size=1024M,share=on"]
        );
        assert_eq!(values(&a, "-M"), ["microvm,memory-backend=mem"]);
        assert_eq!(values(&a, "-global"), ["virtio-mmio.force-legacy=false"]);
        assert!(values(&a, "-fsdev").is_empty());
        assert_eq!(
            virtiofsd_args(&machine.shares[0], dir),
            [
                "--socket-path=/srv/data/sandboxes/sabc/share0.sock",
                "-o",
                "source=/srv/app",
                "-o",
                "cache=none",
                "-o",
                "sandbox=namespace",
            ]
        );
    }

    #[test]
    fn a_machine_without_folders_is_unchanged() {
        let d = driver(Some("/usr/libexec/virtiofsd"));
        let mut machine = machine_of(&d);
        machine.shares.clear();
        let a = args(&d.command(&machine, Path::new("/d"), Transport::Tcp { port: 1 }));
        assert_eq!(values(&a, "-M"), ["microvm"]);
        assert!(values(&a, "-global").is_empty());
        assert!(!a
            .iter()
            .any(|x| x.contains("share") && !x.contains("share=on")));
        assert!(values(&a, "-object").is_empty());
    }

    #[test]
    fn the_guest_is_told_to_mount_each_share_by_its_tag() {
        let d = driver(None);
        let machine = machine_of(&d);
        let mounts: Vec<GuestMount> = machine.shares.iter().map(Share::guest_mount).collect();
        assert_eq!(
            mounts,
            [
                GuestMount {
                    fs: GuestMountFs::NineP,
                    tag: "share0".into(),
                    path: "/workspace".into(),
                    read_only: false,
                },
                GuestMount {
                    fs: GuestMountFs::NineP,
                    tag: "share1".into(),
                    path: "/data".into(),
                    read_only: true,
                },
            ]
        );
        let json = serde_json::to_value(&mounts[0]).unwrap();
        assert_eq!(json["fs"], "9p");
        let d = driver(Some("/usr/libexec/virtiofsd"));
        assert_eq!(
            machine_of(&d).shares[0].guest_mount().fs,
            GuestMountFs::Virtiofs
        );
    }

    #[test]
    fn a_kernel_config_without_9p_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let bz = dir.path().join("vmlinuz-6.1.0-57-cloud-amd64");
        assert!(!kernel_lacks_9p(&bz), "no config: unknown, so not refused");
        std::fs::write(
            dir.path().join("config-6.1.0-57-cloud-amd64"),
            "CONFIG_VIRTIO_FS=m\n# CONFIG_NET_9P is not set\n",
        )
        .unwrap();
        assert!(kernel_lacks_9p(&bz));
    }

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
