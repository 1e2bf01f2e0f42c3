//! `GET /v1/health`.

use std::time::Instant;

use atelier_proto::Health;

/// Parses the three load averages from `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut it = text
        .split_whitespace()
        .map(|s| s.parse::<f64>().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

fn hostname() -> String {
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            return h.to_string();
        }
    }
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn collect(started: Instant) -> Health {
    Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        load: std::fs::read_to_string("/proc/loadavg")
            .map(|t| parse_loadavg(&t))
            .unwrap_or([0.0; 3]),
        hostname: hostname(),
        pid: std::process::id(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_loadavg() {
        assert_eq!(
            super::parse_loadavg("0.52 0.58 0.59 1/467 12345\n"),
            [0.52, 0.58, 0.59]
        );
        assert_eq!(super::parse_loadavg("garbage"), [0.0; 3]);
    }
}
