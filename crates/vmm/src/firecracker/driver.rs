//! The `firecracker` driver: one Firecracker microVM per sandbox.
//!
//! Layout of `<data-dir>/sandboxes/<id>/`: `rootfs.ext4` (the sandbox's own copy of the
//! image's root filesystem, kept across stop/start), `config.img` (the raw config disk,
//! 0600), `console.log` (Firecracker's stdout/stderr: the guest's serial console), and —
//! without the jailer — `api.sock`, `vsock.sock`, `firecracker.log` and, when enabled,
//! `metrics.json`. Under the jailer those live in the chroot
//! (`<chroot-base>/<exec name>/<id>/root/`, sockets in its `run/`), where the kernel,
//! initramfs and disks are hard-linked (or copied) before launch.
//!
//! `launch.json` records how the running VM was configured (a snapshot keeps it: the
//! paths it names are part of the VM's state). With per-sandbox networks
//! ([`NetnsChoice`]), Firecracker runs in the sandbox's own network namespace
//! (`atelier-<id>`, see [`crate::net`]) and the VM has a network interface on its tap.
//!
//! Firecracker runs in a session of its own (`setsid`), so it outlives a manager restart;
//! it is identified by pid and start time. The agent is reached over Firecracker's hybrid
//! vsock: `fcvsock:<vsock.sock>:1024`.

use std::collections::HashSet;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atelier_agent_client::AgentClient;
use atelier_core::SandboxId;
use atelier_proto::{AgentAddr, GUEST_AGENT_PORT};
use serde::{Deserialize, Serialize};

use super::api::LogLevel;
use super::client::FirecrackerClient;
use super::disk;
use super::jailer::JailerConfig;
use super::layout::{
    api_socket_of, prepare, remove_dir_if_present, remove_file_if_present, SandboxPaths,
};
use super::plan::{boot_calls, configure, BootPlan, DEFAULT_BOOT_ARGS};
use crate::driver::{Driver, DriverInfo, DriverKind, Runtime, SandboxSpec, SnapshotInfo, VmmError};
use crate::guest;
use crate::image::{BootArtifacts, ImageResolver};
use crate::net::{self, NetnsConfig, NetnsManager, SandboxNet};
use crate::process;
use crate::storage::{CommandRunner, SystemRunner};

/// Lines of the console kept in boot errors.
const CONSOLE_TAIL_LINES: usize = 20;
const FIRECRACKER_LOG_TAIL_LINES: usize = 10;
/// Grace between SIGTERM and SIGKILL when stopping.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How the driver runs Firecracker.
#[derive(Clone)]
pub struct FirecrackerConfig {
    /// The `firecracker` binary (a bare name is looked up on PATH).
    pub binary: PathBuf,
    /// Where image names resolve to kernel, initramfs and root filesystem.
    pub images: Arc<dyn ImageResolver>,
    /// Atelier's data directory; sandboxes live in its `sandboxes/`.
    pub data_dir: PathBuf,
    /// Run Firecracker under the jailer (needs root).
    pub jailer: Option<JailerConfig>,
    /// Kernel command line ([`DEFAULT_BOOT_ARGS`]).
    pub boot_args: String,
    /// Firecracker's own log level (to `firecracker.log`).
    pub log_level: LogLevel,
    /// Configure Firecracker's metrics (a JSON line a minute to `metrics.json`, which grows
    /// for as long as the VM runs; truncated at each launch). Off by default.
    pub metrics: bool,
    /// Dirty page tracking (for diff snapshots; costs CPU).
    pub track_dirty_pages: bool,
    /// How long Firecracker (or the jailer) may take to open its API socket.
    pub socket_timeout: Duration,
    /// Timeout of each API request.
    pub api_timeout: Duration,
    /// Shown by `atelier system` (why this driver was chosen…).
    pub notes: Vec<String>,
    /// Whether every sandbox gets a network namespace of its own (see [`crate::net`]).
    pub netns: NetnsChoice,
    /// Runs the `ip`/`iptables` commands of sandbox networks.
    pub net_runner: Arc<dyn CommandRunner>,
    /// Whether names are answered at the guest's gateway by a resolver of the manager's
    /// (the default; it is what lets a workspace allow host names). Off, the guest asks
    /// the host's name servers itself and an allowlist may name addresses only.
    pub resolver: bool,
}

