//! Session template overrides, global and per workspace, over the built-ins.

use atelier_core::template::{builtin, SessionTemplate};
use atelier_core::WorkspaceId;
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

const GLOBAL: &str = "global";

impl Store {
    /// The templates in force for `workspace` (or globally): built-ins, replaced by global
    /// overrides, replaced by the workspace's, plus templates that exist only as overrides.
    pub async fn templates(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<SessionTemplate>> {
        let mut out = builtin();
        let mut scopes = vec![GLOBAL.to_owned()];
        if let Some(w) = workspace {
            scopes.push(w.to_string());
        }
        for scope in scopes {
            let rows =
                sqlx::query("SELECT body FROM session_templates WHERE scope = ? ORDER BY name")
                    .bind(&scope)
                    .fetch_all(&self.pool)
                    .await?;
            for row in rows {
                let t: SessionTemplate = serde_json::from_str(row.get::<&str, _>("body"))
                    .map_err(|e| StoreError::Corrupt(format!("template override: {e}")))?;
                match out.iter_mut().find(|b| b.name == t.name) {
                    Some(slot) => *slot = t,
                    None => out.push(t),
                }
            }
        }
        Ok(out)
    }

    pub async fn template(
        &self,
        workspace: Option<&WorkspaceId>,
        name: &str,
    ) -> Result<SessionTemplate> {
        self.templates(workspace)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("session template {name:?}"),
            })
    }

    pub async fn put_template(
        &self,
        workspace: Option<&WorkspaceId>,
        template: &SessionTemplate,
    ) -> Result<()> {
        let body =
            serde_json::to_string(template).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO session_templates (scope, name, body, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (scope, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(workspace.map(|w| w.to_string()).unwrap_or_else(|| GLOBAL.to_owned()))
        .bind(&template.name)
        .bind(body)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes an override; false when there was none.
    pub async fn delete_template(
        &self,
        workspace: Option<&WorkspaceId>,
        name: &str,
    ) -> Result<bool> {
        let r = sqlx::query("DELETE FROM session_templates WHERE scope = ? AND name = ?")
            .bind(
                workspace
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| GLOBAL.to_owned()),
            )
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::store;

    #[tokio::test]
    async fn workspace_overrides_beat_global_ones_which_beat_builtins() {
        let (s, _d) = store().await;
        let spec = serde_json::from_value(serde_json::json!({"name": "w"})).unwrap();
        let ws = s.create_workspace(&spec, None).await.unwrap().0.id;
        let mut t = s.template(None, "implementation").await.unwrap();
        assert_eq!(t.prompt, "{{task.prompt}}");
        t.prompt = "Global: {{task.prompt}}".into();
        s.put_template(None, &t).await.unwrap();
        t.prompt = "Workspace: {{task.prompt}}".into();
        s.put_template(Some(&ws), &t).await.unwrap();
        assert_eq!(
            s.template(None, "implementation").await.unwrap().prompt,
            "Global: {{task.prompt}}"
        );
        assert_eq!(
            s.template(Some(&ws), "implementation")
                .await
                .unwrap()
                .prompt,
            "Workspace: {{task.prompt}}"
        );
        assert!(s
            .delete_template(Some(&ws), "implementation")
            .await
            .unwrap());
        assert!(!s
            .delete_template(Some(&ws), "implementation")
            .await
            .unwrap());
        assert_eq!(
            s.template(Some(&ws), "implementation")
                .await
                .unwrap()
                .prompt,
            "Global: {{task.prompt}}"
        );
        assert!(s.template(None, "nope").await.is_err());
        assert_eq!(s.templates(None).await.unwrap().len(), 4);
    }
}
