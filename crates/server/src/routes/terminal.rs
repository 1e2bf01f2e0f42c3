//! A shell in a sandbox over a WebSocket: the manager checks the request, opens the
//! terminal on the sandbox's agent, then relays frames both ways unchanged.
//!
//! Binary frames are terminal bytes (keystrokes in, output out); text frames are JSON
//! control messages: `{"type":"resize","cols","rows"}` from the client,
//! `{"type":"session","id"}` first and `{"type":"exit","code"}` last from the server.
//! Browsers cannot set headers on a WebSocket, so the token may also come as the
//! subprotocol list `["atelier.terminal", "bearer.<token>"]` ([`subprotocol_token`]).

use atelier_agent_client::tungstenite::protocol::frame::coding::CloseCode;
use atelier_agent_client::tungstenite::protocol::CloseFrame as AgentCloseFrame;
use atelier_agent_client::tungstenite::Message as AgentMessage;
use atelier_agent_client::TerminalStream;
use atelier_proto::{valid_terminal_session, TERMINAL_SIZE_RANGE, TERMINAL_SUBPROTOCOL};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

/// Prefix of the subprotocol entry that carries the API token.
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The token a WebSocket request offers as the subprotocol `bearer.<token>`, next to
/// `atelier.terminal` (the only way a browser can authenticate a WebSocket).
pub fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    let offered = || {
        headers
            .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    if !offered().any(|p| p == TERMINAL_SUBPROTOCOL) {
        return None;
    }
    offered()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TerminalQuery {
    /// Terminal width in columns (1–1000).
    pub cols: u16,
    /// Terminal height in rows (1–1000).
    pub rows: u16,
    /// Reattach to this session (the id of an earlier `session` message) if its shell is
    /// still alive; otherwise a new shell starts.
    pub session: Option<String>,
    /// Where a new shell starts: absolute, or relative to the sandbox's root (default:
    /// the home directory). A directory that does not exist is refused (422).
    pub cwd: Option<String>,
}

impl TerminalQuery {
    fn check(&self) -> ApiResult<()> {
        let range = |field: &str, v: u16| {
            if TERMINAL_SIZE_RANGE.contains(&v) {
                Ok(())
            } else {
                Err(ApiError::invalid(
                    field,
                    format!(
                        "must be between {} and {}, not {v}",
                        TERMINAL_SIZE_RANGE.start(),
                        TERMINAL_SIZE_RANGE.end()
                    ),
                ))
            }
        };
        range("cols", self.cols)?;
        range("rows", self.rows)?;
        if self
            .cwd
            .as_ref()
            .is_some_and(|c| c.len() > 1024 || c.contains('\0'))
        {
            return Err(ApiError::invalid(
                "cwd",
                "must be a path of at most 1024 bytes without NUL",
            ));
        }
        if let Some(s) = &self.session {
            if !valid_terminal_session(s) {
                return Err(ApiError::invalid(
                    "session",
                    "must be 1–64 of A-Z, a-z, 0-9, '_' and '-'",
                ));
            }
        }
        Ok(())
    }
}

/// Open a shell in a running sandbox (WebSocket).
///
/// Authenticate with `Authorization: Bearer <token>`, or (browsers) with the subprotocol
/// list `["atelier.terminal", "bearer.<token>"]`; the answer then selects
/// `atelier.terminal`. Binary frames are terminal bytes both ways. Text frames are JSON:
/// the client sends `{"type":"resize","cols":N,"rows":M}`; the server first sends
/// `{"type":"session","id":"<sid>","resumed":false}` and, when the shell ends,
/// `{"type":"exit","code":N}` before closing. A detached shell lives 5 minutes; reconnect
/// with `session=<sid>` to get it back with up to 64 KiB of its recent output.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/terminal", tag = "sandboxes",
    params(("id" = String, Path), TerminalQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket"),
        (status = 401, description = "No valid token (header or subprotocol)", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 422, description = "A bad `cols`, `rows`, `session` or `cwd`", body = ErrorBody),
        (status = 426, description = "Not a WebSocket request", body = ErrorBody),
        (status = 502, description = "The sandbox's agent could not open a terminal", body = ErrorBody)))]
