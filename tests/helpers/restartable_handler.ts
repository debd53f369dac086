/**
 * A PodHandler as the agent makes it, on a store in a temp dir and a node namespace's handle,
 * that a test can "restart" (a new handler on the same store, its pools refilled from it), and
 * counts of the link dumps a piece of work sends: for tests of what a restarted agent knows
 * about its records (netns identities) and what that saves.
 *
 * @module
 */

import { join } from "node:path";
import type { Handle } from "../../netlink/mod.ts";
import { parseIP } from "../../netlink/ip.ts";
import { Datapath } from "../../agent/datapath.ts";
import { Store } from "../../agent/store.ts";
import { AddressPool } from "../../agent/ipam.ts";
import type { NodeConfig } from "../../agent/config.ts";
import { PodHandler } from "../../agent/pod_handler.ts";
import { countNetlinkRequests } from "./netlink_count.ts";
import { rpcRequest } from "./rpc_request.ts";

/** A store in `dir` (its `state`) and the handlers restarted on it; disposing closes the store. */
export interface RestartableHandler extends Disposable {
  /** The store of the last restart. */
  readonly store: Store;
  /** A new agent on the same store and node: the store reopened, the pools refilled from it. */
  restart(): PodHandler;
}

/** See {@link RestartableHandler}; the handler's node is `node` (pools without cooldown). */
export function restartableHandler(
  handle: Handle,
  dir: string,
  node: NodeConfig,
): RestartableHandler {
  let store: Store | undefined;
  return {
    get store() {
      if (!store) throw new Error("restart() first");
      return store;
    },
    restart() {
      store?.close();
      store = Store.open(join(dir, "state"));
      const pool6 = new AddressPool(node.cidr6!, { cooldownMs: 0 });
      const pool4 = node.cidr4 ? new AddressPool(node.cidr4, { cooldownMs: 0 }) : undefined;
      for (const rec of store.list()) {
        if (rec.ipv6) pool6.reserve(parseIP(rec.ipv6));
        if (rec.ipv4) pool4?.reserve(parseIP(rec.ipv4));
      }
      const datapath = new Datapath(handle, { routesIPv4: pool4 !== undefined });
      return new PodHandler({ store, datapath, node, pool6, pool4, log: () => {} });
    },
    [Symbol.dispose]() {
      store?.close();
    },
  };
}

/** What `work` returned and the link dumps (of any netns) it sent. */
export async function linkDumpsOf<T>(
  work: () => T | Promise<T>,
): Promise<{ dumps: number; value: T }> {
  using counted = countNetlinkRequests();
  const value = await work();
  return { dumps: counted.byOperation.get("dump: list links") ?? 0, value };
}

/**
 * The link dumps one new pod's ADD into `netns` sends, by `handler`, on the CNI network
 * `network`; the pod is deleted again.
 */
export async function linkDumpsOfNewPod(
  handler: PodHandler,
  id: string,
  netns: string,
  network: string,
): Promise<number> {
  const { dumps } = await linkDumpsOf(() => handler.add(rpcRequest("ADD", id, netns, network)));
  await handler.del(rpcRequest("DEL", id, netns, network));
  return dumps;
}
