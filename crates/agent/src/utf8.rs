//! Incremental UTF-8 decoding that never splits a character across chunks.

/// Decodes a byte stream chunk by chunk. An incomplete multibyte sequence at the end of a
/// chunk is held back until the next one; invalid bytes become U+FFFD (like
/// [`String::from_utf8_lossy`]).
#[derive(Debug, Default)]
pub struct Utf8Chunker {
    pending: Vec<u8>,
}

impl Utf8Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `input` (after any held-back bytes) and returns the complete characters.
    pub fn push(&mut self, input: &[u8]) -> String {
        let joined;
        let data: &[u8] = if self.pending.is_empty() {
            input
        } else {
            let mut v = std::mem::take(&mut self.pending);
            v.extend_from_slice(input);
            joined = v;
            &joined
        };
        let mut out = String::with_capacity(data.len());
        let mut rest = data;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&rest[..valid]));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &rest[valid + n..];
                        }
                        None => {
                            // Incomplete sequence at the very end: keep it for later.
                            self.pending = rest[valid..].to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Flushes held-back bytes at the end of the stream (lossily).
    pub fn finish(&mut self) -> String {
        let p = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&p).into_owned()
    }
}

/// Length of the longest prefix of `data` that does not end inside an incomplete (but so far
/// valid) multibyte sequence. Used to cut log chunks on character boundaries.
pub fn complete_prefix_len(data: &[u8]) -> usize {
    // Look at most 3 bytes back for the start of a multibyte sequence.
    let n = data.len();
    for back in 1..=3.min(n) {
        let b = data[n - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte; keep looking for the lead byte
        }
        let need = if b & 0xE0 == 0xC0 {
            2
        } else if b & 0xF0 == 0xE0 {
            3
        } else if b & 0xF8 == 0xF0 {
            4
        } else {
            return n; // ASCII or invalid lead: nothing to hold back
        };
        return if back < need { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_split_characters() {
        let text = "aé€😀z";
        let bytes = text.as_bytes();
        // Every split point, every chunk size.
        for size in 1..=bytes.len() {
            let mut c = Utf8Chunker::new();
            let mut out = String::new();
            for chunk in bytes.chunks(size) {
                let s = c.push(chunk);
                assert!(!s.contains('\u{FFFD}'), "size {size}: {s:?}");
                out.push_str(&s);
            }
            out.push_str(&c.finish());
            assert_eq!(out, text, "chunk size {size}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut c = Utf8Chunker::new();
        let mut out = c.push(b"a\xffb\xc3");
        out.push_str(&c.push(b"("));
        out.push_str(&c.finish());
        assert_eq!(out, String::from_utf8_lossy(b"a\xffb\xc3("));
        let mut c = Utf8Chunker::new();
        let mut out = c.push(b"x\xe2\x82");
        out.push_str(&c.finish());
        assert_eq!(out, "x\u{FFFD}");
    }

    #[test]
    fn complete_prefix_cuts_before_partial_characters() {
        assert_eq!(complete_prefix_len(b"abc"), 3);
        assert_eq!(complete_prefix_len("é".as_bytes()), 2);
        assert_eq!(complete_prefix_len(&"é".as_bytes()[..1]), 0);
        assert_eq!(complete_prefix_len(&"a€".as_bytes()[..3]), 1);
        assert_eq!(complete_prefix_len(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(complete_prefix_len("a😀".as_bytes()), 5);
        assert_eq!(complete_prefix_len(b"a\xff"), 2);
    }
}