/// Whether sandboxes get a network (a namespace of their own with a tap, NATed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetnsChoice {
    /// No network device at all (the agent is reached over vsock either way).
    #[default]
    Off,
    /// When this host can: root, `ip`, `/dev/net/tun` (NAT also needs `iptables`).
    /// Otherwise off, and [`DriverInfo::notes`] says why.
    Auto,
    /// Always, without checking the host (for tests with a scripted command runner).
    On,
}

impl FirecrackerConfig {
    pub fn new(
        binary: impl Into<PathBuf>,
        images: Arc<dyn ImageResolver>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            binary: binary.into(),
            images,
            data_dir: data_dir.into(),
            jailer: None,
            boot_args: DEFAULT_BOOT_ARGS.into(),
            log_level: LogLevel::Warning,
            metrics: false,
            track_dirty_pages: false,
            socket_timeout: Duration::from_secs(10),
            api_timeout: Duration::from_secs(30),
            notes: vec![],
            netns: NetnsChoice::Off,
            resolver: true,
            net_runner: Arc::new(SystemRunner),
        }
    }
}

impl fmt::Debug for FirecrackerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirecrackerConfig")
            .field("binary", &self.binary)
            .field("data_dir", &self.data_dir)
            .field("jailer", &self.jailer)
            .field("boot_args", &self.boot_args)
            .field("metrics", &self.metrics)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

pub struct FirecrackerDriver {
    pub(super) config: FirecrackerConfig,
    pub(super) sandboxes_dir: PathBuf,
    /// Sandbox networks, when [`FirecrackerConfig::netns`] asks for them and the host can.
    pub(super) net: Option<NetnsManager>,
    /// The host-service forwards of running sandboxes.
    gateway: net::GatewayServices,
    /// What `atelier system` should know beyond the configured notes.
    notes: Vec<String>,
}

impl FirecrackerDriver {
    pub fn new(mut config: FirecrackerConfig) -> Result<Self, VmmError> {
        let unavailable = |reason: String| VmmError::NotAvailable {
            driver: DriverKind::Firecracker,
            reason,
        };
        if let Some(j) = &config.jailer {
            // The jailer wants an absolute exec file, named like Firecracker, and names the
            // chroot after it; resolve symlinks so our idea of the chroot matches.
            let resolved = super::find_binary(&config.binary)
                .and_then(|p| p.canonicalize().ok())
                .ok_or_else(|| {
                    unavailable(format!(
                        "the Firecracker binary {} was not found",
                        config.binary.display()
                    ))
                })?;
            let name = resolved
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.contains("firecracker") {
                return Err(unavailable(format!(
                    "the jailer only runs executables whose name contains \"firecracker\" \
                     ({} does not)",
                    resolved.display()
                )));
            }
            if !matches!(j.cgroup_version, 1 | 2) {
                return Err(unavailable(format!(
                    "the jailer knows cgroup versions 1 and 2, not {}",
                    j.cgroup_version
                )));
            }
            config.binary = resolved;
        }
        let sandboxes_dir = config.data_dir.join("sandboxes");
        std::fs::create_dir_all(&sandboxes_dir).map_err(VmmError::io(format!(
            "creating {}",
            sandboxes_dir.display()
        )))?;
        let mut notes = vec![];
        let net = network_manager(&config, &mut notes);
        notes.push(if config.jailer.is_some() {
            "firecracker: memory snapshots: clones resume the snapshot's memory (the jailer \
             gives every sandbox the same paths, which the snapshot records)"
                .to_owned()
        } else {
            "firecracker: prebuilds are disk-only and their clones cold-boot: a memory \
             snapshot records the path of its disk, which Firecracker cannot override, and \
             only the jailer makes that path the same for every sandbox"
                .to_owned()
        });
        Ok(Self {
            config,
            sandboxes_dir,
            net,
            gateway: Default::default(),
            notes,
        })
    }

    pub fn config(&self) -> &FirecrackerConfig {
        &self.config
    }

    /// Whether sandboxes get a network namespace and a network device.
    pub fn has_network(&self) -> bool {
        self.net.is_some()
    }

