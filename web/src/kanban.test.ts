import { canMove, COLUMNS, userMoves } from "./kanban";
import type { TaskStatus } from "./api/types";

const ALL = COLUMNS.map((c) => c.status);

describe("kanban moves", () => {
  it("offers only legal moves, each through an API action", () => {
    for (const from of ALL) {
      for (const m of userMoves(from)) {
        expect(canMove(from, m.to)).toBe(true);
        expect(["dispatch", "cancel", "done"]).toContain(m.action);
      }
    }
  });

  it("matches the server's state machine on the cases people meet", () => {
    const moves = (s: TaskStatus) => userMoves(s).map((m) => `${m.action}:${m.label}`);
    expect(moves("backlog")).toEqual(["dispatch:Run", "cancel:Cancel"]);
    expect(moves("running")).toEqual(["cancel:Cancel"]);
    expect(moves("needs_attention")).toEqual(["cancel:Cancel"]);
    expect(moves("review")).toEqual(["done:Mark done", "dispatch:Run again"]);
    expect(moves("failed")).toEqual(["dispatch:Retry", "cancel:Cancel"]);
    expect(moves("done")).toEqual([]);
    expect(moves("cancelled")).toEqual([]);
  });

  it("never lets a finished task be reopened or a running one be marked done", () => {
    expect(canMove("done", "queued")).toBe(false);
    expect(canMove("cancelled", "queued")).toBe(false);
    expect(canMove("running", "done")).toBe(false);
    expect(canMove("backlog", "review")).toBe(false);
  });
});
