//! Real coding-agent CLIs from npm, installed once per version into
//! `$HOME/.cache/atelier/<name>-<version>` (each with an env var to put it elsewhere) and
//! reused by later runs, after checking that the binary reports the pinned version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One pinned npm package and the binary it installs.
pub struct NpmTool {
    /// What the cache directory is named after (`opencode` → `opencode-1.18.33`).
    pub name: &'static str,
    /// The package to install (`opencode-ai`, `@openai/codex`, …).
    pub package: &'static str,
    pub version: &'static str,
    /// The binary under `node_modules/.bin`.
    pub bin: &'static str,
    /// The variable naming another cache directory.
    pub cache_env: &'static str,
}

impl NpmTool {
    /// Where the package is (or will be) installed.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if let Ok(d) = std::env::var(self.cache_env) {
            return Some(PathBuf::from(d));
        }
        let home = std::env::var_os("HOME")?;
        Some(
            PathBuf::from(home)
                .join(".cache/atelier")
                .join(format!("{}-{}", self.name, self.version)),
        )
    }

    /// Whether `bin --version` names the pinned version (as a word of its output:
    /// `1.18.33`, `2.1.328 (Claude Code)`, `codex-cli 0.169.0`).
    fn reports_version(&self, bin: &Path) -> Result<(), String> {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .map_err(|e| format!("{} does not run: {e}", bin.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.split_whitespace().any(|w| w == self.version) {
            Ok(())
        } else {
            Err(format!(
                "{} reports version {:?}, not {}",
                self.bin,
                text.trim(),
                self.version
            ))
        }
    }

    /// The pinned binary, installed with npm on first use. Tests run in parallel
    /// processes: a lock beside the cache makes one install while the others wait, so
    /// that none runs a binary npm is still writing ("Text file busy").
    pub fn binary(&self) -> Result<PathBuf, String> {
        let dir = self.cache_dir().ok_or("no HOME to keep the npm cache in")?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", dir.display()));
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        // Released when the file is closed, at the end of this call.
        lock_file
            .lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        let bin = dir.join("node_modules/.bin").join(self.bin);
        if bin.exists() && self.reports_version(&bin).is_ok() {
            return Ok(bin);
        }
        let npm = Command::new("npm")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !npm {
            return Err("npm is not installed".into());
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let spec = format!("{}@{}", self.package, self.version);
        let out = Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&dir)
            .args([&spec, "--no-audit", "--no-fund", "--loglevel=error"])
            .output()
            .map_err(|e| format!("npm install failed to start: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm install {spec} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.reports_version(&bin)?;
        Ok(bin)
    }
}

pub const OPENCODE: NpmTool = NpmTool {
    name: "opencode",
    package: "opencode-ai",
    version: "1.18.33",
    bin: "opencode",
    cache_env: "ATELIER_OPENCODE_CACHE",
};

pub const CLAUDE: NpmTool = NpmTool {
    name: "claude-code",
    package: "@anthropic-ai/claude-code",
    version: "2.1.328",
    bin: "claude",
    cache_env: "ATELIER_CLAUDE_CACHE",
};

pub const CODEX: NpmTool = NpmTool {
    name: "codex",
    package: "@openai/codex",
    version: "0.169.0",
    bin: "codex",
    cache_env: "ATELIER_CODEX_CACHE",
};

pub const GEMINI: NpmTool = NpmTool {
    name: "gemini-cli",
    package: "@google/gemini-cli",
    version: "0.61.0",
    bin: "gemini",
    cache_env: "ATELIER_GEMINI_CACHE",
};