    /// Starts the VMM in a session of its own (and in the network namespace `net`, when
    /// given), stdio to the console log.
    fn spawn(
        &self,
        id: &SandboxId,
        paths: &SandboxPaths,
        net: Option<&SandboxNet>,
    ) -> Result<(u32, Option<u64>), VmmError> {
        let netns = net.map(|n| n.netns_path.as_path());
        let (program, args) = self.command_line_in(id, paths, netns)?;
        // Without the jailer, the child joins the namespace itself.
        let join = match (netns, &self.config.jailer) {
            (Some(ns), None) => Some(ns),
            _ => None,
        };
        let console = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&paths.console_log)
            .map_err(VmmError::io(format!(
                "opening {}",
                paths.console_log.display()
            )))?;
        let console_err = console
            .try_clone()
            .map_err(VmmError::io("duplicating the console handle"))?;
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .current_dir(&paths.dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err);
        let netns_file = process::detach_into_netns(&mut cmd, join)
            .map_err(VmmError::io("opening the sandbox's network namespace"))?;
        let spawned = spawn_retrying(&mut cmd);
        drop(netns_file);
        let mut child = spawned.map_err(VmmError::io(format!("starting {}", program.display())))?;
        let pid = child.id();
        let pid_start = process::start_time(pid);
        // Reap it if it exits while we run; after a manager restart, init does.
        std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || child.wait())
            .map_err(VmmError::io("starting the reaper thread"))?;
        Ok((pid, pid_start))
    }

    pub(super) fn log_tail(&self, paths: &SandboxPaths) -> String {
        let mut out = guest::console_tail(&paths.console_log, CONSOLE_TAIL_LINES);
        let fc = guest::console_tail(&paths.firecracker_log, FIRECRACKER_LOG_TAIL_LINES);
        if !fc.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str("-- firecracker.log --\n");
            out.push_str(&fc);
        }
        out
    }

    /// Stops every process of the sandbox: the recorded one (and its session), and any
    /// other that still uses its directory or jail (e.g. started just before a crash).
    pub(super) async fn kill_everything_of(&self, id: &SandboxId, runtime: Option<&Runtime>) {
        let paths = self.paths(id);
        let mut dirs = vec![paths.dir.as_path()];
        dirs.extend(paths.jail.as_deref());
        process::stop_sandbox_processes(runtime, &dirs, STOP_GRACE).await;
        if let Some(jail) = &paths.jail {
            let me = std::process::id();
            for pid in processes_in_jail(jail, id).into_iter().filter(|p| *p != me) {
                process::terminate_session_of(pid, Duration::from_secs(2)).await;
            }
        }
    }

    pub(super) fn client_for(&self, runtime: &Runtime) -> Result<FirecrackerClient, VmmError> {
        Ok(FirecrackerClient::new(api_socket_of(runtime)?).with_timeout(self.config.api_timeout))
    }

    fn require_alive(&self, runtime: &Runtime, operation: &str) -> Result<(), VmmError> {
        if self.is_alive(runtime) {
            Ok(())
        } else {
            Err(VmmError::Io {
                context: format!("{operation} the sandbox"),
                source: io::Error::new(io::ErrorKind::NotFound, "its VM is not running"),
            })
        }
    }
}

fn alive(pid: u32, start: Option<u64>) -> bool {
    start.is_some_and(|s| process::is_same_process(pid, s))
}

impl FirecrackerDriver {
    /// Makes the sandbox's network namespace when it is to have a network device.
    pub(super) fn set_up_network(
        &self,
        id: &SandboxId,
        policy: &atelier_core::NetworkSpec,
        with_network: bool,
    ) -> Result<Option<SandboxNet>, VmmError> {
        if policy.names_hosts() && !self.config.resolver {
            return Err(VmmError::NotAvailable {
                driver: DriverKind::Firecracker,
                reason: "the workspace allows host names, and this driver is set to run no \
                         resolver to learn their addresses; allow addresses or CIDRs"
                    .into(),
            });
        }
        match (&self.net, with_network) {
            (Some(m), true) => {
                let net = m.setup(id, policy)?;
                if let Err(e) = self.gateway.open(m, id, policy) {
                    let _ = m.teardown(id);
                    return Err(e);
                }
                Ok(Some(net))
            }
            (None, true) => Err(VmmError::NotAvailable {
                driver: DriverKind::Firecracker,
                reason: "this sandbox needs a network namespace, and this driver makes none \
                         (it needs root, ip and /dev/net/tun)"
                    .into(),
            }),
            (_, false) => Ok(None),
        }
    }

