// Per-file diff with light syntax highlighting (highlight.js core + a few grammars, loaded
// with this view only, each line highlighted on its own).
import hljs from "highlight.js/lib/core";
import typescript from "highlight.js/lib/languages/typescript";
import javascript from "highlight.js/lib/languages/javascript";
import rust from "highlight.js/lib/languages/rust";
import python from "highlight.js/lib/languages/python";
import go from "highlight.js/lib/languages/go";
import json from "highlight.js/lib/languages/json";
import css from "highlight.js/lib/languages/css";
import xml from "highlight.js/lib/languages/xml";
import bash from "highlight.js/lib/languages/bash";
import yaml from "highlight.js/lib/languages/yaml";
import ini from "highlight.js/lib/languages/ini";
import markdown from "highlight.js/lib/languages/markdown";
import sql from "highlight.js/lib/languages/sql";
import { languageOf, parseDiff, type DiffLine } from "./diff";

for (const [name, lang] of Object.entries({ typescript, javascript, rust, python, go, json, css, xml, bash, yaml, ini, markdown, sql }))
  hljs.registerLanguage(name, lang);

function Line({ line, language }: { line: DiffLine; language: string | null }) {
  const sign = line.kind === "add" ? "+" : line.kind === "del" ? "-" : " ";
  if (line.kind === "hunk" || line.kind === "meta" || !language) {
    return (
      <div className={`dl dl-${line.kind}`}>
        {line.kind === "hunk" || line.kind === "meta" ? line.text : sign + line.text}
      </div>
    );
  }
  const html = hljs.highlight(line.text, { language, ignoreIllegals: true }).value;
  return (
    <div className={`dl dl-${line.kind}`}>
      {sign}
      <span dangerouslySetInnerHTML={{ __html: html }} />
    </div>
  );
}

export default function DiffView({ diff }: { diff: string }) {
  const files = parseDiff(diff);
  if (!files.length) return <p className="muted">No changes on this branch.</p>;
  return (
    <div className="diff" data-testid="diff">
      {files.map((f) => (
        <details key={f.path} open={files.length <= 8}>
          <summary>
            <code>{f.path}</code> <span className="add">+{f.added}</span> <span className="del">−{f.removed}</span>
          </summary>
          <pre>
            {f.lines.map((l, i) => (
              <Line key={i} line={l} language={languageOf(f.path)} />
            ))}
          </pre>
        </details>
      ))}
    </div>
  );
}
