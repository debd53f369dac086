/**
 * What a flock node holds, as an operator would look at it: the agent's store records, the
 * flock host links and the flock-tagged routes in the node namespace. Storm, bad-input and fuzz
 * tests compare these against the pods they expect to be alive.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type Attachment, DB_FILE, Store } from "../../agent/store.ts";
import type { FlockNode } from "./flock.ts";
import type { TestNamespace } from "./netns.ts";
import type { IpLink } from "./iproute.ts";

/** One pod as the tests track it. */
export interface LivePod {
  containerId: string;
  ifname?: string;
  /** Addresses without prefix length, as the ADD result gave them. */
  ips: string[];
}

/** The node's flock state at one moment. */
export interface NodeState {
  records: Attachment[];
  links: string[];
  /** Destinations of flock routes, without the node-wide 169.254.1.1 gateway route. */
  routes: string[];
}

/** The store's attachments, read through a second connection (WAL lets the agent keep going). */
export function storeRecords(node: FlockNode): Attachment[] {
  const store = Store.open(node.stateDir);
  try {
    return store.list();
  } finally {
    store.close();
  }
}

/**
 * Runs one SQL statement on the node's store through a second connection (WAL: the agent may
 * keep running), as an operator editing or restoring the database by hand would.
 */
export function editStore(node: FlockNode, sql: string, ...params: string[]): void {
  const db = new DatabaseSync(join(node.stateDir, DB_FILE));
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    db.prepare(sql).run(...params);
  } finally {
    db.close();
  }
}

/** The host veth name the store records for `containerId` (which must have a record). */
export function hostIfaceOf(node: FlockNode, containerId: string): string {
  const record = storeRecords(node).find((r) => r.containerId === containerId);
  assert.ok(record, `no store record for ${containerId}`);
  return record.hostIface;
}

/**
 * The node's flock host links as `ip` shows them now. Unlike `node.flockLinks()` it does not
 * wait for releases to settle: for looking at a node whose release is stuck or still running.
 */
export async function flockLinksNow(node: FlockNode): Promise<IpLink[]> {
  return (await node.ns.ipJson<IpLink[]>(["link", "show"]))
    .filter((l) => l.ifname.startsWith("flock"));
}

/** Records, links and pod routes of the node. */
export async function nodeState(node: FlockNode): Promise<NodeState> {
  const routes = (await node.flockRoutes())
    .map((r) => r.dst.replace(/\/(32|128)$/, ""))
    .filter((dst) => dst !== "169.254.1.1");
  return { records: storeRecords(node), links: await node.flockLinks(), routes };
}

/** The addresses of an ADD result, without prefix lengths. */
export function resultIps(json: { ips?: { address: string }[] }): string[] {
  return (json?.ips ?? []).map((i) => i.address.split("/")[0]);
}

/**
 * ADDs `containerId` into `netns` through the plugin, asserts it succeeded, and tracks it.
 * `annotations` reach the agent as the runtime passes them (`io.kubernetes.cri.pod-annotations`).
 */
export async function addLivePod(
  node: FlockNode,
  containerId: string,
  netns: string,
  annotations?: Record<string, string>,
): Promise<LivePod> {
  const extraConfig = annotations &&
    { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } };
  const r = await node.cni("ADD", { containerId, netns, extraConfig });
  assert.equal(r.code, 0, r.stdout);
  return { containerId, ips: resultIps(r.json) };
}

/**
 * Asserts that the node holds exactly `pods`: one committed record each with exactly their
 * addresses, no other record, one host link each, one host route per address and nothing else.
 */
export async function assertNodeHolds(node: FlockNode, pods: LivePod[], why = ""): Promise<void> {
  const state = await nodeState(node);
  const label = why ? ` (${why})` : "";
  const want = [...pods].sort((a, b) => a.containerId.localeCompare(b.containerId));
  const have = [...state.records].sort((a, b) => a.containerId.localeCompare(b.containerId));
  assert.deepEqual(
    have.map((r) => ({
      containerId: r.containerId,
      ifname: r.ifname,
      state: r.state,
      ips: [r.ipv6, r.ipv4].filter(Boolean).sort(),
    })),
    want.map((p) => ({
      containerId: p.containerId,
      ifname: p.ifname ?? "eth0",
      state: "committed",
      ips: [...p.ips].sort(),
    })),
    `store records vs live pods${label}`,
  );
  // Each record's own name: hostIfaceName(containerId) unless two container IDs collide.
  assert.deepEqual(
    [...state.links].sort(),
    have.map((r) => r.hostIface).sort(),
    `flock links vs live pods${label}`,
  );
  const ips = want.flatMap((p) => p.ips);
  assert.equal(new Set(ips).size, ips.length, `duplicate address among live pods${label}`);
  assert.deepEqual([...state.routes].sort(), [...ips].sort(), `flock routes vs live pods${label}`);
}

/** The global addresses on `ifname` inside a pod namespace. */
export async function podAddresses(pod: TestNamespace, ifname = "eth0"): Promise<string[]> {
  const links = await pod.ipJson<{ addr_info?: { local: string; scope: string }[] }[]>([
    "addr",
    "show",
    "dev",
    ifname,
  ]).catch(() => []);
  return links.flatMap((l) => l.addr_info ?? [])
    .filter((a) => a.scope === "global")
    .map((a) => a.local);
}
