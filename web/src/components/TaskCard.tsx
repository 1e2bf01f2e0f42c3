import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link } from "@tanstack/react-router";
import { post } from "../api/client";
import type { Task } from "../api/types";
import { userMoves, type Move } from "../kanban";
import { ago, Badge, ErrorNote, Progress } from "../ui/kit";

export function useMoveTask(task: Task) {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (m: Move) => post<Task>(`/tasks/${encodeURIComponent(task.id)}/${m.action}`),
    onSuccess: (t) => {
      qc.setQueryData(["task", t.id], t);
      void qc.invalidateQueries({ queryKey: ["tasks"] });
    },
  });
}

export function TaskCard({ task, actions = true }: { task: Task; actions?: boolean }) {
  const move = useMoveTask(task);
  const moves = actions ? userMoves(task.status) : [];
  const current = task.todos.find((t) => t.status === "in_progress")?.content;
  return (
    <article className="task-card" data-testid="task-card" data-status={task.status}>
      <Link to="/tasks/$taskId" params={{ taskId: task.id }} className="task-title">
        {task.title}
      </Link>
      <div className="meta">
        <Badge value={task.status} />
        {task.template !== "implementation" && <small className="muted">{task.template}</small>}
        <small className="muted">{ago(task.updated_at)}</small>
      </div>
      {current && <small className="current">▸ {current}</small>}
      <Progress value={task.progress} />
      {moves.length > 0 && (
        <div className="buttons small">
          {moves.map((m) => (
            <button
              key={m.action}
              className={m.action === "cancel" ? "secondary outline" : "outline"}
              disabled={move.isPending}
              onClick={() => move.mutate(m)}
            >
              {m.label}
            </button>
          ))}
        </div>
      )}
      <ErrorNote error={move.error} />
    </article>
  );
}
