/**
 * Kernel-level experiments on a new pod's datapath requests with N pods on the node (issue 3):
 * which orderings and variants of the host side's requests grow with the pods present.
 *
 * A throwaway node namespace gets N pods through `Datapath.setup` (each in its own netns); then,
 * round-robin so machine drift hits every variant alike, each variant sets up one more pod in a
 * measuring netns with every request sent and timed on its own, and the pod is torn down again
 * (with a pause, so the kernel's deferred work ends before the next sample).
 *
 * Run as root: `deno run -A --no-lock bench/link_up_experiment.ts [--pods 1000] [--rounds 30]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  addAddress,
  AF_INET,
  deleteLink,
  getLinkByName,
  Handle,
  hostPrefix,
  IFA_F_NOPREFIXROUTE,
  IFF_UP,
  IFLA_ADDRESS,
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_NET_NS_FD,
  IN6_ADDR_GEN_MODE_NONE,
  type IP,
  listAddresses,
  NLM_F_CREATE,
  NLM_F_ECHO,
  NLM_F_EXCL,
  parseIP,
  parsePrefix,
  replaceRoute,
  RequestBatch,
  type Requester,
  RT_SCOPE_LINK,
  RTM_NEWLINK,
  setLinkFamilySettings,
  setLinkNetns,
  setLinkUp,
  setNeighTableParams,
  VETH_INFO_PEER,
} from "../netlink/mod.ts";
import { ifinfomsg } from "../netlink/wire.ts";
import { Datapath, FLOCK_ROUTE_PROTOCOL, type PodNetwork } from "../agent/datapath.ts";
import { addNamespaces, deleteNamespaces, summarize } from "./report.ts";

const { values } = parseArgs({
  options: {
    pods: { type: "string", default: "1000" },
    rounds: { type: "string", default: "30" },
    only: { type: "string", default: "" },
  },
});
const PODS = Number(values.pods);
const ROUNDS = Number(values.rounds);

const prefix = `flk-lue-${Deno.pid}`;
const created: string[] = [];

function ip(args: string[]): void {
  const out = new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** The namespace's path, after creating it and noting it for the cleanup. */
async function addNetns(name: string): Promise<string> {
  await addNamespaces([name]);
  created.push(name);
  return `/var/run/netns/${name}`;
}

const GW6 = parsePrefix("fe80::1/64");
const GW4 = parseIP("169.254.1.1");

/** One timed request: its label and milliseconds (NaN when the kernel refused it). */
type Step = [label: string, ms: number];

class Steps {
  readonly list: Step[] = [];
  readonly errors: string[] = [];
  time(label: string, fn: () => void): void {
    const t = performance.now();
    try {
      fn();
      this.list.push([label, performance.now() - t]);
    } catch (e) {
      this.list.push([label, NaN]);
      this.errors.push(`${label}: ${(e as Error).message}`);
    }
  }
}

/** RTM_NEWLINK of a veth pair, optionally with IFF_UP on either end, echoed. */
function createVeth(
  node: Handle,
  podNs: Handle,
  name: string,
  o: { hostUp?: boolean; peerUp?: boolean } = {},
): { host: number; peer: number } {
  const up = (on?: boolean) => ifinfomsg(0, 0, on ? IFF_UP : 0, on ? IFF_UP : 0);
  const mac = crypto.getRandomValues(new Uint8Array(6));
  mac[0] = (mac[0] & 0xfe) | 0x02;
  const msg = node.message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO).raw(up(o.hostUp))
    .str(IFLA_IFNAME, name);
  const info = msg.beginNested(IFLA_LINKINFO);
  msg.str(IFLA_INFO_KIND, "veth");
  const data = msg.beginNested(IFLA_INFO_DATA);
  const peer = msg.beginNested(VETH_INFO_PEER);
  msg.raw(up(o.peerUp)).str(IFLA_IFNAME, "eth0").attr(IFLA_ADDRESS, mac)
    .u32(IFLA_NET_NS_FD, podNs.netnsFd);
  msg.endNested(peer).endNested(data).endNested(info);
  node.execute(msg, `add veth ${name}`);
  const host = getLinkByName(node, name)!;
  // A lookup (not the echo's decoding) keeps this script short; it is timed with the creation.
  return { host: host.index, peer: host.peerIndex! };
}

