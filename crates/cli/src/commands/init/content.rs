//! What `atelier init` writes and reads, as text: the systemd unit, the Caddyfile,
//! config.toml, fstab and passwd lines, dpkg's answers, sizes and versions. No I/O here,
//! so that every rule is unit-tested.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use toml_edit::DocumentMut;

/// The manager's data directory on a provisioned host; the pool is mounted on it.
pub const DATA_DIR: &str = "/var/lib/atelier";
/// The pool's image file. Beside the data directory, not in it: a file inside the
/// directory it is mounted on would be hidden by its own mount.
pub const POOL_IMAGE: &str = "/var/lib/atelier-pool.xfs";
pub const BINARY: &str = "/usr/local/bin/atelier";
pub const AGENT_BINARY: &str = "/usr/local/bin/atelier-agent";
pub const UNIT_NAME: &str = "atelier.service";
pub const UNIT: &str = "/etc/systemd/system/atelier.service";
pub const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/atelier.service";
/// The manager's settings, in the data directory.
pub const CONFIG: &str = "/var/lib/atelier/config.toml";
pub const CADDYFILE: &str = "/etc/caddy/Caddyfile";
pub const FSTAB: &str = "/etc/fstab";
pub const USER: &str = "atelier";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
/// The oldest Caddy the Caddyfile below is written for.
pub const MIN_CADDY: (u32, u32, u32) = (2, 11, 0);

/// The packages a host needs (`caddy` only when it serves a domain).
pub fn packages(with_caddy: bool) -> Vec<&'static str> {
    let mut p = vec![
        "qemu-system-x86",
        "qemu-utils",
        "busybox-static",
        "e2fsprogs",
        "xfsprogs",
        "iproute2",
        // The network code drives `iptables` (Debian's is the nftables backend).
        "iptables",
    ];
    if with_caddy {
        p.push("caddy");
    }
    p
}

const GENERATED: &str = "# Written by `atelier init`";

/// `body` under a first line recording its digest, so that a later run tells a copy
/// nobody touched (safe to rewrite) from one somebody edited (left alone).
pub fn generated(body: &str) -> String {
    format!(
        "{GENERATED} (sha256:{}): it rewrites the file only while nobody has edited it.\n{body}",
        digest(body)
    )
}

fn digest(body: &str) -> String {
    Sha256::digest(body.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who wrote a file that [`generated`] would write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Written by init and untouched since.
    Ours,
    /// Written by init, then edited.
    Edited,
    /// Not written by init (a package's default, or the user's own).
    Foreign,
}

pub fn provenance(text: &str) -> Provenance {
    let Some((first, body)) = text.split_once('\n') else {
        return Provenance::Foreign;
    };
    if !first.starts_with(GENERATED) {
        return Provenance::Foreign;
    }
    match first
        .split_once("(sha256:")
        .and_then(|(_, rest)| rest.split_once(')'))
    {
        Some((d, _)) if d == digest(body) => Provenance::Ours,
        _ => Provenance::Edited,
    }
}

/// The manager's systemd unit (after [`generated`]'s line).
pub fn unit_body() -> String {
    format!(
        r#"# Customize it with a drop-in (`systemctl edit atelier`) so that init can keep it current.
#
# It runs as root, on purpose. Every sandbox gets its own network namespace with a veth
# pair, a tap and iptables rules; VMs join it by setns, host-service forwards and the
# name resolver are bound inside it (port 53), and Firecracker's jailer chroots, makes
# device nodes and drops to its own uid. Atelier turns these on only when it runs as
# root (it checks the user, not capabilities), and they need most of root's
# capabilities anyway (NET_ADMIN, SYS_ADMIN, NET_BIND_SERVICE, SYS_CHROOT, MKNOD,
# SETUID, CHOWN...). The `atelier` user owns {DATA_DIR} and is the uid/gid to give
# the jailer ([firecracker.jailer] in config.toml).
#
# No hardening that gives the service a mount namespace of its own (ProtectSystem,
# ProtectHome, PrivateTmp, ReadWritePaths...): the namespaces `ip netns` bind-mounts
# under /run/netns must stay visible to the host and to the next start, which adopts
# the running sandboxes. No MemoryDenyWriteExecute (QEMU's TCG emulation generates
# code) and no device policy (/dev/kvm, /dev/net/tun, loop devices).
[Unit]
Description=Atelier manager: sandboxes for AI coding agents
After=network-online.target local-fs.target
Wants=network-online.target
# The data directory is the XFS pool: never start on the directory beneath it.
RequiresMountsFor={DATA_DIR}

[Service]
User=root
ExecStart={BINARY} serve --data-dir {DATA_DIR}
Restart=on-failure
RestartSec=2s
# Sandboxes outlive the manager and the next start adopts them: stopping or
# restarting the service signals the manager alone, not every VM in its cgroup.
KillMode=process
TimeoutStopSec=30s
LimitNOFILE=1048576
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"#
    )
}

/// Caddy in front of the manager (after [`generated`]'s line): the dashboard at `domain`,
/// previews at `*.<preview_domain>` with a certificate per host name, issued on demand
/// once the manager's ask endpoint says the name is one of its own.
pub fn caddyfile_body(domain: &str, preview_domain: &str, upstream: &str) -> String {
    format!(
        r#"{{
	on_demand_tls {{
		ask http://{upstream}/api/v1/tls/ask
	}}
}}

# The dashboard and the API.
{domain} {{
	reverse_proxy {upstream}
}}

# Previews: https://<port>-<sandbox>.{preview_domain}/, each host name's certificate
# issued when it is first asked for, if the manager says the sandbox exists.
*.{preview_domain} {{
	tls {{
		on_demand
	}}
	reverse_proxy {upstream} {{
		# The manager finds the sandbox and the port in the host name.
		header_up Host {{host}}
	}}
}}
"#
    )
}

