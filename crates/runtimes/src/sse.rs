//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules).
//!
//! Feed it bytes as they arrive; it returns complete events. Lines end with `\n`, `\r\n`
//! or `\r` (even when a `\r\n` pair is split across chunks); `data:` lines of one event
//! are joined with `\n`; lines starting with `:` are comments; an `id:` holding a NUL is
//! ignored; the last seen id persists across events, which is what a client sends back
//! as `Last-Event-ID` when it reconnects.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any (the spec's default type is `message`).
    pub event: Option<String>,
    /// The joined `data:` lines.
    pub data: String,
    /// The `id:` field carried by this very event, if it had one.
    pub id: Option<String>,
    /// The stream's last event id after this event (the reconnect cursor).
    pub last_event_id: Option<String>,
    /// A `retry:` hint in milliseconds, if this event carried one.
    pub retry_ms: Option<u64>,
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    retry_ms: Option<u64>,
    last_event_id: Option<String>,
    /// Set when the previous chunk ended with `\r`, so a leading `\n` belongs to it.
    pending_cr: bool,
    max_event_bytes: usize,
}

/// Limit on one event's buffered size; a larger event is dropped rather than grown
/// without bound (an agent must not be able to exhaust our memory).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

impl SseParser {
    pub fn new() -> SseParser {
        SseParser {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            ..SseParser::default()
        }
    }

    /// Starts from a known last event id (for a resumed stream).
    pub fn with_last_event_id(id: Option<String>) -> SseParser {
        SseParser {
            last_event_id: id,
            ..SseParser::new()
        }
    }

    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Feeds bytes and returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                let mut next = i + 1;
                if b == b'\r' {
                    if next < self.buf.len() {
                        if self.buf[next] == b'\n' {
                            next += 1;
                        }
                    } else {
                        self.pending_cr = true;
                    }
                }
                if let Some(ev) = self.line(&line) {
                    out.push(ev);
                }
                start = next;
                i = next;
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
        if self.buf.len() + self.data.len() > self.max_event_bytes {
            tracing::warn!(
                "SSE event larger than {} bytes dropped",
                self.max_event_bytes
            );
            self.buf.clear();
            self.reset_event();
        }
        out
    }

    /// Signals the end of the stream: an event without its terminating blank line is
    /// discarded, as the spec says.
    pub fn finish(&mut self) {
        self.buf.clear();
        self.pending_cr = false;
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event = None;
        self.id = None;
        self.retry_ms = None;
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.find(':') {
            Some(pos) => {
                let v = &line[pos + 1..];
                (&line[..pos], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_string());
                self.last_event_id = (!value.is_empty()).then(|| value.to_string());
            }
            "retry" => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if !self.has_data {
            // No data: nothing is dispatched, but the id (already stored) stays.
            self.reset_event();
            return None;
        }
        let ev = SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
            id: self.id.take(),
            last_event_id: self.last_event_id.clone(),
            retry_ms: self.retry_ms.take(),
        };
        self.reset_event();
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input {
            out.extend(p.push(c));
        }
        (out, p)
    }

    #[test]
    fn single_and_multi_line_data() {
        let (ev, _) = all(&[b"data: {\"a\":1}\n\ndata: line1\ndata: line2\ndata:line3\n\n"]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "line1\nline2\nline3");
        assert_eq!(ev[0].id, None);
    }

    #[test]
    fn ids_persist_and_comments_are_skipped() {
        let (ev, p) = all(&[
            b": keep-alive comment\n\nid: 7\nevent: update\ndata: x\n\n",
            b"data: y\n\n",
            b"id\ndata: z\n\n",
        ]);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[0].event.as_deref(), Some("update"));
        assert_eq!(ev[0].last_event_id.as_deref(), Some("7"));
        // The second event carries no id of its own but the cursor is still 7.
        assert_eq!(ev[1].id, None);
        assert_eq!(ev[1].last_event_id.as_deref(), Some("7"));
        // A bare `id` resets the cursor.
        assert_eq!(ev[2].id.as_deref(), Some(""));
        assert_eq!(ev[2].last_event_id, None);
        assert_eq!(p.last_event_id(), None);
    }

    #[test]
    fn chunk_boundaries_anywhere_and_all_line_endings() {
        let text = b"id: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\rid: 3\ndata: c\n\n";
        // Feed it one byte at a time: a `\r\n` pair is split across chunks.
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        let (ev, _) = all(&chunks);
        let got: Vec<_> = ev
            .iter()
            .map(|e| (e.id.clone().unwrap_or_default(), e.data.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("1".to_string(), "a".to_string()),
                ("2".to_string(), "b".to_string()),
                ("3".to_string(), "c".to_string())
            ]
        );
    }

    #[test]
    fn utf8_split_across_chunks() {
        let s = "data: héllo ✓\n\n".as_bytes();
        let (a, b) = s.split_at(9); // inside the two-byte é
        let (ev, _) = all(&[a, b]);
        assert_eq!(ev[0].data, "héllo ✓");
    }

    #[test]
    fn unterminated_event_is_dropped_at_end_and_retry_is_parsed() {
        let mut p = SseParser::with_last_event_id(Some("41".into()));
        let ev = p.push(b"retry: 1500\ndata: ok\n\ndata: half");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].retry_ms, Some(1500));
        assert_eq!(ev[0].last_event_id.as_deref(), Some("41"));
        p.finish();
        assert!(
            p.push(b"\n\n").is_empty(),
            "the half event must not survive"
        );
    }

    #[test]
    fn id_with_nul_is_ignored_and_empty_data_dispatches() {
        let (ev, _) = all(&[b"id: 5\n\nid: a\0b\ndata\n\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "");
        assert_eq!(ev[0].last_event_id.as_deref(), Some("5"));
    }
}
