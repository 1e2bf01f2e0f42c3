// End-to-end: a dev server's preview on its own origin, in Debian's Chromium against a
// real manager (local driver) and a real dev server (Node). The preview domain is
// `preview.test`, mapped to loopback with --host-resolver-rules.
//   open the preview with no cookie → sent to the dashboard → sign in → handed back to
//   the preview, landing on the page asked for → its HMR-style WebSocket echoes → the
//   page can read neither the preview's cookie nor the dashboard's token → the cookie of
//   one sandbox, planted on another's origin, opens nothing there → "Open editor" on the
//   sandbox's page opens VS Code in the browser on its own origin (a stand-in for
//   code-server, whose npm package cannot be installed from the registries alone).
import { chromium } from "playwright-core";
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { atelierBinary, makeOrigin, repoRoot, startManager } from "./manager.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const DOMAIN = "preview.test";
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  `--host-resolver-rules=MAP *.${DOMAIN} 127.0.0.1`,
];

function skip(reason) {
  if (["1", "true"].includes(process.env.ATELIER_REQUIRE_REAL ?? "")) {
    console.error(`FAIL: ${reason} (ATELIER_REQUIRE_REAL=1 makes a missing part a failure)`);
    process.exit(1);
  }
  console.log(`skipped: ${reason}`);
  if (process.env.ATELIER_SKIP_LOG) appendFileSync(process.env.ATELIER_SKIP_LOG, `preview e2e\tskipped\t${reason}\n`);
  process.exit(0);
}

if (!existsSync(CHROMIUM)) skip(`chromium not found at ${CHROMIUM} (apt-get install chromium)`);
const bin = atelierBinary();
if (!bin) skip("the atelier binary is not built (cargo build --workspace --bins)");

const artifacts = join(process.env.E2E_ARTIFACTS ?? join(repoRoot, "target/e2e-artifacts"), "previews");
rmSync(artifacts, { recursive: true, force: true });
mkdirSync(artifacts, { recursive: true });

const freePort = () => 20000 + Math.floor(Math.random() * 20000);
const git = (cwd, ...args) =>
  execFileSync("git", ["-c", "user.name=e2e", "-c", "user.email=e2e@example.com", ...args], { cwd, stdio: "pipe" });

