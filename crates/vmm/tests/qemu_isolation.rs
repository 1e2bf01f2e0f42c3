//! Isolation seen from inside real QEMU microVMs, each in its sandbox's network
//! namespace: a guest reaches neither the host (its loopback services, any of its
//! addresses), nor metadata, nor another sandbox; it reaches a host service its
//! workspace names, and the outside as its egress policy says. "The outside" is a
//! namespace this test makes, at 203.0.113.10 (TEST-NET-3) behind a veth of the host.
//! Host names resolve through the manager's resolver, which asks a name server this
//! test runs on the host's loopback.
//! The unprivileged fallback (restricted user-mode networking) gets the same questions.

mod qemu_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use atelier_agent_client::AgentClient;
use atelier_core::{Egress, HostService, NetworkSpec};
use atelier_proto::ExecRequest;
use atelier_vmm::{Driver, Runtime, SandboxSpec};
use qemu_support::{spec, QemuHarness};

const BOOT: Duration = Duration::from_secs(240);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Where `api.allowed.test` points: another address of the outside.
const NAMED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

/// A name server on the host's loopback for the resolver to ask: `api.allowed.test` is
/// [`NAMED`], `denied.test` is [`OUTSIDE`], `rebind.allowed.test` points at the host.
fn name_server() -> SocketAddr {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{rdata, Name, RData, Record};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::new();
            reply
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .add_queries(query.queries().to_vec());
            if let Some(q) = query.queries().first() {
                let name = q.name().to_ascii().to_ascii_lowercase();
                let ips: &[Ipv4Addr] = match name.trim_end_matches('.') {
                    "api.allowed.test" => &[NAMED],
                    "denied.test" => &[OUTSIDE],
                    "rebind.allowed.test" => &[Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 200, 0, 1)],
                    _ => &[],
                };
                if q.query_type() == hickory_proto::rr::RecordType::A {
                    for ip in ips {
                        reply.add_answer(Record::from_rdata(
                            Name::from_ascii(&name).unwrap(),
                            60,
                            RData::A(rdata::A(*ip)),
                        ));
                    }
                }
            }
            let _ = socket.send_to(&reply.to_vec().unwrap(), from);
        }
    });
    at
}

/// What the guest's `nslookup` of `name` printed (busybox's asks resolv.conf's server).
/// Only for A records: asking both, busybox's nslookup at times printed the (empty)
/// AAAA answer alone when the A answer came second, as it does while the resolver
/// opens a name's addresses.
async fn lookup(agent: &AgentClient, name: &str) -> String {
    let r = agent
        .exec(&ExecRequest::shell(format!(
            "timeout 10 nslookup -type=a {name} 2>&1"
        )))
        .await
        .unwrap();
    r.stdout
}

