//! A minimal QMP (QEMU Machine Protocol) client: [`Qmp`] keeps one negotiated connection
//! for a sequence of commands; [`execute`] runs a single command on its own connection.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::driver::VmmError;

/// How long one command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

fn fail(command: &str, what: impl Into<String>) -> VmmError {
    VmmError::Io {
        context: format!("QMP {command}"),
        source: std::io::Error::other(what.into()),
    }
}

/// One negotiated QMP connection (greeting read, `qmp_capabilities` sent).
pub struct Qmp {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Qmp {
    /// Connects to the QMP socket and leaves capabilities negotiation.
    pub async fn connect(socket: &Path) -> Result<Self, VmmError> {
        let run = async {
            let stream = UnixStream::connect(socket)
                .await
                .map_err(VmmError::io(format!("connecting to {}", socket.display())))?;
            let (read, write) = stream.into_split();
            let mut qmp = Self {
                lines: BufReader::new(read).lines(),
                write,
            };
            qmp.next("greeting").await?;
            qmp.execute("qmp_capabilities", None).await?;
            Ok(qmp)
        };
        tokio::time::timeout(COMMAND_TIMEOUT, run)
            .await
            .map_err(|_| fail("connect", "timed out"))?
    }

    /// Runs `command` (with `arguments`, an object, if any) and returns its `return`.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, VmmError> {
        let run = async {
            self.send(command, arguments).await?;
            let answer = self.next(command).await?;
            match answer.get("return") {
                Some(r) => Ok(r.clone()),
                None => Err(fail(
                    command,
                    answer
                        .get("error")
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| answer.to_string()),
                )),
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, run)
            .await
            .map_err(|_| fail(command, "timed out"))?
    }

    /// Sends `quit` and waits for its answer or for QEMU to close the socket (it may exit
    /// before answering). Hanging up right after sending is not enough: QEMU drops the
    /// queued commands of a client that is gone.
    pub async fn quit(&mut self) -> Result<(), VmmError> {
        self.send("quit", None).await?;
        let wait = async {
            loop {
                match self.lines.next_line().await {
                    Ok(Some(line)) if line.contains("\"return\"") || line.contains("\"error\"") => {
                        return
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, wait)
            .await
            .map_err(|_| fail("quit", "timed out"))
    }

    async fn send(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<(), VmmError> {
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.write
            .write_all(line.as_bytes())
            .await
            .map_err(VmmError::io(format!("writing QMP {command}")))
    }

    /// The next answer on the stream; asynchronous events interleave and are skipped.
    async fn next(&mut self, command: &str) -> Result<serde_json::Value, VmmError> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(VmmError::io(format!("reading QMP {command}")))?
                .ok_or_else(|| fail(command, "QEMU closed the QMP socket"))?;
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| fail(command, e.to_string()))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }
}

/// Runs one QMP command (`stop`, `cont`, `quit`, `query-status`…) on its own connection
/// and returns its `return` (`null` for `quit`, which is not waited for).
pub async fn execute(socket: &Path, command: &str) -> Result<serde_json::Value, VmmError> {
    let mut qmp = Qmp::connect(socket).await?;
    if command == "quit" {
        qmp.quit().await?;
        return Ok(serde_json::Value::Null);
    }
    qmp.execute(command, None).await
}
