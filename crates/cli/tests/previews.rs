//! Previews on their own origins, through a real manager (local driver) and a real dev
//! server (Node): a workspace's dev commands start as services in its sandboxes; each
//! port opens at `<port>-<sandbox>.localhost` only with that port's signed cookie
//! (minted by a hand-off from the token holder), or for anyone when the workspace makes
//! it public; WebSocket and Server-Sent Events pass through; the manager's credentials
//! never reach the dev server; the grants survive a manager restart.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, git::git, Api, Manager};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn manager_addr(m: &Manager) -> SocketAddr {
    m.url.trim_start_matches("http://").parse().unwrap()
}

/// A browser-like client that resolves `hosts` to the manager and follows no redirect.
fn browser(m: &Manager, hosts: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    for h in hosts {
        b = b.resolve(h, manager_addr(m));
    }
    b.build().unwrap()
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .host_str()
        .unwrap()
        .to_owned()
}

/// `name=value` of the `Set-Cookie` the response carries.
fn cookie_pair(r: &reqwest::Response) -> String {
    let set = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

async fn wait_prebuild_ready(api: &Api, id: &str) {
    eventually(WAIT, "the prebuild to be ready", || async {
        let p = api.get(&format!("/prebuilds/{id}")).await.body;
        assert!(p["state"] == "ready" || p["state"] == "building", "{p}");
        (p["state"] == "ready").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_dev_command_opens_on_its_own_origin_for_the_signed_in_and_its_public_port_for_all() {
    if !atelier_testkit::have("node") {
        atelier_testkit::skip("node is not installed (apt-get install nodejs)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (origin, work) = common::git::origin_with_work(tmp.path());
    std::fs::copy(
        atelier_testkit::workspace_root().join("crates/cli/tests/fixtures/devserver.mjs"),
        work.join("devserver.mjs"),
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "dev server"]);
    git(&work, &["push", "--quiet", "origin", "main"]);

    let m = Manager::start(&tmp.path().join("data"));
    let api = m.client();
    let (web, public) = (free_port(), free_port());
    let r = api
        .post(
            "/workspaces",
            json!({
                "name": "app",
                "repos": [{"url": origin}],
                "dev_commands": [
                    {"name": "web", "command": "exec node devserver.mjs", "port": web},
                    {"name": "docs", "command": "DEV_NAME=docs exec node devserver.mjs",
                     "port": public, "public": true},
                ],
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // The prebuild starts the dev commands after its init; a sandbox cloned from it has
    // them running (on the local driver, started again at its launch).
    let p = api.post("/workspaces/app/prebuilds", json!({})).await;
    assert_eq!(p.status, 202, "{}", p.body);
    let prebuild = p.body["id"].as_str().unwrap().to_owned();
    wait_prebuild_ready(&api, &prebuild).await;
    let log = api.get(&format!("/prebuilds/{prebuild}/logs")).await.body["data"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(log.contains("==> started dev-web, dev-docs"), "{log}");
    let r = api
        .post("/sandboxes?wait=true", json!({"workspace": "app"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["prebuild_id"], prebuild.as_str(), "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let previews = eventually(WAIT, "both dev services running", || async {
        let list = api.get(&format!("/sandboxes/{id}/previews")).await.body;
        let all = list.as_array()?;
        (all.len() == 2 && all.iter().all(|p| p["service"] == "running")).then_some(list)
    })
    .await;
    let url_of = |name: &str| -> String {
        let p = previews
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap();
        p["url"].as_str().unwrap().to_owned()
    };
    let (web_url, docs_url) = (url_of("web"), url_of("docs"));
    let port = manager_addr(&m).port();
    assert_eq!(web_url, format!("http://{web}-{id}.localhost:{port}/"));
    // `atelier sandbox show` says where each dev server opens.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::atelier_bin())
            .args(args)
            .env("ATELIER_URL", &m.url)
            .env("ATELIER_TOKEN", &m.token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = cli(&["sandbox", "show", &id]);
    assert!(
        shown.contains(&format!("preview     web :{web}  {web_url}  (running)")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "preview     docs :{public}  {docs_url}  (running, public)"
        )),
        "{shown}"
    );
    let json: Value = serde_json::from_str(&cli(&["--json", "sandbox", "show", &id])).unwrap();
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["previews"].as_array().map(Vec::len), Some(2), "{json}");
    let (web_host, docs_host) = (host_of(&web_url), host_of(&docs_url));
    let other = api.running_sandbox("other").await;
    let other_host = format!("{web}-{other}.localhost");
    let http = browser(&m, &[&web_host, &docs_host, &other_host]);

    // An image without code-server has no editor to open.
    let r = api
        .post(&format!("/sandboxes/{other}/editor"), json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("code-server"),
        "{}",
        r.body
    );

    // Without the cookie: a browser is sent to sign in on the dashboard, a script is 401.
    let r = http
        .get(format!("{web_url}deep?x=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!(
            "{}/open?sandbox={id}&port={web}&path=%2Fdeep%3Fx%3D1",
            m.url
        )
        .as_str()
    );
    let r = http.get(&web_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    // The API token is no key to a preview origin, and a preview origin has no API.
    let r = http
        .get(format!("{web_url}api/v1/sandboxes"))
        .bearer_auth(&m.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The public port opens for anyone (once its server listens).
    let seen: Value = eventually(WAIT, "the public port to answer", || {
        let (http, url) = (http.clone(), docs_url.clone());
        async move {
            let r = http.get(url).send().await.ok()?;
            if r.status() != 200 {
                eprintln!(
                    "not yet: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
                return None;
            }
            r.json().await.ok()
        }
    })
    .await;
    assert_eq!(seen["name"], "docs", "{seen}");

    // The token holder asks for a hand-off; the preview origin trades it for its cookie.
    let link = api
        .post(
            &format!("/sandboxes/{id}/ports/{web}/link?path=/after"),
            json!({}),
        )
        .await;
    assert_eq!(link.status, 201, "{}", link.body);
    assert_eq!(link.body["preview_url"], web_url.as_str());
    let open = link.body["open_url"].as_str().unwrap().to_owned();
    let r = http.get(&open).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/after");
    let cookie = cookie_pair(&r);
    assert!(cookie.starts_with("atelier_preview="), "{cookie}");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && !set.contains("Domain"), "{set}");
    // A tampered hand-off opens nothing.
    let tampered = open.replacen("grant=h.", "grant=c.", 1);
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 401);

    // (The dev server may still be coming up: a 502 says nothing listens yet.)
    let seen: Value = eventually(WAIT, "the signed-in page", || {
        let (http, url, cookie, token) = (
            http.clone(),
            format!("{web_url}after"),
            format!("theme=dark; {cookie}"),
            m.token.clone(),
        );
        let api = &api;
        let id = &id;
        async move {
            let r = http
                .get(url)
                .header("cookie", cookie)
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            if r.status() == 502 {
                let services = api.get(&format!("/sandboxes/{id}/services")).await.body;
                eprintln!("not yet: {} {services}", r.text().await.unwrap_or_default());
                return None;
            }
            assert_eq!(r.status(), 200);
            r.json().await.ok()
        }
    })
    .await;
    assert_eq!(seen["name"], "web", "{seen}");
    assert_eq!(seen["path"], "/after", "{seen}");
    assert_eq!(
        seen["cookie"], "theme=dark",
        "the preview cookie is stripped: {seen}"
    );
    assert!(
        seen["authorization"].is_null(),
        "the token is stripped: {seen}"
    );
    assert_eq!(seen["host"], format!("127.0.0.1:{web}"), "{seen}");
    assert_eq!(
        seen["forwarded_host"],
        format!("{web_host}:{port}"),
        "{seen}"
    );
    // The next request reuses the connection (the tunnel) the last one was carried on.
    let again: Value = http
        .get(format!("{web_url}again"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["path"], "/again", "{again}");
    assert_eq!(
        again["connection"], seen["connection"],
        "{again} after {seen}"
    );

    // The dev server may set its own cookies, never the preview's.
    let r = http
        .get(format!("{web_url}set-cookie"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let set: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(set, ["app_session=1; Path=/"]);

    // That cookie opens this port of this sandbox only.
    let third = free_port();
    let third_host = format!("{third}-{id}.localhost");
    for (host, what) in [
        (&other_host, "the same port of another sandbox"),
        (&third_host, "another port of the same sandbox"),
    ] {
        let r = browser(&m, &[host])
            .get(format!("http://{host}:{port}/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }

    // Server-Sent Events arrive as they are sent (the stream stays open after the first).
    let mut events = http
        .get(format!("{web_url}events"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the first event, unbuffered")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: hello\n\n");

    // A WebSocket (an HMR socket) is carried both ways.
    let echo = websocket_echo(&m, &web_host, &cookie, "hmr-update").await;
    assert_eq!(echo.as_deref(), Ok("hmr-update"));
    let refused = websocket_echo(&m, &web_host, "atelier_preview=nope", "x").await;
    assert!(refused.is_err(), "{refused:?}");

    // A TLS front may ask for certificates for these names only.
    let anonymous = reqwest::Client::new();
    let ask = |name: String| {
        let anonymous = anonymous.clone();
        let url = m.api(&format!("/tls/ask?domain={name}"));
        async move { anonymous.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ask(web_host.clone()).await, 200);
    assert_eq!(ask("127.0.0.1".into()).await, 200);
    assert_eq!(ask(format!("{web}-sbbbbbbbbbbb.localhost")).await, 404);
    assert_eq!(ask("evil.example".into()).await, 404);

    // The grants are signed, not remembered: a restarted manager honours the cookie.
    let data = m.data_dir.clone();
    let mut m = m;
    m.kill9();
    let m2 = Manager::start(&data);
    let port2 = manager_addr(&m2).port();
    let http2 = browser(&m2, &[&web_host]);
    let r = eventually(WAIT, "the preview after the restart", || {
        let (http2, cookie) = (http2.clone(), cookie.clone());
        let url = format!("http://{web_host}:{port2}/");
        async move {
            let r = http2.get(url).header("cookie", cookie).send().await.ok()?;
            (r.status() == 200).then_some(r)
        }
    })
    .await;
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["name"], "web", "{seen}");

    // A destroyed sandbox is no longer a name to certify.
    let api2 = m2.client();
    assert_eq!(api2.delete(&format!("/sandboxes/{id}")).await.status, 200);
    let status = reqwest::get(m2.api(&format!("/tls/ask?domain={web_host}")))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    drop(m);
}

/// Stands in for code-server (whose npm package fetches binaries from outside the
/// registries at install time): checks the flags the manager passes and serves a page.
const CODE_SERVER_STUB: &str = r#"#!/bin/sh
[ "$1 $2 $3" = "--auth none --bind-addr" ] || { echo "unexpected flags: $*" >&2; exit 2; }
exec node -e '
const [host, port] = process.argv[1].split(":");
require("http").createServer((q, r) => r.end("editor for " + process.argv[2] + "\n")).listen(+port, host);
' "$4" "$7"
"#;

#[tokio::test]
async fn the_editor_starts_on_demand_with_its_auth_off_and_opens_only_through_its_preview_origin() {
    use std::os::unix::fs::PermissionsExt;
    if !atelier_testkit::have("node") {
        atelier_testkit::skip("node is not installed (apt-get install nodejs)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stub = bin.join("code-server");
    std::fs::write(&stub, CODE_SERVER_STUB).unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let m = Manager::start_with_env(&tmp.path().join("data"), &[], &[("PATH", &path)]);
    let api = m.client();
    let id = api.running_sandbox("edit").await;

    let r = api
        .post(&format!("/sandboxes/{id}/editor"), json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let host = host_of(r.body["preview_url"].as_str().unwrap());
    assert_eq!(host, format!("13337-{id}.localhost"));
    let services = api.get(&format!("/sandboxes/{id}/services")).await.body;
    let editor = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "editor")
        .unwrap_or_else(|| panic!("no editor service: {services}"));
    assert_eq!(editor["state"], "running", "{editor}");
    // Asked again, the running editor is reused, not restarted.
    let again = api
        .post(&format!("/sandboxes/{id}/editor"), json!({}))
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    let pid = |s: &Value| {
        s.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "editor")
            .map(|s| s["pid"].clone())
    };
    let after = api.get(&format!("/sandboxes/{id}/services")).await.body;
    assert_eq!(pid(&services), pid(&after));

    let http = browser(&m, &[&host]);
    let preview = r.body["preview_url"].as_str().unwrap();
    assert_eq!(http.get(preview).send().await.unwrap().status(), 401);
    let handoff = http
        .get(r.body["open_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(handoff.status(), 302);
    let cookie = cookie_pair(&handoff);
    let page = http
        .get(preview)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(text.starts_with("editor for /"), "{text}");
}

/// Sends `text` over a WebSocket to `/ws` on `host` (through the manager) and returns
/// the echo, or why there was none.
async fn websocket_echo(
    m: &Manager,
    host: &str,
    cookie: &str,
    text: &str,
) -> Result<String, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let addr = manager_addr(m);
    let mut req = format!("ws://{host}:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .map_err(|_| "no echo".to_owned())?
        .ok_or("closed")?
        .map_err(|e| e.to_string())?;
    Ok(reply.into_text().map_err(|e| e.to_string())?.to_string())
}
