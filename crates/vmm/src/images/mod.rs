//! Images: the guest kernel, the initramfs and root filesystems, built on the host
//! without Docker, content-addressed by their recipe and inputs, cached, and rebuilt only
//! when the recipe or an input changes.

pub mod initramfs;
pub mod kernel;
pub mod rootfs;
pub mod vmlinux;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::driver::{DriverKind, VmmError};
use crate::image::{BootArtifacts, ImageResolver};
use atelier_core::image::{extension_base, ImageExtension};
use kernel::Kernel;

/// Images Atelier knows how to build.
pub const RECIPES: &[&str] = &["minimal", "dev"];
/// Bumped whenever a recipe's steps change, so old builds are not reused.
const RECIPE_VERSION: &str = "2";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("unknown image {0:?} (known: minimal, dev, and the dev-ext-… of workspaces' image extensions)")]
    Unknown(String),
    #[error("kernel: {0}")]
    Kernel(String),
    #[error("{tool} failed: {stderr}")]
    Tool { tool: String, stderr: String },
    #[error("{0}")]
    Input(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ImageError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<ImageError> for VmmError {
    fn from(e: ImageError) -> Self {
        VmmError::NotAvailable {
            driver: DriverKind::Qemu,
            reason: format!("image: {e}"),
        }
    }
}

/// Where the inputs of image builds come from.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// A static busybox (default `/bin/busybox`, from Debian's `busybox-static`).
    pub busybox: Option<PathBuf>,
    /// The static `atelier-agent` (default: built by `scripts/build-agent.sh`, found
    /// relative to the running executable, or `ATELIER_GUEST_AGENT`).
    pub guest_agent: Option<PathBuf>,
    /// A user-supplied kernel (bzImage + modules dir) instead of Debian's cloud kernel.
    pub kernel: Option<(PathBuf, PathBuf)>,
}

/// One built image, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    /// Hash of the recipe and every input; the build directory is named after it.
    pub id: String,
    pub kernel_version: String,
    pub rootfs_bytes: u64,
    pub built_at_ms: i64,
    pub dir: PathBuf,
    /// What the image holds, with versions (the `dev` image's toolset and CLIs).
    #[serde(default)]
    pub contents: Vec<ImageContent>,
}

/// One tool or package in an image, as its build found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageContent {
    pub name: String,
    /// `missing` when the tool did not answer at build time.
    pub version: String,
}

pub struct ImageStore {
    images_dir: PathBuf,
    kernels_dir: PathBuf,
    config: ImageConfig,
    build_lock: Mutex<()>,
    /// By image: the steps of its build in progress, or of its last build here.
    steps: Mutex<HashMap<String, BuildSteps>>,
}

/// How far a build has come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSteps {
    pub running: bool,
    /// The latest steps, oldest first (at most [`MAX_STEPS`]).
    pub steps: Vec<String>,
}

/// How many steps of a build are kept to be shown.
pub const MAX_STEPS: usize = 100;

impl ImageStore {
    pub fn new(data_dir: &Path, config: ImageConfig) -> Self {
        Self {
            images_dir: data_dir.join("images"),
            kernels_dir: data_dir.join("kernels"),
            config,
            build_lock: Mutex::new(()),
            steps: Mutex::new(HashMap::new()),
        }
    }

    /// Records what a workspace's extension holds, so that its `<base>-ext-<hash>` can be
    /// built and listed from now on (also after a restart); returns the image's name.
    /// Names are content addresses: an existing record is never rewritten.
    pub fn define(&self, extension: &ImageExtension) -> Result<String, ImageError> {
        let name = extension.image_name();
        if extension.is_empty() {
            return Ok(name);
        }
        let path = self.extension_path(&name);
        if path.is_file() {
            return Ok(name);
        }
        let dir = self.images_dir.join("extensions");
        std::fs::create_dir_all(&dir).map_err(ImageError::io("creating the extensions dir"))?;
        let json =
            serde_json::to_vec_pretty(extension).map_err(|e| ImageError::Input(e.to_string()))?;
        let partial = dir.join(format!(".{name}.json.{}", std::process::id()));
        std::fs::write(&partial, json).map_err(ImageError::io("writing an image extension"))?;
        std::fs::rename(&partial, &path).map_err(ImageError::io("recording an image extension"))?;
        Ok(name)
    }

    fn extension_path(&self, name: &str) -> PathBuf {
        self.images_dir
            .join("extensions")
            .join(format!("{name}.json"))
    }

