//! The steps of `atelier init` but the pool's: each looks at the target root and says
//! it is done, or what exactly is to do, or why it is skipped or left to you. Looking
//! changes nothing; only [`Action::run`] does.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use atelier_vmm::images::initramfs::is_static_elf;

use super::content::{self, *};
use super::exec::{self, io_error, read_optional};
use super::plan::{Action, Before, Check, Status, StepId};
use super::{pool, Ctx};
use crate::client::ClientError;

/// Looks at `step` in the target, after the steps in `before`.
pub fn check(step: StepId, ctx: &Ctx, before: &Before) -> Result<Check, ClientError> {
    let changing = &before.changing;
    if matches!(step, StepId::DataDir | StepId::Config) && before.conflicts.contains(&StepId::Pool)
    {
        // Files written now would be hidden under the pool once it is mounted.
        return Ok(Status::Skipped(format!(
            "waits for the pool's conflict above: what it writes would be hidden once the \
             pool is mounted on {DATA_DIR}"
        ))
        .into());
    }
    match step {
        StepId::Packages => packages(ctx),
        StepId::Kvm => Ok(kvm(ctx)),
        StepId::Pool => pool::check(ctx),
        StepId::User => user(ctx),
        StepId::DataDir => data_dir(ctx),
        StepId::Config => config(ctx),
        StepId::Binaries => binaries(ctx),
        StepId::Unit => generated_file(ctx, content::UNIT, &unit_body()).map(Check::from),
        StepId::Enable => enable(ctx),
        StepId::Caddy => caddy(ctx, changing),
        StepId::Service => service(ctx, changing),
    }
}

// ---- packages ----

fn packages(ctx: &Ctx) -> Result<Check, ClientError> {
    let wanted = content::packages(ctx.opts.site.is_some());
    if ctx.opts.skip_packages {
        return Ok(Status::Skipped(format!(
            "--skip-packages: {} are neither checked nor installed",
            wanted.join(", ")
        ))
        .into());
    }
    let out = dpkg_query(ctx, "${Package}\t${db:Status-Status}\n", &wanted)?;
    let missing = missing_packages(&out, &wanted);
    Ok(if missing.is_empty() {
        Status::Done(format!("installed: {}", wanted.join(", ")))
    } else {
        Status::ToDo(vec![Action::Install(missing)])
    }
    .into())
}

/// Asks the target's own dpkg database (not this machine's, when the root is another).
fn dpkg_query(ctx: &Ctx, format: &str, packages: &[&str]) -> Result<String, ClientError> {
    let mut args = vec![
        format!("--admindir={}", ctx.path("/var/lib/dpkg").display()),
        "-W".to_owned(),
        format!("-f={format}"),
    ];
    args.extend(packages.iter().map(|p| (*p).to_owned()));
    let out = exec::output("dpkg-query", &args)?;
    // 1: some package is unknown to dpkg, which is an answer here.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(exec::failed("dpkg-query", &args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn install(ctx: &Ctx, packages: &[String]) -> Result<String, ClientError> {
    let root = ctx.root.display().to_string();
    let (program, mut prefix): (&str, Vec<String>) = if ctx.is_host {
        ("apt-get", vec![])
    } else {
        ("chroot", vec![root, "apt-get".into()])
    };
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let update: Vec<String> = prefix
        .iter()
        .cloned()
        .chain(["update".into(), "-q".into()])
        .collect();
    exec::run_shown(program, &update, &env)?;
    prefix.extend(["install".into(), "-y".into(), "-q".into()]);
    prefix.extend(packages.iter().cloned());
    exec::run_shown(program, &prefix, &env)?;
    Ok(format!("installed {}", packages.join(", ")))
}

// ---- KVM ----

fn kvm(ctx: &Ctx) -> Check {
    let dev = Path::new("/dev/kvm");
    let usable = atelier_vmm::firecracker::check_kvm(dev);
    let verdict = match &usable {
        Ok(()) => match firecracker(ctx) {
            Some(fc) => format!("KVM: usable → firecracker ({fc}) or QEMU with KVM"),
            None => "KVM: usable → QEMU with KVM (firecracker is not installed)".to_owned(),
        },
        Err(why) => format!(
            "KVM: {} → QEMU under TCG emulation (slow): {why}",
            if dev.exists() { "not usable" } else { "absent" }
        ),
    };
    let mut check = Check::from(Status::Verdict(verdict));
    if usable.is_ok() {
        check = check.note(
            "the manager confirms KVM with a boot probe when it first starts QEMU \
             (nested hosts may still need TCG)",
        );
    }
    if !ctx.is_host {
        check = check.note("this is the KVM of the machine init runs on");
    }
    check
}

