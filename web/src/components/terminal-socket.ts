// The terminal WebSocket: bearer token in the subprotocol list (never in the URL), binary
// frames for bytes, JSON text frames for control, and reattach by session id.
export type TerminalControl = { type: "session"; id: string } | { type: "exit"; code: number };

export function terminalUrl(loc: { protocol: string; host: string }, sandbox: string, cols: number, rows: number, session?: string): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ cols: String(cols), rows: String(rows) });
  if (session) q.set("session", session);
  return `${scheme}//${loc.host}/api/v1/sandboxes/${encodeURIComponent(sandbox)}/terminal?${q}`;
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
