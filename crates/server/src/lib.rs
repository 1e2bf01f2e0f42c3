//! The Atelier manager: HTTP API, event stream, sandbox lifecycle.
//!
//! [`serve`] opens the data directory (SQLite store, admin token, secrets key), picks a
//! driver, reconciles what a previous run left, and serves the API until SIGTERM/SIGINT.
//! Sandboxes keep running across manager restarts.

mod api;
mod auth;
mod coding_agent;
pub mod config;
mod dev_services;
mod error;
mod events;
mod extract;
pub mod forward;
mod lifecycle;
mod model_proxy;
mod prebuild;
pub mod preview;
mod routes;
mod tasks;
mod web;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_core::{Sandbox, SandboxId};
use atelier_store::Store;
use atelier_vmm::{select_driver, DriverChoice, DriverConfig};
use tokio_util::sync::CancellationToken;

pub use api::openapi;
pub use config::{default_data_dir, FileConfig};
use error::ApiResult;
use events::EventBus;
use lifecycle::Lifecycle;

/// Everything `atelier serve` needs, after flags, environment and config file are merged.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub driver: DriverChoice,
    pub boot_timeout: Duration,
    pub max_json_bytes: usize,
    pub max_file_bytes: usize,
    pub agent_binary: Option<PathBuf>,
    /// Inputs of image builds (busybox, guest agent, custom kernel).
    pub images: atelier_vmm::images::ImageConfig,
    /// Where kernels and images are cached (default: the data dir).
    pub image_cache: Option<PathBuf>,
    pub firecracker_binary: Option<PathBuf>,
    pub jailer: Option<atelier_vmm::firecracker::JailerConfig>,
    /// How many tasks run at once; the rest wait in the queue.
    pub max_running_tasks: usize,
    /// How often every ready prebuild is checked against its repos.
    pub prebuild_check_every: Duration,
    /// Where previews of sandbox ports live.
    pub preview: preview::PreviewSettings,
}