    /// Removes the sandbox's network namespace, if it has one; idempotent.
    pub(super) fn tear_down_network(&self, id: &SandboxId) -> Result<(), VmmError> {
        self.gateway.close(id);
        match &self.net {
            Some(m) => m.teardown(id),
            None => Ok(()),
        }
    }

    /// Boots `spec` from `artifacts` (its disk: the sandbox's own copy of
    /// `artifacts.rootfs`, made if missing).
    pub(super) async fn boot(
        &self,
        spec: &SandboxSpec,
        artifacts: &BootArtifacts,
    ) -> Result<Runtime, VmmError> {
        let paths = self.paths(&spec.id);
        self.check_socket_paths(&paths)?;
        let plan = self.plan_with(spec, artifacts, &paths, self.net.is_some())?;
        let net = self.set_up_network(&spec.id, &spec.network, plan.network.is_some())?;
        let launched = async {
            let guest_network = net
                .as_ref()
                .and(self.net.as_ref())
                .map(|m| m.guest_network());
            let record = LaunchRecord {
                plan: plan.clone(),
                kernel: artifacts.vmlinux.clone(),
                initramfs: artifacts.initramfs.clone(),
            };
            let (config, spec2, artifacts2, paths2) = (
                self.config.clone(),
                spec.clone(),
                artifacts.clone(),
                paths.clone(),
            );
            blocking(move || {
                prepare(&config, &spec2, &artifacts2, &paths2, guest_network)?;
                record.write(&paths2.launch_record)
            })
            .await?;
            let vmm = self.start_vmm(&spec.id, &paths, net.as_ref()).await?;
            let configured = configure(&vmm.client, &boot_calls(&plan)).await;
            self.finish_start(vmm, configured, &paths).await
        }
        .await;
        if launched.is_err() {
            if let Err(e) = self.tear_down_network(&spec.id) {
                tracing::warn!(sandbox = %spec.id, error = %e, "could not remove the network of a failed launch");
            }
        }
        launched
    }

    /// Spawns the VMM and waits for its API socket.
    pub(super) async fn start_vmm(
        &self,
        id: &SandboxId,
        paths: &SandboxPaths,
        net: Option<&SandboxNet>,
    ) -> Result<StartedVmm, VmmError> {
        let (pid, pid_start) = self.spawn(id, paths, net)?;
        let client =
            FirecrackerClient::new(&paths.api_socket).with_timeout(self.config.api_timeout);
        let vmm = StartedVmm {
            pid,
            pid_start,
            client,
        };
        let waited = vmm
            .client
            .wait_for_socket(self.config.socket_timeout, || alive(pid, pid_start))
            .await
            .map_err(VmmError::from);
        match waited {
            Ok(()) => Ok(vmm),
            Err(e) => Err(self.abort_vmm(&vmm, e, paths).await),
        }
    }

    /// The runtime of a VMM whose configuration went well; else stops it and explains.
    pub(super) async fn finish_start(
        &self,
        vmm: StartedVmm,
        configured: Result<(), VmmError>,
        paths: &SandboxPaths,
    ) -> Result<Runtime, VmmError> {
        if let Err(e) = configured {
            return Err(self.abort_vmm(&vmm, e, paths).await);
        }
        Ok(Runtime {
            agent: AgentAddr::HybridVsock {
                uds: paths.vsock_socket.clone(),
                port: GUEST_AGENT_PORT,
            }
            .to_string(),
            pid: Some(vmm.pid),
            pid_start: vmm.pid_start,
            dir: paths.dir.clone(),
        })
    }

