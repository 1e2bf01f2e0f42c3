// Starts a real Atelier manager (local driver, scripted fake agent) on an ephemeral port
// with a temporary data directory, and a bare git "origin" for its workspaces.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const repoRoot = resolve(import.meta.dirname, "../..");

export function atelierBinary() {
  const candidates = [
    process.env.ATELIER_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug/atelier"),
    join(repoRoot, "target/debug/atelier"),
  ].filter(Boolean);
  return candidates.find((p) => existsSync(p));
}

function git(cwd, ...args) {
  execFileSync("git", ["-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "-c", "init.defaultBranch=main", ...args], {
    cwd,
    stdio: "pipe",
  });
}

export function makeOrigin(dir) {
  const work = join(dir, "work");
  mkdirSync(work, { recursive: true });
  git(work, "init", "--quiet");
  writeFileSync(join(work, "README.md"), "# app\n");
  git(work, "add", ".");
  git(work, "commit", "--quiet", "-m", "initial");
  const bare = join(dir, "origin.git");
  git(dir, "clone", "--quiet", "--bare", work, bare);
  return `file://${bare}`;
}

/** Moves the origin's main branch on by one commit (made in the work tree makeOrigin left). */
export function pushCommit(dir, message) {
  const work = join(dir, "work");
  writeFileSync(join(work, "CHANGES.md"), `${message}\n`, { flag: "a" });
  git(work, "add", ".");
  git(work, "commit", "--quiet", "-m", message);
  git(work, "push", "--quiet", join(dir, "origin.git"), "HEAD:main");
}

/** `config` is the text of the data directory's config.toml, if any; `env` is added to
 *  the manager's environment. */
export async function startManager(bin, { config, env } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "atelier-e2e-"));
  const dataDir = join(dir, "data");
  if (config) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dataDir, "config.toml"), config);
  }
  const child = spawn(bin, ["serve", "--driver", "local", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", ...(env ?? {}) },
  });
  let log = "";
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`the manager did not start:\n${log}`)), 30_000);
    const onData = (b) => {
      log += b.toString();
      const m = /listening on (http:\/\/[\d.:]+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`the manager exited (${code}):\n${log}`)));
  });
  child.stdout.on("data", (b) => (log += b.toString()));
  child.stderr.on("data", (b) => (log += b.toString()));
  const token = readFileSync(join(dataDir, "admin.token"), "utf8").trim();
  return {
    url,
    token,
    dir,
    log: () => log,
    async api(path, init = {}) {
      const res = await fetch(`${url}/api/v1${path}`, {
        ...init,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(init.headers ?? {}) },
      });
      return res;
    },
    async stop() {
      // Sandboxes of the local driver are processes that outlive the manager: destroy them.
      if (child.exitCode === null) {
        try {
          const list = await (await this.api("/sandboxes")).json();
          await Promise.all(list.sandboxes.map((s) => this.api(`/sandboxes/${s.id}`, { method: "DELETE" })));
        } catch {
          /* best effort */
        }
        child.kill("SIGTERM");
        await new Promise((r) => {
          const t = setTimeout(() => (child.kill("SIGKILL"), r()), 10_000);
          child.on("exit", () => (clearTimeout(t), r()));
        });
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
