/**
 * Upgrading a node whose store is from before schema 3, when two of its pods' container IDs hash
 * to the same host veth name (FNV-1a-32). The older agent gave both records that name, and the
 * second ADD deleted the first pod's veth as a stale one of its own (which took the first pod's
 * eth0 and host routes with it) and made its own: one veth, the second pod's, and two records.
 *
 * After the upgrade the agent must converge without touching the live pod: the pod whose netns
 * holds the veth's other end keeps the name; the other one gets a name of its own
 * (hash(`<id>/1`)) and is set up again if its netns still exists, or is released (its addresses
 * cooling down) if its netns is gone, or if its netns is the live one's (two interfaces of one
 * container: one flock interface per netns). A pending or releasing record sharing the name is
 * released without its teardown deleting the live pod's veth.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { addLivePod, assertNodeHolds, type LivePod, storeRecords } from "../helpers/node_state.ts";
import { type OldRecord, schemaOf, writeSchema2Store } from "../helpers/old_store.ts";
import { Datapath, hostIfaceCandidate, hostIfaceName } from "../../agent/datapath.ts";
import { Handle, parseIP } from "../../netlink/mod.ts";
import { SCHEMA_VERSION, Store } from "../../agent/store.ts";

// Two random 64-hex container IDs (as runtimes make them) with the same FNV-1a-32, 0xe7e97493:
// found by brute force over ~100,000 random IDs (a birthday search).
const FIRST = "f7ba573ca77f22b54f2a770740d8a698159e1c1d756591c82f78e1e6a20078cd";
const SECOND = "c3f86325be07fbab70614fe2dbcb5238714202a8b0591802a735a72a5721b8da";

const CONFIG = { cidr6: "fd00:c3::/64", cidr4: "10.195.0.0/24" };
const ADDRESSES: Record<string, { ipv6: string; ipv4: string }> = {
  [FIRST]: { ipv6: "fd00:c3::a", ipv4: "10.195.0.10" },
  [SECOND]: { ipv6: "fd00:c3::b", ipv4: "10.195.0.11" },
};

/**
 * What the older agent left: FIRST was ADDed into `nsFirst`, then SECOND into `nsSecond` under
 * the same host name (today's datapath given that name does what the older one did: it finds the
 * name taken by a veth not joined to SECOND's interface, deletes it and makes its own).
 */
function oldKernelState(node: FlockNode, nsFirst: string, nsSecond: string): void {
  const handle = Handle.forNetns(node.ns.path);
  try {
    const datapath = new Datapath(handle, { routesIPv4: true });
    for (const [containerId, netns] of [[FIRST, nsFirst], [SECOND, nsSecond]]) {
      const a = ADDRESSES[containerId];
      datapath.setup({
        containerId,
        netns,
        ifname: "eth0",
        hostIface: hostIfaceName(containerId),
        ipv6: parseIP(a.ipv6),
        ipv4: parseIP(a.ipv4),
      });
    }
  } finally {
    handle.close();
  }
}

function oldRecords(
  nsFirst: string,
  nsSecond: string,
  firstState: OldRecord["state"] = "committed",
): OldRecord[] {
  const shared = hostIfaceName(FIRST);
  return [
    { containerId: FIRST, netns: nsFirst, hostIface: shared, createdAt: 1000, ...ADDRESSES[FIRST] },
    {
      containerId: SECOND,
      netns: nsSecond,
      hostIface: shared,
      createdAt: 2000,
      ...ADDRESSES[SECOND],
    },
  ].map((r, i) => i === 0 ? { ...r, state: firstState } : r);
}

/** A node as the older agent left it, its agent not started yet; removed whole on dispose. */
interface OldNode extends AsyncDisposable {
  node: FlockNode;
  nsFirst: TestNamespace;
  nsSecond: TestNamespace;
}

async function oldNode(
  firstState: OldRecord["state"] = "committed",
  cooldownMs?: number,
): Promise<OldNode> {
  const node = await FlockNode.start({ config: CONFIG, startAgent: false, cooldownMs });
  const made: AsyncDisposable[] = [node];
  const dispose = async () => {
    for (const d of made.reverse()) await d[Symbol.asyncDispose]();
  };
  try {
    const nsFirst = await TestNamespace.create("flk-u3a");
    made.push(nsFirst);
    const nsSecond = await TestNamespace.create("flk-u3b");
    made.push(nsSecond);
    oldKernelState(node, nsFirst.path, nsSecond.path);
    writeSchema2Store(node.stateDir, oldRecords(nsFirst.path, nsSecond.path, firstState));
    return { node, nsFirst, nsSecond, [Symbol.asyncDispose]: dispose };
  } catch (e) {
    await dispose();
    throw e;
  }
}

