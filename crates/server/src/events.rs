//! The event bus: events are committed to the store first, then broadcast. Subscribers
//! resume from any id by replaying the store, then follow the broadcast.

use std::convert::Infallible;
use std::time::Duration;

use atelier_core::{Event, SandboxId};
use atelier_store::Store;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct EventBus {
    store: Store,
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(store: Store) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { store, tx }
    }

    /// Announces an event that is already committed to the store.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Every event after `after`, then live ones, in id order, without gaps or repeats.
    pub fn follow(
        &self,
        after: i64,
        sandbox: Option<SandboxId>,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Event> + Send + 'static {
        let store = self.store.clone();
        let mut rx = self.tx.subscribe();
        async_stream::stream! {
            let mut last = after;
            let wanted = |e: &Event| sandbox.as_ref().is_none_or(|s| e.kind.sandbox_id() == Some(s));
            // Replay what was committed before we subscribed (and anything missed when
            // the broadcast lagged), then follow live events.
            'replay: loop {
                loop {
                    let Ok(batch) = store.events_after(last, 500).await else { break 'replay };
                    if batch.is_empty() {
                        break;
                    }
                    for e in batch {
                        last = e.id;
                        if wanted(&e) {
                            yield e;
                        }
                    }
                }
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'replay,
                        received = rx.recv() => match received {
                            Ok(e) if e.id <= last => continue,
                            // A gap means an event committed out of order: fetch from the store.
                            Ok(e) if e.id > last + 1 => {
                                if let Ok(batch) = store.events_after(last, 500).await {
                                    for missed in batch.into_iter().filter(|m| m.id <= e.id) {
                                        last = missed.id;
                                        if wanted(&missed) { yield missed; }
                                    }
                                }
                                if e.id > last {
                                    last = e.id;
                                    if wanted(&e) { yield e; }
                                }
                            }
                            Ok(e) => {
                                last = e.id;
                                if wanted(&e) { yield e; }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => continue 'replay,
                            Err(broadcast::error::RecvError::Closed) => break 'replay,
                        }
                    }
                }
            }
        }
    }
}

/// Wraps an event stream as Server-Sent Events (`id:` = event id, `event:` = type).
pub fn to_sse(
    events: impl Stream<Item = Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static> {
    use futures::StreamExt;
    let stream = events.map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
        Ok(SseEvent::default()
            .id(e.id.to_string())
            .event(e.kind.name())
            .data(data))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
