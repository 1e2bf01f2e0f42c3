//! Black-box tests of the terminal WebSocket and of port forwarding into a sandbox: a real
//! `atelier serve` with the local driver and real agent processes.

mod common;

use std::time::Duration;

use atelier_server::forward::PortForward;
use common::{eventually, Manager};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn manager() -> (Manager, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    (m, dir)
}

enum Auth<'a> {
    /// What a browser does: the token in the subprotocol list.
    Subprotocol(&'a str),
    /// What the CLI does: an ordinary header.
    Header(&'a str),
}

fn ws_request(m: &Manager, id: &str, query: &str, auth: Auth<'_>) -> ClientRequestBuilder {
    let url = format!(
        "{}/api/v1/sandboxes/{id}/terminal?{query}",
        m.url.replacen("http://", "ws://", 1)
    );
    let b = ClientRequestBuilder::new(url.parse().unwrap());
    match auth {
        Auth::Subprotocol(t) => b
            .with_sub_protocol("atelier.terminal")
            .with_sub_protocol(format!("bearer.{t}")),
        Auth::Header(t) => b.with_header("Authorization", format!("Bearer {t}")),
    }
}

/// A connected terminal that collects what the shell prints.
struct Term {
    ws: Socket,
    output: String,
    exit: Option<i32>,
    closed: bool,
}

impl Term {
    /// Connects and reads the session message: (terminal, session id, resumed).
    async fn connect(req: ClientRequestBuilder) -> (Term, String, bool, Option<String>) {
        let (mut ws, answer) = tokio_tungstenite::connect_async(req)
            .await
            .expect("the WebSocket handshake");
        let protocol = answer
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        let first = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a first message in time")
            .expect("a first message")
            .expect("a readable first message");
        let Message::Text(text) = first else {
            panic!("the first message must be the session: {first:?}");
        };
        let hello: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(hello["type"], "session", "{hello}");
        let term = Term {
            ws,
            output: String::new(),
            exit: None,
            closed: false,
        };
        (
            term,
            hello["id"].as_str().unwrap().to_owned(),
            hello["resumed"].as_bool().unwrap_or(false),
            protocol,
        )
    }

    async fn type_in(&mut self, keys: &str) {
        self.ws
            .send(Message::Binary(keys.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

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
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "exit", "unexpected control message {v}");
                self.exit = v["code"].as_i64().map(|c| c as i32);
                true
            }
            Ok(Some(Ok(_))) => true,
        }
    }

    async fn expect(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.output.contains(needle) {
            if !self.read_one(deadline).await {
                panic!("no {needle:?} in the terminal output:\n{}", self.output);
            }
        }
    }

    /// Waits for a line that shows exactly `want` once control sequences are dropped.
    async fn expect_line(&mut self, want: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !visible_lines(&self.output).iter().any(|l| l == want) {
            if !self.read_one(deadline).await {
                panic!("no line {want:?} in the terminal output:\n{}", self.output);
            }
        }
    }

    async fn until_closed(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.read_one(deadline).await {}
        assert!(self.closed, "the socket did not close:\n{}", self.output);
        self.exit
    }
}

/// The lines a terminal would show: CSI sequences dropped, and of each line only what
/// follows its last carriage return.
fn visible_lines(output: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split('\n')
        .map(|l| {
            let l = l.trim_end_matches('\r');
            l.rsplit('\r').next().unwrap_or(l).to_owned()
        })
        .collect()
}

#[test]
fn visible_lines_drop_control_sequences() {
    let lines = visible_lines("$ echo hi\r\n\u{1b}[?2004l\rhi\r\n$ ");
    assert_eq!(lines, ["$ echo hi", "hi", "$ "]);
}

