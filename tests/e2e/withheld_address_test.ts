/**
 * An address a release withheld, because the node still routes it through another pod's veth,
 * stays withheld across a restart, and comes back (cooling, as any release) once that veth no
 * longer routes it. The fixture is foreign_veth_test.ts's: a store that names, in pod A's
 * record, the veth of live pod B, with one of A's addresses routed through B's veth. Before,
 * A's DEL kept that address out of IPAM only in memory: after a restart a new pod could get it
 * while the kernel still routed it to B's pod, and the start-up sweep deleted its route.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY, runOk } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { assertCniError } from "../helpers/cni_output.ts";
import { assertNodeHolds, editStore, resultIps } from "../helpers/node_state.ts";
import { flockStatusJson } from "../helpers/status_probe.ts";
import {
  releasedAt,
  type WithheldFixture as Fixture,
  withheldIps,
  withholdThroughB,
} from "../helpers/withheld_fixture.ts";
import { RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";

const COOLDOWN_MS = 120_000;

/** The network config fields that pass pod annotations as the CRI does. */
function annotated(annotations: Record<string, string>): Record<string, unknown> {
  return { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } };
}

/** Whether the node routes `ip` through the link `dev` (a flock route). */
async function routedThrough(node: FlockNode, ip: string, dev: string): Promise<boolean> {
  return (await node.flockRoutes()).some((r) => r.dst.split("/")[0] === ip && r.dev === dev);
}

/** A pinned ADD of `ip` into `ns`. */
function addPinned(node: FlockNode, containerId: string, ns: TestNamespace, ip: string) {
  return node.cni("ADD", {
    containerId,
    netns: ns.path,
    extraConfig: annotated({ "flock.fritzlab.net/ipv6": ip }),
  });
}

/** An ADD taking the lowest free IPv6 address into `ns`; returns its addresses. */
async function addLowest(node: FlockNode, containerId: string, ns: TestNamespace) {
  const r = await node.cni("ADD", {
    containerId,
    netns: ns.path,
    extraConfig: annotated({ "flock.fritzlab.net/ip-algo": "lowest" }),
  });
  assert.equal(r.code, 0, r.stdout);
  return { containerId, ips: resultIps(r.json) };
}

/** The pinned ADD of a withheld address is refused: code 7, naming the address and why. */
async function assertRefused(node: FlockNode, ns: TestNamespace, f: Fixture, why: string) {
  const pinned = await addPinned(node, `pin-${why.replace(/\W+/g, "-")}`, ns, f.withheld);
  assertCniError(
    pinned,
    7,
    new RegExp(`flock\\.fritzlab\\.net/ipv6.*${f.withheld}.*in use.*withheld.*${f.hostB}.*wh-b`),
  );
}

Deno.test({
  name: "withheld address: stays out of IPAM across a restart until its owner's DEL, then cools",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:fa::/120", cidr4: "10.250.0.0/24" },
      cooldownMs: COOLDOWN_MS,
    });
    await using nsA = await TestNamespace.create("flk-wha");
    await using nsB = await TestNamespace.create("flk-whb");
    await using nsC = await TestNamespace.create("flk-whc");
    await using nsD = await TestNamespace.create("flk-whd");
    await using nsE = await TestNamespace.create("flk-whe");
    const f = await withholdThroughB(node, nsA, nsB);
    await assertRefused(node, nsC, f, "before the restart");

    await node.restartAgent();
    await assertRefused(node, nsC, f, "after the restart");
    // The lowest free address would be the withheld one if the restart had freed it.
    const podC = await addLowest(node, "wh-c", nsC);
    assert.ok(!podC.ips.includes(f.withheld), `${podC.ips} avoids ${f.withheld}`);
    assert.ok(await routedThrough(node, f.withheld, f.hostB), "the start kept its route");
    assert.ok(await ping(nsC, f.podB.ips[0]), "B is on the network");
    // Listed as it was at the start (a note: expected; "Withheld addresses" has the current state).
    const notes = (await flockStatusJson(node)).reconcile!.notes!.join("\n");
    assert.match(notes, new RegExp(`${f.withheld} withheld: routed through wh-b/eth0's`));

    // The owner's own DEL releases its addresses normally, and its veth's going frees the
    // withheld one, cooling from now like any release.
    const beforeDel = Date.now();
    const delB = await node.cni("DEL", { containerId: "wh-b", netns: nsB.path });
    assert.equal(delB.code, 0, delB.stdout);
    await node.settled();
    assert.deepEqual(withheldIps(node), [], "nothing withheld once B's veth is gone");
    for (const ip of [...f.podB.ips, f.withheld]) {
      const at = releasedAt(node, ip);
      assert.ok(at !== undefined && at >= beforeDel, `${ip} released at B's DEL (${at})`);
    }
    const podD = await addLowest(node, "wh-d", nsD);
    assert.ok(!podD.ips.includes(f.withheld), `${podD.ips}: ${f.withheld} is cooling`);
    await node.restartAgent();
    const podE = await addLowest(node, "wh-e", nsE);
    assert.ok(!podE.ips.includes(f.withheld), `${podE.ips}: still cooling after a restart`);

    // Allocatable again: a pinned ADD overrides a cooldown, as for any released address.
    const del = await node.cni("DEL", { containerId: "wh-e", netns: nsE.path });
    assert.equal(del.code, 0, del.stdout);
    const pinned = await addPinned(node, "wh-p", nsE, f.withheld);
    assert.equal(pinned.code, 0, pinned.stdout);
    assert.ok(resultIps(pinned.json).includes(f.withheld));
    const podP = { containerId: "wh-p", ips: resultIps(pinned.json) };
    assert.ok(await ping(nsC, f.withheld), "the pod that got it answers on it");
    await assertNodeHolds(node, [podC, podD, podP], "after the pinned ADD");
    for (const [id, ns] of [["wh-c", nsC], ["wh-d", nsD], ["wh-p", nsE]] as const) {
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0);
    }
    await node.settled();
    await assertNodeHolds(node, [], "all gone");
    assert.deepEqual(withheldIps(node), []);
  },
});

