//! Tasks, their agent event log and the questions waiting for a human.

use atelier_core::task::{FileChange, ProxyUsage, PushOutcome, TodoItem, Usage};
use atelier_core::{Effort, Event, EventKind, SandboxId, Task, TaskStatus, WorkspaceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::{now, Idempotency, Result, Store, StoreError};

const SCOPE: &str = "tasks";

/// What the server decided a new task is.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: String,
    pub prompt: String,
    pub workspace_id: WorkspaceId,
    pub template: String,
    pub effort: Effort,
    pub base_branch: String,
    pub repo: String,
    pub status: TaskStatus,
    /// The task this one reviews (it starts from that task's branch).
    pub parent_id: Option<String>,
}

/// Live progress folded from agent events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    #[serde(default)]
    pub todos: Vec<TodoItem>,
    #[serde(default)]
    pub files_touched: Vec<String>,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub changes: Vec<FileChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushOutcome>,
}

/// A task with what only the manager needs: where its agent stream resumes.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub task: Task,
    pub parent_id: Option<String>,
    pub session_id: Option<String>,
    pub cursor: Option<String>,
}

/// A question or permission request, as the attention feed shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Interaction {
    pub id: String,
    pub task_id: String,
    /// `permission` or `question`.
    pub kind: String,
    pub title: String,
    /// The agent's ask, normalized (options, patterns…).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub asked_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

/// One agent event of a task, with its position in the task's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

const COLUMNS: &str = "id, title, prompt, workspace_id, template, effort, base_branch, repo, branch, status, sandbox_id, \
                       progress, summary, error, cursor, session_id, parent_id, created_at, updated_at, \
                       proxy_requests, proxy_input_tokens, proxy_output_tokens, proxy_cost_usd";

impl Store {
    pub async fn create_task(
        &self,
        new: &NewTask,
        idempotency: Option<&Idempotency>,
    ) -> Result<(TaskRecord, Option<Event>)> {
        let mut tx = self.write_tx().await?;
        if let Some(idem) = idempotency {
            if let Some(existing) = self.idempotent_hit(&mut tx, SCOPE, idem).await? {
                tx.commit().await?;
                return Ok((self.get_task(&existing).await?, None));
            }
        }
        let id = atelier_core::id::TaskId::generate().to_string();
        let branch = atelier_core::task::branch_name(&new.title, &id);
        let at = now();
        sqlx::query(
            "INSERT INTO tasks (id, title, prompt, workspace_id, template, effort, base_branch, repo, branch, status, \
             parent_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&new.title)
        .bind(&new.prompt)
        .bind(new.workspace_id.as_str())
        .bind(&new.template)
        .bind(serde_json::to_value(new.effort).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
        .bind(&new.base_branch)
        .bind(&new.repo)
        .bind(&branch)
        .bind(new.status.as_str())
        .bind(new.parent_id.as_deref())
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if let Some(idem) = idempotency {
            self.remember_idempotency(&mut tx, SCOPE, idem, &id).await?;
        }
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::TaskStatus {
                task_id: id.clone(),
                from: None,
                to: new.status,
                reason: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok((self.get_task(&id).await?, Some(event)))
    }

    pub async fn get_task(&self, id: &str) -> Result<TaskRecord> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("task {id:?}"),
            })?;
        task_from_row(&row)
    }