fn firecracker(ctx: &Ctx) -> Option<String> {
    if ctx.is_host {
        return atelier_vmm::firecracker::find_binary(Path::new("firecracker"))
            .map(|p| p.display().to_string());
    }
    ["/usr/local/bin/firecracker", "/usr/bin/firecracker"]
        .into_iter()
        .find(|p| ctx.path(p).is_file())
        .map(str::to_owned)
}

// ---- the user and the data directory ----

fn user(ctx: &Ctx) -> Result<Check, ClientError> {
    let passwd = read_optional(&ctx.path("/etc/passwd"))?.unwrap_or_default();
    if let Some((uid, gid)) = passwd_ids(&passwd, USER) {
        return Ok(Status::Done(format!("{USER} exists (uid {uid}, gid {gid})")).into());
    }
    let group = read_optional(&ctx.path("/etc/group"))?.unwrap_or_default();
    Ok(Status::ToDo(vec![Action::AddUser {
        group_exists: has_group(&group, USER),
    }])
    .into())
}

pub fn add_user(ctx: &Ctx, group_exists: bool) -> Result<String, ClientError> {
    let mut args: Vec<String> = vec![];
    if !ctx.is_host {
        args.extend(["--root".into(), ctx.root.display().to_string()]);
    }
    args.extend(
        [
            "--system",
            "--home-dir",
            DATA_DIR,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "Atelier",
        ]
        .map(String::from),
    );
    // useradd refuses to make a group that exists; it then joins it.
    if group_exists {
        args.extend(["--gid".into(), USER.into()]);
    } else {
        args.push("--user-group".into());
    }
    args.push(USER.into());
    exec::run("useradd", &args)?;
    let passwd = read_optional(&ctx.path("/etc/passwd"))?.unwrap_or_default();
    Ok(match passwd_ids(&passwd, USER) {
        Some((uid, gid)) => format!("added the system user {USER} (uid {uid}, gid {gid})"),
        None => format!("added the system user {USER}"),
    })
}

fn data_dir(ctx: &Ctx) -> Result<Check, ClientError> {
    let path = ctx.path(DATA_DIR);
    let passwd = read_optional(&ctx.path("/etc/passwd"))?.unwrap_or_default();
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_dir() => {
            Ok(Status::Conflict(format!("{DATA_DIR} exists and is not a directory")).into())
        }
        Ok(m)
            if passwd_ids(&passwd, USER) == Some((m.uid(), m.gid()))
                && m.mode() & 0o7777 == 0o750 =>
        {
            Ok(Status::Done(format!("{DATA_DIR} is owned by {USER}, mode 0750")).into())
        }
        Ok(_) => Ok(Status::ToDo(vec![Action::DataDir]).into()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Status::ToDo(vec![Action::DataDir]).into()),
        Err(e) => Err(io_error(format!("reading {}", path.display()))(e)),
    }
}

