/**
 * A withheld address on a real node (agent/withheld.ts), made as a store restored from a backup
 * would make one: pod A's record names live pod B's host veth and one of A's addresses is routed
 * through it; A's DEL then leaves that veth and route alone and withholds the address.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { FlockNode, TestNamespace } from "./flock.ts";
import { addLivePod, editStore, hostIfaceOf, type LivePod } from "./node_state.ts";
import { DB_FILE } from "../../agent/store.ts";

/** One read-only query of the node's store (the agent may keep running: WAL). */
export function queryStore<T>(node: FlockNode, sql: string, ...params: string[]): T[] {
  const db = new DatabaseSync(join(node.stateDir, DB_FILE), { readOnly: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

/** The addresses the node's store keeps withheld, sorted. */
export function withheldIps(node: FlockNode): string[] {
  return queryStore<{ ip: string }>(node, "SELECT ip FROM withheld ORDER BY ip").map((r) => r.ip);
}

/** When the store recorded `ip` released (its cooldown's start), if it did. */
export function releasedAt(node: FlockNode, ip: string): number | undefined {
  return queryStore<{ at: number }>(node, "SELECT at FROM release WHERE ip = ?", ip)[0]?.at;
}

/** What {@link withholdThroughB} made. */
export interface WithheldFixture {
  podB: LivePod;
  /** B's host veth. */
  hostB: string;
  /** A's IPv6 address, routed through B's veth: withheld by A's DEL. */
  withheld: string;
}

/**
 * Pods A (`wh-a`, in `nsA`) and B (`wh-b`, in `nsB`); A's record names B's veth and A's IPv6
 * address is routed through it; A's DEL then leaves that veth and route alone and withholds the
 * address.
 */
export async function withholdThroughB(
  node: FlockNode,
  nsA: TestNamespace,
  nsB: TestNamespace,
): Promise<WithheldFixture> {
  const podA = await addLivePod(node, "wh-a", nsA.path);
  const podB = await addLivePod(node, "wh-b", nsB.path);
  const hostB = hostIfaceOf(node, "wh-b");
  editStore(node, "UPDATE attachment SET host_iface = ? WHERE container_id = 'wh-a'", hostB);
  const [withheld] = podA.ips;
  await node.ns.ip(["route", "replace", withheld, "dev", hostB, "proto", "201"]);
  const del = await node.cni("DEL", { containerId: "wh-a", netns: nsA.path });
  assert.equal(del.code, 0, del.stdout);
  await node.settled();
  assert.deepEqual(withheldIps(node), [withheld], "A's DEL withheld the address, durably");
  assert.equal(releasedAt(node, withheld), undefined, "and did not release it");
  return { podB, hostB, withheld };
}
