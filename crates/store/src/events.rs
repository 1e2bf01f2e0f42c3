//! The persisted event log behind the event stream.

use atelier_core::{Event, EventKind};
use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, Transaction};

use crate::{now, Result, Store, StoreError};

impl Store {
    /// Appends an event inside the caller's transaction, so an event exists exactly when
    /// the change it describes was committed.
    pub(crate) async fn append_event_tx(
        tx: &mut Transaction<'_, Sqlite>,
        kind: EventKind,
    ) -> Result<Event> {
        let at = now();
        let payload =
            serde_json::to_string(&kind).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (at, type, sandbox_id, payload) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(at)
        .bind(kind.name())
        .bind(kind.sandbox_id().map(|s| s.as_str().to_owned()))
        .bind(payload)
        .fetch_one(&mut **tx)
        .await?;
        Ok(Event { id, at, kind })
    }

    pub async fn append_event(&self, kind: EventKind) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        let event = Self::append_event_tx(&mut tx, kind).await?;
        tx.commit().await?;
        Ok(event)
    }

    /// Events with an id greater than `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows =
            sqlx::query("SELECT id, at, payload FROM events WHERE id > ? ORDER BY id LIMIT ?")
                .bind(after)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get("id");
                let kind: EventKind = serde_json::from_str(r.get::<&str, _>("payload"))
                    .map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?;
                Ok(Event {
                    id,
                    at: r.get::<DateTime<Utc>, _>("at"),
                    kind,
                })
            })
            .collect()
    }

    /// The id of the newest event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM events")
                .fetch_one(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }
}