    /// Stops a VMM that failed to start, and returns the error that best explains it.
    async fn abort_vmm(&self, vmm: &StartedVmm, e: VmmError, paths: &SandboxPaths) -> VmmError {
        let was_alive = alive(vmm.pid, vmm.pid_start);
        if was_alive {
            process::terminate_session(vmm.pid, STOP_GRACE).await;
        } else {
            // Give the console a moment to receive the VMM's last words.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A refusal is reported as such; anything else after the VMM died is the VMM's
        // failure, best explained by its output.
        match e {
            e @ VmmError::Firecracker { .. } => e,
            _ if !was_alive => VmmError::ExitedEarly {
                log_tail: self.log_tail(paths),
            },
            e => e,
        }
    }

    /// Polls the agent's health through `client` until it answers, the VM dies, or
    /// `within` passes. A refusal of the token (401) ends the wait at once with
    /// `Ok(false)`.
    pub(super) async fn wait_health(
        &self,
        runtime: &Runtime,
        paths: &SandboxPaths,
        client: &AgentClient,
        within: Duration,
        started: Instant,
    ) -> Result<bool, VmmError> {
        loop {
            if !self.is_alive(runtime) {
                return Err(VmmError::ExitedEarly {
                    log_tail: self.log_tail(paths),
                });
            }
            let left = within.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(VmmError::BootTimeout {
                    waited: within,
                    reason: "no answer from the agent".into(),
                    log_tail: self.log_tail(paths),
                });
            }
            match client
                .wait_healthy(left.min(Duration::from_millis(500)))
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if e.status() == Some(401) => return Ok(false),
                Err(e) if started.elapsed() >= within => {
                    return Err(VmmError::BootTimeout {
                        waited: within,
                        reason: e.to_string(),
                        log_tail: self.log_tail(paths),
                    })
                }
                // Another answer (or a garbled one) from a live agent: retry, not in a spin.
                Err(
                    atelier_agent_client::Error::Agent { .. }
                    | atelier_agent_client::Error::Decode(_),
                ) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => {}
            }
        }
    }
}

/// A VMM process whose API socket answers.
pub(super) struct StartedVmm {
    pub pid: u32,
    pub pid_start: Option<u64>,
    pub client: FirecrackerClient,
}

/// How a running VM was configured (`launch.json` in its directory): what a snapshot of
/// it must record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub plan: BootPlan,
    /// The kernel and initramfs it booted, on the host.
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl LaunchRecord {
    pub fn write(&self, path: &Path) -> Result<(), VmmError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| VmmError::Corrupt(e.to_string()))?;
        std::fs::write(path, json).map_err(VmmError::io(format!("writing {}", path.display())))
    }

    pub fn read(path: &Path) -> Result<Self, VmmError> {
        let bytes = std::fs::read(path).map_err(VmmError::io(format!(
            "reading {} (a sandbox started before snapshots were supported must be \
             restarted first)",
            path.display()
        )))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| VmmError::Corrupt(format!("{}: {e}", path.display())))
    }
}

/// The network manager a configuration asks for, if this host can run it; `notes` learn
/// what was decided and why.
fn network_manager(config: &FirecrackerConfig, notes: &mut Vec<String>) -> Option<NetnsManager> {
    let (nat, reason) = match config.netns {
        NetnsChoice::Off => {
            notes.push(
                "firecracker: sandboxes have no network device (per-sandbox network \
                 namespaces are off)"
                    .into(),
            );
            return None;
        }
        NetnsChoice::On => (true, None),
        NetnsChoice::Auto => {
            let found = net::availability(config.net_runner.as_ref());
            if let Err(why) = found.netns {
                notes.push(format!(
                    "firecracker: sandboxes have no network device: {why}"
                ));
                return None;
            }
            (found.nat.is_ok(), found.nat.err())
        }
    };
    let mut net = NetnsConfig::new(config.data_dir.join("net"));
    net.nat = nat;
    net.tap_owner = config.jailer.as_ref().map(|j| (j.uid, j.gid));
    // Names are answered at the guest's gateway by a resolver of the manager's, which
    // asks these from the host: the guest reaches no name server of its own, and a
    // workspace's allowed host names open their addresses as they resolve.
    net.resolver = config.resolver;
    net.dns = if config.resolver {
        net::resolver_upstreams()
    } else {
        net::host_dns()
    };
    if config.netns == NetnsChoice::On {
        // A scripted runner: nothing on the host to share the address pool with.
        net.slots_dir = net.state_dir.join("slots");
    }
    notes.push(match reason {
        None => format!(
            "firecracker: every sandbox has a network namespace of its own (guest {} behind \
             NAT; {} {})",
            net::GUEST_ADDRESS,
            if config.resolver {
                "names answered at its gateway by the manager, asking"
            } else {
                "name servers"
            },
            net.dns.join(", ")
        ),
        Some(why) => format!(
            "firecracker: every sandbox has a network namespace of its own, without a way \
             out: {why}"
        ),
    });
    if nat && config.netns == NetnsChoice::Auto {
        net::enable_host_forwarding(config.net_runner.as_ref(), "firecracker", notes);
    }
    Some(NetnsManager::new(net, config.net_runner.clone()))
}

