import { lazy, Suspense, useEffect, useRef, useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link, useNavigate } from "@tanstack/react-router";
import { api, route } from "../api/client";
import { fetchLogs, useDir, usePreviews, useSandbox, useSandboxes, useServices, useSystem, useTasks, useWorkspaces } from "../api/queries";
import type { LogChunk, Prebuild, PreviewLink, Sandbox, StartPrebuild } from "../api/types";
import { ago, Badge, Empty, ErrorNote, Loading, Section } from "../ui/kit";

const Terminal = lazy(() => import("../components/Terminal"));

/** Where a sandbox came from: a clone of a prebuild (linked to its workspace), or a cold boot. */
export function Origin({ sb }: { sb: Sandbox }) {
  if (!sb.prebuild_id) return <span className="muted">cold</span>;
  const label = `prebuild ${sb.prebuild_id}`;
  return sb.workspace_id ? (
    <Link to="/workspaces/$workspaceId" params={{ workspaceId: sb.workspace_id }} data-testid="sandbox-origin">
      {label}
    </Link>
  ) : (
    <span data-testid="sandbox-origin">{label}</span>
  );
}

/** Asks the manager to sign this browser in to a sandbox port's own origin (a one-minute
 *  hand-off: a preview origin never sees the API token). */
export async function previewSignIn(sandboxId: string, port: number, path = "/"): Promise<string> {
  const link = await api<PreviewLink>(
    route("post", "/sandboxes/{id}/ports/{port}/link", { path: { id: sandboxId, port }, query: { path } }),
    { method: "POST" },
  );
  return link.open_url;
}

/** Opens a sandbox port on its own origin in a new tab. */
export function PreviewButton({ sandboxId, port }: { sandboxId: string; port: number }) {
  const [error, setError] = useState<string | null>(null);
  const open = async () => {
    setError(null);
    // Opened before the request so that the browser sees it as the click's own window.
    const tab = window.open("", "_blank");
    try {
      const url = await previewSignIn(sandboxId, port);
      if (tab) tab.location.href = url;
      else window.location.href = url;
    } catch (e) {
      tab?.close();
      setError(e instanceof Error ? e.message : String(e));
    }
  };
  return (
    <>
      <button className="outline small" onClick={open} aria-label={`Open port ${port}`}>
        Open
      </button>
      {error && <small className="error"> {error}</small>}
    </>
  );
}

/** Opens VS Code in the browser (the image's code-server, started on demand) in a new
 *  tab, signed in to its preview origin. */
