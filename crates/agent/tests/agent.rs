//! End-to-end tests: the real `atelier-agent` binary driven by `atelier-agent-client`.
//!
//! The `suite!` tests run once over TCP and once over a Unix socket.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::{Duration, Instant};

use atelier_agent_client::{AgentClient, Error};
use atelier_proto::{
    CommandLine, ErrorBody, ExecEvent, ExecRequest, FileKind, RestartPolicy, ServiceSpec,
    ServiceState,
};
use bytes::Bytes;
use common::*;
use futures::StreamExt;

const SECS5: Duration = Duration::from_secs(5);

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
    health_reports_the_agent,
    requests_need_the_token,
    unknown_routes_and_bad_json_are_error_bodies,
    exec_argv_and_shell,
    exec_env_and_cwd,
    exec_reports_death_by_signal,
    exec_timeout_kills_the_whole_group,
    exec_output_cap_truncates_but_drains,
    exec_stdin,
    exec_unrunnable_commands,
    exec_as_another_user,
    exec_concurrent_calls,
    exec_stream_events_arrive_as_produced,
    exec_stream_keeps_utf8_characters_whole,
    exec_stream_disconnect_kills_the_group,
    exec_stream_timeout,
    files_write_read_stat_with_mode,
    files_list_mkdir_delete,
    files_path_traversal_is_refused,
    files_symlink_escapes_are_refused,
    files_payload_limits,
    services_logs_with_offsets,
    services_watchdog_restarts_killed_service,
    services_never_policy_exits,
    services_always_policy_restarts_clean_exits,
    services_stop_start_delete,
    services_put_replaces_and_restarts,
    services_bad_requests,
);

fn shell(s: &str) -> ExecRequest {
    ExecRequest::shell(s)
}

fn spec(script: &str, restart: RestartPolicy) -> ServiceSpec {
    ServiceSpec {
        command: CommandLine::Shell(script.into()),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        restart,
    }
}

#[track_caller]
fn assert_agent_err(e: Error, status: u16, code: &str) {
    match &e {
        Error::Agent { status: s, body } => {
            assert_eq!((*s, body.error.code.as_str()), (status, code), "{e}");
            assert!(!body.error.message.is_empty());
        }
        other => panic!("expected agent error {status}/{code}, got {other:?}"),
    }
}

// ---------------------------------------------------------------- health & auth

async fn health_reports_the_agent(t: Transport) {
    let a = Agent::start(t).await;
    let h = a.client.health().await.unwrap();
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(h.pid, a.pid());
    assert!(!h.hostname.is_empty());
    assert!(h.load.iter().all(|l| *l >= 0.0));
    let h2 = a.client.wait_healthy(SECS5).await.unwrap();
    assert!(h2.uptime_ms >= h.uptime_ms);
}

