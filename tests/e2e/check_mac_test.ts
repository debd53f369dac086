/**
 * CHECK compares the MAC addresses of flock's interfaces with the ones the cached ADD result
 * (prevResult) lists, through the real plugin exec path: the spec has CHECK verify that the
 * interfaces are as the result says, and a pod whose MAC changed behind the runtime's back has
 * neighbours (the host's proxy ARP / NDP entries) that point at the old one.
 */

import assert from "node:assert/strict";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { assertCniError } from "../helpers/cni_output.ts";

/** The code flock's CHECK answers when the pod network differs (pod_handler.ts). */
const CHECK_FAILED = 101;

interface ResultInterface {
  name: string;
  mac: string;
  sandbox?: string;
}

Deno.test({
  name: "CHECK: a prevResult MAC that is not the kernel's is code 101 naming the interface",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: { cidr6: "fd00:6d::/64" } });
    await using podNs = await TestNamespace.create("flk-mac");
    const add = await node.cni("ADD", { containerId: "mac", netns: podNs.path });
    assert.equal(add.code, 0, add.stdout);
    const check = (prevResult: unknown) =>
      node.cni("CHECK", { containerId: "mac", netns: podNs.path, extraConfig: { prevResult } });
    const [host, pod] = add.json.interfaces as ResultInterface[];
    assert.equal(pod.sandbox, podNs.path);
    assert.equal((await check(add.json)).code, 0, "the result as ADD gave it");

    const withMac = (index: number, mac: string) => {
      const prev = structuredClone(add.json);
      prev.interfaces[index].mac = mac;
      return prev;
    };
    assertCniError(
      await check(withMac(1, "02:00:00:00:00:01")),
      CHECK_FAILED,
      new RegExp(`pod interface eth0 has mac ${pod.mac}, want 02:00:00:00:00:01`),
    );
    assertCniError(
      await check(withMac(0, "02:00:00:00:00:02")),
      CHECK_FAILED,
      new RegExp(`host interface ${host.name} has mac ${host.mac}, want 02:00:00:00:00:02`),
    );
    const capitals = withMac(1, pod.mac.toUpperCase());
    capitals.interfaces[0].mac = host.mac.toUpperCase();
    assert.equal((await check(capitals)).code, 0, "the same MACs in capitals");
    const noMacs = structuredClone(add.json);
    for (const iface of noMacs.interfaces) delete iface.mac;
    assert.equal((await check(noMacs)).code, 0, "a result without MACs (optional in the spec)");

    // The pod's MAC changed behind flock's back (and the runtime's): the cached result is stale.
    await podNs.ip(["link", "set", "eth0", "address", "02:00:00:00:00:03"]);
    assertCniError(
      await check(add.json),
      CHECK_FAILED,
      new RegExp(`pod interface eth0 has mac 02:00:00:00:00:03, want ${pod.mac}`),
    );
    assert.equal((await node.cni("DEL", { containerId: "mac", netns: podNs.path })).code, 0);
    assert.deepEqual(await node.flockLinks(), []);
  },
});
