/**
 * Requests that go to the kernel together: one datagram, one system call, instead of a round
 * trip each. The kernel still runs them one at a time, in order, each taking its locks as if
 * sent alone.
 */

import type { Handle, QueuedRequest, Requester } from "./handle.ts";
import type { MessageWriter, NetlinkMessage } from "./wire.ts";

/**
 * Collects requests made through it (any operation that takes a {@link Requester}) and sends
 * them with {@link flush}. Only for requests whose answer is a plain ACK: `execute` returns no
 * replies, and errors surface at `flush`.
 */
export class RequestBatch implements Requester {
  readonly #queued: QueuedRequest[] = [];

  constructor(readonly handle: Handle) {}

  message(type: number, flags = 0): MessageWriter {
    return this.handle.message(type, flags);
  }

  execute(msg: MessageWriter, operation: string): NetlinkMessage[] {
    this.#queued.push({ msg, operation });
    return [];
  }

  /** How many requests wait for {@link flush}. */
  get size(): number {
    return this.#queued.length;
  }

  /** Sends everything queued, in order; throws the first request's failure. */
  flush(): void {
    this.handle.executeAll(this.#queued.splice(0));
  }
}
