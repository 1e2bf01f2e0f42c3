// The API token lives in localStorage only: never in the URL, never in a cookie.
const KEY = "atelier.token";

export function loadToken(): string | null {
  try {
    const t = localStorage.getItem(KEY);
    return t && t.trim() ? t.trim() : null;
  } catch {
    return null;
  }
}

export function saveToken(token: string): void {
  localStorage.setItem(KEY, token.trim());
}

export function clearToken(): void {
  localStorage.removeItem(KEY);
}

/** Drops a token that arrived in the address bar (e.g. pasted by mistake) from history. */
export function scrubTokenFromUrl(loc: Location = window.location, hist: History = window.history): void {
  const url = new URL(loc.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    hist.replaceState(hist.state, "", url.pathname + url.search + url.hash);
  }
}
