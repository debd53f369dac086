import assert from "node:assert/strict";
import { RpcServer } from "./rpc_server.ts";

/** Open file descriptors of this process (the server runs in it). */
function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

Deno.test("RpcServer: a client that sends nothing gets EOF, and no descriptor is leaked", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-rpc-" });
  const path = `${dir}/flock.sock`;
  const server = new RpcServer({ path, handler: () => Promise.resolve({ ok: true }) });
  await server.start();
  try {
    // Half-closed without a request: the server must close its end, not keep it forever.
    const conn = await Deno.connect({ transport: "unix", path });
    await conn.closeWrite();
    const timer = setTimeout(() => conn.close(), 5_000);
    const answer = await new Response(conn.readable).text().finally(() => clearTimeout(timer));
    assert.equal(answer, "");

    // Connect-and-close, as a liveness probe does: the count of open descriptors stays flat.
    const before = openFds();
    for (let i = 0; i < 200; i++) (await Deno.connect({ transport: "unix", path })).close();
    let after = openFds();
    for (let i = 0; i < 50 && after > before + 20; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      after = openFds();
    }
    assert.ok(after <= before + 20, `descriptors: ${before} before, ${after} after 200 probes`);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
