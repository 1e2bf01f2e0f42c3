// A browser terminal into a sandbox (xterm.js), loaded only on the sandbox page.
import { useEffect, useRef, useState } from "react";
import { Terminal as XTerm } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { loadToken } from "../api/token";
import { parseControl, terminalProtocols, terminalUrl } from "./terminal-socket";

type State = "connecting" | "open" | "reconnecting" | "exited" | "failed";

export default function Terminal({ sandbox }: { sandbox: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [state, setState] = useState<State>("connecting");
  const [note, setNote] = useState("");

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const term = new XTerm({
      fontSize: 13,
      cursorBlink: true,
      convertEol: false,
      theme: { background: "#11151c" },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    const encoder = new TextEncoder();
    let ws: WebSocket | null = null;
    let session: string | undefined;
    let closed = false;
    let attempt = 0;
    let retry: ReturnType<typeof setTimeout> | undefined;

    const connect = () => {
      const token = loadToken();
      if (!token) return;
      ws = new WebSocket(terminalUrl(location, sandbox, term.cols, term.rows, session), terminalProtocols(token));
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        attempt = 0;
        setState("open");
        setNote("");
      };
      ws.onmessage = (m) => {
        if (typeof m.data === "string") {
          const c = parseControl(m.data);
          if (c?.type === "session") session = c.id;
          if (c?.type === "exit") {
            closed = true;
            setState("exited");
            setNote(`shell exited with code ${c.code}`);
          }
        } else {
          term.write(new Uint8Array(m.data as ArrayBuffer));
        }
      };
      ws.onclose = (ev) => {
        if (closed) return;
        if (ev.code === 1008 || ev.code === 4401) {
          setState("failed");
          setNote("the manager refused the terminal");
          return;
        }
        attempt += 1;
        if (attempt > 8) {
          setState("failed");
          setNote("the terminal is not reachable (is the sandbox running?)");
          return;
        }
        setState("reconnecting");
        retry = setTimeout(connect, Math.min(10_000, 400 * 2 ** attempt));
      };
    };
    connect();

    const input = term.onData((d) => ws?.readyState === WebSocket.OPEN && ws.send(encoder.encode(d)));
    const resize = term.onResize(({ cols, rows }) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
    });
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(el);
    term.focus();
    return () => {
      closed = true;
      clearTimeout(retry);
      observer.disconnect();
      input.dispose();
      resize.dispose();
      ws?.close();
      term.dispose();
    };
  }, [sandbox]);

  return (
    <div className="terminal-wrap">
      <div className="terminal" ref={host} data-testid="terminal" data-state={state} />
      {state !== "open" && <small className="muted">{note || state}</small>}
    </div>
  );
}