async fn requests_need_the_token(t: Transport) {
    let a = Agent::start(t).await;
    for req in [
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n"
            .to_string(),
        format!(
            "GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {TOKEN}\r\nConnection: close\r\n\r\n"
        ),
        // Unknown routes are not revealed without the token either.
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
    ] {
        let resp = raw_request(&a.addr, req.as_bytes()).await;
        let (status, body) = split_response(&resp);
        assert_eq!(status, 401, "{resp}");
        let eb: ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(eb.error.code, "unauthorized");
    }
    // With the right token the same raw request works.
    let ok = raw_request(
        &a.addr,
        format!("GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(split_response(&ok).0, 200, "{ok}");
    let wrong = AgentClient::new(a.addr.clone(), "not-the-token");
    assert_agent_err(wrong.health().await.unwrap_err(), 401, "unauthorized");
    // wait_healthy gives up at once on an auth failure instead of retrying.
    let t0 = Instant::now();
    assert_agent_err(
        wrong.wait_healthy(SECS5).await.unwrap_err(),
        401,
        "unauthorized",
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
}

async fn unknown_routes_and_bad_json_are_error_bodies(t: Transport) {
    let a = Agent::start(t).await;
    let req = |method: &str, path: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = [
        (req("GET", "/v1/nope", ""), 404, "not_found"),
        (req("GET", "/", ""), 404, "not_found"),
        (req("DELETE", "/v1/health", ""), 405, "method_not_allowed"),
        (req("POST", "/v1/exec", "{bad"), 400, "invalid_value"),
        (req("POST", "/v1/exec", ""), 400, "invalid_value"),
        (
            req(
                "POST",
                "/v1/exec",
                r#"{"command":{"shell":"true"},"bogus":1}"#,
            ),
            400,
            "invalid_value",
        ),
        (
            req("POST", "/v1/exec", r#"{"command":"true"}"#),
            400,
            "invalid_value",
        ),
        (req("PUT", "/v1/services/web", "[]"), 400, "invalid_value"),
        (req("GET", "/v1/files/content", ""), 400, "invalid_value"),
        (
            req("DELETE", "/v1/files?path=x&recursive=maybe", ""),
            400,
            "invalid_value",
        ),
        (
            req("GET", "/v1/services/web/logs?offset=-1", ""),
            400,
            "invalid_value",
        ),
    ];
    for (req, status, code) in cases {
        let resp = raw_request(&a.addr, req.as_bytes()).await;
        let (s, body) = split_response(&resp);
        assert_eq!(s, status, "{req:?} -> {resp}");
        let eb: ErrorBody =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: body {body:?}"));
        assert_eq!(eb.error.code, code, "{req:?}");
    }
}

// ---------------------------------------------------------------- exec

async fn exec_argv_and_shell(t: Transport) {
    let a = Agent::start(t).await;
    let r = a
        .client
        .exec(&ExecRequest::argv(["echo", "hello  world", "$HOME"]))
        .await
        .unwrap();
    assert_eq!(r.stdout, "hello  world $HOME\n");
    assert_eq!(r.status.exit_code, Some(0));
    assert_eq!(r.status.signal, None);
    assert!(!r.status.timed_out);
    let r = a
        .client
        .exec(&shell("echo $((40+2)); echo oops >&2; exit 7"))
        .await
        .unwrap();
    assert_eq!(r.stdout, "42\n");
    assert_eq!(r.stderr, "oops\n");
    assert_eq!(r.status.exit_code, Some(7));
}

async fn exec_env_and_cwd(t: Transport) {
    let a = Agent::start(t).await;
    std::fs::create_dir_all(a.root.join("sub/dir")).unwrap();
    let mut req = shell(
        "pwd; echo \"$FOO|$BAR|${ATELIER_AGENT_TOKEN:-unset}\"; test -n \"$PATH\" && echo path",
    );
    req.env.insert("FOO".into(), "foo value".into());
    req.env.insert("BAR".into(), "ü".into());
    let r = a.client.exec(&req).await.unwrap();
    // Default cwd is the first root; the agent's token does not leak into commands.
    assert_eq!(
        r.stdout,
        format!("{}\nfoo value|ü|unset\npath\n", a.root.display())
    );
    req.cwd = Some("sub/dir".into());
    let r = a.client.exec(&req).await.unwrap();
    assert!(r
        .stdout
        .starts_with(&format!("{}\n", a.root.join("sub/dir").display())));
    let mut req = shell("pwd");
    req.cwd = Some("/tmp".into());
    assert_eq!(a.client.exec(&req).await.unwrap().stdout, "/tmp\n");
    req.cwd = Some("does/not/exist".into());
    assert_agent_err(a.client.exec(&req).await.unwrap_err(), 400, "invalid_value");
    let mut req = shell("true");
    req.env.insert("A=B".into(), "x".into());
    assert_agent_err(a.client.exec(&req).await.unwrap_err(), 400, "invalid_value");
}

async fn exec_reports_death_by_signal(t: Transport) {
    let a = Agent::start(t).await;
    let r = a
        .client
        .exec(&shell("kill -TERM $$; sleep 5"))
        .await
        .unwrap();
    assert_eq!(r.status.signal, Some(15));
    assert_eq!(r.status.exit_code, None);
    assert!(!r.status.timed_out);
    let r = a.client.exec(&shell("kill -KILL $$")).await.unwrap();
    assert_eq!(r.status.signal, Some(9));
}

async fn exec_timeout_kills_the_whole_group(t: Transport) {
    let a = Agent::start(t).await;
    let mut req = shell("sleep 30 & echo $!; sleep 30");
    req.timeout_ms = Some(500);
    let t0 = Instant::now();
    let r = a.client.exec(&req).await.unwrap();
    let took = t0.elapsed();
    assert!(r.status.timed_out, "{r:?}");
    assert_eq!(r.status.signal, Some(9));
    assert_eq!(r.status.exit_code, None);
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The output produced before the kill is kept.
    let grandchild: u32 = r.stdout.trim().parse().unwrap();
    poll("the grandchild sleep to die", SECS5, || async {
        proc_dead(grandchild).then_some(())
    })
    .await;
}

async fn exec_output_cap_truncates_but_drains(t: Transport) {
    let a = Agent::start(t).await;
    let mut req = shell("head -c 100000 /dev/zero | tr '\\0' a; echo done >&2");
    req.output_limit = Some(1000);
    let r = a.client.exec(&req).await.unwrap();
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout.bytes().all(|b| b == b'a'));
    assert!(r.status.stdout_truncated);
    assert!(!r.status.stderr_truncated);
    assert_eq!(r.stderr, "done\n");
    assert_eq!(r.status.exit_code, Some(0));
    // Far more output than the pipe holds: the child must not block on a full pipe.
    let mut req = shell("head -c 8000000 /dev/zero; echo fin >&2");
    req.output_limit = Some(10);
    req.timeout_ms = Some(20_000);
    let r = a.client.exec(&req).await.unwrap();
    assert!(!r.status.timed_out);
    assert_eq!(r.status.exit_code, Some(0));
    assert_eq!(r.stdout.len(), 10);
    assert_eq!(r.stderr, "fin\n");
    // Under the cap nothing is flagged.
    let r = a.client.exec(&shell("printf 12345")).await.unwrap();
    assert_eq!(r.stdout, "12345");
    assert!(!r.status.stdout_truncated);
}

async fn exec_stdin(t: Transport) {
    let a = Agent::start(t).await;
    let mut req = ExecRequest::argv(["cat"]);
    req.stdin = Some("line one\nline two\n".into());
    assert_eq!(
        a.client.exec(&req).await.unwrap().stdout,
        "line one\nline two\n"
    );
    // Bigger than a pipe buffer.
    let mut req = ExecRequest::argv(["wc", "-c"]);
    req.stdin = Some("x".repeat(300_000));
    assert_eq!(a.client.exec(&req).await.unwrap().stdout.trim(), "300000");
    // Without stdin the command reads /dev/null and does not hang.
    let mut req = ExecRequest::argv(["cat"]);
    req.timeout_ms = Some(5000);
    let r = a.client.exec(&req).await.unwrap();
    assert!(!r.status.timed_out);
    assert_eq!(r.stdout, "");
    // A command that ignores its stdin still finishes.
    let mut req = shell("echo ignored");
    req.stdin = Some("y".repeat(1_000_000));
    assert_eq!(a.client.exec(&req).await.unwrap().stdout, "ignored\n");
}

async fn exec_unrunnable_commands(t: Transport) {
    let a = Agent::start(t).await;
    let r = a
        .client
        .exec(&ExecRequest::argv(["/definitely/not/here"]))
        .await
        .unwrap();
    assert_eq!(r.status.exit_code, Some(127));
    assert!(r.stderr.contains("/definitely/not/here"), "{}", r.stderr);
    let r = a
        .client
        .exec(&ExecRequest::argv([a.root.to_str().unwrap()]))
        .await
        .unwrap();
    assert_eq!(r.status.exit_code, Some(126));
    let r = a.client.exec(&shell("nosuchcommand-xyz")).await.unwrap();
    assert_eq!(r.status.exit_code, Some(127));
    assert_agent_err(
        a.client
            .exec(&ExecRequest::argv(Vec::<String>::new()))
            .await
            .unwrap_err(),
        400,
        "invalid_value",
    );
    let mut req = shell("true");
    req.timeout_ms = Some(0);
    assert_agent_err(a.client.exec(&req).await.unwrap_err(), 400, "invalid_value");
}

async fn exec_as_another_user(t: Transport) {
    let a = Agent::start(t).await;
    let mut req = shell("id -u; id -g; echo $HOME $USER");
    req.user = Some("no-such-user-xyz".into());
    assert_agent_err(a.client.exec(&req).await.unwrap_err(), 400, "invalid_value");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let Some(nobody) = passwd.lines().find(|l| l.starts_with("nobody:")) else {
        atelier_testkit::skip("no `nobody` in /etc/passwd for the user switch");
        return;
    };
    let f: Vec<&str> = nobody.split(':').collect();
    req.user = Some("nobody".into());
    req.cwd = Some("/".into());
    let res = a.client.exec(&req).await;
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert_agent_err(res.unwrap_err(), 403, "forbidden");
        return;
    }
    let r = res.unwrap();
    assert_eq!(
        r.stdout,
        format!("{}\n{}\n{} nobody\n", f[2], f[3], f[5]),
        "{r:?}"
    );
}

async fn exec_concurrent_calls(t: Transport) {
    let a = Agent::start(t).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let c = a.client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .exec(&shell(&format!("echo {i}; exit {}", i % 5)))
                .await
                .unwrap();
            assert_eq!(r.stdout, format!("{i}\n"));
            assert_eq!(r.status.exit_code, Some(i % 5));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Sequential calls reuse pooled connections and stay correct.
    for i in 0..30 {
        let r = a.client.exec(&ExecRequest::argv(["true"])).await.unwrap();
        assert_eq!(r.status.exit_code, Some(0), "run {i}");
    }
}

async fn exec_stream_events_arrive_as_produced(t: Transport) {
    let a = Agent::start(t).await;
    let t0 = Instant::now();
    let mut s = a
        .client
        .exec_stream(&shell("echo a; sleep 1; echo b >&2; echo c; exit 3"))
        .await
        .unwrap();
    let first = s.next().await.unwrap().unwrap();
    let first_at = t0.elapsed();
    assert_eq!(first, ExecEvent::Stdout { data: "a\n".into() });
    assert!(
        first_at < Duration::from_millis(800),
        "first event only after {first_at:?}"
    );
    let mut rest = Vec::new();
    while let Some(ev) = s.next().await {
        rest.push(ev.unwrap());
    }
    let exit_at = t0.elapsed();
    assert!(exit_at >= Duration::from_millis(950), "{exit_at:?}");
    let (last, before) = rest.split_last().unwrap();
    match last {
        ExecEvent::Exit(st) => {
            assert_eq!(st.exit_code, Some(3));
            assert!(!st.timed_out);
            assert!(st.duration_ms >= 950);
        }
        other => panic!("last event {other:?}"),
    }
    let out: String = before
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Stdout { data } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    let err: String = before
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Stderr { data } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!((out.as_str(), err.as_str()), ("c\n", "b\n"));
    // A failed spawn streams like a shell would.
    let mut s = a
        .client
        .exec_stream(&ExecRequest::argv(["/no/such/binary"]))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(ev) = s.next().await {
        events.push(ev.unwrap());
    }
    assert!(matches!(events.last(), Some(ExecEvent::Exit(st)) if st.exit_code == Some(127)));
    // Bad requests are errors before any streaming.
    let mut bad = shell("true");
    bad.cwd = Some("nope/nope".into());
    assert_agent_err(
        a.client.exec_stream(&bad).await.err().unwrap(),
        400,
        "invalid_value",
    );
}

async fn exec_stream_keeps_utf8_characters_whole(t: Transport) {
    let a = Agent::start(t).await;
    // "€" is e2 82 ac: written in two parts with a pause, so they arrive in two reads.
    let mut s = a
        .client
        .exec_stream(&shell(
            "printf '\\342\\202'; sleep 0.3; printf '\\254\\n'; printf 'x\\377y\\n'",
        ))
        .await
        .unwrap();
    let mut out = String::new();
    let mut chunks = Vec::new();
    while let Some(ev) = s.next().await {
        if let ExecEvent::Stdout { data } = ev.unwrap() {
            chunks.push(data.clone());
            out.push_str(&data);
        }
    }
    assert_eq!(out, "€\nx\u{FFFD}y\n", "chunks {chunks:?}");
    assert!(
        chunks.iter().all(|c| !c.starts_with('\u{FFFD}')),
        "{chunks:?}"
    );
    // Lots of multibyte text through many pipe reads.
    let text = "é€😀ab".repeat(40_000);
    let mut req = ExecRequest::argv(["cat"]);
    req.stdin = Some(text.clone());
    let mut s = a.client.exec_stream(&req).await.unwrap();
    let mut out = String::new();
    let mut n = 0;
    while let Some(ev) = s.next().await {
        if let ExecEvent::Stdout { data } = ev.unwrap() {
            n += 1;
            out.push_str(&data);
        }
    }
    assert!(n > 1, "expected several chunks");
    assert!(!out.contains('\u{FFFD}'));
    assert_eq!(out, text);
    // The output cap applies to streams too.
    let mut req = shell("head -c 50000 /dev/zero | tr '\\0' z");
    req.output_limit = Some(100);
    let mut s = a.client.exec_stream(&req).await.unwrap();
    let mut out = String::new();
    let mut truncated = false;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            ExecEvent::Stdout { data } => out.push_str(&data),
            ExecEvent::Exit(st) => truncated = st.stdout_truncated,
            ExecEvent::Stderr { .. } => {}
        }
    }
    assert_eq!(out.len(), 100);
    assert!(truncated);
}

