//! Client tests against a fake agent: a Unix-socket server that optionally performs the
//! Firecracker hybrid-vsock handshake and then speaks HTTP/1.1 with hyper.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_agent_client::{AgentClient, Error};
use atelier_proto::{AgentAddr, ErrorBody, ExecEvent, ExecRequest, Health};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Clone, Copy)]
enum Handshake {
    /// Plain Unix socket: HTTP right away.
    None,
    /// Expect `CONNECT <port>`, answer `OK …`.
    Ok,
    /// Answer the CONNECT with garbage.
    Garbage,
    /// Close the connection without answering.
    Close,
    /// The first N connections get garbage, later ones OK.
    GarbageFirst(usize),
}

#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    connect_lines: Mutex<Vec<String>>,
    requests: Mutex<Vec<(String, String, Option<String>)>>,
}

fn full(status: u16, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn health_json() -> String {
    serde_json::to_string(&Health {
        version: "9.9.9".into(),
        uptime_ms: 1,
        load: [0.0; 3],
        hostname: "fake".into(),
        pid: 42,
    })
    .unwrap()
}

/// Default routes of the fake.
async fn route(req: Request<hyper::body::Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/v1/health" => full(200, "application/json", health_json()),
        "/v1/missing" | "/v1/services/ghost" => full(
            404,
            "application/json",
            serde_json::to_vec(&ErrorBody::new("not_found", "no such thing")).unwrap(),
        ),
        "/v1/boom" | "/v1/services/boom" => full(500, "text/plain", "it broke"),
        "/v1/files/content" if req.method() == "GET" => {
            full(200, "application/octet-stream", "content")
        }
        "/v1/files/content" => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let stat = serde_json::json!({
                "name": "f", "path": "/w/f", "kind": "file", "size": body.len(),
                "mode": 420, "modified_ms": 0
            });
            full(200, "application/json", stat.to_string())
        }
        "/v1/files" => Response::builder()
            .status(204)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
        "/v1/services/web/logs" => full(
            200,
            "application/json",
            r#"{"offset":5,"next_offset":7,"size":7,"data":"hi"}"#,
        ),
        "/v1/exec/stream" => {
            // Lines split across frames, then the stream ends without an exit event.
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = [
                "{\"type\":\"stdout\",\"da",
                "ta\":\"a\\n\"}\n\n{\"type\":\"stderr\",\"data\":\"e\"}\n{\"type\":\"std",
                "out\",\"data\":\"b\"}",
            ]
            .into_iter()
            .map(|s| Ok(Frame::data(Bytes::from(s))))
            .collect();
            Response::builder()
                .status(200)
                .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
                    frames,
                ))))
                .unwrap()
        }
        "/v1/services" => full(200, "application/json", "this is not json"),
        "/v1/files/stat" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            full(200, "application/json", "{}")
        }
        _ => full(404, "text/plain", ""),
    }
}

struct Fake {
    path: PathBuf,
    seen: Arc<Seen>,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn addr(&self, hybrid: bool) -> AgentAddr {
        if hybrid {
            AgentAddr::HybridVsock {
                uds: self.path.clone(),
                port: 52,
            }
        } else {
            AgentAddr::Unix(self.path.clone())
        }
    }
}

