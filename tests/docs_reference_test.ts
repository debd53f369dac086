/**
 * The operator's reference cannot drift from the code: every NodeConfig field the parser reads,
 * every pod annotation, every metric, every `FLOCK_*` environment variable and every `flock agent`
 * flag must be named in docs/operations.md, and the other docs must exist.
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

/** Every non-test `.ts` source file of the product (tests and benchmarks left out). */
async function productSources(): Promise<string[]> {
  const out: string[] = [];
  for (const dir of ["agent", "bird", "netlink"]) {
    for await (const entry of Deno.readDir(join(REPO_ROOT, dir))) {
      if (entry.isDirectory) {
        for await (const sub of Deno.readDir(join(REPO_ROOT, dir, entry.name))) {
          if (sub.name.endsWith(".ts") && !sub.name.endsWith("_test.ts")) {
            out.push(`${dir}/${entry.name}/${sub.name}`);
          }
        }
      } else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) {
        out.push(`${dir}/${entry.name}`);
      }
    }
  }
  return [...out, "main.ts", "cni.ts"];
}

Deno.test("docs: every FLOCK_* environment variable an operator can set is in the reference", async () => {
  const ops = await read("docs/operations.md");
  let code = "";
  for (const path of await productSources()) code += await read(path);
  // Read as env.FLOCK_X (the plugin's env object) or by name ("FLOCK_X"); FLOCK_TEST_* are tests'.
  const names = namesIn(code, /(?:\benv\.|["'`])(FLOCK_[A-Z][A-Z0-9_]*)\b/g)
    .filter((n) => !n.startsWith("FLOCK_TEST_"));
  for (const want of ["FLOCK_SOCKET", "FLOCK_CNI_LOG", "FLOCK_DELETED_PEER_GRACE_MS"]) {
    assert.ok(names.includes(want), `${want} not found by the scan`);
  }
  const missing = names.filter((n) => !ops.includes(`\`${n}\``));
  assert.deepEqual(missing, [], "environment variables missing from docs/operations.md");
});

Deno.test("docs: every `flock agent` flag is in the reference", async () => {
  const ops = await read("docs/operations.md");
  const main = await read("agent/agent_main.ts");
  const options = main.slice(main.indexOf("options: {"), main.indexOf("strict:"));
  const flags = namesIn(options, /^\s+"?([a-z][a-z-]*)"?: \{/gm);
  assert.ok(flags.includes("nodeconfig-wait-ms") && flags.length >= 10, flags.join());
  const missing = flags.filter((f) => !ops.includes(`\`--${f}`));
  assert.deepEqual(missing, [], "agent flags missing from docs/operations.md");
});
