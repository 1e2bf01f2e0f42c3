//! Black-box tests of the manager's HTTP API: a real `atelier serve` on an ephemeral
//! port with a temporary data dir, the local driver, real agent processes.

mod common;

use std::time::Duration;

use common::{eventually, read_sse, Manager};
use reqwest::Method;
use serde_json::json;

fn manager() -> (Manager, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    (m, dir)
}

#[tokio::test]
async fn every_route_in_the_openapi_document_requires_the_token_except_health() {
    let (m, _d) = manager();
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(m.api("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.len() >= 15,
        "the document lists the API: {:?}",
        paths.keys()
    );
    let mut checked = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                m.url,
                path.replace("{id}", "sabcdefghjkm")
                    .replace("{workspace}", "w")
                    .replace("{name}", "svc")
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for token in [None, Some("atl_wrong")] {
                let mut req = http.request(method.clone(), &url);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let r = req.send().await.unwrap();
                if path == "/api/v1/health" {
                    assert_eq!(r.status(), 200, "{method} {path} is public");
                } else {
                    assert_eq!(r.status(), 401, "{method} {path} without a valid token");
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "unauthorized");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 50, "checked {checked} route/method pairs");
}

#[tokio::test]
async fn the_token_is_printed_once_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = Manager::start(&data);
    assert!(
        first.stdout_lines.iter().any(|l| l.contains(&first.token)),
        "printed on first start"
    );
    let mode = std::fs::metadata(data.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        first.terminate().code(),
        Some(0),
        "SIGTERM is a clean shutdown"
    );
    let second = Manager::start(&data);
    assert_eq!(second.token, first.token);
    assert!(
        !second
            .stdout_lines
            .iter()
            .any(|l| l.contains(&second.token)),
        "not printed again"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_offline() {
    let (m, _d) = manager();
    let page = reqwest::get(format!("{}/swagger", m.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/swagger/swagger-ui-bundle.js"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN: {page}"
    );
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "init.js"] {
        let r = reqwest::get(format!("{}/swagger/{asset}", m.url))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.bytes().await.unwrap().len() > 50, "{asset}");
    }
}

#[tokio::test]
async fn workspaces_crud_with_write_only_secrets() {
    let (m, _d) = manager();
    let api = m.client();
    let secret = "sk-test-SECRET-value-123456";
    let r = api
        .post(
            "/workspaces",
            json!({
                "name": "shop",
                "repos": [{"url": "https://example.com/acme/shop.git", "branch": "main"}],
                "init_commands": ["npm ci"],
                "dev_commands": [{"name": "web", "command": "npm run dev", "port": 5173}],
                "secrets": {"env": [{"name": "OPENAI_API_KEY", "value": secret}]},
                "resources": {"vcpus": 4, "memory_mib": 4096, "disk_mib": 20480},
                "agent_config": {"model": "openai/gpt-5"}
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["secrets"][0]["name"], "OPENAI_API_KEY");
    assert_eq!(r.body["secrets"][0]["preview"], "••••3456");
    assert!(!r.body.to_string().contains(secret));

    let by_name = api.get("/workspaces/shop").await;
    assert_eq!(by_name.body["id"], id.as_str());
    let list = api.get("/workspaces").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    assert!(!list.body.to_string().contains(secret));

    let r = api
        .patch(
            &format!("/workspaces/{id}"),
            json!({"init_commands": ["make"], "remove_secrets": ["OPENAI_API_KEY"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["init_commands"], json!(["make"]));
    assert_eq!(r.body["secrets"], json!([]));
    assert_eq!(
        r.body["repos"][0]["url"], "https://example.com/acme/shop.git",
        "untouched fields stay"
    );

    let dup = api.post("/workspaces", json!({"name": "shop"})).await;
    assert_eq!(
        (dup.status, dup.body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    assert_eq!(api.delete(&format!("/workspaces/{id}")).await.status, 204);
    assert_eq!(api.get(&format!("/workspaces/{id}")).await.status, 404);
    assert!(!m.log().contains(secret), "secrets never reach the log");
}

#[tokio::test]
async fn a_workspace_image_extension_is_named_by_what_it_adds_and_listed_with_the_images() {
    let (m, _d) = manager();
    let api = m.client();
    let image = json!({"packages": ["tree"], "npm": ["is-number@7.0.0"], "run": ["echo hi"]});
    let r = api
        .post("/workspaces", json!({"name": "ext", "image": image}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let name = r.body["image_name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("dev-ext-"), "{}", r.body);
    assert_eq!(r.body["image"]["base"], "dev", "the base defaults to dev");

    // A second workspace with the same additions shares the image; other additions do not.
    let same = api
        .post("/workspaces", json!({"name": "ext2", "image": image}))
        .await;
    assert_eq!(same.body["image_name"], name.as_str());
    let other = api
        .post(
            "/workspaces",
            json!({"name": "ext3", "image": {"packages": ["jq"]}}),
        )
        .await;
    assert_ne!(other.body["image_name"], name.as_str());

    let listed = api.get("/images").await.body;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(
        names.contains(&"dev") && names.contains(&name.as_str()),
        "{listed}"
    );
    let shown = api.get(&format!("/images/{name}")).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["built"], false);
    assert_eq!(shown.body["extension"]["packages"], json!(["tree"]));
    assert_eq!(shown.body["extension"]["npm"], json!(["is-number@7.0.0"]));
    let unknown = api.get("/images/dev-ext-000000000000").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // Sandboxes of the workspace ask for its image; nothing added is the base again.
    let ws = r.body["id"].as_str().unwrap().to_owned();
    let cleared = api
        .patch(
            &format!("/workspaces/{ws}"),
            json!({"image": {"base": "dev"}}),
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert_eq!(cleared.body["image_name"], "dev");
    assert!(cleared.body.get("image").is_none(), "{}", cleared.body);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_naming_the_field() {
    let (m, _d) = manager();
    let api = m.client();
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        ("/workspaces", json!({"name": ""}), 422, "name"),
        (
            "/workspaces",
            json!({"name": "x", "repos": [{"url": "not a url"}]}),
            422,
            "repos[0].url",
        ),
        (
            "/workspaces",
            json!({"name": "x", "resources": {"vcpus": 9, "memory_mib": 2048, "disk_mib": 1024}}),
            422,
            "resources.vcpus",
        ),
        (
            "/workspaces",
            json!({"name": "x", "resources": {"vcpus": 2, "memory_mib": 100, "disk_mib": 1024}}),
            422,
            "resources.memory_mib",
        ),
        (
            "/workspaces",
            json!({"name": "x", "resources": {"vcpus": "two"}}),
            422,
            "resources.vcpus",
        ),
        (
            "/workspaces",
            json!({"name": "x", "bogus": 1}),
            422,
            "bogus",
        ),
        ("/workspaces", json!({"repos": []}), 422, "name"),
        (
            "/workspaces",
            json!({"name": "x", "image": {"packages": ["tree; reboot"]}}),
            422,
            "image.packages[0]",
        ),
        (
            "/workspaces",
            json!({"name": "x", "image": {"base": "minimal", "npm": ["pnpm"]}}),
            422,
            "image.base",
        ),
        (
            "/workspaces",
            json!({"name": "x", "image": {"run": [""]}}),
            422,
            "image.run[0]",
        ),
        ("/workspaces", json!({"name": 5}), 422, "name"),
        ("/sandboxes", json!({"vcpus": 0}), 422, "vcpus"),
        (
            "/sandboxes",
            json!({"memory_mib": 20000}),
            422,
            "memory_mib",
        ),
        ("/sandboxes", json!({"name": "Bad_Name"}), 422, "name"),
        ("/sandboxes", json!({"workspace": "nope"}), 422, "workspace"),
        ("/sandboxes", json!({"vcpus": -1}), 422, "vcpus"),
    ];
    for (path, body, status, field) in cases {
        let r = api.post(path, body.clone()).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_value", "{body}");
        let fields: Vec<String> = r.body["error"]["details"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            fields.iter().any(|f| f == field),
            "{body}: expected {field} in {fields:?}"
        );
    }

    // Malformed JSON is 400, wrong content type 415, oversized 413.
    let r = api
        .send(
            api.req(Method::POST, "/workspaces")
                .header("content-type", "application/json")
                .body("{\"name\":"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let r = api
        .send(
            api.req(Method::POST, "/sandboxes")
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(r.status, 415);
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    // Its own client: the server drops a connection whose body it refused to read.
    let once = common::Api {
        http: reqwest::Client::new(),
        ..api.clone()
    };
    let r = once
        .send(
            once.req(Method::POST, "/workspaces")
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Unknown or impossible ids are 404, and so are unknown routes.
    for path in [
        "/sandboxes/sabcdefghjkm",
        "/sandboxes/..%2Fetc",
        "/workspaces/nope",
        "/nothing-here",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.body["error"]["code"], "not_found");
    }
    let r = api
        .post("/sandboxes/sabcdefghjkm/exec", json!({"command": "true"}))
        .await;
    assert_eq!(r.status, 404);
    let r = api.get("/sandboxes?state=bogus").await;
    assert_eq!(
        (
            r.status,
            r.body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (422, Some("state"))
    );
    let r = api.get("/sandboxes?limit=0").await;
    assert_eq!(r.status, 422);
    let r = api
        .send(
            api.req(Method::POST, "/workspaces")
                .header("Idempotency-Key", "")
                .json(&json!({"name": "k"})),
        )
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn sandbox_lifecycle_exec_and_illegal_transitions() {
    let (m, _d) = manager();
    let api = m.client();
    let id = api.running_sandbox("life").await;
    let dir = m.data_dir.join("sandboxes").join(&id);
    assert!(dir.join("root").is_dir());

    let r = api
        .exec(&id, "sh", &["-c", "echo out; echo err >&2; exit 7"])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.body["exit_code"].as_i64(),
            r.body["stdout"].as_str(),
            r.body["stderr"].as_str()
        ),
        (Some(7), Some("out\n"), Some("err\n"))
    );
    let r = api
        .post(&format!("/sandboxes/{id}/exec"), json!({"command": "echo $GREETING from $(pwd)", "shell": true, "env": {"GREETING": "hi"}, "cwd": "/tmp"}))
        .await;
    assert_eq!(r.body["stdout"], "hi from /tmp\n", "{}", r.body);
    let r = api
        .post(
            &format!("/sandboxes/{id}/exec"),
            json!({"command": "sleep", "args": ["30"], "timeout_ms": 300}),
        )
        .await;
    assert_eq!(
        (r.body["timed_out"].as_bool(), r.body["signal"].as_i64()),
        (Some(true), Some(9)),
        "{}",
        r.body
    );

    let r = api.post(&format!("/sandboxes/{id}/start"), json!({})).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{}",
        r.body
    );

    let r = api.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("stopped")),
        "{}",
        r.body
    );
    assert!(
        common::processes_under(&dir).is_empty(),
        "stop leaves no process"
    );
    let r = api.exec(&id, "true", &[]).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("invalid_state"))
    );
    let r = api.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
    assert_eq!(r.status, 409);

    let r = api
        .post(&format!("/sandboxes/{id}/start?wait=true"), json!({}))
        .await;
    assert_eq!(r.body["state"], "running", "{}", r.body);
    assert_eq!(api.exec(&id, "true", &[]).await.body["exit_code"], 0);

    let r = api.post(&format!("/sandboxes/{id}/pause"), json!({})).await;
    assert_eq!(r.body["state"], "paused", "{}", r.body);
    assert_eq!(api.exec(&id, "true", &[]).await.status, 409);
    let r = api
        .post(&format!("/sandboxes/{id}/resume"), json!({}))
        .await;
    assert_eq!(r.body["state"], "running", "{}", r.body);

    let r = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("destroyed")),
        "{}",
        r.body
    );
    assert!(!dir.exists(), "destroy removes the directory");
    assert!(
        common::processes_under(&dir).is_empty(),
        "destroy leaves no process"
    );
    assert_eq!(api.delete(&format!("/sandboxes/{id}")).await.status, 409);
    let listed = api.get("/sandboxes").await;
    assert!(
        !listed.body.to_string().contains(&id),
        "destroyed sandboxes are hidden by default"
    );
    let listed = api.get("/sandboxes?state=destroyed").await;
    assert!(listed.body.to_string().contains(&id));
}

#[tokio::test]
async fn exec_files_and_services_reject_bad_input() {
    let (m, _d) = manager();
    let api = m.client();
    let id = api.running_sandbox("bad").await;
    let exec = format!("/sandboxes/{id}/exec");
    let cases = [
        (json!({}), "command"),
        (json!({"command": ""}), "command"),
        (json!({"command": "ls", "args": "-la"}), "args"),
        (
            json!({"command": "echo hi", "shell": true, "args": ["x"]}),
            "args",
        ),
        (json!({"command": "env", "env": {"1BAD": "x"}}), "env.1BAD"),
        (json!({"command": "sleep", "timeout_ms": 0}), "timeout_ms"),
        (json!({"command": "ls", "cwd": ""}), "cwd"),
        (json!({"command": "ls", "surprise": true}), "surprise"),
    ];
    for (body, field) in cases {
        let r = api.post(&exec, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(
            r.body["error"]["details"]["fields"][0]["field"], field,
            "{body}: {}",
            r.body
        );
    }
    let r = api
        .send(
            api.req(Method::POST, &exec)
                .header("content-type", "application/json")
                .body("[1,"),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .send(
            api.req(
                Method::PUT,
                &format!("/sandboxes/{id}/files/content?path=a&mode=999"),
            )
            .body("x"),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (422, Some("mode"))
    );
    let r = api
        .get(&format!("/sandboxes/{id}/services/x/logs?limit=0"))
        .await;
    assert_eq!(r.status, 422);
    let r = api
        .send(
            api.req(Method::PUT, &format!("/sandboxes/{id}/services/web"))
                .json(&json!({"command": "npm"})),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (422, Some("command")),
        "{}",
        r.body
    );
    let r = api.get(&format!("/sandboxes/{id}/services/none")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = api.patch("/workspaces/none", json!({"name": "x"})).await;
    assert_eq!(r.status, 404);
    let w = api.post("/workspaces", json!({"name": "w"})).await;
    let r = api
        .patch(
            &format!("/workspaces/{}", w.body["id"].as_str().unwrap()),
            json!({"resources": {"vcpus": 2, "memory_mib": 99999, "disk_mib": 1024}}),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (422, Some("resources.memory_mib"))
    );
}

#[tokio::test]
async fn idempotent_create_never_makes_a_second_sandbox() {
    let (m, _d) = manager();
    let api = m.client();
    let body = json!({"name": "once"});
    let send = || {
        api.send(
            api.req(Method::POST, "/sandboxes")
                .header("Idempotency-Key", "retry-42")
                .json(&body),
        )
    };
    let (a, b) = tokio::join!(send(), send());
    let c = send().await;
    assert_eq!(a.body["id"], b.body["id"]);
    assert_eq!(a.body["id"], c.body["id"]);
    let mut statuses = vec![a.status, b.status, c.status];
    statuses.sort();
    assert_eq!(statuses, [200, 200, 201]);
    let r = api
        .send(
            api.req(Method::POST, "/sandboxes")
                .header("Idempotency-Key", "retry-42")
                .json(&json!({"name": "other"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let list = api.get("/sandboxes").await;
    assert_eq!(list.body["sandboxes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_filters_by_state_name_and_workspace() {
    let (m, _d) = manager();
    let api = m.client();
    let w = api.post("/workspaces", json!({"name": "alpha"})).await;
    let a = api
        .post("/sandboxes?wait=true", json!({"workspace": "alpha"}))
        .await;
    assert_eq!(
        a.body["name"], "alpha",
        "the name defaults to the workspace's"
    );
    assert_eq!(a.body["workspace_id"], w.body["id"]);
    let b = api.running_sandbox("beta").await;
    api.post(&format!("/sandboxes/{b}/stop"), json!({})).await;
    let running = api.get("/sandboxes?state=running").await;
    assert_eq!(running.body["sandboxes"].as_array().unwrap().len(), 1);
    let by_ws = api.get("/sandboxes?workspace=alpha").await;
    assert_eq!(by_ws.body["sandboxes"][0]["id"], a.body["id"]);
    let by_name = api.get("/sandboxes?name=beta&state=stopped,running").await;
    assert_eq!(by_name.body["sandboxes"][0]["id"], b.as_str());
    let page = api.get("/sandboxes?limit=1").await;
    assert_eq!(page.body["sandboxes"].as_array().unwrap().len(), 1);
    let next = page.body["next"].as_str().unwrap().to_owned();
    let page2 = api.get(&format!("/sandboxes?limit=1&after={next}")).await;
    assert_eq!(page2.body["sandboxes"][0]["id"], b.as_str());
    let ws_delete = api.delete("/workspaces/alpha").await;
    assert_eq!(
        ws_delete.status, 409,
        "a workspace with sandboxes cannot be deleted"
    );
}

#[tokio::test]
async fn files_are_confined_to_the_sandbox() {
    let (m, _d) = manager();
    let api = m.client();
    let id = api.running_sandbox("files").await;
    let base = format!("/sandboxes/{id}/files");
    let r = api
        .send(
            api.req(
                Method::PUT,
                &format!("{base}/content?path=src/main.rs&mode=600"),
            )
            .body("fn main() {}\n"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mode"], 0o600);
    let on_disk = m
        .data_dir
        .join("sandboxes")
        .join(&id)
        .join("root/src/main.rs");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "fn main() {}\n");
    let read = api
        .req(Method::GET, &format!("{base}/content?path=src/main.rs"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.text().await.unwrap(), "fn main() {}\n");
    let list = api.get(&format!("{base}?path=src")).await;
    assert_eq!(list.body["entries"][0]["name"], "main.rs");
    let stat = api.get(&format!("{base}/stat?path=src/main.rs")).await;
    assert_eq!(stat.body["size"], 13);
    assert_eq!(
        api.send(api.req(Method::POST, &format!("{base}/mkdir?path=a/b")))
            .await
            .status,
        200
    );
    for bad in ["../../etc/passwd", "/etc/passwd", "src/../../x"] {
        let r = api
            .get(&format!("{base}/content?path={}", bad.replace('/', "%2F")))
            .await;
        assert_eq!(r.status, 403, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "forbidden_path");
    }
    std::os::unix::fs::symlink("/etc", on_disk.parent().unwrap().join("etc")).unwrap();
    let r = api
        .get(&format!("{base}/content?path=src%2Fetc%2Fpasswd"))
        .await;
    assert_eq!(r.status, 403, "symlink escape: {}", r.body);
    let r = api.get(&format!("{base}/content?path=missing.txt")).await;
    assert_eq!(r.status, 404);
    let r = api.delete(&format!("{base}?path=src")).await;
    assert_eq!(
        r.status, 409,
        "non-empty directory needs recursive: {}",
        r.body
    );
    assert_eq!(
        api.delete(&format!("{base}?path=src&recursive=true"))
            .await
            .status,
        204
    );
    assert!(!on_disk.exists());
    let r = api.get(&format!("{base}/content")).await;
    assert_eq!(
        (
            r.status,
            r.body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (422, Some("path"))
    );
}

#[tokio::test]
async fn exec_streams_output_as_it_happens() {
    let (m, _d) = manager();
    let api = m.client();
    let id = api.running_sandbox("stream").await;
    let started = std::time::Instant::now();
    let response = api
        .req(Method::POST, &format!("/sandboxes/{id}/exec/stream"))
        .json(&json!({"command": "echo first; sleep 1; echo second >&2; exit 3", "shell": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = Box::pin(read_sse_incremental(response));
    use futures::StreamExt;
    let (event, data) = stream.next().await.unwrap();
    assert_eq!(
        (event.as_str(), data["data"].as_str()),
        ("stdout", Some("first\n"))
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "first line arrives before the command ends"
    );
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(rest[0].0, "stderr");
    assert_eq!(rest.last().unwrap().0, "exit");
    assert_eq!(rest.last().unwrap().1["exit_code"], 3);
}

/// Server-Sent Events as (event, JSON data) pairs, as they arrive.
fn read_sse_incremental(
    response: reqwest::Response,
) -> impl futures::Stream<Item = (String, serde_json::Value)> {
    use futures::StreamExt;
    let bytes = response.bytes_stream();
    futures::stream::unfold((bytes, String::new()), |(mut bytes, mut buf)| async move {
        loop {
            if let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((
                    (event, serde_json::from_str(&data).unwrap_or_default()),
                    (bytes, buf),
                ));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    })
}

#[tokio::test]
async fn services_are_supervised_through_the_api() {
    let (m, _d) = manager();
    let api = m.client();
    let id = api.running_sandbox("svc").await;
    let r = api
        .send(
            api.req(Method::PUT, &format!("/sandboxes/{id}/services/ticker"))
                .json(&json!({
                    "command": {"shell": "echo started; exec sleep 60"}, "restart": "always"
                })),
        )
        .await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("running")),
        "{}",
        r.body
    );
    // Kill it only once it has run (else the first "started" is never written).
    let (api0, id0) = (api.clone(), id.clone());
    eventually(Duration::from_secs(10), "the first run to log", || {
        let (api, id) = (api0.clone(), id0.clone());
        async move {
            let logs = api
                .get(&format!("/sandboxes/{id}/services/ticker/logs?offset=0"))
                .await;
            logs.body["data"]
                .as_str()?
                .contains("started")
                .then_some(())
        }
    })
    .await;
    let pid = r.body["pid"].as_i64().unwrap();
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let api2 = api.clone();
    let id2 = id.clone();
    eventually(
        Duration::from_secs(10),
        "the watchdog restarts the service",
        || {
            let api = api2.clone();
            let id = id2.clone();
            async move {
                let s = api.get(&format!("/sandboxes/{id}/services/ticker")).await;
                (s.body["restarts"].as_i64() >= Some(1) && s.body["state"] == "running")
                    .then_some(())
            }
        },
    )
    .await;
    let (api3, id3) = (api.clone(), id.clone());
    eventually(
        Duration::from_secs(10),
        "the restarted run to log again",
        || {
            let (api, id) = (api3.clone(), id3.clone());
            async move {
                let logs = api
                    .get(&format!("/sandboxes/{id}/services/ticker/logs?offset=0"))
                    .await;
                (logs.body["data"].as_str()?.matches("started").count() >= 2).then_some(())
            }
        },
    )
    .await;
    let r = api
        .post(&format!("/sandboxes/{id}/services/ticker/stop"), json!({}))
        .await;
    assert_eq!(r.body["state"], "stopped");
    let r = api
        .send(
            api.req(Method::PUT, &format!("/sandboxes/{id}/services/Bad%20Name"))
                .json(&json!({"command": {"shell": "true"}})),
        )
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn events_stream_with_ids_and_resume_from_last_event_id() {
    let (m, _d) = manager();
    let api = m.client();
    let live = api.req(Method::GET, "/events").send().await.unwrap();
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let id = api.running_sandbox("ev").await;
    let events = read_sse(live, 2, Duration::from_secs(10)).await;
    let kinds: Vec<(&str, serde_json::Value)> = events
        .iter()
        .map(|(_, e, d)| {
            (
                e.as_str(),
                serde_json::from_str::<serde_json::Value>(d).unwrap()["to"].clone(),
            )
        })
        .collect();
    assert_eq!(kinds[0], ("sandbox_state", json!("creating")));
    assert_eq!(kinds[1], ("sandbox_state", json!("running")));
    let first_id: i64 = events[0].0.as_deref().unwrap().parse().unwrap();

    api.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
    // Resume after the first event: everything after it, in order, nothing twice.
    let resumed = api
        .req(Method::GET, "/events")
        .header("Last-Event-ID", first_id.to_string())
        .send()
        .await
        .unwrap();
    let replay = read_sse(resumed, 3, Duration::from_secs(10)).await;
    let ids: Vec<i64> = replay
        .iter()
        .map(|(i, _, _)| i.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{replay:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > first_id);
    let tos: Vec<String> = replay
        .iter()
        .map(|(_, _, d)| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["to"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(tos, ["running", "stopping", "stopped"]);
    let bad = api
        .req(Method::GET, "/events")
        .header("Last-Event-ID", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn a_local_sandbox_can_never_step_the_host_clock() {
    let (m, _d) = manager();
    let id = m.client().running_sandbox("clock").await;
    let dir = m.data_dir.join("sandboxes").join(&id);
    let token = std::fs::read_to_string(dir.join("agent.token")).unwrap();
    let agent = atelier_agent_client::AgentClient::new(
        format!("unix:{}", dir.join("agent.sock").display())
            .parse()
            .unwrap(),
        token,
    );
    match agent.set_clock(1).await {
        Err(atelier_agent_client::Error::Agent { status, .. }) => assert_eq!(status, 409),
        other => panic!("the local agent must refuse to set the clock: {other:?}"),
    }
}

#[tokio::test]
async fn system_reports_the_driver_and_why() {
    let (m, _d) = manager();
    let r = m.client().get("/system").await;
    assert_eq!(r.body["driver"], "local");
    assert_eq!(r.body["isolated"], false);
    assert!(r.body["driver_notes"].to_string().contains("NO isolation"));
    assert!(
        m.log().contains("NO ISOLATION"),
        "the local driver warns loudly at start-up"
    );
}

#[tokio::test]
async fn a_fallback_to_the_local_driver_names_the_package_that_would_give_a_vm() {
    // No QEMU on PATH: `--driver auto` falls back to `local` and says what to install.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let m = Manager::start_with_env(
        &dir.path().join("data"),
        &["--driver", "auto"],
        &[("PATH", empty.to_str().unwrap())],
    );
    let r = m.client().get("/system").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let notes = r.body["driver_notes"].to_string();
    assert!(
        notes.contains(
            "local: chosen for new sandboxes because qemu cannot run: \
             qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        ),
        "{notes}"
    );
}
