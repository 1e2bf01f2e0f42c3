//! One HTTP request carried to a port inside a sandbox through an agent tunnel, and
//! back; a WebSocket (or any `Upgrade`) stays connected both ways after the 101.
//!
//! Opening a tunnel costs a round trip to the agent and an HTTP handshake, so the
//! connection a request used goes back to a small pool per sandbox port, for the next
//! request once its response is read (a page's scripts and styles, an HMR client's
//! fetches). A pooled connection the dev server closed meanwhile is noticed before the
//! request is written, and the request goes out on a fresh one instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atelier_agent_client::AgentClient;
use atelier_core::SandboxId;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::error::{ApiError, ApiResult};

/// Headers of one hop only (RFC 9110 §7.6.1), never passed on; `Connection` and
/// `Upgrade` are put back for an upgrade.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::UPGRADE,
];

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// Idle connections kept per sandbox port.
const IDLE_PER_PORT: usize = 8;
/// Past this many ports in the pool, those whose connections all closed are dropped.
const PORTS_BEFORE_SWEEP: usize = 256;

/// A port of a sandbox.
type PortKey = (SandboxId, u16);

/// HTTP/1 connections to sandbox ports, kept for reuse.
#[derive(Clone, Default)]
pub struct ConnectionPool(Arc<Mutex<HashMap<PortKey, Vec<Sender>>>>);

impl ConnectionPool {
    /// A pooled connection to the port that can take a request now.
    fn take(&self, key: &PortKey) -> Option<Sender> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let idle = map.get_mut(key)?;
        idle.retain(|s| !s.is_closed());
        let ready = idle.iter().position(Sender::is_ready)?;
        Some(idle.swap_remove(ready))
    }

    /// Keeps `sender` for a later request (it becomes ready once its response is read).
    fn give(&self, key: PortKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PORTS_BEFORE_SWEEP {
            map.retain(|_, idle| {
                idle.retain(|s| !s.is_closed());
                !idle.is_empty()
            });
        }
        let idle = map.entry(key).or_default();
        idle.retain(|s| !s.is_closed());
        if idle.len() < IDLE_PER_PORT {
            idle.push(sender);
        }
    }
}

/// A new HTTP/1 connection to `port` through an agent tunnel.
async fn connect(agent: &AgentClient, port: u16) -> ApiResult<Sender> {
    let tunnel = agent.open_tunnel(port).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
        .await
        .map_err(|e| ApiError::bad_gateway(format!("talking HTTP to port {port}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Sends `req` to `port` of `sandbox` (through `agent`) as `path_and_query`, with
/// `Host: 127.0.0.1:<port>` (what a dev server bound to loopback expects) and the
/// original host in `X-Forwarded-Host`.
pub async fn forward(
    pool: &ConnectionPool,
    agent: &AgentClient,
    sandbox: &SandboxId,
    port: u16,
    mut req: Request,
    path_and_query: &str,
    forwarded_proto: &str,
) -> ApiResult<Response> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .filter(|_| connection_has(req.headers(), "upgrade"));
    let downstream = upgrade
        .is_some()
        .then(|| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>())
        .flatten();

    let (mut parts, body) = req.into_parts();
    parts.uri = path_and_query
        .parse::<Uri>()
        .map_err(|e| ApiError::invalid("path", e.to_string()))?;
    parts.version = axum::http::Version::HTTP_11;
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(&format!("127.0.0.1:{port}")) {
        parts.headers.insert(header::HOST, host);
    }
    if let Some(host) = original_host {
        parts.headers.insert("x-forwarded-host", host);
    }
    if let Ok(proto) = HeaderValue::from_str(forwarded_proto) {
        parts.headers.insert("x-forwarded-proto", proto);
    }
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }

    let mut request = axum::http::Request::from_parts(parts, body);
    let key = (sandbox.clone(), port);
    let did_not_answer =
        |e: hyper::Error| ApiError::bad_gateway(format!("port {port} did not answer: {e}"));
    // An upgraded connection is the client's for good: never from or back to the pool.
    let pooled = if upgrade.is_none() {
        pool.take(&key)
    } else {
        None
    };
    let mut upstream = match pooled {
        Some(mut sender) => match sender.try_send_request(request).await {
            Ok(response) => {
                pool.give(key, sender);
                response
            }
            Err(mut e) => {
                let Some(unsent) = e.take_message() else {
                    return Err(did_not_answer(e.into_error()));
                };
                // Closed while idle: the request never left; a fresh connection takes it.
                request = unsent;
                let mut sender = connect(agent, port).await?;
                let response = sender.send_request(request).await.map_err(did_not_answer)?;
                pool.give(key, sender);
                response
            }
        },
        None => {
            let mut sender = connect(agent, port).await?;
            let response = sender.send_request(request).await.map_err(did_not_answer)?;
            if upgrade.is_none() {
                pool.give(key, sender);
            }
            response
        }
    };

    if upstream.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(downstream) = downstream else {
            return Err(ApiError::bad_gateway(format!(
                "port {port} switched protocols on a request that asked for no upgrade"
            )));
        };
        let upstream_io = hyper::upgrade::on(&mut upstream);
        tokio::spawn(async move {
            let (Ok(up), Ok(down)) = tokio::join!(upstream_io, downstream) else {
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(up), &mut TokioIo::new(down)).await;
        });
        let (parts, _) = upstream.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the hop-by-hop headers, and those `Connection` names as such.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert!(connection_has(&h, "Keep-Alive"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }
}
