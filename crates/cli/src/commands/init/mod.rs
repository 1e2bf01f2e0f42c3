//! `atelier init`: provisions a Debian host (or a root filesystem) for Atelier, step by
//! step and idempotently. Every step first looks at the target and is either already
//! done or has exact things to do; the plan is printed before anything changes, and a
//! second run finds everything done and touches nothing.

mod content;
mod exec;
mod plan;
mod pool;
mod steps;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::client::ClientError;
use content::{check_domain, parse_size, Preview, DATA_DIR};
use plan::{Before, Check, Status, StepId};

#[derive(Args)]
pub struct InitArgs {
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The system to provision: a root filesystem (e.g. a mounted disk) instead of this
    /// one. Packages are installed through chroot; the service is not started.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Serve the dashboard at https://DOMAIN through Caddy, previews under
    /// --preview-domain with certificates issued on demand.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Previews live at https://<port>-<sandbox>.PREVIEW_DOMAIN/ [default: preview.DOMAIN].
    #[arg(long, value_name = "DOMAIN", requires = "domain")]
    preview_domain: Option<String>,
    /// Size of the pool's sparse image file, /var/lib/atelier-pool.xfs (e.g. 50G, 300M;
    /// at least 300M) [default: 50G, or the free space when less].
    #[arg(long, value_name = "SIZE", value_parser = pool_size, conflicts_with_all = ["pool_device", "no_pool"])]
    pool_size: Option<u64>,
    /// Make the pool on this block device (it must hold no filesystem) instead of a file.
    #[arg(long, value_name = "DEVICE", conflicts_with = "no_pool")]
    pool_device: Option<PathBuf>,
    /// No XFS pool: the data directory stays on the filesystem it is on.
    #[arg(long)]
    no_pool: bool,
    /// Do not start or restart the service (it is still enabled for the next boot).
    #[arg(long)]
    no_start: bool,
    /// Leave out the packages step (neither checked nor installed).
    #[arg(long)]
    skip_packages: bool,
    /// Apply the plan without asking (the question is asked on a terminal only).
    #[arg(long, short)]
    yes: bool,
}

fn pool_size(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    let min = atelier_vmm::storage::MIN_XFS_POOL_BYTES;
    if bytes < min {
        return Err(format!(
            "an XFS pool needs at least {}",
            content::human(min)
        ));
    }
    Ok(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolOption {
    None,
    Image { bytes: Option<u64> },
    Device(PathBuf),
}

pub struct Site {
    pub domain: String,
    pub preview_domain: String,
}

pub struct Options {
    pub skip_packages: bool,
    pub no_start: bool,
    pub pool: PoolOption,
    pub site: Option<Site>,
}

/// The target root and what was asked of it.
pub struct Ctx {
    /// Canonical, so that `/` is recognized however it is spelled.
    pub root: PathBuf,
    /// The root is the running system: mounts go through its fstab, the service starts.
    pub is_host: bool,
    pub opts: Options,
    /// This `atelier`, installed into the root.
    pub exe: PathBuf,
}

impl Ctx {
    /// Where the target's absolute path `abs` is on this machine.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn preview(&self) -> Option<Preview> {
        self.opts
            .site
            .as_ref()
            .map(|s| Preview::new(&s.domain, &s.preview_domain))
    }
}

fn context(args: &InitArgs) -> Result<Ctx, ClientError> {
    let root = std::fs::canonicalize(&args.root)
        .map_err(|e| ClientError::Usage(format!("--root {}: {e}", args.root.display())))?;
    if !root.is_dir() {
        return Err(ClientError::Usage(format!(
            "--root {} is not a directory",
            args.root.display()
        )));
    }
    let site = match &args.domain {
        None => None,
        Some(d) => {
            let domain = check_domain("--domain", d).map_err(ClientError::Usage)?;
            let preview_domain = match &args.preview_domain {
                Some(p) => check_domain("--preview-domain", p).map_err(ClientError::Usage)?,
                None => format!("preview.{domain}"),
            };
            Some(Site {
                domain,
                preview_domain,
            })
        }
    };
    let pool = match (&args.pool_device, args.no_pool) {
        (_, true) => PoolOption::None,
        (Some(dev), false) => {
            use std::os::unix::fs::FileTypeExt;
            let ok = std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_block_device());
            if !ok {
                return Err(ClientError::Usage(format!(
                    "--pool-device {} is not a block device",
                    dev.display()
                )));
            }
            PoolOption::Device(dev.clone())
        }
        (None, false) => PoolOption::Image {
            bytes: args.pool_size,
        },
    };
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| ClientError::Usage(format!("cannot find this atelier binary: {e}")))?;
    Ok(Ctx {
        is_host: root == std::path::Path::new("/"),
        root,
        opts: Options {
            skip_packages: args.skip_packages,
            no_start: args.no_start,
            pool,
            site,
        },
        exe,
    })
}