export function EditorButton({ sandboxId }: { sandboxId: string }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const open = async () => {
    setError(null);
    setBusy(true);
    const tab = window.open("", "_blank");
    try {
      const link = await api<PreviewLink>(route("post", "/sandboxes/{id}/editor", { path: { id: sandboxId } }), { method: "POST" });
      if (tab) tab.location.href = link.open_url;
      else window.location.href = link.open_url;
    } catch (e) {
      tab?.close();
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button className="outline" onClick={open} aria-busy={busy} disabled={busy}>
        Open editor
      </button>
      {error && <small className="error"> {error}</small>}
    </>
  );
}

/** The sandbox's dev servers: where each opens and whether its service runs. */
export function Previews({ sandboxId, running }: { sandboxId: string; running: boolean }) {
  const previews = usePreviews(sandboxId);
  if (!previews.data?.length) return null;
  return (
    <ul className="plain previews" aria-label="Dev servers">
      {previews.data.map((p) => (
        <li key={p.name}>
          <strong>{p.name}</strong> <small className="muted">:{p.port}</small>{" "}
          <Badge value={p.service ?? "not started"} />
          {p.public && <small className="muted"> public</small>}{" "}
          <code className="preview-url">{p.url}</code> {running && <PreviewButton sandboxId={sandboxId} port={p.port} />}
        </li>
      ))}
    </ul>
  );
}

/** `/open?sandbox=…&port=…&path=…`: where a preview origin sends a browser that is not
 *  signed in to it yet; once this dashboard has its token, it hands the browser over. */
export function OpenPreview({
  sandbox,
  port,
  path,
  go = (url) => window.location.replace(url),
}: {
  sandbox?: string;
  port?: number;
  path?: string;
  go?: (url: string) => void;
}) {
  const [error, setError] = useState<unknown>(null);
  const started = useRef(false);
  useEffect(() => {
    if (started.current || !sandbox || !port) return;
    started.current = true;
    previewSignIn(sandbox, port, path ?? "/").then(go, setError);
  }, [sandbox, port, path, go]);
  if (!sandbox || !port) return <ErrorNote error="This preview link names no sandbox port." />;
  return error ? (
    <ErrorNote error={error} />
  ) : (
    <p aria-busy="true">
      Opening port {port} of <code>{sandbox}</code>…
    </p>
  );
}

export function Sandboxes() {
  const sandboxes = useSandboxes();
  const workspaces = useWorkspaces();
  const wsName = new Map((workspaces.data ?? []).map((w) => [w.id, w.name]));
  return (
    <>
      <h1>Sandboxes</h1>
      <ErrorNote error={sandboxes.error} />
      {sandboxes.isLoading ? (
        <Loading />
      ) : sandboxes.data?.length ? (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>State</th>
                <th>Workspace</th>
                <th>Origin</th>
                <th>Driver</th>
                <th>Resources</th>
                <th>Since</th>
              </tr>
            </thead>
            <tbody>
              {sandboxes.data.map((s) => (
                <tr key={s.id}>
                  <td>
                    <Link to="/sandboxes/$sandboxId" params={{ sandboxId: s.id }}>
                      {s.name}
                    </Link>
                  </td>
                  <td>
                    <Badge value={s.state} title={s.error ?? undefined} />
                  </td>
                  <td>{s.workspace_id ? wsName.get(s.workspace_id) ?? s.workspace_id : "—"}</td>
                  <td>
                    <Origin sb={s} />
                  </td>
                  <td>{s.driver}</td>
                  <td>
                    {s.resources.vcpus} vCPU · {s.resources.memory_mib} MiB
                  </td>
                  <td>{ago(s.updated_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <Empty title="No sandboxes.">Each task gets its own sandbox when it runs; they are listed here.</Empty>
      )}
    </>
  );
}

function Files({ sandbox }: { sandbox: string }) {
  const [path, setPath] = useState(".");
  const [file, setFile] = useState<{ path: string; text: string } | null>(null);
  const [err, setErr] = useState<unknown>(null);
  const dir = useDir(sandbox, path, true);
  const join = (name: string) => (path === "." ? name : `${path.replace(/\/$/, "")}/${name}`);
  const up = path === "." || path === "/" ? null : path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  const open = async (p: string) => {
    setErr(null);
    try {
      const text = await api<string>(route("get", "/sandboxes/{id}/files/content", { path: { id: sandbox }, query: { path: p } }), { text: true });
      setFile({ path: p, text: text.length > 200_000 ? text.slice(0, 200_000) + "\n… (truncated)" : text });
    } catch (e) {
      setErr(e);
    }
  };
  return (
    <div className="files-browser">
      <p>
        <code>{dir.data?.path ?? path}</code>
      </p>
      <ul className="plain">
        {up !== null && (
          <li>
            <a href="#" onClick={(e) => (e.preventDefault(), setPath(up))}>
              ..
            </a>
          </li>
        )}
        {dir.data?.entries.map((f) => (
          <li key={f.name}>
            <a
              href="#"
              onClick={(e) => {
                e.preventDefault();
                if (f.kind === "dir") setPath(join(f.name));
                else void open(join(f.name));
              }}
            >
              {f.name}
              {f.kind === "dir" ? "/" : ""}
            </a>{" "}
            {f.kind !== "dir" && <small className="muted">{f.size} B</small>}
          </li>
        ))}
      </ul>
      <ErrorNote error={dir.error ?? err} />
      {file && (
        <details open>
          <summary>
            <code>{file.path}</code>
          </summary>
          <pre className="file-view">{file.text}</pre>
        </details>
      )}
    </div>
  );
}

function Services({ sandbox }: { sandbox: string }) {
  const services = useServices(sandbox, true);
  const [logs, setLogs] = useState<Record<string, LogChunk & { text: string }>>({});
  const [err, setErr] = useState<unknown>(null);
  const load = async (name: string) => {
    setErr(null);
    try {
      const prev = logs[name];
      const chunk = await fetchLogs(sandbox, name, prev?.next_offset ?? 0);
      setLogs({ ...logs, [name]: { ...chunk, text: ((prev?.text ?? "") + chunk.data).slice(-100_000) } });
    } catch (e) {
      setErr(e);
    }
  };
  if (services.isLoading) return <Loading />;
  if (!services.data?.length) return <p className="muted">No supervised services (dev servers appear here).</p>;
  return (
    <>
      {services.data.map((s) => (
        <details key={s.name}>
          <summary>
            {s.name} <Badge value={String(s.state)} /> <small className="muted">restarts {s.restarts}</small>
          </summary>
          <button className="outline small-button" onClick={() => void load(s.name)}>
            {logs[s.name] ? "Load newer output" : "Show log"}
          </button>
          {logs[s.name] && <pre className="log">{logs[s.name].text || "(empty)"}</pre>}
        </details>
      ))}
      <ErrorNote error={services.error ?? err} />
    </>
  );
}

function Controls({ sb }: { sb: Sandbox }) {
  const qc = useQueryClient();
  const navigate = useNavigate();
  const system = useSystem();
  const act = useMutation({
    mutationFn: (what: "start" | "stop" | "pause" | "resume" | "destroy"): Promise<unknown> =>
      what === "destroy"
        ? api<void>(`/sandboxes/${encodeURIComponent(sb.id)}`, { method: "DELETE" })
        : api<Sandbox>(`/sandboxes/${encodeURIComponent(sb.id)}/${what}`, { method: "POST" }),
    onSuccess: (_r, what) => {
      void qc.invalidateQueries({ queryKey: ["sandbox", sb.id] });
      void qc.invalidateQueries({ queryKey: ["sandboxes"] });
      if (what === "destroy") void navigate({ to: "/sandboxes" });
    },
  });
  const s = sb.state;
  return (
    <div className="buttons">
      {(s === "stopped" || s === "error") && <button onClick={() => act.mutate("start")}>Start</button>}
      {s === "running" && (
        <button className="outline" onClick={() => act.mutate("stop")}>
          Stop
        </button>
      )}
      {s === "running" && system.data?.can_pause && (
        <button className="outline" onClick={() => act.mutate("pause")}>
          Pause
        </button>
      )}
      {s === "paused" && <button onClick={() => act.mutate("resume")}>Resume</button>}
      {s !== "destroyed" && s !== "destroying" && (
        <button
          className="secondary outline"
          onClick={() => confirm(`Destroy ${sb.name}? Everything in it is removed.`) && act.mutate("destroy")}
        >
          Destroy
        </button>
      )}
      <ErrorNote error={act.error} />
    </div>
  );
}

/** Captures a running sandbox of a workspace as that workspace's prebuild (the sandbox ends stopped). */
function PromoteButton({ sb, workspaceId }: { sb: Sandbox; workspaceId: string }) {
  const qc = useQueryClient();
  const navigate = useNavigate();
  const promote = useMutation({
    mutationFn: () =>
      api<Prebuild>(route("post", "/workspaces/{workspace}/prebuilds", { path: { workspace: workspaceId } }), {
        method: "POST",
        body: { from_sandbox: sb.id } satisfies StartPrebuild,
      }),
    onSuccess: () => {
      void qc.invalidateQueries({ queryKey: ["prebuilds", workspaceId] });
      void qc.invalidateQueries({ queryKey: ["sandbox", sb.id] });
      void navigate({ to: "/workspaces/$workspaceId", params: { workspaceId } });
    },
  });
  return (
    <>
      <button
        className="outline"
        disabled={promote.isPending}
        aria-busy={promote.isPending || undefined}
        onClick={() =>
          confirm(
            `Make ${sb.name} the workspace's prebuild? It is stopped and captured as it is now; new sandboxes of the workspace start as copies of it.`,
          ) && promote.mutate()
        }
      >
        Make this the workspace's prebuild
      </button>
      <ErrorNote error={promote.error} />
    </>
  );
}

export function SandboxDetail({ sandboxId }: { sandboxId: string }) {
  const sandbox = useSandbox(sandboxId);
  const tasks = useTasks();
  const workspaces = useWorkspaces();
  const [tab, setTab] = useState<"terminal" | "files" | "services">("terminal");
  const sb = sandbox.data;
  if (sandbox.isLoading) return <Loading />;
  if (!sb) return <ErrorNote error={sandbox.error ?? "no such sandbox"} />;
  const task = tasks.data?.find((t) => t.sandbox_id === sb.id);
  const ws = workspaces.data?.find((w) => w.id === sb.workspace_id);
  const running = sb.state === "running";
  return (
    <>
      <p className="crumbs">
        <Link to="/sandboxes">Sandboxes</Link> / <code>{sb.id}</code>
      </p>
      <h1>{sb.name}</h1>
      <div className="meta">
        <Badge value={sb.state} /> <small className="muted">
          {sb.driver} · {sb.image} · {sb.resources.vcpus} vCPU · {sb.resources.memory_mib} MiB · {sb.resources.disk_mib} MiB disk ·
          since {ago(sb.updated_at)} · origin <Origin sb={sb} />
        </small>
      </div>
      {sb.error && <p className="error">{sb.error}</p>}
      {task && (
        <p>
          Task: <Link to="/tasks/$taskId" params={{ taskId: task.id }}>{task.title}</Link>
        </p>
      )}
      {ws && ws.dev_commands.length > 0 && <Previews sandboxId={sb.id} running={running} />}
      <Controls sb={sb} />
      {running && (
        <div className="buttons">
          {sb.workspace_id && <PromoteButton sb={sb} workspaceId={sb.workspace_id} />}
          <EditorButton sandboxId={sb.id} />
        </div>
      )}
      {running ? (
        <>
          <nav className="tabs" role="tablist">
            {(["terminal", "files", "services"] as const).map((t) => (
              <button key={t} role="tab" aria-selected={tab === t} className={tab === t ? "" : "outline"} onClick={() => setTab(t)}>
                {t[0].toUpperCase() + t.slice(1)}
              </button>
            ))}
          </nav>
          {tab === "terminal" && (
            <Suspense fallback={<Loading />}>
              <Terminal sandbox={sb.id} />
            </Suspense>
          )}
          {tab === "files" && <Files sandbox={sb.id} />}
          {tab === "services" && (
            <Section title="Services">
              <Services sandbox={sb.id} />
            </Section>
          )}
        </>
      ) : (
        <Empty title={`The sandbox is ${sb.state}.`}>Start it to open a terminal, browse its files and see its services.</Empty>
      )}
    </>
  );
}
