import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import type { Interaction } from "../api/types";
import { saveToken } from "../api/token";
import { recordFetch, renderInApp } from "../test/render";
import { AttentionCard } from "./AttentionCard";
import { buildAnswer } from "./answer";

const ask = (kind: string, detail: Record<string, unknown>, title = "Formal or casual greeting?"): Interaction => ({
  id: "que_1",
  task_id: "t1",
  kind,
  title,
  detail,
  asked_at: new Date().toISOString(),
});

const singleChoice = ask("question", {
  questions: [{ question: "Formal or casual greeting?", options: [{ label: "Formal" }, { label: "Casual" }], custom: true }],
});

const twoQuestions = ask(
  "question",
  {
    questions: [
      { question: "Which database should I use?", header: "Database", options: [{ label: "Postgres" }, { label: "SQLite" }], custom: true, multiple: false },
      { question: "Which features?", options: [{ label: "auth" }, { label: "billing" }, { label: "search" }], custom: false, multiple: true },
    ],
  },
  "Which database should I use?",
);

describe("AttentionCard", () => {
  beforeEach(() => {
    localStorage.clear();
    saveToken("atl_test");
  });
  afterEach(() => vi.unstubAllGlobals());

  it("answers a single-choice question with one tap on an option", async () => {
    const calls = recordFetch();
    renderInApp(<AttentionCard ask={singleChoice} taskTitle="Greeting" />);
    await userEvent.click(await screen.findByRole("button", { name: "Formal" }));
    await waitFor(() => expect(calls).toHaveLength(1));
    expect(calls[0]).toEqual({
      url: "/api/v1/attention/t1/que_1/answer",
      method: "POST",
      body: { kind: "question", answers: [["Formal"]] },
      auth: "Bearer atl_test",
    });
  });

  it("sends free text instead of an option when the question allows it", async () => {
    const calls = recordFetch();
    renderInApp(<AttentionCard ask={singleChoice} />);
    await userEvent.type(await screen.findByLabelText(/Answer to/), "Warm but brief");
    await userEvent.click(screen.getByRole("button", { name: "Send answer" }));
    await waitFor(() => expect(calls).toHaveLength(1));
    expect(calls[0].body).toEqual({ kind: "question", answers: [["Warm but brief"]] });
  });

  it("collects several questions, multiple choices included, and refuses to send one unanswered", async () => {
    const calls = recordFetch();
    renderInApp(<AttentionCard ask={twoQuestions} />);
    await userEvent.click(await screen.findByRole("button", { name: "Postgres" }));
    await userEvent.click(screen.getByRole("button", { name: "Send answer" }));
    expect(await screen.findByText("Answer question 2 first.")).toBeTruthy();
    expect(calls).toHaveLength(0);
    // the features question takes no free text
    expect(screen.queryByLabelText("Answer to: Which features?")).toBeNull();
    await userEvent.click(screen.getByRole("button", { name: "auth" }));
    await userEvent.click(screen.getByRole("button", { name: "search" }));
    expect(screen.getByRole("button", { name: "search" }).getAttribute("aria-pressed")).toBe("true");
    await userEvent.click(screen.getByRole("button", { name: "Send answer" }));
    await waitFor(() => expect(calls).toHaveLength(1));
    expect(calls[0].body).toEqual({ kind: "question", answers: [["Postgres"], ["auth", "search"]] });
  });

  it("replies to a permission request, with a note when rejecting", async () => {
    const calls = recordFetch();
    renderInApp(<AttentionCard ask={ask("permission", { tool: "bash", patterns: ["rm -rf build"] }, "Run rm -rf build?")} />);
    expect(await screen.findByText("rm -rf build")).toBeTruthy();
    await userEvent.type(screen.getByLabelText("Note for the agent"), "use make clean");
    await userEvent.click(screen.getByRole("button", { name: "Reject" }));
    await waitFor(() => expect(calls).toHaveLength(1));
    expect(calls[0].body).toEqual({ kind: "permission", reply: "reject", message: "use make clean" });
  });
});

describe("buildAnswer", () => {
  it("keeps one label for single-choice questions and ignores labels that are not options", () => {
    const q = [{ question: "?", options: [{ label: "A" }, { label: "B" }] }];
    expect(buildAnswer(q, [["Z", "B"]], [])).toEqual({ answer: { kind: "question", answers: [["B"]] } });
    expect(buildAnswer(q, [[]], [" "])).toEqual({ missing: 0 });
  });
});
