use std::convert::Infallible;

use atelier_core::Event;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use futures::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (the `Last-Event-ID` header wins when both are sent);
    /// without either, only new events are sent.
    pub after: Option<i64>,
    /// Only events about this sandbox.
    pub sandbox: Option<String>,
}

/// The typed event stream (Server-Sent Events). Each event has an `id:`; reconnect with
/// `Last-Event-ID` to receive everything missed, in order, exactly once.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this id")),
    responses((status = 200, content_type = "text/event-stream", body = Event)))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid("Last-Event-ID", "must be an event id (an integer)")
                })?,
        ),
        None => None,
    };
    let sandbox = match &q.sandbox {
        Some(s) => Some(super::sandbox_id(s)?),
        None => None,
    };
    let after = match last_event_id.or(q.after) {
        Some(id) => id,
        None => state.store.last_event_id().await?,
    };
    Ok(crate::events::to_sse(state.bus.follow(
        after,
        sandbox,
        state.shutdown.clone(),
    )))
}
