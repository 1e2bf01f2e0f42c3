//! Prebuild records: one row per build (or promotion) of a workspace's prebuild.

use atelier_core::prebuild::{Prebuild, PrebuildState, RepoCommit};
use atelier_core::{Event, EventKind, Resources, SandboxId, WorkspaceId};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

/// What a new prebuild starts with.
#[derive(Debug, Clone)]
pub struct NewPrebuild {
    pub workspace_id: WorkspaceId,
    pub driver: String,
    /// `build` or `promote`.
    pub origin: String,
    pub config_hash: String,
    pub image_hash: String,
    pub vcpus: u32,
    pub memory_mib: u32,
}

/// A prebuild with what only the manager sees: the driver's snapshot description and
/// the token of the agent captured in it.
#[derive(Debug, Clone)]
pub struct PrebuildRecord {
    pub prebuild: Prebuild,
    pub snapshot: Option<serde_json::Value>,
    pub agent_token: Option<String>,
}

const COLUMNS: &str = "p.id, p.workspace_id, p.state, p.driver, p.sandbox_id, p.origin, p.snapshot, \
     p.agent_token, p.commits, p.config_hash, p.image_hash, p.vcpus, p.memory_mib, p.stale, p.error, \
     p.log_tail, p.created_at, p.finished_at, \
     (SELECT COUNT(*) FROM sandboxes s WHERE s.prebuild_id = p.id AND s.state != 'destroyed') AS clones";

impl Store {
    /// Records a prebuild in `building`, with its event. Refused (conflict) while another
    /// prebuild of the workspace is building.
    pub async fn insert_prebuild(&self, new: &NewPrebuild) -> Result<(PrebuildRecord, Event)> {
        let mut tx = self.write_tx().await?;
        let building: Option<String> = sqlx::query_scalar(
            "SELECT id FROM prebuilds WHERE workspace_id = ? AND state = 'building' LIMIT 1",
        )
        .bind(new.workspace_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(other) = building {
            return Err(StoreError::Conflict(format!(
                "prebuild {other} of this workspace is still building"
            )));
        }
        let id = atelier_core::id::PrebuildId::generate().to_string();
        sqlx::query(
            "INSERT INTO prebuilds (id, workspace_id, state, driver, origin, commits, config_hash, image_hash, \
             vcpus, memory_mib, created_at) VALUES (?, ?, 'building', ?, ?, '[]', ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(new.workspace_id.as_str())
        .bind(&new.driver)
        .bind(&new.origin)
        .bind(&new.config_hash)
        .bind(&new.image_hash)
        .bind(new.vcpus as i64)
        .bind(new.memory_mib as i64)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::PrebuildState {
                prebuild_id: id.clone(),
                workspace_id: new.workspace_id.clone(),
                from: None,
                to: PrebuildState::Building,
                reason: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok((self.get_prebuild(&id).await?, event))
    }

    pub async fn get_prebuild(&self, id: &str) -> Result<PrebuildRecord> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM prebuilds p WHERE p.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("prebuild {id:?}"),
            })?;
        self.prebuild_from_row(&row)
    }

