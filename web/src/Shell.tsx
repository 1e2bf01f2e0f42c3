import { useState } from "react";
import { Link, Outlet } from "@tanstack/react-router";
import { useAttention } from "./api/queries";
import { useLiveStatus } from "./live/LiveProvider";
import { applyTheme, loadTheme, nextTheme, type Theme } from "./theme";

const NAV = [
  { to: "/", label: "Home" },
  { to: "/tasks", label: "Tasks" },
  { to: "/sandboxes", label: "Sandboxes" },
  { to: "/workspaces", label: "Workspaces" },
  { to: "/templates", label: "Templates" },
  { to: "/system", label: "System" },
] as const;

export function Shell({ onSignOut }: { onSignOut: () => void }) {
  const live = useLiveStatus();
  const attention = useAttention();
  const [theme, setTheme] = useState<Theme>(loadTheme);
  const pending = attention.data?.length ?? 0;
  return (
    <>
      <header className="topbar">
        <Link to="/" className="brand">
          Atelier
        </Link>
        <nav className="nav" aria-label="Main">
          {NAV.map((n) => (
            <Link key={n.to} to={n.to} activeOptions={{ exact: n.to === "/" }} activeProps={{ "aria-current": "page" }}>
              {n.label}
              {n.to === "/" && pending > 0 && <span className="count" aria-label={`${pending} waiting`}>{pending}</span>}
            </Link>
          ))}
        </nav>
        <span className={`live live-${live}`} title={`live updates: ${live}`} aria-label={`live updates ${live}`} />
        <button
          className="icon"
          aria-label={`Theme: ${theme}`}
          title={`Theme: ${theme}`}
          onClick={() => {
            const t = nextTheme(theme);
            applyTheme(t);
            setTheme(t);
          }}
        >
          {theme === "dark" ? "Dark" : theme === "light" ? "Light" : "Auto"}
        </button>
        <button className="icon" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main className="container page">
        <Outlet />
      </main>
    </>
  );
}
