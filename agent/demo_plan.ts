/**
 * The shape of `flock demo`'s network, decided up front and free of side effects: a "fabric"
 * namespace whose bridge is the shared L2 segment, and N node namespaces on it, each with its
 * own NodeConfig (distinct summaries, one AS per node, every other node as an eBGP peer), and
 * pods on every node, one of which serves an anycast address that every node also serves.
 *
 * Nodes peer with each other directly over IPv4 sessions that carry both families (BIRD
 * announces the node's global IPv6 address as the IPv6 next hop), so the demo needs nothing but
 * BIRD; a ToR would add a daemon and a hop without showing anything more.
 *
 * @module
 */

import {
  EMBEDDED_DEFAULT_CONFIG,
  NODECONFIG_API_VERSION,
  NODECONFIG_KIND,
  type NodeConfigSpec,
  parseNodeConfigText,
} from "./config.ts";
import { ANNOTATION_PREFIX } from "./annotations.ts";
import { bigIntToIP, formatPrefix, ipToBigInt, parsePrefix, prefixSize } from "../netlink/ip.ts";

/** flock's embedded default spec: node 1 runs on it as it is (plus BGP), node N on a copy. */
const DEFAULT_SPEC: NodeConfigSpec = parseNodeConfigText(EMBEDDED_DEFAULT_CONFIG, "embedded").spec;

/** The default's anycast CIDR of one family (the demo's anycast pods need both). */
function defaultAnycast(family: "6" | "4"): string {
  const cidr = DEFAULT_SPEC.anycastCIDRs?.find((c) => c.includes(":") === (family === "6"));
  if (!cidr) throw new Error(`the embedded default config has no IPv${family} anycast CIDR`);
  return cidr;
}

/** `cidr` moved up by `steps` blocks of its own size: node N's copy of node 1's range. */
export function nthBlock(cidr: string, steps: number): string {
  const p = parsePrefix(cidr);
  const first = ipToBigInt(p.ip) + BigInt(steps) * prefixSize(p);
  return formatPrefix({ ip: bigIntToIP(p.ip.family, first), len: p.len });
}

/** Nodes the demo brings up unless told otherwise. */
export const DEFAULT_DEMO_NODES = 2;
/** The most nodes `--nodes` accepts (one /24 and one AS per node; the machine is small). */
export const MAX_DEMO_NODES = 9;

/** The anycast range every node serves and the address its anycast pods hold. */
export const DEMO_ANYCAST = {
  cidr6: defaultAnycast("6"),
  cidr4: defaultAnycast("4"),
  ipv6: "fd00:f10c:ffff::80",
  ipv4: "10.244.255.80",
} as const;

/** One pod of the demo. */
export interface DemoPodPlan {
  /** The container ID handed to the plugin. */
  id: string;
  /** Its network namespace's name. */
  ns: string;
  /** Pod annotations (through the CNI runtimeConfig, as a CRI runtime passes them). */
  annotations: Record<string, string>;
}

/** One node of the demo. */
export interface DemoNodePlan {
  /** The node's name (`--node`), also its BGP description. */
  name: string;
  /** Its network namespace's name. */
  ns: string;
  /** Its port on the fabric bridge (the peer of its `eth0`). */
  fabricPort: string;
  /** Underlay addresses of `eth0` on the fabric's /24 and /64. */
  ipv4: string;
  ipv6: string;
  asn: number;
  spec: NodeConfigSpec;
  /** Pods on this node; the first is plain, the second serves the anycast address. */
  pods: DemoPodPlan[];
}

/** The whole demo network. */
export interface DemoPlan {
  /** Prefix of every namespace the demo makes (`flk-demo-<tag>`). */
  prefix: string;
  /** The fabric namespace, holding bridge `br0`. */
  fabricNs: string;
  nodes: DemoNodePlan[];
}

/** Plans `nodeCount` nodes; `tag` makes the names unique to this run. */
export function planDemo(nodeCount: number, tag: string): DemoPlan {
  if (!Number.isInteger(nodeCount) || nodeCount < 2 || nodeCount > MAX_DEMO_NODES) {
    throw new RangeError(`the demo runs 2 to ${MAX_DEMO_NODES} nodes, not ${nodeCount}`);
  }
  if (!/^[0-9a-z]{1,8}$/.test(tag)) throw new RangeError(`bad demo tag ${JSON.stringify(tag)}`);
  const prefix = `flk-demo-${tag}`;
  const indexes = Array.from({ length: nodeCount }, (_, i) => i + 1);
  const underlay4 = (i: number) => `10.99.0.${10 + i}`;
  const nodes = indexes.map((i): DemoNodePlan => ({
    name: `demo-node${i}`,
    ns: `${prefix}-node${i}`,
    fabricPort: `node${i}`,
    ipv4: underlay4(i),
    ipv6: `fd00:99::${10 + i}`,
    asn: 65000 + i,
    spec: {
      ...DEFAULT_SPEC,
      cidr6: DEFAULT_SPEC.cidr6 && nthBlock(DEFAULT_SPEC.cidr6, i - 1),
      cidr4: DEFAULT_SPEC.cidr4 && nthBlock(DEFAULT_SPEC.cidr4, i - 1),
      bgp: {
        asn: 65000 + i,
        routerID: underlay4(i),
        peers: indexes.filter((j) => j !== i).map((j) => ({
          address: underlay4(j),
          asn: 65000 + j,
        })),
        gracefulRestart: { enabled: true, restartTime: 120 },
      },
    },
    pods: [
      { id: `${prefix}-n${i}-app`, ns: `${prefix}-n${i}-app`, annotations: {} },
      {
        id: `${prefix}-n${i}-web`,
        ns: `${prefix}-n${i}-web`,
        annotations: {
          [`${ANNOTATION_PREFIX}anycast`]: `${DEMO_ANYCAST.ipv6},${DEMO_ANYCAST.ipv4}`,
        },
      },
    ],
  }));
  return { prefix, fabricNs: `${prefix}-fabric`, nodes };
}

/** The node's NodeConfig object, as its agent reads it from `--config` (JSON is YAML too). */
export function nodeConfigObject(node: DemoNodePlan): Record<string, unknown> {
  return {
    apiVersion: NODECONFIG_API_VERSION,
    kind: NODECONFIG_KIND,
    metadata: { name: node.name },
    spec: node.spec,
  };
}