/// What `--domain` puts in config.toml's `[preview]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub public_url: String,
    pub domain: String,
}

impl Preview {
    pub fn new(domain: &str, preview_domain: &str) -> Self {
        Self {
            public_url: format!("https://{domain}"),
            domain: preview_domain.to_owned(),
        }
    }

    fn section(&self) -> String {
        let url = format!("public_url = \"{}\"", self.public_url);
        let domain = format!("domain = \"{}\"", self.domain);
        format!(
            "[preview]\n{url:<43} # the dashboard's public URL\n{domain:<43} # previews at https://<port>-<sandbox>.<domain>/\n"
        )
    }
}

/// config.toml for a host that has none.
pub fn fresh_config(preview: Option<&Preview>) -> String {
    let mut s = format!(
        "# Atelier's settings (see the README for every key). Yours to edit: `atelier init`\n\
         # only ever adds keys that are missing.\n\
         listen = \"{DEFAULT_LISTEN}\"\n\
         driver = \"auto\"\n"
    );
    if let Some(p) = preview {
        s.push('\n');
        s.push_str(&p.section());
    }
    s
}

/// An existing config.toml brought up to what init writes, without losing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The new text, or `None` when nothing is missing.
    pub text: Option<String>,
    /// The keys added.
    pub added: Vec<String>,
    /// The keys whose value differs from init's default and stay as they are.
    pub kept: Vec<String>,
}

/// Adds the keys init writes that `existing` lacks, keeping every other byte. A
/// `[preview]` whose values differ from `preview` is a conflict (the user's edit or
/// another domain): the error says which and the file stays as it is.
pub fn merge_config(existing: &str, preview: Option<&Preview>) -> Result<Merged, String> {
    let mut doc: DocumentMut = existing.parse().map_err(|e: toml_edit::TomlError| {
        format!("it is not valid TOML ({})", one_line(&e.to_string()))
    })?;
    let mut added = vec![];
    let mut kept = vec![];
    for (key, default) in [("listen", DEFAULT_LISTEN), ("driver", "auto")] {
        match doc.get(key) {
            None => {
                doc.insert(key, toml_edit::value(default));
                added.push(key.to_owned());
            }
            Some(v) if v.as_str() == Some(default) => {}
            Some(v) => kept.push(format!("{key} = {}", bare(v))),
        }
    }
    let mut append_section = None;
    if let Some(p) = preview {
        match doc.get_mut("preview") {
            None => append_section = Some(p.section()),
            Some(item) => {
                let table = item
                    .as_table_like_mut()
                    .ok_or("its `preview` is not a table")?;
                let mut differ = vec![];
                for (key, want) in [("public_url", &p.public_url), ("domain", &p.domain)] {
                    match table.get(key) {
                        None => {
                            table.insert(key, toml_edit::value(want.as_str()));
                            added.push(format!("preview.{key}"));
                        }
                        Some(v) if v.as_str() == Some(want.as_str()) => {}
                        Some(v) => {
                            differ.push(format!("preview.{key} is {}, not \"{want}\"", bare(v)))
                        }
                    }
                }
                if !differ.is_empty() {
                    return Err(differ.join(", "));
                }
            }
        }
    }
    if added.is_empty() && append_section.is_none() {
        return Ok(Merged {
            text: None,
            added,
            kept,
        });
    }
    let mut text = doc.to_string();
    if let Some(section) = append_section {
        // A table appended at the end of a document is always its own: no key before
        // it can be captured, and `preview` is not defined yet.
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&section);
        added.push("[preview]".to_owned());
    }
    Ok(Merged {
        text: Some(text),
        added,
        kept,
    })
}

