import { useState } from "react";
import { Link } from "@tanstack/react-router";
import { useAttention, usePrebuildStatuses, useSandboxes, useTasks, useWorkspaces } from "../api/queries";
import type { Workspace } from "../api/types";
import { needsNotice, summarize, type PrebuildSummary } from "../components/prebuild";
import { AttentionCard } from "../components/AttentionCard";
import { TaskCard } from "../components/TaskCard";
import { askNotifyPermission, notifyState } from "../live/notify";
import { ago, Badge, Empty, ErrorNote, Loading, Section } from "../ui/kit";

function NotifyButton() {
  const [state, setState] = useState(notifyState);
  if (state !== "default") return null;
  return (
    <button className="outline small-button" onClick={async () => setState(await askNotifyPermission())}>
      Notify me
    </button>
  );
}

function prebuildNote(s: PrebuildSummary): string {
  if (s.health === "building" && s.building) return `building since ${ago(s.building.created_at)}`;
  if (s.health === "failed") return s.failed?.error ?? "the last build failed";
  return s.current?.stale ?? "";
}

/** Workspaces whose prebuild is building, failed or stale; nothing at all when none is. */
export function PrebuildNotices({ workspaces }: { workspaces: Workspace[] }) {
  const statuses = usePrebuildStatuses(workspaces.map((w) => w.id));
  const rows = workspaces
    .map((w, i) => ({ w, s: statuses[i]?.data ? summarize(statuses[i].data) : null }))
    .filter((r): r is { w: Workspace; s: PrebuildSummary } => r.s !== null && needsNotice(r.s.health));
  if (!rows.length) return null;
  return (
    <Section title="Prebuilds">
      <ul className="plain" data-testid="prebuild-notices">
        {rows.map(({ w, s }) => (
          <li key={w.id}>
            <Link to="/workspaces/$workspaceId" params={{ workspaceId: w.id }}>
              {w.name}
            </Link>{" "}
            <Badge value={s.health} /> <small className="muted">{prebuildNote(s)}</small>
          </li>
        ))}
      </ul>
    </Section>
  );
}

export function MissionControl() {
  const attention = useAttention();
  const tasks = useTasks();
  const sandboxes = useSandboxes();
  const workspaces = useWorkspaces();
  const titles = new Map((tasks.data ?? []).map((t) => [t.id, t.title]));
  const active = (tasks.data ?? []).filter((t) => ["running", "needs_attention", "queued"].includes(t.status));
  const recent = (tasks.data ?? []).filter((t) => ["review", "done", "failed"].includes(t.status)).slice(0, 6);
  const running = (sandboxes.data ?? []).filter((s) => s.state === "running");
  const newcomer = workspaces.data?.length === 0;

  return (
    <>
      {newcomer && (
        <article className="welcome">
          <strong>Welcome.</strong> Start by describing a project: <Link to="/workspaces/new">create a workspace</Link>{" "}
          with its git repository. Then create a task and an agent gets to work in its own sandbox.
        </article>
      )}
      <Section title="Needs you" actions={<NotifyButton />}>
        {attention.isLoading ? (
          <Loading />
        ) : attention.data?.length ? (
          attention.data.map((a) => <AttentionCard key={a.task_id + a.id} ask={a} taskTitle={titles.get(a.task_id)} />)
        ) : (
          <Empty title="Nothing waits for you.">Questions and permission requests from agents show up here.</Empty>
        )}
        <ErrorNote error={attention.error} />
      </Section>
      <Section title="Active tasks" actions={<Link to="/tasks" className="small-link">All tasks →</Link>}>
        {tasks.isLoading ? (
          <Loading />
        ) : active.length ? (
          <div className="grid-cards">{active.map((t) => <TaskCard key={t.id} task={t} />)}</div>
        ) : (
          <Empty title="No task is running.">
            {newcomer ? "Create a workspace first." : <Link to="/tasks" search={{ new: true }}>Create a task</Link>}
          </Empty>
        )}
        <ErrorNote error={tasks.error} />
      </Section>
      <PrebuildNotices workspaces={workspaces.data ?? []} />
      <Section title="Running sandboxes">
        {running.length ? (
          <ul className="plain">
            {running.map((s) => (
              <li key={s.id}>
                <Link to="/sandboxes/$sandboxId" params={{ sandboxId: s.id }}>{s.name}</Link> <Badge value={s.state} />{" "}
                <small className="muted">{s.driver} · up since {ago(s.updated_at)}</small>
              </li>
            ))}
          </ul>
        ) : (
          <Empty title="No sandbox is running.">Tasks start their own; you can also start one from a workspace.</Empty>
        )}
      </Section>
      <Section title="Recent results">
        {recent.length ? (
          <div className="grid-cards">{recent.map((t) => <TaskCard key={t.id} task={t} />)}</div>
        ) : (
          <Empty title="No results yet.">Finished tasks wait here for your review.</Empty>
        )}
      </Section>
    </>
  );
}
