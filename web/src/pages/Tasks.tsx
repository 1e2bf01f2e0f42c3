import { useNavigate } from "@tanstack/react-router";
import { useTasks, useWorkspaces } from "../api/queries";
import { NewTaskForm } from "../components/NewTaskForm";
import { TaskCard } from "../components/TaskCard";
import { COLUMNS } from "../kanban";
import { Empty, ErrorNote, Loading } from "../ui/kit";

export interface TasksSearch {
  workspace?: string;
  new?: boolean;
}

export function Tasks({ search }: { search: TasksSearch }) {
  const navigate = useNavigate({ from: "/tasks" });
  const tasks = useTasks();
  const workspaces = useWorkspaces();
  const shown = (tasks.data ?? []).filter((t) => !search.workspace || t.workspace_id === search.workspace);
  const setSearch = (s: TasksSearch) => void navigate({ search: s, replace: true });

  return (
    <>
      <div className="section-head">
        <h1>Tasks</h1>
        <button onClick={() => setSearch({ ...search, new: !search.new })} aria-expanded={!!search.new}>
          {search.new ? "Close" : "New task"}
        </button>
      </div>
      {search.new && (
        <article>
          <NewTaskForm defaultWorkspace={search.workspace} onDone={() => setSearch({ ...search, new: undefined })} />
        </article>
      )}
      <label className="filter">
        Workspace{" "}
        <select
          value={search.workspace ?? ""}
          onChange={(e) => setSearch({ ...search, workspace: e.target.value || undefined })}
        >
          <option value="">All</option>
          {workspaces.data?.map((w) => (
            <option key={w.id} value={w.id}>
              {w.name}
            </option>
          ))}
        </select>
      </label>
      <ErrorNote error={tasks.error} />
      {tasks.isLoading ? (
        <Loading />
      ) : shown.length === 0 ? (
        <Empty title="No tasks yet.">Press “New task”, describe the work, and pick a workspace.</Empty>
      ) : (
        <div className="kanban">
          {COLUMNS.map((c) => {
            const col = shown.filter((t) => t.status === c.status);
            if (col.length === 0 && (c.status === "cancelled" || c.status === "failed")) return null;
            return (
              <section key={c.status} className="column" data-testid={`column-${c.status}`}>
                <h3>
                  {c.title} <small className="muted">{col.length}</small>
                </h3>
                {col.map((t) => (
                  <TaskCard key={t.id} task={t} />
                ))}
              </section>
            );
          })}
        </div>
      )}
    </>
  );
}
