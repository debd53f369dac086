/**
 * A BGP lab node for tests and benchmarks: a {@linkcode FlockNode} whose `eth0` joins a
 * {@linkcode GobgpTor}'s bridge (or a plain {@linkcode Fabric}'s, for a node mesh), BIRD started
 * first on a bootstrap config inside the node namespace (as the DaemonSet's sidecar does), then
 * the agent driving that BIRD (standalone, or in cluster mode with a kubeconfig).
 *
 * @module
 */

import { join } from "node:path";
import { FlockNode } from "./flock.ts";
import { BirdDaemon, bootstrapBirdConfig } from "./bird.ts";
import type { GobgpTor } from "./gobgp.ts";
import type { Fabric } from "./fabric.ts";
import { addAddress } from "./netns.ts";
import { birdcPath } from "./tools.ts";
import type { NodeConfigSpec } from "../../agent/config.ts";

/** What one lab node is. */
export interface BgpNodePlan {
  name: string;
  /** Underlay IPv4 address on br0's /24 (absent: an IPv6-only node). */
  ipv4?: string;
  /** Underlay IPv6 address on br0's /64. */
  ipv6: string;
  spec: NodeConfigSpec;
}

/** A running lab node. */
export interface BgpLabNode {
  plan: BgpNodePlan;
  flock: FlockNode;
  bird: BirdDaemon;
}

/**
 * Starts a node under `tor`; everything it makes is registered on `cleanup` (BIRD is killed
 * before the node's namespace goes). `opts.env` adds variables to the agent's environment.
 */
export async function startBgpNode(
  tor: GobgpTor | Fabric,
  plan: BgpNodePlan,
  cleanup: AsyncDisposableStack,
  opts: { kubeconfig?: string; env?: Record<string, string> } = {},
): Promise<BgpLabNode> {
  const port = tor.nextPortName();
  const flock = await FlockNode.start({
    name: plan.name,
    config: plan.spec,
    kubeconfig: opts.kubeconfig,
    startAgent: false,
    nodeOptions: { prefix: "flk-bgpn", uplink: tor.ns, uplinkIfName: port },
  });
  cleanup.use(flock);
  await tor.attach(port);
  if (plan.ipv4) await addAddress(flock.ns, "eth0", `${plan.ipv4}/24`);
  await addAddress(flock.ns, "eth0", `${plan.ipv6}/64`);
  const birdDir = join(flock.dir, "bird");
  await Deno.mkdir(birdDir);
  const bird = await BirdDaemon.start(flock.ns, {
    config: bootstrapBirdConfig("192.0.2.1"),
    dir: birdDir,
    recover: true,
  });
  cleanup.use(bird);
  flock.options.agentArgs = [
    "--bird-config",
    bird.configPath,
    "--bird-socket",
    bird.socketPath,
    "--birdc",
    birdcPath(),
  ];
  await flock.startAgent({ env: opts.env });
  return { plan, flock, bird };
}
