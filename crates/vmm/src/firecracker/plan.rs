//! The boot plan of a Firecracker sandbox: every setting of its API configuration, with
//! paths as Firecracker sees them (inside the jail under the jailer), the requests that
//! apply it, and the command line that starts its VMM. Pure: it touches nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use atelier_core::SandboxId;
use atelier_proto::{AgentAddr, GuestConfig, GuestNetwork, GUEST_AGENT_PORT};
use serde::{Deserialize, Serialize};

use super::api::{
    ActionType, BootSource, Drive, EntropyDevice, LogLevel, Logger, MachineConfiguration, Metrics,
    NetworkInterface, Vsock,
};
use super::calls::{self, ApiCall};
use super::client::FirecrackerClient;
use super::driver::FirecrackerDriver;
use super::layout::SandboxPaths;
use crate::driver::{SandboxSpec, VmmError};
use crate::guest;
use crate::image::BootArtifacts;
use crate::net;

/// Kernel command line: serial console, reboot/panic make Firecracker exit.
pub const DEFAULT_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off quiet";
/// The guest's vsock context id (any value ≥ 3; each VM has its own device).
pub const GUEST_CID: u32 = 3;
/// `VMADDR_CID_ANY`: the agent listens on every guest CID.
const VSOCK_CID_ANY: u32 = u32::MAX;
/// The VM's network interface: a tap (in the sandbox's network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPlan {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
}

/// Everything the API configuration of one boot depends on, with paths as Firecracker
/// sees them. A memory snapshot records these paths, so it is kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPlan {
    pub kernel: String,
    pub initrd: Option<String>,
    pub boot_args: String,
    pub rootfs: String,
    pub config_disk: String,
    pub vcpus: u32,
    pub mem_mib: u32,
    pub smt: bool,
    pub track_dirty_pages: bool,
    pub vsock_uds: String,
    pub guest_cid: u32,
    pub log_path: String,
    pub log_level: LogLevel,
    pub metrics_path: Option<String>,
    pub entropy: bool,
    /// `None`: no network device.
    #[serde(default)]
    pub network: Option<NicPlan>,
}

/// The requests that set up Firecracker's own logging (and metrics, when enabled): the
/// only ones allowed before a snapshot is loaded.
pub fn logging_calls(plan: &BootPlan) -> Vec<ApiCall> {
    let mut out = vec![calls::put_logger(&Logger {
        log_path: Some(plan.log_path.clone()),
        level: Some(plan.log_level),
        show_level: Some(true),
        show_log_origin: Some(false),
        module: None,
    })];
    if let Some(m) = &plan.metrics_path {
        out.push(calls::put_metrics(&Metrics {
            metrics_path: m.clone(),
            emit_id: None,
            properties: None,
        }));
    }
    out
}

/// The API requests that configure and start a VM, in the order they are sent: logger,
/// metrics (when enabled), boot source, root disk (`vda`, read-write), config disk (`vdb`,
/// read-only), machine, network interface (when there is one), vsock, entropy,
/// `InstanceStart`.
pub fn boot_calls(plan: &BootPlan) -> Vec<ApiCall> {
    let mut out = logging_calls(plan);
    out.push(calls::put_boot_source(&BootSource {
        kernel_image_path: plan.kernel.clone(),
        boot_args: Some(plan.boot_args.clone()),
        initrd_path: plan.initrd.clone(),
    }));
    out.push(calls::put_drive(&Drive::virtio_block(
        "rootfs",
        &plan.rootfs,
        true,
        false,
    )));
    out.push(calls::put_drive(&Drive::virtio_block(
        "config",
        &plan.config_disk,
        false,
        true,
    )));
    out.push(calls::put_machine_config(&MachineConfiguration {
        vcpu_count: plan.vcpus,
        mem_size_mib: plan.mem_mib,
        smt: Some(plan.smt),
        track_dirty_pages: Some(plan.track_dirty_pages),
        cpu_template: None,
        huge_pages: None,
    }));
    if let Some(nic) = &plan.network {
        out.push(calls::put_network_interface(&NetworkInterface {
            iface_id: nic.iface_id.clone(),
            host_dev_name: nic.host_dev_name.clone(),
            guest_mac: Some(nic.guest_mac.clone()),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }));
    }
    out.push(calls::put_vsock(&Vsock {
        guest_cid: plan.guest_cid,
        uds_path: plan.vsock_uds.clone(),
        vsock_id: None,
    }));
    if plan.entropy {
        out.push(calls::put_entropy(&EntropyDevice::default()));
    }
    out.push(calls::action(ActionType::InstanceStart));
    out
}

