// Generates src/api/schema.d.ts from openapi.json.
//
// The server names operations after its handler functions, so several routes share an
// operationId ("list", "get", ...). openapi-typescript keys its `operations` interface by
// that id, which would merge unrelated routes into one type. The dashboard addresses
// routes by path and method only, so the ids are dropped and every operation is written
// inline under its path.
import { readFile, writeFile } from "node:fs/promises";
import openapiTS, { astToString } from "openapi-typescript";

const here = new URL("..", import.meta.url);
const doc = JSON.parse(await readFile(new URL("openapi.json", here), "utf8"));
for (const item of Object.values(doc.paths ?? {})) {
  for (const op of Object.values(item)) {
    if (op && typeof op === "object" && "operationId" in op) delete op.operationId;
  }
}
const ast = await openapiTS(doc, { emptyObjectsUnknown: true });
const header = "/**\n * Generated from openapi.json by scripts/gen-api.mjs (npm run gen:api). Do not edit.\n */\n\n";
await writeFile(new URL("src/api/schema.d.ts", here), header + astToString(ast));
console.log("src/api/schema.d.ts written");
