/**
 * An address withheld through another pod's host veth (withheld.ts) across a restart whose veth
 * went down while the agent was not running. The kernel flushed the withheld route with the
 * veth's own; at start-up "veth up, route missing" cannot tell a flap from an operator's
 * `ip route del`, and the start errs towards keeping the address, as the running agent does for a
 * flap: it routes the address through that veth again and keeps it withheld. Before, the start
 * gave it back, and with no cooldown the next pod could get an address the old pod still used.
 */

import assert from "node:assert/strict";
import { FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { assertCniError } from "../helpers/cni_output.ts";
import { addLivePod, type LivePod, resultIps } from "../helpers/node_state.ts";
import { flockStatusJson } from "../helpers/status_probe.ts";
import {
  releasedAt,
  type WithheldFixture,
  withheldIps,
  withholdThroughB,
} from "../helpers/withheld_fixture.ts";
import { RELEASE_SWEEP_ENV } from "../../agent/test_faults.ts";

/** Whether the node routes `ip` through the link `dev` (a flock route). */
async function routedThrough(node: FlockNode, ip: string, dev: string): Promise<boolean> {
  return (await node.flockRoutes()).some((r) => r.dst.split("/")[0] === ip && r.dev === dev);
}

/** The withheld address is kept: in the store, never released, routed through B, pinned ADD refused. */
async function assertStillWithheld(
  node: FlockNode,
  f: WithheldFixture,
  ns: TestNamespace,
  when: string,
): Promise<void> {
  assert.deepEqual(withheldIps(node), [f.withheld], `still withheld ${when}`);
  assert.equal(releasedAt(node, f.withheld), undefined, `never given back ${when}`);
  assert.ok(await routedThrough(node, f.withheld, f.hostB), `routed through B again ${when}`);
  const pinned = await node.cni("ADD", {
    containerId: `pin-${when.replace(/\W+/g, "-")}`,
    netns: ns.path,
    extraConfig: {
      runtimeConfig: {
        "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ipv6": f.withheld },
      },
    },
  });
  assertCniError(pinned, 7, new RegExp(`${f.withheld}.*withheld.*${f.hostB}.*wh-b`));
}

/** An ADD of the lowest free IPv6 address: the withheld one, were it given back (cooldown 0). */
async function lowestIps(node: FlockNode, containerId: string, ns: TestNamespace) {
  const r = await node.cni("ADD", {
    containerId,
    netns: ns.path,
    extraConfig: {
      runtimeConfig: {
        "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/ip-algo": "lowest" },
      },
    },
  });
  assert.equal(r.code, 0, r.stdout);
  return resultIps(r.json);
}

/** {@link withheldLab}'s node, namespaces, fixture and live pod C. */
interface WithheldLab {
  node: FlockNode;
  nsB: TestNamespace;
  nsC: TestNamespace;
  nsD: TestNamespace;
  f: WithheldFixture;
  podC: LivePod;
}

/**
 * A node with the fixture's withheld address and a live pod C, all disposed of with `stack`. No
 * cooldown (an address given back would go to the next pod at once) and the withheld sweep every
 * 100 ms (it runs many times after a start).
 */
async function withheldLab(
  stack: AsyncDisposableStack,
  config: { cidr6: string; cidr4: string },
  prefix: string,
): Promise<WithheldLab> {
  const node = stack.use(await FlockNode.start({ config, cooldownMs: 0, startAgent: false }));
  await node.startAgent({ env: { [RELEASE_SWEEP_ENV]: "100" } });
  const ns: TestNamespace[] = [];
  for (const n of "abcd") ns.push(stack.use(await TestNamespace.create(`${prefix}${n}`)));
  const [nsA, nsB, nsC, nsD] = ns;
  const f = await withholdThroughB(node, nsA, nsB);
  const podC = await addLivePod(node, `${prefix}-c`, nsC.path);
  return { node, nsB, nsC, nsD, f, podC };
}

/** B and C answer each other. */
async function assertOnNetwork({ nsB, nsC, f, podC }: WithheldLab): Promise<void> {
  assert.ok(await ping(nsC, f.podB.ips[0]), "B is on the network");
  assert.ok(await ping(nsB, podC.ips[0]), "C is on the network");
}

Deno.test({
  name: "withheld address: a veth flapped while the agent was down is routed again at the start " +
    "and stays withheld; a pinned ADD of it is refused",
  ...ROOT_ONLY,
  async fn() {
    await using stack = new AsyncDisposableStack();
    const lab = await withheldLab(
      stack,
      { cidr6: "fd00:f5::/120", cidr4: "10.75.0.0/24" },
      "flk-wf",
    );
    const { node, f, nsC } = lab;

    // Flapped while the agent is down: the kernel flushed B's routes and the withheld one.
    await node.kill("SIGKILL");
    await node.ns.ip(["link", "set", f.hostB, "down"]);
    await node.ns.ip(["link", "set", f.hostB, "up"]);
    assert.ok(!await routedThrough(node, f.withheld, f.hostB), "the flap took the route");
    await node.restartAgent();
    await assertStillWithheld(node, f, nsC, "after a flap while down");
    const notes = (await flockStatusJson(node)).reconcile!.notes!.join("\n");
    assert.match(notes, new RegExp(`withheld route restored: ${f.withheld} through wh-b/eth0's`));
    assert.doesNotMatch(notes, /routed there no more/);
    // Sweeps every 100 ms a while: none gives it back.
    await new Promise((r) => setTimeout(r, 1_000));
    await assertStillWithheld(node, f, nsC, "a second after the start");
    assert.ok(!(await lowestIps(node, "wf-d", lab.nsD)).includes(f.withheld), "not handed out");
    await assertOnNetwork(lab);
  },
});

Deno.test({
  name: "withheld address: a veth left down while the agent was down is set up by the start's " +
    "repair of its pod, and the withheld route comes back with the pod's own",
  ...ROOT_ONLY,
  async fn() {
    await using stack = new AsyncDisposableStack();
    const lab = await withheldLab(
      stack,
      { cidr6: "fd00:f6::/120", cidr4: "10.76.0.0/24" },
      "flk-wl",
    );
    const { node, f } = lab;

    await node.kill("SIGKILL");
    await node.ns.ip(["link", "set", f.hostB, "down"]);
    await node.restartAgent();
    // Sweeps every 100 ms a while: B's veth is up again (the start repaired B), the route back.
    await new Promise((r) => setTimeout(r, 1_000));
    await assertStillWithheld(node, f, lab.nsC, "after a veth left down while down");
    await assertOnNetwork(lab);
  },
});
