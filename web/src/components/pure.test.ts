import { parseDiff, languageOf } from "./diff";
import { foldTimeline } from "./timeline";
import { DraftError, emptyDraft, toPatch, toSpec } from "./workspace-form";
import { terminalProtocols, terminalUrl, parseControl } from "./terminal-socket";

describe("timeline", () => {
  it("merges text deltas, updates tool calls in place and shows an ask's outcome", () => {
    const at = "2026-01-01T00:00:00Z";
    const items = foldTimeline([
      { seq: 1, at, event: { type: "text", message_id: "m", part_id: "p", delta: "Hel" } },
      { seq: 2, at, event: { type: "tool_call", id: "c1", name: "edit", status: "running" } },
      { seq: 3, at, event: { type: "text", message_id: "m", part_id: "p", delta: "lo" } },
      { seq: 4, at, event: { type: "tool_call", id: "c1", name: "edit", status: "completed", title: "NOTES.md" } },
      { seq: 5, at, event: { type: "interaction_asked", id: "q1", title: "Formal?" } },
      { seq: 6, at, event: { type: "interaction_resolved", id: "q1", outcome: { kind: "answered", answers: [["Formal"]] } } },
      { seq: 7, at, event: { type: "turn_ended", reason: "completed" } },
    ]);
    expect(items.map((i) => i.kind)).toEqual(["text", "tool", "ask", "note"]);
    expect(items[0]).toMatchObject({ text: "Hello" });
    expect(items[1]).toMatchObject({ status: "completed", title: "NOTES.md" });
    expect(items[2]).toMatchObject({ outcome: "answered: Formal" });
  });
});

describe("diff", () => {
  it("splits a git diff into files with counts and classified lines", () => {
    const files = parseDiff(
      [
        "diff --git a/NOTES.md b/NOTES.md",
        "new file mode 100644",
        "--- /dev/null",
        "+++ b/NOTES.md",
        "@@ -0,0 +1,2 @@",
        "+Good day",
        "+to you.",
        "diff --git a/src/a.rs b/src/a.rs",
        "--- a/src/a.rs",
        "+++ b/src/a.rs",
        "@@ -1,2 +1,2 @@",
        " fn main() {",
        "-    old();",
        "+    new();",
        "",
      ].join("\n"),
    );
    expect(files.map((f) => [f.path, f.added, f.removed])).toEqual([
      ["NOTES.md", 2, 0],
      ["src/a.rs", 1, 1],
    ]);
    expect(files[1].lines.map((l) => l.kind)).toEqual(["hunk", "ctx", "del", "add"]);
    expect(languageOf("src/a.rs")).toBe("rust");
    expect(languageOf("Makefile")).toBeNull();
  });
});

describe("workspace form", () => {
  it("builds a create body from the form, dropping empty rows", () => {
    const d = { ...emptyDraft(), name: " app ", init: "npm ci\n\n npm test ", agentConfig: '{"runtime":"fake"}' };
    d.repos = [{ url: "file:///tmp/o.git", branch: "", path: "" }, { url: " ", branch: "main", path: "" }];
    d.dev = [{ name: "web", port: "5173", command: "npm run dev" }];
    d.newSecrets = [{ name: "API_KEY", value: "s3cret" }, { name: "", value: "x" }];
    expect(toSpec(d)).toEqual({
      name: "app",
      repos: [{ url: "file:///tmp/o.git", branch: "main", path: null }],
      init_commands: ["npm ci", "npm test"],
      dev_commands: [{ name: "web", command: "npm run dev", port: 5173 }],
      resources: { vcpus: 2, memory_mib: 2048, disk_mib: 10240 },
      base_image: "dev",
      agent_config: { runtime: "fake" },
      secrets: { env: [{ name: "API_KEY", value: "s3cret" }] },
    });
  });

  it("sends the image additions only when there are some, and clears them on edit", () => {
    const d = { ...emptyDraft(), name: "x", imagePackages: "tree\n\n jq ", imageNpm: "pnpm@9.15.0", imageRun: "echo hi" };
    expect(toSpec(d).image).toEqual({ base: "dev", packages: ["tree", "jq"], npm: ["pnpm@9.15.0"], run: ["echo hi"] });
    expect(toSpec({ ...emptyDraft(), name: "x" }).image).toBeUndefined();
    expect(toPatch({ ...emptyDraft(), name: "x" }).image).toEqual({ base: "dev", packages: [], npm: [], run: [] });
  });

  it("names the field it refuses, like the API does", () => {
    const bad = { ...emptyDraft(), name: "x", agentConfig: "{nope" };
    expect(() => toSpec(bad)).toThrow(DraftError);
    try {
      toSpec({ ...emptyDraft(), name: "x", vcpus: "two" });
    } catch (e) {
      expect((e as DraftError).field).toBe("resources.vcpus");
    }
    expect(toPatch({ ...emptyDraft(), name: "x", removeSecrets: ["OLD"] }).remove_secrets).toEqual(["OLD"]);
  });
});

describe("terminal socket", () => {
  it("puts the token in the subprotocols, never in the URL", () => {
    const url = terminalUrl({ protocol: "https:", host: "h:4000" }, "sb1", 80, 24, "s9");
    expect(url).toBe("wss://h:4000/api/v1/sandboxes/sb1/terminal?cols=80&rows=24&session=s9");
    expect(url).not.toContain("atl_");
    expect(terminalProtocols("atl_x")).toEqual(["atelier.terminal", "bearer.atl_x"]);
    expect(parseControl('{"type":"session","id":"s1"}')).toEqual({ type: "session", id: "s1" });
    expect(parseControl("not json")).toBeNull();
  });
});
