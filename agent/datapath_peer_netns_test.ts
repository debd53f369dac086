/**
 * The two ends of a pod's veth are told by their ifindexes AND by the netns the kernel names for
 * the host end's peer: ifindexes are per netns, so two node namespaces on one kernel (a test
 * cluster, kind) number their flock veths alike, and every pod's eth0 is index 2 or so. A pod
 * interface of another node whose peer has the same index as this node's host veth (and which has
 * the index this node's peer has in its own pod) is not this node's pod.
 *
 * Built for real: a second "node" namespace with a Datapath of its own sets its pod up with the
 * very ifindexes of this node's pair (`ip link add … index N`).
 */

import assert from "node:assert/strict";
import { createNode, TestNamespace } from "../tests/helpers/netns.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import type { IpLink } from "../tests/helpers/iproute.ts";

/** `ip -j link` also names the peer's ifindex of a veth whose peer is in another netns. */
type IpVeth = IpLink & { link_index?: number };
import { Datapath, hostIfaceName, InterfaceConflictError, type PodNetwork } from "./datapath.ts";
import { Handle, parseIP } from "../netlink/mod.ts";

/**
 * Node N with pod `p` set up in `own`; node C with a pod in `foreign` whose pair has the same two
 * ifindexes as N's (host side and pod side), set up by C's own Datapath to flock's contract.
 */
async function withLookalikePods(
  fn: (ctx: {
    dp: Datapath;
    p: PodNetwork;
    own: TestNamespace;
    foreign: TestNamespace;
    otherNode: TestNamespace;
  }) => Promise<void> | void,
): Promise<void> {
  await using fixture = await createNode({ prefix: "flk-dpx" });
  await using own = await TestNamespace.create("flk-dpx");
  await using foreign = await TestNamespace.create("flk-dpx");
  await using otherNode = await TestNamespace.create("flk-dpx");
  const node = Handle.forNetns(fixture.node.path);
  const other = Handle.forNetns(otherNode.path);
  try {
    const dp = new Datapath(node);
    const p: PodNetwork = {
      containerId: "lookalike",
      netns: own.path,
      ifname: "eth0",
      ipv6: parseIP("fd00:44::5"),
      ipv4: parseIP("10.44.0.5"),
    };
    const made = dp.setup(p);
    // Node C's flock veth of the same name and index, its pod's eth0 of the same index as ours.
    await otherNode.ip([
      "link",
      "add",
      hostIfaceName(p.containerId),
      "index",
      String(made.hostIndex),
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "index",
      String(made.podIndex),
      "netns",
      foreign.name,
    ]);
    // C configures its pod exactly as flock does (addresses, routes, gateways): a look-alike.
    new Datapath(other).setup({ ...p, netns: foreign.path });
    const [theirs] = await foreign.ipJson<IpLink[]>(["link", "show", "eth0"]);
    assert.equal(theirs.ifindex, made.podIndex, "the foreign pod interface has our peer's index");
    await fn({ dp, p, own, foreign, otherNode });
  } finally {
    other.close();
    node.close();
  }
}

Deno.test({
  name: "check: a look-alike pod interface of another node namespace is not this host veth's peer",
  ...ROOT_ONLY,
  async fn() {
    await withLookalikePods(({ dp, p, foreign }) => {
      assert.deepEqual(dp.check(p), [], "our own pod is fine");
      const problems = dp.check({ ...p, netns: foreign.path });
      assert.ok(
        problems.includes(`eth0 is not the peer of ${hostIfaceName(p.containerId)}`),
        `CHECK must see that the interface is another node's: ${JSON.stringify(problems)}`,
      );
    });
  },
});

Deno.test({
  name: "repair: a look-alike pod interface of another node namespace is a conflict, not reused",
  ...ROOT_ONLY,
  async fn() {
    await withLookalikePods(async ({ dp, p, foreign, otherNode }) => {
      // The record now names the other netns (a retried ADD with another CNI_NETNS): the host
      // veth of our name is not joined to its eth0, whatever the indexes say.
      assert.throws(
        () => dp.setup({ ...p, netns: foreign.path }),
        InterfaceConflictError,
        "setup must not take another node's pod interface for this veth's other end",
      );
      // The other node's pod is untouched: still joined to its own host veth there.
      const [theirs] = await foreign.ipJson<IpVeth[]>(["link", "show", "eth0"]);
      const [theirHost] = await otherNode.ipJson<IpLink[]>([
        "link",
        "show",
        hostIfaceName(p.containerId),
      ]);
      assert.equal(theirs.link_index, theirHost.ifindex);
      // Refused before anything changed: our veth still joins our pod where it was.
      assert.deepEqual(dp.check(p), []);
    });
  },
});

Deno.test({
  name: "setup: another node's look-alike pod interface in the netns is not one of this node's",
  ...ROOT_ONLY,
  async fn() {
    await withLookalikePods(({ dp, p, foreign }) => {
      // A second pod's ADD into that netns: the "one flock interface per netns" check must not
      // be told that our pod's veth is there (it would refuse the ADD in our pod's name).
      const seen: string[][] = [];
      dp.setup({
        containerId: "second",
        netns: foreign.path,
        ifname: "eth1",
        ipv6: parseIP("fd00:44::6"),
      }, { checkNetnsPeers: (hostIfaces) => seen.push(hostIfaces) });
      assert.deepEqual(seen, [[]], `${hostIfaceName(p.containerId)} is not in that netns`);
      dp.teardown("second");
    });
  },
});
