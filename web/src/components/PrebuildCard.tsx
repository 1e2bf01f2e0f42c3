// A workspace's prebuild: what new sandboxes start from, the build in progress with its
// live log, why the last build failed, and the buttons to rebuild or check for staleness.
import { useEffect, useRef, useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link } from "@tanstack/react-router";
import { api, route } from "../api/client";
import { usePrebuildLog, usePrebuilds } from "../api/queries";
import type { Prebuild, PrebuildStatus, Workspace, WorkspacePatch } from "../api/types";
import { ago, Badge, Empty, ErrorNote, Loading } from "../ui/kit";
import { shortCommit, summarize } from "./prebuild";

/** A log that stays scrolled to its end while it grows (unless the reader scrolled up). */
function LiveLog({ text, testId }: { text: string; testId: string }) {
  const el = useRef<HTMLPreElement>(null);
  const pinned = useRef(true);
  useEffect(() => {
    const pre = el.current;
    if (pre && pinned.current) pre.scrollTop = pre.scrollHeight;
  }, [text]);
  return (
    <pre
      ref={el}
      className="log"
      data-testid={testId}
      aria-live="polite"
      onScroll={(e) => {
        const pre = e.currentTarget;
        pinned.current = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      }}
    >
      {text || "(no output yet)"}
    </pre>
  );
}

function BuildLogOnDemand({ id }: { id: string }) {
  const [open, setOpen] = useState(false);
  const log = usePrebuildLog(open ? id : undefined, false);
  return (
    <details onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary>Build log</summary>
      {log.isLoading ? <Loading /> : <LiveLog text={log.data?.text ?? ""} testId="prebuild-build-log" />}
      <ErrorNote error={log.error} />
    </details>
  );
}

function Facts({ p }: { p: Prebuild }) {
  return (
    <dl className="facts">
      <dt>Commits</dt>
      <dd>
        {p.commits.length ? (
          p.commits.map((c) => (
            <div key={c.path} className="commit">
              {c.path} <small className="muted">{c.branch}</small> <code title={c.commit}>{shortCommit(c.commit)}</code>
            </div>
          ))
        ) : (
          <span className="muted">{p.origin === "promote" ? "not recorded (promoted from a sandbox)" : "no repository"}</span>
        )}
      </dd>
      <dt>Start</dt>
      <dd data-testid="prebuild-start">
        {p.memory_snapshot ? "memory snapshot (clones resume where the build left off)" : "disk only (clones boot the captured disk)"}
      </dd>
      <dt>Clones</dt>
      <dd data-testid="prebuild-clones">{p.clones}</dd>
      <dt>Built</dt>
      <dd>
        {ago(p.finished_at ?? p.created_at)} ·{" "}
        {p.origin === "promote" && p.sandbox_id ? (
          <>
            promoted from <Link to="/sandboxes/$sandboxId" params={{ sandboxId: p.sandbox_id }}>a sandbox</Link>
          </>
        ) : (
          p.origin
        )}{" "}
        · {p.vcpus} vCPU · {p.memory_mib} MiB · <code>{p.id}</code>
      </dd>
    </dl>
  );
}

