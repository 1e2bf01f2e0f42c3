import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import type { Sandbox } from "../api/types";
import { saveToken } from "../api/token";
import { renderInApp, stubApi } from "../test/render";
import { EditorButton, OpenPreview, Origin, PreviewButton, Previews } from "./Sandboxes";

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

describe("dev server preview", () => {
  it("asks for a preview link and opens it in the tab it opened on the click", async () => {
    saveToken("atl_test");
    const calls = stubApi({
      "POST /sandboxes/s1/ports/5173/link": () => ({
        url: "/p/abc/",
        preview_url: "http://5173-s1.localhost:4000/",
        open_url: "http://5173-s1.localhost:4000/__atelier/auth?grant=h.x&next=%2F",
        expires_at: "",
      }),
    });
    const tab = { location: { href: "" }, close: vi.fn() };
    const open = vi.fn(() => tab);
    vi.stubGlobal("open", open);
    renderInApp(<PreviewButton sandboxId="s1" port={5173} />);
    await userEvent.click(await screen.findByRole("button", { name: "Open port 5173" }));
    await waitFor(() => expect(tab.location.href).toBe("http://5173-s1.localhost:4000/__atelier/auth?grant=h.x&next=%2F"));
    expect(open).toHaveBeenCalledWith("", "_blank");
    expect(calls.map((c) => `${c.method} ${c.path}`)).toContain("POST /sandboxes/s1/ports/5173/link");
  });

  it("closes the empty tab and says why when the link is refused", async () => {
    saveToken("atl_test");
    stubApi({});
    const tab = { location: { href: "" }, close: vi.fn() };
    vi.stubGlobal("open", vi.fn(() => tab));
    renderInApp(<PreviewButton sandboxId="s1" port={3000} />);
    await userEvent.click(await screen.findByRole("button", { name: "Open port 3000" }));
    await waitFor(() => expect(tab.close).toHaveBeenCalled());
    expect(tab.location.href).toBe("");
  });
});

describe("preview origins", () => {
  it("lists each dev server with its origin and its service's state", async () => {
    saveToken("atl_test");
    stubApi({
      "GET /sandboxes/s1/previews": () => [
        { name: "web", port: 5173, command: "npm run dev", public: false, url: "http://5173-s1.localhost:4000/", service: "running" },
        { name: "docs", port: 8000, command: "mkdocs serve", public: true, url: "http://8000-s1.localhost:4000/", service: null },
      ],
    });
    renderInApp(<Previews sandboxId="s1" running={true} />);
    expect(await screen.findByText("http://5173-s1.localhost:4000/")).toBeTruthy();
    expect(screen.getByText("running")).toBeTruthy();
    expect(screen.getByText("not started")).toBeTruthy();
    expect(screen.getByText("public")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Open port 8000" })).toBeTruthy();
  });

  it("hands a browser sent by a preview origin over to it, landing where it was going", async () => {
    saveToken("atl_test");
    const calls = stubApi({
      "POST /sandboxes/s1/ports/5173/link": () => ({ url: "/p/x/", preview_url: "", open_url: "http://5173-s1.localhost:4000/__atelier/auth?grant=h.y", expires_at: "" }),
    });
    const go = vi.fn();
    renderInApp(<OpenPreview sandbox="s1" port={5173} path="/deep?x=1" go={go} />);
    await waitFor(() => expect(go).toHaveBeenCalledWith("http://5173-s1.localhost:4000/__atelier/auth?grant=h.y"));
    const call = calls.find((c) => c.path === "/sandboxes/s1/ports/5173/link");
    expect(new URLSearchParams(call?.query).get("path")).toBe("/deep?x=1");
  });

  it("says what is wrong when the link names no port", async () => {
    saveToken("atl_test");
    stubApi({});
    renderInApp(<OpenPreview sandbox="s1" go={vi.fn()} />);
    expect(await screen.findByText(/names no sandbox port/)).toBeTruthy();
  });
});

describe("editor", () => {
  it("starts the editor and opens its preview origin in the tab it opened", async () => {
    saveToken("atl_test");
    const calls = stubApi({
      "POST /sandboxes/s1/editor": () => ({ url: "/p/e/", preview_url: "", open_url: "http://13337-s1.localhost:4000/__atelier/auth?grant=h.e", expires_at: "" }),
    });
    const tab = { location: { href: "" }, close: vi.fn() };
    vi.stubGlobal("open", vi.fn(() => tab));
    renderInApp(<EditorButton sandboxId="s1" />);
    await userEvent.click(await screen.findByRole("button", { name: "Open editor" }));
    await waitFor(() => expect(tab.location.href).toBe("http://13337-s1.localhost:4000/__atelier/auth?grant=h.e"));
    expect(calls.map((c) => `${c.method} ${c.path}`)).toContain("POST /sandboxes/s1/editor");
  });

  it("says why when the editor cannot start, and closes the empty tab", async () => {
    saveToken("atl_test");
    stubApi({});
    const tab = { location: { href: "" }, close: vi.fn() };
    vi.stubGlobal("open", vi.fn(() => tab));
    renderInApp(<EditorButton sandboxId="s1" />);
    await userEvent.click(await screen.findByRole("button", { name: "Open editor" }));
    await waitFor(() => expect(tab.close).toHaveBeenCalled());
    expect(tab.location.href).toBe("");
    expect(await screen.findByText(/no stub for POST \/sandboxes\/s1\/editor/)).toBeTruthy();
  });
});
