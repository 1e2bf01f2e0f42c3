//! `<data-dir>/config.toml`: everything that is not a flag. Flags and environment
//! variables win over the file; the file wins over built-in defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub driver: Option<String>,
    /// Seconds a sandbox may take to become ready before it is failed (default 120).
    pub boot_timeout_secs: Option<u64>,
    /// Largest JSON request body, bytes (default 1 MiB).
    pub max_json_bytes: Option<usize>,
    /// Tasks running at once (default 4).
    pub max_running_tasks: Option<usize>,
    /// Largest file upload, bytes (default 256 MiB).
    pub max_file_bytes: Option<usize>,
    /// Seconds between checks of every prebuild against its repos (default 600).
    pub prebuild_check_secs: Option<u64>,
    #[serde(default)]
    pub local: LocalConfig,
    #[serde(default)]
    pub images: ImagesConfig,
    #[serde(default)]
    pub firecracker: FirecrackerFileConfig,
    #[serde(default)]
    pub preview: PreviewFileConfig,
}

/// `[preview]`: where sandbox ports open in a browser.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewFileConfig {
    /// The dashboard's public URL, e.g. `https://example.com` (default: the listen address).
    pub public_url: Option<String>,
    /// Parent domain of preview origins, `<port>-<sandbox>.<domain>` (default `localhost`).
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirecrackerFileConfig {
    /// The `firecracker` binary (default: on PATH).
    pub binary: Option<PathBuf>,
    /// Run every Firecracker through its jailer.
    pub jailer: Option<JailerFileConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailerFileConfig {
    /// The `jailer` binary.
    pub binary: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Where jails are made (default /srv/jailer).
    pub chroot_base: Option<PathBuf>,
    /// A network namespace to put every VM in (e.g. /var/run/netns/atelier).
    pub netns: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Where kernels and images are built and cached (default: the data dir).
    pub cache_dir: Option<PathBuf>,
    /// A static busybox (default /bin/busybox from Debian's busybox-static).
    pub busybox: Option<PathBuf>,
    /// The static atelier-agent put into guests (default: scripts/build-agent.sh's output).
    pub guest_agent: Option<PathBuf>,
    /// A user-supplied kernel instead of Debian's cloud kernel: its bzImage…
    pub kernel_bzimage: Option<PathBuf>,
    /// …and the directory of its modules (`…/lib/modules/<version>`).
    pub kernel_modules: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Path of the `atelier-agent` binary (default: next to `atelier`, then PATH).
    pub agent_binary: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl FileConfig {
    /// Reads `<data_dir>/config.toml`; a missing file is an empty config.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join("config.toml");
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// The default data directory: `$XDG_DATA_HOME/atelier`, else `~/.local/share/atelier`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("atelier");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/atelier")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileConfig::load(dir.path()).unwrap().listen.is_none());
        std::fs::write(
            dir.path().join("config.toml"),
            "listen = \"127.0.0.1:9\"\n[local]\nagent_binary = \"/x\"\n",
        )
        .unwrap();
        let c = FileConfig::load(dir.path()).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(c.local.agent_binary, Some(PathBuf::from("/x")));
        std::fs::write(dir.path().join("config.toml"), "lisen = 1\n").unwrap();
        let e = FileConfig::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
    }

    #[test]
    fn the_jailer_is_configured_in_its_own_section() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "[firecracker]\nbinary = \"/opt/fc/firecracker\"\n[firecracker.jailer]\nbinary = \"/opt/fc/jailer\"\nuid = 900\ngid = 900\nnetns = \"/var/run/netns/atelier\"\n",
        )
        .unwrap();
        let c = FileConfig::load(dir.path()).unwrap();
        let opts = crate::ServeOptions::from_config(dir.path().into(), &c).unwrap();
        let j = opts.jailer.unwrap();
        assert_eq!(
            (j.uid, j.gid, j.binary.as_path()),
            (900, 900, std::path::Path::new("/opt/fc/jailer"))
        );
        assert_eq!(
            j.netns.as_deref(),
            Some(std::path::Path::new("/var/run/netns/atelier"))
        );
        assert_eq!(
            opts.firecracker_binary.as_deref(),
            Some(std::path::Path::new("/opt/fc/firecracker"))
        );
    }
}