const pod = (containerId: string): LivePod => ({
  containerId,
  ips: [ADDRESSES[containerId].ipv6, ADDRESSES[containerId].ipv4],
});

async function pingsAll(from: TestNamespace, to: LivePod, label: string): Promise<void> {
  for (const ip of to.ips) assert.ok(await ping(from, ip), `${label}: ping ${ip}`);
}

/** The pod's eth0 as `ip link` shows it: a remade interface has another index and MAC. */
async function eth0Of(ns: TestNamespace): Promise<string> {
  const [link] = await ns.ipJson<{ ifindex: number; address: string }[]>([
    "link",
    "show",
    "dev",
    "eth0",
  ]);
  return `${link.ifindex} ${link.address}`;
}

function releasedAddresses(node: FlockNode): string[] {
  const store = Store.open(node.stateDir);
  try {
    return store.recentReleases(0).map((r) => r.ip).sort();
  } finally {
    store.close();
  }
}

Deno.test({
  name: "upgrade from schema 2: of two records sharing a host veth, the live pod keeps it " +
    "and the other is set up again under a name of its own",
  ...ROOT_ONLY,
  async fn() {
    assert.equal(hostIfaceName(FIRST), hostIfaceName(SECOND), "the IDs collide");
    await using old = await oldNode();
    const { node, nsFirst, nsSecond } = old;
    assert.deepEqual(await node.flockLinks(), [hostIfaceName(FIRST)], "one veth, the second's");
    assert.equal(schemaOf(node.stateDir).userVersion, 2);
    const liveEth0 = await eth0Of(nsSecond);

    await node.startAgent();
    assert.equal(schemaOf(node.stateDir).userVersion, SCHEMA_VERSION);
    assert.equal(await eth0Of(nsSecond), liveEth0, "the live pod's interface was not touched");
    const names = new Map(storeRecords(node).map((r) => [r.containerId, r.hostIface]));
    assert.equal(names.get(SECOND), hostIfaceName(SECOND), "the live pod keeps its veth's name");
    assert.equal(names.get(FIRST), hostIfaceCandidate(FIRST, 1), "the other gets hash(id/1)");
    await assertNodeHolds(node, [pod(FIRST), pod(SECOND)], "both on the network");
    await pingsAll(nsFirst, pod(SECOND), "first → second");
    await pingsAll(nsSecond, pod(FIRST), "second → first");
    const log = await node.agentLog();
    assert.match(log, /shared host interface/, "the agent says what it did");

    // The first pod's DEL (the kubelet gives up on it) leaves the second alone, and back.
    assert.equal((await node.cni("DEL", { containerId: FIRST, netns: nsFirst.path })).code, 0);
    await assertNodeHolds(node, [pod(SECOND)], "after the first's DEL");
    await node.restartAgent();
    await assertNodeHolds(node, [pod(SECOND)], "after a restart");
    assert.ok(await ping(node.ns, ADDRESSES[SECOND].ipv6), "node → second");
    assert.equal((await node.cni("DEL", { containerId: SECOND, netns: nsSecond.path })).code, 0);
    await assertNodeHolds(node, [], "all gone");
  },
});

Deno.test({
  name: "upgrade from schema 2: a record sharing the live pod's veth whose netns is gone is " +
    "released, its addresses cooling down",
  ...ROOT_ONLY,
  async fn() {
    await using old = await oldNode("committed", 600_000);
    const { node, nsSecond } = old;
    const firstPath = old.nsFirst.path;
    // The first pod's sandbox is gone by the time the node is upgraded.
    await old.nsFirst.remove();
    const liveEth0 = await eth0Of(nsSecond);

    await node.startAgent();
    assert.equal(await eth0Of(nsSecond), liveEth0, "the live pod's interface was not touched");
    await assertNodeHolds(node, [pod(SECOND)], "only the live pod is left");
    assert.equal(storeRecords(node)[0].hostIface, hostIfaceName(SECOND));
    assert.deepEqual(releasedAddresses(node), [...pod(FIRST).ips].sort(), "cooling down");
    assert.match(await node.agentLog(), /is gone: released/);

    await using nsProbe = await TestNamespace.create("flk-u3p");
    const probe = await addLivePod(node, "probe", nsProbe.path);
    for (const ip of probe.ips) {
      assert.ok(!pod(FIRST).ips.includes(ip), `a new pod does not get a cooling address (${ip})`);
    }
    await pingsAll(nsProbe, pod(SECOND), "probe → second");
    assert.equal((await node.cni("DEL", { containerId: FIRST, netns: firstPath })).code, 0);
    await assertNodeHolds(node, [pod(SECOND), probe], "a late DEL of the first changes nothing");
  },
});