    /// A workspace's prebuilds, newest first (every workspace's with `None`).
    pub async fn list_prebuilds(
        &self,
        workspace: Option<&WorkspaceId>,
    ) -> Result<Vec<PrebuildRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM prebuilds p WHERE (?1 IS NULL OR p.workspace_id = ?1) \
             ORDER BY p.created_at DESC, p.id DESC"
        ))
        .bind(workspace.map(|w| w.as_str()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| self.prebuild_from_row(r)).collect()
    }

    /// The prebuild new sandboxes of the workspace start from on `driver`: the newest
    /// ready one (stale or not: it serves until a newer one is ready).
    pub async fn current_prebuild(
        &self,
        workspace: &WorkspaceId,
        driver: &str,
    ) -> Result<Option<PrebuildRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM prebuilds p WHERE p.workspace_id = ? AND p.driver = ? \
             AND p.state = 'ready' ORDER BY p.finished_at DESC, p.id DESC LIMIT 1"
        ))
        .bind(workspace.as_str())
        .bind(driver)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.prebuild_from_row(&r)).transpose()
    }

    /// The current prebuild of `workspace` on `driver` that a new sandbox with this
    /// image and machine size can start from, if any (a restore cannot resize a machine).
    pub async fn fitting_prebuild(
        &self,
        workspace: &WorkspaceId,
        driver: &str,
        image: &str,
        resources: &Resources,
    ) -> Result<Option<PrebuildRecord>> {
        let Some(rec) = self.current_prebuild(workspace, driver).await? else {
            return Ok(None);
        };
        let spec = self.workspace_spec(workspace).await?;
        let fits = rec.prebuild.vcpus == resources.vcpus
            && rec.prebuild.memory_mib == resources.memory_mib
            && image == spec.image_name()
            && rec.snapshot.is_some();
        Ok(fits.then_some(rec))
    }

    pub async fn set_prebuild_sandbox(&self, id: &str, sandbox: &SandboxId) -> Result<()> {
        sqlx::query("UPDATE prebuilds SET sandbox_id = ? WHERE id = ?")
            .bind(sandbox.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records what the build actually used: each repo's commit and the image's hash.
    pub async fn set_prebuild_inputs(
        &self,
        id: &str,
        commits: &[RepoCommit],
        image_hash: &str,
    ) -> Result<()> {
        let json =
            serde_json::to_string(commits).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("UPDATE prebuilds SET commits = ?, image_hash = ? WHERE id = ?")
            .bind(json)
            .bind(image_hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `building → ready` with the captured snapshot; every older ready prebuild of the
    /// workspace on the same driver becomes `superseded` in the same transaction.
    pub async fn finish_prebuild(
        &self,
        id: &str,
        snapshot: &serde_json::Value,
        agent_token: &str,
    ) -> Result<Vec<Event>> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT workspace_id, driver, state FROM prebuilds WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("prebuild {id:?}"),
            })?;
        let workspace = WorkspaceId::from_trusted(row.get("workspace_id"));
        let driver: String = row.get("driver");
        expect_state(id, row.get("state"), PrebuildState::Building)?;
        let older: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM prebuilds WHERE workspace_id = ? AND driver = ? AND state = 'ready'",
        )
        .bind(workspace.as_str())
        .bind(&driver)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE prebuilds SET state = 'ready', snapshot = ?, agent_token = ?, finished_at = ? WHERE id = ?",
        )
        .bind(snapshot.to_string())
        .bind(self.sealer.seal(agent_token.as_bytes()))
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let mut events = vec![
            Self::append_event_tx(
                &mut tx,
                EventKind::PrebuildState {
                    prebuild_id: id.to_owned(),
                    workspace_id: workspace.clone(),
                    from: Some(PrebuildState::Building),
                    to: PrebuildState::Ready,
                    reason: None,
                },
            )
            .await?,
        ];
        for old in older {
            sqlx::query("UPDATE prebuilds SET state = 'superseded' WHERE id = ?")
                .bind(&old)
                .execute(&mut *tx)
                .await?;
            events.push(
                Self::append_event_tx(
                    &mut tx,
                    EventKind::PrebuildState {
                        prebuild_id: old,
                        workspace_id: workspace.clone(),
                        from: Some(PrebuildState::Ready),
                        to: PrebuildState::Superseded,
                        reason: Some(format!("replaced by {id}")),
                    },
                )
                .await?,
            );
        }
        tx.commit().await?;
        Ok(events)
    }

    /// `building → failed`, keeping why and the end of the log.
    pub async fn fail_prebuild(&self, id: &str, error: &str, log_tail: &str) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT workspace_id, state FROM prebuilds WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("prebuild {id:?}"),
            })?;
        expect_state(id, row.get("state"), PrebuildState::Building)?;
        sqlx::query(
            "UPDATE prebuilds SET state = 'failed', error = ?, log_tail = ?, finished_at = ? WHERE id = ?",
        )
        .bind(error)
        .bind(log_tail)
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::PrebuildState {
                prebuild_id: id.to_owned(),
                workspace_id: WorkspaceId::from_trusted(row.get("workspace_id")),
                from: Some(PrebuildState::Building),
                to: PrebuildState::Failed,
                reason: Some(error.to_owned()),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    /// Marks a ready prebuild stale (or fresh again with `None`). Returns the event when
    /// it newly became stale.
    pub async fn set_prebuild_stale(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<Option<Event>> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT workspace_id, state, stale FROM prebuilds WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("prebuild {id:?}"),
            })?;
        let was: Option<String> = row.get("stale");
        sqlx::query("UPDATE prebuilds SET stale = ? WHERE id = ?")
            .bind(reason)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let event = match (was, reason) {
            (None, Some(reason)) => Some(
                Self::append_event_tx(
                    &mut tx,
                    EventKind::PrebuildState {
                        prebuild_id: id.to_owned(),
                        workspace_id: WorkspaceId::from_trusted(row.get("workspace_id")),
                        from: None,
                        to: row
                            .get::<&str, _>("state")
                            .parse()
                            .map_err(StoreError::Corrupt)?,
                        reason: Some(format!("stale: {reason}")),
                    },
                )
                .await?,
            ),
            _ => None,
        };
        tx.commit().await?;
        Ok(event)
    }

    /// Forgets a prebuild's snapshot once its files are deleted (a superseded or failed
    /// prebuild nobody clones any more).
    pub async fn clear_prebuild_snapshot(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE prebuilds SET snapshot = NULL, agent_token = NULL WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn prebuild_from_row(&self, row: &SqliteRow) -> Result<PrebuildRecord> {
        let id: String = row.get("id");
        let corrupt = |what: String| StoreError::Corrupt(format!("prebuild {id}: {what}"));
        let state: PrebuildState = row.get::<&str, _>("state").parse().map_err(corrupt)?;
        let commits: Vec<RepoCommit> = serde_json::from_str(row.get::<&str, _>("commits"))
            .map_err(|e| corrupt(e.to_string()))?;
        let snapshot = row
            .get::<Option<&str>, _>("snapshot")
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?;
        let agent_token = row
            .get::<Option<&[u8]>, _>("agent_token")
            .map(|sealed| {
                self.sealer
                    .open(sealed)
                    .and_then(|b| String::from_utf8(b).map_err(|_| StoreError::Unseal))
            })
            .transpose()?;
        let snapshot_ref: Option<&serde_json::Value> = snapshot.as_ref();
        let memory_snapshot = snapshot_ref
            .and_then(|s| s.get("memory"))
            .is_some_and(|m| !m.is_null());
        let prebuild = Prebuild {
            id: id.clone(),
            workspace_id: WorkspaceId::from_trusted(row.get("workspace_id")),
            state,
            driver: row.get("driver"),
            sandbox_id: row
                .get::<Option<String>, _>("sandbox_id")
                .map(SandboxId::from_trusted),
            commits,
            config_hash: row.get("config_hash"),
            image_hash: row.get("image_hash"),
            memory_snapshot,
            vcpus: row.get::<i64, _>("vcpus") as u32,
            memory_mib: row.get::<i64, _>("memory_mib") as u32,
            stale: row.get("stale"),
            error: row.get("error"),
            log_tail: row.get("log_tail"),
            origin: row.get("origin"),
            clones: row.get::<i64, _>("clones") as u32,
            created_at: row.get::<DateTime<Utc>, _>("created_at"),
            finished_at: row.get::<Option<DateTime<Utc>>, _>("finished_at"),
        };
        Ok(PrebuildRecord {
            prebuild,
            snapshot,
            agent_token,
        })
    }
}

