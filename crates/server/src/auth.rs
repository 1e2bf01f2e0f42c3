//! Bearer-token authentication for every route but the public ones.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Routes reachable without a token: health, and the API's own description and viewer
/// (they hold no data, and the viewer must load before a token can be typed into it).
pub fn is_public(path: &str) -> bool {
    path == "/api/v1/health"
        || path == "/api/v1/openapi.json"
        // A TLS front asks whether a name is ours; the answer names no secret.
        || path == "/api/v1/tls/ask"
        || path == "/swagger"
        || path.starts_with("/swagger/")
        // Preview links carry their own capability (a ticket minted with the token).
        || path == "/p"
        || path.starts_with("/p/")
}

pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| crate::routes::terminal::subprotocol_token(req.headers()));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) => {
            next.run(req).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

/// A secret derived one-way from `parts` (a sandbox's token first) for one `purpose`:
/// hex of SHA-256 over `purpose`, then each part, NUL-separated. Derived rather than
/// stored, so a restarted manager finds it again; one-way, so whoever holds it learns
/// nothing of the token it came from.
pub fn derived_secret(purpose: &str, parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new().chain_update(purpose.as_bytes());
    for part in parts {
        hash = hash.chain_update(b"\0").chain_update(part.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the admin token, creating it (0600) on first start. Returns the token and
/// whether it was just created (so it is printed exactly once).
pub fn load_or_create_admin_token(path: &Path) -> std::io::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = format!("atl_{}", atelier_core::id::random_token());
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok((token, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn the_admin_token_is_created_once_with_mode_600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin.token");
        let (t1, created) = load_or_create_admin_token(&p).unwrap();
        assert!(created && t1.starts_with("atl_"));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (t2, created) = load_or_create_admin_token(&p).unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
    }
}