Deno.test({
  name:
    "withheld address: a route gone while the agent was down is restored at the start (kept); " +
    "given back, cooling, once its veth goes (agent down) or its route goes (agent running)",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:fb::/120", cidr4: "10.251.0.0/24" },
      cooldownMs: COOLDOWN_MS,
    });
    await using nsA = await TestNamespace.create("flk-wra");
    await using nsB = await TestNamespace.create("flk-wrb");
    await using nsC = await TestNamespace.create("flk-wrc");
    const f = await withholdThroughB(node, nsA, nsB);

    // The route goes while the agent is down (a flap or a hand: the start cannot tell which):
    // the start routes it again and keeps it withheld, saying so in a note.
    await node.kill("SIGKILL");
    await node.ns.ip(["route", "del", f.withheld, "dev", f.hostB, "proto", "201"]);
    await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: "100" } });
    assert.deepEqual(withheldIps(node), [f.withheld], "kept");
    assert.equal(releasedAt(node, f.withheld), undefined, "not released");
    assert.ok(await routedThrough(node, f.withheld, f.hostB), "routed through B again");
    let notes = (await flockStatusJson(node)).reconcile!.notes!.join("\n");
    assert.match(notes, new RegExp(`withheld route restored: ${f.withheld} through wh-b/eth0's`));
    await assertRefused(node, nsC, f, "after its route was restored");

    // B's veth goes while the agent is down: the start gives the address back (the start's
    // repair of B makes B a new veth, not the one the address went through).
    await node.kill("SIGKILL");
    await node.ns.ip(["link", "del", f.hostB]);
    const beforeStart = Date.now();
    await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: "100" } });
    assert.deepEqual(withheldIps(node), []);
    const at = releasedAt(node, f.withheld);
    assert.ok(at !== undefined && at >= beforeStart, `released at the start (${at})`);
    notes = (await flockStatusJson(node)).reconcile!.notes!.join("\n");
    assert.match(notes, new RegExp(`${f.withheld}, withheld .* is routed there no more`));
    assert.ok(!await routedThrough(node, f.withheld, f.hostB), "not routed through B's new veth");
    const podC = await addLowest(node, "wr-c", nsC);
    assert.ok(!podC.ips.includes(f.withheld), `${podC.ips}: ${f.withheld} is cooling`);

    // Withheld again (a second such DEL), and the route goes while the agent runs: its sweep
    // gives the address back.
    await node.ns.ip(["route", "replace", f.withheld, "dev", f.hostB, "proto", "201"]);
    editStore(node, "DELETE FROM release WHERE ip = ?", f.withheld);
    editStore(
      node,
      "INSERT INTO withheld (ip, host_iface, owner, at) VALUES (?, ?, 'wh-b/eth0', 0)",
      f.withheld,
      f.hostB,
    );
    await node.ns.ip(["route", "del", f.withheld, "dev", f.hostB, "proto", "201"]);
    const deadline = Date.now() + 10_000;
    while (withheldIps(node).length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(withheldIps(node), [], "the sweep gave it back");
    assert.ok(releasedAt(node, f.withheld) !== undefined, "cooling from the sweep");

    assert.ok(await ping(nsC, f.podB.ips[0]), "B is on the network (its veth remade at the start)");
    for (const [id, ns] of [["wh-b", nsB], ["wr-c", nsC]] as const) {
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0);
    }
    await node.settled();
    // A's own veth, which no record names since its DEL, went with the restart's orphan sweep.
    await assertNodeHolds(node, [], "all gone");
  },
});

Deno.test({
  name: "withheld address: a sweep that cannot write the store makes /readyz 503",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:fc::/120", cidr4: "10.252.0.0/24" },
      cooldownMs: COOLDOWN_MS,
      startAgent: false,
    });
    await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: "100" } });
    await using nsA = await TestNamespace.create("flk-wsa");
    await using nsB = await TestNamespace.create("flk-wsb");
    const f = await withholdThroughB(node, nsA, nsB);
    const readyz = async () => (await node.httpGet("/readyz")).body.trim();
    assert.equal(await readyz(), "ready");

    // Immutable: even root's writes through the open descriptor fail (EPERM), as on a
    // read-only remount. The route's going makes the sweep write; that write fails.
    const wal = join(node.stateDir, "flock.db-wal");
    await runOk(["chattr", "+i", wal]);
    try {
      await node.ns.ip(["route", "del", f.withheld, "dev", f.hostB, "proto", "201"]);
      await eventually(
        "/readyz to report the failed write",
        readyz,
        (body) => /^not ready: the last store write failed: /.test(body),
        10_000,
        100,
      );
      assert.deepEqual(withheldIps(node), [f.withheld], "still withheld: the write failed");
    } finally {
      await runOk(["chattr", "-i", wal]);
    }
    // Writable again: the sweep's probe makes the agent ready again by itself (an idle node, or
    // one the scheduler avoids because it is not ready, gets no ADD or DEL to do it), and the
    // next sweep gives the address back.
    await eventually(
      "/readyz ready again with no CNI call",
      readyz,
      (b) => b === "ready",
      10_000,
      100,
    );
    await eventually(
      "the sweep to give it back",
      () => Promise.resolve(withheldIps(node)),
      (w) => w.length === 0,
      10_000,
      100,
    );
    assert.equal((await node.cni("DEL", { containerId: "wh-b", netns: nsB.path })).code, 0);
    assert.equal(await readyz(), "ready");
  },
});
