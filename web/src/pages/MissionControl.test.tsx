import { screen, waitFor } from "@testing-library/react";
import type { Prebuild, PrebuildStatus, Workspace } from "../api/types";
import { saveToken } from "../api/token";
import { renderInApp, stubApi } from "../test/render";
import { PrebuildNotices } from "./MissionControl";

const ws = (id: string, name: string) => ({ id, name }) as Workspace;
const pb = (over: Partial<Prebuild>): Prebuild => ({
  id: "pb_1",
  workspace_id: "w",
  state: "ready",
  driver: "local",
  commits: [],
  config_hash: "",
  image_hash: "",
  memory_snapshot: false,
  vcpus: 1,
  memory_mib: 512,
  origin: "build",
  clones: 0,
  created_at: new Date().toISOString(),
  ...over,
});
const status = (current: Prebuild | null, history: Prebuild[] = current ? [current] : []): PrebuildStatus => ({
  current,
  building: history.find((p) => p.state === "building") ?? null,
  history,
});

describe("PrebuildNotices", () => {
  beforeEach(() => {
    localStorage.clear();
    saveToken("atl_test");
  });
  afterEach(() => vi.unstubAllGlobals());

  it("lists the workspaces whose prebuild is building, failed or stale, and only those", async () => {
    const calls = stubApi({
      "GET /workspaces/w1/prebuilds": () => status(pb({ id: "pb_fresh" })),
      "GET /workspaces/w2/prebuilds": () => status(pb({ stale: "app: main moved" })),
      "GET /workspaces/w3/prebuilds": () => status(null, [pb({ state: "failed", error: "init command failed" })]),
      "GET /workspaces/w4/prebuilds": () => status(null, [pb({ state: "building" })]),
      "GET /workspaces/w5/prebuilds": () => status(null),
    });
    renderInApp(<PrebuildNotices workspaces={[ws("w1", "fresh"), ws("w2", "moved"), ws("w3", "broken"), ws("w4", "busy"), ws("w5", "never")]} />);
    const list = await screen.findByTestId("prebuild-notices");
    await waitFor(() => expect(list.querySelectorAll("li")).toHaveLength(3));
    const text = list.textContent ?? "";
    expect(text).toContain("moved");
    expect(text).toContain("app: main moved");
    expect(text).toContain("broken");
    expect(text).toContain("init command failed");
    expect(text).toContain("busy");
    expect(text).not.toContain("fresh");
    expect(text).not.toContain("never");
    expect(calls).toHaveLength(5);
  });

  it("shows nothing when every prebuild is fine", async () => {
    const calls = stubApi({ "GET /workspaces/w1/prebuilds": () => status(pb({})) });
    renderInApp(<PrebuildNotices workspaces={[ws("w1", "fresh")]} />);
    await waitFor(() => expect(calls).toHaveLength(1));
    await new Promise((r) => setTimeout(r, 50));
    expect(screen.queryByRole("heading", { name: "Prebuilds" })).toBeNull();
  });
});
