// First load of the dashboard against a local manager, in headless Chromium:
// the JavaScript it downloads (raw and gzipped) and how long until it is interactive
// (mission control rendered with its data, no long task running), cold and warm cache.
//   node bench/first-load.mjs [runs]      (needs web/dist, the atelier binary, chromium)
import { chromium } from "playwright-core";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { atelierBinary, startManager } from "../e2e/manager.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const runs = Number(process.argv[2] ?? 5);
const bin = atelierBinary();
if (!existsSync(CHROMIUM) || !bin) {
  console.log(`skipped: ${!bin ? "the atelier binary is not built" : `no chromium at ${CHROMIUM}`}`);
  process.exit(0);
}

const manager = await startManager(bin);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function load(ctx, token) {
  const page = await ctx.newPage();
  await page.addInitScript((t) => localStorage.setItem("atelier.token", t), token);
  const scripts = [];
  page.on("response", async (res) => {
    if (res.request().resourceType() === "script") {
      try {
        const body = await res.body();
        scripts.push({ url: res.url(), raw: body.length, gzip: gzipSync(body, { level: 9 }).length });
      } catch {
        /* served from cache without a body */
      }
    }
  });
  // Long tasks are recorded from the start so "interactive" can wait for a quiet main thread.
  await page.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__longTasks.push(e.startTime + e.duration))).observe({ type: "longtask", buffered: true });
  });
  await page.goto(manager.url + "/", { waitUntil: "commit" });
  // Interactive: the attention feed has answered (its empty state is shown) and no long task ran in the last 50 ms.
  const tti = await page.waitForFunction(
    () => {
      const ready = [...document.querySelectorAll(".empty strong")].some((e) => e.textContent === "Nothing waits for you.");
      if (!ready) return false;
      const now = performance.now();
      const lastLong = Math.max(0, ...window.__longTasks);
      return now - lastLong > 50 ? Math.max(lastLong, now - 50) : false;
    },
    null,
    { polling: 10, timeout: 30_000 },
  );
  const interactive = await tti.jsonValue();
  const timing = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return { dcl: nav.domContentLoadedEventEnd, fcp: performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? NaN };
  });
  await page.close();
  return { interactive, ...timing, scripts };
}

const cold = [];
const warm = [];
let firstScripts = [];
for (let i = 0; i < runs; i++) {
  const dir = mkdtempSync(join(tmpdir(), "atelier-bench-"));
  const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 375, height: 812 } });
  const c = await load(ctx, manager.token);
  const w = await load(ctx, manager.token);
  if (i === 0) firstScripts = c.scripts;
  cold.push(c);
  warm.push(w);
  await ctx.close();
  rmSync(dir, { recursive: true, force: true });
}
await manager.stop();

const raw = firstScripts.reduce((s, x) => s + x.raw, 0);
const gz = firstScripts.reduce((s, x) => s + x.gzip, 0);
const ms = (x) => `${Math.round(x)} ms`;
console.log(`first-load JavaScript: ${firstScripts.length} file(s), ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzipped (budget 150 KiB)`);
for (const s of firstScripts) console.log(`  ${s.url.replace(manager.url, "")}: ${(s.gzip / 1024).toFixed(1)} KiB gzipped`);
console.log(`cold cache (median of ${runs}): first contentful paint ${ms(median(cold.map((r) => r.fcp)))}, DOMContentLoaded ${ms(median(cold.map((r) => r.dcl)))}, interactive ${ms(median(cold.map((r) => r.interactive)))}`);
console.log(`warm cache (median of ${runs}): first contentful paint ${ms(median(warm.map((r) => r.fcp)))}, DOMContentLoaded ${ms(median(warm.map((r) => r.dcl)))}, interactive ${ms(median(warm.map((r) => r.interactive)))}`);
if (gz > 150 * 1024) {
  console.error("FAIL: first-load JavaScript is over the 150 KiB gzipped budget");
  process.exit(1);
}
