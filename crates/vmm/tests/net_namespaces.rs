//! Per-sandbox network namespaces made for real with `ip` — inside an outer namespace
//! this test creates (every command runs under `nsenter --net=<outer>`), so the host's
//! own network is never touched: host-side veths and rules land in the outer namespace.
//!
//! Skipped (with the reason) unless run as root with `ip`, `nsenter` and `/dev/net/tun`.
//! NAT is exercised only where `iptables` is installed.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use atelier_core::SandboxId;
use atelier_vmm::net::{self, NetnsConfig, NetnsManager};
use atelier_vmm::storage::{CommandOutput, CommandRunner, SystemRunner};

/// Runs every command in the network namespace `netns`.
struct InNamespace {
    netns: PathBuf,
}

impl CommandRunner for InNamespace {
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput> {
        let mut all: Vec<OsString> = vec![format!("--net={}", self.netns.display()).into()];
        all.push(program.into());
        all.extend(args.iter().cloned());
        SystemRunner.run("nsenter", &all)
    }
}

fn why_not() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network namespaces need root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    atelier_testkit::missing(&[
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("iptables", "iptables"),
    ])
}

/// Deletes the namespaces it names when the test ends, however it ends.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that entered the network namespace at `netns`.
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a descriptor open for the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn sandboxes_get_identical_insides_behind_their_own_veth() {
    atelier_testkit::require!(why_not());
    let tag = SandboxId::generate().as_str()[1..7].to_owned();
    let outer = format!("atltest-{tag}");
    let prefix = format!("atltest-{tag}-");
    let mut cleanup = Cleanup(vec![outer.clone()]);
    let made = Command::new("ip")
        .args(["netns", "add", &outer])
        .output()
        .unwrap();
    if !made.status.success() {
        atelier_testkit::skip(format!(
            "cannot create a network namespace here: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
        return;
    }
    let outer_path = Path::new(net::NETNS_DIR).join(&outer);
    let runner: Arc<dyn CommandRunner> = Arc::new(InNamespace {
        netns: outer_path.clone(),
    });
    let found = net::availability(runner.as_ref());
    found.netns.as_ref().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut config = NetnsConfig::new(state.path());
    config.slots_dir = state.path().join("slots");
    config.netns_prefix = prefix.clone();
    config.nat = found.nat.is_ok();
    if let Err(why) = &found.nat {
        eprintln!("NAT not exercised: {why}");
    }
    let m = NetnsManager::new(config, runner);

    let (a, b) = (SandboxId::generate(), SandboxId::generate());
    cleanup.0.push(m.netns_name(&a));
    cleanup.0.push(m.netns_name(&b));
    let na = m.setup(&a, &Default::default()).unwrap();
    let nb = m.setup(&b, &Default::default()).unwrap();

    // The same inside in both: tap0 at 172.16.0.1/30, up.
    for n in [&na, &nb] {
        let tap = ip(&["-n", &n.netns, "-o", "addr", "show", "dev", "tap0"]);
        assert!(tap.contains("inet 172.16.0.1/30"), "{tap}");
        let veth = ip(&["-n", &n.netns, "-o", "addr", "show", "dev", "veth0"]);
        assert!(veth.contains(&format!("inet {}/30", n.ns_ip)), "{veth}");
        let routes = ip(&["-n", &n.netns, "route"]);
        assert!(
            routes.contains(&format!("default via {}", n.host_ip)),
            "{routes}"
        );
    }
    assert_ne!(
        na.host_ip, nb.host_ip,
        "each sandbox has its own /30 outside"
    );
    let iptables_in = |ns: &str, args: &[&str]| -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "iptables"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if m.config().nat {
        // Inside: the guest's traffic leaves as the veth's address. Outside: tagged rules.
        let inside = iptables_in(&na.netns, &["-t", "nat", "-S", "POSTROUTING"]);
        assert!(
            inside.contains("-A POSTROUTING -o veth0 -j MASQUERADE"),
            "{inside}"
        );
        let nat = iptables_in(&outer, &["-t", "nat", "-S", "POSTROUTING"]);
        let forward = iptables_in(&outer, &["-S", "FORWARD"]);
        for n in [&na, &nb] {
            assert!(
                nat.contains(&format!("-s {}/32", n.ns_ip)) && nat.contains(&n.netns),
                "{nat}"
            );
            assert_eq!(forward.matches(&n.netns).count(), 3, "{forward}");
        }
    }
    // The host ends are in the outer namespace, not on the host.
    let outer_links = ip(&["-n", &outer, "-o", "addr", "show"]);
    for n in [&na, &nb] {
        assert!(
            outer_links.contains(&format!("inet {}/30", n.host_ip)),
            "{outer_links}"
        );
        assert!(!ip(&["-o", "link", "show"]).contains(&n.host_veth));
    }

    // From inside sandbox A, the host end of its veth refuses: a sandbox never reaches
    // the host (only the host's own connections are answered).
    let host_ip = na.host_ip;
    let listener = in_netns(&outer_path, move || {
        TcpListener::bind(SocketAddrV4::new(host_ip, 0)).unwrap()
    });
    let port = listener.local_addr().unwrap().port();
    let inner = na.netns_path.clone();
    let got = in_netns(&inner, move || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(host_ip, port).into(),
            Duration::from_secs(3),
        )
        .map(|_| ())
        .map_err(|e| e.kind())
    });
    if m.config().nat {
        assert!(got.is_err(), "sandbox A reached the host end of its veth");
    }
    drop(listener);

    // Teardown leaves nothing; the sweep removes what a crash left.
    m.teardown(&a).unwrap();
    let names = ip(&["netns", "list"]);
    assert!(!names.contains(&m.netns_name(&a)), "{names}");
    assert!(!ip(&["-n", &outer, "-o", "link", "show"]).contains(&na.host_veth));
    m.teardown(&a).unwrap(); // idempotent
    let removed = m.sweep(&HashSet::new());
    assert_eq!(removed, [format!("network namespace {}", m.netns_name(&b))]);
    let names = ip(&["netns", "list"]);
    assert!(!names.contains(&prefix), "{names}");
    assert!(!ip(&["-n", &outer, "-o", "link", "show"]).contains(&nb.host_veth));
    if m.config().nat {
        let rules = iptables_in(&outer, &["-t", "nat", "-S"]) + &iptables_in(&outer, &["-S"]);
        assert!(!rules.contains(&prefix), "no tagged rule is left: {rules}");
    }
    assert_eq!(
        std::fs::read_dir(state.path().join("slots"))
            .unwrap()
            .count(),
        0
    );
}