async fn exec_stream_disconnect_kills_the_group(t: Transport) {
    let a = Agent::start(t).await;
    let mut s = a
        .client
        .exec_stream(&shell("sleep 60 & echo $!; exec sleep 60"))
        .await
        .unwrap();
    let ev = s.next().await.unwrap().unwrap();
    let ExecEvent::Stdout { data } = ev else {
        panic!("{ev:?}")
    };
    let bg: u32 = data.trim().parse().unwrap();
    assert!(!proc_dead(bg));
    drop(s);
    poll("the streamed command to be killed", SECS5, || async {
        proc_dead(bg).then_some(())
    })
    .await;
    // The same holds for a plain exec whose client gives up.
    let marker = a.root.join("pid");
    let mut req = shell(&format!("echo $$ > {}; exec sleep 60", marker.display()));
    req.timeout_ms = Some(60_000);
    // Give up on the call after a moment: the connection is dropped mid-request.
    let _ = tokio::time::timeout(Duration::from_millis(500), a.client.exec(&req)).await;
    let pid: u32 = poll("the pid file", SECS5, || async {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await;
    poll("the abandoned exec to be killed", SECS5, || async {
        proc_dead(pid).then_some(())
    })
    .await;
}

async fn exec_stream_timeout(t: Transport) {
    let a = Agent::start(t).await;
    let mut req = shell("echo go; sleep 30");
    req.timeout_ms = Some(300);
    let mut s = a.client.exec_stream(&req).await.unwrap();
    let mut exit = None;
    while let Some(ev) = s.next().await {
        if let ExecEvent::Exit(st) = ev.unwrap() {
            exit = Some(st);
        }
    }
    let st = exit.unwrap();
    assert!(st.timed_out);
    assert_eq!(st.signal, Some(9));
}

// ---------------------------------------------------------------- files

async fn files_write_read_stat_with_mode(t: Transport) {
    let a = Agent::start(t).await;
    let data = Bytes::from_static(b"#!/bin/sh\necho hi\n");
    let st = a
        .client
        .write_file("bin/run.sh", data.clone(), Some(0o750))
        .await
        .unwrap();
    let on_disk = a.root.join("bin/run.sh");
    assert_eq!(st.path, on_disk.to_str().unwrap());
    assert_eq!(st.name, "run.sh");
    assert_eq!(st.kind, FileKind::File);
    assert_eq!(st.size, data.len() as u64);
    assert_eq!(st.mode, 0o750);
    let meta = std::fs::metadata(&on_disk).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(std::fs::read(&on_disk).unwrap(), data);
    assert_eq!(a.client.read_file("bin/run.sh").await.unwrap(), data);
    // It is executable for real.
    let r = a
        .client
        .exec(&ExecRequest::argv(["./bin/run.sh"]))
        .await
        .unwrap();
    assert_eq!(r.stdout, "hi\n");
    // Default mode 0644 whatever the umask; absolute paths inside the root work.
    let abs = a.abs("plain.txt");
    let st = a
        .client
        .write_file(&abs, Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    assert_eq!(st.mode, 0o644);
    assert_eq!(
        std::fs::metadata(&abs).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    // Overwrite: new content and mode, no temp files left behind.
    let st = a
        .client
        .write_file("plain.txt", Bytes::from_static(b"second"), Some(0o600))
        .await
        .unwrap();
    assert_eq!((st.size, st.mode), (6, 0o600));
    assert_eq!(std::fs::read_to_string(&abs).unwrap(), "second");
    let names: Vec<String> = std::fs::read_dir(&a.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("atelier")), "{names:?}");
    // Binary data and names that need percent-encoding.
    let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let odd = "dir with space/ü &?#%+=.bin";
    a.client
        .write_file(odd, Bytes::from(bin.clone()), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(a.root.join(odd)).unwrap(), bin);
    assert_eq!(a.client.read_file(odd).await.unwrap(), bin);
    let st = a.client.stat(odd).await.unwrap();
    assert_eq!((st.size, st.kind), (70_000, FileKind::File));
    assert!(st.modified_ms > 1_600_000_000_000);
    // Empty file.
    a.client
        .write_file("empty", Bytes::new(), None)
        .await
        .unwrap();
    assert_eq!(a.client.read_file("empty").await.unwrap().len(), 0);
    // Errors.
    assert_agent_err(
        a.client.read_file("missing").await.unwrap_err(),
        404,
        "not_found",
    );
    assert_agent_err(
        a.client.stat("missing").await.unwrap_err(),
        404,
        "not_found",
    );
    assert_agent_err(
        a.client.read_file("bin").await.unwrap_err(),
        400,
        "is_a_directory",
    );
    assert_agent_err(
        a.client
            .write_file("bin", Bytes::from_static(b"x"), None)
            .await
            .unwrap_err(),
        400,
        "is_a_directory",
    );
    assert_agent_err(
        a.client
            .write_file("plain.txt/child", Bytes::from_static(b"x"), None)
            .await
            .unwrap_err(),
        400,
        "not_a_directory",
    );
    let bad_mode = raw_request(
        &a.addr,
        format!("PUT /v1/files/content?path=m&mode=999 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx").as_bytes(),
    )
    .await;
    assert_eq!(split_response(&bad_mode).0, 400, "{bad_mode}");
}

async fn files_list_mkdir_delete(t: Transport) {
    let a = Agent::start(t).await;
    for name in ["b.txt", "a.txt", "C.txt", "d/inner.txt"] {
        write_file(&a.root.join("list").join(name), name);
    }
    symlink("a.txt", a.root.join("list/e-link")).unwrap();
    let l = a.client.list_dir("list").await.unwrap();
    assert_eq!(l.path, a.abs("list"));
    let names: Vec<&str> = l.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["C.txt", "a.txt", "b.txt", "d", "e-link"]);
    let kinds: Vec<FileKind> = l.entries.iter().map(|e| e.kind).collect();
    use FileKind::*;
    assert_eq!(kinds, [File, File, File, Dir, Symlink]);
    assert_eq!(l.entries[1].path, a.abs("list/a.txt"));
    assert_eq!(l.entries[1].size, 5);
    // The root itself.
    let l = a.client.list_dir(".").await.unwrap();
    assert_eq!(l.entries.len(), 1);
    assert_agent_err(
        a.client.list_dir("list/a.txt").await.unwrap_err(),
        400,
        "not_a_directory",
    );
    assert_agent_err(
        a.client.list_dir("nope").await.unwrap_err(),
        404,
        "not_found",
    );
    // mkdir -p, idempotent; not over a file.
    let st = a.client.mkdir("x/y/z").await.unwrap();
    assert_eq!(st.kind, Dir);
    assert!(a.root.join("x/y/z").is_dir());
    assert_eq!(a.client.mkdir("x/y/z").await.unwrap().kind, Dir);
    assert_agent_err(
        a.client.mkdir("list/a.txt").await.unwrap_err(),
        409,
        "already_exists",
    );
    // delete
    assert_agent_err(
        a.client.delete("list", false).await.unwrap_err(),
        409,
        "conflict",
    );
    assert!(a.root.join("list/a.txt").exists());
    a.client.delete("list/e-link", false).await.unwrap();
    assert!(
        a.root.join("list/a.txt").exists(),
        "deleting a link keeps its target"
    );
    a.client.delete("list/b.txt", false).await.unwrap();
    assert!(!a.root.join("list/b.txt").exists());
    a.client.delete("x/y/z", false).await.unwrap();
    assert!(!a.root.join("x/y/z").exists());
    a.client.delete("list", true).await.unwrap();
    assert!(!a.root.join("list").exists());
    assert_agent_err(a.client.stat("list").await.unwrap_err(), 404, "not_found");
    assert_agent_err(
        a.client.delete("list", true).await.unwrap_err(),
        404,
        "not_found",
    );
    // The root cannot be deleted.
    assert_agent_err(
        a.client.delete(&a.abs(""), true).await.unwrap_err(),
        403,
        "forbidden_path",
    );
    assert!(a.root.is_dir());
}

async fn files_path_traversal_is_refused(t: Transport) {
    let a = Agent::start(t).await;
    write_file(&a.root.join("ok.txt"), "ok");
    write_file(&a.dir.path().join("secret.txt"), "secret");
    let secret = a.dir.path().join("secret.txt");
    for bad in [
        "../secret.txt",
        "sub/../../secret.txt",
        "/etc/passwd",
        secret.to_str().unwrap(),
        &format!("{}/../secret.txt", a.root.display()),
    ] {
        assert_agent_err(
            a.client.read_file(bad).await.unwrap_err(),
            403,
            "forbidden_path",
        );
        assert_agent_err(a.client.stat(bad).await.unwrap_err(), 403, "forbidden_path");
        assert_agent_err(
            a.client
                .write_file(bad, Bytes::from_static(b"pwned"), None)
                .await
                .unwrap_err(),
            403,
            "forbidden_path",
        );
        assert_agent_err(
            a.client.delete(bad, true).await.unwrap_err(),
            403,
            "forbidden_path",
        );
        assert_agent_err(
            a.client.mkdir(bad).await.unwrap_err(),
            403,
            "forbidden_path",
        );
        assert_agent_err(
            a.client.list_dir(bad).await.unwrap_err(),
            403,
            "forbidden_path",
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    assert_agent_err(
        a.client.list_dir("/").await.unwrap_err(),
        403,
        "forbidden_path",
    );
    // Sanity: a harmless name with dots is fine.
    a.client
        .write_file("..hidden..", Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    assert_eq!(a.client.read_file("./ok.txt").await.unwrap(), "ok");
}

async fn files_symlink_escapes_are_refused(t: Transport) {
    let a = Agent::start(t).await;
    let outside = a.dir.path().join("outside");
    write_file(&outside.join("data.txt"), "outside data");
    symlink("/etc", a.root.join("etc")).unwrap();
    symlink(&outside, a.root.join("out")).unwrap();
    symlink(outside.join("data.txt"), a.root.join("out-file")).unwrap();
    symlink(outside.join("not-yet"), a.root.join("out-dangling")).unwrap();
    write_file(&a.root.join("real/inside.txt"), "inside");
    symlink("real/inside.txt", a.root.join("in-link")).unwrap();
    symlink("real", a.root.join("in-dir")).unwrap();

    for bad in ["etc/passwd", "etc/hostname", "out/data.txt", "out-file"] {
        assert_agent_err(
            a.client.read_file(bad).await.unwrap_err(),
            403,
            "forbidden_path",
        );
        assert_agent_err(a.client.stat(bad).await.unwrap_err(), 403, "forbidden_path");
        assert_agent_err(
            a.client.delete(bad, false).await.unwrap_err(),
            403,
            "forbidden_path",
        );
    }
    for bad in [
        "etc/atelier-evil",
        "out/new.txt",
        "out-file",
        "out-dangling",
        "out/sub/deep.txt",
    ] {
        assert_agent_err(
            a.client
                .write_file(bad, Bytes::from_static(b"pwned"), None)
                .await
                .unwrap_err(),
            403,
            "forbidden_path",
        );
    }
    for bad in ["etc", "out"] {
        assert_agent_err(
            a.client.list_dir(bad).await.unwrap_err(),
            403,
            "forbidden_path",
        );
    }
    assert_agent_err(
        a.client.mkdir("out/newdir").await.unwrap_err(),
        403,
        "forbidden_path",
    );
    assert!(!std::path::Path::new("/etc/atelier-evil").exists());
    assert!(!outside.join("new.txt").exists());
    assert!(!outside.join("not-yet").exists());
    assert!(!outside.join("newdir").exists());
    assert!(!outside.join("sub").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("data.txt")).unwrap(),
        "outside data"
    );
    // Symlinks that stay inside work: reads and writes go to the target, stat shows the link.
    assert_eq!(a.client.read_file("in-link").await.unwrap(), "inside");
    assert_eq!(
        a.client.read_file("in-dir/inside.txt").await.unwrap(),
        "inside"
    );
    assert_eq!(
        a.client.stat("in-link").await.unwrap().kind,
        FileKind::Symlink
    );
    a.client
        .write_file("in-link", Bytes::from_static(b"updated"), None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(a.root.join("real/inside.txt")).unwrap(),
        "updated"
    );
    assert!(std::fs::symlink_metadata(a.root.join("in-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(a.client.list_dir("in-dir").await.unwrap().entries.len(), 1);
}

async fn files_payload_limits(t: Transport) {
    let a = Agent::start(t).await;
    // A declared upload beyond 256 MiB is refused before any byte is sent.
    let req = format!(
        "PUT /v1/files/content?path=huge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        300u64 * 1024 * 1024
    );
    let resp = raw_request(&a.addr, req.as_bytes()).await;
    let (status, body) = split_response(&resp);
    assert_eq!(status, 413, "{resp}");
    let eb: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(eb.error.code, "payload_too_large");
    assert!(!a.root.join("huge").exists());
    // JSON bodies are capped at 4 MiB.
    let mut req = shell("true");
    req.stdin = Some("x".repeat(5 * 1024 * 1024));
    assert_agent_err(
        a.client.exec(&req).await.unwrap_err(),
        413,
        "payload_too_large",
    );
    // A large file below the limit goes through.
    let big = Bytes::from(vec![7u8; 6 * 1024 * 1024]);
    let st = a
        .client
        .write_file("big.bin", big.clone(), None)
        .await
        .unwrap();
    assert_eq!(st.size, big.len() as u64);
    assert_eq!(a.client.read_file("big.bin").await.unwrap(), big);
}

// ---------------------------------------------------------------- services

async fn wait_for_log(c: &AgentClient, name: &str, needle: &str) -> String {
    poll(
        &format!("{needle:?} in the log of {name}"),
        SECS5,
        || async {
            let l = c.service_logs(name, 0, None).await.ok()?;
            l.data.contains(needle).then_some(l.data)
        },
    )
    .await
}

async fn services_logs_with_offsets(t: Transport) {
    let a = Agent::start(t).await;
    let st = a
        .client
        .put_service(
            "web",
            &spec(
                "echo hello; echo wörld >&2; exec sleep 60",
                RestartPolicy::OnFailure,
            ),
        )
        .await
        .unwrap();
    assert_eq!(st.name, "web");
    assert_eq!(st.state, ServiceState::Running);
    assert!(st.pid.is_some());
    assert!(st.started_ms.is_some());
    assert_eq!(st.restarts, 0);
    wait_for_log(&a.client, "web", "wörld\n").await;
    let all = a.client.service_logs("web", 0, None).await.unwrap();
    assert_eq!(all.data, "hello\nwörld\n");
    assert_eq!((all.offset, all.next_offset, all.size), (0, 13, 13));
    assert!(a.state.join("services/web.log").exists());
    let part = a.client.service_logs("web", 6, None).await.unwrap();
    assert_eq!(
        (part.data.as_str(), part.offset, part.next_offset),
        ("wörld\n", 6, 13)
    );
    let lim = a.client.service_logs("web", 0, Some(3)).await.unwrap();
    assert_eq!((lim.data.as_str(), lim.next_offset), ("hel", 3));
    // A limit that would split "ö" stops before it.
    let cut = a.client.service_logs("web", 6, Some(2)).await.unwrap();
    assert_eq!((cut.data.as_str(), cut.next_offset), ("w", 7));
    let end = a.client.service_logs("web", 13, None).await.unwrap();
    assert_eq!((end.data.as_str(), end.next_offset, end.size), ("", 13, 13));
    let list = a.client.services().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "web");
}

async fn services_watchdog_restarts_killed_service(t: Transport) {
    let a = Agent::start(t).await;
    let st = a
        .client
        .put_service(
            "w",
            &spec("echo run; exec sleep 60", RestartPolicy::OnFailure),
        )
        .await
        .unwrap();
    let pid1 = st.pid.unwrap();
    // Once it printed, the shell has exec'd into sleep: kill that.
    wait_for_log(&a.client, "w", "run\n").await;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid1 as i32, libc::SIGKILL);
    }
    let st = poll("the watchdog to restart the service", SECS5, || async {
        let s = a.client.service("w").await.ok()?;
        (s.restarts >= 1 && s.state == ServiceState::Running && s.pid.is_some_and(|p| p != pid1))
            .then_some(s)
    })
    .await;
    let exit = st.last_exit.unwrap();
    assert_eq!((exit.exit_code, exit.signal), (None, Some(9)));
    let pid2 = st.pid.unwrap();
    assert!(!proc_dead(pid2));
    wait_for_log(&a.client, "w", "run\nrun\n").await;
}

async fn services_never_policy_exits(t: Transport) {
    let a = Agent::start(t).await;
    a.client
        .put_service("once", &spec("echo bye; exit 3", RestartPolicy::Never))
        .await
        .unwrap();
    let st = poll("the service to exit", SECS5, || async {
        let s = a.client.service("once").await.ok()?;
        (s.state == ServiceState::Exited).then_some(s)
    })
    .await;
    assert_eq!(st.last_exit.as_ref().unwrap().exit_code, Some(3));
    assert_eq!(st.restarts, 0);
    assert_eq!(st.pid, None);
    // on_failure with a clean exit also ends as exited.
    a.client
        .put_service("clean", &spec("exit 0", RestartPolicy::OnFailure))
        .await
        .unwrap();
    poll("clean exit", SECS5, || async {
        let s = a.client.service("clean").await.ok()?;
        (s.state == ServiceState::Exited && s.restarts == 0).then_some(())
    })
    .await;
    // on_failure restarts a failing one, with backoff in between.
    a.client
        .put_service(
            "failing",
            &spec("echo try; exit 1", RestartPolicy::OnFailure),
        )
        .await
        .unwrap();
    let st = poll("failing service restarts", SECS5, || async {
        let s = a.client.service("failing").await.ok()?;
        (s.restarts >= 2).then_some(s)
    })
    .await;
    assert!(matches!(
        st.state,
        ServiceState::Backoff | ServiceState::Running
    ));
    // Starting an exited service runs it again.
    let st = a.client.start_service("once").await.unwrap();
    assert!(st.started_ms.is_some());
    wait_for_log(&a.client, "once", "bye\nbye\n").await;
}

async fn services_always_policy_restarts_clean_exits(t: Transport) {
    let a = Agent::start(t).await;
    a.client
        .put_service("loop", &spec("echo tick; exit 0", RestartPolicy::Always))
        .await
        .unwrap();
    let st = poll("always restarts", SECS5, || async {
        let s = a.client.service("loop").await.ok()?;
        (s.restarts >= 2).then_some(s)
    })
    .await;
    assert_eq!(st.last_exit.unwrap().exit_code, Some(0));
    wait_for_log(&a.client, "loop", "tick\ntick\ntick\n").await;
}

async fn services_stop_start_delete(t: Transport) {
    let a = Agent::start(t).await;
    let st = a
        .client
        .put_service(
            "svc",
            &spec("sleep 60 & echo $! ; exec sleep 60", RestartPolicy::Always),
        )
        .await
        .unwrap();
    let pid = st.pid.unwrap();
    let log = wait_for_log(&a.client, "svc", "\n").await;
    let bg: u32 = log.trim().parse().unwrap();
    let st = a.client.stop_service("svc").await.unwrap();
    assert_eq!(st.state, ServiceState::Stopped);
    assert_eq!(st.pid, None);
    assert_eq!(st.last_exit.as_ref().unwrap().signal, Some(15));
    poll("the stopped group to die", SECS5, || async {
        (proc_dead(pid) && proc_dead(bg)).then_some(())
    })
    .await;
    // Stays stopped: no restart even under `always`.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let st = a.client.service("svc").await.unwrap();
    assert_eq!((st.state, st.restarts), (ServiceState::Stopped, 0));
    // Stopping twice is fine.
    assert_eq!(
        a.client.stop_service("svc").await.unwrap().state,
        ServiceState::Stopped
    );
    let st = a.client.start_service("svc").await.unwrap();
    assert_eq!(st.state, ServiceState::Running);
    let pid2 = st.pid.unwrap();
    assert_ne!(pid2, pid);
    // Start on a running service leaves it alone.
    assert_eq!(a.client.start_service("svc").await.unwrap().pid, Some(pid2));
    a.client.delete_service("svc").await.unwrap();
    poll("the deleted service to die", SECS5, || async {
        proc_dead(pid2).then_some(())
    })
    .await;
    assert_agent_err(a.client.service("svc").await.unwrap_err(), 404, "not_found");
    assert!(a.client.services().await.unwrap().is_empty());
    assert!(!a.state.join("services/svc.log").exists());
    // A service that ignores SIGTERM is SIGKILLed after the grace period.
    let st = a
        .client
        .put_service(
            "stubborn",
            &spec(
                "trap '' TERM; echo ready; while :; do sleep 1; done",
                RestartPolicy::Never,
            ),
        )
        .await
        .unwrap();
    let pid = st.pid.unwrap();
    wait_for_log(&a.client, "stubborn", "ready").await;
    let t0 = Instant::now();
    let st = a.client.stop_service("stubborn").await.unwrap();
    let took = t0.elapsed();
    assert_eq!(st.state, ServiceState::Stopped);
    assert_eq!(st.last_exit.unwrap().signal, Some(9));
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "{took:?}"
    );
    assert!(proc_dead(pid));
}

async fn services_put_replaces_and_restarts(t: Transport) {
    let a = Agent::start(t).await;
    let one = a
        .client
        .put_service(
            "app",
            &spec("echo one; exec sleep 60", RestartPolicy::OnFailure),
        )
        .await
        .unwrap();
    let mut s2 = spec(
        "echo \"two $GREETING\"; exec sleep 60",
        RestartPolicy::Never,
    );
    s2.env.insert("GREETING".into(), "hi".into());
    s2.cwd = Some("work".into());
    std::fs::create_dir_all(a.root.join("work")).unwrap();
    let two = a.client.put_service("app", &s2).await.unwrap();
    assert_eq!(two.spec, s2);
    assert_ne!(two.pid, one.pid);
    assert_eq!(two.restarts, 0);
    poll("the old process to die", SECS5, || async {
        proc_dead(one.pid.unwrap()).then_some(())
    })
    .await;
    wait_for_log(&a.client, "app", "two hi\n").await;
    assert_eq!(
        a.client.service("app").await.unwrap().state,
        ServiceState::Running
    );
}

async fn services_bad_requests(t: Transport) {
    let a = Agent::start(t).await;
    let s = spec("true", RestartPolicy::Never);
    for bad in [
        "Bad",
        "has space",
        "-x",
        "a/b",
        "../x",
        &"x".repeat(65),
        "é",
    ] {
        let e = a.client.put_service(bad, &s).await.unwrap_err();
        let status = e.status().unwrap_or(0);
        assert!((400..500).contains(&status), "{bad}: {e:?}");
    }
    assert_agent_err(
        a.client.put_service("Bad", &s).await.unwrap_err(),
        400,
        "invalid_value",
    );
    assert_agent_err(
        a.client.service("ghost").await.unwrap_err(),
        404,
        "not_found",
    );
    assert_agent_err(
        a.client.stop_service("ghost").await.unwrap_err(),
        404,
        "not_found",
    );
    assert_agent_err(
        a.client.start_service("ghost").await.unwrap_err(),
        404,
        "not_found",
    );
    assert_agent_err(
        a.client.delete_service("ghost").await.unwrap_err(),
        404,
        "not_found",
    );
    assert_agent_err(
        a.client.service_logs("ghost", 0, None).await.unwrap_err(),
        404,
        "not_found",
    );
    let mut bad_cwd = s.clone();
    bad_cwd.cwd = Some("no/such/dir".into());
    assert_agent_err(
        a.client.put_service("x", &bad_cwd).await.unwrap_err(),
        400,
        "invalid_value",
    );
    let mut bad_user = s.clone();
    bad_user.user = Some("no-such-user-xyz".into());
    assert_agent_err(
        a.client.put_service("x", &bad_user).await.unwrap_err(),
        400,
        "invalid_value",
    );
    assert!(a.client.services().await.unwrap().is_empty());
    // A program that cannot start is a failing service, not a request error.
    let missing = ServiceSpec {
        command: CommandLine::Argv(vec!["/no/such/program".into()]),
        ..spec("", RestartPolicy::Never)
    };
    let st = a.client.put_service("missing", &missing).await.unwrap();
    assert_eq!(st.pid, None);
    let st = poll("missing program exits", SECS5, || async {
        let s = a.client.service("missing").await.ok()?;
        (s.state == ServiceState::Exited).then_some(s)
    })
    .await;
    assert_eq!(st.last_exit.unwrap().exit_code, Some(127));
    wait_for_log(&a.client, "missing", "cannot start").await;
}

// ---------------------------------------------------------------- single-transport tests

#[tokio::test]
async fn refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["--listen", "tcp:127.0.0.1:0", "--root"])
        .arg(dir.path().join("r"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .env_remove("ATELIER_AGENT_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    // An empty token file is no token either.
    let tf = dir.path().join("token");
    std::fs::write(&tf, "  \n").unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["--listen", "tcp:127.0.0.1:0", "--token-file"])
        .arg(&tf)
        .arg("--root")
        .arg(dir.path().join("r"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .env_remove("ATELIER_AGENT_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    // Bad listen addresses are refused by the CLI.
    let out = tokio::process::Command::new(BIN)
        .args(["--listen", "ftp:x", "--root", "/tmp", "--state-dir", "/tmp"])
        .env("ATELIER_AGENT_TOKEN", "x")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn token_file_is_trimmed_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, "  file-token \n").unwrap();
    let sock = dir.path().join("a.sock");
    // A stale socket file from an earlier run is replaced.
    let _stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(_stale);
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--listen",
            &format!("unix:{}", sock.display()),
            "--token-file",
        ])
        .arg(&tf)
        .arg("--root")
        .arg(dir.path().join("r1"))
        .arg("--root")
        .arg(dir.path().join("r2"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .env("ATELIER_AGENT_TOKEN", "env-token-ignored")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        line,
        format!("ATELIER_AGENT_LISTENING unix:{}\n", sock.display())
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let addr = atelier_proto::AgentAddr::Unix(sock.clone());
    let c = AgentClient::new(addr.clone(), "file-token");
    c.health().await.unwrap();
    assert_agent_err(
        AgentClient::new(addr, "env-token-ignored")
            .health()
            .await
            .unwrap_err(),
        401,
        "unauthorized",
    );
    // Second root: absolute paths in it are allowed; relative paths go to the first.
    let r2 = std::fs::canonicalize(dir.path().join("r2")).unwrap();
    let p = r2.join("f.txt");
    c.write_file(p.to_str().unwrap(), Bytes::from_static(b"2"), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "2");
    c.write_file("rel.txt", Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    assert!(dir.path().join("r1/rel.txt").exists());
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let st = tokio::time::timeout(SECS5, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success());
    assert!(!sock.exists(), "socket removed at shutdown");
}

#[tokio::test]
async fn sigterm_stops_services_and_exits_zero() {
    let mut a = Agent::start(Transport::Tcp).await;
    let st = a
        .client
        .put_service("bg", &spec("exec sleep 60", RestartPolicy::Always))
        .await
        .unwrap();
    let pid = st.pid.unwrap();
    let mut req = shell("echo $$; exec sleep 60");
    req.timeout_ms = Some(60_000);
    let c = a.client.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn(async move {
        let mut s = c.exec_stream(&req).await.unwrap();
        let Some(Ok(ExecEvent::Stdout { data })) = s.next().await else {
            panic!("no pid")
        };
        tx.send(data.trim().parse::<u32>().unwrap()).unwrap();
        // Hold the stream open while the agent shuts down.
        while s.next().await.is_some() {}
    });
    let exec_pid = tokio::time::timeout(SECS5, rx).await.unwrap().unwrap();
    assert!(!proc_dead(exec_pid));
    let status = a
        .terminate(Duration::from_secs(8))
        .await
        .expect("agent exits");
    assert_eq!(status.code(), Some(0), "{}", a.stderr());
    assert!(proc_dead(pid), "service killed at shutdown");
    poll("the running exec to be killed", SECS5, || async {
        proc_dead(exec_pid).then_some(())
    })
    .await;
    holder.abort();
    assert!(a.stderr().contains("stopping services"));
}

#[tokio::test]
async fn wait_healthy_waits_for_a_late_agent() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("late.sock");
    let c = AgentClient::new(atelier_proto::AgentAddr::Unix(sock.clone()), TOKEN);
    // Nobody there: a bounded wait ending in a connect error.
    let t0 = Instant::now();
    let e = c
        .wait_healthy(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let waiter = tokio::spawn({
        let c = c.clone();
        async move { c.wait_healthy(Duration::from_secs(15)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _child = tokio::process::Command::new(BIN)
        .args(["--listen", &format!("unix:{}", sock.display()), "--root"])
        .arg(dir.path().join("r"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .env("ATELIER_AGENT_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let h = waiter.await.unwrap().unwrap();
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
}

/// Firecracker hybrid vsock: a fake host-side socket that answers `CONNECT` and then
/// proxies to the agent's Unix socket.
#[tokio::test]
async fn hybrid_vsock_through_a_fake_firecracker_socket() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let a = Agent::start(Transport::Unix).await;
    let atelier_proto::AgentAddr::Unix(agent_sock) = a.addr.clone() else {
        unreachable!()
    };
    let uds = a.dir.path().join("fc.vsock");
    let listener = tokio::net::UnixListener::bind(&uds).unwrap();
    let connects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connects.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let agent_sock = agent_sock.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut s = tokio::io::BufReader::new(s);
                let mut line = String::new();
                s.read_line(&mut line).await.unwrap();
                if line != "CONNECT 1024\n" {
                    let _ = s.get_mut().write_all(b"ERR unknown port\n").await;
                    return;
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                s.get_mut().write_all(b"OK 1073741824\n").await.unwrap();
                let mut up = tokio::net::UnixStream::connect(&agent_sock).await.unwrap();
                let mut s = s.into_inner();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    let addr: atelier_proto::AgentAddr = format!("fcvsock:{}:1024", uds.display()).parse().unwrap();
    let c = AgentClient::new(addr, TOKEN);
    let h = c.wait_healthy(SECS5).await.unwrap();
    assert_eq!(h.pid, a.pid());
    for i in 0..5 {
        let r = c.exec(&shell(&format!("echo {i}"))).await.unwrap();
        assert_eq!(r.stdout, format!("{i}\n"));
    }
    let mut s = c.exec_stream(&shell("echo streamed")).await.unwrap();
    assert_eq!(
        s.next().await.unwrap().unwrap(),
        ExecEvent::Stdout {
            data: "streamed\n".into()
        }
    );
    while s.next().await.is_some() {}
    // Keep-alive: the handshake is not redone for every call.
    assert!(connects.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    // Wrong port: the fake refuses, the client reports a handshake error.
    let wrong: atelier_proto::AgentAddr = format!("fcvsock:{}:9", uds.display()).parse().unwrap();
    let e = AgentClient::new(wrong, TOKEN).health().await.unwrap_err();
    assert!(
        matches!(&e, Error::Handshake(m) if m.contains("ERR unknown port")),
        "{e:?}"
    );
}

#[tokio::test]
async fn vsock_listener_when_available() {
    // SAFETY: socket(2) takes plain integers; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        atelier_testkit::skip_documented(format!(
            "cannot create an AF_VSOCK socket ({})",
            std::io::Error::last_os_error()
        ));
        return;
    }
    // SAFETY: `fd` is the socket opened above, owned by nothing else.
    unsafe {
        libc::close(fd);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = 20000 + (std::process::id() % 10000);
    let mut child = tokio::process::Command::new(BIN)
        .args(["--listen", &format!("vsock:4294967295:{port}"), "--root"])
        .arg(dir.path().join("r"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .env("ATELIER_AGENT_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    let _ = tokio::time::timeout(SECS5, out.read_line(&mut line)).await;
    if line.is_empty() {
        let o = child.wait_with_output().await.unwrap();
        atelier_testkit::skip_documented(format!(
            "the agent could not listen on vsock: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
        return;
    }
    assert!(line.starts_with("ATELIER_AGENT_LISTENING vsock:"), "{line}");
    // Loopback vsock (CID 1) needs the vsock_loopback module.
    let c = AgentClient::new(atelier_proto::AgentAddr::Vsock { cid: 1, port }, TOKEN);
    match c.health().await {
        Ok(h) => assert_eq!(h.pid, child.id().unwrap()),
        Err(e) => atelier_testkit::skip_documented(format!(
            "no loopback vsock for the round trip (vsock_loopback): {e}"
        )),
    }
}

/// PID 1: the agent forks a reaping init; orphans are reaped and exit codes stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_reaps_orphans_and_keeps_exit_codes() {
    let a = match Agent::start_with(
        Transport::Tcp,
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            atelier_testkit::skip(format!("unshare (util-linux) failed: {e}"));
            return;
        }
    };
    let h = a.client.health().await.unwrap();
    assert_ne!(h.pid, 1, "the agent runs as a child of the init");
    let init = a
        .client
        .exec(&shell("cat /proc/1/cmdline | tr '\\0' ' '"))
        .await
        .unwrap();
    assert!(init.stdout.contains("atelier-agent"), "{init:?}");
    // An orphan is re-parented to the init...
    let r = a.client.exec(&shell("sleep 0.5 & echo $!")).await.unwrap();
    let orphan: u32 = r.stdout.trim().parse().unwrap();
    let ppid = a
        .client
        .exec(&shell(&format!("cut -d' ' -f4 /proc/{orphan}/stat")))
        .await
        .unwrap();
    assert_eq!(ppid.stdout.trim(), "1");
    // ...and reaped once it exits, like a batch of others.
    a.client
        .exec(&shell("for i in 1 2 3 4 5; do sleep 0.2 & done; exit 0"))
        .await
        .unwrap();
    let zombies = || async {
        let r = a
            .client
            .exec(&shell("cat /proc/[0-9]*/stat 2>/dev/null"))
            .await
            .unwrap();
        let z: Vec<String> = r
            .stdout
            .lines()
            .filter(|l| {
                l.rfind(')')
                    .and_then(|i| l[i + 2..].chars().next())
                    .is_some_and(|c| c == 'Z')
            })
            .map(String::from)
            .collect();
        z
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    poll("orphans to be reaped", SECS5, || async {
        let z = zombies().await;
        let sleeping = a
            .client
            .exec(&shell(
                "grep -l '^Name:.*sleep' /proc/[0-9]*/status 2>/dev/null | wc -l",
            ))
            .await
            .unwrap();
        (z.is_empty() && sleeping.stdout.trim() == "0").then_some(())
    })
    .await;
    // Exit codes stay exact while the init reaps orphans all around.
    for i in 0..50 {
        let r = a
            .client
            .exec(&shell(&format!("true & exit {}", i % 256)))
            .await
            .unwrap();
        assert_eq!(r.status.exit_code, Some(i % 256), "run {i}: {r:?}");
    }
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = a.client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .exec(&shell(&format!("sleep 0.01 & exit {i}")))
                .await
                .unwrap();
            assert_eq!(r.status.exit_code, Some(i));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = a.client.exec(&shell("kill -TERM $$")).await.unwrap();
    assert_eq!(r.status.signal, Some(15));
    poll("no zombies left", SECS5, || async {
        zombies().await.is_empty().then_some(())
    })
    .await;
}

#[test]
fn exec_stream_is_send_and_static() {
    fn assert_send_static<T: Send + 'static + Unpin>(_: &T) {}
    fn check(s: atelier_agent_client::ExecStream) {
        assert_send_static(&s);
    }
    let _ = check;
}
