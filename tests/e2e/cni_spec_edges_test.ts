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
const UPLINK = {
  ipv6: { node: "fd00:ff::2/64", peer: "fd00:ff::1/64" },
  ipv4: { node: "192.0.2.2/24", peer: "192.0.2.1/24" },
  defaultRoute6: true,
  defaultRoute4: true,
};

Deno.test({
  name: "cni spec edges: ADD into the node's own namespace is code 8 and the node keeps its routes",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: NODE_CONFIG, nodeOptions: UPLINK });
    const routesBefore = [
      await node.ns.ip(["-6", "route", "show", "default"]),
      await node.ns.ip(["-4", "route", "show", "default"]),
    ];
    const linksBefore = await node.ns.ip(["-o", "link", "show"]);
    // `ctr run --cni --net-host` hands the plugin the host's own namespace as the pod's.
    const r = await node.cni("ADD", {
      containerId: "hostnet",
      netns: node.ns.path,
      ifname: "eth9",
    });
    assertCniError(r, 8, /CNI_NETNS.*own network namespace/);
    assert.deepEqual(
      [
        await node.ns.ip(["-6", "route", "show", "default"]),
        await node.ns.ip(["-4", "route", "show", "default"]),
      ],
      routesBefore,
      "the node's default routes are untouched",
    );
    assert.equal(
      (await node.ns.ip(["-o", "link", "show"])).replace(/\\\s+/g, " "),
      linksBefore.replace(/\\\s+/g, " "),
      "no link made",
    );
    assert.equal((await node.cni("DEL", { containerId: "hostnet", ifname: "eth9" })).code, 0);
    assert.deepEqual(
      [
        await node.ns.ip(["-6", "route", "show", "default"]),
        await node.ns.ip(["-4", "route", "show", "default"]),
      ],
      routesBefore,
      "still, after the DEL",
    );
  },
});

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

Deno.test({
  name: "cni spec edges: a CNI_IFNAME with '%' is code 4 and makes no interface",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: NODE_CONFIG });
    await using podNs = await TestNamespace.create("flk-edge");
    // The kernel reads '%d' as "the first free number": the pod would get eth0, not eth%d.
    const r = await node.cni("ADD", { containerId: "pct", netns: podNs.path, ifname: "eth%d" });
    assertCniError(r, 4, /CNI_IFNAME.*%/);
    assert.deepEqual(await node.flockLinks(), [], "no host veth");
    assert.doesNotMatch(await podNs.ip(["-o", "link", "show"]), /eth0/, "no pod interface");
  },
});

Deno.test({
  name: "cni spec edges: GC with a malformed valid-attachments list is code 7 and releases nothing",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: NODE_CONFIG });
    await using podNs = await TestNamespace.create("flk-edge");
    const add = await node.cni("ADD", { containerId: "keep", netns: podNs.path });
    assert.equal(add.code, 0, add.stdout);
    const links = await node.flockLinks();
    assert.equal(links.length, 1);
    const malformed: [string, unknown][] = [
      ["an object, not a list", { containerID: "keep", ifname: "eth0" }],
      ["an entry with a misspelt key", [{ containerId: "keep", ifname: "eth0" }]],
      ["an entry that is not an object", ["keep/eth0"]],
    ];
    for (const [why, list] of malformed) {
      const gc = await node.cni("GC", { extraConfig: { "cni.dev/valid-attachments": list } });
      assertCniError(gc, 7, /cni\.dev\/valid-attachments/);
      assert.deepEqual(await node.flockLinks(), links, `the pod keeps its veth (${why})`);
    }
    const check = await node.cni("CHECK", {
      containerId: "keep",
      netns: podNs.path,
      extraConfig: { prevResult: add.json },
    });
    assert.equal(check.code, 0, check.stdout);
    // A well-formed list still works, and an empty one releases everything.
    const keep = [{ containerID: "keep", ifname: "eth0" }];
    const gc = await node.cni("GC", { extraConfig: { "cni.dev/valid-attachments": keep } });
    assert.equal(gc.code, 0, gc.stdout);
    assert.deepEqual(await node.flockLinks(), links);
    const all = await node.cni("GC", { extraConfig: { "cni.dev/valid-attachments": [] } });
    assert.equal(all.code, 0, all.stdout);
    assert.deepEqual(await node.flockLinks(), []);
  },
});
