//! TCP tunnels into the sandbox (`GET /v1/tunnel/{port}`).
//!
//! The request asks for an HTTP/1.1 upgrade to [`TUNNEL_UPGRADE`]. The agent first connects
//! to `127.0.0.1:{port}` inside the sandbox, so that nothing listening is a plain 502 JSON
//! answer; then it answers 101 and bridges the upgraded connection to that socket, byte
//! for byte, until either side closes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use atelier_proto::TUNNEL_UPGRADE;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{ApiError, ApiResult};

/// Longest wait for the sandbox port to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn parse_port(raw: &str) -> ApiResult<u16> {
    raw.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::invalid(format!("port: must be 1–65535, not {raw:?}")))
}

fn asks_for_tunnel(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, TUNNEL_UPGRADE)
}

/// `GET /v1/tunnel/{port}` with `Connection: Upgrade` and `Upgrade: atelier-tunnel`.
pub async fn tunnel_h(Path(port): Path<String>, mut req: Request) -> ApiResult<Response> {
    let port = parse_port(&port)?;
    if !asks_for_tunnel(req.headers()) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!("send `Connection: Upgrade` and `Upgrade: {TUNNEL_UPGRADE}`"),
        ));
    }
    let on_upgrade = req.extensions_mut().remove::<OnUpgrade>().ok_or_else(|| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this connection cannot be upgraded (HTTP/1.1 is required)",
        )
    })?;
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let code = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection_refused"
            } else {
                "connection_failed"
            };
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                code,
                format!("cannot connect to port {port} in the sandbox: {e}"),
            )
            .with_details(serde_json::json!({ "port": port })));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "connection_timeout",
                format!("port {port} in the sandbox did not accept within {CONNECT_TIMEOUT:?}"),
            ))
        }
    };
    let _ = upstream.set_nodelay(true);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, port, "tunnel upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        let mut upstream = upstream;
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(port, up, down, "tunnel closed"),
            Err(e) => tracing::debug!(port, error = %e, "tunnel ended"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TUNNEL_UPGRADE)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the upgrade answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked() {
        assert_eq!(parse_port("8080").unwrap(), 8080);
        for bad in ["0", "65536", "-1", "http"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_tunnel_upgrade_is_accepted() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "atelier-tunnel".parse().unwrap());
        assert!(asks_for_tunnel(&h));
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(!asks_for_tunnel(&h));
    }
}
