//! Sandboxes: records, state transitions (compare-and-set, with their event), and the
//! host resources each one owns.

use atelier_core::sandbox::{Resources, Sandbox, SharedFolder};
use atelier_core::{Event, EventKind, SandboxId, SandboxState, WorkspaceId};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::{now, Idempotency, Result, Store, StoreError};

const SCOPE: &str = "sandboxes";

/// What the server decided a new sandbox is, before any side effect.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub name: String,
    pub workspace_id: Option<WorkspaceId>,
    pub driver: String,
    pub resources: Resources,
    pub image: String,
    pub agent_token: String,
    /// The prebuild to clone (its driver must be `driver`); `None` boots cold.
    pub prebuild_id: Option<String>,
    /// Host folders shared into it (checked by the caller).
    pub shared_folders: Vec<SharedFolder>,
}

/// A sandbox with what only the manager sees: its driver handle and agent token.
#[derive(Debug, Clone)]
pub struct SandboxRecord {
    pub sandbox: Sandbox,
    /// Driver-specific JSON (process id, start time, agent address…), once known.
    pub runtime: Option<serde_json::Value>,
    pub agent_token: String,
}

#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    /// Only these states; empty means every state but `destroyed`.
    pub states: Vec<SandboxState>,
    pub workspace_id: Option<WorkspaceId>,
    pub name: Option<String>,
    /// Return sandboxes created after the one with this id (pagination cursor).
    pub after: Option<SandboxId>,
    pub limit: Option<u32>,
}

/// A host resource (process, directory, socket, tap, disk…) owned by a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResource {
    pub sandbox_id: SandboxId,
    pub kind: String,
    pub ident: String,
}

const COLUMNS: &str =
    "id, name, workspace_id, state, error, driver, vcpus, memory_mib, disk_mib, image, runtime, \
                       agent_token, prebuild_id, shared_folders, created_at, updated_at";

