/**
 * CNI spec edge cases through the real plugin exec path, each one a bug that was found by
 * probing: the invocation an operator or a runtime really makes, and what the spec says the
 * plugin must answer.
 */

import assert from "node:assert/strict";
import { FlockNode, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { assertCniError } from "../helpers/cni_output.ts";

const NODE_CONFIG = { cidr6: "fd00:5e::/64", cidr4: "10.94.0.0/24" };

Deno.test({
  name:
    "cni spec edges: CHECK ignores the addresses a later chained plugin put on another interface",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: NODE_CONFIG });
    await using podNs = await TestNamespace.create("flk-edge");
    const add = await node.cni("ADD", { containerId: "chained", netns: podNs.path });
    assert.equal(add.code, 0, add.stdout);
    // The cached final result of the chain: flock's, plus an interface and an address that a
    // later plugin in the conflist added (as a second "main" plugin or a VLAN plugin does).
    const prevResult = structuredClone(add.json);
    prevResult.interfaces.push({ name: "net1", mac: "02:00:00:00:00:09", sandbox: podNs.path });
    prevResult.ips.push({ address: "192.168.77.5/24", interface: 2 });
    const check = await node.cni("CHECK", {
      containerId: "chained",
      netns: podNs.path,
      extraConfig: { prevResult },
    });
    assert.equal(check.code, 0, check.stdout);
    // An address on flock's own interface that flock does not hold is still a failure.
    const wrong = structuredClone(add.json);
    wrong.ips.push({ address: "fd00:5e::99/128", interface: 1 });
    const bad = await node.cni("CHECK", {
      containerId: "chained",
      netns: podNs.path,
      extraConfig: { prevResult: wrong },
    });
    assertCniError(bad, 101, /fd00:5e::99/);
    assert.equal((await node.cni("DEL", { containerId: "chained", netns: podNs.path })).code, 0);
  },
});