Deno.test({
  name: "upgrade from schema 2: a releasing record sharing the live pod's veth is released " +
    "without deleting it",
  ...ROOT_ONLY,
  async fn() {
    await using old = await oldNode("releasing");
    const { node, nsSecond } = old;
    const liveEth0 = await eth0Of(nsSecond);

    await node.startAgent();
    assert.equal(await eth0Of(nsSecond), liveEth0, "the live pod's interface was not touched");
    await assertNodeHolds(node, [pod(SECOND)], "the live pod stays, the releasing one went");
    assert.equal(storeRecords(node)[0].hostIface, hostIfaceName(SECOND));
    await using nsProbe = await TestNamespace.create("flk-u3q");
    const probe = await addLivePod(node, "probe", nsProbe.path);
    await pingsAll(nsProbe, pod(SECOND), "probe → second");
    await assertNodeHolds(node, [pod(SECOND), probe], "a new pod beside it");
  },
});

Deno.test({
  name: "upgrade from schema 2: when the shared veth is gone too, the newest record keeps the " +
    "name and both pods are set up again",
  ...ROOT_ONLY,
  async fn() {
    await using old = await oldNode();
    const { node, nsFirst, nsSecond } = old;
    // An operator deleted it while the agent was down (or a failed upgrade attempt did).
    await node.ns.ip(["link", "del", hostIfaceName(SECOND)]);

    await node.startAgent();
    const names = new Map(storeRecords(node).map((r) => [r.containerId, r.hostIface]));
    assert.equal(names.get(SECOND), hostIfaceName(SECOND), "the newest keeps the name");
    assert.equal(names.get(FIRST), hostIfaceCandidate(FIRST, 1));
    await assertNodeHolds(node, [pod(FIRST), pod(SECOND)], "both set up again");
    await pingsAll(nsFirst, pod(SECOND), "first → second");
    await pingsAll(nsSecond, pod(FIRST), "second → first");
  },
});

Deno.test({
  name: "upgrade from schema 2: two interfaces of one container that shared a host veth keep " +
    "one flock interface in the netns, the live one",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: CONFIG,
      startAgent: false,
      cooldownMs: 600_000,
    });
    await using ns = await TestNamespace.create("flk-u3j");
    const name = hostIfaceName(FIRST);
    const [eth0, net1] = [ADDRESSES[FIRST], ADDRESSES[SECOND]];
    const handle = Handle.forNetns(node.ns.path);
    try {
      // The older agent's ADD of net1 took eth0's veth for a stale one of its own.
      const datapath = new Datapath(handle, { routesIPv4: true });
      for (const [ifname, a] of [["eth0", eth0], ["net1", net1]] as const) {
        datapath.setup({
          containerId: FIRST,
          netns: ns.path,
          ifname,
          hostIface: name,
          ipv6: parseIP(a.ipv6),
          ipv4: parseIP(a.ipv4),
        });
      }
    } finally {
      handle.close();
    }
    writeSchema2Store(node.stateDir, [
      {
        containerId: FIRST,
        ifname: "eth0",
        netns: ns.path,
        hostIface: name,
        createdAt: 1,
        ...eth0,
      },
      {
        containerId: FIRST,
        ifname: "net1",
        netns: ns.path,
        hostIface: name,
        createdAt: 2,
        ...net1,
      },
    ]);

    await node.startAgent();
    const live = { containerId: FIRST, ifname: "net1", ips: [net1.ipv6, net1.ipv4] };
    await assertNodeHolds(node, [live], "net1 stays, eth0 is released");
    assert.equal(storeRecords(node)[0].hostIface, name);
    assert.deepEqual(releasedAddresses(node), [eth0.ipv4, eth0.ipv6].sort(), "cooling down");
    const links = await ns.ipJson<{ ifname: string }[]>(["link", "show"]);
    assert.deepEqual(links.map((l) => l.ifname).sort(), ["lo", "net1"]);
    assert.ok(await ping(node.ns, net1.ipv6), "node → net1");
  },
});
