// Dark mode: follow the system unless the person picked a theme.
export type Theme = "auto" | "light" | "dark";
const KEY = "atelier.theme";

export function loadTheme(): Theme {
  const t = localStorage.getItem(KEY);
  return t === "light" || t === "dark" ? t : "auto";
}

export function applyTheme(t: Theme): void {
  if (t === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
  if (t === "auto") localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, t);
}

export const nextTheme = (t: Theme): Theme => (t === "auto" ? "dark" : t === "dark" ? "light" : "auto");