// code-server's stand-in: checks the flags the manager passes, serves a page.
const stubBin = mkdtempSync(join(tmpdir(), "atelier-e2e-bin-"));
writeFileSync(
  join(stubBin, "code-server"),
  `#!/bin/sh
[ "$1 $2 $3" = "--auth none --bind-addr" ] || { echo "unexpected flags: $*" >&2; exit 2; }
exec node -e '
const [host, port] = process.argv[1].split(":");
require("http").createServer((q, r) => { r.setHeader("content-type", "text/html"); r.end("<title>code-server</title><h1>editor for " + process.argv[2] + "</h1>"); }).listen(+port, host);
' "$4" "$7"
`,
);
chmodSync(join(stubBin, "code-server"), 0o755);
const manager = await startManager(bin, {
  config: `[preview]\ndomain = "${DOMAIN}"\n`,
  env: { PATH: `${stubBin}:${process.env.PATH}` },
});
const managerPort = new URL(manager.url).port;
let ctx;
const userData = mkdtempSync(join(tmpdir(), "atelier-e2e-chromium-"));
try {
  // A repo with the dev server in it, and a workspace that runs it.
  const origin = makeOrigin(manager.dir);
  const work = join(manager.dir, "work");
  copyFileSync(join(repoRoot, "crates/cli/tests/fixtures/devserver.mjs"), join(work, "devserver.mjs"));
  git(work, "add", ".");
  git(work, "commit", "--quiet", "-m", "dev server");
  git(work, "push", "--quiet", join(manager.dir, "origin.git"), "HEAD:main");
  const port = freePort();
  const expectOk = async (res, what) => {
    if (!res.ok) throw new Error(`${what}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  await expectOk(
    await manager.api("/workspaces", {
      method: "POST",
      body: JSON.stringify({
        name: "app",
        repos: [{ url: origin }],
        dev_commands: [{ name: "web", command: "exec node devserver.mjs", port }],
      }),
    }),
    "creating the workspace",
  );
  const prebuild = await expectOk(await manager.api("/workspaces/app/prebuilds", { method: "POST", body: "{}" }), "building the prebuild");
  for (let i = 0; ; i++) {
    const p = await (await manager.api(`/prebuilds/${prebuild.id}`)).json();
    if (p.state === "ready") break;
    if (p.state !== "building" || i > 600) throw new Error(`prebuild: ${JSON.stringify(p)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const sandbox = await expectOk(
    await manager.api("/sandboxes?wait=true", { method: "POST", body: JSON.stringify({ workspace: "app" }) }),
    "creating the sandbox",
  );
  const other = await expectOk(
    await manager.api("/sandboxes?wait=true", { method: "POST", body: JSON.stringify({ name: "other" }) }),
    "creating another sandbox",
  );
  let preview;
  for (let i = 0; ; i++) {
    const list = await (await manager.api(`/sandboxes/${sandbox.id}/previews`)).json();
    if (list[0]?.service === "running") {
      preview = list[0];
      break;
    }
    if (i > 300) throw new Error(`the dev service never ran: ${JSON.stringify(list)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const expected = `http://${port}-${sandbox.id}.${DOMAIN}:${managerPort}/`;
  if (preview.url !== expected) throw new Error(`preview url ${preview.url}, wanted ${expected}`);

  ctx = await chromium.launchPersistentContext(userData, { executablePath: CHROMIUM, headless: true, args: ARGS });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(20_000);

  // No cookie, no token: the preview sends the browser to sign in on the dashboard.
  await page.goto(`${preview.url}page`);
  await page.getByLabel("API token").waitFor();
  if (!page.url().startsWith(`${manager.url}/open?`)) throw new Error(`not sent to the dashboard: ${page.url()}`);
  await page.screenshot({ path: join(artifacts, "01-sign-in.png") });
  await page.getByLabel("API token").fill(manager.token);
  await page.getByRole("button", { name: "Sign in" }).click();

  // Handed back to the preview, on the page it asked for; the HMR socket works.
  await page.waitForURL(`${preview.url}page`);
  await page.waitForFunction(() => document.title.startsWith("echo:") || document.title === "ws-error");
  const title = await page.title();
  if (title !== "echo:hmr-update") throw new Error(`the WebSocket did not echo: ${title}`);
  await page.screenshot({ path: join(artifacts, "02-dev-server.png") });
  console.log("  preview: signed in through the dashboard, WebSocket echoed");

  // The dev server's page reads neither the preview's cookie nor the dashboard's token.
  const seen = await page.evaluate(() => ({ cookie: document.cookie, token: localStorage.getItem("atelier.token") }));
  if (seen.cookie !== "" || seen.token !== null) throw new Error(`the dev server's page sees ${JSON.stringify(seen)}`);
  const cookies = await ctx.cookies(preview.url);
  const grant = cookies.find((c) => c.name === "atelier_preview");
  if (!grant || !grant.httpOnly || grant.sameSite !== "Lax") throw new Error(`preview cookie: ${JSON.stringify(cookies)}`);
  const dashboardCookies = await ctx.cookies(manager.url);
  if (dashboardCookies.length) throw new Error(`the dashboard has cookies: ${JSON.stringify(dashboardCookies)}`);

  // The same cookie planted on another sandbox's origin opens nothing there: a fresh
  // browser (no dashboard token) carrying it is sent to sign in.
  await ctx.close();
  rmSync(userData, { recursive: true, force: true });
  const fresh = mkdtempSync(join(tmpdir(), "atelier-e2e-chromium-"));
  ctx = await chromium.launchPersistentContext(fresh, { executablePath: CHROMIUM, headless: true, args: ARGS });
  const otherHost = `${port}-${other.id}.${DOMAIN}`;
  await ctx.addCookies([{ name: "atelier_preview", value: grant.value, domain: otherHost, path: "/" }]);
  const p2 = ctx.pages()[0] ?? (await ctx.newPage());
  await p2.goto(`http://${otherHost}:${managerPort}/`);
  await p2.getByLabel("API token").waitFor();
  if (!p2.url().startsWith(`${manager.url}/open?sandbox=${other.id}`)) throw new Error(`another sandbox opened: ${p2.url()}`);
  // …while on its own origin it still opens the dev server, without the dashboard.
  await ctx.addCookies([{ name: "atelier_preview", value: grant.value, domain: `${port}-${sandbox.id}.${DOMAIN}`, path: "/" }]);
  await p2.goto(preview.url);
  const body = await p2.textContent("body");
  if (!body.includes('"name":"web"')) throw new Error(`own origin: ${body}`);
  await p2.screenshot({ path: join(artifacts, "03-cookie-scoped.png") });

  // VS Code in the browser from the sandbox's page: signed in on the dashboard, the
  // button starts the editor and its tab lands on the editor's own origin.
  await p2.goto(`${manager.url}/`);
  await p2.getByLabel("API token").fill(manager.token);
  await p2.getByRole("button", { name: "Sign in" }).click();
  await p2.getByRole("heading", { name: "Needs you" }).waitFor();
  await p2.goto(`${manager.url}/sandboxes/${sandbox.id}`);
  await p2.getByText(preview.url).waitFor();
  await p2.screenshot({ path: join(artifacts, "04-sandbox-page.png") });
  const [editorTab] = await Promise.all([ctx.waitForEvent("page"), p2.getByRole("button", { name: "Open editor" }).click()]);
  await editorTab.waitForURL(`http://13337-${sandbox.id}.${DOMAIN}:${managerPort}/`, { timeout: 40_000 });
  const editorTitle = await editorTab.title();
  const editorText = await editorTab.textContent("h1");
  if (editorTitle !== "code-server" || !editorText.startsWith("editor for /")) throw new Error(`editor: ${editorTitle} ${editorText}`);
  await editorTab.screenshot({ path: join(artifacts, "05-editor.png") });
  console.log("  preview: the editor opened on its own origin");
  rmSync(fresh, { recursive: true, force: true });
  console.log("ok: preview flow");
} catch (e) {
  console.error(`FAIL: preview flow: ${e.stack ?? e}\n--- manager log ---\n${manager.log().slice(-4000)}`);
  process.exitCode = 1;
} finally {
  await ctx?.close().catch(() => {});
  await manager.stop();
  rmSync(userData, { recursive: true, force: true });
  rmSync(stubBin, { recursive: true, force: true });
}
