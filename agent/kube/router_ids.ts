/**
 * BGP router-id collisions between nodes (cluster mode). Two nodes with the same router id cannot
 * keep a session with each other (BIRD refuses the OPEN) and iBGP loop checks may drop their
 * routes, which is hard to trace back to the id. Every agent publishes its id in its NodeConfig's
 * `status.bgp.routerID`; each compares its own with those the other NodeConfigs it already watches
 * publish, and reports a match in the `RouterIDUnique` condition and the log. BGP itself is left
 * as it is: no peer is dropped because of a collision.
 *
 * Pure logic.
 *
 * @module
 */

import type { NodeConfigObject } from "./node_configs.ts";
import type { RouterId } from "../routing.ts";

/** The condition type; `False` while another node publishes the same router id. */
export const ROUTER_ID_CONDITION = "RouterIDUnique";

/** The router id a NodeConfig `status` publishes (`status.bgp.routerID`), if any. */
export function publishedRouterId(status: unknown): string | undefined {
  const bgp = (status as { bgp?: { routerID?: unknown } } | null | undefined)?.bgp;
  return typeof bgp?.routerID === "string" && bgp.routerID !== "" ? bgp.routerID : undefined;
}

/** The other nodes whose NodeConfig status publishes `routerId`, sorted by name. */
export function routerIdConflicts(
  routerId: string,
  self: string,
  objects: Iterable<NodeConfigObject>,
): string[] {
  const out: string[] = [];
  for (const obj of objects) {
    if (obj.name !== self && publishedRouterId(obj.status) === routerId) out.push(obj.name);
  }
  return out.sort();
}

/** The `RouterIDUnique` condition for this node's router id and the nodes sharing it. */
export function routerIdCondition(
  routerId: RouterId,
  others: readonly string[],
): { type: string; status: "True" | "False"; reason: string; message: string } {
  const from = `from ${routerId.source}`;
  if (others.length === 0) {
    return {
      type: ROUTER_ID_CONDITION,
      status: "True",
      reason: "RouterIDUnique",
      message: `BGP router id ${routerId.id} (${from}) is not used by any other node`,
    };
  }
  const fix = routerId.source === "bgp.routerID"
    ? "give one of them a different spec.bgp.routerID"
    : "set a unique spec.bgp.routerID in their NodeConfigs";
  return {
    type: ROUTER_ID_CONDITION,
    status: "False",
    reason: "RouterIDConflict",
    message: `BGP router id ${routerId.id} (${from}) is also used by node ${nodeList(others)}: ` +
      `nodes with the same router id cannot keep a BGP session with each other; ${fix}`,
  };
}

/** Node names listed in a condition message at most; the rest are counted. */
const MAX_LISTED_NODES = 20;

/**
 * `others` for a message, cut to {@link MAX_LISTED_NODES} names: a NodeConfig template with one
 * `bgp.routerID` shared by 1,000 nodes would otherwise exceed the CRD's 32768-byte message limit
 * and the API server would reject every status write of every node.
 */
function nodeList(others: readonly string[]): string {
  if (others.length <= MAX_LISTED_NODES) return others.join(", ");
  const more = others.length - MAX_LISTED_NODES;
  return `${
    others.slice(0, MAX_LISTED_NODES).join(", ")
  } and ${more} more (${others.length} nodes)`;
}

/**
 * The conflict last seen, so that the log says when one starts (an error line) and when it ends
 * (an info line) rather than on every check.
 */
export class RouterIdConflictLog {
  #key = "";
  #others: string[] = [];

  constructor(readonly log: (fields: Record<string, unknown>) => void) {}

  /** The nodes sharing this node's router id at the last {@link update}. */
  get others(): readonly string[] {
    return this.#others;
  }

  /**
   * Records the nodes sharing `routerId` (none when it is unknown) and logs a change.
   * True when the conflict changed (started, ended, or names other nodes or another id).
   */
  update(routerId: string | undefined, others: readonly string[]): boolean {
    const key = routerId && others.length ? `${routerId} ${others.join(",")}` : "";
    if (key === this.#key) return false;
    const ended = this.#key !== "" && key === "";
    this.#key = key;
    const before = this.#others;
    this.#others = key ? [...others] : [];
    if (ended) {
      this.log({ level: "info", msg: "BGP router id conflict resolved", formerly: before });
    } else {
      this.log({
        level: "error",
        msg: "BGP router id used by other nodes too; set a unique spec.bgp.routerID",
        routerId,
        nodes: this.#others,
      });
    }
    return true;
  }
}