interface Ctx {
  /** The node's handle, or a batch of requests to it. */
  node: Requester;
  /** The pod netns's handle, or a batch. */
  podNs: Requester;
  nodeHandle: Handle;
  podHandle: Handle;
  /** The node namespace's name (for `ip -n`). */
  nodeNetns: string;
  name: string;
  v6: IP;
  v4: IP;
  /** Pod index, for a per-pod unique link-local. */
  i: number;
}

function podSettings(s: Steps, c: Ctx, peer: number): void {
  s.time(
    "pod: addr_gen_mode none",
    () => setLinkFamilySettings(c.podNs, peer, { ipv6AddrGenMode: IN6_ADDR_GEN_MODE_NONE }),
  );
}
function podUp(s: Steps, c: Ctx, peer: number): void {
  s.time("pod: up", () => setLinkUp(c.podNs, peer));
}
function podAddrs(s: Steps, c: Ctx, peer: number): void {
  s.time(
    "pod: /128 address",
    () =>
      addAddress(c.podNs, { index: peer, prefix: hostPrefix(c.v6), noDad: true, replace: true }),
  );
  s.time(
    "pod: /32 address",
    () =>
      addAddress(c.podNs, { index: peer, prefix: hostPrefix(c.v4), noDad: true, replace: true }),
  );
}
function podRoutes(s: Steps, c: Ctx, peer: number): void {
  s.time(
    "pod: default6 route",
    () => replaceRoute(c.podNs, { dst: parsePrefix("::/0"), gateway: GW6.ip, oif: peer }),
  );
  s.time(
    "pod: 169.254.1.1 route",
    () => replaceRoute(c.podNs, { dst: hostPrefix(GW4), oif: peer, scope: RT_SCOPE_LINK }),
  );
  s.time(
    "pod: default4 route",
    () => replaceRoute(c.podNs, { dst: parsePrefix("0.0.0.0/0"), gateway: GW4, oif: peer }),
  );
}
function hostSettings(s: Steps, c: Ctx, host: number): void {
  s.time("host: settings", () =>
    setLinkFamilySettings(c.node, host, {
      ipv6AddrGenMode: IN6_ADDR_GEN_MODE_NONE,
      ipv4Forwarding: true,
      ipv4ProxyArp: true,
    }));
  s.time(
    "host: proxy-ARP delay",
    () => setNeighTableParams(c.node, AF_INET, host, { proxyDelayMs: 0 }),
  );
}
function hostGateway(s: Steps, c: Ctx, host: number, unique = false): void {
  const prefix = unique ? parsePrefix(`fe80::f:${(c.i & 0xffff).toString(16)}/64`) : GW6;
  s.time(unique ? "host: add fe80::<unique>" : "host: add fe80::1", () =>
    addAddress(c.node, {
      index: host,
      prefix,
      noDad: true,
      replace: true,
      flags: IFA_F_NOPREFIXROUTE,
    }));
}
function hostUp(s: Steps, c: Ctx, host: number): void {
  s.time("host: up", () => setLinkUp(c.node, host));
}
function hostRoutes(s: Steps, c: Ctx, host: number): void {
  for (const [label, ip] of [["host: /128 route", c.v6], ["host: /32 route", c.v4]] as const) {
    s.time(label, () =>
      replaceRoute(c.node, {
        dst: hostPrefix(ip),
        oif: host,
        scope: RT_SCOPE_LINK,
        protocol: FLOCK_ROUTE_PROTOCOL,
      }));
  }
}

/**
 * Queues what `fill` sends to one side into a batch, sent as one datagram and timed as one step.
 * Inside the batch `Steps.time` only queues (its times are dropped).
 */
function batched(
  s: Steps,
  c: Ctx,
  label: string,
  side: "node" | "pod",
  fill: (b: Steps, c: Ctx) => void,
): void {
  const batch = new RequestBatch(side === "node" ? c.nodeHandle : c.podHandle);
  const queued: Ctx = side === "node" ? { ...c, node: batch } : { ...c, podNs: batch };
  const inner = new Steps();
  fill(inner, queued);
  s.time(label, () => batch.flush());
}

/**
 * The veth's creation and the pod side's batch as today, then the host side's batch as `host`
 * fills it.
 */
function podThenHost(s: Steps, c: Ctx, host: (b: Steps, q: Ctx, index: number) => void): void {
  let l = { host: 0, peer: 0 };
  s.time("create veth", () => (l = createVeth(c.nodeHandle, c.podHandle, c.name)));
  batched(s, c, "pod batch", "pod", (b, q) => {
    podSettings(b, q, l.peer), podUp(b, q, l.peer), podAddrs(b, q, l.peer);
    podRoutes(b, q, l.peer);
  });
  batched(s, c, "host batch", "node", (b, q) => host(b, q, l.host));
}

