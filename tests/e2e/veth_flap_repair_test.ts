/**
 * A pod's host veth set down and up again (an operator, a script, anything): the kernel flushes
 * the veth's routes and IPv6 addresses on the way down (the pod's /128 and /32 host routes, its
 * anycast path, the fe80::1 gateway) and puts none back on the way up. The agent sees the veth
 * come up (a link notification) and restores that pod's host side within a poll; a veth left
 * down stays down and unrouted; a host route deleted by hand comes back from its route
 * notification, within a poll too. An address withheld through a flapped veth (withheld.ts) is
 * routed there again and stays withheld.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { eventually } from "../helpers/eventually.ts";
import { addLivePod, hostIfaceOf, type LivePod } from "../helpers/node_state.ts";
import { releasedAt, withheldIps, withholdThroughB } from "../helpers/withheld_fixture.ts";
import { RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";
import {
  anycastNodeConfig,
  flockRoutesVia,
  hostSide,
  sameList,
} from "../helpers/flock_route_devs.ts";
import { assertCniError } from "../helpers/cni_output.ts";

/** How long the host side may take to come back once the veth is up (the watch polls 500 ms). */
const REPAIR_WITHIN_MS = 3_000;
const ANY6 = "fd00:fff1::7";
const ANY4 = "10.255.71.7";

/** Pings in both directions over both families. */
async function assertPings(a: TestNamespace, pa: LivePod, b: TestNamespace, pb: LivePod) {
  for (const ip of pb.ips) assert.ok(await ping(a, ip), `ping ${ip} from A`);
  for (const ip of pa.ips) assert.ok(await ping(b, ip), `ping ${ip} from B`);
}

/** The agent's log lines (JSON) whose msg is `msg`. */
async function logLines(node: FlockNode, msg: string): Promise<Record<string, unknown>[]> {
  return (await node.agentLog()).split("\n").filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l)).filter((l) => l.msg === msg);
}

const REPAIRED = "host side restored";

/** Waits (at most {@link REPAIR_WITHIN_MS}) until `get` gives what `holds` wants. */
function repairedWithin<T>(what: string, get: () => Promise<T>, holds: (v: T) => boolean) {
  return eventually(what, get, holds, REPAIR_WITHIN_MS, 50);
}

Deno.test({
  name: "veth flap: down and up gives the pod its routes, gateway and anycast back within 3 s; " +
    "left down it stays unrouted, up later it is repaired",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: anycastNodeConfig(1) });
    await using nsA = await TestNamespace.create("flk-fla");
    await using nsB = await TestNamespace.create("flk-flb");
    const podA = await addLivePod(node, "flap-a", nsA.path, {
      "flock.fritzlab.net/anycast": `${ANY6},${ANY4}`,
    });
    const podB = await addLivePod(node, "flap-b", nsB.path);
    const [hostA, hostB] = [hostIfaceOf(node, "flap-a"), hostIfaceOf(node, "flap-b")];
    await assertPings(nsA, podA, nsB, podB);
    const wholeA = await hostSide(node, hostA);
    const wholeB = await hostSide(node, hostB);
    assert.equal(wholeA.filter((l) => l.includes(ANY6) || l.includes(ANY4)).length, 2, `${wholeA}`);
    assert.ok(wholeA.includes("addr fe80::1/64"), `${wholeA}`);

    await node.ns.ip(["link", "set", hostA, "down"]);
    assert.deepEqual(await flockRoutesVia(node, hostA), [], "the kernel dropped A's routes");
    await node.ns.ip(["link", "set", hostA, "up"]);
    await repairedWithin(
      "A's host side to come back",
      () => hostSide(node, hostA),
      (have) => sameList(have, wholeA),
    );
    await assertPings(nsA, podA, nsB, podB);
    assert.ok(await ping(nsB, ANY6) && await ping(nsB, ANY4), "A answers on its anycast addresses");
    assert.deepEqual(await hostSide(node, hostB), wholeB, "B was not touched");
    const [line] = await logLines(node, REPAIRED);
    assert.equal(line?.containerId, "flap-a", JSON.stringify(line));
    assert.equal(line?.hostIface, hostA);
    assert.deepEqual(
      (line?.restored as string[]).sort(),
      [
        `route ${podA.ips[0]}`,
        `route ${podA.ips[1]}`,
        "address fe80::1/64",
        `anycast ${ANY6}`,
        `anycast ${ANY4}`,
      ].sort(),
    );
    const metrics = (await node.httpGet("/metrics")).body;
    assert.match(metrics, /^flock_host_side_repairs_total 1$/m);

    // Left down: nothing routes through a down device, and nothing tries to (no repair line, no
    // error loop); the agent keeps serving. Up again later: repaired then.
    await node.ns.ip(["link", "set", hostA, "down"]);
    await new Promise((r) => setTimeout(r, 2_000));
    assert.deepEqual(await flockRoutesVia(node, hostA), [], "no route through the down veth");
    assert.equal((await logLines(node, REPAIRED)).length, 1, "no repair of a down veth");
    const status = await node.cni("STATUS");
    assert.equal(status.code, 0, status.stdout);
    assert.deepEqual(await hostSide(node, hostB), wholeB, "B was not touched");
    assert.ok(await ping(nsA, podB.ips[0]) === false, "A is off the network while down");
    await node.ns.ip(["link", "set", hostA, "up"]);
    await repairedWithin(
      "A's host side to come back after a long down",
      () => hostSide(node, hostA),
      (have) => sameList(have, wholeA),
    );
    // The ping A sent while its veth was down left its neighbour entry for fe80::1 incomplete,
    // failed once its 3 probes (1 s apart) are out: the pod's kernel resolves it again at the
    // next packet after that, so the first ping may still be lost.
    await eventually(
      "A and B to reach each other again",
      async () => {
        try {
          await assertPings(nsA, podA, nsB, podB);
          return true;
        } catch {
          return false;
        }
      },
      (ok) => ok,
      5_000,
      100,
    );
    assert.equal((await logLines(node, REPAIRED)).length, 2);
    assert.doesNotMatch(await node.agentLog(), /"level":"error"/);

    // A CHECK afterwards finds both pods whole, and both leave cleanly.
    for (const [id, ns] of [["flap-a", nsA], ["flap-b", nsB]] as const) {
      const check = await node.cni("CHECK", { containerId: id, netns: ns.path });
      assert.equal(check.code, 0, `${id}: ${check.stdout}`);
    }
    for (const [id, ns] of [["flap-a", nsA], ["flap-b", nsB]] as const) {
      assert.equal((await node.cni("DEL", { containerId: id, netns: ns.path })).code, 0);
    }
    assert.deepEqual(await node.flockLinks(), []);
    assert.deepEqual((await flockRoutesVia(node)).filter((r) => r.includes(" flock")), []);
  },
});

