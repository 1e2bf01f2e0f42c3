import { useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useNavigate } from "@tanstack/react-router";
import { api } from "../api/client";
import { useTemplates, useWorkspaces } from "../api/queries";
import type { SessionTemplate } from "../api/types";
import { ErrorNote, Loading } from "../ui/kit";

function TemplateEditor({ template, workspace }: { template: SessionTemplate; workspace?: string }) {
  const qc = useQueryClient();
  const [prompt, setPrompt] = useState(template.prompt);
  const base = workspace ? `/workspaces/${encodeURIComponent(workspace)}/templates` : "/templates";
  const save = useMutation({
    mutationFn: () => api<SessionTemplate>(`${base}/${encodeURIComponent(template.name)}`, { method: "PUT", body: { ...template, prompt } }),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["templates"] }),
  });
  const reset = useMutation({
    mutationFn: () => api<void>(`/templates/${encodeURIComponent(template.name)}`, { method: "DELETE" }),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["templates"] }),
  });
  return (
    <details>
      <summary>
        <strong>{template.title}</strong> <code className="muted">{template.name}</code>
      </summary>
      <textarea className="mono" rows={8} value={prompt} onChange={(e) => setPrompt(e.target.value)} aria-label={`Prompt of ${template.title}`} />
      <small className="muted">
        Variables: <code>{"{{task.prompt}}"}</code> <code>{"{{task.title}}"}</code> <code>{"{{branch}}"}</code> <code>{"{{base_branch}}"}</code>{" "}
        <code>{"{{repo}}"}</code>
      </small>
      {template.efforts && (
        <p className="muted">
          Efforts:{" "}
          {Object.entries(template.efforts)
            .map(([k, v]) => `${k} → reasoning ${v.reasoning ?? "default"}${v.plan ? ", plan first" : ""}`)
            .join(" · ")}
        </p>
      )}
      <div className="buttons">
        <button disabled={prompt === template.prompt || save.isPending} onClick={() => save.mutate()}>
          Save {workspace ? "for this workspace" : "for every workspace"}
        </button>
        {!workspace && (
          <button className="secondary outline" onClick={() => reset.mutate()}>
            Reset to built-in
          </button>
        )}
      </div>
      <ErrorNote error={save.error ?? reset.error} />
    </details>
  );
}

export function Templates({ workspace }: { workspace?: string }) {
  const navigate = useNavigate({ from: "/templates" });
  const workspaces = useWorkspaces();
  const templates = useTemplates(workspace);
  return (
    <>
      <h1>Session templates</h1>
      <p className="muted">What the agent is told. Implementation runs your prompt; reviews run on a task's branch.</p>
      <label className="filter">
        Scope{" "}
        <select value={workspace ?? ""} onChange={(e) => void navigate({ search: { workspace: e.target.value || undefined } })}>
          <option value="">Every workspace</option>
          {workspaces.data?.map((w) => (
            <option key={w.id} value={w.id}>
              {w.name} only
            </option>
          ))}
        </select>
      </label>
      {templates.isLoading ? <Loading /> : templates.data?.map((t) => <TemplateEditor key={`${workspace}:${t.name}:${t.prompt}`} template={t} workspace={workspace} />)}
      <ErrorNote error={templates.error} />
    </>
  );
}
