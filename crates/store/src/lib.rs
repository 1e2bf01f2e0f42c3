//! Atelier's persistent state in one SQLite file.
//!
//! WAL mode with `synchronous=NORMAL`: a committed transaction survives a crash or
//! `kill -9` of the manager. The schema is versioned by embedded migrations; a database
//! written by a newer Atelier is refused instead of being half-understood.

mod events;
mod prebuilds;
mod sandboxes;
mod seal;
mod tasks;
mod templates;
mod workspaces;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use prebuilds::{NewPrebuild, PrebuildRecord};
pub use sandboxes::{HostResource, NewSandbox, SandboxFilter, SandboxRecord};
pub use seal::Sealer;
pub use tasks::{Interaction, NewTask, TaskEvent, TaskProgress, TaskRecord};
pub use workspaces::StoredSecret;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the database at {path} has schema version {found}, newer than this Atelier knows ({supported}); \
         upgrade Atelier or point --data-dir elsewhere"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error("cannot read the secrets key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("a sealed value could not be opened (wrong key or corrupted data)")]
    Unseal,
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An `Idempotency-Key` with the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

impl Idempotency {
    pub fn new(key: impl Into<String>, request_body: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(request_body);
        Self {
            key: key.into(),
            request_hash: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    sealer: Sealer,
}

impl Store {
    /// Opens (creating if needed) the database at `db_path`, sealing secrets with the key
    /// at `key_path` (generated with mode 0600 on first use).
    pub async fn open(db_path: &Path, key_path: &Path) -> Result<Self> {
        let sealer = Sealer::load_or_create(key_path)?;
        let url = format!("sqlite://{}", db_path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        check_schema_version(&pool, db_path).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, sealer })
    }

    /// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`), so that
    /// what it reads stays true until it commits (no lost race on idempotency keys).
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The newest schema version this binary knows.
    pub fn supported_schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1",
        )
        .fetch_one(&self.pool)
        .await?
        .unwrap_or(0))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn check_schema_version(pool: &SqlitePool, db_path: &Path) -> Result<()> {
    let has_table: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if has_table == 0 {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?;
    let supported = Store::supported_schema_version();
    match found {
        Some(found) if found > supported => Err(StoreError::SchemaTooNew {
            path: db_path.display().to_string(),
            found,
            supported,
        }),
        _ => Ok(()),
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            &dir.path().join("atelier.db"),
            &dir.path().join("secrets.key"),
        )
        .await
        .unwrap();
        (s, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let (store, dir) = testutil::store().await;
        assert_eq!(
            store.schema_version().await.unwrap(),
            Store::supported_schema_version()
        );
        let spec: atelier_core::WorkspaceSpec = serde_json::from_str(r#"{"name":"keep"}"#).unwrap();
        store.create_workspace(&spec, None).await.unwrap();
        store.close().await;

        let db = dir.path().join("atelier.db");
        let key = dir.path().join("secrets.key");
        let again = Store::open(&db, &key).await.unwrap();
        assert_eq!(again.list_workspaces().await.unwrap().len(), 1);
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (9999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)",
        )
        .execute(again.pool())
        .await
        .unwrap();
        again.close().await;

        let err = Store::open(&db, &key)
            .await
            .err()
            .expect("newer schema must be refused");
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
            "{msg}"
        );
        assert!(msg.contains("newer than this Atelier knows"), "{msg}");
    }

    #[tokio::test]
    async fn the_database_uses_wal() {
        let (store, _dir) = testutil::store().await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
