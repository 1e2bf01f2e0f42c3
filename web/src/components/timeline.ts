// Folds a task's normalized agent events into what a person reads: messages merged from
// their deltas, tool calls updated in place, asks with their outcomes.
import type { AgentEvent, TaskEvent } from "../api/types";

export type TimelineItem =
  | { kind: "text"; key: string; at: string; text: string; reasoning: boolean }
  | { kind: "tool"; key: string; at: string; name: string; title?: string; status: string; output?: string; error?: string }
  | { kind: "ask"; key: string; at: string; title: string; outcome?: string }
  | { kind: "note"; key: string; at: string; text: string };

function outcomeText(o: { kind: string; answers?: string[][] }): string {
  if (o.kind === "answered" && o.answers) return "answered: " + o.answers.map((a) => a.join(", ")).join(" · ");
  return o.kind;
}

export function foldTimeline(events: TaskEvent[]): TimelineItem[] {
  const items: TimelineItem[] = [];
  const byKey = new Map<string, TimelineItem>();
  const upsert = (item: TimelineItem) => {
    const prev = byKey.get(item.key);
    if (prev) Object.assign(prev, item, { at: prev.at });
    else {
      byKey.set(item.key, item);
      items.push(item);
    }
  };
  for (const { seq, at, event } of events) {
    const e = event as unknown as AgentEvent;
    switch (e.type) {
      case "text":
      case "reasoning": {
        const key = `text:${e.part_id}`;
        const prev = byKey.get(key);
        const sofar = prev && prev.kind === "text" ? prev.text : "";
        const text = e.text ?? sofar + (e.delta ?? "");
        upsert({ kind: "text", key, at, text, reasoning: e.type === "reasoning" });
        break;
      }
      case "tool_call":
        if (e.name === "question") break; // shown as the ask itself
        upsert({ kind: "tool", key: `tool:${e.id}`, at, name: e.name, title: e.title, status: e.status, output: e.output, error: e.error });
        break;
      case "interaction_asked":
        upsert({ kind: "ask", key: `ask:${e.id}`, at, title: e.title });
        break;
      case "interaction_resolved": {
        const prev = byKey.get(`ask:${e.id}`);
        if (prev && prev.kind === "ask") prev.outcome = outcomeText(e.outcome);
        break;
      }
      case "files_touched":
        items.push({ kind: "note", key: `n${seq}`, at, text: `touched ${e.paths.join(", ")}` });
        break;
      case "turn_ended":
        items.push({ kind: "note", key: `n${seq}`, at, text: `turn ended: ${e.reason}${e.error ? ` (${e.error})` : ""}` });
        break;
      case "status":
        if (e.state === "error" || e.state === "retry")
          items.push({ kind: "note", key: `n${seq}`, at, text: `${e.state}${e.message ? `: ${e.message}` : ""}` });
        break;
      default:
        break;
    }
  }
  return items;
}