fn expect_state(id: &str, found: &str, expected: PrebuildState) -> Result<()> {
    if found == expected.as_str() {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "prebuild {id} is {found}, not {expected}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::store;
    use atelier_core::WorkspaceSpec;

    async fn workspace(s: &Store) -> WorkspaceId {
        let spec: WorkspaceSpec =
            serde_json::from_value(serde_json::json!({"name": "app"})).expect("spec");
        s.create_workspace(&spec, None)
            .await
            .expect("workspace")
            .0
            .id
    }

    fn new(ws: &WorkspaceId) -> NewPrebuild {
        NewPrebuild {
            workspace_id: ws.clone(),
            driver: "local".into(),
            origin: "build".into(),
            config_hash: "c1".into(),
            image_hash: "i1".into(),
            vcpus: 1,
            memory_mib: 512,
        }
    }

    #[tokio::test]
    async fn one_build_at_a_time_and_a_new_ready_supersedes_the_old() {
        let (s, _dir) = store().await;
        let ws = workspace(&s).await;
        let (first, _) = s.insert_prebuild(&new(&ws)).await.expect("insert");
        assert!(matches!(
            s.insert_prebuild(&new(&ws)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s
            .current_prebuild(&ws, "local")
            .await
            .expect("current")
            .is_none());
        let snap = serde_json::json!({"memory": null, "disk": "/x"});
        s.finish_prebuild(&first.prebuild.id, &snap, "tok-1")
            .await
            .expect("ready");
        let current = s
            .current_prebuild(&ws, "local")
            .await
            .expect("q")
            .expect("some");
        assert_eq!(current.prebuild.id, first.prebuild.id);
        assert_eq!(current.agent_token.as_deref(), Some("tok-1"));
        assert!(!current.prebuild.memory_snapshot);
        assert!(s.current_prebuild(&ws, "qemu").await.expect("q").is_none());

        let (second, _) = s.insert_prebuild(&new(&ws)).await.expect("second build");
        // The old one serves while the new one builds.
        let still = s
            .current_prebuild(&ws, "local")
            .await
            .expect("q")
            .expect("some");
        assert_eq!(still.prebuild.id, first.prebuild.id);
        let events = s
            .finish_prebuild(&second.prebuild.id, &snap, "tok-2")
            .await
            .expect("ready");
        assert_eq!(events.len(), 2, "ready + superseded");
        let now = s
            .current_prebuild(&ws, "local")
            .await
            .expect("q")
            .expect("some");
        assert_eq!(now.prebuild.id, second.prebuild.id);
        let old = s.get_prebuild(&first.prebuild.id).await.expect("get");
        assert_eq!(old.prebuild.state, PrebuildState::Superseded);
        // Finishing twice is refused.
        assert!(s
            .finish_prebuild(&second.prebuild.id, &snap, "t")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn failure_keeps_the_log_tail_and_staleness_is_reported_once() {
        let (s, _dir) = store().await;
        let ws = workspace(&s).await;
        let (p, _) = s.insert_prebuild(&new(&ws)).await.expect("insert");
        s.fail_prebuild(&p.prebuild.id, "init command 1 exited with 3", "boom\n")
            .await
            .expect("fail");
        let failed = s.get_prebuild(&p.prebuild.id).await.expect("get").prebuild;
        assert_eq!(failed.state, PrebuildState::Failed);
        assert_eq!(failed.log_tail.as_deref(), Some("boom\n"));
        assert!(failed.finished_at.is_some());

        let (q, _) = s
            .insert_prebuild(&new(&ws))
            .await
            .expect("insert after failure");
        s.finish_prebuild(&q.prebuild.id, &serde_json::json!({}), "t")
            .await
            .expect("ready");
        let first = s
            .set_prebuild_stale(&q.prebuild.id, Some("main moved"))
            .await
            .expect("stale");
        assert!(first.is_some());
        let again = s
            .set_prebuild_stale(&q.prebuild.id, Some("main moved"))
            .await
            .expect("stale");
        assert!(again.is_none(), "no second event for the same staleness");
        assert_eq!(
            s.get_prebuild(&q.prebuild.id)
                .await
                .expect("get")
                .prebuild
                .stale
                .as_deref(),
            Some("main moved")
        );
        assert!(matches!(
            s.get_prebuild("pnope").await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
