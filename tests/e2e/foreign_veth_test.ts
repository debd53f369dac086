/**
 * A pod's release or repair never touches another pod's veth, whatever its record says. A store
 * restored from a backup, edited by hand or written by a bug can name, in one record, the host
 * veth another live pod uses (or put the record in another pod's netns). Before, a DEL of that
 * record deleted the other pod's veth by name (the live pod off the network, no error anywhere),
 * and the start-up repair built a second flock interface in the other pod's netns, taking over
 * its default routes. Now the DEL leaves that veth and its routes alone and says why in the
 * agent's log, and the repair refuses, listed in `flock status`.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import {
  addLivePod,
  assertNodeHolds,
  editStore,
  hostIfaceOf,
  type LivePod,
  storeRecords,
} from "../helpers/node_state.ts";
import { flockStatusJson } from "../helpers/status_probe.ts";

/** The pod's host veth exists and the pod answers another pod on each of its addresses. */
async function assertOnNetwork(
  node: FlockNode,
  pod: LivePod,
  hostIface: string,
  from: TestNamespace,
  why: string,
) {
  assert.ok((await node.flockLinks()).includes(hostIface), `${hostIface} exists (${why})`);
  for (const ip of pod.ips) {
    assert.ok(await ping(from, ip), `${from.name} → ${pod.containerId} ${ip} (${why})`);
  }
}

Deno.test({
  name: "foreign veth: a DEL whose record names another live pod's veth leaves that veth alone",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f7::/64", cidr4: "10.247.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-fva");
    await using nsB = await TestNamespace.create("flk-fvb");
    await using nsC = await TestNamespace.create("flk-fvc");
    await using nsD = await TestNamespace.create("flk-fvd");
    const podA = await addLivePod(node, "fv-a", nsA.path);
    const podB = await addLivePod(node, "fv-b", nsB.path);
    await addLivePod(node, "fv-c", nsC.path);
    const podD = await addLivePod(node, "fv-d", nsD.path);
    const hostB = hostIfaceOf(node, "fv-b");
    const hostD = hostIfaceOf(node, "fv-d");

    // A's record names B's veth too: two records hold one name (the store allows it no more).
    editStore(node, "UPDATE attachment SET host_iface = ? WHERE container_id = 'fv-a'", hostB);
    // And one of A's addresses is routed through B's veth: B's pod may be using it.
    const [aRouted] = podA.ips;
    await node.ns.ip(["route", "replace", aRouted, "dev", hostB, "proto", "201"]);
    const delA = await node.cni("DEL", { containerId: "fv-a", netns: nsA.path });
    assert.equal(delA.code, 0, delA.stdout);
    await assertOnNetwork(node, podB, hostB, nsD, "after A's DEL");
    const log = await node.agentLog();
    assert.match(log, new RegExp(`${hostB} is not this attachment's.*fv-b/eth0.*left in place`));
    assert.match(log, new RegExp(`${aRouted} \\(routed through it\\) not released`), log);
    const kept = (await node.flockRoutes()).filter((r) => r.dst.split("/")[0] === aRouted);
    assert.equal(kept.length, 1, "the route through B's veth stays");

    // C's record alone names D's veth (D's record renamed): the kernel says whose it is.
    editStore(
      node,
      "UPDATE attachment SET host_iface = 'flock0000d0d0' WHERE container_id = 'fv-d'",
    );
    editStore(node, "UPDATE attachment SET host_iface = ? WHERE container_id = 'fv-c'", hostD);
    const delC = await node.cni("DEL", { containerId: "fv-c", netns: nsC.path });
    assert.equal(delC.code, 0, delC.stdout);
    await assertOnNetwork(node, podD, hostD, nsB, "after C's DEL");
    editStore(node, "UPDATE attachment SET host_iface = ? WHERE container_id = 'fv-d'", hostD);

    // A and C are gone from the store; their own veths, which no record names now, go with the
    // next start's orphan sweep. B and D stay whole throughout.
    assert.deepEqual(storeRecords(node).map((r) => r.containerId).sort(), ["fv-b", "fv-d"]);
    await node.restartAgent();
    assert.deepEqual(storeRecords(node).map((r) => r.containerId).sort(), ["fv-b", "fv-d"]);
    // A's address routed through B's veth stays withheld, its route kept, until B's DEL
    // (withheld_address_test.ts).
    const routes = await node.flockRoutes();
    assert.ok(routes.some((r) => r.dst.split("/")[0] === aRouted && r.dev === hostB), "kept");
    await assertOnNetwork(node, podB, hostB, nsD, "after a restart");
    await assertOnNetwork(node, podD, hostD, nsB, "after a restart");
    for (const [id, ns] of [["fv-b", nsB], ["fv-d", nsD]] as const) {
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0);
    }
    await assertNodeHolds(node, [], "all gone");
  },
});

