// What a workspace's prebuild status comes down to, for its card and for mission control.
import type { Prebuild, PrebuildStatus } from "../api/types";

/** `none`: never built; `stale`: ready but its inputs moved; `failed`: the last attempt failed. */
export type PrebuildHealth = "none" | "building" | "ready" | "stale" | "failed";

export interface PrebuildSummary {
  health: PrebuildHealth;
  /** The prebuild new sandboxes start from. */
  current: Prebuild | null;
  building: Prebuild | null;
  /** The newest attempt, when it failed (an older ready prebuild may still serve). */
  failed: Prebuild | null;
}

export function summarize(status: PrebuildStatus): PrebuildSummary {
  const current = status.current ?? null;
  const building = status.building ?? null;
  const newest = status.history[0] ?? null;
  const failed = newest?.state === "failed" ? newest : null;
  const health: PrebuildHealth = building
    ? "building"
    : failed
      ? "failed"
      : current?.stale
        ? "stale"
        : current
          ? "ready"
          : "none";
  return { health, current, building, failed };
}

/** Health values worth a line on mission control. */
export const needsNotice = (h: PrebuildHealth) => h === "building" || h === "failed" || h === "stale";

/** A commit id as people read it. */
export const shortCommit = (commit: string) => commit.slice(0, 7);