/** Today's order with every request on its own; `unique`: a per-pod link-local, not fe80::1. */
function todayUnbatched(s: Steps, c: Ctx, unique: boolean): void {
  let l = { host: 0, peer: 0 };
  s.time("create veth", () => (l = createVeth(c.nodeHandle, c.podHandle, c.name)));
  podSettings(s, c, l.peer), podUp(s, c, l.peer), podAddrs(s, c, l.peer);
  podRoutes(s, c, l.peer);
  hostSettings(s, c, l.host), hostGateway(s, c, l.host, unique), hostUp(s, c, l.host);
  hostRoutes(s, c, l.host);
}

/** Runs `variant` while the node's uplink has an IPv4 address (added and removed untimed). */
function withUplinkIPv4(c: Ctx, variant: () => void): void {
  ip(["-n", c.nodeNetns, "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
  try {
    variant();
  } finally {
    ip(["-n", c.nodeNetns, "addr", "del", "192.0.2.10/24", "dev", "eth0"]);
  }
}

/** A warm pair: host end up in the node (settings, `fe80::1`), peer parked down in `park`. */
interface WarmPair {
  hostName: string;
  host: number;
  peer: number;
}
let park: Handle | undefined;
let warm: WarmPair | undefined;
let warmSerial = 0;

/** Makes the next warm pair (untimed): the host end's link-up walk happens here, not in ADD. */
function prepareWarm(c: Ctx): WarmPair {
  const hostName = `flockw${(warmSerial++).toString(16).padStart(7, "0")}`;
  const l = createVeth(c.nodeHandle, park!, hostName);
  const s = new Steps();
  hostSettings(s, c, l.host), hostGateway(s, c, l.host), hostUp(s, c, l.host);
  if (s.errors.length) throw new Error(s.errors.join("; "));
  return { hostName, host: l.host, peer: l.peer };
}

/** The variants: each makes one pod's datapath with every request timed. */
const VARIANTS: Record<string, (s: Steps, c: Ctx) => void> = {
  /** Today's order (agent/datapath.ts), each request on its own. */
  base(s, c) {
    todayUnbatched(s, c, false);
  },
  /** Today's order with a per-pod link-local instead of fe80::1 on the host side. */
  uniqueLL(s, c) {
    todayUnbatched(s, c, true);
  },
  /** The host's routes before its link is up (IPv4 refuses a down device: recorded). */
  routesBeforeUp(s, c) {
    let l = { host: 0, peer: 0 };
    s.time("create veth", () => (l = createVeth(c.nodeHandle, c.podHandle, c.name)));
    podSettings(s, c, l.peer), podUp(s, c, l.peer), podAddrs(s, c, l.peer);
    podRoutes(s, c, l.peer);
    hostSettings(s, c, l.host), hostGateway(s, c, l.host);
    hostRoutes(s, c, l.host);
    hostUp(s, c, l.host);
  },
  /** The pod end up first of all, so the carrier (and the kernel's walk) starts early. */
  carrierFirst(s, c) {
    let l = { host: 0, peer: 0 };
    s.time(
      "create veth (host up)",
      () => (l = createVeth(c.nodeHandle, c.podHandle, c.name, { hostUp: true })),
    );
    podSettings(s, c, l.peer), podUp(s, c, l.peer), podAddrs(s, c, l.peer);
    podRoutes(s, c, l.peer);
    hostSettings(s, c, l.host), hostGateway(s, c, l.host), hostRoutes(s, c, l.host);
  },
  /** Today's datapath: one batch per side, the pod's first, the host's up before its routes. */
  baseBatched(s, c) {
    podThenHost(s, c, (b, q, host) => {
      hostSettings(b, q, host), hostGateway(b, q, host), hostUp(b, q, host), hostRoutes(b, q, host);
    });
  },
  /** baseBatched with a per-pod link-local on the host side instead of fe80::1. */
  uniqueLLBatched(s, c) {
    podThenHost(s, c, (b, q, host) => {
      hostSettings(b, q, host), hostGateway(b, q, host, true), hostUp(b, q, host);
      hostRoutes(b, q, host);
    });
  },
  /**
   * The host batch with the up (the carrier, queueing the kernel's link-up walk) before the
   * routes and `fe80::1` last, so that only requests without the RTNL lock might wait behind it.
   */
  upEarlyBatched(s, c) {
    podThenHost(s, c, (b, q, host) => {
      hostSettings(b, q, host), hostUp(b, q, host), hostRoutes(b, q, host), hostGateway(b, q, host);
    });
  },
  /**
   * baseBatched on a node whose uplink has an IPv4 address (as a dual-stack node's has): the
   * kernel then picks an IPv4 route's source address at once instead of scanning every device.
   */
  baseBatchedNodeV4(s, c) {
    withUplinkIPv4(c, () => VARIANTS.baseBatched(s, c));
  },
  /** base (every request on its own) on a node whose uplink has an IPv4 address. */
  baseNodeV4(s, c) {
    withUplinkIPv4(c, () => VARIANTS.base(s, c));
  },
  /** Host end up at creation (no carrier), host batch, then the pod's batch brings the carrier. */
  hostFirstBatched(s, c) {
    let l = { host: 0, peer: 0 };
    s.time(
      "create veth (host up)",
      () => (l = createVeth(c.nodeHandle, c.podHandle, c.name, { hostUp: true })),
    );
    batched(s, c, "host batch", "node", (b, q) => {
      hostSettings(b, q, l.host), hostGateway(b, q, l.host), hostRoutes(b, q, l.host);
    });
    batched(s, c, "pod batch", "pod", (b, q) => {
      podSettings(b, q, l.peer), podAddrs(b, q, l.peer), podUp(b, q, l.peer);
      podRoutes(b, q, l.peer);
    });
  },
  /**
   * Host end created up (no carrier: the pod end is down), its address and routes at once, the
   * pod end last, its IPv4 routes after its up.
   */
  hostUpAtCreate(s, c) {
    let l = { host: 0, peer: 0 };
    s.time(
      "create veth (host up)",
      () => (l = createVeth(c.nodeHandle, c.podHandle, c.name, { hostUp: true })),
    );
    hostSettings(s, c, l.host), hostGateway(s, c, l.host), hostRoutes(s, c, l.host);
    podSettings(s, c, l.peer), podAddrs(s, c, l.peer), podUp(s, c, l.peer);
    podRoutes(s, c, l.peer);
  },
};

/**
 * A warm pool: the pair was made before the ADD with its host end up (the `NETDEV_UP` walk then);
 * the ADD moves the parked peer into the pod as `eth0`, renames the host end (live) and adds the
 * routes; the pod's up brings the carrier (the `NETDEV_CHANGE` walk runs in the kernel's worker).
 */
function pooledVariant(order: "hostFirst" | "podFirst") {
  return (s: Steps, c: Ctx) => {
    const w = warm ?? prepareWarm(c);
    warm = undefined;
    s.time(
      "move peer to pod as eth0",
      () => setLinkNetns(park!, w.peer, c.podHandle.netnsFd, "eth0"),
    );
    let peer = 0;
    s.time("lookup eth0", () => (peer = getLinkByName(c.podHandle, "eth0")!.index));
    const host = () =>
      batched(s, c, "host batch (rename, routes)", "node", (b, q) => {
        b.time("rename", () =>
          q.node.execute(
            q.node.message(RTM_NEWLINK).raw(ifinfomsg(0, w.host)).str(IFLA_IFNAME, c.name),
            "rename",
          ));
        hostRoutes(b, q, w.host);
      });
    if (order === "hostFirst") host();
    batched(s, c, "pod batch", "pod", (b, q) => {
      podSettings(b, q, peer), podAddrs(b, q, peer), podUp(b, q, peer), podRoutes(b, q, peer);
    });
    if (order === "podFirst") host();
    warm = prepareWarm(c);
  };
}
VARIANTS.pooledHostFirst = pooledVariant("hostFirst");
VARIANTS.pooledPodFirst = pooledVariant("podFirst");

function row(label: string, a: number[], b: number[]): string {
  const f = (x: number[]) => {
    const ok = x.filter((v) => !Number.isNaN(v));
    return ok.length ? summarize(ok).median.toFixed(3).padStart(7) : "refused".padStart(7);
  };
  return `  ${label.padEnd(28)} ${f(a)} ${f(b)}`;
}

try {
  const nodePath = await addNetns(`${prefix}-node`);
  await addNetns(`${prefix}-up`);
  ip([
    "-n",
    `${prefix}-node`,
    ...`link add eth0 type veth peer name up0 netns ${prefix}-up`
      .split(" "),
  ]);
  ip(["-n", `${prefix}-node`, "link", "set", "eth0", "up"]);
  const measurePath = await addNetns(`${prefix}-m`);
  const node = Handle.forNetns(nodePath);
  const podNs = Handle.forNetns(measurePath);
  park = Handle.forNetns(await addNetns(`${prefix}-park`));
  const dp = new Datapath(node, { routesIPv4: true });
  dp.ensureNode();
  const names = Object.keys(VARIANTS).filter((v) =>
    !values.only || values.only.split(",").includes(v)
  );
  let serial = 0;
  /** `ROUNDS` samples of every variant, interleaved; per variant, per step: the times. */
  const sample = async (rounds: number) => {
    const out = new Map<string, { labels: string[]; ms: number[][]; errors: Set<string> }>();
    for (let r = 0; r < rounds; r++) {
      for (const v of names) {
        const i = 50_000 + serial++;
        const c: Ctx = {
          node,
          podNs,
          nodeHandle: node,
          podHandle: podNs,
          nodeNetns: `${prefix}-node`,
          name: `flock${i.toString(16).padStart(8, "0")}`,
          v6: parseIP(`fd00:ee::${i.toString(16)}`),
          v4: parseIP(`10.201.${(i >> 8) & 0xff}.${i & 0xff}`),
          i,
        };
        const s = new Steps();
        VARIANTS[v](s, c);
        const host = getLinkByName(node, c.name);
        if (r === 0 && host) {
          // A link-local the kernel made itself (addr_gen_mode set too late) would break §2.
          const peer = getLinkByName(podNs, "eth0");
          const stray = peer
            ? listAddresses(podNs, { index: peer.index }).filter((a) =>
              a.prefix.ip.family !== AF_INET && (a.prefix.ip.bytes[0] === 0xfe)
            )
            : [];
          if (stray.length) s.errors.push(`pod has a link-local: ${stray.length}`);
        }
        const entry = out.get(v) ?? { labels: [], ms: [], errors: new Set<string>() };
        entry.labels = s.list.map(([l]) => l);
        s.list.forEach(([, ms], k) => (entry.ms[k] ??= []).push(ms));
        s.errors.forEach((e) =>
          entry.errors.add(e.replace(/#\d+|flock[0-9a-f]+|[0-9a-f:.]+\/\d+/g, "…"))
        );
        out.set(v, entry);
        if (host) deleteLink(node, host.index);
        await new Promise((res) => setTimeout(res, 60));
      }
    }
    return out;
  };

  for (let i = 0; i < 10; i++) await sample(1); // warm-up
  const empty = await sample(ROUNDS);
  const podNetns = Array.from({ length: PODS }, (_, i) => `${prefix}-p${i}`);
  created.push(...podNetns);
  await addNamespaces(podNetns);
  const t0 = performance.now();
  for (let i = 0; i < PODS; i++) {
    const path = `/var/run/netns/${prefix}-p${i}`;
    dp.setup(
      {
        containerId: `lue${i.toString().padStart(8, "0")}`,
        netns: path,
        ifname: "eth0",
        ipv6: parseIP(`fd00:ef::${i.toString(16)}`),
        ipv4: parseIP(`10.202.${i >> 8}.${i & 0xff}`),
      } satisfies PodNetwork,
    );
  }
  console.error(`filled ${PODS} pods in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  await new Promise((res) => setTimeout(res, 2000));
  const full = await sample(ROUNDS);

  console.log(
    `link-up experiments — kernel ${Deno.osRelease()}, ${ROUNDS} interleaved samples per ` +
      `variant; medians in ms, 0 pods / ${PODS} pods`,
  );
  for (const v of names) {
    const e = empty.get(v)!, f = full.get(v)!;
    console.log(`\n${v}`);
    e.labels.forEach((label, k) => console.log(row(label, e.ms[k], f.ms[k] ?? [])));
    const totals = (x: typeof e) =>
      x.ms[0].map((_, n) =>
        x.ms.reduce((t, times) => t + (Number.isNaN(times[n]) ? 0 : times[n]), 0)
      );
    console.log(row("sum (per sample)", totals(e), totals(f)));
    for (const err of new Set([...e.errors, ...f.errors])) console.log(`  ! ${err}`);
  }
  node.close();
  podNs.close();
} finally {
  await deleteNamespaces(created.splice(0));
}
