//! Terminals (a shell under a pseudo-terminal over a WebSocket) and TCP tunnels, through
//! the real `atelier-agent` binary, over TCP and over a Unix socket.

mod common;

use std::time::Duration;

use atelier_agent_client::tungstenite::Message;
use atelier_agent_client::{Error, TerminalStream};
use atelier_proto::{TerminalClientMessage, TerminalServerMessage};
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod tcp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Transport::Tcp).await
                }
            )*
        }
        mod unix {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Transport::Unix).await
                }
            )*
        }
    };
}

suite!(
    a_shell_echoes_commands,
    resizes_reach_the_terminal,
    the_exit_code_is_reported_and_the_socket_closes,
    a_detached_shell_is_reattached_with_its_output,
    the_replay_keeps_the_last_64_kib,
    an_unknown_session_gets_a_fresh_shell,
    a_second_client_takes_the_session_over,
    bad_terminal_requests_are_refused,
    a_tunnel_reaches_a_port_in_the_sandbox,
    tunnels_to_closed_or_invalid_ports_are_refused,
);

/// A terminal client that collects output until it sees what it waits for.
struct Term {
    ws: TerminalStream,
    output: String,
    exit: Option<i32>,
    closed: bool,
}

impl Term {
    async fn open(
        agent: &Agent,
        cols: u16,
        rows: u16,
        session: Option<&str>,
    ) -> (Term, String, bool) {
        let ws = agent
            .client
            .open_terminal(cols, rows, session)
            .await
            .expect("open the terminal");
        let mut term = Term {
            ws,
            output: String::new(),
            exit: None,
            closed: false,
        };
        let first = tokio::time::timeout(WAIT, term.ws.next())
            .await
            .expect("the session message in time")
            .expect("a first message")
            .expect("a readable first message");
        let Message::Text(text) = first else {
            panic!("the first message must be the session, got {first:?}");
        };
        match serde_json::from_str::<TerminalServerMessage>(&text).unwrap() {
            TerminalServerMessage::Session { id, resumed } => (term, id, resumed),
            other => panic!("expected the session message, got {other:?}"),
        }
    }

    async fn type_in(&mut self, keys: &str) {
        self.ws
            .send(Message::Binary(keys.as_bytes().to_vec().into()))
            .await
            .expect("send keystrokes");
    }

    async fn resize(&mut self, cols: u16, rows: u16) {
        let msg = serde_json::to_string(&TerminalClientMessage::Resize { cols, rows }).unwrap();
        self.ws.send(Message::text(msg)).await.expect("send resize");
    }

    /// Reads one message; false once the socket is closed.
    async fn read_one(&mut self, deadline: tokio::time::Instant) -> bool {
        if self.closed {
            return false;
        }
        match tokio::time::timeout_at(deadline, self.ws.next()).await {
            Err(_) => false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                self.closed = true;
                false
            }
            Ok(Some(Ok(Message::Binary(b)))) => {
                self.output.push_str(&String::from_utf8_lossy(&b));
                true
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                match serde_json::from_str::<TerminalServerMessage>(&t) {
                    Ok(TerminalServerMessage::Exit { code }) => self.exit = Some(code),
                    other => panic!("unexpected control message {other:?}"),
                }
                true
            }
            Ok(Some(Ok(_))) => true,
        }
    }

    /// Waits until the output contains `needle`; returns the output so far.
    async fn expect(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.output.contains(needle) {
            if !self.read_one(deadline).await {
                panic!(
                    "no {needle:?} in the terminal output (closed: {}):\n{}",
                    self.closed, self.output
                );
            }
        }
        self.output.clone()
    }

    /// Reads until the socket closes; returns the reported exit code.
    async fn until_closed(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.read_one(deadline).await {}
        assert!(self.closed, "the socket did not close:\n{}", self.output);
        self.exit
    }
}

