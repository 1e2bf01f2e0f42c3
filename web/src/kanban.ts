// The kanban's rules, mirroring atelier-core's TaskStatus::can_move_to, and the moves a
// person can make through the API (the others happen as the agent works).
import type { TaskStatus } from "./api/types";

export const COLUMNS: { status: TaskStatus; title: string }[] = [
  { status: "backlog", title: "Backlog" },
  { status: "queued", title: "Queued" },
  { status: "running", title: "Running" },
  { status: "needs_attention", title: "Needs you" },
  { status: "review", title: "Review" },
  { status: "done", title: "Done" },
  { status: "failed", title: "Failed" },
  { status: "cancelled", title: "Cancelled" },
];

const LEGAL: Record<TaskStatus, TaskStatus[]> = {
  backlog: ["queued", "cancelled"],
  queued: ["backlog", "running", "cancelled", "failed"],
  running: ["needs_attention", "review", "failed", "cancelled"],
  needs_attention: ["running", "review", "failed", "cancelled"],
  review: ["done", "queued", "failed"],
  done: [],
  failed: ["queued", "cancelled"],
  cancelled: [],
};

export function canMove(from: TaskStatus, to: TaskStatus): boolean {
  return LEGAL[from].includes(to);
}

export type Action = "dispatch" | "cancel" | "done";

export interface Move {
  to: TaskStatus;
  action: Action;
  label: string;
}

/** The API call that makes each user move. */
const BY_TARGET: Partial<Record<TaskStatus, { action: Action; label: (from: TaskStatus) => string }>> = {
  queued: { action: "dispatch", label: (f) => (f === "backlog" ? "Run" : f === "failed" ? "Retry" : "Run again") },
  cancelled: { action: "cancel", label: () => "Cancel" },
  done: { action: "done", label: () => "Mark done" },
};

export function userMoves(from: TaskStatus): Move[] {
  return LEGAL[from].flatMap((to) => {
    const m = BY_TARGET[to];
    return m ? [{ to, action: m.action, label: m.label(from) }] : [];
  });
}

export function isActive(s: TaskStatus): boolean {
  return s === "running" || s === "needs_attention" || s === "queued";
}