/// Starts the fake. `close_after_response`: drop each connection after one exchange
/// without announcing it (a stale keep-alive connection for the client).
fn spawn_fake(hs: Handshake, close_after_response: bool) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = s2.accepted.fetch_add(1, Ordering::SeqCst);
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mode = match hs {
                    Handshake::GarbageFirst(k) if n < k => Handshake::Garbage,
                    Handshake::GarbageFirst(_) => Handshake::Ok,
                    m => m,
                };
                if !matches!(mode, Handshake::None) {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    seen.connect_lines.lock().unwrap().push(line);
                    match mode {
                        Handshake::Ok => stream
                            .get_mut()
                            .write_all(b"OK 1073741824\n")
                            .await
                            .unwrap(),
                        Handshake::Garbage => {
                            stream
                                .get_mut()
                                .write_all(b"NOPE nothing here\n")
                                .await
                                .unwrap();
                            return;
                        }
                        _ => return,
                    }
                }
                let seen2 = seen.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen2.clone();
                    async move {
                        seen.requests.lock().unwrap().push((
                            req.method().to_string(),
                            req.uri().to_string(),
                            req.headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string()),
                        ));
                        Ok::<_, Infallible>(route(req).await)
                    }
                });
                let io = TokioIo::new(stream.into_inner());
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
                if close_after_response {
                    // Serve one exchange, then vanish.
                    let mut conn = std::pin::pin!(conn);
                    let _ = tokio::time::timeout(Duration::from_millis(100), conn.as_mut()).await;
                } else {
                    let _ = conn.await;
                }
            });
        }
    });
    Fake {
        path,
        seen,
        _dir: dir,
    }
}

#[tokio::test]
async fn hybrid_vsock_handshake_then_http_with_keep_alive() {
    let fake = spawn_fake(Handshake::Ok, false);
    let c = AgentClient::new(fake.addr(true), "tok");
    let h = c.health().await.unwrap();
    assert_eq!((h.version.as_str(), h.pid), ("9.9.9", 42));
    for _ in 0..5 {
        c.clone().health().await.unwrap();
    }
    assert_eq!(
        fake.seen.accepted.load(Ordering::SeqCst),
        1,
        "pooled connection reused"
    );
    assert_eq!(*fake.seen.connect_lines.lock().unwrap(), ["CONNECT 52\n"]);
    let reqs = fake.seen.requests.lock().unwrap();
    assert_eq!(reqs.len(), 6);
    assert!(reqs
        .iter()
        .all(|(m, u, a)| m == "GET" && u == "/v1/health" && a.as_deref() == Some("Bearer tok")));
}

#[tokio::test]
async fn bad_handshake_replies_are_clear_errors() {
    let fake = spawn_fake(Handshake::Garbage, false);
    let e = AgentClient::new(fake.addr(true), "t")
        .health()
        .await
        .unwrap_err();
    match &e {
        Error::Handshake(m) => {
            assert!(
                m.contains("NOPE nothing here") && m.contains("CONNECT 52"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_unreachable());
    let fake = spawn_fake(Handshake::Close, false);
    let e = AgentClient::new(fake.addr(true), "t")
        .health()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Handshake(m) if m.contains("closed")),
        "{e:?}"
    );
}

#[tokio::test]
async fn missing_socket_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    for addr in [
        AgentAddr::Unix(dir.path().join("nope.sock")),
        AgentAddr::HybridVsock {
            uds: dir.path().join("nope.vsock"),
            port: 1,
        },
    ] {
        let e = AgentClient::new(addr.clone(), "t")
            .health()
            .await
            .unwrap_err();
        match &e {
            Error::Connect { addr: a, source } => {
                assert_eq!(a, &addr.to_string());
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("nope."), "{e}");
    }
    // Refused TCP.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let e = AgentClient::new(format!("tcp:127.0.0.1:{port}").parse().unwrap(), "t")
        .health()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{e:?}"
    );
}

