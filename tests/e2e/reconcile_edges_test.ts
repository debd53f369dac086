/**
 * Start-up reconcile against states a crash or an operator leaves on a node while the agent is
 * down: each test kills the agent with SIGKILL, changes the node by hand, starts the agent again
 * and checks what an operator would (`ip link`, `ip route`, the store, CHECK, ping).
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, run } from "../helpers/exec.ts";
import { join } from "node:path";
import { flockExecutable } from "../helpers/flock.ts";
import { addLivePod, assertNodeHolds, hostIfaceOf, storeRecords } from "../helpers/node_state.ts";

/** The MTU `ip link` shows for `ifname` in `ns`. */
async function mtuOf(ns: TestNamespace, ifname: string): Promise<number> {
  const [link] = await ns.ipJson<{ mtu: number }[]>(["link", "show", "dev", ifname]);
  return link.mtu;
}

Deno.test({
  name: "reconcile: a host veth deleted by hand is remade with the node's MTU, routes and anycast",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: {
        cidr6: "fd00:e1::/64",
        cidr4: "10.225.0.0/24",
        mtu: 1400,
        anycastCIDRs: ["fd00:e1ff::/64"],
      },
    });
    await using nsA = await TestNamespace.create("flk-rea");
    await using nsB = await TestNamespace.create("flk-reb");
    const podA = await addLivePod(node, "re-a", nsA.path, {
      "flock.fritzlab.net/anycast": "fd00:e1ff::7",
    });
    const podB = await addLivePod(node, "re-b", nsB.path);
    const hostA = storeRecords(node).find((r) => r.containerId === "re-a")!.hostIface;
    assert.equal(await mtuOf(node.ns, hostA), 1400);

    await node.kill("SIGKILL");
    await node.ns.ip(["link", "del", hostA]);
    await node.startAgent();

    assert.equal(await mtuOf(node.ns, hostA), 1400, "host side MTU after the repair");
    assert.equal(await mtuOf(nsA, "eth0"), 1400, "pod side MTU after the repair");
    const anycast = await node.ns.ipJson<{ dst: string; dev: string }[]>([
      "-6",
      "route",
      "show",
      "proto",
      "201",
      "fd00:e1ff::7",
    ]);
    assert.deepEqual(anycast.map((r) => r.dev), [hostA], "the anycast route is back");
    const check = await node.cni("CHECK", { containerId: "re-a", netns: nsA.path });
    assert.equal(check.code, 0, check.stdout);
    for (const ip of podA.ips) assert.ok(await ping(nsB, ip), `B → repaired A ${ip}`);
    const routes = (await node.flockRoutes()).map((r) => r.dst.replace(/\/(32|128)$/, ""))
      .filter((d) => d !== "169.254.1.1" && d !== "fd00:e1ff::7");
    assert.deepEqual(routes.sort(), [...podA.ips, ...podB.ips].sort());
  },
});

Deno.test({
  name: "reconcile: gone netns, a releasing record without netns, orphan routes and foreign links",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:e2::/64", cidr4: "10.226.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-rea");
    const nsB = await TestNamespace.create("flk-reb");
    const nsC = await TestNamespace.create("flk-rec");
    try {
      const podA = await addLivePod(node, "re-a", nsA.path);
      const podB = await addLivePod(node, "re-b", nsB.path);
      await addLivePod(node, "re-c", nsC.path);

      // C's DEL dies once its record is releasing; then its netns goes, as B's does.
      await node.kill("SIGKILL");
      await node.startAgent({ env: { FLOCK_TEST_CRASH_AT: "del-after-releasing" } });
      const del = await node.cni("DEL", { containerId: "re-c", netns: nsC.path });
      assert.notEqual(del.code, 0, "the agent died in the DEL");
      await node.kill("SIGKILL");
      assert.equal(storeRecords(node).find((r) => r.containerId === "re-c")?.state, "releasing");
      await nsB.remove();
      await nsC.remove();
      // Left by hand: flock routes to no pod, a flock-named veth with both ends on the node.
      await node.ns.ip(["-6", "route", "add", "fd00:e2::dead/128", "dev", "lo", "proto", "201"]);
      await node.ns.ip(["route", "add", "10.226.0.250/32", "dev", "lo", "proto", "201"]);
      await node.ns.ip(["link", "add", "flock0badcafe", "type", "veth", "peer", "flk-stray"]);
      await node.startAgent();

      const records = storeRecords(node).map((r) => `${r.containerId} ${r.state}`).sort();
      assert.deepEqual(records, ["re-a committed", "re-b committed"], "B waits for its DEL");
      assert.deepEqual(await node.flockLinks(), [hostIfaceOf(node, "re-a")]);
      const links = await node.ns.ipJson<{ ifname: string }[]>(["link", "show"]);
      assert.ok(!links.some((l) => l.ifname === "flk-stray"), "the stray peer went with it");
      const routes = (await node.flockRoutes()).map((r) => r.dst.replace(/\/(32|128)$/, ""))
        .filter((d) => d !== "169.254.1.1");
      assert.deepEqual(routes.sort(), [...podA.ips].sort());
      const delB = await node.cni("DEL", { containerId: "re-b", netns: nsB.path });
      assert.equal(delB.code, 0, delB.stdout);
      await assertNodeHolds(node, [podA], "after B's DEL");
      // B's and C's addresses are free again (cooldown 0): two new pods may take them.
      await using nsD = await TestNamespace.create("flk-red");
      const podD = await addLivePod(node, "re-d", nsD.path);
      assert.ok(podD.ips.every((ip) => !podA.ips.includes(ip)));
      assert.ok(podB.ips.length === 2);
    } finally {
      await nsB.remove();
      await nsC.remove();
    }
  },
});

Deno.test({
  name: "a state dir on a read-only file system: the agent logs why and exits 1",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-ro");
    const dir = await Deno.makeTempDir({ prefix: "flock-ro-" });
    try {
      const readOnly = join(dir, "ro");
      await Deno.mkdir(readOnly);
      const config = join(dir, "nodeconfig.json");
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          apiVersion: "flock.fritzlab.net/v1alpha1",
          kind: "NodeConfig",
          metadata: { name: "ro" },
          spec: { cidr6: "fd00:e3::/64" },
        }),
      );
      const agent = [
        await flockExecutable(),
        "agent",
        "--node",
        "ro",
        "--config",
        config,
        "--state-dir",
        join(readOnly, "state"),
        "--socket",
        join(dir, "flock.sock"),
        "--http",
        "off",
      ].join(" ");
      // A read-only mount seen only by the agent's own mount namespace, in a test netns.
      const r = await run([
        "nsenter",
        `--net=${ns.path}`,
        "--",
        "unshare",
        "-m",
        "sh",
        "-c",
        `mount --make-rprivate / && mount -t tmpfs -o ro tmpfs ${readOnly} && exec ${agent}`,
      ], { timeoutMs: 30_000 });
      assert.equal(r.code, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /Uncaught/, "an error line, not a crash");
      const errors = r.stderr.split("\n").filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l)).filter((l) => l.level === "error");
      assert.equal(errors.length, 1, r.stderr);
      assert.match(errors[0].error, /Read-only file system/);
      assert.ok(errors[0].error.includes(join(readOnly, "state")), "names the state dir");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
