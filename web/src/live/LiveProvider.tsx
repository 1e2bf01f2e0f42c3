import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { useRouter } from "@tanstack/react-router";
import { API } from "../api/client";
import { loadToken } from "../api/token";
import type { ApiEvent } from "../api/types";
import { InvalidationBatcher, keysFor } from "./invalidate";
import { LiveEvents, type LiveStatus } from "./sse";
import { notifyAttention } from "./notify";

const LiveContext = createContext<LiveStatus>("connecting");
export const useLiveStatus = () => useContext(LiveContext);

/** Follows /api/v1/events for as long as the app is signed in, and refreshes what changed. */
export function LiveProvider({ children, onUnauthorized }: { children: ReactNode; onUnauthorized: () => void }) {
  const qc = useQueryClient();
  const router = useRouter();
  const [status, setStatus] = useState<LiveStatus>("connecting");
  const unauthorized = useRef(onUnauthorized);
  unauthorized.current = onUnauthorized;

  useEffect(() => {
    const batch = new InvalidationBatcher((keys) => {
      for (const queryKey of keys) void qc.invalidateQueries({ queryKey });
    });
    const live = new LiveEvents({
      url: `${API}/events`,
      token: loadToken,
      onStatus: (s) => {
        setStatus(s);
        if (s === "unauthorized") unauthorized.current();
      },
      // Without a resume point, events between the page's first reads and now are unknown.
      onOpen: (resumed) => {
        if (!resumed) void qc.invalidateQueries();
      },
      onEvent: (_name, data) => {
        const e = data as ApiEvent;
        if (!e || typeof e !== "object" || !("type" in e)) return;
        batch.add(keysFor(e));
        if (e.type === "attention_asked") {
          notifyAttention(e.title, e.task_id, () =>
            void router.navigate({ to: "/tasks/$taskId", params: { taskId: e.task_id } }),
          );
        }
      },
    });
    void live.start();
    const onVisible = () => document.visibilityState === "visible" && live.retryNow();
    const onOnline = () => live.retryNow();
    document.addEventListener("visibilitychange", onVisible);
    window.addEventListener("online", onOnline);
    return () => {
      live.stop();
      document.removeEventListener("visibilitychange", onVisible);
      window.removeEventListener("online", onOnline);
    };
  }, [qc, router]);

  return <LiveContext.Provider value={status}>{children}</LiveContext.Provider>;
}