pub fn run(args: InitArgs) -> Result<ExitCode, ClientError> {
    let ctx = context(&args)?;
    if !args.dry_run && !nix::unistd::geteuid().is_root() {
        return Err(ClientError::Usage(
            "atelier init changes the system: run it as root (sudo atelier init), \
             or see what it would do with --dry-run"
                .into(),
        ));
    }
    let target = if ctx.is_host {
        "this host".to_owned()
    } else {
        ctx.root.display().to_string()
    };
    println!("Plan for {target} (data directory {DATA_DIR}):");
    let mut plan = Before::default();
    for step in StepId::ALL {
        let check = steps::check(step, &ctx, &plan)?;
        print_check(step, &check, &ctx);
        match check.status {
            Status::ToDo(_) => {
                plan.changing.insert(step);
            }
            Status::Conflict(_) => {
                plan.conflicts.insert(step);
            }
            _ => {}
        }
    }
    let conflicts = plan.conflicts.len();
    let left = if conflicts > 0 {
        format!("; {conflicts} conflict(s) left to you")
    } else {
        String::new()
    };
    if args.dry_run {
        println!(
            "\nDry run: nothing was changed ({} step(s) to do{left}).",
            plan.changing.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if plan.changing.is_empty() {
        println!("\nNothing to do: every step is done{left}.");
        return Ok(exit(conflicts));
    }
    if !args.yes && !confirmed(plan.changing.len())? {
        println!("Nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    println!("\nApplying:");
    // Each step looks again just before it runs: the ones before it may have changed
    // what it sees (the data directory is a fresh filesystem once the pool is mounted).
    let mut applied = Before::default();
    for step in StepId::ALL {
        let check = steps::check(step, &ctx, &applied)?;
        let mut first = true;
        match &check.status {
            Status::ToDo(actions) => {
                for action in actions {
                    let did = action.run(&ctx)?;
                    print_line(step, first, &did);
                    first = false;
                }
                applied.changing.insert(step);
            }
            Status::Conflict(why) => {
                applied.conflicts.insert(step);
                print_line(step, true, &format!("conflict: {why}"));
            }
            _ => continue,
        }
        for note in &check.notes {
            print_line(step, false, note);
        }
    }
    let conflicts = applied.conflicts.len();
    let left = if conflicts > 0 {
        format!("; {conflicts} conflict(s) left to you (see above)")
    } else {
        String::new()
    };
    println!(
        "\nDone: {} step(s) changed something{left}.",
        applied.changing.len()
    );
    if ctx.is_host {
        println!("The admin API token is in {DATA_DIR}/admin.token once the manager has started.");
    }
    Ok(exit(conflicts))
}

/// Asks before changing anything when a person is there to answer; scripts (no
/// terminal) get the plan applied, as they asked.
fn confirmed(steps: usize) -> Result<bool, ClientError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Ok(true);
    }
    print!("\nApply the {steps} step(s) to do? [y/N] ");
    std::io::stdout()
        .flush()
        .map_err(exec::io_error("writing the question".into()))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(exec::io_error("reading the answer".into()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn exit(conflicts: usize) -> ExitCode {
    if conflicts > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_line(step: StepId, first: bool, text: &str) {
    let label = if first { step.label() } else { "" };
    println!("  {label:<9} {text}");
}

fn print_check(step: StepId, check: &Check, ctx: &Ctx) {
    match &check.status {
        Status::Done(what) => print_line(step, true, &format!("done: {what}")),
        Status::Skipped(why) => print_line(step, true, &format!("skipped: {why}")),
        Status::Conflict(why) => print_line(step, true, &format!("conflict: {why}")),
        Status::Verdict(v) => print_line(step, true, v),
        Status::ToDo(actions) => {
            for (i, a) in actions.iter().enumerate() {
                let prefix = if i == 0 { "to do: " } else { "       " };
                print_line(step, i == 0, &format!("{prefix}{}", a.describe(ctx)));
            }
        }
    }
    for note in &check.notes {
        print_line(step, false, note);
    }
}
