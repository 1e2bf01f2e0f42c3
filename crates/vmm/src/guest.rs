//! The boot contract between a VM driver and the `atelier-agent` in its guest, shared by
//! the QEMU and Firecracker drivers:
//!
//! - the **config disk**: a raw disk of exactly [`GUEST_CONFIG_DISK_BYTES`] holding the
//!   JSON of a [`GuestConfig`] padded with NULs, which the agent reads as the VM's init;
//! - the **identity** a snapshot clone is given when it wakes (host name, token, clock,
//!   entropy, machine id), so two clones are never the same machine;
//! - the **console tail** a failed boot reports.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use atelier_agent_client::AgentClient;
use atelier_proto::{to_hex, GuestConfig, GuestNetwork, Identity, GUEST_CONFIG_DISK_BYTES};

use crate::driver::{SandboxSpec, VmmError};

/// The configuration the guest of `spec` boots with: its name, token, the address its
/// agent listens on (`listen`, as [`atelier_proto::AgentAddr`] writes it), the host's
/// clock, its network and environment.
pub fn guest_config(
    spec: &SandboxSpec,
    listen: String,
    network: Option<GuestNetwork>,
) -> GuestConfig {
    GuestConfig {
        hostname: spec.name.clone(),
        token: spec.agent_token.clone(),
        listen,
        clock_epoch_ms: crate::now_ms(),
        network,
        env: spec.env.clone(),
        mounts: vec![],
    }
}

/// The config disk's bytes: the JSON of `config`, then NULs up to exactly
/// [`GUEST_CONFIG_DISK_BYTES`]. A JSON of exactly that size still fits: the agent reads
/// up to the first NUL or the end of the disk. Anything larger is refused.
pub fn encode_config_disk(config: &GuestConfig) -> Result<Vec<u8>, VmmError> {
    let mut bytes = serde_json::to_vec(config).map_err(|e| VmmError::Io {
        context: "encoding the guest configuration".into(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    if bytes.len() > GUEST_CONFIG_DISK_BYTES {
        return Err(VmmError::GuestConfigTooLarge { bytes: bytes.len() });
    }
    bytes.resize(GUEST_CONFIG_DISK_BYTES, 0);
    Ok(bytes)
}

/// Writes the config disk at `path` atomically (a temporary file renamed over it), mode
/// 0600: it holds the agent's token and the sandbox's environment.
pub fn write_config_disk(path: &Path, config: &GuestConfig) -> Result<(), VmmError> {
    let bytes = encode_config_disk(config)?;
    let tmp = tmp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        VmmError::Io {
            context: format!("writing {}", path.display()),
            source,
        }
    })
}

/// A fresh identity for a clone named `hostname` that will answer to `token`.
pub fn fresh_identity(hostname: &str, token: &str) -> Result<Identity, VmmError> {
    let mut machine_id = host_random(16)?;
    machine_id[0] |= 1; // never all zero
    Ok(Identity {
        hostname: hostname.to_owned(),
        token: token.to_owned(),
        epoch_ms: crate::now_ms(),
        entropy: to_hex(&host_random(64)?),
        machine_id: to_hex(&machine_id),
    })
}

/// Gives the restored agent behind `old_client` (which answers to the snapshot's token)
/// the identity of `spec`, then checks it answers to `spec`'s own token. An identity
/// whose answer was lost but which took effect counts as applied.
pub async fn apply_identity(old_client: &AgentClient, spec: &SandboxSpec) -> Result<(), VmmError> {
    let identity = fresh_identity(&spec.name, &spec.agent_token)?;
    let applied = old_client.set_identity(&identity).await;
    let new_client = old_client.with_token(&spec.agent_token);
    if let Err(e) = applied {
        // The answer may be what got lost: the token swap comes last.
        if new_client.health().await.is_err() {
            return Err(VmmError::Snapshot(format!(
                "the restored agent refused its identity: {e}"
            )));
        }
    }
    new_client
        .health()
        .await
        .map(|_| ())
        .map_err(|e| VmmError::Snapshot(format!("the clone does not answer to its new token: {e}")))
}

/// `n` bytes from the host's CSPRNG.
pub fn host_random(n: usize) -> Result<Vec<u8>, VmmError> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(VmmError::io("reading /dev/urandom"))?;
    Ok(buf)
}

