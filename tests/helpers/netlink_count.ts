/**
 * Counts the netlink requests this process sends, by operation: every request through any
 * {@link Handle} (a dump counts once, a batch once per request in it), for tests and benchmarks
 * that prove how many requests a piece of work costs.
 *
 * @module
 */

import { Handle } from "../../netlink/mod.ts";

/** The requests counted since {@link countNetlinkRequests} began. */
export interface NetlinkRequestCount extends Disposable {
  /** Requests sent in all. */
  readonly total: number;
  /** System calls that sent them (a batch is one). */
  readonly sends: number;
  /** Requests by their operation's name, its `#<index>` and addresses left out. */
  readonly byOperation: ReadonlyMap<string, number>;
  /** Starts counting from zero again. */
  reset(): void;
}

type Methods = Pick<Handle, "execute" | "executeAll" | "dump" | "executeOffThread">;

/**
 * Counts every netlink request until the result is disposed (`using`), which puts the methods
 * back. One counter at a time: it patches Handle's prototype.
 */
export function countNetlinkRequests(): NetlinkRequestCount {
  const proto = Handle.prototype as Methods;
  const original: Methods = {
    execute: proto.execute,
    executeAll: proto.executeAll,
    dump: proto.dump,
    executeOffThread: proto.executeOffThread,
  };
  let total = 0, sends = 0;
  const byOperation = new Map<string, number>();
  const count = (operation: string, requests = 1) => {
    total += requests;
    sends++;
    const name = operation.replace(/ #\d+/g, "").replace(/ [0-9a-f:.]+(\/\d+)?$/i, "");
    byOperation.set(name, (byOperation.get(name) ?? 0) + requests);
  };
  proto.execute = function (this: Handle, msg, operation) {
    count(operation);
    return original.execute.call(this, msg, operation);
  };
  proto.dump = function (this: Handle, msg, operation) {
    count(`dump: ${operation}`);
    return original.dump.call(this, msg, operation);
  };
  proto.executeAll = function (this: Handle, requests) {
    if (requests.length) count(`batch: ${requests[0].operation}`, requests.length);
    return original.executeAll.call(this, requests);
  };
  proto.executeOffThread = function (this: Handle, msg, operation) {
    count(`off-thread: ${operation}`);
    return original.executeOffThread.call(this, msg, operation);
  };
  return {
    get total() {
      return total;
    },
    get sends() {
      return sends;
    },
    byOperation,
    reset() {
      total = 0;
      sends = 0;
      byOperation.clear();
    },
    [Symbol.dispose]() {
      Object.assign(proto, original);
    },
  };
}
