import { lazy, Suspense, useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link, useNavigate } from "@tanstack/react-router";
import { post } from "../api/client";
import { useAttention, useDiff, useTask, useTaskEvents, useTemplates } from "../api/queries";
import type { Effort, Task } from "../api/types";
import { AttentionCard } from "../components/AttentionCard";
import { useMoveTask } from "../components/TaskCard";
import { foldTimeline } from "../components/timeline";
import { userMoves } from "../kanban";
import { ago, Badge, Empty, ErrorNote, Loading, Progress, Section } from "../ui/kit";

const DiffView = lazy(() => import("../components/DiffView"));

function Actions({ task }: { task: Task }) {
  const move = useMoveTask(task);
  const qc = useQueryClient();
  const navigate = useNavigate();
  const templates = useTemplates(task.workspace_id);
  const reviews = (templates.data ?? []).filter((t) => t.name !== "implementation");
  const [review, setReview] = useState("");
  const chain = useMutation({
    mutationFn: (template: string) =>
      post<Task>(`/tasks/${encodeURIComponent(task.id)}/review`, { template, effort: task.effort as Effort }),
    onSuccess: (t) => {
      void qc.invalidateQueries({ queryKey: ["tasks"] });
      void navigate({ to: "/tasks/$taskId", params: { taskId: t.id } });
    },
  });
  const canReview = task.status === "review" || task.status === "done";
  return (
    <div className="actions">
      <div className="buttons">
        {userMoves(task.status).map((m) => (
          <button
            key={m.action}
            className={m.action === "cancel" ? "secondary outline" : m.action === "done" ? "" : "outline"}
            disabled={move.isPending}
            onClick={() => move.mutate(m)}
          >
            {m.label}
          </button>
        ))}
        {task.sandbox_id && (
          <Link to="/sandboxes/$sandboxId" params={{ sandboxId: task.sandbox_id }} role="button" className="outline">
            Open sandbox
          </Link>
        )}
      </div>
      {canReview && reviews.length > 0 && (
        <div className="row review">
          <select aria-label="Review template" value={review} onChange={(e) => setReview(e.target.value)}>
            <option value="">Chain a review…</option>
            {reviews.map((t) => (
              <option key={t.name} value={t.name}>
                {t.title}
              </option>
            ))}
          </select>
          <button className="outline" disabled={!review || chain.isPending} onClick={() => chain.mutate(review)}>
            Start review
          </button>
        </div>
      )}
      <ErrorNote error={move.error ?? chain.error} />
    </div>
  );
}

export function TaskDetail({ taskId }: { taskId: string }) {
  const task = useTask(taskId);
  const events = useTaskEvents(taskId);
  const attention = useAttention();
  const t = task.data;
  const turnOver = !!t && ["review", "done", "failed", "cancelled"].includes(t.status);
  const diff = useDiff(taskId, turnOver);
  if (task.isLoading) return <Loading />;
  if (!t) return <ErrorNote error={task.error ?? "no such task"} />;
  const asks = (attention.data ?? []).filter((a) => a.task_id === t.id);
  const timeline = foldTimeline(events.data ?? []);
  const done = t.todos.filter((x) => x.status === "completed").length;

  return (
    <>
      <p className="crumbs">
        <Link to="/tasks">Tasks</Link> / <code>{t.branch}</code>
      </p>
      <h1 className="task-heading">{t.title}</h1>
      <div className="meta">
        <Badge value={t.status} /> <small className="muted">{t.template} · {t.effort} · from {t.base_branch} · updated {ago(t.updated_at)}</small>
      </div>
      {t.error && <p className="error">{t.error}</p>}
      <Actions task={t} />
      {asks.map((a) => (
        <AttentionCard key={a.id} ask={a} taskTitle={t.title} />
      ))}
      {t.summary && (
        <Section title="Summary">
          <p className="summary">{t.summary}</p>
        </Section>
      )}
      <div className="detail-grid">
        <Section title={`Todos${t.todos.length ? ` ${done}/${t.todos.length}` : ""}`}>
          <Progress value={t.progress} label="todos done" />
          {t.todos.length ? (
            <ul className="todos">
              {t.todos.map((x, i) => (
                <li key={i} data-status={x.status}>
                  {x.content}
                </li>
              ))}
            </ul>
          ) : (
            <p className="muted">The agent has not made a plan.</p>
          )}
        </Section>
        <Section title="Usage">
          <dl className="usage">
            <dt>Input</dt>
            <dd>{t.usage.input_tokens.toLocaleString()} tokens</dd>
            <dt>Output</dt>
            <dd>{t.usage.output_tokens.toLocaleString()} tokens</dd>
            <dt>Cost</dt>
            <dd>${t.usage.cost_usd.toFixed(4)}</dd>
          </dl>
          {t.files_touched.length > 0 && (
            <>
              <h4>Files touched</h4>
              <ul className="plain files">
                {t.files_touched.map((f) => (
                  <li key={f}>
                    <code>{f}</code>
                  </li>
                ))}
              </ul>
            </>
          )}
        </Section>
      </div>
      <Section title="Changes">
        {!turnOver ? (
          <p className="muted">The diff appears when the agent's turn ends.</p>
        ) : diff.isLoading ? (
          <Loading />
        ) : diff.data !== undefined ? (
          <Suspense fallback={<Loading />}>
            <DiffView diff={diff.data} />
          </Suspense>
        ) : (
          <p className="muted">No diff was recorded for this task.</p>
        )}
      </Section>
      <Section title="Timeline">
        {timeline.length === 0 ? (
          <Empty title="Nothing yet.">{t.status === "backlog" ? "Run the task to start an agent." : "The agent's events appear here as they happen."}</Empty>
        ) : (
          <ol className="timeline" data-testid="timeline">
            {timeline.map((item) => (
              <li key={item.key} className={`tl tl-${item.kind}`}>
                {item.kind === "text" ? (
                  <p className={item.reasoning ? "muted" : undefined}>{item.text}</p>
                ) : item.kind === "tool" ? (
                  <p>
                    <code>{item.name}</code> {item.title} <Badge value={item.status} />
                    {item.error && <span className="error"> {item.error}</span>}
                  </p>
                ) : item.kind === "ask" ? (
                  <p>
                    <strong>Asked:</strong> {item.title} {item.outcome ? <small className="muted">— {item.outcome}</small> : <Badge value="waiting" />}
                  </p>
                ) : (
                  <p className="muted">{item.text}</p>
                )}
              </li>
            ))}
          </ol>
        )}
        <ErrorNote error={events.error} />
      </Section>
    </>
  );
}
