import type { Answer, AskDetail, Interaction, Question } from "../api/types";

export function askDetail(i: Interaction): AskDetail {
  const d = (i.detail ?? {}) as Partial<AskDetail> & Record<string, unknown>;
  if (i.kind === "permission") {
    return {
      kind: "permission",
      tool: String(d.tool ?? "tool"),
      patterns: Array.isArray(d.patterns) ? (d.patterns as string[]) : [],
      always: Array.isArray(d.always) ? (d.always as string[]) : [],
      detail: d.detail,
    };
  }
  const questions = Array.isArray(d.questions) ? (d.questions as Question[]) : [];
  return { kind: "question", questions: questions.length ? questions : [{ question: i.title, options: [], custom: true }] };
}

/** One click answers it: a single question with a single choice. */
export function answersInOneClick(questions: Question[]): boolean {
  return questions.length === 1 && !questions[0].multiple && questions[0].options.length > 0;
}

/**
 * The answer to send: per question, the chosen labels then the free text (when allowed).
 * Returns the index of the first unanswered question instead when one is empty.
 */
export function buildAnswer(
  questions: Question[],
  chosen: string[][],
  typed: string[],
): { answer: Answer } | { missing: number } {
  const answers: string[][] = [];
  for (let i = 0; i < questions.length; i++) {
    const q = questions[i];
    const labels = (chosen[i] ?? []).filter((l) => q.options.some((o) => o.label === l));
    const text = q.custom !== false ? (typed[i] ?? "").trim() : "";
    const one = q.multiple ? [...labels, ...(text ? [text] : [])] : text ? [text] : labels.slice(0, 1);
    if (one.length === 0) return { missing: i };
    answers.push(one);
  }
  return { answer: { kind: "question", answers } };
}

/** Toggles a label: multiple-choice questions keep a set, the others hold one label. */
export function toggleChoice(current: string[], label: string, multiple: boolean): string[] {
  if (current.includes(label)) return current.filter((l) => l !== label);
  return multiple ? [...current, label] : [label];
}
