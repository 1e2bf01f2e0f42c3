//! Extractors that turn every malformed input into the API's error shape: 400 for
//! unparsable JSON, 422 naming the field for wrong types or values, 413 for bodies over
//! the limit, 415 for a body that is not JSON.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// A JSON body.
pub struct ApiJson<T>(pub T);

/// The raw bytes of a request body (also kept by [`ApiJson`] users that need them).
pub struct ApiBytes(pub Bytes);

/// A query string.
pub struct ApiQuery<T>(pub T);

/// The optional `Idempotency-Key` header.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is over the size limit",
                    )
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_body", rejection.body_text())
                }
            })
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json_content_type(req.headers())?;
        let ApiBytes(bytes) = ApiBytes::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn check_json_content_type(headers: &axum::http::HeaderMap) -> ApiResult<()> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected Content-Type: application/json, got {ct:?}"),
            ));
        }
    }
    Ok(())
}

/// Parses JSON, telling syntax errors (400) from type and value errors (422, with the
/// path of the offending field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError::malformed_json(
            "the request body is empty; expected a JSON document",
        ));
    }
    // Syntax first, so `[1,` is malformed (400) rather than of the wrong type (422).
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::malformed_json(format!("malformed JSON: {e}")))?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                ApiError::invalid(field_name(&path, &message, "body"), message)
            }
            _ => ApiError::malformed_json(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::malformed_json(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The field to blame: the path serde reached, plus the name of a missing field.
fn field_name(path: &str, message: &str, root: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next());
    match (path, missing) {
        (".", Some(m)) => m.to_owned(),
        (".", None) => root.to_owned(),
        (p, Some(m)) => format!("{p}.{m}"),
        (p, None) => p.to_owned(),
    }
}

/// serde_json appends " at line 1 column 42" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                ApiError::invalid(field_name(&path, &message, "query"), message)
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let key = value.to_str().unwrap_or_default();
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "must be 1–255 visible ASCII characters",
            ));
        }
        Ok(Self(Some(key.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[test]
    fn syntax_errors_are_400_and_type_errors_name_the_field() {
        let e = parse_json::<Outer>(b"{not json").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "malformed_json"));
        let e = parse_json::<Outer>(br#"{"items":[{"count":1},{"count":"x"}]}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_value"));
        assert_eq!(e.details["fields"][0]["field"], "items[1].count");
        let e = parse_json::<Outer>(br#"{"items":[]} trailing"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = parse_json::<Outer>(b"").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = parse_json::<Outer>(b"{}").unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(e.message.contains("items"), "{}", e.message);
    }
}
