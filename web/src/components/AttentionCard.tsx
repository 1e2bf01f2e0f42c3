import { useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link } from "@tanstack/react-router";
import { post } from "../api/client";
import type { Answer, Interaction } from "../api/types";
import { ago, ErrorNote } from "../ui/kit";
import { askDetail, answersInOneClick, buildAnswer, toggleChoice } from "./answer";

/** One ask from an agent, answerable in place: options as buttons, free text where allowed. */
export function AttentionCard({ ask, taskTitle }: { ask: Interaction; taskTitle?: string }) {
  const qc = useQueryClient();
  const detail = askDetail(ask);
  const [chosen, setChosen] = useState<string[][]>([]);
  const [typed, setTyped] = useState<string[]>([]);
  const [message, setMessage] = useState("");
  const [missing, setMissing] = useState<number | null>(null);
  const send = useMutation({
    mutationFn: (answer: Answer) =>
      post<void>(`/attention/${encodeURIComponent(ask.task_id)}/${encodeURIComponent(ask.id)}/answer`, answer),
    onSuccess: () => {
      void qc.invalidateQueries({ queryKey: ["attention"] });
      void qc.invalidateQueries({ queryKey: ["task", ask.task_id] });
    },
  });

  const submit = () => {
    if (detail.kind !== "question") return;
    const r = buildAnswer(detail.questions, chosen, typed);
    if ("missing" in r) setMissing(r.missing);
    else {
      setMissing(null);
      send.mutate(r.answer);
    }
  };

  return (
    <article className="ask" data-testid="attention-card" aria-busy={send.isPending}>
      <header>
        <span className="ask-kind">{ask.kind === "permission" ? "Permission" : "Question"}</span>
        <Link to="/tasks/$taskId" params={{ taskId: ask.task_id }} className="ask-task">
          {taskTitle ?? ask.task_id}
        </Link>
        <small className="muted">{ago(ask.asked_at)}</small>
      </header>
      <p className="ask-title">{ask.title}</p>
      {detail.kind === "permission" ? (
        <>
          <p>
            <code>{detail.tool}</code>{" "}
            {detail.patterns.map((p) => (
              <code key={p} className="pattern">
                {p}
              </code>
            ))}
          </p>
          <input
            placeholder="Optional note for the agent (with Reject)"
            value={message}
            onChange={(e) => setMessage(e.target.value)}
            aria-label="Note for the agent"
          />
          <div className="buttons">
            <button onClick={() => send.mutate({ kind: "permission", reply: "once" })}>Allow once</button>
            <button className="secondary" onClick={() => send.mutate({ kind: "permission", reply: "always" })}>
              Always allow
            </button>
            <button
              className="secondary outline"
              onClick={() =>
                send.mutate({ kind: "permission", reply: "reject", ...(message.trim() ? { message: message.trim() } : {}) })
              }
            >
              Reject
            </button>
          </div>
        </>
      ) : (
        <>
          {detail.questions.map((q, i) => (
            <fieldset key={i} className={missing === i ? "missing" : undefined}>
              {(detail.questions.length > 1 || q.question !== ask.title) && (
                <legend>
                  {q.header && q.header !== q.question ? <strong>{q.header}: </strong> : null}
                  {q.question}
                  {q.multiple ? <small className="muted"> (choose any)</small> : null}
                </legend>
              )}
              <div className="buttons options">
                {q.options.map((o) => {
                  const on = (chosen[i] ?? []).includes(o.label);
                  return (
                    <button
                      key={o.label}
                      type="button"
                      className={on ? "" : "outline"}
                      aria-pressed={on}
                      title={o.description || undefined}
                      onClick={() => {
                        if (answersInOneClick(detail.questions)) {
                          send.mutate({ kind: "question", answers: [[o.label]] });
                          return;
                        }
                        const next = [...chosen];
                        next[i] = toggleChoice(chosen[i] ?? [], o.label, !!q.multiple);
                        setChosen(next);
                      }}
                    >
                      {o.label}
                    </button>
                  );
                })}
              </div>
              {q.custom !== false && (
                <input
                  placeholder={q.options.length ? "…or type an answer" : "Your answer"}
                  aria-label={`Answer to: ${q.question}`}
                  value={typed[i] ?? ""}
                  onChange={(e) => {
                    const next = [...typed];
                    next[i] = e.target.value;
                    setTyped(next);
                  }}
                  onKeyDown={(e) => e.key === "Enter" && submit()}
                />
              )}
            </fieldset>
          ))}
          {missing !== null && <p className="error">Answer question {missing + 1} first.</p>}
          <div className="buttons">
            {!answersInOneClick(detail.questions) || detail.questions[0].custom !== false ? (
              <button onClick={submit}>Send answer</button>
            ) : null}
            <button className="secondary outline" onClick={() => send.mutate({ kind: "dismiss" })}>
              Dismiss
            </button>
          </div>
        </>
      )}
      <ErrorNote error={send.error} />
    </article>
  );
}