#[async_trait]
impl Driver for FirecrackerDriver {
    fn sandboxes_dir(&self) -> &Path {
        &self.sandboxes_dir
    }

    fn info(&self) -> DriverInfo {
        let mut notes = self.config.notes.clone();
        notes.extend(self.notes.iter().cloned());
        DriverInfo {
            kind: DriverKind::Firecracker,
            isolated: true,
            can_pause: true,
            notes,
        }
    }

    fn planned_resources(&self, id: &SandboxId) -> Vec<(String, String)> {
        let paths = self.paths(id);
        let mut out = vec![("dir".to_owned(), paths.dir.display().to_string())];
        if let Some(jail) = &paths.jail {
            out.push(("dir".into(), jail.display().to_string()));
        }
        out.push(("socket".into(), paths.api_socket.display().to_string()));
        out.push(("socket".into(), paths.vsock_socket.display().to_string()));
        if let Some(cg) = self
            .config
            .jailer
            .as_ref()
            .and_then(|j| j.cgroup_dir(&self.config.binary, id))
        {
            out.push(("cgroup".into(), cg.display().to_string()));
        }
        if let Some(m) = &self.net {
            out.extend(m.planned_resources(id));
        }
        out
    }

    async fn launch(&self, spec: &SandboxSpec) -> Result<Runtime, VmmError> {
        let artifacts = self.config.images.resolve(&spec.image)?;
        self.boot(spec, &artifacts).await
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
        let paths = self.paths(&spec.id);
        let client = self.agent(runtime, &spec.agent_token)?;
        if self
            .wait_health(runtime, &paths, &client, within, started)
            .await?
        {
            Ok(())
        } else {
            Err(VmmError::BootTimeout {
                waited: started.elapsed(),
                reason: "the agent refuses the sandbox's token".into(),
                log_tail: self.log_tail(&paths),
            })
        }
    }

