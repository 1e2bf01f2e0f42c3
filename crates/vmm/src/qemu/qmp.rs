//! A minimal QMP (QEMU Machine Protocol) client: one connection per command.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::driver::VmmError;

/// Runs one QMP command (`stop`, `cont`, `quit`, `query-status`…) and returns its `return`.
pub async fn execute(socket: &Path, command: &str) -> Result<serde_json::Value, VmmError> {
    let fail = |what: String| VmmError::Io {
        context: format!("QMP {command}"),
        source: std::io::Error::other(what),
    };
    let run = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(VmmError::io(format!("connecting to {}", socket.display())))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        next(&mut lines, command).await?; // greeting
        write
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .await
            .map_err(VmmError::io("writing QMP"))?;
        next(&mut lines, command).await?;
        write
            .write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
            .await
            .map_err(VmmError::io("writing QMP"))?;
        if command == "quit" {
            return Ok(serde_json::Value::Null);
        }
        let answer = next(&mut lines, command).await?;
        match answer.get("return") {
            Some(r) => Ok(r.clone()),
            None => Err(fail(
                answer
                    .get("error")
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| answer.to_string()),
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| fail("timed out".into()))?
}

/// The next answer on the QMP stream; asynchronous events interleave and are skipped.
async fn next(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    command: &str,
) -> Result<serde_json::Value, VmmError> {
    let fail = |what: String| VmmError::Io {
        context: format!("QMP {command}"),
        source: std::io::Error::other(what),
    };
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(VmmError::io("reading QMP"))?;
        let line = line.ok_or_else(|| fail("QEMU closed the QMP socket".into()))?;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| fail(e.to_string()))?;
        if v.get("event").is_none() {
            return Ok(v);
        }
    }
}
