/**
 * The operator's reference cannot drift from the code: every NodeConfig field the parser reads,
 * every pod annotation and every metric must be named in docs/operations.md, and the other
 * docs must exist.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT } from "./helpers/tools.ts";
import { ANNOTATION_NAMES, ANNOTATION_PREFIX } from "../agent/annotations.ts";

const read = (path: string) => Deno.readTextFile(join(REPO_ROOT, path));

/** Names matched by `pattern`'s first group in `text`, sorted and unique. */
function namesIn(text: string, pattern: RegExp): string[] {
  return [...new Set([...text.matchAll(pattern)].map((m) => m[1]))].sort();
}

Deno.test("docs: every NodeConfig field the parser reads is in the operations reference", async () => {
  const ops = await read("docs/operations.md");
  // The parser reads each field through one accessor call: f.string("cidr6"), gr.integer(…), …
  const fields = namesIn(
    await read("agent/config.ts"),
    /\.(?:string|integer|boolean|array|object|get)\("([A-Za-z0-9]+)"/g,
  );
  assert.ok(fields.length >= 20, `found only ${fields.join(", ")}: did the parser change shape?`);
  for (const want of ["cidr6", "cidr4", "mtu", "anycastCIDRs", "bgp", "peers", "restartTime"]) {
    assert.ok(fields.includes(want), `${want} not found by the field scan`);
  }
  const missing = fields.filter((f) => !ops.includes(`\`${f}\``));
  assert.deepEqual(missing, [], `NodeConfig fields missing from docs/operations.md`);
});

Deno.test("docs: every pod annotation is in the operations reference", async () => {
  const ops = await read("docs/operations.md");
  const missing = ANNOTATION_NAMES.filter((n) => !ops.includes(`\`${ANNOTATION_PREFIX}${n}\``));
  assert.deepEqual(missing, [], "annotations missing from docs/operations.md");
});

Deno.test("docs: every metric is in the operations reference", async () => {
  const ops = await read("docs/operations.md");
  const metrics = namesIn(await read("agent/agent_metrics.ts"), /name: "(flock_[a-z_]+)"/g);
  assert.ok(metrics.length >= 10, `found only ${metrics.join(", ")}`);
  const missing = metrics.filter((m) => !ops.includes(`\`${m}\``));
  assert.deepEqual(missing, [], "metrics missing from docs/operations.md");
});

Deno.test("docs: architecture, operations and benchmarks exist and link each other", async () => {
  const arch = await read("docs/architecture.md");
  assert.match(arch, /```mermaid/);
  assert.match(arch, /The path of one ADD/);
  assert.match(await read("docs/operations.md"), /\(architecture\.md\)/);
  assert.match(await read("docs/benchmarks.md"), /metrics_bench\.ts/);
});