#[tokio::test]
async fn a_browser_socket_runs_a_command_and_sees_its_exit() {
    let (m, _d) = manager();
    let id = m.client().running_sandbox("term").await;
    let (mut term, sid, resumed, protocol) = Term::connect(ws_request(
        &m,
        &id,
        "cols=80&rows=24",
        Auth::Subprotocol(&m.token),
    ))
    .await;
    assert_eq!(protocol.as_deref(), Some("atelier.terminal"));
    assert!(!sid.is_empty() && !resumed);
    term.type_in("echo hi\r").await;
    // The command's own line, not the echo of what was typed ("echo hi").
    term.expect_line("hi").await;
    term.ws
        .send(Message::text(r#"{"type":"resize","cols":101,"rows":33}"#))
        .await
        .unwrap();
    term.type_in("stty size\r").await;
    term.expect("33 101").await;
    term.type_in("exit 5\r").await;
    assert_eq!(term.until_closed().await, Some(5));
}

#[tokio::test]
async fn a_header_authenticated_socket_reconnects_to_its_shell() {
    let (m, _d) = manager();
    let id = m.client().running_sandbox("again").await;
    let (mut term, sid, _, protocol) = Term::connect(ws_request(
        &m,
        &id,
        "cols=80&rows=24",
        Auth::Header(&m.token),
    ))
    .await;
    assert_eq!(protocol, None, "no subprotocol asked, none chosen");
    term.type_in("KEPT=still-$((20+1)); echo set-$((1+1))\r")
        .await;
    term.expect("set-2").await;
    drop(term);
    let (mut again, same, resumed, _) = Term::connect(ws_request(
        &m,
        &id,
        &format!("cols=80&rows=24&session={sid}"),
        Auth::Header(&m.token),
    ))
    .await;
    assert_eq!(same, sid);
    assert!(resumed);
    // The replay first, then the same shell's state.
    again.expect("set-2").await;
    again.type_in("echo $KEPT\r").await;
    again.expect("still-21").await;
}

#[tokio::test]
async fn terminal_requests_are_checked_before_the_upgrade() {
    let (m, _d) = manager();
    let api = m.client();
    let id = api.running_sandbox("checks").await;
    let http = reqwest::Client::new();
    let url = |id: &str, q: &str| m.api(&format!("/sandboxes/{id}/terminal?{q}"));

    // No token, a wrong one, a token in the subprotocol list without atelier.terminal.
    let r = http.get(url(&id, "cols=80&rows=24")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url(&id, "cols=80&rows=24"))
        .header(
            "Sec-WebSocket-Protocol",
            "atelier.terminal, bearer.atl_wrong",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url(&id, "cols=80&rows=24"))
        .header("Sec-WebSocket-Protocol", format!("bearer.{}", m.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let refused = tokio_tungstenite::connect_async(ws_request(
        &m,
        &id,
        "cols=80&rows=24",
        Auth::Subprotocol("atl_wrong"),
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), 401)
        }
        other => panic!("a wrong token must be refused: {:?}", other.map(|_| ())),
    }

    // Bad sizes and sessions name their field.
    for (query, field) in [
        ("cols=0&rows=24", "cols"),
        ("cols=80&rows=1001", "rows"),
        ("cols=wide&rows=24", "cols"),
        ("rows=24", "cols"),
        ("cols=80&rows=24&session=..%2Fx", "session"),
    ] {
        let r = api.get(&format!("/sandboxes/{id}/terminal?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_value");
        assert_eq!(
            r.body["error"]["details"]["fields"][0]["field"], field,
            "{query}: {}",
            r.body
        );
    }

    // The route is in the API's description, as the WebSocket it is.
    let doc = api.get("/openapi.json").await;
    let route = &doc.body["paths"]["/api/v1/sandboxes/{id}/terminal"]["get"];
    for status in ["101", "401", "404", "409", "422"] {
        assert!(route["responses"][status].is_object(), "{status}: {route}");
    }

    // A plain GET with good parameters is told to upgrade.
    let r = api
        .get(&format!("/sandboxes/{id}/terminal?cols=80&rows=24"))
        .await;
    assert_eq!(r.status, 426, "{}", r.body);

    let r = api
        .get("/sandboxes/sabcdefghjkm/terminal?cols=80&rows=24")
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    let stopped = api.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    let r = api
        .get(&format!("/sandboxes/{id}/terminal?cols=80&rows=24"))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let refused = tokio_tungstenite::connect_async(ws_request(
        &m,
        &id,
        "cols=80&rows=24",
        Auth::Header(&m.token),
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), 409)
        }
        other => panic!("a stopped sandbox has no terminal: {:?}", other.map(|_| ())),
    }
}

/// An HTTP server program for a sandbox service, if this host has one.
fn http_server(port: u16) -> Option<Vec<String>> {
    let found = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(busybox) = found("busybox") {
        return Some(vec![
            busybox,
            "httpd".into(),
            "-f".into(),
            "-p".into(),
            format!("127.0.0.1:{port}"),
            "-h".into(),
            "site".into(),
        ]);
    }
    found("python3").map(|py| {
        vec![
            py,
            "-m".into(),
            "http.server".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--directory".into(),
            "site".into(),
            port.to_string(),
        ]
    })
}

/// A running sandbox whose service `web` serves `page` as `index.html` on a free port;
/// `None` (after printing why) when this host has no HTTP server program.
async fn sandbox_serving(
    name: &str,
    page: &str,
) -> Option<(Manager, tempfile::TempDir, String, u16)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let Some(argv) = http_server(port) else {
        atelier_testkit::skip(
            "neither busybox (busybox-static) nor python3 is installed to serve HTTP",
        );
        return None;
    };
    let (m, d) = manager();
    let api = m.client();
    let id = api.running_sandbox(name).await;
    let put = api
        .send(
            api.req(
                reqwest::Method::PUT,
                &format!("/sandboxes/{id}/files/content?path=site/index.html"),
            )
            .body(page.to_owned()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let svc = api
        .send(
            api.req(
                reqwest::Method::PUT,
                &format!("/sandboxes/{id}/services/web"),
            )
            .json(&json!({ "command": { "argv": argv } })),
        )
        .await;
    assert_eq!(svc.status, 200, "{}", svc.body);
    Some((m, d, id, port))
}

#[tokio::test]
async fn a_port_forward_reaches_a_server_inside_the_sandbox() {
    let Some((m, _d, id, port)) = sandbox_serving("fwd", "hello through the tunnel\n").await else {
        return;
    };
    let dir = m.data_dir.join("sandboxes").join(&id);
    let token = std::fs::read_to_string(dir.join("agent.token")).unwrap();
    let agent = atelier_agent_client::AgentClient::new(
        format!("unix:{}", dir.join("agent.sock").display())
            .parse()
            .unwrap(),
        token.trim(),
    );
    let forward = PortForward::start(agent.clone(), port).await.unwrap();
    assert_eq!(forward.sandbox_port(), port);
    assert!(forward.local_addr().ip().is_loopback());
    assert_ne!(forward.local_addr().port(), port);
    let http = reqwest::Client::new();
    let url = format!("{}/index.html", forward.url());
    let body = eventually(WAIT, "the page through the forward", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())?;
            r.text().await.ok()
        }
    })
    .await;
    assert_eq!(body, "hello through the tunnel\n");
    // Several connections at once, each its own tunnel.
    let fetches = (0..8).map(|_| {
        let c = reqwest::Client::new();
        let url = url.clone();
        async move { c.get(&url).send().await.unwrap().text().await.unwrap() }
    });
    for text in futures::future::join_all(fetches).await {
        assert_eq!(text, "hello through the tunnel\n");
    }
    // Another process on the host finds the port, and nothing behind it.
    let outsider = tokio::process::Command::new("curl")
        .args(["-s", "-m", "10", &url])
        .output()
        .await
        .expect("curl runs");
    assert!(
        !outsider.status.success() && outsider.stdout.is_empty(),
        "a process other than the forward's owner was carried into the sandbox: {:?} {}",
        outsider.status,
        String::from_utf8_lossy(&outsider.stdout)
    );
    // A port nobody listens on: the connection closes, nothing hangs.
    let nothing = PortForward::start(agent, 1).await.unwrap();
    let r = tokio::time::timeout(WAIT, http.get(nothing.url()).send())
        .await
        .expect("an answer in time");
    assert!(r.is_err(), "nothing listens on port 1 in the sandbox");
    assert!(
        PortForward::start(m_agent_dummy(), 0).await.is_err(),
        "port 0"
    );

    let addr = forward.local_addr();
    drop(forward);
    eventually(WAIT, "the forward's listener to close", || async move {
        tokio::net::TcpStream::connect(addr).await.err().map(|_| ())
    })
    .await;
}