impl ServeOptions {
    /// Defaults for `data_dir`, overridden by its config file.
    pub fn from_config(data_dir: PathBuf, file: &FileConfig) -> Result<Self, String> {
        let listen = file.listen.as_deref().unwrap_or("127.0.0.1:4000");
        Ok(Self {
            listen: listen
                .parse()
                .map_err(|e| format!("listen {listen:?}: {e}"))?,
            driver: file.driver.as_deref().unwrap_or("auto").parse()?,
            boot_timeout: Duration::from_secs(file.boot_timeout_secs.unwrap_or(120)),
            max_json_bytes: file.max_json_bytes.unwrap_or(1024 * 1024),
            max_file_bytes: file.max_file_bytes.unwrap_or(256 * 1024 * 1024),
            agent_binary: file.local.agent_binary.clone(),
            images: atelier_vmm::images::ImageConfig {
                busybox: file.images.busybox.clone(),
                guest_agent: file.images.guest_agent.clone(),
                kernel: file
                    .images
                    .kernel_bzimage
                    .clone()
                    .zip(file.images.kernel_modules.clone()),
            },
            image_cache: file.images.cache_dir.clone(),
            firecracker_binary: file.firecracker.binary.clone(),
            jailer: file.firecracker.jailer.as_ref().map(|j| {
                let mut cfg = atelier_vmm::firecracker::JailerConfig::new(&j.binary, j.uid, j.gid);
                if let Some(base) = &j.chroot_base {
                    cfg.chroot_base = base.clone();
                }
                cfg.netns = j.netns.clone();
                cfg
            }),
            max_running_tasks: file.max_running_tasks.unwrap_or(4),
            prebuild_check_every: Duration::from_secs(
                file.prebuild_check_secs.unwrap_or(600).max(1),
            ),
            preview: {
                let p = preview::PreviewSettings {
                    domain: file.preview.domain.clone(),
                    public_url: file.preview.public_url.clone(),
                };
                p.validate()
                    .map_err(|(field, message)| format!("{field}: {message}"))?;
                p
            },
            data_dir,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("another Atelier manager already uses {0}; stop it first")]
    AlreadyRunning(String),
    #[error(transparent)]
    Store(#[from] atelier_store::StoreError),
    #[error(transparent)]
    Driver(#[from] atelier_vmm::VmmError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("start-up reconciliation failed: {0}")]
    Reconcile(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("cannot start the model proxy: {0}")]
    ModelProxy(std::io::Error),
}

#[derive(Clone)]
pub struct AppState {
    store: Store,
    bus: EventBus,
    lifecycle: Lifecycle,
    admin_token: Arc<str>,
    data_dir: Arc<PathBuf>,
    started: Instant,
    shutdown: CancellationToken,
    images: Arc<atelier_vmm::images::ImageStore>,
    tasks: tasks::Tasks,
    prebuilds: prebuild::Prebuilds,
    /// Preview origins of sandbox ports, and the key of their grants.
    previews: preview::Previews,
    /// How clones are made (kind, why), detected at start-up.
    storage: Arc<atelier_vmm::StorageChoice>,
    /// Why each driver was or was not taken.
    driver_notes: Arc<Vec<String>>,
}

impl AppState {
    /// The agent of the running sandbox named in a request path (404 / 409 otherwise).
    async fn agent(&self, raw_id: &str) -> ApiResult<atelier_agent_client::AgentClient> {
        Ok(self.lifecycle.agent(&routes::sandbox_id(raw_id)?).await?)
    }

    /// Waits until a sandbox leaves `creating`/`starting` (bounded by the boot timeout).
    async fn wait_settled(&self, id: &SandboxId) -> ApiResult<Sandbox> {
        let deadline = self.lifecycle.settle_deadline();
        Ok(self.lifecycle.wait_settled(id, deadline).await?)
    }
}

/// Runs the manager until SIGTERM/SIGINT. `on_ready` receives the bound address.
pub async fn serve(opts: ServeOptions, on_ready: impl FnOnce(Ready)) -> Result<(), ServeError> {
    let data_dir = opts.data_dir.clone();
    let dir_err = |source| ServeError::DataDir {
        path: data_dir.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(dir_err)?;
    let _lock = lock_data_dir(&data_dir)?;
    let (admin_token, token_created) =
        auth::load_or_create_admin_token(&data_dir.join("admin.token")).map_err(dir_err)?;
    let store = Store::open(&data_dir.join("atelier.db"), &data_dir.join("secrets.key")).await?;

    let selected = select_driver(
        opts.driver,
        &data_dir,
        &DriverConfig {
            agent_binary: opts.agent_binary.clone(),
            images: opts.images.clone(),
            image_cache: opts.image_cache.clone(),
            firecracker_binary: opts.firecracker_binary.clone(),
            jailer: opts.jailer.clone(),
        },
    )?;
    for reason in &selected.reasons {
        tracing::info!("driver {reason}");
    }
    if !selected.default.info().isolated {
        tracing::warn!(
            "THE LOCAL DRIVER GIVES NO ISOLATION: sandboxes run as plain processes of this user on this host. \
             Use it for development and tests only."
        );
    }

    let shutdown = CancellationToken::new();
    let model_proxy = model_proxy::ModelProxy::start(store.clone(), &data_dir, shutdown.clone())
        .await
        .map_err(ServeError::ModelProxy)?;
    let bus = EventBus::new(store.clone());
    let lifecycle = Lifecycle::new(
        store.clone(),
        selected.default.clone(),
        selected.all.clone(),
        bus.clone(),
        opts.boot_timeout,
        model_proxy.port(),
    );
    let report = lifecycle
        .reconcile()
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    tracing::info!(
        adopted = report.adopted.len(),
        failed = report.failed.len(),
        rolled_back = report.rolled_back.len(),
        finished = report.finished.len(),
        swept = report.swept.len(),
        "reconciled sandboxes with the host"
    );
    for item in &report.swept {
        tracing::info!("removed leftover {item}");
    }

    let prebuilds = prebuild::Prebuilds::new(
        store.clone(),
        bus.clone(),
        lifecycle.clone(),
        selected.images.clone(),
        &data_dir,
    );
    prebuilds
        .reconcile()
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    tokio::spawn(
        prebuilds
            .clone()
            .run_checker(opts.prebuild_check_every, shutdown.clone()),
    );
    let tasks = tasks::Tasks::new(
        store.clone(),
        bus.clone(),
        lifecycle.clone(),
        model_proxy,
        &data_dir,
        opts.max_running_tasks,
        shutdown.clone(),
    );
    tasks.recover().await;
    tokio::spawn(tasks.clone().run_scheduler());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let grant_key =
        preview::GrantKey::load_or_create(&data_dir.join("preview.key")).map_err(dir_err)?;
    let state = AppState {
        store: store.clone(),
        bus,
        lifecycle,
        admin_token: admin_token.clone().into(),
        data_dir: Arc::new(data_dir.clone()),
        started: Instant::now(),
        shutdown: shutdown.clone(),
        images: selected.images.clone(),
        tasks: tasks.clone(),
        prebuilds,
        previews: preview::Previews::new(grant_key, &opts.preview, addr),
        storage: Arc::new(selected.default.storage()),
        driver_notes: Arc::new(selected.reasons.clone()),
    };
    let app = api::router(state, &opts);
    // Handlers go in before anyone is told we listen: a SIGTERM right after must be graceful.
    let signals = Signals::install().map_err(ServeError::Serve)?;
    on_ready(Ready {
        addr,
        driver: selected.default.kind().to_string(),
        token_path: data_dir.join("admin.token"),
        new_token: token_created.then_some(admin_token),
    });

    let stop = shutdown.clone();
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutting down (sandboxes keep running)");
        stop.cancel();
    });
    let graceful = shutdown.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.cancelled().await });
    // In-flight requests get a bounded time to finish; event streams end at once.
    let result = tokio::select! {
        r = server => r.map_err(ServeError::Serve),
        _ = async { shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(10)).await } => Ok(()),
    };
    store.close().await;
    result
}

/// What `serve` reports once it listens.
pub struct Ready {
    pub addr: SocketAddr,
    pub driver: String,
    pub token_path: PathBuf,
    /// The admin token, only when it was created by this start (print it once).
    pub new_token: Option<String>,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// One manager per data directory: a second one would "reconcile" the first's sandboxes.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServeError> {
    let path = dir.join("manager.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServeError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(ServeError::AlreadyRunning(dir.display().to_string()));
    }
    Ok(file)
}
