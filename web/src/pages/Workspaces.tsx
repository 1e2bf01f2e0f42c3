import { useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link, useNavigate } from "@tanstack/react-router";
import { api, ApiError } from "../api/client";
import { useImages, useWorkspace, useWorkspaces } from "../api/queries";
import type { CreateSandbox, Sandbox, Workspace } from "../api/types";
import { PrebuildCard } from "../components/PrebuildCard";
import { draftOf, DraftError, emptyDraft, toPatch, toSpec, type WorkspaceDraft } from "../components/workspace-form";
import { ago, Empty, ErrorNote, Loading } from "../ui/kit";

export function Workspaces() {
  const workspaces = useWorkspaces();
  return (
    <>
      <div className="section-head">
        <h1>Workspaces</h1>
        <Link to="/workspaces/new" role="button">
          New workspace
        </Link>
      </div>
      <ErrorNote error={workspaces.error} />
      {workspaces.isLoading ? (
        <Loading />
      ) : workspaces.data?.length ? (
        <div className="grid-cards">
          {workspaces.data.map((w) => (
            <article key={w.id} data-testid="workspace-card">
              <Link to="/workspaces/$workspaceId" params={{ workspaceId: w.id }}>
                <strong>{w.name}</strong>
              </Link>
              <p className="muted">
                {w.repos.map((r) => r.url).join(", ") || "no repository"}
                <br />
                {w.resources.vcpus} vCPU · {w.resources.memory_mib} MiB · image {w.image_name} · agent{" "}
                {String((w.agent_config as Record<string, unknown>)?.runtime ?? "default")}
              </p>
              <small className="muted">updated {ago(w.updated_at)}</small>{" "}
              <Link to="/tasks" search={{ workspace: w.id, new: true }}>
                New task →
              </Link>
            </article>
          ))}
        </div>
      ) : (
        <Empty title="No workspaces yet.">
          A workspace describes a project: its git repositories, setup commands, secrets and the coding agent to use.{" "}
          <Link to="/workspaces/new">Create the first one.</Link>
        </Empty>
      )}
    </>
  );
}

function NewSandboxButton({ workspace }: { workspace: Workspace }) {
  const qc = useQueryClient();
  const navigate = useNavigate();
  const create = useMutation({
    mutationFn: () => api<Sandbox>("/sandboxes", { method: "POST", body: { workspace: workspace.id } satisfies CreateSandbox }),
    onSuccess: (s) => {
      qc.setQueryData(["sandbox", s.id], s);
      void qc.invalidateQueries({ queryKey: ["sandboxes"] });
      void navigate({ to: "/sandboxes/$sandboxId", params: { sandboxId: s.id } });
    },
  });
  return (
    <>
      <button className="outline small-button" onClick={() => create.mutate()} disabled={create.isPending} aria-busy={create.isPending || undefined}>
        New sandbox
      </button>
      <ErrorNote error={create.error} />
    </>
  );
}

export function WorkspaceEdit({ workspaceId }: { workspaceId: string }) {
  const ws = useWorkspace(workspaceId);
  if (ws.isLoading) return <Loading />;
  if (!ws.data) return <ErrorNote error={ws.error ?? "no such workspace"} />;
  return (
    <>
      <p className="crumbs">
        <Link to="/workspaces">Workspaces</Link> / {ws.data.name}
      </p>
      <div className="section-head">
        <h1>Edit {ws.data.name}</h1>
        <div className="buttons">
          <NewSandboxButton workspace={ws.data} />
          <Link to="/tasks" search={{ workspace: ws.data.id, new: true }} role="button" className="outline small-button">
            New task
          </Link>
        </div>
      </div>
      <PrebuildCard workspace={ws.data} />
      <h2 className="settings-head">Settings</h2>
      {/* Keyed by the update time: a change saved elsewhere reloads the form. */}
      <WorkspaceForm existing={ws.data} key={ws.data.updated_at} />
    </>
  );
}

