// End-to-end: the dashboard in Debian's Chromium (headless, driven by playwright-core)
// against a real manager (local driver + scripted fake agent), at phone and desktop sizes.
//   log in → create a workspace → create a task → watch it run → answer its question from
//   the attention feed → see it in review with its diff → open its sandbox terminal and run
//   a command → mark it done. On the way, the workspace gets a prebuild built from its page
//   (its log followed live), a sandbox started from the workspace is a clone of it, and at
//   the end a new commit on the branch makes "Check now" report it stale.
// Screenshots go to target/e2e-artifacts/ (the path is printed).
import { chromium } from "playwright-core";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { atelierBinary, makeOrigin, pushCommit, repoRoot, startManager } from "./manager.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const VIEWPORTS = [
  { name: "phone-375x812", width: 375, height: 812, mobile: true },
  { name: "desktop-1440x900", width: 1440, height: 900, mobile: false },
];
const SCENARIO = `
steps:
  - todos:
      - {content: "Ask which greeting", status: in_progress}
      - {content: "Write NOTES.md", status: pending}
  - ask_question:
      questions:
        - question: "Formal or casual greeting?"
          options: [Formal, Casual]
  - edit_file: {path: NOTES.md, content: "Good day to you.\\n"}
  - todos:
      - {content: "Ask which greeting", status: completed}
      - {content: "Write NOTES.md", status: completed}
  - usage: {input: 1200, output: 300, cost: 0.0042}
  - say: "I wrote NOTES.md with a formal greeting."
  - finish
`;

// A missing part skips the run with its reason, or fails it where CI requires every part
// (ATELIER_REQUIRE_REAL=1, as the Rust tests do); the reason goes to the run's skip log.
function skip(reason) {
  if (["1", "true"].includes(process.env.ATELIER_REQUIRE_REAL ?? "")) {
    console.error(`FAIL: ${reason} (ATELIER_REQUIRE_REAL=1 makes a missing part a failure)`);
    process.exit(1);
  }
  console.log(`skipped: ${reason}`);
  if (process.env.ATELIER_SKIP_LOG) {
    appendFileSync(process.env.ATELIER_SKIP_LOG, `web e2e\tskipped\t${reason}\n`);
  }
  process.exit(0);
}

if (!existsSync(CHROMIUM)) skip(`chromium not found at ${CHROMIUM} (apt-get install chromium)`);
const bin = atelierBinary();
if (!bin) skip("the atelier binary is not built (cargo build --workspace --bins)");
if (!existsSync(join(repoRoot, "web/dist/index.html"))) {
  console.error("FAIL: web/dist is not built (scripts/build-web.sh)");
  process.exit(1);
}

const artifacts = process.env.E2E_ARTIFACTS ?? join(repoRoot, "target/e2e-artifacts");
mkdirSync(artifacts, { recursive: true });
console.log(`e2e screenshots: ${artifacts}`);

const started = Date.now();
const manager = await startManager(bin);
const originUrl = makeOrigin(manager.dir);
const results = [];

