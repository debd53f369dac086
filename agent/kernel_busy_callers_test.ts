/**
 * A guard for async helpers that were synchronous under the same name: every call of them in
 * the repository's non-test code must await, return or pass on its promise. deno lint has no
 * floating-promise rule and the type checker accepts a dropped promise, so a caller written
 * (or kept) in the old style would go on before the retry or the deletion is done, and its
 * failure would surface as an unhandled rejection that ends the agent.
 */

import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { declaresAsync, unawaitedCalls } from "../tests/helpers/unawaited_calls.ts";

/** The guarded helpers: async now, synchronous before (what they were then). */
const ONCE_SYNC: Record<string, string> = {
  retryWhileKernelBusy: "kernel_busy.ts: slept blocking between tries until 0096446",
  syncAll: "anycast.ts AnycastRoutes: synchronous until 0096446",
  applyConfig: "routing.ts NodeRouting: the kernel half of configure, synchronous before 0096446",
  "#syncSummaries": "routing.ts NodeRouting: synchronous until 0096446",
  "#configureRouting": "agent.ts Agent: synchronous until 0096446",
  removeVeth: "datapath.ts Datapath: replaced the synchronous teardown/detach (f08c433)",
};

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Directories that hold no shipped code: tests, tools, build output, VCS. */
const SKIPPED_DIRS = new Set(["tests", "dist", "node_modules"]);

/** The repository's non-test TypeScript files (absolute paths). */
async function sourceFiles(dir = ROOT): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) {
      if (entry.name.startsWith(".") || SKIPPED_DIRS.has(entry.name)) continue;
      files.push(...await sourceFiles(path));
    } else if (entry.isFile && entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) {
      files.push(path);
    }
  }
  return files;
}

Deno.test("once-synchronous async helpers: every call in non-test code handles its promise", async () => {
  const files = await sourceFiles();
  const dropped: string[] = [];
  const declared = new Set<string>();
  for (const file of files) {
    const source = await Deno.readTextFile(file);
    for (const call of unawaitedCalls(source, Object.keys(ONCE_SYNC))) {
      dropped.push(`${relative(ROOT, file)}:${call.line}: ${call.text}`);
    }
    for (const name of Object.keys(ONCE_SYNC)) if (declaresAsync(source, name)) declared.add(name);
  }
  assert.deepEqual(
    dropped,
    [],
    `async helpers called without await/return/assignment (the caller would not wait):\n` +
      dropped.join("\n"),
  );
  // A renamed or no longer async helper: the list must follow, or it guards nothing.
  assert.deepEqual(
    Object.keys(ONCE_SYNC).filter((name) => !declared.has(name)),
    [],
    `guarded names no async function or method declares (renamed?) in ${files.length} files`,
  );
});

Deno.test("unawaitedCalls: a call standing alone as a statement is found, with its line", () => {
  const source = [
    'retryWhileKernelBusy("links", () => listLinks(h));',
    "if (busy) this.#anycast!.syncAll();",
    "else d.datapath.removeVeth(id, {});",
    "for (const r of records) {",
    "  retryWhileKernelBusy<Link[]>(`repair of ${r.id}`, () => repair(r));",
    "}",
    "const later = () => {",
    "  this.#syncSummaries({ attempts: 1 });",
    "};",
    "make(h).removeVeth(id);",
    "new Datapath(h).removeVeth(id);",
  ].join("\n");
  const found = unawaitedCalls(source, Object.keys(ONCE_SYNC));
  assert.deepEqual(found.map((c) => [c.line, c.name]), [
    [1, "retryWhileKernelBusy"],
    [2, "syncAll"],
    [3, "removeVeth"],
    [5, "retryWhileKernelBusy"],
    [8, "#syncSummaries"],
    [10, "removeVeth"],
    [11, "removeVeth"],
  ]);
  assert.equal(found[1].text, "if (busy) this.#anycast!.syncAll();");
});

Deno.test("unawaitedCalls: awaited, returned, assigned, passed on or chained calls pass", () => {
  const source = [
    "const links = await retryWhileKernelBusy('links', () => listLinks(h));",
    "const readLinks = () =>",
    "  retryWhileKernelBusy(",
    "    'links',",
    "    () => listLinks(h),",
    "  );",
    "return retryWhileKernelBusy('x', f);",
    "const present = (await retryWhileKernelBusy('routes', f)).filter((r) => r.ok);",
    "const anycast = await d.anycast?.syncAll();",
    "await Promise.all([d.datapath.removeVeth(a), d.datapath.removeVeth(b)]);",
    "this.#track(this.#routing.applyConfig(node));",
    "pending = this.#syncSummaries();",
    "anycast.syncAll().catch((e) => log(e));",
    "void this.#configureRouting(node);",
    "const p = busy ? retryWhileKernelBusy('x', f) : undefined;",
    "x = { run: () => removeVeth(id) };",
  ].join("\n");
  assert.deepEqual(unawaitedCalls(source, Object.keys(ONCE_SYNC)), []);
});

Deno.test("unawaitedCalls: declarations, comments, strings and regexes are no calls", () => {
  const source = [
    "export async function retryWhileKernelBusy<T>(what: string, fn: () => T): Promise<T> {",
    "}",
    "class A {",
    "  async syncAll(): Promise<void> {}",
    "  async #syncSummaries(retry?: Options): Promise<void> {}",
    "  removeVeth(id: string): Promise<void> {",
    "    return Promise.resolve();",
    "  }",
    "}",
    "interface D { removeVeth(id: string): Promise<void>; }",
    "// retryWhileKernelBusy('in a comment');",
    "/* syncAll(); */",
    "const s = 'retryWhileKernelBusy(1);';",
    "const t = `removeVeth(${id});`;",
    "const r = /syncAll\\(\\);/;",
    "const q = a / b; applyConfig;",
  ].join("\n");
  assert.deepEqual(unawaitedCalls(source, Object.keys(ONCE_SYNC)), []);
  assert.ok(declaresAsync(source, "retryWhileKernelBusy"));
  assert.ok(declaresAsync(source, "#syncSummaries"));
  assert.ok(!declaresAsync(source, "removeVeth"));
});
