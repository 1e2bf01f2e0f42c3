//! A thin client of the manager's API with errors that say what to do.

use std::path::Path;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Atelier manager at {url}: {reason}\nhint: is `atelier serve` running? Set ATELIER_URL or --url if it listens elsewhere.")]
    Unreachable { url: String, reason: String },
    #[error("no API token: set ATELIER_TOKEN or --token (the manager keeps it in {path})")]
    NoToken { path: String },
    #[error("the manager refused the API token (401)\nhint: use the token in <data-dir>/admin.token of the manager you talk to")]
    Unauthorized,
    #[error("{message} ({code}, HTTP {status}){}", details_hint(.details))]
    Api {
        status: u16,
        code: String,
        message: String,
        details: serde_json::Value,
    },
    #[error("unexpected answer from the manager: {0}")]
    Protocol(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Serve(String),
    /// An external command that failed, named with its arguments and its stderr.
    #[error("`{command}` failed ({status}){}", stderr_tail(.stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn stderr_tail(stderr: &str) -> String {
    match stderr.trim() {
        "" => String::new(),
        s => format!(": {s}"),
    }
}

fn details_hint(details: &serde_json::Value) -> String {
    match details.get("fields").and_then(|f| f.as_array()) {
        Some(fields) if fields.len() > 1 => {
            let lines: Vec<String> = fields
                .iter()
                .map(|f| {
                    format!(
                        "  {}: {}",
                        f["field"].as_str().unwrap_or("?"),
                        f["message"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            format!("\n{}", lines.join("\n"))
        }
        _ => String::new(),
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(url: &str, token: Option<String>, data_dir: &Path) -> Result<Self, ClientError> {
        let token_path = data_dir.join("admin.token");
        let token = match token {
            Some(t) => t,
            None => std::fs::read_to_string(&token_path)
                .map(|t| t.trim().to_owned())
                .map_err(|_| ClientError::NoToken {
                    path: token_path.display().to_string(),
                })?,
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request and turns failures into [`ClientError`]s.
    pub async fn send(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let response = builder.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized);
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let error = &body["error"];
        Err(ClientError::Api {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("unknown").to_owned(),
            message: error["message"]
                .as_str()
                .unwrap_or("the manager gave no reason")
                .to_owned(),
            details: error["details"].clone(),
        })
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(builder).await?;
        response
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(Method::POST, path).json(body)).await
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}
