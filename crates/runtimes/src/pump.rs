//! The resumable event-stream pump every adapter shares: read SSE frames from an
//! agent's stream, hand each to the adapter, and when the connection drops, idles past
//! the policy's timeout or ends, reopen it from where the adapter is (with backoff, up
//! to the policy's attempts), ending with the adapter's last words when it gives up.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::sse::{SseEvent, SseParser};
use crate::{AgentEvent, Cursor, ReconnectPolicy, Result, RuntimeError};

/// An agent's raw event stream, as it comes off HTTP.
pub type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// What an adapter made of one frame.
pub enum Fed {
    Events(Vec<(Cursor, AgentEvent)>),
    /// The agent is gone and nothing follows: the stream ends with this error.
    End(Vec<(Cursor, AgentEvent)>, String),
}

/// One adapter's side of a pump.
#[async_trait]
pub trait EventSource: Send + 'static {
    /// How a reconnect is timed and when it gives up.
    fn policy(&self) -> ReconnectPolicy;
    /// The SSE parser of the current connection.
    fn parser(&mut self) -> &mut SseParser;
    /// Frames read before the stream was handed out (its first, awaited).
    fn take_buffered(&mut self) -> Vec<SseEvent>;
    /// Reopens the stream after what has been fed, resetting the parser to it.
    async fn reconnect(&mut self) -> Result<ByteStream>;
    /// Turns one frame into events; `attempt` is the failure count, which a frame that
    /// proves a good connection resets.
    async fn feed(&mut self, sse: SseEvent, attempt: &mut u32) -> Fed;
    /// The events that close the stream when reconnecting gave up (`message` says why).
    fn connection_lost(&mut self, message: &str) -> Vec<(Cursor, AgentEvent)>;
    /// What the far end is called in messages: "agent", "host".
    fn peer(&self) -> &'static str;
}

/// Pumps `source`'s events, starting with the connection `first`.
pub fn pump<S: EventSource>(
    mut source: S,
    first: ByteStream,
) -> impl Stream<Item = Result<(Cursor, AgentEvent)>> {
    async_stream::stream! {
        let policy = source.policy();
        let mut conn: Option<ByteStream> = Some(first);
        let mut attempt: u32 = 0;
        let mut last_error = String::from("connection closed");
        loop {
            let mut body = match conn.take() {
                Some(b) => b,
                None => {
                    attempt += 1;
                    if attempt > policy.max_attempts {
                        let msg = format!("lost the connection to the agent: {last_error}");
                        for e in source.connection_lost(&msg) {
                            yield Ok(e);
                        }
                        yield Err(RuntimeError::Disconnected(last_error));
                        return;
                    }
                    tokio::time::sleep(policy.delay(attempt)).await;
                    match source.reconnect().await {
                        Ok(b) => b,
                        Err(RuntimeError::Unauthorized) => {
                            yield Err(RuntimeError::Unauthorized);
                            return;
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            tracing::debug!(attempt, peer = source.peer(), "reconnect failed: {e}");
                            continue;
                        }
                    }
                }
            };
            let mut frames = source.take_buffered();
            loop {
                for sse in frames.drain(..) {
                    match source.feed(sse, &mut attempt).await {
                        Fed::Events(evs) => for e in evs { yield Ok(e) },
                        Fed::End(evs, msg) => {
                            for e in evs { yield Ok(e) }
                            yield Err(RuntimeError::Disconnected(msg));
                            return;
                        }
                    }
                }
                match tokio::time::timeout(policy.idle_timeout, body.next()).await {
                    Ok(Some(Ok(bytes))) => frames = source.parser().push(&bytes),
                    Ok(Some(Err(e))) => {
                        last_error = e.to_string();
                        break;
                    }
                    Ok(None) => {
                        last_error = format!("the {} closed the event stream", source.peer());
                        break;
                    }
                    Err(_) => {
                        last_error = "no data on the event stream".into();
                        break;
                    }
                }
            }
            source.parser().finish();
            tracing::debug!(peer = source.peer(), "event stream dropped: {last_error}");
        }
    }
}
