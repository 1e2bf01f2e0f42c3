// A fetch-based EventSource: browsers' EventSource cannot send the Authorization header.
// It resumes with Last-Event-ID after a drop so no event is missed or repeated.
import { createParser, type EventSourceMessage } from "eventsource-parser";

export type LiveStatus = "connecting" | "open" | "retrying" | "unauthorized" | "stopped";

export interface LiveOptions {
  url: string;
  token: () => string | null;
  onEvent: (name: string, data: unknown, id: string | undefined) => void;
  /** A connection opened; `resumed` is false when events may have been missed (first open). */
  onOpen?: (resumed: boolean) => void;
  onStatus?: (s: LiveStatus) => void;
  fetchImpl?: typeof fetch;
  /** Delay before reconnect attempt `n` (1-based). */
  backoffMs?: (attempt: number) => number;
}

const defaultBackoff = (n: number) => Math.min(30_000, 500 * 2 ** Math.min(n - 1, 6));

export class LiveEvents {
  lastEventId: string | undefined;
  private abort: AbortController | null = null;
  private stopped = false;
  private wake: (() => void) | null = null;

  constructor(private opts: LiveOptions) {}

  start(): Promise<void> {
    this.stopped = false;
    return this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
    this.wake?.();
    this.opts.onStatus?.("stopped");
  }

  /** Skip the backoff wait (e.g. when the page becomes visible or the network returns). */
  retryNow(): void {
    this.wake?.();
  }

  private async loop(): Promise<void> {
    const doFetch = this.opts.fetchImpl ?? fetch.bind(globalThis);
    const backoff = this.opts.backoffMs ?? defaultBackoff;
    let attempt = 0;
    while (!this.stopped) {
      const token = this.opts.token();
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      if (token) headers.Authorization = `Bearer ${token}`;
      if (this.lastEventId !== undefined) headers["Last-Event-ID"] = this.lastEventId;
      this.abort = new AbortController();
      this.opts.onStatus?.("connecting");
      try {
        const res = await doFetch(this.opts.url, { headers, signal: this.abort.signal, cache: "no-store" });
        if (res.status === 401) {
          this.opts.onStatus?.("unauthorized");
          return;
        }
        if (!res.ok || !res.body) throw new Error(`event stream answered ${res.status}`);
        this.opts.onStatus?.("open");
        this.opts.onOpen?.(this.lastEventId !== undefined);
        attempt = 0;
        await this.read(res.body);
      } catch {
        /* dropped: fall through to the reconnect */
      }
      if (this.stopped) return;
      attempt += 1;
      this.opts.onStatus?.("retrying");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, backoff(attempt));
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const parser = createParser({
      onEvent: (msg: EventSourceMessage) => {
        if (msg.id) this.lastEventId = msg.id;
        let data: unknown = msg.data;
        try {
          data = JSON.parse(msg.data);
        } catch {
          /* keep the text */
        }
        this.opts.onEvent(msg.event ?? "message", data, msg.id);
      },
    });
    const reader = body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      parser.feed(decoder.decode(value, { stream: true }));
    }
  }
}