Deno.test({
  name: "veth flap: a host route deleted by hand (veth up, no link notification) comes back " +
    "within a poll, from its route notification (no sweep)",
  ...ROOT_ONLY,
  async fn() {
    // The sweep's period left at its default (30 s): the repair must not wait for it.
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f2::/64", cidr4: "10.72.0.0/24" },
    });
    await using nsA = await TestNamespace.create("flk-fsa");
    await using nsB = await TestNamespace.create("flk-fsb");
    const podA = await addLivePod(node, "sweep-a", nsA.path);
    const podB = await addLivePod(node, "sweep-b", nsB.path);
    const hostA = hostIfaceOf(node, "sweep-a");
    const whole = await flockRoutesVia(node, hostA);
    for (const [family, ip] of [["-6", podA.ips[0]], ["-4", podA.ips[1]]]) {
      await node.ns.ip([family, "route", "del", ip, "dev", hostA, "proto", "201"]);
      await repairedWithin(
        `A's route to ${ip} back`,
        () => flockRoutesVia(node, hostA),
        (have) => sameList(have, whole),
      );
    }
    await assertPings(nsA, podA, nsB, podB);
    const lines = await logLines(node, REPAIRED);
    assert.deepEqual(lines.map((l) => l.restored), [[`route ${podA.ips[0]}`], [
      `route ${podA.ips[1]}`,
    ]]);
  },
});

Deno.test({
  name: "veth flap: the owner's routes come back, and the route of an address withheld through " +
    "its veth too: it stays withheld (the sweep never gives it back) and is not handed out",
  ...ROOT_ONLY,
  async fn() {
    // No cooldown: an address given back could go to the next pod at once.
    await using node = await FlockNode.start({
      config: { cidr6: "fd00:f3::/120", cidr4: "10.73.0.0/24" },
      cooldownMs: 0,
      startAgent: false,
    });
    // The withheld sweep every 100 ms: it runs many times around the flap.
    await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: "100" } });
    await using nsA = await TestNamespace.create("flk-fwa");
    await using nsB = await TestNamespace.create("flk-fwb");
    await using nsC = await TestNamespace.create("flk-fwc");
    const f = await withholdThroughB(node, nsA, nsB);
    const podC = await addLivePod(node, "fw-c", nsC.path);
    const wholeB = await flockRoutesVia(node, f.hostB);
    assert.equal(wholeB.length, 3, `B's two and the withheld one: ${wholeB}`);

    for (let flaps = 0; flaps < 3; flaps++) {
      await node.ns.ip(["link", "set", f.hostB, "down"]);
      await node.ns.ip(["link", "set", f.hostB, "up"]);
      await repairedWithin(
        "B's own routes and the withheld one back",
        () => flockRoutesVia(node, f.hostB),
        (have) => sameList(have, wholeB),
      );
    }
    // A while later (sweeps every 100 ms): still withheld, never released, still routed.
    await new Promise((r) => setTimeout(r, 1_000));
    assert.deepEqual(withheldIps(node), [f.withheld], "still withheld");
    assert.equal(releasedAt(node, f.withheld), undefined, "never given back");
    assert.deepEqual(await flockRoutesVia(node, f.hostB), wholeB);
    const [line] = await logLines(node, REPAIRED);
    assert.ok((line?.restored as string[]).includes(`withheld route ${f.withheld}`), `${line}`);
    // Not handed out: a pinned ADD of it is refused, naming why.
    const pinned = await node.cni("ADD", {
      containerId: "fw-pin",
      netns: nsC.path,
      extraConfig: {
        runtimeConfig: {
          "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ipv6": f.withheld },
        },
      },
    });
    assertCniError(pinned, 7, new RegExp(`${f.withheld}.*withheld.*${f.hostB}`));
    await assertPings(nsB, f.podB, nsC, podC);
    // The fixture's DEL logs the foreign veth at error; nothing else does.
    const errors = (await node.agentLog()).split("\n").filter((l) => l.includes('"level":"error"'));
    assert.deepEqual(errors.filter((l) => !l.includes("is not this attachment's")), []);
  },
});
