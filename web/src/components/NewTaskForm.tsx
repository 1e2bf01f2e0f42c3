import { useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useNavigate } from "@tanstack/react-router";
import { api, ApiError } from "../api/client";
import { useTemplates, useWorkspaces } from "../api/queries";
import type { Effort, Task, TaskSpec } from "../api/types";
import { ErrorNote } from "../ui/kit";

const EFFORTS: Effort[] = ["low", "medium", "high", "max"];

export function NewTaskForm({ defaultWorkspace, onDone }: { defaultWorkspace?: string; onDone?: () => void }) {
  const qc = useQueryClient();
  const navigate = useNavigate();
  const workspaces = useWorkspaces();
  const [workspace, setWorkspace] = useState(defaultWorkspace ?? "");
  const ws = workspaces.data?.find((w) => w.id === workspace || w.name === workspace) ?? workspaces.data?.[0];
  const templates = useTemplates(ws?.id);
  const [prompt, setPrompt] = useState("");
  const [template, setTemplate] = useState("implementation");
  const [effort, setEffort] = useState<Effort>("medium");
  const [baseBranch, setBaseBranch] = useState("");
  const [dispatch, setDispatch] = useState(true);
  const create = useMutation({
    mutationFn: (spec: TaskSpec) => api<Task>("/tasks", { method: "POST", body: spec }),
    onSuccess: (t) => {
      void qc.invalidateQueries({ queryKey: ["tasks"] });
      onDone?.();
      void navigate({ to: "/tasks/$taskId", params: { taskId: t.id } });
    },
  });
  const bad = (field: string) => (create.error instanceof ApiError && create.error.fields.includes(field) ? true : undefined);

  if (workspaces.data && workspaces.data.length === 0)
    return <p className="muted">A task runs in a workspace: create one on the Workspaces page first.</p>;

  return (
    <form
      className="new-task"
      onSubmit={(e) => {
        e.preventDefault();
        if (!ws) return;
        create.mutate({
          prompt,
          workspace: ws.id,
          template,
          effort,
          base_branch: baseBranch.trim() || null,
          dispatch,
        });
      }}
    >
      <label>
        What should the agent do?
        <textarea
          name="prompt"
          required
          rows={4}
          value={prompt}
          onChange={(e) => setPrompt(e.target.value)}
          placeholder="Add a health endpoint with a test"
          aria-invalid={bad("prompt")}
        />
      </label>
      <div className="row">
        <label>
          Workspace
          <select name="workspace" value={ws?.id ?? ""} onChange={(e) => setWorkspace(e.target.value)}>
            {workspaces.data?.map((w) => (
              <option key={w.id} value={w.id}>
                {w.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Template
          <select name="template" value={template} onChange={(e) => setTemplate(e.target.value)}>
            {(templates.data ?? [{ name: "implementation", title: "Implementation" }]).map((t) => (
              <option key={t.name} value={t.name}>
                {t.title}
              </option>
            ))}
          </select>
        </label>
        <label>
          Effort
          <select name="effort" value={effort} onChange={(e) => setEffort(e.target.value as Effort)}>
            {EFFORTS.map((x) => (
              <option key={x}>{x}</option>
            ))}
          </select>
        </label>
        <label>
          Base branch
          <input
            name="base_branch"
            value={baseBranch}
            placeholder={ws?.repos[0]?.branch ?? "main"}
            onChange={(e) => setBaseBranch(e.target.value)}
            aria-invalid={bad("base_branch")}
          />
        </label>
      </div>
      <label>
        <input type="checkbox" role="switch" checked={dispatch} onChange={(e) => setDispatch(e.target.checked)} /> Start
        right away (otherwise it waits in the backlog)
      </label>
      <button type="submit" aria-busy={create.isPending} disabled={create.isPending || !ws}>
        Create task
      </button>
      <ErrorNote error={create.error} />
    </form>
  );
}