async fn a_shell_echoes_commands(t: Transport) {
    let agent = Agent::start(t).await;
    let (mut term, id, resumed) = Term::open(&agent, 80, 24, None).await;
    assert_eq!(id.len(), 32, "{id}");
    assert!(!resumed);
    // The arithmetic only appears in the output once the shell ran it.
    term.type_in("echo hi-$((40+2))\r").await;
    term.expect("hi-42").await;
    term.type_in("echo \"$TERM\" tty=$(tty)\r").await;
    let out = term.expect("xterm-256color tty=/dev/pts/").await;
    assert!(!out.contains(atelier_proto::TOKEN_ENV), "{out}");
    term.type_in("echo token=${ATELIER_AGENT_TOKEN:-none}\r")
        .await;
    term.expect("token=none").await;
}

async fn resizes_reach_the_terminal(t: Transport) {
    let agent = Agent::start(t).await;
    let (mut term, _, _) = Term::open(&agent, 100, 30, None).await;
    term.type_in("stty size\r").await;
    term.expect("30 100").await;
    term.resize(132, 43).await;
    term.type_in("stty size\r").await;
    term.expect("43 132").await;
    // Out-of-range sizes are ignored, not applied.
    term.resize(0, 5000).await;
    term.type_in("echo size=$(stty size)\r").await;
    term.expect("size=43 132").await;
}

async fn the_exit_code_is_reported_and_the_socket_closes(t: Transport) {
    let agent = Agent::start(t).await;
    let (mut term, _, _) = Term::open(&agent, 80, 24, None).await;
    term.type_in("exit 7\r").await;
    assert_eq!(term.until_closed().await, Some(7));
    // A shell killed by a signal reads like a shell would report it.
    let (mut term, _, _) = Term::open(&agent, 80, 24, None).await;
    // (An interactive shell ignores SIGTERM.)
    term.type_in("kill -KILL $$\r").await;
    assert_eq!(term.until_closed().await, Some(128 + 9));
}

async fn a_detached_shell_is_reattached_with_its_output(t: Transport) {
    let agent = Agent::start(t).await;
    let (mut term, id, _) = Term::open(&agent, 80, 24, None).await;
    term.type_in("X=persist-$((2+3)); echo marker-$((6*7))\r")
        .await;
    term.expect("marker-42").await;
    drop(term);
    // Output produced while nobody is attached is replayed too.
    let (mut again, same, resumed) = Term::open(&agent, 90, 20, Some(&id)).await;
    assert_eq!(same, id);
    assert!(resumed);
    again.expect("marker-42").await;
    again.type_in("echo $X; stty size\r").await;
    again.expect("persist-5").await;
    again.expect("20 90").await;
    again
        .type_in("(sleep 0.3; echo while-away-$((5+5))) &\r")
        .await;
    drop(again);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (mut third, _, resumed) = Term::open(&agent, 90, 20, Some(&id)).await;
    assert!(resumed);
    third.expect("while-away-10").await;
    // Exiting ends the session: the id is not reattachable any more.
    third.type_in("exit 3\r").await;
    assert_eq!(third.until_closed().await, Some(3));
    let (_, fresh, resumed) = Term::open(&agent, 80, 24, Some(&id)).await;
    assert_ne!(fresh, id);
    assert!(!resumed);
}

async fn the_replay_keeps_the_last_64_kib(t: Transport) {
    let agent = Agent::start(t).await;
    let (mut term, id, _) = Term::open(&agent, 80, 24, None).await;
    // 200 000 'a's without line breaks, then a marker.
    term.type_in("head -c 200000 /dev/zero | tr '\\0' a; echo; echo end-$((9*9))\r")
        .await;
    term.expect("end-81").await;
    assert!(term.output.matches('a').count() >= 200_000);
    drop(term);
    let (mut again, _, resumed) = Term::open(&agent, 80, 24, Some(&id)).await;
    assert!(resumed);
    let deadline = tokio::time::Instant::now() + WAIT;
    assert!(again.read_one(deadline).await, "a replay frame");
    let replay = again.output.clone();
    assert!(replay.len() <= 64 * 1024, "replayed {} bytes", replay.len());
    assert!(
        replay.len() > 60 * 1024,
        "replayed only {} bytes",
        replay.len()
    );
    assert!(replay.contains("end-81"), "the newest output is kept");
}