#[tokio::test]
async fn wait_healthy_retries_until_the_guest_listens() {
    let fake = spawn_fake(Handshake::GarbageFirst(3), false);
    let c = AgentClient::new(fake.addr(true), "t");
    let h = c.wait_healthy(Duration::from_secs(5)).await.unwrap();
    assert_eq!(h.pid, 42);
    assert_eq!(fake.seen.accepted.load(Ordering::SeqCst), 4);
    // Bounded: with nothing listening it gives up after about `within`.
    let dir = tempfile::tempdir().unwrap();
    let c = AgentClient::new(AgentAddr::Unix(dir.path().join("x")), "t");
    let t0 = Instant::now();
    let e = c
        .wait_healthy(Duration::from_millis(250))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(240) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn error_statuses_become_agent_errors() {
    let fake = spawn_fake(Handshake::None, false);
    let c = AgentClient::new(fake.addr(false), "t");
    let e = c.service("ghost").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), Some("not_found")));
    assert!(matches!(&e, Error::Agent { body, .. } if body.error.message == "no such thing"));
    let e = c.service("boom").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(500), Some("internal")));
    assert!(e.to_string().contains("it broke"), "{e}");
    // A 200 that is not the expected JSON is a decode error.
    let e = c.services().await.unwrap_err();
    assert!(
        matches!(&e, Error::Decode(m) if m.contains("this is not json")),
        "{e:?}"
    );
    let e = c.list_dir("x").await.unwrap_err();
    assert!(matches!(e, Error::Agent { .. }), "{e:?}");
}

#[tokio::test]
async fn paths_and_parameters_are_encoded() {
    let fake = spawn_fake(Handshake::None, false);
    let c = AgentClient::new(fake.addr(false), "t");
    assert_eq!(
        c.read_file("dir with space/ü?#&.txt").await.unwrap(),
        "content"
    );
    let st = c
        .write_file("/w/a+b=c", Bytes::from_static(b"12345"), Some(0o640))
        .await
        .unwrap();
    assert_eq!(st.size, 5);
    c.delete("x y", true).await.unwrap();
    let l = c.service_logs("web", 5, Some(100)).await.unwrap();
    assert_eq!((l.data.as_str(), l.next_offset), ("hi", 7));
    let reqs: Vec<(String, String)> = fake
        .seen
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(m, u, _)| (m.clone(), u.clone()))
        .collect();
    let expect = [
        (
            "GET",
            "/v1/files/content?path=dir%20with%20space/%C3%BC%3F%23%26.txt",
        ),
        ("PUT", "/v1/files/content?path=/w/a%2Bb%3Dc&mode=640"),
        ("DELETE", "/v1/files?path=x%20y&recursive=true"),
        ("GET", "/v1/services/web/logs?offset=5&limit=100"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(m, u)| (m.to_string(), u.to_string()))
        .collect();
    assert_eq!(reqs, expect);
}

#[tokio::test]
async fn stale_pooled_connections_are_replaced() {
    let fake = spawn_fake(Handshake::Ok, true);
    let c = AgentClient::new(fake.addr(true), "t");
    for i in 0..5 {
        c.health().await.unwrap_or_else(|e| panic!("call {i}: {e}"));
        // Let the fake drop the connection.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(fake.seen.accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn exec_stream_reassembles_lines_and_flags_a_missing_exit() {
    let fake = spawn_fake(Handshake::None, false);
    let c = AgentClient::new(fake.addr(false), "t");
    let mut s = c.exec_stream(&ExecRequest::shell("x")).await.unwrap();
    let mut got = Vec::new();
    while let Some(ev) = s.next().await {
        got.push(ev);
    }
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[0].as_ref().unwrap(),
        &ExecEvent::Stdout { data: "a\n".into() }
    );
    assert_eq!(
        got[1].as_ref().unwrap(),
        &ExecEvent::Stderr { data: "e".into() }
    );
    assert_eq!(
        got[2].as_ref().unwrap(),
        &ExecEvent::Stdout { data: "b".into() }
    );
    assert!(
        matches!(&got[3], Err(Error::Http(m)) if m.contains("exit")),
        "{:?}",
        got[3]
    );
}

#[tokio::test]
async fn calls_time_out() {
    let fake = spawn_fake(Handshake::None, false);
    let c = AgentClient::new(fake.addr(false), "t").with_timeout(Duration::from_millis(200));
    let t0 = Instant::now();
    // The fake never answers a stat.
    let e = c.stat("anything").await.unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The client still works afterwards (the abandoned connection is not reused).
    c.health().await.unwrap();
}