async function flow(vp) {
  const userData = mkdtempSync(join(tmpdir(), "atelier-e2e-chromium-"));
  const ctx = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: vp.width, height: vp.height },
    isMobile: vp.mobile,
    hasTouch: vp.mobile,
    deviceScaleFactor: 1,
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(20_000);
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  let n = 0;
  const dir = join(artifacts, vp.name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const shot = async (name) => page.screenshot({ path: join(dir, `${String(++n).padStart(2, "0")}-${name}.png`), fullPage: true });
  const step = (msg) => console.log(`  [${vp.name}] ${msg} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
  const nav = (name) => page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: new RegExp(`^${name}`) }).click();
  const wsName = `app-${vp.width}`;

  try {
    // log in
    await page.goto(manager.url + "/");
    await page.getByLabel("API token").fill("atl_wrong");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("That token was refused.").waitFor();
    await page.getByLabel("API token").fill(manager.token);
    await shot("login");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Needs you" }).waitFor();
    if (page.url().includes(manager.token)) throw new Error("the token is in the URL");
    step("logged in");
    await shot("mission-control-empty");

    // create a workspace through the form
    await nav("Workspaces");
    await page.getByRole("button", { name: "New workspace" }).click();
    await page.getByLabel("Name").fill(wsName);
    await page.getByLabel("Clone URL").fill(originUrl);
    await page.getByLabel("Branch").fill("main");
    // Output, then a pause: the build stays in "building" long enough to watch its log.
    await page.getByLabel(/Init commands/).fill("echo prebuild-init-$((6*7))\nsleep 3");
    await page.getByRole("button", { name: "Add secret" }).click();
    await page.getByLabel("Secret name").fill("DEMO_TOKEN");
    await page.getByLabel("Secret value").fill("s3cret-value-1234");
    await page.locator('textarea[name="agent_config"]').fill(JSON.stringify({ runtime: "fake", scenario: SCENARIO }, null, 2));
    await shot("workspace-form");
    await page.getByRole("button", { name: "Create workspace" }).click();
    await page.getByRole("heading", { name: `Edit ${wsName}` }).waitFor();
    // secrets are write-only: only a masked preview comes back
    await page.getByText("DEMO_TOKEN").waitFor();
    if ((await page.content()).includes("s3cret-value-1234")) throw new Error("a secret value is shown");
    step("workspace created");

    // build a prebuild from the workspace page and follow its log while it runs
    const prebuildCard = page.getByTestId("prebuild-card");
    await prebuildCard.getByText("No prebuild yet.").waitFor();
    await prebuildCard.getByRole("button", { name: "Build prebuild" }).click();
    await page.locator('[data-testid="prebuild-card"][data-health="building"]').waitFor();
    await page.getByTestId("prebuild-log").getByText("prebuild-init-42").waitFor();
    await shot("prebuild-building");
    step("prebuild building, log followed");
    await page.locator('[data-testid="prebuild-card"][data-health="ready"]').waitFor({ timeout: 60_000 });
    const prebuilds = await (await manager.api(`/workspaces/${wsName}/prebuilds`)).json();
    const pb = prebuilds.current;
    if (!pb) throw new Error(`no current prebuild: ${JSON.stringify(prebuilds)}`);
    await prebuildCard.getByText(pb.id).waitFor();
    // the local driver captures disks only
    await prebuildCard.getByTestId("prebuild-start").getByText(/^disk only/).waitFor();
    await prebuildCard.getByText(pb.commits[0].commit.slice(0, 7), { exact: true }).waitFor();
    await shot("prebuild-ready");
    step(`prebuild ${pb.id} ready`);

    // a sandbox started from the workspace is a clone of it
    await page.getByRole("button", { name: "New sandbox" }).click();
    await page.waitForURL(/\/sandboxes\/[^/]+$/);
    const clonePage = page.url();
    await page.getByTestId("sandbox-origin").getByText(`prebuild ${pb.id}`).waitFor();
    await page.locator(".meta .badge-running").waitFor({ timeout: 30_000 });
    await shot("sandbox-from-prebuild");
    await nav("Sandboxes");
    await page.getByRole("table").getByRole("link", { name: `prebuild ${pb.id}` }).waitFor();
    step("sandbox cloned from the prebuild");

    // create a task
    await nav("Tasks");
    await page.getByRole("button", { name: "New task" }).click();
    await page.getByLabel("What should the agent do?").fill("Write a greeting in NOTES.md");
    await page.getByLabel("Workspace").first().selectOption({ label: wsName });
    await shot("new-task");
    await page.getByRole("button", { name: "Create task" }).click();
    await page.getByRole("heading", { name: "Write a greeting in NOTES.md" }).waitFor();
    const taskId = page.url().split("/tasks/")[1];
    step(`task ${taskId} created`);

    // watch it run: live updates move it to "needs attention" and fill the todos
    await page.locator(".meta .badge-needs_attention").waitFor({ timeout: 60_000 });
    await page.getByText("Ask which greeting").waitFor();
    await shot("task-needs-attention");
    step("task asks a question");

    // answer from the attention feed on mission control
    await nav("Home");
    const card = page.getByTestId("attention-card").filter({ hasText: "Formal or casual greeting?" });
    await card.waitFor();
    await shot("attention-feed");
    await card.getByRole("button", { name: "Formal" }).click();
    await card.waitFor({ state: "detached" });
    step("answered");

    // in review, with its diff
    await page.getByRole("link", { name: "Write a greeting in NOTES.md" }).first().click();
    await page.locator(".meta .badge-review").waitFor({ timeout: 60_000 });
    await page.getByTestId("diff").getByText("NOTES.md").waitFor();
    await page.getByText("Good day to you.").waitFor();
    await page.getByText("I wrote NOTES.md with a formal greeting.").first().waitFor();
    await shot("task-review-diff");
    step("in review with its diff");

    // its sandbox terminal
    await page.getByRole("button", { name: "Open sandbox" }).click();
    const term = page.getByTestId("terminal");
    await term.waitFor();
    await page.locator('[data-testid="terminal"][data-state="open"]').waitFor({ timeout: 20_000 });
    await term.click();
    await page.keyboard.type("echo e2e-$((6*7))-ok\n");
    await term.getByText("e2e-42-ok").waitFor({ timeout: 15_000 });
    await shot("sandbox-terminal");
    step("terminal ran a command");
    await page.goBack();

    // mark done
    await page.getByRole("button", { name: "Mark done" }).click();
    await page.locator(".meta .badge-done").waitFor({ timeout: 30_000 });
    await shot("task-done");
    step("marked done");

    // the kanban shows it in Done
    await nav("Tasks");
    await page.getByTestId("column-done").getByText("Write a greeting in NOTES.md").first().waitFor();
    await shot("kanban");

    // a new commit on the branch makes the prebuild stale; with auto-rebuild off it keeps serving
    await nav("Workspaces");
    await page.getByRole("link", { name: wsName, exact: true }).click();
    const auto = page.getByRole("switch", { name: /Rebuild by itself/ });
    await auto.uncheck();
    await page.locator('input[role="switch"]:not(:checked):not([disabled])').waitFor();
    const saved = await (await manager.api(`/workspaces/${wsName}`)).json();
    if (saved.prebuild.auto_rebuild !== false) throw new Error("auto_rebuild was not turned off");
    pushCommit(manager.dir, `change for ${vp.name}`);
    await page.getByRole("button", { name: "Check now" }).click();
    await page.getByTestId("prebuild-stale").getByText(/main moved from/).waitFor();
    await page.locator('[data-testid="prebuild-card"][data-health="stale"]').waitFor();
    await shot("prebuild-stale");
    await nav("Home");
    await page.getByTestId("prebuild-notices").getByRole("link", { name: wsName }).waitFor();
    await shot("mission-control-prebuilds");
    step("prebuild stale after a push, shown on mission control");

    // the running clone becomes the workspace's prebuild
    await page.goto(clonePage);
    page.once("dialog", (d) => void d.accept());
    await page.getByRole("button", { name: "Make this the workspace's prebuild" }).click();
    await page.getByRole("heading", { name: `Edit ${wsName}` }).waitFor();
    await page.locator('[data-testid="prebuild-card"][data-health="ready"]').waitFor({ timeout: 60_000 });
    await page.getByTestId("prebuild-card").getByRole("link", { name: "a sandbox" }).waitFor();
    await shot("prebuild-promoted");
    step("a running sandbox promoted to the prebuild");
    if (consoleErrors.length) throw new Error(`page errors: ${consoleErrors.join("; ")}`);
    results.push({ name: vp.name, ok: true });
  } catch (e) {
    await shot("failure").catch(() => {});
    results.push({ name: vp.name, ok: false, error: e });
  } finally {
    await ctx.close();
    rmSync(userData, { recursive: true, force: true });
  }
}

try {
  for (const vp of VIEWPORTS) await flow(vp);
} finally {
  const failed = results.filter((r) => !r.ok);
  if (failed.length) console.error(manager.log().split("\n").slice(-40).join("\n"));
  await manager.stop();
}
for (const r of results) console.log(`${r.ok ? "ok" : "FAIL"}: dashboard flow at ${r.name}${r.ok ? "" : ` — ${r.error?.stack ?? r.error}`}`);
const failed = results.filter((r) => !r.ok).length;
console.log(`dashboard e2e took ${((Date.now() - started) / 1000).toFixed(1)}s; screenshots in ${artifacts}`);
console.log(`e2e: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