    async fn stop(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError> {
        // SendCtrlAltDel needs guest support and may be ignored; the disk is flushed by
        // the guest's own writes (Firecracker writes through to the host page cache).
        self.kill_everything_of(id, runtime).await;
        let (config, paths, sid) = (self.config.clone(), self.paths(id), id.clone());
        blocking(move || clean_up_stopped(&config, &paths, &sid)).await?;
        // A stopped sandbox needs no network; the next launch makes it again.
        self.tear_down_network(id)
    }

    async fn adopt(&self, spec: &SandboxSpec, _runtime: &Runtime) -> Result<(), VmmError> {
        // The forwards lived in the previous manager process; the namespace outlived it.
        match &self.net {
            Some(m) if m.netns_path(&spec.id).exists() => {
                self.gateway.open(m, &spec.id, &spec.network)
            }
            _ => Ok(()),
        }
    }

    async fn destroy(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError> {
        self.kill_everything_of(id, runtime).await;
        let paths = self.paths(id);
        let cgroup = self
            .config
            .jailer
            .as_ref()
            .and_then(|j| j.cgroup_dir(&self.config.binary, id));
        blocking(move || {
            if let Some(jail) = &paths.jail {
                remove_dir_if_present(jail)?;
            }
            if let Some(cg) = cgroup {
                // Only an empty cgroup can be removed; a missing one is fine.
                let _ = std::fs::remove_dir(cg);
            }
            remove_dir_if_present(&paths.dir)
        })
        .await?;
        self.tear_down_network(id)
    }

    async fn pause(&self, runtime: &Runtime) -> Result<(), VmmError> {
        self.require_alive(runtime, "pausing")?;
        Ok(self.client_for(runtime)?.pause().await?)
    }

    async fn resume(&self, runtime: &Runtime) -> Result<(), VmmError> {
        self.require_alive(runtime, "resuming")?;
        Ok(self.client_for(runtime)?.resume().await?)
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

    async fn sweep(&self, keep: &HashSet<SandboxId>) -> Vec<String> {
        let mut removed = vec![];
        let mut ids = vec![];
        if let Ok(entries) = std::fs::read_dir(&self.sandboxes_dir) {
            for entry in entries.flatten() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        // Jails of this Firecracker binary whose name is one of our ids (the chroot base
        // may be shared with other users of the jailer).
        if let Some(j) = &self.config.jailer {
            if let Ok(entries) = std::fs::read_dir(j.jails_dir(&self.config.binary)) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if SandboxId::parse(&name).is_some() && !ids.contains(&name) {
                        ids.push(name);
                    }
                }
            }
        }
        for name in ids {
            let id = SandboxId::from_trusted(name);
            if keep.contains(&id) {
                continue;
            }
            self.kill_everything_of(&id, None).await;
            let paths = self.paths(&id);
            let targets = paths.jail.iter().chain(std::iter::once(&paths.dir));
            for dir in targets {
                if !dir.exists() {
                    continue;
                }
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => removed.push(format!("directory {}", dir.display())),
                    Err(e) => {
                        tracing::warn!(path = %dir.display(), error = %e, "could not remove a leftover")
                    }
                }
            }
            if let Some(cg) = self
                .config
                .jailer
                .as_ref()
                .and_then(|j| j.cgroup_dir(&self.config.binary, &id))
            {
                if std::fs::remove_dir(&cg).is_ok() {
                    removed.push(format!("cgroup {}", cg.display()));
                }
            }
        }
        // Networks of sandboxes that no longer exist (their VMs are gone by now).
        if let Some(m) = &self.net {
            removed.extend(m.sweep(keep));
        }
        removed
    }
}

/// After the VMM is gone: keeps the disk's writes and Firecracker's log, removes the
/// jail, cgroup and sockets.
fn clean_up_stopped(
    config: &FirecrackerConfig,
    paths: &SandboxPaths,
    id: &SandboxId,
) -> Result<(), VmmError> {
    if let (Some(j), Some(jail)) = (&config.jailer, &paths.jail) {
        let (jailed_rootfs, _) = paths.disks();
        // A disk copied (not linked) into the jail holds the sandbox's writes.
        if jailed_rootfs.is_file()
            && paths.dir.is_dir()
            && !disk::same_file(&jailed_rootfs, &paths.rootfs)
        {
            let tmp = guest::tmp_path(&paths.rootfs);
            let _ = std::fs::remove_file(&tmp);
            disk::clone_or_copy(&jailed_rootfs, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &paths.rootfs))
                .map_err(|source| {
                    let _ = std::fs::remove_file(&tmp);
                    VmmError::Io {
                        context: format!(
                            "saving the disk {} back to {}",
                            jailed_rootfs.display(),
                            paths.rootfs.display()
                        ),
                        source,
                    }
                })?;
        }
        if paths.dir.is_dir() && paths.firecracker_log.is_file() {
            let _ = std::fs::copy(&paths.firecracker_log, paths.dir.join("firecracker.log"));
        }
        remove_dir_if_present(jail)?;
        if let Some(cg) = j.cgroup_dir(&config.binary, id) {
            // Only an empty cgroup can be removed; a missing one is fine.
            let _ = std::fs::remove_dir(cg);
        }
    }
    for s in [&paths.api_socket, &paths.vsock_socket] {
        remove_file_if_present(s)?;
    }
    Ok(())
}

/// Runs blocking file work (a disk copy can take a while) off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VmmError> + Send + 'static,
) -> Result<T, VmmError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VmmError::Io {
            context: "a file task of the Firecracker driver failed".into(),
            source: io::Error::other(e.to_string()),
        })?
}

/// Spawns `cmd`, retrying briefly on `ETXTBSY` (the binary was just written, and another
/// thread's fork still held it open for writing).
pub(crate) fn spawn_retrying(cmd: &mut Command) -> io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Processes chrooted into `jail`, or a jailer about to create it for `id`.
fn processes_in_jail(jail: &Path, id: &SandboxId) -> Vec<u32> {
    process::all_pids()
        .into_iter()
        .filter(|pid| {
            let rooted = std::fs::read_link(format!("/proc/{pid}/root"))
                .map(|r| r.starts_with(jail))
                .unwrap_or(false);
            rooted || {
                let args = process::cmdline(*pid);
                args.iter().any(|a| a == "--chroot-base-dir")
                    && args
                        .windows(2)
                        .any(|w| w[0] == "--id" && w[1] == id.as_str())
            }
        })
        .collect()
}
