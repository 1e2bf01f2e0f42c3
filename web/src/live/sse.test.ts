import { LiveEvents } from "./sse";
import { InvalidationBatcher, keysFor } from "./invalidate";

/** A fetch that serves scripted SSE bodies, one per call, recording the request headers. */
function scriptedFetch(bodies: string[][]) {
  const calls: Record<string, string>[] = [];
  const impl = (async (_url: string, init?: RequestInit) => {
    calls.push({ ...(init?.headers as Record<string, string>) });
    const chunks = bodies.shift();
    if (!chunks) return new Promise<Response>(() => {}); // hang: the test is over
    const enc = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const ch of chunks) c.enqueue(enc.encode(ch));
        c.close(); // the connection drops after these events
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  }) as unknown as typeof fetch;
  return { impl, calls };
}

const ev = (id: number, type: string, extra = "") =>
  `id: ${id}\nevent: ${type}\ndata: {"id":${id},"type":"${type}"${extra}}\n\n`;

describe("live events", () => {
  it("sends the token, and after a drop resumes with Last-Event-ID of the last event seen", async () => {
    const { impl, calls } = scriptedFetch([
      [ev(7, "task_status", ',"task_id":"t1","to":"running"'), ev(8, "attention_asked", ',"task_id":"t1"').slice(0, 20), ev(8, "attention_asked", ',"task_id":"t1"').slice(20)],
      [ev(9, "task_status", ',"task_id":"t1","to":"review"')],
    ]);
    const seen: string[] = [];
    const opens: boolean[] = [];
    const live = new LiveEvents({
      url: "/api/v1/events",
      token: () => "atl_t",
      fetchImpl: impl,
      backoffMs: () => 1,
      onOpen: (resumed) => opens.push(resumed),
      onEvent: (name, data, id) => seen.push(`${id}:${name}:${(data as { type: string }).type}`),
    });
    void live.start();
    await vi.waitFor(() => expect(calls.length).toBe(3));
    live.stop();
    expect(seen).toEqual(["7:task_status:task_status", "8:attention_asked:attention_asked", "9:task_status:task_status"]);
    expect(calls[0].Authorization).toBe("Bearer atl_t");
    expect(calls[0]["Last-Event-ID"]).toBeUndefined();
    expect(calls[1]["Last-Event-ID"]).toBe("8");
    expect(calls[2]["Last-Event-ID"]).toBe("9");
    expect(opens).toEqual([false, true]);
  });

  it("stops and reports when the token is refused", async () => {
    const statuses: string[] = [];
    const impl = (async () => new Response("{}", { status: 401 })) as unknown as typeof fetch;
    const live = new LiveEvents({ url: "/e", token: () => "bad", fetchImpl: impl, onEvent: () => {}, onStatus: (s) => statuses.push(s) });
    await live.start();
    expect(statuses).toEqual(["connecting", "unauthorized"]);
  });

  it("maps events to the queries they make stale and batches a burst into one flush", async () => {
    expect(keysFor({ id: 1, at: "", type: "attention_asked", task_id: "t1", interaction_id: "q", title: "?" })).toContainEqual(["attention"]);
    expect(keysFor({ id: 2, at: "", type: "sandbox_state", sandbox_id: "s1", to: "running" })).toContainEqual(["sandbox", "s1"]);
    const prebuildKeys = keysFor({ id: 3, at: "", type: "prebuild_state", prebuild_id: "pb1", workspace_id: "ws1", from: "building", to: "ready" });
    expect(prebuildKeys).toContainEqual(["prebuilds", "ws1"]);
    expect(prebuildKeys).toContainEqual(["prebuild-log", "pb1"]);
    const flushes: unknown[][] = [];
    const b = new InvalidationBatcher((k) => flushes.push(k), 5);
    b.add([["tasks"], ["task", "t1"]]);
    b.add([["tasks"]]);
    await new Promise((r) => setTimeout(r, 20));
    expect(flushes).toEqual([[["tasks"], ["task", "t1"]]]);
  });
});