/// A value as written, without the comment after it.
fn bare(item: &toml_edit::Item) -> String {
    match item.as_value() {
        Some(v) => {
            let mut v = v.clone();
            v.decor_mut().clear();
            v.to_string()
        }
        None => item.to_string().trim().to_owned(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `listen` of a config.toml, if it has a readable one.
pub fn listen_of(config: &str) -> Option<String> {
    let doc: DocumentMut = config.parse().ok()?;
    doc.get("listen")?.as_str().map(str::to_owned)
}

/// Where Caddy reaches a manager listening on `listen`: an unspecified address
/// (0.0.0.0, ::) is reached on loopback.
pub fn upstream(listen: &str) -> Option<String> {
    let mut addr: SocketAddr = listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(addr.to_string())
}

/// A domain name given on the command line, lowercased, or why it is not one. It goes
/// into the Caddyfile and config.toml, so nothing but a plain host name passes.
pub fn check_domain(flag: &str, name: &str) -> Result<String, String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(format!("{flag} {name:?} is not a domain name: {why}"));
    if lower.len() > 253 {
        return bad("longer than 253 characters");
    }
    let labels: Vec<&str> = lower.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels (example.com)");
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return bad("each label has 1 to 63 characters");
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("only letters, digits, hyphens and dots");
        }
        if l.starts_with('-') || l.ends_with('-') {
            return bad("a label neither starts nor ends with a hyphen");
        }
    }
    Ok(lower)
}

/// One mount of an fstab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub source: String,
    pub mount_point: String,
    pub fstype: String,
}

/// The entry mounting something at `mount_point`, if any.
pub fn fstab_entry(fstab: &str, mount_point: &str) -> Option<FstabEntry> {
    fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (source, mp, fstype) = (f.next()?, f.next()?, f.next()?);
            Some(FstabEntry {
                source: fstab_unescape(source),
                mount_point: fstab_unescape(mp),
                fstype: fstype.to_owned(),
            })
        })
        .find(|e| e.mount_point.trim_end_matches('/') == mount_point.trim_end_matches('/'))
}

/// The line mounting the pool at the data directory. `nofail`: a missing pool does not
/// stop the boot (the unit's `RequiresMountsFor` keeps the manager from starting).
pub fn pool_fstab_line(source: &str, loop_file: bool) -> String {
    format!(
        "{} {} xfs {} 0 0",
        fstab_escape(source),
        fstab_escape(DATA_DIR),
        if loop_file { "loop,nofail" } else { "nofail" }
    )
}

/// `existing` with the pool's `line` (and a comment saying whose it is) appended.
pub fn fstab_with(existing: &str, line: &str) -> String {
    let mut s = existing.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str("# Atelier's reflink pool for sandbox disks (added by `atelier init`)\n");
    s.push_str(line);
    s.push('\n');
    s
}

fn fstab_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

fn fstab_unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The uid and gid of `user` in a passwd file.
pub fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// True when a group file has `group`.
pub fn has_group(group_file: &str, group: &str) -> bool {
    group_file
        .lines()
        .any(|l| l.split(':').next() == Some(group))
}

/// The packages of `wanted` that `dpkg-query -W -f='${Package}\t${db:Status-Status}\n'`
/// did not report installed.
pub fn missing_packages(dpkg_output: &str, wanted: &[&str]) -> Vec<String> {
    let installed: Vec<&str> = dpkg_output
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| status.trim() == "installed")
        // `pkg:amd64` for multi-arch packages.
        .map(|(p, _)| p.split(':').next().unwrap_or(p))
        .collect();
    wanted
        .iter()
        .filter(|w| !installed.contains(w))
        .map(|w| (*w).to_owned())
        .collect()
}

