import { clearToken, loadToken, saveToken, scrubTokenFromUrl } from "./token";
import { authHeaders } from "./client";

describe("token storage", () => {
  beforeEach(() => localStorage.clear());

  it("keeps the token in localStorage, trimmed, and forgets it on sign-out", () => {
    expect(loadToken()).toBeNull();
    saveToken("  atl_abc \n");
    expect(localStorage.getItem("atelier.token")).toBe("atl_abc");
    expect(loadToken()).toBe("atl_abc");
    expect(authHeaders()).toEqual({ Authorization: "Bearer atl_abc" });
    clearToken();
    expect(loadToken()).toBeNull();
    expect(authHeaders()).toEqual({});
  });

  it("treats a blank stored value as no token", () => {
    localStorage.setItem("atelier.token", "   ");
    expect(loadToken()).toBeNull();
  });

  it("removes a token pasted into the address bar from history", () => {
    const replaced: string[] = [];
    const loc = { href: "http://127.0.0.1:4000/tasks?token=atl_secret&workspace=w1#x" } as Location;
    const hist = { state: null, replaceState: (_s: unknown, _t: string, url: string) => replaced.push(url) } as unknown as History;
    scrubTokenFromUrl(loc, hist);
    expect(replaced).toEqual(["/tasks?workspace=w1#x"]);
    scrubTokenFromUrl({ href: "http://127.0.0.1:4000/tasks" } as Location, hist);
    expect(replaced).toHaveLength(1);
  });
});
