import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "./flock.ts";
import { ROOT_ONLY } from "./exec.ts";

Deno.test({
  name: "FlockNode: agent in a node namespace, pods through the exec path, kill -9 and restart",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:77::/64", cidr4: "10.77.0.0/24" },
    });
    // libcni caches results per network name machine-wide: every node has a name of its own.
    assert.match(node.networkName, new RegExp(`^flock-${Deno.pid}-\\d+$`));
    assert.equal((await node.conflist()).name, node.networkName);
    await using a = await TestNamespace.create("flk-pa");
    await using b = await TestNamespace.create("flk-pb");
    const ra = await node.cni("ADD", { containerId: "ctr-a", netns: a.path });
    assert.equal(ra.code, 0, ra.stdout + ra.stderr);
    const rb = await node.cni("ADD", { containerId: "ctr-b", netns: b.path });
    assert.equal(rb.code, 0, rb.stdout);
    const bIps: string[] = rb.json.ips.map((i: { address: string }) => i.address.split("/")[0]);
    assert.equal(bIps.length, 2);
    for (const ip of bIps) assert.ok(await ping(a, ip), `ping ${ip}`);
    await node.restartAgent();
    for (const ip of bIps) assert.ok(await ping(a, ip), `ping ${ip} after restart`);
    assert.equal((await node.flockLinks()).length, 2);
    for (const id of ["ctr-a", "ctr-b"]) {
      const r = await node.cni("DEL", { containerId: id, netns: id === "ctr-a" ? a.path : b.path });
      assert.equal(r.code, 0, r.stdout);
    }
    assert.deepEqual(await node.flockLinks(), []);
    assert.deepEqual((await node.flockRoutes()).filter((r) => !r.dst.startsWith("169.254")), []);
  },
});

/** The variables named `FLOCK_TEST_HELPER_*` in the running agent's environment. */
async function helperVars(node: FlockNode): Promise<Record<string, string>> {
  const environ = await Deno.readTextFile(`/proc/${node.agent!.pid}/environ`);
  const vars = environ.split("\0").filter((kv) => kv.startsWith("FLOCK_TEST_HELPER_"));
  return Object.fromEntries(vars.map((kv) => kv.split("=", 2) as [string, string]));
}

Deno.test({
  name: "FlockNode: restartAgent keeps the last start's env, but for the variables it drops",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: { cidr6: "fd00:78::/64" } });
    assert.deepEqual(await helperVars(node), {});
    await node.kill();
    await node.startAgent({ env: { FLOCK_TEST_HELPER_A: "1", FLOCK_TEST_HELPER_B: "2" } });
    await node.restartAgent();
    assert.deepEqual(await helperVars(node), {
      FLOCK_TEST_HELPER_A: "1",
      FLOCK_TEST_HELPER_B: "2",
    });
    await node.restartAgent({ without: ["FLOCK_TEST_HELPER_A"] });
    assert.deepEqual(await helperVars(node), { FLOCK_TEST_HELPER_B: "2" });
    await node.restartAgent();
    assert.deepEqual(await helperVars(node), { FLOCK_TEST_HELPER_B: "2" }, "dropped for good");
    await node.kill();
    await node.startAgent();
    assert.deepEqual(await helperVars(node), {}, "a start without env has none");
  },
});
