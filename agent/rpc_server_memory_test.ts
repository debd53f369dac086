/**
 * The RPC server keeps nothing per request once it has answered: a long-running agent serves
 * pods for months. Measured in a child process with `--expose-gc`, so that live objects, not
 * garbage awaiting collection, are counted.
 */

import assert from "node:assert/strict";
import { join } from "node:path";

/** The child: an RpcServer with a trivial handler, a raw client, heap after a full GC. */
const CHILD = `
import { RpcServer } from ${JSON.stringify(new URL("./rpc_server.ts", import.meta.url).href)};
const [path, count] = [Deno.args[0], Number(Deno.args[1])];
const server = new RpcServer({ path, handler: () => Promise.resolve({ ok: true, result: {} }) });
await server.start();
const request = new TextEncoder().encode(JSON.stringify({
  command: "ADD", containerId: "c", netns: "/run/netns/x", ifname: "eth0", args: "",
  config: { cniVersion: "1.1.0", name: "flock" },
}) + "\\n");
async function call() {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(request);
    const buf = new Uint8Array(4096);
    while ((await conn.read(buf)) !== null) { /* until the server closes */ }
  } finally {
    conn.close();
  }
}
const liveHeap = () => { gc(); gc(); return Deno.memoryUsage().heapUsed; };
for (let i = 0; i < 200; i++) await call();
const before = liveHeap();
for (let i = 0; i < count; i++) await call();
const after = liveHeap();
await server.close();
console.log(JSON.stringify({ before, after }));
`;

Deno.test("RpcServer: served requests leave no live objects behind", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-mem-" });
  try {
    const script = join(dir, "child.ts");
    await Deno.writeTextFile(script, CHILD);
    const requests = 3_000;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--no-lock",
        "--no-config",
        "--v8-flags=--expose-gc",
        script,
        join(dir, "flock.sock"),
        String(requests),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, stderr);
    const { before, after } = JSON.parse(new TextDecoder().decode(out.stdout));
    const perRequest = (after - before) / requests;
    // Racing each read against one server-lifetime promise kept ~1,200 bytes per request.
    assert.ok(perRequest < 100, `live heap grew ${perRequest.toFixed(0)} bytes per request`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
