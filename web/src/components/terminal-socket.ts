// The terminal WebSocket: bearer token in the subprotocol list (never in the URL), binary
// frames for bytes, JSON text frames for control, and reattach by session id.
import { API, route } from "../api/client";

export type TerminalControl = { type: "session"; id: string } | { type: "exit"; code: number };

export function terminalUrl(loc: { protocol: string; host: string }, sandbox: string, cols: number, rows: number, session?: string): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const path = route("get", "/sandboxes/{id}/terminal", { path: { id: sandbox }, query: { cols, rows, session } });
  return `${scheme}//${loc.host}${API}${path}`;
}

export function terminalProtocols(token: string): string[] {
  return ["atelier.terminal", `bearer.${token}`];
}

export function parseControl(data: string): TerminalControl | null {
  try {
    const m = JSON.parse(data) as TerminalControl;
    if (m && (m.type === "session" || m.type === "exit")) return m;
  } catch {
    /* not a control message */
  }
  return null;
}
