/**
 * Found by helper J's review of 2026-12-02: the host side repair gave a flapped veth the MTU of
 * the NodeConfig in force, not the MTU the pod was made with. After an MTU reconfigure
 * (docs/cluster-mode.md: running pods keep their MTU), a flap of an old pod's host veth set that
 * end alone to the new MTU, and the two ends of the veth disagreed. A down and up changes no MTU,
 * so the repair now sets none (RepairTarget has no MTU any more).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createNode, TestNamespace } from "../tests/helpers/netns.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { setUpCommitted } from "../tests/helpers/committed_pod.ts";
import { Datapath, type PodNetwork } from "./datapath.ts";
import { Handle, parseIP } from "../netlink/mod.ts";
import { Store } from "./store.ts";
import { HostSideRepair, type RepairTarget } from "./host_side_repair.ts";

async function mtuOf(ns: TestNamespace, dev: string): Promise<number> {
  const [link] = await ns.ipJson<{ mtu: number }[]>(["link", "show", dev]);
  return link.mtu;
}

Deno.test({
  name: "HostSideRepair: a flapped veth keeps the MTU its pod was made with after an MTU change",
  ...ROOT_ONLY,
  async fn() {
    await using fixture = await createNode({ prefix: "flk-hsrm" });
    await using pod = await TestNamespace.create("flk-hsrmp");
    const dir = await Deno.makeTempDir({ prefix: "flock-hsrm-" });
    const handle = Handle.forNetns(fixture.node.path);
    const store = Store.open(join(dir, "state"));
    const repair = new HostSideRepair({
      // The config in force after a reconfigure from MTU 1500 to 1400: the repair is not told it.
      target: (): RepairTarget => ({ store, datapath, isRemoving: () => false }),
      inTurn: (_id, fn) => fn(),
      log: () => {},
    });
    const datapath = new Datapath(handle, { routesIPv4: true });
    try {
      const net: PodNetwork = {
        containerId: "hsrm-1",
        netns: pod.path,
        ifname: "eth0",
        ipv6: parseIP("fd00:49::1"),
        mtu: 1500,
      };
      const hostIface = setUpCommitted(datapath, store, net);
      repair.start(handle, 3_600_000);
      await fixture.node.ip(["link", "set", hostIface, "down"]);
      await fixture.node.ip(["link", "set", hostIface, "up"]);
      repair.poll();
      await repair.close();
      assert.deepEqual(
        [await mtuOf(fixture.node, hostIface), await mtuOf(pod, "eth0")],
        [1500, 1500],
        "both ends keep the pod's MTU",
      );
    } finally {
      await repair.close();
      store.close();
      handle.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