export function WorkspaceForm({ existing }: { existing?: Workspace }) {
  const qc = useQueryClient();
  const navigate = useNavigate();
  const images = useImages();
  const [d, setD] = useState<WorkspaceDraft>(() => (existing ? draftOf(existing) : emptyDraft()));
  const [formError, setFormError] = useState<DraftError | null>(null);
  const set = (patch: Partial<WorkspaceDraft>) => setD({ ...d, ...patch });
  const save = useMutation({
    mutationFn: () =>
      existing
        ? api<Workspace>(`/workspaces/${encodeURIComponent(existing.id)}`, { method: "PATCH", body: toPatch(d) })
        : api<Workspace>("/workspaces", { method: "POST", body: toSpec(d) }),
    onSuccess: (w) => {
      void qc.invalidateQueries({ queryKey: ["workspaces"] });
      qc.setQueryData(["workspace", w.id], w);
      void navigate({ to: "/workspaces/$workspaceId", params: { workspaceId: w.id } });
    },
  });
  const remove = useMutation({
    mutationFn: () => api<void>(`/workspaces/${encodeURIComponent(existing!.id)}`, { method: "DELETE" }),
    onSuccess: () => {
      void qc.invalidateQueries({ queryKey: ["workspaces"] });
      void navigate({ to: "/workspaces" });
    },
  });
  const fields = save.error instanceof ApiError ? save.error.fields : formError ? [formError.field] : [];
  const bad = (prefix: string) => (fields.some((f) => f === prefix || f.startsWith(prefix + ".") || f.startsWith(prefix + "[")) ? true : undefined);

  return (
    <>
      {!existing && (
        <>
          <p className="crumbs">
            <Link to="/workspaces">Workspaces</Link> / new
          </p>
          <h1>New workspace</h1>
        </>
      )}
      <form
        className="workspace-form"
        onSubmit={(e) => {
          e.preventDefault();
          try {
            existing ? toPatch(d) : toSpec(d);
            setFormError(null);
            save.mutate();
          } catch (err) {
            if (err instanceof DraftError) setFormError(err);
            else throw err;
          }
        }}
      >
        <label>
          Name
          <input name="name" required value={d.name} onChange={(e) => set({ name: e.target.value })} aria-invalid={bad("name")} placeholder="shop" />
        </label>
        <fieldset>
          <legend>Repositories</legend>
          {d.repos.map((r, i) => (
            <div className="row" key={i}>
              <input
                name={`repo-url-${i}`}
                aria-label="Clone URL"
                placeholder="https://github.com/acme/shop.git"
                value={r.url}
                aria-invalid={bad(`repos[${i}]`) ?? bad("repos")}
                onChange={(e) => set({ repos: d.repos.map((x, j) => (j === i ? { ...x, url: e.target.value } : x)) })}
              />
              <input
                aria-label="Branch"
                placeholder="main"
                value={r.branch}
                onChange={(e) => set({ repos: d.repos.map((x, j) => (j === i ? { ...x, branch: e.target.value } : x)) })}
              />
              <input
                aria-label="Clone path"
                placeholder="path (default: repo name)"
                value={r.path}
                onChange={(e) => set({ repos: d.repos.map((x, j) => (j === i ? { ...x, path: e.target.value } : x)) })}
              />
              <button type="button" className="secondary outline" aria-label="Remove repository" onClick={() => set({ repos: d.repos.filter((_, j) => j !== i) })}>
                ✕
              </button>
            </div>
          ))}
          <button type="button" className="outline small-button" onClick={() => set({ repos: [...d.repos, { url: "", branch: "main", path: "" }] })}>
            Add repository
          </button>
        </fieldset>
        <label>
          Init commands <small className="muted">(one per line, run once when a sandbox is set up)</small>
          <textarea name="init" rows={3} value={d.init} onChange={(e) => set({ init: e.target.value })} placeholder="npm ci" />
        </label>
        <fieldset>
          <legend>Dev servers</legend>
          {d.dev.map((x, i) => (
            <div className="row" key={i}>
              <input aria-label="Name" placeholder="web" value={x.name} onChange={(e) => set({ dev: d.dev.map((y, j) => (j === i ? { ...y, name: e.target.value } : y)) })} />
              <input
                aria-label="Port"
                inputMode="numeric"
                placeholder="5173"
                value={x.port}
                aria-invalid={bad(`dev_commands[${i}]`)}
                onChange={(e) => set({ dev: d.dev.map((y, j) => (j === i ? { ...y, port: e.target.value } : y)) })}
              />
              <input aria-label="Command" placeholder="npm run dev" value={x.command} onChange={(e) => set({ dev: d.dev.map((y, j) => (j === i ? { ...y, command: e.target.value } : y)) })} />
              <button type="button" className="secondary outline" aria-label="Remove dev server" onClick={() => set({ dev: d.dev.filter((_, j) => j !== i) })}>
                ✕
              </button>
            </div>
          ))}
          <button type="button" className="outline small-button" onClick={() => set({ dev: [...d.dev, { name: "", port: "", command: "" }] })}>
            Add dev server
          </button>
        </fieldset>
        <fieldset>
          <legend>Secrets</legend>
          <small className="muted">Write-only: once saved, only the name and a masked preview are ever shown.</small>
          {existing?.secrets.map((s) => (
            <label key={s.name} className="secret">
              <input
                type="checkbox"
                checked={d.removeSecrets.includes(s.name)}
                onChange={(e) =>
                  set({ removeSecrets: e.target.checked ? [...d.removeSecrets, s.name] : d.removeSecrets.filter((n) => n !== s.name) })
                }
              />
              <code>{s.name}</code> <span className="muted">{s.preview}</span> {d.removeSecrets.includes(s.name) && <em>(will be removed)</em>}
            </label>
          ))}
          {d.newSecrets.map((s, i) => (
            <div className="row" key={i}>
              <input
                aria-label="Secret name"
                placeholder="OPENAI_API_KEY"
                value={s.name}
                aria-invalid={bad("secrets")}
                onChange={(e) => set({ newSecrets: d.newSecrets.map((y, j) => (j === i ? { ...y, name: e.target.value } : y)) })}
              />
              <input
                aria-label="Secret value"
                type="password"
                autoComplete="new-password"
                placeholder="value"
                value={s.value}
                onChange={(e) => set({ newSecrets: d.newSecrets.map((y, j) => (j === i ? { ...y, value: e.target.value } : y)) })}
              />
              <button type="button" className="secondary outline" aria-label="Remove secret" onClick={() => set({ newSecrets: d.newSecrets.filter((_, j) => j !== i) })}>
                ✕
              </button>
            </div>
          ))}
          <button type="button" className="outline small-button" onClick={() => set({ newSecrets: [...d.newSecrets, { name: "", value: "" }] })}>
            Add secret
          </button>
        </fieldset>
        <fieldset>
          <legend>Resources</legend>
          <div className="row">
            <label>
              vCPUs
              <input inputMode="numeric" value={d.vcpus} onChange={(e) => set({ vcpus: e.target.value })} aria-invalid={bad("resources.vcpus")} />
            </label>
            <label>
              Memory (MiB)
              <input inputMode="numeric" value={d.memory} onChange={(e) => set({ memory: e.target.value })} aria-invalid={bad("resources.memory_mib")} />
            </label>
            <label>
              Disk (MiB)
              <input inputMode="numeric" value={d.disk} onChange={(e) => set({ disk: e.target.value })} aria-invalid={bad("resources.disk_mib")} />
            </label>
            <label>
              Base image
              <select value={d.baseImage} onChange={(e) => set({ baseImage: e.target.value })}>
                {[...new Set([d.baseImage, ...(images.data ?? []).filter((i) => !i.extension).map((i) => i.name)])].map((n) => (
                  <option key={n}>{n}</option>
                ))}
              </select>
            </label>
          </div>
        </fieldset>
        <fieldset>
          <legend>
            Image additions <small className="muted">(one per line; built once into {existing?.image_name ?? "the workspace's own image"})</small>
          </legend>
          <label>
            Debian packages
            <textarea name="image_packages" className="mono" rows={2} value={d.imagePackages} onChange={(e) => set({ imagePackages: e.target.value })} aria-invalid={bad("image.packages")} spellCheck={false} />
          </label>
          <label>
            npm packages
            <textarea name="image_npm" className="mono" rows={2} value={d.imageNpm} onChange={(e) => set({ imageNpm: e.target.value })} aria-invalid={bad("image.npm")} spellCheck={false} />
          </label>
          <label>
            Build steps <small className="muted">(shell, as root)</small>
            <textarea name="image_run" className="mono" rows={2} value={d.imageRun} onChange={(e) => set({ imageRun: e.target.value })} aria-invalid={bad("image.run")} spellCheck={false} />
          </label>
        </fieldset>
        <label>
          Agent configuration <small className="muted">(JSON: runtime, model, instructions…)</small>
          <textarea
            name="agent_config"
            className="mono"
            rows={6}
            value={d.agentConfig}
            onChange={(e) => set({ agentConfig: e.target.value })}
            aria-invalid={bad("agent_config")}
            spellCheck={false}
          />
        </label>
        <ErrorNote error={formError ?? save.error} />
        <div className="buttons">
          <button type="submit" aria-busy={save.isPending} disabled={save.isPending}>
            {existing ? "Save" : "Create workspace"}
          </button>
          {existing && (
            <>
              <Link to="/templates" search={{ workspace: existing.id }} role="button" className="outline">
                Templates for this workspace
              </Link>
              <button
                type="button"
                className="secondary outline"
                onClick={() => confirm(`Delete workspace ${existing.name}?`) && remove.mutate()}
              >
                Delete
              </button>
            </>
          )}
        </div>
        <ErrorNote error={remove.error} />
      </form>
    </>
  );
}
