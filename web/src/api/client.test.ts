import { route } from "./client";

describe("route", () => {
  it("fills path placeholders encoded and puts the declared query parameters in the query string", () => {
    expect(route("get", "/sandboxes/{id}/files", { path: { id: "sb 1/x" }, query: { path: "src/a b.ts" } })).toBe(
      "/sandboxes/sb%201%2Fx/files?path=src%2Fa+b.ts",
    );
    expect(route("get", "/prebuilds/{id}/logs", { path: { id: "pb_1" }, query: { offset: 0 } })).toBe("/prebuilds/pb_1/logs?offset=0");
  });

  it("leaves out unset optional query parameters", () => {
    expect(route("get", "/sandboxes/{id}/terminal", { path: { id: "s" }, query: { cols: 80, rows: 24, session: undefined } })).toBe(
      "/sandboxes/s/terminal?cols=80&rows=24",
    );
    expect(route("get", "/prebuilds/{id}/logs", { path: { id: "p" } })).toBe("/prebuilds/p/logs");
    expect(route("get", "/system", {})).toBe("/system");
  });
});
