/**
 * Collecting the kernel's answer to one request from the datagrams read off the socket: which
 * messages belong to it, when it is complete, and what failure it reports. Pure code — no system
 * calls — so it is unit-tested with kernel-shaped bytes (reply_test.ts).
 *
 * @module
 */

import {
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSGERR_ATTR_MSG,
} from "./consts.ts";
import { DumpIncompleteError, NetlinkError } from "./errors.ts";
import { type NetlinkMessage, parseAttributes, parseMessages, readString } from "./wire.ts";

/** The answer to one request, gathered datagram by datagram. */
export class ReplyCollector {
  /** The data messages so far (copied out of the receive buffer). */
  readonly messages: NetlinkMessage[] = [];
  /** The kernel flagged the dump NLM_F_DUMP_INTR: its table changed while it was read. */
  interrupted = false;

  constructor(
    /** The request as sent. */
    readonly request: Uint8Array,
    /** The request's sequence number; messages with any other belong to an earlier request. */
    readonly seq: number,
    /** Names the request in errors. */
    readonly operation: string,
    /** The request asked for an ACK (NLM_F_ACK): the answer ends with NLMSG_ERROR. */
    readonly acked: boolean,
  ) {}

  /**
   * Takes one datagram; returns whether the request is answered ({@link messages} is then
   * complete). Throws a {@link NetlinkError} when the kernel refused the request, and a
   * {@link DumpIncompleteError} when it stopped a dump part-way (an errno in NLMSG_DONE).
   */
  take(datagram: Uint8Array): boolean {
    for (const m of parseMessages(datagram)) {
      if (m.seq !== this.seq) continue; // a late reply to an earlier, abandoned request
      if (m.flags & NLM_F_DUMP_INTR) this.interrupted = true;
      if (m.type === NLMSG_ERROR) {
        const error = ackError(m, this.operation);
        if (error) throw error;
        return true;
      }
      if (m.type === NLMSG_DONE) {
        const error = doneError(m, this.operation);
        if (error) throw error;
        return true;
      }
      this.messages.push({ ...m, body: m.body.slice() });
      if (!(m.flags & NLM_F_MULTI) && !this.acked) return true;
    }
    return false;
  }
}

/** The failure an NLMSG_ERROR reports, named by `operation`; undefined for a plain ACK. */
export function ackError(m: NetlinkMessage, operation: string): NetlinkError | undefined {
  if (m.body.length < 4) {
    throw new Error(`${operation}: NLMSG_ERROR of ${m.body.length} bytes (malformed)`);
  }
  const errno = -new DataView(m.body.buffer, m.body.byteOffset).getInt32(0, true);
  if (errno === 0) return undefined;
  // error (4) + the original header, plus its payload unless the ack was capped
  let tlvs = 4 + NLMSG_HDRLEN;
  if (!(m.flags & NLM_F_CAPPED) && m.body.length >= 8) {
    tlvs = 4 + new DataView(m.body.buffer, m.body.byteOffset).getUint32(4, true);
  }
  return new NetlinkError(operation, errno, extAckMessage(m, tlvs));
}

/**
 * The failure an NLMSG_DONE carries: a dump that failed part-way puts its negative errno there
 * (then extended-ack attributes). A DONE without payload (very old kernels) is a clean end.
 */
function doneError(m: NetlinkMessage, operation: string): DumpIncompleteError | undefined {
  if (m.body.length < 4) return undefined;
  const errno = -new DataView(m.body.buffer, m.body.byteOffset).getInt32(0, true);
  if (errno <= 0) return undefined;
  return new DumpIncompleteError(operation, errno, extAckMessage(m, 4));
}

/** The extended-ack text in the attributes at `offset` of the body, if the kernel sent one. */
function extAckMessage(m: NetlinkMessage, offset: number): string | undefined {
  if (!(m.flags & NLM_F_ACK_TLVS) || offset > m.body.length) return undefined;
  return readString(parseAttributes(m.body.subarray(offset)).get(NLMSGERR_ATTR_MSG));
}
