// Which cached queries an event makes stale. Queries are refetched on events only: no polling.
import type { ApiEvent } from "../api/types";

export type QueryKey = readonly unknown[];

export function keysFor(e: ApiEvent): QueryKey[] {
  switch (e.type) {
    case "sandbox_state":
      // A prebuild counts the sandboxes cloned from it.
      return [["sandboxes"], ["sandbox", e.sandbox_id], ["system"], ["prebuilds"]];
    case "workspace_created":
    case "workspace_updated":
    case "workspace_deleted":
      return [["workspaces"], ["workspace", e.workspace_id], ["prebuilds", e.workspace_id]];
    case "prebuild_state":
      return [["prebuilds", e.workspace_id], ["prebuild-log", e.prebuild_id], ["sandboxes"]];
    case "task_status":
      return [["tasks"], ["task", e.task_id], ["diff", e.task_id], ["attention"]];
    case "task_activity":
      return [["task", e.task_id], ["task-events", e.task_id]];
    case "attention_asked":
    case "attention_resolved":
      return [["attention"], ["tasks"], ["task", e.task_id], ["task-events", e.task_id]];
    default:
      // Kinds added to the API later: refresh what most likely shows them.
      return [["workspaces"], ["sandboxes"]];
  }
}

/** Collects keys for a short while, so a burst of events causes one refetch per query. */
export class InvalidationBatcher {
  private pending = new Map<string, QueryKey>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private flush: (keys: QueryKey[]) => void,
    private delayMs = 120,
  ) {}

  add(keys: QueryKey[]): void {
    for (const k of keys) this.pending.set(JSON.stringify(k), k);
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        const keys = [...this.pending.values()];
        this.pending.clear();
        this.flush(keys);
      }, this.delayMs);
    }
  }
}