impl Store {
    /// Records a new sandbox in `creating`, with its creation event. An idempotency key
    /// seen before returns the sandbox it created, and no event.
    pub async fn insert_sandbox(
        &self,
        new: &NewSandbox,
        idempotency: Option<&Idempotency>,
    ) -> Result<(SandboxRecord, Option<Event>)> {
        let mut tx = self.write_tx().await?;
        if let Some(idem) = idempotency {
            if let Some(existing) = self.idempotent_hit(&mut tx, SCOPE, idem).await? {
                tx.commit().await?;
                return Ok((
                    self.get_sandbox(&SandboxId::from_trusted(existing)).await?,
                    None,
                ));
            }
        }
        let id = SandboxId::generate();
        let at = now();
        let shared_folders = serde_json::to_string(&new.shared_folders)
            .map_err(|e| StoreError::Corrupt(format!("shared folders: {e}")))?;
        sqlx::query(
            "INSERT INTO sandboxes (id, name, workspace_id, state, error, driver, vcpus, memory_mib, disk_mib, image, \
             runtime, agent_token, prebuild_id, shared_folders, created_at, updated_at) \
             VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(&new.name)
        .bind(new.workspace_id.as_ref().map(|w| w.as_str()))
        .bind(SandboxState::Creating.as_str())
        .bind(&new.driver)
        .bind(new.resources.vcpus as i64)
        .bind(new.resources.memory_mib as i64)
        .bind(new.resources.disk_mib as i64)
        .bind(&new.image)
        .bind(self.sealer.seal(new.agent_token.as_bytes()))
        .bind(new.prebuild_id.as_deref())
        .bind(shared_folders)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if let Some(idem) = idempotency {
            self.remember_idempotency(&mut tx, SCOPE, idem, id.as_str())
                .await?;
        }
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::SandboxState {
                sandbox_id: id.clone(),
                from: None,
                to: SandboxState::Creating,
                reason: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok((self.get_sandbox(&id).await?, Some(event)))
    }

    pub async fn get_sandbox(&self, id: &SandboxId) -> Result<SandboxRecord> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("sandbox {id}"),
            })?;
        self.record_from_row(&row)
    }

    /// Sandboxes in creation order.
    pub async fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>> {
        let rows = Self::list_query(filter)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.record_from_row(r)).collect()
    }

    /// Sandboxes in creation order as the API shows them: no agent token is unsealed.
    pub async fn list_sandbox_views(&self, filter: &SandboxFilter) -> Result<Vec<Sandbox>> {
        let rows = Self::list_query(filter)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    fn list_query(filter: &SandboxFilter) -> QueryBuilder<'_, Sqlite> {
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM sandboxes WHERE 1 = 1"));
        if filter.states.is_empty() {
            q.push(" AND state != 'destroyed'");
        } else {
            q.push(" AND state IN (");
            let mut sep = q.separated(", ");
            for s in &filter.states {
                sep.push_bind(s.as_str());
            }
            q.push(")");
        }
        if let Some(w) = &filter.workspace_id {
            q.push(" AND workspace_id = ")
                .push_bind(w.as_str().to_owned());
        }
        if let Some(n) = &filter.name {
            q.push(" AND name = ").push_bind(n.clone());
        }
        if let Some(after) = &filter.after {
            q.push(" AND rowid > (SELECT rowid FROM sandboxes WHERE id = ")
                .push_bind(after.as_str().to_owned())
                .push(")");
        }
        q.push(" ORDER BY rowid");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(limit as i64);
        }
        q
    }

    /// Moves a sandbox from `from` to `to` (compare-and-set) and records the event, in one
    /// transaction. `reason` is kept as the sandbox's error when `to` is `error`.
    pub async fn transition(
        &self,
        id: &SandboxId,
        from: SandboxState,
        to: SandboxState,
        reason: Option<&str>,
    ) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        let error = if to == SandboxState::Error {
            reason
        } else {
            None
        };
        let updated = sqlx::query(
            "UPDATE sandboxes SET state = ?, error = ?, updated_at = ? WHERE id = ? AND state = ?",
        )
        .bind(to.as_str())
        .bind(error)
        .bind(now())
        .bind(id.as_str())
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            let current: Option<String> =
                sqlx::query_scalar("SELECT state FROM sandboxes WHERE id = ?")
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match current {
                None => StoreError::NotFound {
                    what: format!("sandbox {id}"),
                },
                Some(state) => StoreError::Conflict(format!("sandbox {id} is {state}, not {from}")),
            });
        }
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::SandboxState {
                sandbox_id: id.clone(),
                from: Some(from),
                to,
                reason: reason.map(str::to_owned),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    pub async fn set_runtime(
        &self,
        id: &SandboxId,
        runtime: Option<&serde_json::Value>,
    ) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET runtime = ?, updated_at = ? WHERE id = ?")
            .bind(runtime.map(|r| r.to_string()))
            .bind(now())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a host resource before it is created.
    pub async fn record_resource(&self, r: &HostResource) -> Result<()> {
        sqlx::query("INSERT OR IGNORE INTO host_resources (sandbox_id, kind, ident, created_at) VALUES (?, ?, ?, ?)")
            .bind(r.sandbox_id.as_str())
            .bind(&r.kind)
            .bind(&r.ident)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a host resource once it is gone.
    pub async fn forget_resource(&self, r: &HostResource) -> Result<()> {
        sqlx::query("DELETE FROM host_resources WHERE sandbox_id = ? AND kind = ? AND ident = ?")
            .bind(r.sandbox_id.as_str())
            .bind(&r.kind)
            .bind(&r.ident)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every recorded host resource, optionally of one sandbox.
    pub async fn host_resources(&self, sandbox: Option<&SandboxId>) -> Result<Vec<HostResource>> {
        let rows = sqlx::query(
            "SELECT sandbox_id, kind, ident FROM host_resources WHERE ?1 IS NULL OR sandbox_id = ?1 ORDER BY created_at",
        )
        .bind(sandbox.map(|s| s.as_str()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| HostResource {
                sandbox_id: SandboxId::from_trusted(r.get("sandbox_id")),
                kind: r.get("kind"),
                ident: r.get("ident"),
            })
            .collect())
    }

    fn record_from_row(&self, row: &SqliteRow) -> Result<SandboxRecord> {
        let sandbox = sandbox_from_row(row)?;
        let runtime = row
            .get::<Option<&str>, _>("runtime")
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("sandbox {}: {e}", sandbox.id)))?;
        let token = String::from_utf8(self.sealer.open(row.get::<&[u8], _>("agent_token"))?)
            .map_err(|_| StoreError::Unseal)?;
        Ok(SandboxRecord {
            sandbox,
            runtime,
            agent_token: token,
        })
    }
}