Deno.test({
  name: "foreign veth: start-up repair never adds a second flock interface to a live pod's netns",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f8::/64", cidr4: "10.248.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-fra");
    await using nsB = await TestNamespace.create("flk-frb");
    await using nsC = await TestNamespace.create("flk-frc");
    const podB = await addLivePod(node, "fr-b", nsB.path);
    await addLivePod(node, "fr-c", nsC.path);
    const a = await node.cni("ADD", { containerId: "fr-a", netns: nsA.path, ifname: "net1" });
    assert.equal(a.code, 0, a.stdout);
    const hostA = hostIfaceOf(node, "fr-a");
    const hostB = hostIfaceOf(node, "fr-b");

    await node.kill("SIGKILL");
    // A's record now says it lives in B's netns, and its veth is gone: a restart repairs it.
    editStore(node, "UPDATE attachment SET netns = ? WHERE container_id = 'fr-a'", nsB.path);
    await node.ns.ip(["link", "del", hostA]);
    await node.startAgent();

    const links = await nsB.ipJson<{ ifname: string }[]>(["link", "show"]);
    assert.deepEqual(links.map((l) => l.ifname).sort(), ["eth0", "lo"], "B's netns: one pod iface");
    await assertOnNetwork(node, podB, hostB, nsC, "after the restart");
    const status = await flockStatusJson(node);
    const problems = status.reconcile!.problems.join("\n");
    assert.match(problems, new RegExp(`fr-a: repair failed: .*fr-b.*${hostB}`), problems);
    assert.equal((await node.cni("DEL", { containerId: "fr-b", netns: nsB.path })).code, 0);
    assert.equal((await node.cni("DEL", { containerId: "fr-c", netns: nsC.path })).code, 0);
    assert.equal(
      (await node.cni("DEL", { containerId: "fr-a", netns: nsB.path, ifname: "net1" })).code,
      0,
    );
    await assertNodeHolds(node, [], "all gone");
  },
});

Deno.test({
  name:
    "foreign veth: a restart whose store swapped two pods' veth names keeps both on the network",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f9::/64", cidr4: "10.249.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-fsa");
    await using nsB = await TestNamespace.create("flk-fsb");
    await using nsC = await TestNamespace.create("flk-fsc");
    const podA = await addLivePod(node, "fs-a", nsA.path);
    const podB = await addLivePod(node, "fs-b", nsB.path);
    await addLivePod(node, "fs-c", nsC.path);
    const hostA = hostIfaceOf(node, "fs-a");
    const hostB = hostIfaceOf(node, "fs-b");

    await node.kill("SIGKILL");
    // A's record names B's veth, B's a veth that does not exist: no name is shared, so only the
    // kernel can say whose each veth is. The repair of A would remake "its" veth (B's) in A's
    // netns, and A's own veth, which no record names, looked like an orphan.
    editStore(
      node,
      "UPDATE attachment SET host_iface = 'flock0000beef' WHERE container_id = 'fs-b'",
    );
    editStore(node, "UPDATE attachment SET host_iface = ? WHERE container_id = 'fs-a'", hostB);
    await node.startAgent();

    await assertOnNetwork(node, podA, hostA, nsC, "A after the restart");
    await assertOnNetwork(node, podB, hostB, nsC, "B after the restart");
    const problems = (await flockStatusJson(node)).reconcile!.problems.join("\n");
    assert.match(problems, new RegExp(`fs-a: repair failed: .*${hostB}.*fs-b`), problems);
    assert.match(problems, new RegExp(`link ${hostA} .*fs-a/eth0's netns: left in place`));
  },
});
