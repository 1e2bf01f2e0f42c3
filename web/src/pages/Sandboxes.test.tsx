import { screen } from "@testing-library/react";
import type { Sandbox } from "../api/types";
import { renderInApp } from "../test/render";
import { Origin } from "./Sandboxes";

const sandbox = (over: Partial<Sandbox>): Sandbox => ({
  id: "s1",
  name: "shop",
  state: "running",
  driver: "local",
  resources: { vcpus: 2, memory_mib: 2048, disk_mib: 10240 },
  image: "dev",
  created_at: new Date().toISOString(),
  updated_at: new Date().toISOString(),
  ...over,
});

describe("sandbox origin", () => {
  it("names the prebuild a sandbox was cloned from, linked to its workspace", async () => {
    renderInApp(<Origin sb={sandbox({ prebuild_id: "pb_7", workspace_id: "ws_1" })} />);
    const link = await screen.findByRole("link", { name: "prebuild pb_7" });
    expect(link.getAttribute("href")).toBe("/workspaces/ws_1");
  });

  it("says cold for a sandbox that booted from scratch", async () => {
    renderInApp(<Origin sb={sandbox({ prebuild_id: null, workspace_id: "ws_1" })} />);
    expect((await screen.findByText("cold")).isConnected).toBe(true);
    expect(screen.queryByRole("link")).toBeNull();
  });
});