async fn an_unknown_session_gets_a_fresh_shell(t: Transport) {
    let agent = Agent::start(t).await;
    let (mut term, id, resumed) = Term::open(&agent, 80, 24, Some("no-such-session")).await;
    assert_ne!(id, "no-such-session");
    assert!(!resumed);
    term.type_in("echo fresh-$((1+1))\r").await;
    term.expect("fresh-2").await;
}

async fn a_second_client_takes_the_session_over(t: Transport) {
    let agent = Agent::start(t).await;
    let (mut first, id, _) = Term::open(&agent, 80, 24, None).await;
    first.type_in("echo one-$((0+1))\r").await;
    first.expect("one-1").await;
    let (mut second, _, resumed) = Term::open(&agent, 80, 24, Some(&id)).await;
    assert!(resumed);
    assert_eq!(first.until_closed().await, None, "taken over, not exited");
    second.type_in("echo two-$((1+1))\r").await;
    second.expect("two-2").await;
}

async fn bad_terminal_requests_are_refused(t: Transport) {
    let agent = Agent::start(t).await;
    for (cols, rows, field) in [(0, 24, "cols"), (80, 1001, "rows")] {
        match agent.client.open_terminal(cols, rows, None).await {
            Err(e @ Error::Agent { .. }) => {
                assert_eq!(e.status(), Some(400), "{e}");
                assert_eq!(e.code(), Some("invalid_value"));
                assert!(e.to_string().contains(field), "{e}");
            }
            other => panic!("{cols}x{rows} must be refused: {:?}", other.map(|_| ())),
        }
    }
    let e = agent
        .client
        .open_terminal(80, 24, Some("../etc"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("session"), "{e}");
    let stranger = atelier_agent_client::AgentClient::new(agent.addr.clone(), "wrong-token-000000");
    let e = stranger
        .open_terminal(80, 24, None)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let e = stranger.open_tunnel(80).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
}

/// A TCP echo server on the sandbox's loopback (the local agent shares the host's).
async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, task)
}

async fn a_tunnel_reaches_a_port_in_the_sandbox(t: Transport) {
    let agent = Agent::start(t).await;
    let (port, server) = echo_server().await;
    let a = agent.client.open_tunnel(port).await.expect("tunnel a");
    let mut b = agent.client.open_tunnel(port).await.expect("tunnel b");
    assert_eq!(a.port(), port);
    // Both at once, and more than one socket buffer's worth through one of them.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    b.write_all(b"ping b\n").await.unwrap();
    let (mut ar, mut aw) = tokio::io::split(a);
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        aw.write_all(&sent).await.unwrap();
        aw.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(WAIT, ar.read_to_end(&mut echoed))
        .await
        .expect("echo in time")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), big.len());
    assert!(echoed == big, "the echo differs from what was sent");
    let mut line = [0u8; 7];
    tokio::time::timeout(WAIT, b.read_exact(&mut line))
        .await
        .expect("echo b in time")
        .unwrap();
    assert_eq!(&line, b"ping b\n");
    server.abort();
}

async fn tunnels_to_closed_or_invalid_ports_are_refused(t: Transport) {
    let agent = Agent::start(t).await;
    // A port that was just free: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = agent.client.open_tunnel(closed).await.unwrap_err();
    assert_eq!(e.status(), Some(502), "{e}");
    assert_eq!(e.code(), Some("connection_refused"), "{e}");
    let e = agent.client.open_tunnel(0).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("port"), "{e}");
    // Without the upgrade headers the route says what it needs.
    let answer = raw_request(
        &agent.addr,
        format!(
            "GET /v1/tunnel/{closed} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(answer.contains("upgrade_required"), "{answer}");
}
