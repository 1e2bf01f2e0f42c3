import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import type { Prebuild, PrebuildStatus, Workspace } from "../api/types";
import { saveToken } from "../api/token";
import { renderInApp, stubApi } from "../test/render";
import { PrebuildCard } from "./PrebuildCard";
import { summarize } from "./prebuild";

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();

const workspace = (autoRebuild = true): Workspace => ({
  id: "ws_1",
  name: "shop",
  repos: [{ url: "file:///srv/shop.git", branch: "main", path: null }],
  init_commands: ["npm ci"],
  dev_commands: [],
  secrets: [],
  resources: { vcpus: 2, memory_mib: 2048, disk_mib: 10240 },
  base_image: "dev",
  image_name: "dev",
  agent_config: {},
  prebuild: { auto_rebuild: autoRebuild },
  created_at: minutesAgo(60),
  updated_at: minutesAgo(60),
});

const prebuild = (over: Partial<Prebuild>): Prebuild => ({
  id: "pb_ready1",
  workspace_id: "ws_1",
  state: "ready",
  driver: "local",
  commits: [
    { url: "file:///srv/shop.git", branch: "main", path: "shop", commit: "0123456789abcdef0123456789abcdef01234567" },
    { url: "file:///srv/lib.git", branch: "dev", path: "lib", commit: "fedcba9876543210fedcba9876543210fedcba98" },
  ],
  config_hash: "c0ffee",
  image_hash: "1mage",
  memory_snapshot: false,
  vcpus: 2,
  memory_mib: 2048,
  origin: "build",
  clones: 3,
  created_at: minutesAgo(12),
  finished_at: minutesAgo(10),
  ...over,
});

function render(status: PrebuildStatus, extra: Record<string, (url: URL, body: unknown) => unknown> = {}, ws = workspace()) {
  const calls = stubApi({ "GET /workspaces/ws_1/prebuilds": () => status, ...extra });
  renderInApp(<PrebuildCard workspace={ws} />);
  return calls;
}

