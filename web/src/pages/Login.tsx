import { useState } from "react";
import { api, ApiError } from "../api/client";
import type { SystemInfo } from "../api/types";

/** Sign in with the manager's API token (it is checked before it is kept). */
export function Login({ onToken }: { onToken: (t: string) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return setError("Paste the token first.");
    setBusy(true);
    setError("");
    try {
      await api<SystemInfo>("/system", { token: t });
      onToken(t);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? "That token was refused." : `Cannot reach the manager: ${String(err)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="container login">
      <article>
        <h1>Atelier</h1>
        <form onSubmit={submit}>
          <label>
            API token
            <input
              type="password"
              name="token"
              autoComplete="current-password"
              placeholder="atl_…"
              value={token}
              onChange={(e) => setToken(e.target.value)}
              aria-invalid={error ? true : undefined}
              autoFocus
            />
          </label>
          {error && <p className="error" role="alert">{error}</p>}
          <button type="submit" aria-busy={busy} disabled={busy}>
            Sign in
          </button>
        </form>
        <small className="muted">
          The manager printed the token on its first start; it is also in <code>&lt;data-dir&gt;/admin.token</code>.
          It is kept in this browser only.
        </small>
      </article>
    </main>
  );
}
