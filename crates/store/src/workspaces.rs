//! Workspaces and their sealed secrets.

use atelier_core::workspace::{mask, EnvSecret, FileSecret, SecretKind, SecretView, SecretsSpec};
use atelier_core::{Event, EventKind, Workspace, WorkspaceId, WorkspaceSpec};
use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, Transaction};

use crate::{now, Idempotency, Result, Store, StoreError};

/// A secret as stored: everything but the value is in clear.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub kind: SecretKind,
    pub name: String,
    pub mode: u32,
    pub preview: String,
}

const SCOPE: &str = "workspaces";

impl Store {
    /// Creates a workspace. With an idempotency key seen before (same request), returns
    /// the workspace created then and `None` for the event.
    pub async fn create_workspace(
        &self,
        spec: &WorkspaceSpec,
        idempotency: Option<&Idempotency>,
    ) -> Result<(Workspace, Option<Event>)> {
        let mut tx = self.write_tx().await?;
        if let Some(idem) = idempotency {
            if let Some(existing) = self.idempotent_hit(&mut tx, SCOPE, idem).await? {
                tx.commit().await?;
                return Ok((self.get_workspace(&existing).await?, None));
            }
        }
        let id = WorkspaceId::generate();
        let at = now();
        let inserted = sqlx::query("INSERT INTO workspaces (id, name, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
            .bind(id.as_str())
            .bind(&spec.name)
            .bind(public_spec_json(spec)?)
            .bind(at)
            .bind(at)
            .execute(&mut *tx)
            .await;
        if let Err(e) = inserted {
            return Err(unique_violation(
                e,
                format!("a workspace named {:?} already exists", spec.name),
            ));
        }
        self.write_secrets(&mut tx, &id, &spec.secrets).await?;
        if let Some(idem) = idempotency {
            self.remember_idempotency(&mut tx, SCOPE, idem, id.as_str())
                .await?;
        }
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::WorkspaceCreated {
                workspace_id: id.clone(),
                name: spec.name.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((self.get_workspace(id.as_str()).await?, Some(event)))
    }

    /// Looks a workspace up by id, or by name when `key` is not an id.
    pub async fn get_workspace(&self, key: &str) -> Result<Workspace> {
        let row = sqlx::query("SELECT id, name, spec, created_at, updated_at FROM workspaces WHERE id = ? OR name = ?")
            .bind(key)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("workspace {key:?}") })?;
        let secrets = self
            .secret_views(row.get::<String, _>("id").as_str())
            .await?;
        workspace_from_row(&row, secrets)
    }

    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        let rows = sqlx::query(
            "SELECT id, name, spec, created_at, updated_at FROM workspaces ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let secrets = self
                .secret_views(row.get::<String, _>("id").as_str())
                .await?;
            out.push(workspace_from_row(&row, secrets)?);
        }
        Ok(out)
    }

    /// The full spec including decrypted secret values (for patching and for sandboxes).
    pub async fn workspace_spec(&self, id: &WorkspaceId) -> Result<WorkspaceSpec> {
        let spec_json: String = sqlx::query_scalar("SELECT spec FROM workspaces WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("workspace {id}"),
            })?;
        let mut spec: WorkspaceSpec = serde_json::from_str(&spec_json)
            .map_err(|e| StoreError::Corrupt(format!("workspace {id}: {e}")))?;
        let rows = sqlx::query("SELECT kind, name, mode, sealed FROM workspace_secrets WHERE workspace_id = ? ORDER BY kind, name")
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let value = String::from_utf8(
                self.sealer
                    .open(row.get::<Vec<u8>, _>("sealed").as_slice())?,
            )
            .map_err(|_| StoreError::Unseal)?;
            let name: String = row.get("name");
            match row.get::<String, _>("kind").as_str() {
                "env" => spec.secrets.env.push(EnvSecret { name, value }),
                _ => spec.secrets.files.push(FileSecret {
                    path: name,
                    content: value,
                    mode: row.get::<i64, _>("mode") as u32,
                }),
            }
        }
        Ok(spec)
    }

    /// Replaces a workspace's spec (secrets included) with `spec`.
    pub async fn update_workspace(
        &self,
        id: &WorkspaceId,
        spec: &WorkspaceSpec,
    ) -> Result<(Workspace, Event)> {
        let mut tx = self.write_tx().await?;
        let updated =
            sqlx::query("UPDATE workspaces SET name = ?, spec = ?, updated_at = ? WHERE id = ?")
                .bind(&spec.name)
                .bind(public_spec_json(spec)?)
                .bind(now())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    unique_violation(
                        e,
                        format!("a workspace named {:?} already exists", spec.name),
                    )
                })?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("workspace {id}"),
            });
        }
        sqlx::query("DELETE FROM workspace_secrets WHERE workspace_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        self.write_secrets(&mut tx, id, &spec.secrets).await?;
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::WorkspaceUpdated {
                workspace_id: id.clone(),
                name: spec.name.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((self.get_workspace(id.as_str()).await?, event))
    }

    /// Deletes a workspace; refused while sandboxes made from it are not destroyed.
    pub async fn delete_workspace(&self, id: &WorkspaceId) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM sandboxes WHERE workspace_id = ? AND state != 'destroyed' ORDER BY id",
        )
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        if !live.is_empty() {
            return Err(StoreError::Conflict(format!(
                "workspace {id} still has sandboxes ({}); destroy them first",
                live.join(", ")
            )));
        }
        let deleted = sqlx::query("DELETE FROM workspaces WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("workspace {id}"),
            });
        }
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::WorkspaceDeleted {
                workspace_id: id.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn secret_views(&self, id: &str) -> Result<Vec<SecretView>> {
        let rows = sqlx::query("SELECT kind, name, preview FROM workspace_secrets WHERE workspace_id = ? ORDER BY kind, name")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| SecretView {
                kind: if r.get::<String, _>("kind") == "env" {
                    SecretKind::Env
                } else {
                    SecretKind::File
                },
                name: r.get("name"),
                preview: r.get("preview"),
            })
            .collect())
    }

    async fn write_secrets(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        id: &WorkspaceId,
        secrets: &SecretsSpec,
    ) -> Result<()> {
        let env = secrets
            .env
            .iter()
            .map(|s| (SecretKind::Env, &s.name, 0o600, &s.value));
        let files = secrets
            .files
            .iter()
            .map(|s| (SecretKind::File, &s.path, s.mode, &s.content));
        for (kind, name, mode, value) in env.chain(files) {
            sqlx::query(
                "INSERT INTO workspace_secrets (workspace_id, kind, name, mode, preview, sealed) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id.as_str())
            .bind(kind.as_str())
            .bind(name)
            .bind(mode as i64)
            .bind(mask(value))
            .bind(self.sealer.seal(value.as_bytes()))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The resource id an idempotency key was first used for, if any; a key reused with
    /// a different request is an error.
    pub(crate) async fn idempotent_hit(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        scope: &str,
        idem: &Idempotency,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = ? AND key = ?",
        )
        .bind(scope)
        .bind(&idem.key)
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            None => Ok(None),
            Some(r) if r.get::<String, _>("request_hash") == idem.request_hash => {
                Ok(Some(r.get("resource_id")))
            }
            Some(_) => Err(StoreError::IdempotencyMismatch),
        }
    }

    pub(crate) async fn remember_idempotency(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        scope: &str,
        idem: &Idempotency,
        resource_id: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(scope)
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(resource_id)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// The spec as stored in the `spec` column: without secret values.
fn public_spec_json(spec: &WorkspaceSpec) -> Result<String> {
    let mut public = spec.clone();
    public.secrets = SecretsSpec::default();
    serde_json::to_string(&public).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn workspace_from_row(
    row: &sqlx::sqlite::SqliteRow,
    secrets: Vec<SecretView>,
) -> Result<Workspace> {
    let id: String = row.get("id");
    let spec: WorkspaceSpec = serde_json::from_str(row.get::<&str, _>("spec"))
        .map_err(|e| StoreError::Corrupt(format!("workspace {id}: {e}")))?;
    let image_name = spec.image_name();
    Ok(Workspace {
        id: WorkspaceId::from_trusted(id),
        name: spec.name,
        repos: spec.repos,
        init_commands: spec.init_commands,
        dev_commands: spec.dev_commands,
        secrets,
        resources: spec.resources,
        image_name,
        base_image: spec.base_image,
        image: spec.image,
        agent_config: spec.agent_config,
        prebuild: spec.prebuild,
        created_at: row.get::<DateTime<Utc>, _>("created_at"),
        updated_at: row.get::<DateTime<Utc>, _>("updated_at"),
    })
}

pub(crate) fn unique_violation(e: sqlx::Error, message: String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message),
        _ => StoreError::Db(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::store;

    fn spec(json: serde_json::Value) -> WorkspaceSpec {
        serde_json::from_value(json).unwrap()
    }

    #[tokio::test]
    async fn secrets_are_sealed_at_rest_and_shown_masked() {
        let (s, dir) = store().await;
        let w = spec(serde_json::json!({
            "name": "app",
            "secrets": {"env": [{"name": "API_KEY", "value": "sk-live-0123456789abcdef"}],
                        "files": [{"path": "~/.netrc", "content": "machine x password hunter2", "mode": 384}]}
        }));
        let (created, event) = s.create_workspace(&w, None).await.unwrap();
        assert!(event.is_some());
        let names: Vec<_> = created
            .secrets
            .iter()
            .map(|v| (v.name.as_str(), v.preview.as_str()))
            .collect();
        assert_eq!(names, [("API_KEY", "••••cdef"), ("~/.netrc", "••••ter2")]);
        let shown = serde_json::to_string(&created).unwrap();
        assert!(
            !shown.contains("0123456789") && !shown.contains("hunter2"),
            "{shown}"
        );

        s.close().await;
        let raw = std::fs::read(dir.path().join("atelier.db")).unwrap();
        let wal = std::fs::read(dir.path().join("atelier.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(
                !bytes.windows(7).any(|w| w == b"hunter2"),
                "plaintext secret on disk"
            );
        }
        let s = Store::open(
            &dir.path().join("atelier.db"),
            &dir.path().join("secrets.key"),
        )
        .await
        .unwrap();
        let full = s.workspace_spec(&created.id).await.unwrap();
        assert_eq!(full.secrets, w.secrets);
    }

    #[tokio::test]
    async fn names_are_unique_and_lookups_accept_names() {
        let (s, _d) = store().await;
        let (a, _) = s
            .create_workspace(&spec(serde_json::json!({"name": "a"})), None)
            .await
            .unwrap();
        let err = s
            .create_workspace(&spec(serde_json::json!({"name": "a"})), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert_eq!(s.get_workspace("a").await.unwrap().id, a.id);
        assert!(matches!(
            s.get_workspace("zzz").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn idempotent_creates_return_the_first_result() {
        let (s, _d) = store().await;
        let w = spec(serde_json::json!({"name": "once"}));
        let key = Idempotency::new("k1", b"body");
        let (first, e1) = s.create_workspace(&w, Some(&key)).await.unwrap();
        let (second, e2) = s.create_workspace(&w, Some(&key)).await.unwrap();
        assert_eq!(first.id, second.id);
        assert!(e1.is_some() && e2.is_none());
        let other = Idempotency::new("k1", b"different body");
        assert!(matches!(
            s.create_workspace(&w, Some(&other)).await,
            Err(StoreError::IdempotencyMismatch)
        ));
        assert_eq!(s.list_workspaces().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn update_and_delete() {
        let (s, _d) = store().await;
        let (w, _) = s
            .create_workspace(&spec(serde_json::json!({"name": "x"})), None)
            .await
            .unwrap();
        let mut next = s.workspace_spec(&w.id).await.unwrap();
        next.name = "y".into();
        next.init_commands = vec!["make".into()];
        let (updated, _) = s.update_workspace(&w.id, &next).await.unwrap();
        assert_eq!(updated.name, "y");
        assert_eq!(updated.init_commands, ["make"]);
        assert!(updated.updated_at >= w.updated_at);
        s.delete_workspace(&w.id).await.unwrap();
        assert!(matches!(
            s.get_workspace(w.id.as_str()).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.delete_workspace(&w.id).await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