describe("PrebuildCard", () => {
  beforeEach(() => {
    localStorage.clear();
    saveToken("atl_test");
  });
  afterEach(() => vi.unstubAllGlobals());

  it("offers a first build when the workspace has none, and starts it", async () => {
    const calls = render({ current: null, building: null, history: [] }, {
      "POST /workspaces/ws_1/prebuilds": () => prebuild({ id: "pb_new", state: "building", finished_at: null }),
    });
    await screen.findByText("No prebuild yet.");
    expect(screen.getByTestId("prebuild-card").dataset.health).toBe("none");
    expect((screen.getByRole("button", { name: "Check now" }) as HTMLButtonElement).disabled).toBe(true);
    await userEvent.click(screen.getByRole("button", { name: "Build prebuild" }));
    await waitFor(() => expect(calls.some((c) => c.method === "POST" && c.path === "/workspaces/ws_1/prebuilds")).toBe(true));
    const post = calls.find((c) => c.method === "POST")!;
    expect(post.body).toBeUndefined();
  });

  it("follows the log of a running build from the offset it read last", async () => {
    const building = prebuild({ id: "pb_b1", state: "building", finished_at: null, commits: [] });
    const log = "$ git clone file:///srv/shop.git shop\n$ npm ci\nadded 812 packages\n";
    const offsets: string[] = [];
    render(
      { current: null, building, history: [building] },
      {
        "GET /prebuilds/pb_b1/logs": (url) => {
          const offset = Number(url.searchParams.get("offset"));
          offsets.push(String(offset));
          // The log grows by one line between reads.
          const upto = offset === 0 ? log.indexOf("$ npm ci") : log.length;
          return { offset, next_offset: upto, size: upto, data: log.slice(offset, upto) };
        },
      },
    );
    const card = await screen.findByTestId("prebuild-card");
    await waitFor(() => expect(card.dataset.health).toBe("building"));
    expect((within(card).getByRole("button", { name: "Rebuild" }) as HTMLButtonElement).disabled).toBe(true);
    await waitFor(() => expect(screen.getByTestId("prebuild-log").textContent).toContain("git clone"));
    await waitFor(() => expect(screen.getByTestId("prebuild-log").textContent).toContain("added 812 packages"), { timeout: 3000 });
    expect(screen.getByTestId("prebuild-log").textContent).toBe(log);
    expect(offsets.slice(0, 2)).toEqual(["0", String(log.indexOf("$ npm ci"))]);
  });

  it("shows a fresh ready prebuild: short commits per repo, disk-only start, clones, age", async () => {
    render({ current: prebuild({}), building: null, history: [prebuild({})] });
    const card = await screen.findByTestId("prebuild-card");
    await waitFor(() => expect(card.dataset.health).toBe("ready"));
    expect(within(card).getByText("0123456").getAttribute("title")).toBe("0123456789abcdef0123456789abcdef01234567");
    expect(within(card).getByText("fedcba9").isConnected).toBe(true);
    expect(within(card).getByText("shop").isConnected).toBe(true);
    expect(screen.getByTestId("prebuild-start").textContent).toMatch(/^disk only/);
    expect(screen.getByTestId("prebuild-clones").textContent).toBe("3");
    expect(within(card).getByText(/10m ago/).isConnected).toBe(true);
    expect(screen.queryByTestId("prebuild-stale")).toBeNull();
    expect(screen.queryByTestId("prebuild-failure")).toBeNull();
    expect((within(card).getByRole("button", { name: "Rebuild" }) as HTMLButtonElement).disabled).toBe(false);
  });

  it("shows why a ready prebuild is stale, checks now, and turns auto-rebuild off", async () => {
    const stale = prebuild({ stale: "shop: main moved to 89abcdef", memory_snapshot: true });
    const calls = render(
      { current: stale, building: null, history: [stale] },
      {
        "POST /workspaces/ws_1/prebuilds/check": () => ({ current: stale, building: null, history: [stale] }),
        "PATCH /workspaces/ws_1": (_u, body) => ({ ...workspace(), prebuild: (body as { prebuild: { auto_rebuild: boolean } }).prebuild }),
      },
    );
    const card = await screen.findByTestId("prebuild-card");
    await waitFor(() => expect(card.dataset.health).toBe("stale"));
    expect(screen.getByTestId("prebuild-stale").textContent).toContain("shop: main moved to 89abcdef");
    expect(screen.getByTestId("prebuild-stale").textContent).toContain("a rebuild starts by itself");
    expect(screen.getByTestId("prebuild-start").textContent).toMatch(/^memory snapshot/);
    await userEvent.click(screen.getByRole("button", { name: "Check now" }));
    await waitFor(() => expect(calls.some((c) => c.method === "POST" && c.path.endsWith("/check"))).toBe(true));
    const toggle = screen.getByRole("switch", { name: /Rebuild by itself/ });
    expect((toggle as HTMLInputElement).checked).toBe(true);
    await userEvent.click(toggle);
    await waitFor(() => expect(calls.find((c) => c.method === "PATCH")?.body).toEqual({ prebuild: { auto_rebuild: false } }));
  });

  it("shows the error and the log tail of a failed build, and that the previous one still serves", async () => {
    const old = prebuild({});
    const failed = prebuild({
      id: "pb_fail",
      state: "failed",
      error: "init command `npm ci` exited with 1",
      log_tail: "npm ERR! code ENOTFOUND\nnpm ERR! network request failed\n",
      finished_at: minutesAgo(1),
    });
    render({ current: old, building: null, history: [failed, old] });
    const card = await screen.findByTestId("prebuild-card");
    await waitFor(() => expect(card.dataset.health).toBe("failed"));
    const failure = screen.getByTestId("prebuild-failure");
    expect(failure.textContent).toContain("init command `npm ci` exited with 1");
    expect(failure.textContent).toContain("The previous prebuild keeps serving.");
    expect(screen.getByTestId("prebuild-log-tail").textContent).toContain("npm ERR! network request failed");
    expect((within(card).getByRole("button", { name: "Rebuild" }) as HTMLButtonElement).disabled).toBe(false);
  });
});

describe("summarize", () => {
  it("ranks a build in progress over a failure, a failure over staleness", () => {
    const ready = prebuild({ stale: "moved" });
    const failed = prebuild({ id: "pb_f", state: "failed" });
    const building = prebuild({ id: "pb_b", state: "building" });
    expect(summarize({ current: ready, building, history: [building, failed, ready] }).health).toBe("building");
    expect(summarize({ current: ready, building: null, history: [failed, ready] }).health).toBe("failed");
    expect(summarize({ current: ready, building: null, history: [ready] }).health).toBe("stale");
    // a failure followed by a successful build is history, not the state
    const fresh = prebuild({ id: "pb_2" });
    expect(summarize({ current: fresh, building: null, history: [fresh, failed] }).health).toBe("ready");
  });
});