/// A client that is never connected (for argument checks).
fn m_agent_dummy() -> atelier_agent_client::AgentClient {
    atelier_agent_client::AgentClient::new("tcp:127.0.0.1:9".parse().unwrap(), "unused")
}

#[tokio::test]
async fn the_shell_command_wants_a_terminal() {
    let (m, _d) = manager();
    let id = m.client().running_sandbox("notty").await;
    let out = std::process::Command::new(common::atelier_bin())
        .args(["sandbox", "shell", &id])
        .env("ATELIER_URL", &m.url)
        .env("ATELIER_TOKEN", &m.token)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a terminal"), "{stderr}");
}

#[tokio::test]
async fn the_shell_command_is_an_interactive_terminal() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        atelier_testkit::skip("`script` (util-linux) is not installed to give the CLI a terminal");
        return;
    }
    let (m, d) = manager();
    let id = m.client().running_sandbox("tty").await;
    let go = d.path().join("resize-now");
    // `script` gives the CLI a pseudo-terminal of 100x30; once told to, a helper resizes
    // it to 120x40, which signals SIGWINCH to the CLI like a real window would.
    let inner = format!(
        "stty cols 100 rows 30; \
         (while [ ! -e {go} ]; do sleep 0.05; done; stty cols 120 rows 40 < /dev/tty) & \
         exec {bin} sandbox shell {id}",
        go = go.display(),
        bin = common::atelier_bin().display(),
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .env("ATELIER_URL", &m.url)
        .env("ATELIER_TOKEN", &m.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |needle: &'static str| {
        let seen = seen.clone();
        eventually(WAIT, needle, move || {
            let found = visible_lines(&seen.lock().unwrap())
                .iter()
                .any(|l| l == needle);
            async move { found.then_some(()) }
        })
    };
    stdin.write_all(b"stty size\r").await.unwrap();
    wait_for("30 100").await;
    std::fs::write(&go, "").unwrap();
    // Ask until the new size shows (the resize travels asynchronously).
    let mut asked = 0;
    loop {
        stdin.write_all(b"stty size\r").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if visible_lines(&seen.lock().unwrap())
            .iter()
            .any(|l| l == "40 120")
        {
            break;
        }
        asked += 1;
        assert!(asked < 100, "no resize:\n{}", seen.lock().unwrap());
    }
    stdin
        .write_all(b"echo cli-$((6*7)); exit 4\r")
        .await
        .unwrap();
    wait_for("cli-42").await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the CLI exits with the shell")
        .unwrap();
    assert_eq!(status.code(), Some(4), "{}", seen.lock().unwrap());
}

