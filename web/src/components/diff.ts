// Splits a unified diff (`git diff`) into files, each with its lines classified.
export type DiffLineKind = "add" | "del" | "ctx" | "hunk" | "meta";
export interface DiffLine {
  kind: DiffLineKind;
  text: string;
}
export interface DiffFile {
  path: string;
  added: number;
  removed: number;
  lines: DiffLine[];
}

export function parseDiff(diff: string): DiffFile[] {
  const files: DiffFile[] = [];
  let cur: DiffFile | null = null;
  let inHunk = false;
  for (const line of diff.split("\n")) {
    if (line.startsWith("diff --git ")) {
      const m = / b\/(.*)$/.exec(line);
      cur = { path: m ? m[1] : line.slice(11), added: 0, removed: 0, lines: [] };
      files.push(cur);
      inHunk = false;
      continue;
    }
    if (!cur) continue;
    if (line.startsWith("@@")) {
      inHunk = true;
      cur.lines.push({ kind: "hunk", text: line });
    } else if (!inHunk) {
      if (line.startsWith("+++ ") && !line.startsWith("+++ /dev/null")) cur.path = line.slice(4).replace(/^b\//, "");
    } else if (line.startsWith("+")) {
      cur.added++;
      cur.lines.push({ kind: "add", text: line.slice(1) });
    } else if (line.startsWith("-")) {
      cur.removed++;
      cur.lines.push({ kind: "del", text: line.slice(1) });
    } else if (line.startsWith("\\")) {
      cur.lines.push({ kind: "meta", text: line });
    } else if (line.length > 0 || cur.lines.length > 0) {
      cur.lines.push({ kind: "ctx", text: line.slice(1) });
    }
  }
  for (const f of files) while (f.lines.length && f.lines[f.lines.length - 1].kind === "ctx" && f.lines[f.lines.length - 1].text === "") f.lines.pop();
  return files;
}

const LANGS: Record<string, string> = {
  ts: "typescript", tsx: "typescript", js: "javascript", jsx: "javascript", mjs: "javascript", cjs: "javascript",
  rs: "rust", py: "python", go: "go", json: "json", css: "css", html: "xml", xml: "xml", svg: "xml",
  sh: "bash", bash: "bash", yml: "yaml", yaml: "yaml", toml: "ini", md: "markdown", sql: "sql",
};

export function languageOf(path: string): string | null {
  const ext = path.split(".").pop()?.toLowerCase() ?? "";
  return LANGS[ext] ?? null;
}
