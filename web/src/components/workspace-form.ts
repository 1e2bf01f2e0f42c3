// The workspace form's state and its conversion to the API's create and patch bodies.
import type { DevCommand, RepoSpec, Workspace, WorkspacePatch, WorkspaceSpec } from "../api/types";

export interface WorkspaceDraft {
  name: string;
  repos: { url: string; branch: string; path: string }[];
  init: string; // one command per line
  dev: { name: string; port: string; command: string }[];
  vcpus: string;
  memory: string;
  disk: string;
  baseImage: string;
  // The image extension, one entry per line: Debian packages, npm packages, build steps.
  imagePackages: string;
  imageNpm: string;
  imageRun: string;
  agentConfig: string; // JSON text
  newSecrets: { name: string; value: string }[];
  removeSecrets: string[];
}

export function emptyDraft(): WorkspaceDraft {
  return {
    name: "",
    repos: [{ url: "", branch: "main", path: "" }],
    init: "",
    dev: [],
    vcpus: "2",
    memory: "2048",
    disk: "10240",
    baseImage: "dev",
    imagePackages: "",
    imageNpm: "",
    imageRun: "",
    agentConfig: '{\n  "runtime": "opencode"\n}',
    newSecrets: [],
    removeSecrets: [],
  };
}

export function draftOf(w: Workspace): WorkspaceDraft {
  return {
    name: w.name,
    repos: w.repos.map((r) => ({ url: r.url, branch: r.branch ?? "", path: r.path ?? "" })),
    init: w.init_commands.join("\n"),
    dev: w.dev_commands.map((d) => ({ name: d.name, port: String(d.port), command: d.command })),
    vcpus: String(w.resources.vcpus),
    memory: String(w.resources.memory_mib),
    disk: String(w.resources.disk_mib),
    baseImage: w.base_image,
    imagePackages: (w.image?.packages ?? []).join("\n"),
    imageNpm: (w.image?.npm ?? []).join("\n"),
    imageRun: (w.image?.run ?? []).join("\n"),
    agentConfig: JSON.stringify(w.agent_config ?? {}, null, 2),
    newSecrets: [],
    removeSecrets: [],
  };
}

/** A field the form itself refuses, named like the API names it. */
export class DraftError extends Error {
  constructor(
    public field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

function int(field: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new DraftError(field, "must be a whole number");
  return n;
}

const lines = (v: string) => v.split("\n").map((l) => l.trim()).filter(Boolean);

/** The image extension the draft asks for; nothing added is `{base}`, which clears one. */
function imageOf(d: WorkspaceDraft) {
  const base = d.baseImage.trim() || "dev";
  return { base, packages: lines(d.imagePackages), npm: lines(d.imageNpm), run: lines(d.imageRun) };
}
const adds = (i: ReturnType<typeof imageOf>) => i.packages.length + i.npm.length + i.run.length > 0;

function common(d: WorkspaceDraft) {
  let agent_config: Record<string, unknown>;
  try {
    agent_config = JSON.parse(d.agentConfig || "{}");
  } catch {
    throw new DraftError("agent_config", "is not valid JSON");
  }
  if (!agent_config || typeof agent_config !== "object" || Array.isArray(agent_config))
    throw new DraftError("agent_config", "must be a JSON object");
  const repos: RepoSpec[] = d.repos
    .filter((r) => r.url.trim())
    .map((r) => ({ url: r.url.trim(), branch: r.branch.trim() || "main", path: r.path.trim() || null }));
  const dev_commands: DevCommand[] = d.dev
    .filter((x) => x.name.trim() || x.command.trim())
    .map((x, i) => ({ name: x.name.trim(), command: x.command.trim(), port: int(`dev_commands[${i}].port`, x.port) }));
  return {
    name: d.name.trim(),
    repos,
    init_commands: lines(d.init),
    dev_commands,
    resources: {
      vcpus: int("resources.vcpus", d.vcpus),
      memory_mib: int("resources.memory_mib", d.memory),
      disk_mib: int("resources.disk_mib", d.disk),
    },
    base_image: d.baseImage.trim() || "dev",
    agent_config,
  };
}

const secretsOf = (d: WorkspaceDraft) =>
  d.newSecrets.filter((s) => s.name.trim()).map((s) => ({ name: s.name.trim(), value: s.value }));

export function toSpec(d: WorkspaceDraft): WorkspaceSpec {
  const env = secretsOf(d);
  const image = imageOf(d);
  return { ...common(d), ...(adds(image) ? { image } : {}), ...(env.length ? { secrets: { env } } : {}) };
}

export function toPatch(d: WorkspaceDraft): WorkspacePatch {
  const env = secretsOf(d);
  return {
    ...common(d),
    image: imageOf(d),
    ...(env.length ? { secrets: { env } } : {}),
    ...(d.removeSecrets.length ? { remove_secrets: d.removeSecrets } : {}),
  };
}
