// Names for the generated OpenAPI types, plus the shapes the API documents as free-form
// objects (agent events, asks), which mirror atelier-runtimes' normalized events.
import type { components } from "./schema";

type S = components["schemas"];
export type Task = S["Task"];
export type TaskStatus = S["TaskStatus"];
export type TaskSpec = S["TaskSpec"];
export type Effort = S["Effort"];
export type TaskEvent = S["TaskEvent"];
export type Interaction = S["Interaction"];
export type Sandbox = S["Sandbox"];
export type SandboxState = S["SandboxState"];
export type SandboxList = S["SandboxList"];
export type Workspace = S["Workspace"];
export type WorkspaceSpec = S["WorkspaceSpec"];
export type WorkspacePatch = S["WorkspacePatch"];
export type RepoSpec = S["RepoSpec"];
export type DevCommand = S["DevCommand"];
export type Preview = S["Preview"];
export type PreviewLink = S["PreviewLink"];
export type Resources = S["Resources"];
export type SessionTemplate = S["SessionTemplate"];
export type SystemInfo = S["SystemInfo"];
export type ImageView = S["ImageView"];
export type DirListing = S["DirListing"];
export type FileStat = S["FileStat"];
export type ServiceStatus = S["ServiceStatus"];
export type LogChunk = S["LogChunk"];
export type Prebuild = S["Prebuild"];
export type PrebuildState = S["PrebuildState"];
export type PrebuildStatus = S["PrebuildStatus"];
export type RepoCommit = S["RepoCommit"];
export type StartPrebuild = S["StartPrebuild"];
export type CreateSandbox = S["CreateSandbox"];
export type ApiEvent = S["Event"];
export type ErrorBody = S["ErrorBody"];

export interface QuestionOption {
  label: string;
  description?: string;
}
export interface Question {
  question: string;
  header?: string;
  options: QuestionOption[];
  multiple?: boolean;
  /** Free text is accepted besides the options (default true). */
  custom?: boolean;
}
export interface QuestionDetail {
  kind: "question";
  questions: Question[];
}
export interface PermissionDetail {
  kind: "permission";
  tool: string;
  patterns: string[];
  always?: string[];
  detail?: unknown;
}
export type AskDetail = QuestionDetail | PermissionDetail;

export type Answer =
  | { kind: "question"; answers: string[][] }
  | { kind: "permission"; reply: "once" | "always" | "reject"; message?: string }
  | { kind: "dismiss" };

/** A normalized agent event (the `event` of a TaskEvent, the `activity` of task_activity). */
export type AgentEvent =
  | { type: "status"; state: string; message?: string }
  | { type: "text" | "reasoning"; message_id: string; part_id: string; delta?: string; text?: string }
  | {
      type: "tool_call";
      id: string;
      name: string;
      status: string;
      title?: string;
      input?: unknown;
      output?: string;
      error?: string;
    }
  | { type: "files_touched"; paths: string[] }
  | { type: "todos"; items: { content: string; status: string }[] }
  | ({ type: "interaction_asked"; id: string; title: string } & Record<string, unknown>)
  | { type: "interaction_resolved"; id: string; outcome: { kind: string; answers?: string[][] } }
  | { type: "usage"; input_tokens: number; output_tokens: number; cost_usd?: number }
  | { type: "turn_ended"; reason: string; error?: string }
  | { type: "raw"; kind: string; value: unknown };
