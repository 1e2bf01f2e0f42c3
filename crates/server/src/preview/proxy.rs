//! One HTTP request carried to a port inside a sandbox through an agent tunnel, and
//! back; a WebSocket (or any `Upgrade`) stays connected both ways after the 101.

use atelier_agent_client::AgentClient;
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

/// Sends `req` to `port` in the sandbox as `path_and_query`, with `Host:
/// 127.0.0.1:<port>` (what a dev server bound to loopback expects) and the original host
/// in `X-Forwarded-Host`.
pub async fn forward(
    agent: &AgentClient,
    port: u16,
    mut req: Request,
    path_and_query: &str,
    forwarded_proto: &str,
) -> ApiResult<Response> {
    let tunnel = agent.open_tunnel(port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
        .await
        .map_err(|e| ApiError::bad_gateway(format!("talking HTTP to port {port}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

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

    let mut upstream = sender
        .send_request(axum::http::Request::from_parts(parts, body))
        .await
        .map_err(|e| ApiError::bad_gateway(format!("port {port} did not answer: {e}")))?;

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