    /// Tasks, newest first, optionally only some statuses / one workspace.
    pub async fn list_tasks(
        &self,
        statuses: &[TaskStatus],
        workspace: Option<&WorkspaceId>,
    ) -> Result<Vec<TaskRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM tasks WHERE 1 = 1"));
        if !statuses.is_empty() {
            q.push(" AND status IN (");
            let mut sep = q.separated(", ");
            for s in statuses {
                sep.push_bind(s.as_str());
            }
            q.push(")");
        }
        if let Some(w) = workspace {
            q.push(" AND workspace_id = ")
                .push_bind(w.as_str().to_owned());
        }
        q.push(" ORDER BY created_at DESC, id");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Moves a task (compare-and-set) and records the event; `error` is kept when given.
    pub async fn transition_task(
        &self,
        id: &str,
        from: TaskStatus,
        to: TaskStatus,
        reason: Option<&str>,
    ) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        let error = if to == TaskStatus::Failed {
            reason
        } else {
            None
        };
        let updated = sqlx::query(
            "UPDATE tasks SET status = ?, error = COALESCE(?, CASE WHEN ? = 'queued' THEN NULL ELSE error END), \
             updated_at = ? WHERE id = ? AND status = ?",
        )
        .bind(to.as_str())
        .bind(error)
        .bind(to.as_str())
        .bind(now())
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match current {
                None => StoreError::NotFound {
                    what: format!("task {id:?}"),
                },
                Some(s) => StoreError::Conflict(format!("task {id} is {s}, not {from}")),
            });
        }
        let event = Self::append_event_tx(
            &mut tx,
            EventKind::TaskStatus {
                task_id: id.to_owned(),
                from: Some(from),
                to,
                reason: reason.map(str::to_owned),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    pub async fn set_task_sandbox(&self, id: &str, sandbox: Option<&SandboxId>) -> Result<()> {
        sqlx::query("UPDATE tasks SET sandbox_id = ?, updated_at = ? WHERE id = ?")
            .bind(sandbox.map(|s| s.as_str()))
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_task_session(&self, id: &str, session: &str) -> Result<()> {
        sqlx::query("UPDATE tasks SET session_id = ?, updated_at = ? WHERE id = ?")
            .bind(session)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores one agent event of a task with the stream position after it and the
    /// progress it led to, and announces it — in one transaction.
    pub async fn record_task_event(
        &self,
        id: &str,
        event: &serde_json::Value,
        cursor: Option<&str>,
        progress: &TaskProgress,
    ) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO task_events (task_id, at, event) VALUES (?, ?, ?)")
            .bind(id)
            .bind(now())
            .bind(event.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE tasks SET cursor = COALESCE(?, cursor), progress = ?, updated_at = ? WHERE id = ?")
            .bind(cursor)
            .bind(serde_json::to_string(progress).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let e = Self::append_event_tx(
            &mut tx,
            EventKind::TaskActivity {
                task_id: id.to_owned(),
                activity: event.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn task_events(&self, id: &str, after: i64, limit: u32) -> Result<Vec<TaskEvent>> {
        let rows = sqlx::query("SELECT id, at, event FROM task_events WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(id)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskEvent {
                    seq: r.get("id"),
                    at: r.get::<DateTime<Utc>, _>("at"),
                    event: serde_json::from_str(r.get::<&str, _>("event"))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    /// Adds one model call made through the proxy to the task's count.
    pub async fn add_proxy_usage(
        &self,
        id: &str,
        input_tokens: u64,
        output_tokens: u64,
        cost_usd: f64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE tasks SET proxy_requests = proxy_requests + 1, \
             proxy_input_tokens = proxy_input_tokens + ?, \
             proxy_output_tokens = proxy_output_tokens + ?, \
             proxy_cost_usd = proxy_cost_usd + ? WHERE id = ?",
        )
        .bind(i64::try_from(input_tokens).unwrap_or(i64::MAX))
        .bind(i64::try_from(output_tokens).unwrap_or(i64::MAX))
        .bind(if cost_usd.is_finite() { cost_usd } else { 0.0 })
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("task {id:?}"),
            });
        }
        Ok(())
    }

    pub async fn set_task_progress(&self, id: &str, progress: &TaskProgress) -> Result<()> {
        sqlx::query("UPDATE tasks SET progress = ?, updated_at = ? WHERE id = ?")
            .bind(serde_json::to_string(progress).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The result of a turn: the agent's summary and the branch's diff.
    pub async fn set_task_result(&self, id: &str, summary: Option<&str>, diff: &str) -> Result<()> {
        sqlx::query("UPDATE tasks SET summary = ?, diff = ?, updated_at = ? WHERE id = ?")
            .bind(summary)
            .bind(diff)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn task_diff(&self, id: &str) -> Result<Option<String>> {
        sqlx::query_scalar::<_, Option<String>>("SELECT diff FROM tasks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("task {id:?}"),
            })
    }

    /// Records an ask; a repeated ask (after a reconnect) is not recorded twice.
    pub async fn ask(
        &self,
        task_id: &str,
        id: &str,
        kind: &str,
        title: &str,
        detail: &serde_json::Value,
    ) -> Result<Option<Event>> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO interactions (id, task_id, kind, title, detail, asked_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(task_id)
        .bind(kind)
        .bind(title)
        .bind(detail.to_string())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.commit().await?;
            return Ok(None);
        }
        let e = Self::append_event_tx(
            &mut tx,
            EventKind::AttentionAsked {
                task_id: task_id.to_owned(),
                interaction_id: id.to_owned(),
                title: title.to_owned(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    /// Marks an ask resolved (once); returns the event when it was still pending.
    pub async fn resolve(&self, task_id: &str, id: &str, outcome: &str) -> Result<Option<Event>> {
        let mut tx = self.write_tx().await?;
        let updated = sqlx::query(
            "UPDATE interactions SET resolved_at = ?, outcome = ? WHERE task_id = ? AND id = ? AND resolved_at IS NULL",
        )
        .bind(now())
        .bind(outcome)
        .bind(task_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            tx.commit().await?;
            return Ok(None);
        }
        let e = Self::append_event_tx(
            &mut tx,
            EventKind::AttentionResolved {
                task_id: task_id.to_owned(),
                interaction_id: id.to_owned(),
                outcome: outcome.to_owned(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    /// Asks, pending ones only unless `all`; oldest first.
    pub async fn interactions(&self, task_id: Option<&str>, all: bool) -> Result<Vec<Interaction>> {
        let rows = sqlx::query(
            "SELECT id, task_id, kind, title, detail, asked_at, resolved_at, outcome FROM interactions \
             WHERE (?1 IS NULL OR task_id = ?1) AND (?2 OR resolved_at IS NULL) ORDER BY asked_at, id",
        )
        .bind(task_id)
        .bind(all)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Interaction {
                    id: r.get("id"),
                    task_id: r.get("task_id"),
                    kind: r.get("kind"),
                    title: r.get("title"),
                    detail: serde_json::from_str(r.get::<&str, _>("detail"))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    asked_at: r.get::<DateTime<Utc>, _>("asked_at"),
                    resolved_at: r.get::<Option<DateTime<Utc>>, _>("resolved_at"),
                    outcome: r.get("outcome"),
                })
            })
            .collect()
    }
}

fn task_from_row(row: &SqliteRow) -> Result<TaskRecord> {
    let id: String = row.get("id");
    let corrupt = |what: String| StoreError::Corrupt(format!("task {id}: {what}"));
    let progress: TaskProgress =
        serde_json::from_str(row.get::<&str, _>("progress")).map_err(|e| corrupt(e.to_string()))?;
    let status: TaskStatus = row.get::<&str, _>("status").parse().map_err(corrupt)?;
    let effort: Effort = serde_json::from_value(serde_json::Value::String(row.get("effort")))
        .map_err(|e| corrupt(e.to_string()))?;
    let count = |column: &str| u64::try_from(row.get::<i64, _>(column)).unwrap_or(0);
    let task = Task {
        id: id.clone(),
        title: row.get("title"),
        prompt: row.get("prompt"),
        workspace_id: WorkspaceId::from_trusted(row.get("workspace_id")),
        template: row.get("template"),
        effort,
        base_branch: row.get("base_branch"),
        repo: row.get("repo"),
        branch: row.get("branch"),
        status,
        sandbox_id: row
            .get::<Option<String>, _>("sandbox_id")
            .map(SandboxId::from_trusted),
        progress: atelier_core::task::progress(&progress.todos),
        todos: progress.todos,
        files_touched: progress.files_touched,
        usage: progress.usage,
        proxy_usage: ProxyUsage {
            requests: count("proxy_requests"),
            input_tokens: count("proxy_input_tokens"),
            output_tokens: count("proxy_output_tokens"),
            cost_usd: row.get("proxy_cost_usd"),
        },
        changes: progress.changes,
        summary: row.get("summary"),
        error: row.get("error"),
        push: progress.push,
        created_at: row.get::<DateTime<Utc>, _>("created_at"),
        updated_at: row.get::<DateTime<Utc>, _>("updated_at"),
    };
    Ok(TaskRecord {
        task,
        parent_id: row.get("parent_id"),
        session_id: row.get("session_id"),
        cursor: row.get("cursor"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::store;

    async fn workspace(s: &Store) -> WorkspaceId {
        let spec = serde_json::from_value(serde_json::json!({"name": "w"})).unwrap();
        s.create_workspace(&spec, None).await.unwrap().0.id
    }

    fn new(ws: &WorkspaceId) -> NewTask {
        NewTask {
            title: "Add a README".into(),
            prompt: "write it".into(),
            workspace_id: ws.clone(),
            template: "implementation".into(),
            effort: Effort::High,
            base_branch: "main".into(),
            repo: "app".into(),
            status: TaskStatus::Backlog,
            parent_id: None,
        }
    }

    #[tokio::test]
    async fn tasks_move_by_compare_and_set_and_keep_their_progress() {
        let (s, _d) = store().await;
        let ws = workspace(&s).await;
        let (t, ev) = s.create_task(&new(&ws), None).await.unwrap();
        assert!(ev.is_some());
        assert!(t.task.branch.starts_with("atelier/add-a-readme-"));
        assert_eq!(t.task.effort, Effort::High);
        let id = t.task.id.clone();
        s.transition_task(&id, TaskStatus::Backlog, TaskStatus::Queued, None)
            .await
            .unwrap();
        assert!(s
            .transition_task(&id, TaskStatus::Backlog, TaskStatus::Queued, None)
            .await
            .is_err());
        let progress = TaskProgress {
            todos: vec![
                TodoItem {
                    content: "a".into(),
                    status: "completed".into(),
                },
                TodoItem {
                    content: "b".into(),
                    status: "pending".into(),
                },
            ],
            files_touched: vec!["README.md".into()],
            ..Default::default()
        };
        s.record_task_event(
            &id,
            &serde_json::json!({"type": "todos"}),
            Some("c1"),
            &progress,
        )
        .await
        .unwrap();
        let t = s.get_task(&id).await.unwrap();
        assert_eq!(
            (t.task.progress, t.cursor.as_deref()),
            (Some(50), Some("c1"))
        );
        assert_eq!(t.task.files_touched, ["README.md"]);
        assert_eq!(s.task_events(&id, 0, 10).await.unwrap().len(), 1);
        s.transition_task(&id, TaskStatus::Queued, TaskStatus::Failed, Some("boom"))
            .await
            .unwrap();
        assert_eq!(
            s.get_task(&id).await.unwrap().task.error.as_deref(),
            Some("boom")
        );
        s.transition_task(&id, TaskStatus::Failed, TaskStatus::Queued, None)
            .await
            .unwrap();
        assert_eq!(
            s.get_task(&id).await.unwrap().task.error,
            None,
            "a retry clears the error"
        );
        assert_eq!(
            s.list_tasks(&[TaskStatus::Queued], Some(&ws))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn proxy_usage_adds_up_beside_the_agents_progress() {
        let (s, _d) = store().await;
        let ws = workspace(&s).await;
        let (t, _) = s.create_task(&new(&ws), None).await.unwrap();
        let id = t.task.id;
        s.add_proxy_usage(&id, 100, 20, 0.5).await.unwrap();
        // The event stream rewrites `progress` whole; the proxy's count is not in it.
        s.set_task_progress(&id, &TaskProgress::default())
            .await
            .unwrap();
        s.add_proxy_usage(&id, 7, 3, f64::NAN).await.unwrap();
        assert_eq!(
            s.get_task(&id).await.unwrap().task.proxy_usage,
            ProxyUsage {
                requests: 2,
                input_tokens: 107,
                output_tokens: 23,
                cost_usd: 0.5
            }
        );
        assert!(matches!(
            s.add_proxy_usage("t_missing", 1, 1, 0.0).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn asks_are_recorded_once_and_resolved_once() {
        let (s, _d) = store().await;
        let ws = workspace(&s).await;
        let (t, _) = s.create_task(&new(&ws), None).await.unwrap();
        let id = t.task.id;
        assert!(s
            .ask(&id, "q1", "question", "Which?", &serde_json::json!({}))
            .await
            .unwrap()
            .is_some());
        assert!(s
            .ask(&id, "q1", "question", "Which?", &serde_json::json!({}))
            .await
            .unwrap()
            .is_none());
        assert_eq!(s.interactions(None, false).await.unwrap().len(), 1);
        assert!(s.resolve(&id, "q1", "answered").await.unwrap().is_some());
        assert!(s.resolve(&id, "q1", "answered").await.unwrap().is_none());
        assert!(s.interactions(None, false).await.unwrap().is_empty());
        assert_eq!(
            s.interactions(Some(&id), true).await.unwrap()[0]
                .outcome
                .as_deref(),
            Some("answered")
        );
    }
}