#[tokio::test]
async fn a_terminal_opens_in_a_qemu_microvm() {
    atelier_testkit::require!(atelier_testkit::qemu_missing());
    atelier_testkit::ensure_guest_agent();
    let dir = tempfile::tempdir().unwrap();
    let data = atelier_testkit::data_dir_with_image_cache(dir.path(), "");
    let m = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let r = api
        .post(
            "/sandboxes?wait=true",
            json!({"name": "vmterm", "image": "minimal", "vcpus": 1, "memory_mib": 512}),
        )
        .await;
    assert_eq!(r.body["state"], "running", "{}\n{}", r.body, m.log());
    let id = r.body["id"].as_str().unwrap().to_owned();
    let kernel = api.exec(&id, "uname", &["-r"]).await.body["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(kernel, host_kernel.trim(), "the guest runs its own kernel");

    let (mut term, _, _, _) = Term::connect(ws_request(
        &m,
        &id,
        "cols=80&rows=24",
        Auth::Subprotocol(&m.token),
    ))
    .await;
    term.type_in("uname -r\r").await;
    term.expect_line(&kernel).await;
    term.type_in("tty\r").await;
    term.expect("/dev/pts/").await;
    term.type_in("exit 3\r").await;
    assert_eq!(term.until_closed().await, Some(3));

    // A server inside the VM, reached from the host through a forwarded port: the way the
    // manager talks to a coding agent's HTTP API in a microVM.
    let page = api
        .send(
            api.req(
                reqwest::Method::PUT,
                &format!("/sandboxes/{id}/files/content?path=%2Froot%2Fsite%2Findex.html"),
            )
            .body("served from the microVM\n"),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let argv = [
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "127.0.0.1:8080",
        "-h",
        "/root/site",
    ];
    let svc = api
        .send(
            api.req(
                reqwest::Method::PUT,
                &format!("/sandboxes/{id}/services/web"),
            )
            .json(&json!({ "command": { "argv": argv } })),
        )
        .await;
    assert_eq!(svc.status, 200, "{}", svc.body);
    let store = atelier_store::Store::open(&data.join("atelier.db"), &data.join("secrets.key"))
        .await
        .unwrap();
    let record = store
        .get_sandbox(&atelier_core::SandboxId::parse(&id).unwrap())
        .await
        .unwrap();
    let agent_addr = record.runtime.as_ref().unwrap()["agent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let agent = atelier_agent_client::AgentClient::new(agent_addr, record.agent_token);
    let forward = PortForward::start(agent, 8080).await.unwrap();
    let url = format!("{}/index.html", forward.url());
    let body = eventually(WAIT, "the VM's page through the forward", || {
        let url = url.clone();
        async move {
            let r = reqwest::get(&url).await.ok()?;
            r.status().is_success().then_some(())?;
            r.text().await.ok()
        }
    })
    .await;
    assert_eq!(body, "served from the microVM\n");
}

#[tokio::test]
async fn a_preview_link_opens_a_dev_server_in_the_sandbox_without_the_token() {
    let Some((m, _d, id, port)) = sandbox_serving("preview", "hello from the dev server\n").await
    else {
        return;
    };
    let api = m.client();

    let link = api
        .post(&format!("/sandboxes/{id}/ports/{port}/link"), json!({}))
        .await;
    assert_eq!(link.status, 201, "{}", link.body);
    let url = link.body["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/p/") && url.ends_with('/'), "{url}");
    // A browser has no token: the link is enough, and only for this port.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page_url = format!("{}{url}index.html", m.url);
    let body = eventually(WAIT, "the page through the preview link", || {
        let (http, page_url) = (http.clone(), page_url.clone());
        async move {
            let r = http.get(&page_url).send().await.ok()?;
            if r.status() != 200 {
                return None;
            }
            r.text().await.ok()
        }
    })
    .await;
    assert_eq!(body, "hello from the dev server\n");
    let missing = http
        .get(format!("{}{url}nope.html", m.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "the dev server's own 404 comes through"
    );
    let bare = http
        .get(format!("{}{}", m.url, url.trim_end_matches('/')))
        .send()
        .await
        .unwrap();
    assert!(bare.status().is_redirection(), "{}", bare.status());
    let forged = http
        .get(format!("{}/p/{}/index.html", m.url, "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);

    // Bad input names the field; the route itself needs the token.
    for bad in ["0", "70000", "web"] {
        let r = api
            .post(&format!("/sandboxes/{id}/ports/{bad}/link"), json!({}))
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert_eq!(
            r.body["error"]["details"]["fields"][0]["field"], "port",
            "{}",
            r.body
        );
    }
    let anonymous = http
        .post(format!("{}/api/v1/sandboxes/{id}/ports/{port}/link", m.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // A stopped sandbox serves nothing, through old links or new ones.
    api.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
    let r = http.get(&page_url).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = api
        .post(&format!("/sandboxes/{id}/ports/{port}/link"), json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
}