/// A size like `300M`, `50G`, `1T` or a number of bytes (K, M, G, T are powers of 1024;
/// `MiB`, `GB` and the like are read the same way).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 50G, 300M)"))?;
    let shift = match unit
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches('i')
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?} is not a size (e.g. 50G, 300M)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `bytes` for people: `300 MiB`, `50 GiB`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The `major.minor.patch` at the start of a version: `v2.6.2 h1:…` (`caddy version`),
/// `2.6.2-6+b1` or `1:2.6.2-1` (dpkg).
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let s = s.split_whitespace().next()?;
    let s = s.split_once(':').map_or(s, |(_, v)| v);
    let s = s.trim_start_matches('v');
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_file_knows_whether_it_was_edited() {
        let text = generated(&unit_body());
        assert_eq!(provenance(&text), Provenance::Ours);
        let edited = text.replace("RestartSec=2s", "RestartSec=9s");
        assert_eq!(provenance(&edited), Provenance::Edited);
        assert_eq!(
            provenance("[Unit]\nDescription=mine\n"),
            Provenance::Foreign
        );
        assert_eq!(provenance(""), Provenance::Foreign);
    }

    #[test]
    fn the_unit_runs_the_installed_binary_on_the_data_dir() {
        let unit = unit_body();
        assert!(unit
            .lines()
            .any(|l| l == "ExecStart=/usr/local/bin/atelier serve --data-dir /var/lib/atelier"));
        assert!(unit.lines().any(|l| l == "Restart=on-failure"));
        assert!(unit.lines().any(|l| l == "KillMode=process"));
        assert!(unit.lines().any(|l| l == "WantedBy=multi-user.target"));
        // Any of these would put the service in a mount namespace of its own.
        for option in [
            "ProtectSystem=",
            "PrivateTmp=",
            "ProtectHome=",
            "ReadWritePaths=",
        ] {
            assert!(!unit.lines().any(|l| l.starts_with(option)), "{option}");
        }
    }

    #[test]
    fn the_caddyfile_asks_the_manager_before_issuing_a_preview_certificate() {
        let c = caddyfile_body("example.com", "preview.example.com", "127.0.0.1:4000");
        assert!(
            c.contains("ask http://127.0.0.1:4000/api/v1/tls/ask"),
            "{c}"
        );
        assert!(
            c.contains("example.com {\n\treverse_proxy 127.0.0.1:4000\n}"),
            "{c}"
        );
        assert!(
            c.contains("*.preview.example.com {\n\ttls {\n\t\ton_demand\n\t}"),
            "{c}"
        );
        assert!(c.contains("header_up Host {host}"), "{c}");
    }

    #[test]
    fn a_fresh_config_has_the_listen_the_driver_and_the_preview() {
        let plain = fresh_config(None);
        assert!(plain.contains("listen = \"127.0.0.1:4000\"\ndriver = \"auto\"\n"));
        assert!(!plain.contains("[preview]"));
        let p = Preview::new("example.com", "preview.example.com");
        let with = fresh_config(Some(&p));
        let doc: DocumentMut = with.parse().unwrap();
        assert_eq!(
            doc["preview"]["public_url"].as_str(),
            Some("https://example.com")
        );
        assert_eq!(
            doc["preview"]["domain"].as_str(),
            Some("preview.example.com")
        );
        assert!(with.contains("# previews at https://<port>-<sandbox>.<domain>/"));
        assert_eq!(
            merge_config(&with, Some(&p)).unwrap(),
            Merged {
                text: None,
                added: vec![],
                kept: vec![]
            }
        );
    }

    #[test]
    fn merging_adds_only_what_is_missing_and_keeps_every_edit() {
        let mine = "# my notes\nlisten = \"0.0.0.0:5000\"   # for the LAN\nboot_timeout_secs = 300\n\n[local]\nagent_binary = \"/opt/agent\"\n";
        let p = Preview::new("example.com", "preview.example.com");
        let m = merge_config(mine, Some(&p)).unwrap();
        let text = m.text.unwrap();
        assert!(text.starts_with(
            "# my notes\nlisten = \"0.0.0.0:5000\"   # for the LAN\nboot_timeout_secs = 300\n"
        ));
        assert!(text.contains("agent_binary = \"/opt/agent\""));
        let doc: DocumentMut = text.parse().unwrap();
        assert_eq!(doc["driver"].as_str(), Some("auto"));
        assert_eq!(doc["local"]["agent_binary"].as_str(), Some("/opt/agent"));
        assert_eq!(
            doc["preview"]["domain"].as_str(),
            Some("preview.example.com")
        );
        assert_eq!(m.added, vec!["driver", "[preview]"]);
        assert_eq!(m.kept, vec!["listen = \"0.0.0.0:5000\""]);
        // Merged once, nothing is left to add.
        assert_eq!(merge_config(&text, Some(&p)).unwrap().text, None);
    }

    #[test]
    fn another_preview_domain_is_a_conflict_and_half_a_preview_is_completed() {
        let p = Preview::new("example.com", "preview.example.com");
        let other =
            "[preview]\npublic_url = \"https://other.org\"\ndomain = \"p.other.org\"  # theirs\n";
        let e = merge_config(other, Some(&p)).unwrap_err();
        assert!(
            e.contains("preview.public_url is \"https://other.org\""),
            "{e}"
        );
        assert!(
            e.contains("preview.domain is \"p.other.org\", not \"preview.example.com\""),
            "{e}"
        );
        let half = "listen = \"127.0.0.1:4000\"\ndriver = \"auto\"\n[preview]\npublic_url = \"https://example.com\"\n";
        let m = merge_config(half, Some(&p)).unwrap();
        assert_eq!(m.added, vec!["preview.domain"]);
        let doc: DocumentMut = m.text.unwrap().parse().unwrap();
        assert_eq!(
            doc["preview"]["domain"].as_str(),
            Some("preview.example.com")
        );
        assert!(merge_config("listen = ", None)
            .unwrap_err()
            .starts_with("it is not valid TOML"));
    }

    #[test]
    fn caddy_reaches_an_unspecified_listen_address_on_loopback() {
        assert_eq!(upstream("0.0.0.0:5000").as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(upstream("[::]:4000").as_deref(), Some("[::1]:4000"));
        assert_eq!(upstream("10.0.0.2:4000").as_deref(), Some("10.0.0.2:4000"));
        assert_eq!(upstream("nonsense"), None);
        assert_eq!(
            listen_of("listen = \"0.0.0.0:5000\"\n").as_deref(),
            Some("0.0.0.0:5000")
        );
    }

    #[test]
    fn only_plain_domain_names_pass() {
        assert_eq!(
            check_domain("--domain", "Example.COM.").unwrap(),
            "example.com"
        );
        for bad in [
            "example",
            "https://example.com",
            "a b.com",
            "-a.com",
            "a..com",
            "ex}ample.com",
            "*.example.com",
        ] {
            assert!(check_domain("--domain", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fstab_lines_are_found_by_mount_point() {
        let fstab = "# /etc/fstab\nUUID=abc / ext4 errors=remount-ro 0 1\n/var/lib/atelier-pool.xfs /var/lib/atelier/ xfs loop,nofail 0 0\n";
        let e = fstab_entry(fstab, DATA_DIR).unwrap();
        assert_eq!(e.source, POOL_IMAGE);
        assert_eq!(e.fstype, "xfs");
        assert_eq!(fstab_entry("# /var/lib/atelier\n", DATA_DIR), None);
        let line = pool_fstab_line(POOL_IMAGE, true);
        assert_eq!(
            line,
            "/var/lib/atelier-pool.xfs /var/lib/atelier xfs loop,nofail 0 0"
        );
        let added = fstab_with("UUID=abc / ext4 defaults 0 1", &line);
        assert!(added.starts_with("UUID=abc / ext4 defaults 0 1\n# Atelier's"));
        assert!(fstab_entry(&added, DATA_DIR).is_some());
        assert_eq!(
            pool_fstab_line("/dev/my disk", false),
            "/dev/my\\040disk /var/lib/atelier xfs nofail 0 0"
        );
        assert_eq!(
            fstab_entry(&pool_fstab_line("/dev/my disk", false), DATA_DIR)
                .unwrap()
                .source,
            "/dev/my disk"
        );
    }

    #[test]
    fn users_groups_and_packages_are_read() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\natelier:x:998:997::/var/lib/atelier:/usr/sbin/nologin\n";
        assert_eq!(passwd_ids(passwd, "atelier"), Some((998, 997)));
        assert_eq!(passwd_ids(passwd, "atelie"), None);
        assert!(has_group("root:x:0:\natelier:x:997:\n", "atelier"));
        assert!(!has_group("root:x:0:\n", "atelier"));
        let out =
            "qemu-utils\tinstalled\nxfsprogs\tconfig-files\nbusybox-static:amd64\tinstalled\n";
        assert_eq!(
            missing_packages(out, &["qemu-utils", "xfsprogs", "busybox-static", "caddy"]),
            vec!["xfsprogs", "caddy"]
        );
    }

    #[test]
    fn sizes_and_versions_are_read() {
        assert_eq!(parse_size("300M").unwrap(), 300 << 20);
        assert_eq!(parse_size("50G").unwrap(), 50 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(human(300 << 20), "300 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(
            parse_version("v2.6.2 h1:PhH5CGoWwKeeKm1gHTFzjaEWJwfBrt8i1p2hxBDzVh4="),
            Some((2, 6, 2))
        );
        assert_eq!(parse_version("2.11.1-1"), Some((2, 11, 1)));
        assert_eq!(parse_version("1:2.6.2-6+b1"), Some((2, 6, 2)));
        assert!(parse_version("2.6.2").unwrap() < MIN_CADDY);
        assert_eq!(parse_version("garbage"), None);
    }
}