    /// The recorded extension a `<base>-ext-<hash>` name stands for.
    pub fn extension(&self, name: &str) -> Option<ImageExtension> {
        extension_base(name)?;
        let bytes = std::fs::read(self.extension_path(name)).ok()?;
        let ext: ImageExtension = serde_json::from_slice(&bytes).ok()?;
        // The name is the hash of what it holds: a record that does not match is not it.
        (ext.image_name() == name).then_some(ext)
    }

    /// Every image that can be built: the recipes, then the recorded extensions.
    pub fn names(&self) -> Vec<String> {
        let mut extensions: Vec<String> = std::fs::read_dir(self.images_dir.join("extensions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_owned)
            })
            .filter(|n| self.extension(n).is_some())
            .collect();
        extensions.sort();
        RECIPES
            .iter()
            .map(|r| (*r).to_owned())
            .chain(extensions)
            .collect()
    }

    /// Whether `name` is a recipe or a recorded extension.
    pub fn is_known(&self, name: &str) -> bool {
        RECIPES.contains(&name) || self.extension(name).is_some()
    }

    fn busybox(&self) -> Result<PathBuf, ImageError> {
        let p = self
            .config
            .busybox
            .clone()
            .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
        let bytes = std::fs::read(&p).map_err(|_| {
            ImageError::Input(format!(
                "no busybox at {} (apt-get install busybox-static)",
                p.display()
            ))
        })?;
        if !initramfs::is_static_elf(&bytes) {
            return Err(ImageError::Input(format!(
                "{} is not static (apt-get install busybox-static)",
                p.display()
            )));
        }
        Ok(p)
    }