/// The last `n` non-blank lines of a console or VMM log, reading at most its last
/// 64 KiB (a guest can write a lot); empty when the file cannot be read.
pub fn console_tail(path: &Path, n: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(WINDOW))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.take(WINDOW).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `<path>.tmp`, next to `path`: where a file is written before it is renamed into place.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    fn config(env: BTreeMap<String, String>) -> GuestConfig {
        GuestConfig {
            hostname: "box".into(),
            token: "secret".into(),
            listen: "vsock:4294967295:1024".into(),
            clock_epoch_ms: 1_700_000_000_000,
            network: None,
            env,
            mounts: vec![],
        }
    }

    #[test]
    fn config_disk_is_json_then_nul_padding_of_the_exact_size() {
        let c = config(BTreeMap::new());
        let bytes = encode_config_disk(&c).unwrap();
        assert_eq!(bytes.len(), GUEST_CONFIG_DISK_BYTES);
        let end = bytes.iter().position(|b| *b == 0).unwrap();
        assert!(
            bytes[end..].iter().all(|b| *b == 0),
            "only NULs after the JSON"
        );
        let back: GuestConfig = serde_json::from_slice(&bytes[..end]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn config_disk_takes_exactly_its_size_and_refuses_one_byte_more() {
        let base = serde_json::to_vec(&config(BTreeMap::new())).unwrap().len();
        let overhead = r#"{"K":""}"#.len() - 2; // `{}` is already counted in `base`
        let filling = |extra: usize| {
            let mut env = BTreeMap::new();
            env.insert(
                "K".into(),
                "y".repeat(GUEST_CONFIG_DISK_BYTES - base - overhead + extra),
            );
            config(env)
        };
        // Exactly full fits: no terminator is needed, the disk ends there.
        let full = filling(0);
        let bytes = encode_config_disk(&full).unwrap();
        assert_eq!(bytes.len(), GUEST_CONFIG_DISK_BYTES);
        assert_eq!(serde_json::from_slice::<GuestConfig>(&bytes).unwrap(), full);

        let e = encode_config_disk(&filling(1)).unwrap_err();
        assert!(
            matches!(e, VmmError::GuestConfigTooLarge { bytes } if bytes == GUEST_CONFIG_DISK_BYTES + 1),
            "{e}"
        );
        assert!(e.to_string().contains("more than the 65536"), "{e}");
    }

    #[test]
    fn config_disk_file_is_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.img");
        std::fs::write(&p, vec![b'x'; 2 * GUEST_CONFIG_DISK_BYTES]).unwrap();
        write_config_disk(&p, &config(BTreeMap::new())).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.len(), GUEST_CONFIG_DISK_BYTES as u64);
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn identities_are_distinct_valid_and_never_all_zero() {
        let token = "t".repeat(64);
        let a = fresh_identity("clone-a", &token).unwrap();
        let b = fresh_identity("clone-b", &token).unwrap();
        a.validate().unwrap();
        b.validate().unwrap();
        assert_ne!(a.entropy, b.entropy);
        assert_ne!(a.machine_id, b.machine_id);
        assert_eq!(a.machine_id.len(), 32);
        assert_eq!(a.entropy.len(), 128);
        assert_ne!(a.machine_id, "0".repeat(32));
    }

    #[test]
    fn console_tail_keeps_the_last_non_blank_lines_of_a_bounded_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        assert_eq!(console_tail(&p, 5), "", "a missing log has no tail");
        let mut text = "x".repeat(200 * 1024);
        text.push('\n');
        for i in 0..30 {
            text.push_str(&format!("line {i}\n\n"));
        }
        std::fs::write(&p, text).unwrap();
        let tail = console_tail(&p, 3);
        assert_eq!(tail, "line 27\nline 28\nline 29");
    }
}