pub async fn terminal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TerminalQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    q.check()?;
    let agent = state.agent(&id).await?;
    let ws = ws.map_err(|rejection| {
        ApiError::new(
            axum::http::StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!(
                "this route is a WebSocket ({})",
                rejection.body_text().trim_end_matches('.')
            ),
        )
    })?;
    // Opened before answering 101, so that a failure is still an ordinary error answer.
    let upstream = agent
        .open_terminal_in(q.cols, q.rows, q.session.as_deref(), q.cwd.as_deref())
        .await?;
    Ok(ws
        .protocols([TERMINAL_SUBPROTOCOL])
        .on_upgrade(move |socket| relay(socket, upstream)))
}

/// Passes frames between the client and the agent until either side ends.
async fn relay(client: WebSocket, agent: TerminalStream) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_agent, mut from_agent) = agent.split();
    let down = async {
        while let Some(Ok(msg)) = from_agent.next().await {
            let out = match msg {
                AgentMessage::Binary(b) => Message::Binary(b),
                AgentMessage::Text(t) => Message::Text(t.as_str().into()),
                AgentMessage::Close(frame) => {
                    let frame = frame.map(|f| CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = to_client.send(Message::Close(frame)).await;
                    return;
                }
                // Pings are answered on each hop by the libraries themselves.
                AgentMessage::Ping(_) | AgentMessage::Pong(_) | AgentMessage::Frame(_) => continue,
            };
            if to_client.send(out).await.is_err() {
                return;
            }
        }
        let _ = to_client
            .send(Message::Close(Some(CloseFrame {
                code: 1011,
                reason: "the sandbox's terminal went away".into(),
            })))
            .await;
    };
    let up = async {
        while let Some(Ok(msg)) = from_client.next().await {
            let out = match msg {
                Message::Binary(b) => AgentMessage::Binary(b),
                Message::Text(t) => AgentMessage::text(t.as_str()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if to_agent.send(out).await.is_err() {
                return;
            }
        }
        // The client left: the agent keeps the shell, detached, for a reconnect.
        let _ = to_agent
            .send(AgentMessage::Close(Some(AgentCloseFrame {
                code: CloseCode::Away,
                reason: "the client went away".into(),
            })))
            .await;
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_token_comes_from_the_subprotocol_list() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("atelier.terminal, bearer.atl_secret"),
        );
        assert_eq!(subprotocol_token(&h), Some("atl_secret"));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("bearer.atl_secret"),
        );
        assert_eq!(subprotocol_token(&h), None, "only next to atelier.terminal");
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("atelier.terminal, bearer."),
        );
        assert_eq!(subprotocol_token(&h), None);
    }

    #[test]
    fn sizes_and_sessions_are_checked_by_field() {
        let q = |cols, rows, session: Option<&str>| TerminalQuery {
            cols,
            rows,
            session: session.map(str::to_owned),
            cwd: None,
        };
        assert!(q(80, 24, Some("abc-123")).check().is_ok());
        let e = q(0, 24, None).check().unwrap_err();
        assert_eq!(e.details["fields"][0]["field"], "cols");
        let e = q(80, 1001, None).check().unwrap_err();
        assert_eq!(e.details["fields"][0]["field"], "rows");
        let e = q(80, 24, Some("a b")).check().unwrap_err();
        assert_eq!(e.details["fields"][0]["field"], "session");
        let long = TerminalQuery {
            cwd: Some("w".repeat(1025)),
            ..q(80, 24, None)
        };
        let e = long.check().unwrap_err();
        assert_eq!(e.details["fields"][0]["field"], "cwd");
    }
}