    /// The static agent binary to put in guests.
    pub fn guest_agent(&self) -> Result<PathBuf, ImageError> {
        let candidates: Vec<PathBuf> = self
            .config
            .guest_agent
            .clone()
            .into_iter()
            .chain(std::env::var_os("ATELIER_GUEST_AGENT").map(PathBuf::from))
            .chain(std::env::current_exe().ok().and_then(|exe| {
                // <target>/<profile>/atelier (or <target>/<profile>/deps/test) →
                // <target>/x86_64-unknown-linux-gnu/agent/atelier-agent
                exe.ancestors()
                    .map(|a| a.join("x86_64-unknown-linux-gnu/agent/atelier-agent"))
                    .find(|p| p.is_file())
            }))
            .chain(
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|d| d.join("atelier-agent"))),
            )
            .collect();
        for c in &candidates {
            if std::fs::read(c).is_ok_and(|b| initramfs::is_static_elf(&b)) {
                return Ok(c.clone());
            }
        }
        Err(ImageError::Input(
            "no static atelier-agent found; build it with scripts/build-agent.sh or set ATELIER_GUEST_AGENT".into(),
        ))
    }

    pub fn kernel(&self, progress: &dyn Fn(&str)) -> Result<Kernel, ImageError> {
        std::fs::create_dir_all(&self.kernels_dir)
            .map_err(ImageError::io("creating the kernels dir"))?;
        match &self.config.kernel {
            Some((bz, modules)) => kernel::custom_kernel(bz, modules, &self.kernels_dir),
            None => kernel::debian_cloud_kernel(&self.kernels_dir, progress),
        }
    }

    /// The content address of `name` built from the current inputs.
    fn recipe_id(
        &self,
        name: &str,
        extension: Option<&ImageExtension>,
        kernel: &Kernel,
        busybox: &Path,
        agent: &Path,
    ) -> Result<String, ImageError> {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(RECIPE_VERSION.as_bytes());
        h.update(kernel.version.as_bytes());
        h.update(initramfs::GUEST_MODULES.join(",").as_bytes());
        h.update(initramfs::INIT.as_bytes());
        if name == "dev" || extension.is_some() {
            h.update(rootfs::dev_recipe().as_bytes());
        }
        if let Some(ext) = extension {
            h.update(rootfs::extension_script(ext).as_bytes());
            h.update(ext.packages.join(",").as_bytes());
            h.update(ext.npm.join(" ").as_bytes());
        }
        for input in [busybox, agent, kernel.bzimage.as_path()] {
            h.update(
                std::fs::read(input)
                    .map_err(ImageError::io(format!("reading {}", input.display())))?,
            );
        }
        Ok(h.finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Builds `name` unless a build of the same recipe and inputs exists; returns it.
    pub fn build(&self, name: &str, progress: &dyn Fn(&str)) -> Result<BootArtifacts, ImageError> {
        if !self.is_known(name) {
            return Err(ImageError::Unknown(name.to_owned()));
        }
        let _guard = self.build_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.set_steps(name, |s| {
            *s = BuildSteps {
                running: true,
                steps: vec![],
            }
        });
        let report = |msg: &str| {
            self.set_steps(name, |s| {
                if s.steps.len() == MAX_STEPS {
                    s.steps.remove(0);
                }
                s.steps.push(msg.to_owned());
            });
            progress(msg);
        };
        // Managers (and test runs) sharing a cache build an image once: the second waits
        // for the first, then finds its build. A build already there needs no lock, so a
        // cached image never waits behind a build of other inputs.
        let result = self.plan(name, &report).and_then(|plan| {
            if plan.is_built() {
                return Ok(plan.artifacts);
            }
            let _lock = self.lock_across_processes(name, &report)?;
            self.build_locked(name, plan, &report)
        });
        if let Err(e) = &result {
            report(&format!("failed: {e}"));
        }
        self.set_steps(name, |s| s.running = false);
        result
    }

    fn lock_across_processes(
        &self,
        name: &str,
        progress: &dyn Fn(&str),
    ) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
        use nix::fcntl::{Flock, FlockArg};
        std::fs::create_dir_all(&self.images_dir)
            .map_err(ImageError::io("creating the images dir"))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.images_dir.join(format!(".{name}.lock")))
            .map_err(ImageError::io("opening the build lock"))?;
        let failed = |errno: nix::errno::Errno| ImageError::Io {
            context: "locking the build".into(),
            source: errno.into(),
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(lock),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                progress(&format!("waiting for another process's build of {name}"));
                Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| failed(e))
            }
            Err((_, e)) => Err(failed(e)),
        }
    }

    /// The steps of `name`'s build in progress, or of its last build by this store.
    pub fn steps(&self, name: &str) -> BuildSteps {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.get(name).cloned().unwrap_or_default()
    }

    fn set_steps(&self, name: &str, change: impl FnOnce(&mut BuildSteps)) {
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        change(steps.entry(name.to_owned()).or_default());
    }

    /// Where the build of `name` from the current inputs lives.
    fn plan(&self, name: &str, progress: &dyn Fn(&str)) -> Result<BuildPlan, ImageError> {
        let kernel = self.kernel(progress)?;
        let busybox = self.busybox()?;
        let agent = self.guest_agent()?;
        let extension = self.extension(name);
        let id = self.recipe_id(name, extension.as_ref(), &kernel, &busybox, &agent)?;
        let dir = self.images_dir.join(format!("{name}-{id}"));
        let artifacts = BootArtifacts {
            bzimage: kernel.bzimage.clone(),
            vmlinux: kernel.vmlinux.clone(),
            initramfs: dir.join("initramfs.img"),
            rootfs: dir.join("rootfs.ext4"),
        };
        Ok(BuildPlan {
            kernel,
            busybox,
            agent,
            extension,
            id,
            dir,
            artifacts,
        })
    }

    fn build_locked(
        &self,
        name: &str,
        plan: BuildPlan,
        progress: &dyn Fn(&str),
    ) -> Result<BootArtifacts, ImageError> {
        if plan.is_built() {
            return Ok(plan.artifacts);
        }
        progress(&format!("building image {name} ({})", plan.id));
        // Per process: two managers (or test runs) sharing a cache never touch each other's work.
        let partial = self.images_dir.join(format!(
            ".{name}-{}.partial-{}",
            plan.id,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .map_err(ImageError::io(format!("creating {}", partial.display())))?;
        let modules =
            initramfs::resolve_modules(&plan.kernel.modules_dir, initramfs::GUEST_MODULES)?;
        let bb = std::fs::read(&plan.busybox).map_err(ImageError::io("reading busybox"))?;
        let initrd = initramfs::build(&bb, &modules)?;
        std::fs::write(partial.join("initramfs.img"), initrd)
            .map_err(ImageError::io("writing the initramfs"))?;
        let staging = partial.join("root");
        match name {
            "minimal" => rootfs::stage_minimal(&staging, &plan.busybox, &plan.agent)?,
            _ => rootfs::stage_dev(
                &staging,
                &plan.agent,
                plan.extension.as_ref(),
                &self.images_dir.join(".cache/apt"),
                progress,
            )?,
        }
        let contents = rootfs::contents(&staging)
            .into_iter()
            .map(|(name, version)| ImageContent { name, version })
            .collect();
        progress("making the ext4 root filesystem");
        rootfs::make_ext4(
            &staging,
            &partial.join("rootfs.ext4"),
            if name == "minimal" { 64 } else { 1024 },
        )?;
        std::fs::remove_dir_all(&staging).map_err(ImageError::io("removing the staging dir"))?;
        let info = ImageInfo {
            name: name.to_owned(),
            id: plan.id.clone(),
            kernel_version: plan.kernel.version.clone(),
            rootfs_bytes: std::fs::metadata(partial.join("rootfs.ext4"))
                .map(|m| m.len())
                .unwrap_or(0),
            built_at_ms: crate::now_ms(),
            dir: plan.dir.clone(),
            contents,
        };
        let json =
            serde_json::to_vec_pretty(&info).map_err(|e| ImageError::Input(e.to_string()))?;
        std::fs::write(partial.join("image.json"), json)
            .map_err(ImageError::io("writing image.json"))?;
        if plan.dir.join("image.json").is_file() {
            // Another process finished the same build first.
            let _ = std::fs::remove_dir_all(&partial);
            return Ok(plan.artifacts);
        }
        std::fs::rename(&partial, &plan.dir).map_err(ImageError::io(format!(
            "moving the build to {}",
            plan.dir.display()
        )))?;
        progress(&format!("image {name} ready"));
        Ok(plan.artifacts)
    }

    /// Built images.
    pub fn list(&self) -> Vec<ImageInfo> {
        let Ok(entries) = std::fs::read_dir(&self.images_dir) else {
            return vec![];
        };
        let mut out: Vec<ImageInfo> = entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("image.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes every build of `name`; true when something was removed.
    pub fn remove(&self, name: &str) -> Result<bool, ImageError> {
        let mut removed = false;
        for info in self.list().into_iter().filter(|i| i.name == name) {
            std::fs::remove_dir_all(&info.dir)
                .map_err(ImageError::io(format!("removing {}", info.dir.display())))?;
            removed = true;
        }
        Ok(removed)
    }
}

/// The inputs and the content-addressed place of one image build.
struct BuildPlan {
    kernel: Kernel,
    busybox: PathBuf,
    agent: PathBuf,
    extension: Option<ImageExtension>,
    id: String,
    dir: PathBuf,
    artifacts: BootArtifacts,
}

impl BuildPlan {
    fn is_built(&self) -> bool {
        self.dir.join("image.json").is_file()
    }
}

impl ImageResolver for ImageStore {
    /// Builds on first use; later calls reuse the cached build.
    fn resolve(&self, image: &str) -> Result<BootArtifacts, VmmError> {
        Ok(self.build(image, &|msg| tracing::info!("{msg}"))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(packages: &[&str]) -> ImageExtension {
        ImageExtension {
            base: "dev".into(),
            packages: packages.iter().map(|p| p.to_string()).collect(),
            npm: vec![],
            run: vec![],
        }
    }

    #[test]
    fn a_defined_extension_is_known_and_listed_after_the_recipes_and_survives_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path(), ImageConfig::default());
        assert_eq!(
            store.define(&ext(&[])).unwrap(),
            "dev",
            "nothing added is the base"
        );
        let name = store.define(&ext(&["tree"])).unwrap();
        assert!(!store.is_known("dev-ext-000000000000"));
        let again = ImageStore::new(dir.path(), ImageConfig::default());
        assert!(again.is_known(&name));
        assert_eq!(again.extension(&name), Some(ext(&["tree"])));
        assert_eq!(
            again.names(),
            vec!["minimal".to_owned(), "dev".into(), name.clone()]
        );
        // A record whose content is not what its name says is not used.
        std::fs::write(
            dir.path()
                .join("images/extensions")
                .join(format!("{name}.json")),
            serde_json::to_vec(&ext(&["jq"])).unwrap(),
        )
        .unwrap();
        assert!(!again.is_known(&name));
        assert!(matches!(
            again.build(&name, &|_| {}),
            Err(ImageError::Unknown(_))
        ));
    }

    #[test]
    fn a_second_build_of_an_image_waits_for_the_first_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let first = ImageStore::new(dir.path(), ImageConfig::default());
        let held = first.lock_across_processes("dev", &|_| {}).unwrap();
        let path = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let second = ImageStore::new(&path, ImageConfig::default());
            let said = std::sync::Mutex::new(vec![]);
            let lock =
                second.lock_across_processes("dev", &|m| said.lock().unwrap().push(m.to_owned()));
            tx.send(()).unwrap();
            (lock.is_ok(), said.into_inner().unwrap())
        });
        // Another image is not held up.
        assert!(first.lock_across_processes("minimal", &|_| {}).is_ok());
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "still waiting"
        );
        drop(held);
        let (locked, said) = waiter.join().unwrap();
        assert!(locked);
        assert_eq!(
            said,
            vec!["waiting for another process's build of dev".to_owned()]
        );
    }
}