pub fn make_data_dir(ctx: &Ctx) -> Result<String, ClientError> {
    let path = ctx.path(DATA_DIR);
    let passwd = read_optional(&ctx.path("/etc/passwd"))?.unwrap_or_default();
    let (uid, gid) = passwd_ids(&passwd, USER).ok_or_else(|| {
        ClientError::Usage(format!(
            "the user {USER} is not in /etc/passwd of the target"
        ))
    })?;
    std::fs::create_dir_all(&path).map_err(io_error(format!("creating {}", path.display())))?;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
        .map_err(io_error(format!("chown {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750))
        .map_err(io_error(format!("chmod {}", path.display())))?;
    Ok(format!(
        "{DATA_DIR} is owned by {USER} (uid {uid}), mode 0750"
    ))
}

// ---- config.toml ----

fn config(ctx: &Ctx) -> Result<Check, ClientError> {
    let preview = ctx.preview();
    let path = ctx.path(CONFIG);
    let keys = if preview.is_some() {
        "listen, driver, [preview]"
    } else {
        "listen, driver"
    };
    let Some(existing) = read_optional(&path)? else {
        return Ok(Status::ToDo(vec![Action::Write {
            path: CONFIG,
            text: fresh_config(preview.as_ref()),
            mode: 0o644,
            what: format!("write {CONFIG} ({keys})"),
        }])
        .into());
    };
    let merged = match merge_config(&existing, preview.as_ref()) {
        Ok(m) => m,
        Err(why) => {
            return Ok(Status::Conflict(format!(
                "{CONFIG}: {why}; left as it is (edit it by hand)"
            ))
            .into())
        }
    };
    let notes = merged
        .kept
        .iter()
        .map(|k| format!("kept your {k}"))
        .collect();
    let status = match merged.text {
        None => Status::Done(format!("{CONFIG} has {keys}")),
        Some(text) => {
            let mode = std::fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
            Status::ToDo(vec![Action::Write {
                path: CONFIG,
                text,
                mode,
                what: format!(
                    "add {} to {CONFIG} (everything else in it stays as it is)",
                    merged.added.join(", ")
                ),
            }])
        }
    };
    Ok(Check { status, notes })
}

// ---- binaries ----

fn binaries(ctx: &Ctx) -> Result<Check, ClientError> {
    let mut actions = vec![];
    let mut done = vec![];
    let mut notes = vec![];
    install_binary(ctx, &ctx.exe, BINARY, &mut actions, &mut done)?;
    let agent = ctx.exe.with_file_name("atelier-agent");
    let installed_agent = ctx.path(AGENT_BINARY);
    if agent.is_file() {
        install_binary(ctx, &agent, AGENT_BINARY, &mut actions, &mut done)?;
    } else if !installed_agent.is_file() {
        notes.push(format!(
            "warning: no atelier-agent beside {} and none at {AGENT_BINARY}: sandboxes need \
             one there (a static build, scripts/build-agent.sh, for VM images)",
            ctx.exe.display()
        ));
    }
    let agent_in_use = if agent.is_file() {
        agent
    } else {
        installed_agent
    };
    if agent_in_use.is_file() && !is_static_elf(&exec::head(&agent_in_use, 1 << 16)?) {
        notes.push(format!(
            "{} is not a static build: the local driver can run it, VM images cannot \
             (scripts/build-agent.sh builds a static one; install it as {AGENT_BINARY})",
            agent_in_use.display()
        ));
    }
    let status = if actions.is_empty() {
        Status::Done(done.join("; "))
    } else {
        Status::ToDo(actions)
    };
    Ok(Check { status, notes })
}

fn install_binary(
    ctx: &Ctx,
    from: &Path,
    to: &'static str,
    actions: &mut Vec<Action>,
    done: &mut Vec<String>,
) -> Result<(), ClientError> {
    let target = ctx.path(to);
    let same_path = target.canonicalize().ok().as_deref() == Some(from);
    if same_path || exec::same_file_contents(from, &target)? {
        done.push(format!("{to} is this build"));
        return Ok(());
    }
    let what = if target.exists() {
        format!("replace {to} with {} (they differ)", from.display())
    } else {
        format!("install {} as {to}", from.display())
    };
    actions.push(Action::Copy {
        from: from.to_path_buf(),
        to,
        what,
    });
    Ok(())
}

// ---- files init writes whole: the unit, the Caddyfile ----

fn generated_file(ctx: &Ctx, path: &'static str, body: &str) -> Result<Status, ClientError> {
    let want = generated(body);
    let write = |what: String| Action::Write {
        path,
        text: want.clone(),
        mode: 0o644,
        what,
    };
    let Some(have) = read_optional(&ctx.path(path))? else {
        return Ok(Status::ToDo(vec![write(format!("write {path}"))]));
    };
    if have == want {
        return Ok(Status::Done(format!("{path} is up to date")));
    }
    Ok(match provenance(&have) {
        Provenance::Ours => Status::ToDo(vec![write(format!(
            "rewrite {path} (init wrote it, nobody edited it, and it changed)"
        ))]),
        Provenance::Edited => Status::Conflict(format!(
            "{path} was edited since init wrote it: left as it is (delete it to have init \
             write it again)"
        )),
        Provenance::Foreign => {
            let aside = format!("{path}.orig");
            if ctx.path(&aside).exists() {
                Status::Conflict(format!(
                    "{path} was not written by init, and {aside} exists: left as it is"
                ))
            } else {
                Status::ToDo(vec![
                    Action::MoveAside { path, to: aside },
                    write(format!("write {path}")),
                ])
            }
        }
    })
}

// ---- enabling and starting ----

/// `systemctl`'s arguments to enable the unit, or `None` without systemctl.
pub fn enable_command(ctx: &Ctx) -> Option<Vec<String>> {
    if !exec::on_path("systemctl") {
        return None;
    }
    let mut args = vec![];
    // Offline, on the files alone, unless this is a running systemd.
    if !(ctx.is_host && systemd_running()) {
        args.push(format!("--root={}", ctx.root.display()));
    }
    args.extend(["enable".to_owned(), UNIT_NAME.to_owned()]);
    Some(args)
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn enable(ctx: &Ctx) -> Result<Check, ClientError> {
    let link = ctx.path(WANTS_LINK);
    match std::fs::read_link(&link) {
        Ok(to) if to == Path::new(UNIT) => {
            Ok(Status::Done("enabled (multi-user.target wants atelier.service)".into()).into())
        }
        Ok(to) => Ok(Status::Conflict(format!(
            "{WANTS_LINK} points to {}, not {UNIT}: left as it is",
            to.display()
        ))
        .into()),
        Err(_) if link.symlink_metadata().is_ok() => Ok(Status::Conflict(format!(
            "{WANTS_LINK} exists and is not a link: left as it is"
        ))
        .into()),
        Err(_) => Ok(Status::ToDo(vec![Action::Enable]).into()),
    }
}

pub fn enable_unit(ctx: &Ctx) -> Result<String, ClientError> {
    match enable_command(ctx) {
        Some(args) => {
            exec::run("systemctl", &args)?;
            Ok(format!("enabled {UNIT_NAME}"))
        }
        None => {
            let link = ctx.path(WANTS_LINK);
            if let Some(dir) = link.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(io_error(format!("creating {}", dir.display())))?;
            }
            std::os::unix::fs::symlink(UNIT, &link)
                .map_err(io_error(format!("linking {}", link.display())))?;
            Ok(format!("enabled {UNIT_NAME}: linked {WANTS_LINK} → {UNIT}"))
        }
    }
}

fn caddy(ctx: &Ctx, changing: &BTreeSet<StepId>) -> Result<Check, ClientError> {
    let Some(site) = &ctx.opts.site else {
        return Ok(Status::Skipped(
            "no --domain: no Caddy in front; the manager serves its listen address alone".into(),
        )
        .into());
    };
    let config = read_optional(&ctx.path(CONFIG))?.unwrap_or_default();
    let listen = listen_of(&config).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let mut notes = vec![];
    let upstream = upstream(&listen).unwrap_or_else(|| {
        notes.push(format!(
            "warning: config.toml's listen {listen:?} is not an address: Caddy is pointed at {DEFAULT_LISTEN}"
        ));
        DEFAULT_LISTEN.to_owned()
    });
    let body = caddyfile_body(&site.domain, &site.preview_domain, &upstream);
    let status = generated_file(ctx, CADDYFILE, &body)?;
    match caddy_version(ctx) {
        Some(v) => match parse_version(&v) {
            Some(parsed) if parsed >= MIN_CADDY => {}
            _ => notes.push(format!(
                "warning: Caddy {v} is older than {}.{}, which this Caddyfile is written for: \
                 install a newer one (Caddy's own apt repository, https://caddyserver.com/docs/install)",
                MIN_CADDY.0, MIN_CADDY.1
            )),
        },
        None if changing.contains(&StepId::Packages) => notes.push(format!(
            "caddy is installed by the packages step; its version is checked then (it should be {}.{} or newer)",
            MIN_CADDY.0, MIN_CADDY.1
        )),
        None => notes.push(format!(
            "warning: caddy is not installed (apt-get install caddy; {}.{} or newer)",
            MIN_CADDY.0, MIN_CADDY.1
        )),
    }
    Ok(Check { status, notes })
}

/// The installed Caddy's version: what it says on this host, else what dpkg recorded.
fn caddy_version(ctx: &Ctx) -> Option<String> {
    if ctx.is_host && exec::on_path("caddy") {
        if let Ok(out) = exec::run("caddy", &["version"]) {
            if let Some(v) = out.split_whitespace().next() {
                return Some(v.to_owned());
            }
        }
    }
    let out = dpkg_query(ctx, "${db:Status-Status}\t${Version}\n", &["caddy"]).ok()?;
    let (status, version) = out.lines().next()?.split_once('\t')?;
    (status == "installed").then(|| version.to_owned())
}

fn service(ctx: &Ctx, changing: &BTreeSet<StepId>) -> Result<Check, ClientError> {
    if !ctx.is_host {
        return Ok(Status::Skipped(format!(
            "{} is not the running system: its systemd starts atelier.service at boot",
            ctx.root.display()
        ))
        .into());
    }
    if !systemd_running() {
        return Ok(Status::Skipped(format!(
            "systemd is not running here: start the manager with `{BINARY} serve --data-dir {DATA_DIR}`"
        ))
        .into());
    }
    let mut actions = vec![];
    if changing.contains(&StepId::Unit) {
        actions.push(Action::DaemonReload);
    }
    if !ctx.opts.no_start {
        let active = exec::output("systemctl", &["is-active", "--quiet", UNIT_NAME])?
            .status
            .success();
        let changed = [StepId::Unit, StepId::Binaries, StepId::Config]
            .iter()
            .any(|s| changing.contains(s));
        if !active {
            actions.push(Action::Start);
        } else if changed {
            actions.push(Action::Restart);
        }
    }
    if changing.contains(&StepId::Caddy) {
        actions.push(Action::ReloadCaddy);
    }
    Ok(match (actions.is_empty(), ctx.opts.no_start) {
        (false, _) => Status::ToDo(actions),
        (true, true) => Status::Skipped("--no-start: atelier.service is not started".into()),
        (true, false) => Status::Done("atelier.service is active".into()),
    }
    .into())
}
