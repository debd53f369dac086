import assert from "node:assert/strict";
import { handleHttp, parseListenAddress, startHttpEndpoint } from "./http_server.ts";
import { Agent } from "./agent.ts";
import { parseNodeConfig } from "./config.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { inProcessAgent } from "../tests/helpers/in_process_agent.ts";

Deno.test("http: listen addresses", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:9603"), { hostname: "127.0.0.1", port: 9603 });
  assert.deepEqual(parseListenAddress("[::1]:0"), { hostname: "::1", port: 0 });
  assert.deepEqual(parseListenAddress(":9603"), { hostname: "::", port: 9603 });
  assert.deepEqual(parseListenAddress("localhost:80"), { hostname: "localhost", port: 80 });
  for (const bad of ["9603", "1.2.3.4", "::1:9603", "h:70000", "h:x"]) {
    assert.throws(() => parseListenAddress(bad), Error, bad);
  }
});

Deno.test("http: `:PORT` answers on IPv6 and IPv4 loopback alike", async () => {
  const source = { notReadyReason: () => undefined, metrics: () => Promise.resolve("") };
  await using http = await startHttpEndpoint(parseListenAddress(":0"), source);
  for (const host of ["127.0.0.1", "[::1]"]) {
    const res = await fetch(`http://${host}:${http.address.port}/healthz`);
    assert.equal(res.status, 200, host);
    await res.body?.cancel();
  }
});

Deno.test("http: routes, methods and content types", async () => {
  let reason: string | undefined = "waiting for the node configuration";
  const source = { notReadyReason: () => reason, metrics: () => Promise.resolve("m 1\n") };
  const get = (path: string, method = "GET") =>
    handleHttp(new Request(`http://x${path}`, { method }), source);
  assert.equal((await get("/healthz")).status, 200);
  const notReady = await get("/readyz");
  assert.equal(notReady.status, 503);
  assert.equal(await notReady.text(), "not ready: waiting for the node configuration\n");
  reason = undefined;
  assert.equal((await get("/readyz")).status, 200);
  const metrics = await get("/metrics");
  assert.equal(metrics.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  assert.equal(await metrics.text(), "m 1\n");
  assert.equal((await get("/nope")).status, 404);
  assert.equal((await get("/metrics", "POST")).status, 405);
});

Deno.test({
  name: "http: /readyz is 503 until the agent has its config and has reconciled, then 200",
  ...ROOT_ONLY,
  async fn() {
    await using node = await inProcessAgent("flk-http", "http-node");
    const { agent } = node;
    await agent.listen();
    await using http = await startHttpEndpoint({ hostname: "127.0.0.1", port: 0 }, {
      notReadyReason: () => agent.notReadyReason(),
      metrics: () => agent.metrics!.encode(),
    });
    const get = (path: string) => fetch(`http://127.0.0.1:${http.address.port}${path}`);
    const before = await get("/readyz");
    assert.equal(before.status, 503);
    assert.match(await before.text(), /waiting for the node configuration/);
    assert.equal(await (await get("/healthz")).text(), "ok\n");
    assert.match(await (await get("/metrics")).text(), /^flock_agent_ready 0$/m);
    const snap = await agent.status();
    assert.equal(snap.ready, false);
    assert.equal(snap.reason, "waiting for the node configuration");

    await agent.configure(
      parseNodeConfig({ cidr6: "fd00:5::/64", cidr4: "10.5.0.0/24" }, "test"),
    );
    const after = await get("/readyz");
    assert.equal(after.status, 200);
    await after.body?.cancel();
    const metrics = await (await get("/metrics")).text();
    assert.match(metrics, /^flock_agent_ready 1$/m);
    assert.match(
      metrics,
      /^flock_ipam_addresses_free\{family="ipv4",cidr="10.5.0.0\/24"\} 254$/m,
    );
    assert.match(
      metrics,
      /^flock_ipam_addresses_allocated\{family="ipv6",cidr="fd00:5::\/64"\} 0$/m,
    );
    assert.match(metrics, /^flock_reconcile_actions_total\{action="restored"\} 0$/m);
  },
});

Deno.test("agent: metrics can be turned off", () => {
  const agent = new Agent({
    nodeName: "n",
    stateDir: "/nonexistent",
    socketPath: "/x",
    metrics: false,
  });
  assert.equal(agent.metrics, undefined);
});