/// Sends `calls` in order, stopping at the first refusal (whose `fault_message` the
/// error carries as [`VmmError::Firecracker`]).
pub async fn configure(client: &FirecrackerClient, calls: &[ApiCall]) -> Result<(), VmmError> {
    for call in calls {
        tracing::debug!(request = %call.describe(), "Firecracker API");
        client.send(call).await?;
    }
    Ok(())
}

/// What the guest reads from its config disk (no network device).
pub fn guest_config(spec: &SandboxSpec) -> GuestConfig {
    guest_config_with(spec, None)
}

/// What the guest reads from its config disk, with the address of its network device:
/// its agent listens on vsock, on every guest CID.
pub fn guest_config_with(spec: &SandboxSpec, network: Option<GuestNetwork>) -> GuestConfig {
    let listen = AgentAddr::Vsock {
        cid: VSOCK_CID_ANY,
        port: GUEST_AGENT_PORT,
    };
    guest::guest_config(spec, listen.to_string(), network)
}

impl FirecrackerDriver {
    /// The configuration of the boot of `spec` (resolves its image; touches nothing).
    pub fn plan(&self, spec: &SandboxSpec) -> Result<BootPlan, VmmError> {
        let artifacts = self.config.images.resolve(&spec.image)?;
        self.plan_with(spec, &artifacts, &self.paths(&spec.id), self.net.is_some())
    }

    pub(super) fn plan_with(
        &self,
        spec: &SandboxSpec,
        artifacts: &BootArtifacts,
        paths: &SandboxPaths,
        with_network: bool,
    ) -> Result<BootPlan, VmmError> {
        let (kernel, initrd) = paths.boot_files(artifacts);
        let (rootfs, config_disk) = paths.disks();
        Ok(BootPlan {
            kernel: paths.visible(&kernel)?,
            initrd: Some(paths.visible(&initrd)?),
            boot_args: self.config.boot_args.clone(),
            rootfs: paths.visible(&rootfs)?,
            config_disk: paths.visible(&config_disk)?,
            vcpus: spec.resources.vcpus,
            mem_mib: spec.resources.memory_mib,
            smt: false,
            track_dirty_pages: self.config.track_dirty_pages,
            vsock_uds: paths.visible(&paths.vsock_socket)?,
            guest_cid: GUEST_CID,
            log_path: paths.visible(&paths.firecracker_log)?,
            log_level: self.config.log_level,
            metrics_path: if self.config.metrics {
                Some(paths.visible(&paths.metrics)?)
            } else {
                None
            },
            entropy: true,
            network: with_network.then(|| NicPlan {
                iface_id: "eth0".into(),
                host_dev_name: net::TAP_NAME.into(),
                guest_mac: net::GUEST_MAC.into(),
            }),
        })
    }

    /// The program and arguments that start the sandbox `id`'s VMM.
    pub fn command_line(
        &self,
        id: &SandboxId,
        paths: &SandboxPaths,
    ) -> Result<(PathBuf, Vec<OsString>), VmmError> {
        self.command_line_in(id, paths, None)
    }

    /// [`Self::command_line`] for a VMM that runs in the network namespace `netns` (the
    /// jailer joins it; without the jailer the driver does, just before exec).
    pub fn command_line_in(
        &self,
        id: &SandboxId,
        paths: &SandboxPaths,
        netns: Option<&Path>,
    ) -> Result<(PathBuf, Vec<OsString>), VmmError> {
        let api_sock: OsString = paths.visible(&paths.api_socket)?.into();
        match &self.config.jailer {
            Some(j) => {
                // The jailer passes `--id` on to Firecracker itself.
                let fc_args = vec!["--api-sock".into(), api_sock];
                Ok((
                    j.binary.clone(),
                    j.argv_in(&self.config.binary, id, netns, &fc_args),
                ))
            }
            None => Ok((
                self.config.binary.clone(),
                vec![
                    "--api-sock".into(),
                    api_sock,
                    "--id".into(),
                    id.as_str().into(),
                ],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_listens_on_vsock_on_every_cid_with_its_network() {
        let spec = SandboxSpec {
            id: SandboxId::from_trusted("sabc".into()),
            name: "web".into(),
            resources: Default::default(),
            image: "base".into(),
            agent_token: "t".repeat(32),
            env: [("K".to_owned(), "v".to_owned())].into(),
            restore_token: None,
            network: Default::default(),
            shared_folders: vec![],
        };
        let network = GuestNetwork {
            address: "172.16.0.2/30".into(),
            gateway: "172.16.0.1".into(),
            dns: vec![],
        };
        let c = guest_config_with(&spec, Some(network.clone()));
        assert_eq!(c.listen, "vsock:4294967295:1024");
        assert_eq!((c.hostname.as_str(), c.env["K"].as_str()), ("web", "v"));
        assert_eq!(c.network, Some(network));
        assert!(guest_config(&spec).network.is_none());
    }
}
