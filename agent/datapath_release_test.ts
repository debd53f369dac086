/**
 * A pod's release in two halves (detach, then removeVeth) in real namespaces: what the kernel
 * does to a device's routes that lets the release skip their deletes, how many netlink requests
 * a dual-stack release costs, and that the deletes it kept still catch what they are for (a flock
 * route left on another link) while a veth that vanished half-way is no error.
 */

import assert from "node:assert/strict";
import { createNode, type NodeFixture, TestNamespace } from "../tests/helpers/netns.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { countNetlinkRequests } from "../tests/helpers/netlink_count.ts";
import { Datapath, type PodNetwork } from "./datapath.ts";
import { Handle, parseIP } from "../netlink/mod.ts";

const NODE = {
  prefix: "flk-dpr",
  ipv4: { node: "192.168.78.2/24", peer: "192.168.78.1/24" },
  ipv6: { node: "fd78::2/64", peer: "fd78::1/64" },
};

let pods = 0;
function podIn(ns: TestNamespace): PodNetwork {
  const n = ++pods;
  return {
    containerId: `release${Deno.pid}x${n}`,
    netns: ns.path,
    ifname: "eth0",
    ipv6: parseIP(`fd00:78::${n.toString(16)}`),
    ipv4: parseIP(`10.78.0.${n}`),
  };
}

/** A node with a Datapath and one pod namespace, all removed afterwards. */
async function withNodeAndPod(
  fn: (f: NodeFixture, dp: Datapath, pod: TestNamespace) => Promise<void>,
): Promise<void> {
  await using fixture = await createNode(NODE);
  await using pod = await TestNamespace.create("flk-dprp");
  using handle = {
    h: Handle.forNetns(fixture.node.path),
    [Symbol.dispose]() {
      this.h.close();
    },
  };
  await fn(fixture, new Datapath(handle.h, { routesIPv4: true }), pod);
}

/** The node's flock-protocol routes as `dst dev` lines, both families. */
async function flockRoutes(node: TestNamespace): Promise<string[]> {
  const lines: string[] = [];
  for (const family of ["-6", "-4"]) {
    const out = await node.ip([family, "route", "show", "proto", "201"]);
    lines.push(...out.split("\n").map((l) => l.trim()).filter(Boolean));
  }
  return lines.filter((l) => !l.startsWith("169.254.1.1"));
}

Deno.test({
  name: "kernel: a device set down loses its routes and takes no new one (both families)",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-dprk");
    await ns.ip(["link", "add", "flockk0", "type", "veth", "peer", "name", "flockk1"]);
    await ns.ip(["link", "set", "flockk0", "up"]);
    await ns.ip(["link", "set", "flockk1", "up"]);
    await ns.ip(["route", "add", "fd00:79::1/128", "dev", "flockk0", "proto", "201"]);
    await ns.ip(["route", "add", "10.79.0.1/32", "dev", "flockk0", "proto", "201"]);
    assert.equal((await flockRoutes(ns)).length, 2);
    await ns.ip(["link", "set", "flockk0", "down"]);
    assert.deepEqual(await flockRoutes(ns), [], "down flushed both host routes");
    for (const dst of ["fd00:79::2/128", "10.79.0.2/32"]) {
      const r = await ns.exec(["ip", "route", "add", dst, "dev", "flockk0", "proto", "201"]);
      assert.ok(!r.success, `a route to ${dst} through a down device is refused`);
      assert.match(r.stderr, /not up/);
    }
  },
});

Deno.test({
  name: "release: a dual-stack pod goes in 6 requests, nothing of it left",
  ...ROOT_ONLY,
  async fn() {
    await withNodeAndPod(async (f, dp, podNs) => {
      const pod = podIn(podNs);
      dp.setup(pod);
      assert.equal((await flockRoutes(f.node)).length, 2);
      const addresses = { ipv6: pod.ipv6, ipv4: pod.ipv4, netns: pod.netns, others: () => [] };
      using counted = countNetlinkRequests();
      const { foreign, veth } = dp.detach(pod.containerId, addresses);
      assert.equal(foreign, undefined);
      assert.ok(veth);
      assert.deepEqual(await flockRoutes(f.node), [], "off the network after detach");
      assert.equal(await dp.removeVeth(pod.containerId, addresses, veth), undefined);
      // Look-up, netns id (ownership), down, one leftover-route delete per family, the delete.
      assert.equal(counted.total, 6, JSON.stringify([...counted.byOperation]));
      assert.doesNotMatch(await f.node.ip(["link", "show"]), /flock/, "the veth is gone");
      assert.deepEqual(await flockRoutes(f.node), []);
    });
  },
});

Deno.test({
  name: "release: a flock route to the pod left on another link goes too",
  ...ROOT_ONLY,
  async fn() {
    await withNodeAndPod(async (f, dp, podNs) => {
      const pod = podIn(podNs);
      dp.setup(pod);
      // What a crash between a veth's re-making and its routes can leave: the address routed
      // through a link that is not the pod's veth.
      await f.node.ip(["link", "add", "stale0", "type", "veth", "peer", "name", "stale1"]);
      await f.node.ip(["link", "set", "stale0", "up"]);
      await f.node.ip(["link", "set", "stale1", "up"]);
      await f.node.ip(["route", "add", "fd00:78::abc/128", "dev", "stale0", "proto", "201"]);
      const addresses = { ipv6: parseIP("fd00:78::abc"), ipv4: pod.ipv4 };
      const { veth } = dp.detach(pod.containerId, addresses);
      await dp.removeVeth(pod.containerId, addresses, veth);
      assert.deepEqual(await flockRoutes(f.node), []);
      assert.match(await f.node.ip(["link", "show", "stale0"]), /stale0/, "the other link stays");
    });
  },
});

Deno.test({
  name: "release: a veth that vanishes between the dump, detach and removeVeth is no error",
  ...ROOT_ONLY,
  async fn() {
    await withNodeAndPod(async (f, dp, podNs) => {
      const pod = podIn(podNs);
      dp.setup(pod);
      const nodeLinks = dp.nodeLinksByName();
      // Deleted behind the agent's back (as when the pod's netns goes, the veth with it).
      const name = [...nodeLinks.keys()].find((n) => n.startsWith("flock"))!;
      await f.node.ip(["link", "del", name]);
      const addresses = { ipv6: pod.ipv6, ipv4: pod.ipv4 };
      const { foreign, veth } = dp.detach(pod.containerId, addresses, nodeLinks);
      assert.equal(foreign, undefined);
      assert.equal(veth, null, "gone, as detach found it");
      assert.equal(await dp.removeVeth(pod.containerId, addresses, veth), undefined);
      // Found in detach, gone before removeVeth: the delete finds nothing, no error.
      dp.setup(pod);
      const second = dp.detach(pod.containerId, addresses);
      await f.node.ip(["link", "del", name]);
      assert.equal(await dp.removeVeth(pod.containerId, addresses, second.veth), undefined);
      assert.deepEqual(await flockRoutes(f.node), []);
    });
  },
});