export function PrebuildCard({ workspace }: { workspace: Workspace }) {
  const qc = useQueryClient();
  const status = usePrebuilds(workspace.id);
  const summary = status.data ? summarize(status.data) : null;
  const building = summary?.building ?? null;
  const log = usePrebuildLog(building?.id, Boolean(building));
  const ws = { path: { workspace: workspace.id } };
  const refresh = () => void qc.invalidateQueries({ queryKey: ["prebuilds", workspace.id] });

  const rebuild = useMutation({
    mutationFn: () => api<Prebuild>(route("post", "/workspaces/{workspace}/prebuilds", ws), { method: "POST" }),
    onSuccess: refresh,
  });
  const check = useMutation({
    mutationFn: () => api<PrebuildStatus>(route("post", "/workspaces/{workspace}/prebuilds/check", ws), { method: "POST" }),
    onSuccess: (s) => qc.setQueryData(["prebuilds", workspace.id], s),
  });
  // The switch shows the value asked for at once and until the saved workspace says so
  // (the mutation's own state reaches the page a tick later, and a controlled checkbox
  // would flip back meanwhile).
  const saved = workspace.prebuild.auto_rebuild;
  const [asked, setAsked] = useState<boolean | null>(null);
  useEffect(() => setAsked(null), [saved]);
  const autoRebuild = useMutation({
    mutationFn: (on: boolean) =>
      api<Workspace>(route("patch", "/workspaces/{workspace}", ws), {
        method: "PATCH",
        body: { prebuild: { auto_rebuild: on } } satisfies WorkspacePatch,
      }),
    // A read of the workspace already on its way would land after the change and undo it on screen.
    onMutate: () => qc.cancelQueries({ queryKey: ["workspace", workspace.id] }),
    onError: () => setAsked(null),
    onSuccess: (w) => {
      qc.setQueryData(["workspace", w.id], w);
      void qc.invalidateQueries({ queryKey: ["workspaces"] });
    },
  });
  const auto = asked ?? saved;

  return (
    <article className="prebuild-card" data-testid="prebuild-card" data-health={summary?.health ?? "loading"}>
      <div className="section-head">
        <h2>Prebuild</h2>
        {summary && summary.health !== "none" && <Badge value={summary.health} />}
      </div>
      {status.isLoading && <Loading />}
      <ErrorNote error={status.error} />
      {summary?.health === "none" && (
        <Empty title="No prebuild yet.">
          A prebuild clones the repositories and runs the init commands once; new sandboxes of this workspace then start as
          copies of it instead of from scratch.
        </Empty>
      )}
      {building && (
        <div className="prebuild-building">
          <p>
            Building <code>{building.id}</code>, started {ago(building.created_at)}
            {summary?.current ? "; the current prebuild serves until it is ready." : "."}
          </p>
          <LiveLog text={log.data?.text ?? ""} testId="prebuild-log" />
          <ErrorNote error={log.error} />
        </div>
      )}
      {summary?.failed && (
        <div className="prebuild-failed" data-testid="prebuild-failure">
          <p className="error">
            The last build failed{summary.failed.error ? `: ${summary.failed.error}` : "."}
            {summary.current ? " The previous prebuild keeps serving." : ""}
          </p>
          {summary.failed.log_tail && (
            <pre className="log" data-testid="prebuild-log-tail">
              {summary.failed.log_tail}
            </pre>
          )}
        </div>
      )}
      {summary?.current && (
        <>
          {summary.current.stale && (
            <p className="warning" data-testid="prebuild-stale">
              Stale: {summary.current.stale}. It still serves new sandboxes
              {auto ? "; a rebuild starts by itself." : " until you rebuild it."}
            </p>
          )}
          <Facts p={summary.current} />
          <BuildLogOnDemand id={summary.current.id} key={summary.current.id} />
        </>
      )}
      {summary && (
        <div className="buttons">
          <button
            onClick={() => rebuild.mutate()}
            disabled={Boolean(building) || rebuild.isPending}
            aria-busy={rebuild.isPending || undefined}
            title={building ? "A build is in progress" : undefined}
          >
            {summary.health === "none" ? "Build prebuild" : "Rebuild"}
          </button>
          <button
            className="outline"
            onClick={() => check.mutate()}
            disabled={!summary.current || check.isPending}
            aria-busy={check.isPending || undefined}
            title="Compare the prebuild with its branches, settings and image now"
          >
            Check now
          </button>
        </div>
      )}
      <label className="switch">
        <input
          type="checkbox"
          role="switch"
          checked={auto}
          disabled={autoRebuild.isPending}
          onChange={(e) => {
            setAsked(e.target.checked);
            autoRebuild.mutate(e.target.checked);
          }}
        />
        Rebuild by itself when it goes stale
      </label>
      <ErrorNote error={rebuild.error ?? check.error ?? autoRebuild.error} />
    </article>
  );
}