/// Serves `body` as a one-line HTTP answer to every connection on `listener`.
fn serve(listener: std::net::TcpListener, body: &'static str) {
    std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut s = stream;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace standing for the internet, removed when dropped.
struct Outside {
    netns: String,
    veth: String,
}

impl Outside {
    fn new() -> Self {
        let tag = format!("{:04x}", std::process::id() & 0xffff);
        let netns = format!("itest-out-{tag}");
        let veth = format!("itest{tag}");
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["addr", "add", "203.0.113.1/24", "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            "203.0.113.10/24",
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            "203.0.113.11/24",
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        Self { netns, veth }
    }

    fn listen(&self, port: u16, body: &'static str) {
        self.listen_at(OUTSIDE, port, body);
    }

    fn listen_at(&self, at: Ipv4Addr, port: u16, body: &'static str) {
        let path = std::path::Path::new("/var/run/netns").join(&self.netns);
        let l =
            atelier_vmm::net::forward::bind_in_netns(&path, SocketAddr::from((at, port))).unwrap();
        serve(l, body);
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// What an HTTP GET from the guest got from `url` (`http://<ip>:<port>/<path>`): the
/// body, or `None` (refused, timed out). Busybox's `nc`: its `wget` crashes in this guest.
async fn fetch(agent: &AgentClient, url: &str) -> Option<String> {
    let rest = url.trim_start_matches("http://");
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "80"));
    let script =
        format!("printf 'GET /{path} HTTP/1.0\\r\\n\\r\\n' | timeout 8 nc -w 4 {host} {port}");
    let r = agent
        .exec(&ExecRequest::shell(&script))
        .await
        .unwrap_or_else(|e| panic!("exec {script}: {e}"));
    let (head, body) = r.stdout.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

async fn boot(h: &QemuHarness, s: &SandboxSpec) -> (Runtime, AgentClient) {
    let rt = h.driver.launch(s).await.expect("launch");
    h.driver.wait_ready(s, &rt, BOOT).await.expect("boot");
    let agent = h.driver.agent(&rt, &s.agent_token).unwrap();
    (rt, agent)
}

/// A harness whose driver says (in `atelier system`'s notes) it runs the network `mode`.
fn harness_in_mode(mode: &str) -> Option<QemuHarness> {
    let h = QemuHarness::new()?;
    let notes = &h.driver.info().notes;
    assert!(notes.iter().any(|n| n.contains(mode)), "{notes:?}");
    Some(h)
}

fn free_port(host: Ipv4Addr) -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind((host, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reaches_only_what_its_workspace_names() {
    if !atelier_testkit::is_root() {
        atelier_testkit::skip("network namespaces need root");
        return;
    }
    if let Some(why) = atelier_testkit::missing(&[("iptables", "iptables"), ("ip", "iproute2")]) {
        atelier_testkit::skip(why);
        return;
    }
    // Before the driver is made: it reads which name servers its resolvers ask.
    std::env::set_var("ATELIER_NAME_SERVERS", name_server().to_string());
    let Some(h) = harness_in_mode("network: a namespace per sandbox") else {
        return;
    };
    // The host: a service the workspace names (loopback), one it does not (loopback),
    // and one on every address of the host (as a manager bound to 0.0.0.0 would be).
    let (named, named_port) = free_port(Ipv4Addr::LOCALHOST);
    serve(named, "named-host-service");
    let (unnamed, unnamed_port) = free_port(Ipv4Addr::LOCALHOST);
    serve(unnamed, "unnamed-host-service");
    let (everywhere, everywhere_port) = free_port(Ipv4Addr::UNSPECIFIED);
    serve(everywhere, "host-on-every-address");
    let outside = Outside::new();
    outside.listen(8080, "outside-8080");
    outside.listen(8081, "outside-8081");
    outside.listen_at(NAMED, 8082, "named-8082");
    outside.listen_at(NAMED, 8083, "named-8083");

    let mut open = spec("open");
    open.network.host_services = vec![HostService {
        port: named_port,
        name: Some("model".into()),
    }];
    let mut none = spec("none");
    none.network.egress = Egress::None;
    let mut allow = spec("allow");
    allow.network = NetworkSpec {
        egress: Egress::Allow,
        allow: vec![
            format!("{OUTSIDE}:8080"),
            "api.allowed.test:8082".into(),
            "rebind.allowed.test".into(),
        ],
        host_services: vec![],
    };
    let ((open_rt, a), (none_rt, n), (allow_rt, w)) =
        tokio::join!(boot(&h, &open), boot(&h, &none), boot(&h, &allow));
    let neighbour = allow_rt.agent_addr().unwrap().to_string();
    let neighbour_ip = neighbour
        .trim_start_matches("tcp:")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let host_ip = open_rt
        .agent_addr()
        .unwrap()
        .to_string()
        .trim_start_matches("tcp:")
        .split(':')
        .next()
        .unwrap()
        .parse::<Ipv4Addr>()
        .unwrap();
    // The host's end of the open sandbox's veth (one below the namespace's end).
    let host_end = Ipv4Addr::from(u32::from(host_ip) - 1);

    // The named host service, at the gateway.
    assert_eq!(
        fetch(&a, &format!("http://172.16.0.1:{named_port}/"))
            .await
            .as_deref(),
        Some("named-host-service")
    );
    // The outside, under egress: open.
    assert_eq!(
        fetch(&a, &format!("http://{OUTSIDE}:8081/"))
            .await
            .as_deref(),
        Some("outside-8081")
    );
    // Never: the host's other services, by any address; metadata; the neighbour.
    let forbidden = [
        format!("http://172.16.0.1:{unnamed_port}/"),
        format!("http://10.0.2.2:{unnamed_port}/"),
        format!("http://{host_end}:{everywhere_port}/"),
        format!("http://203.0.113.1:{everywhere_port}/"),
        format!("http://10.255.255.53:{everywhere_port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://{neighbour_ip}:1024/health"),
    ];
    for url in &forbidden {
        assert_eq!(fetch(&a, url).await, None, "the open sandbox reached {url}");
    }
    // egress: none reaches nothing, not even the outside or a host service it did not name.
    for url in [
        format!("http://{OUTSIDE}:8080/"),
        format!("http://172.16.0.1:{named_port}/"),
        format!("http://{host_end}:{everywhere_port}/"),
    ] {
        assert_eq!(
            fetch(&n, &url).await,
            None,
            "the none sandbox reached {url}"
        );
    }
    // egress: allow reaches what it names, and nothing else.
    assert_eq!(
        fetch(&w, &format!("http://{OUTSIDE}:8080/"))
            .await
            .as_deref(),
        Some("outside-8080")
    );
    assert_eq!(fetch(&w, &format!("http://{OUTSIDE}:8081/")).await, None);

    // A host name opens its addresses once the resolver has answered for it, on the
    // port its entry names only.
    let named_8082 = format!("http://{NAMED}:8082/");
    assert_eq!(
        fetch(&w, &named_8082).await,
        None,
        "reached before resolving"
    );
    let answer = lookup(&w, "api.allowed.test").await;
    assert!(answer.contains(&NAMED.to_string()), "{answer}");
    assert_eq!(fetch(&w, &named_8082).await.as_deref(), Some("named-8082"));
    assert_eq!(fetch(&w, &format!("http://{NAMED}:8083/")).await, None);
    // A name not allowed does not resolve; one pointing at the host resolves to nothing.
    let answer = lookup(&w, "denied.test").await;
    assert!(!answer.contains(&OUTSIDE.to_string()), "{answer}");
    let answer = lookup(&w, "rebind.allowed.test").await;
    assert!(
        !answer.contains("127.0.0.1") && !answer.contains("10.200.0.1"),
        "{answer}"
    );
    assert_eq!(
        fetch(&w, &format!("http://10.200.0.1:{everywhere_port}/")).await,
        None
    );
    // egress: open resolves every name; egress: none resolves none.
    let answer = lookup(&a, "denied.test").await;
    assert!(answer.contains(&OUTSIDE.to_string()), "{answer}");
    let answer = lookup(&n, "api.allowed.test").await;
    assert!(!answer.contains(&NAMED.to_string()), "{answer}");

    // A clone restored from a snapshot of the allow sandbox (its rules are put in place
    // while QEMU loads the memory, the VM paused): the same policy, from its first run.
    let snap = h
        .driver
        .snapshot(&allow, &allow_rt, &h.dir.path().join("allow-snapshot"))
        .await
        .expect("snapshot");
    let mut clone = spec("allow-clone");
    clone.network = allow.network.clone();
    clone.restore_token = Some(allow.agent_token.clone());
    let clone_rt = h
        .driver
        .launch_from_snapshot(&clone, &snap)
        .await
        .expect("restore");
    h.driver
        .wait_ready(&clone, &clone_rt, BOOT)
        .await
        .expect("clone ready");
    let c = h.driver.agent(&clone_rt, &clone.agent_token).unwrap();
    assert_eq!(
        fetch(&c, &format!("http://{OUTSIDE}:8080/"))
            .await
            .as_deref(),
        Some("outside-8080")
    );
    assert_eq!(fetch(&c, &format!("http://{OUTSIDE}:8081/")).await, None);
    assert_eq!(
        fetch(&c, &format!("http://{host_end}:{everywhere_port}/")).await,
        None
    );
    let answer = lookup(&c, "api.allowed.test").await;
    assert!(answer.contains(&NAMED.to_string()), "{answer}");
    h.driver.destroy(&clone.id, Some(&clone_rt)).await.unwrap();

    for (s, rt) in [(&open, &open_rt), (&none, &none_rt), (&allow, &allow_rt)] {
        h.driver.destroy(&s.id, Some(rt)).await.unwrap();
        let ns = format!("/var/run/netns/atelier-{}", s.id.as_str());
        assert!(
            !std::path::Path::new(&ns).exists(),
            "{ns} outlived its sandbox"
        );
    }
    let rules = Command::new("iptables-save").output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    for s in [&open, &none, &allow, &clone] {
        assert!(
            !rules.contains(s.id.as_str()),
            "a rule of {} outlived it",
            s.id.as_str()
        );
    }
}

/// The unprivileged fallback: restricted user-mode networking. The guest still reaches
/// nothing of the host (QEMU's gateway is its loopback), no neighbour's forwarded agent
/// port, no metadata and no outside, but the host service its workspace names, at the
/// address it has in a namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_mode_guest_reaches_nothing_of_the_host() {
    // Each test is its own process under nextest, so this reaches this driver alone.
    std::env::set_var("ATELIER_QEMU_NETWORK", "user");
    let Some(h) = harness_in_mode("network: user-mode, restricted") else {
        return;
    };
    let (host_service, host_port) = free_port(Ipv4Addr::LOCALHOST);
    serve(host_service, "host-loopback-service");
    let (everywhere, everywhere_port) = free_port(Ipv4Addr::UNSPECIFIED);
    serve(everywhere, "host-on-every-address");

    let (unnamed, unnamed_port) = free_port(Ipv4Addr::LOCALHOST);
    serve(unnamed, "unnamed-host-service");

    let mut a_spec = spec("user-a");
    a_spec.network.host_services = vec![HostService {
        port: host_port,
        name: None,
    }];
    let b_spec = spec("user-b");
    let ((a_rt, a), (b_rt, _b)) = tokio::join!(boot(&h, &a_spec), boot(&h, &b_spec));
    // The neighbour's agent is forwarded on the host's loopback.
    let neighbour_port = b_rt
        .agent_addr()
        .unwrap()
        .to_string()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    // The agent itself answers (the test can tell "refused" from "no network at all").
    assert!(
        a.exec(&ExecRequest::shell("true")).await.is_ok(),
        "the agent of a user-mode sandbox does not answer"
    );
    // Its host service, at the same address as in a namespace, through a guestfwd:
    // every connection gets its own.
    for _ in 0..2 {
        assert_eq!(
            fetch(&a, &format!("http://172.16.0.1:{host_port}/"))
                .await
                .as_deref(),
            Some("host-loopback-service")
        );
    }
    let forbidden = [
        format!("http://172.16.0.1:{unnamed_port}/"),
        format!("http://172.16.0.1:{everywhere_port}/"),
        format!("http://172.16.0.1:{neighbour_port}/health"),
        format!("http://172.16.0.254:{host_port}/"),
        format!("http://172.16.0.254:{neighbour_port}/health"),
        format!("http://10.0.2.2:{host_port}/"),
        format!("http://10.0.2.2:{everywhere_port}/"),
        format!("http://10.0.2.2:{neighbour_port}/health"),
        format!("http://10.0.2.3:{everywhere_port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://{OUTSIDE}:8080/"),
    ];
    for url in &forbidden {
        assert_eq!(
            fetch(&a, url).await,
            None,
            "the user-mode sandbox reached {url}"
        );
    }
    for (s, rt) in [(&a_spec, &a_rt), (&b_spec, &b_rt)] {
        h.driver.destroy(&s.id, Some(rt)).await.unwrap();
    }
}