fn sandbox_from_row(row: &SqliteRow) -> Result<Sandbox> {
    let id: String = row.get("id");
    let state: SandboxState = row
        .get::<&str, _>("state")
        .parse()
        .map_err(|e: String| StoreError::Corrupt(format!("sandbox {id}: {e}")))?;
    let shared_folders: Vec<SharedFolder> =
        serde_json::from_str(row.get::<&str, _>("shared_folders"))
            .map_err(|e| StoreError::Corrupt(format!("sandbox {id}: shared folders: {e}")))?;
    Ok(Sandbox {
        id: SandboxId::from_trusted(id.clone()),
        name: row.get("name"),
        workspace_id: row
            .get::<Option<String>, _>("workspace_id")
            .map(WorkspaceId::from_trusted),
        state,
        error: row.get("error"),
        driver: row.get("driver"),
        resources: Resources {
            vcpus: row.get::<i64, _>("vcpus") as u32,
            memory_mib: row.get::<i64, _>("memory_mib") as u32,
            disk_mib: row.get::<i64, _>("disk_mib") as u32,
        },
        image: row.get("image"),
        prebuild_id: row.get("prebuild_id"),
        shared_folders,
        created_at: row.get::<DateTime<Utc>, _>("created_at"),
        updated_at: row.get::<DateTime<Utc>, _>("updated_at"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::store;

    fn new(name: &str) -> NewSandbox {
        NewSandbox {
            name: name.into(),
            workspace_id: None,
            driver: "local".into(),
            resources: Resources::default(),
            image: "dev".into(),
            agent_token: "tok-secret".into(),
            prebuild_id: None,
            shared_folders: vec![],
        }
    }

    #[tokio::test]
    async fn transitions_are_compare_and_set_and_emit_events() {
        let (s, _d) = store().await;
        let (rec, ev) = s.insert_sandbox(&new("a"), None).await.unwrap();
        let id = rec.sandbox.id.clone();
        assert_eq!(rec.sandbox.state, SandboxState::Creating);
        assert_eq!(rec.agent_token, "tok-secret");
        let ev = ev.unwrap();
        let e2 = s
            .transition(&id, SandboxState::Creating, SandboxState::Running, None)
            .await
            .unwrap();
        assert!(e2.id > ev.id);
        let err = s
            .transition(&id, SandboxState::Creating, SandboxState::Running, None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("is running, not creating"),
            "{err}"
        );
        s.transition(
            &id,
            SandboxState::Running,
            SandboxState::Error,
            Some("agent died"),
        )
        .await
        .unwrap();
        let got = s.get_sandbox(&id).await.unwrap();
        assert_eq!(got.sandbox.error.as_deref(), Some("agent died"));
        s.transition(&id, SandboxState::Error, SandboxState::Starting, None)
            .await
            .unwrap();
        assert_eq!(s.get_sandbox(&id).await.unwrap().sandbox.error, None);
        let events = s.events_after(0, 100).await.unwrap();
        assert_eq!(events.len(), 4);
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    }

    #[tokio::test]
    async fn listing_filters_and_paginates_in_creation_order() {
        let (s, _d) = store().await;
        let mut ids = vec![];
        for i in 0..5 {
            let (r, _) = s
                .insert_sandbox(&new(&format!("n{i}")), None)
                .await
                .unwrap();
            ids.push(r.sandbox.id);
        }
        s.transition(&ids[1], SandboxState::Creating, SandboxState::Running, None)
            .await
            .unwrap();
        s.transition(
            &ids[2],
            SandboxState::Creating,
            SandboxState::Destroying,
            None,
        )
        .await
        .unwrap();
        s.transition(
            &ids[2],
            SandboxState::Destroying,
            SandboxState::Destroyed,
            None,
        )
        .await
        .unwrap();

        let all = s.list_sandboxes(&SandboxFilter::default()).await.unwrap();
        let got: Vec<_> = all.iter().map(|r| r.sandbox.id.clone()).collect();
        assert_eq!(
            got,
            [
                ids[0].clone(),
                ids[1].clone(),
                ids[3].clone(),
                ids[4].clone()
            ]
        );

        let running = s
            .list_sandboxes(&SandboxFilter {
                states: vec![SandboxState::Running],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(running.len(), 1);
        let page = s
            .list_sandboxes(&SandboxFilter {
                after: Some(ids[0].clone()),
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            page.iter()
                .map(|r| r.sandbox.id.clone())
                .collect::<Vec<_>>(),
            [ids[1].clone(), ids[3].clone()]
        );
        let by_name = s
            .list_sandboxes(&SandboxFilter {
                name: Some("n4".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_name[0].sandbox.id, ids[4]);
    }

    #[tokio::test]
    async fn host_resources_are_recorded_and_forgotten() {
        let (s, _d) = store().await;
        let (r, _) = s.insert_sandbox(&new("a"), None).await.unwrap();
        let res = HostResource {
            sandbox_id: r.sandbox.id.clone(),
            kind: "dir".into(),
            ident: "/x".into(),
        };
        s.record_resource(&res).await.unwrap();
        s.record_resource(&res).await.unwrap();
        assert_eq!(
            s.host_resources(None).await.unwrap(),
            std::slice::from_ref(&res)
        );
        assert_eq!(
            s.host_resources(Some(&r.sandbox.id)).await.unwrap().len(),
            1
        );
        s.forget_resource(&res).await.unwrap();
        assert!(s.host_resources(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn shared_folders_are_kept_with_the_sandbox() {
        let (s, _d) = store().await;
        let folders = vec![SharedFolder {
            host_path: "/srv/app".into(),
            guest_path: "/workspace".into(),
            read_only: true,
        }];
        let (r, _) = s
            .insert_sandbox(
                &NewSandbox {
                    shared_folders: folders.clone(),
                    ..new("a")
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.sandbox.shared_folders, folders);
        let (plain, _) = s.insert_sandbox(&new("b"), None).await.unwrap();
        assert!(plain.sandbox.shared_folders.is_empty());
        let listed = s
            .list_sandbox_views(&SandboxFilter::default())
            .await
            .unwrap();
        assert_eq!(listed[0].shared_folders, folders);
    }

    #[tokio::test]
    async fn a_retried_create_returns_the_same_sandbox() {
        let (s, _d) = store().await;
        let key = Idempotency::new("retry-1", b"{}");
        let (a, _) = s.insert_sandbox(&new("a"), Some(&key)).await.unwrap();
        let (b, ev) = s.insert_sandbox(&new("a"), Some(&key)).await.unwrap();
        assert_eq!(a.sandbox.id, b.sandbox.id);
        assert!(ev.is_none());
        assert_eq!(
            s.list_sandboxes(&SandboxFilter::default())
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
