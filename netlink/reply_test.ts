/**
 * ReplyCollector against kernel-shaped datagrams: which messages belong to a request, when it is
 * complete, and the failures the kernel reports (NLMSG_ERROR, an errno in NLMSG_DONE).
 */

import assert from "node:assert/strict";
import { ReplyCollector } from "./reply.ts";
import { DumpIncompleteError, NetlinkError } from "./errors.ts";
import {
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  NLMSG_DONE,
  NLMSG_ERROR,
  RTM_NEWLINK,
  RTM_NEWROUTE,
} from "./consts.ts";

/** The request bytes a collector is made for (unused by its logic). */
const REQUEST = new Uint8Array(16);
const hex = (s: string) => Uint8Array.from(s.match(/../g)!, (b) => parseInt(b, 16));

/**
 * Captured from kernel 6.18: the answer to an IPv6 RTM_GETROUTE dump (seq 0x1234) with
 * rtm_dst_len 64 on a socket with NETLINK_GET_STRICT_CHK — the dump callback fails, so the
 * kernel sends only NLMSG_DONE (flags MULTI|ACK_TLVS) carrying -EINVAL and its ext-ack text.
 */
const DONE_EINVAL = hex(
  "4800000003000202341200001d0f0000eaffffff32000100496e76616c69642076616c75657320696e2068" +
    "656164657220666f72204649422064756d702072657175657374000000",
);

/** One netlink message: header (pid 0x0f1d, as from the kernel) and body, padded to 4. */
function message(type: number, flags: number, seq: number, body: Uint8Array): Uint8Array {
  const len = 16 + body.length;
  const out = new Uint8Array((len + 3) & ~3);
  const v = new DataView(out.buffer);
  v.setUint32(0, len, true);
  v.setUint16(4, type, true);
  v.setUint16(6, flags, true);
  v.setUint32(8, seq, true);
  v.setUint32(12, 0x0f1d, true);
  out.set(body, 16);
  return out;
}

function datagram(...messages: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(messages.reduce((n, m) => n + m.length, 0));
  let off = 0;
  for (const m of messages) {
    out.set(m, off);
    off += m.length;
  }
  return out;
}

const i32 = (n: number) => new Uint8Array(new Int32Array([n]).buffer);
const done = (seq: number, errno = 0, flags = NLM_F_MULTI) =>
  message(NLMSG_DONE, flags, seq, i32(-errno));
const route = (seq: number, flags = NLM_F_MULTI) =>
  message(RTM_NEWROUTE, flags, seq, new Uint8Array(12));
/** A capped NLMSG_ERROR: errno then the request's header. */
const ack = (seq: number, errno = 0) =>
  message(NLMSG_ERROR, NLM_F_CAPPED, seq, datagram(i32(-errno), new Uint8Array(16)));

Deno.test("reply: an errno in NLMSG_DONE (kernel bytes) throws, naming the request and the kernel's text", () => {
  const c = new ReplyCollector(REQUEST, 0x1234, "list routes", false);
  assert.throws(
    () => c.take(DONE_EINVAL),
    (e: unknown) =>
      e instanceof DumpIncompleteError && e instanceof NetlinkError && e.errno === 22 &&
      e.operation === "list routes" &&
      e.kernelMessage === "Invalid values in header for FIB dump request" &&
      /^list routes: the kernel stopped the dump part-way: Invalid argument \(errno 22\)/.test(
        e.message,
      ),
  );
});

Deno.test("reply: a dump that failed part-way (ENOBUFS in DONE after data) returns nothing partial", () => {
  const c = new ReplyCollector(REQUEST, 7, "list links", false);
  assert.equal(c.take(datagram(route(7), route(7))), false);
  assert.throws(
    () => c.take(datagram(route(7), done(7, 105))),
    (e: unknown) => e instanceof DumpIncompleteError && e.errno === 105,
  );
});

Deno.test("reply: a dump ends at DONE 0, with every message of every datagram", () => {
  const c = new ReplyCollector(REQUEST, 7, "list routes", false);
  assert.equal(c.take(datagram(route(7), route(7))), false);
  assert.equal(c.take(datagram(route(7), done(7))), true);
  assert.equal(c.messages.length, 3);
  assert.equal(c.interrupted, false);
});

Deno.test("reply: NLM_F_DUMP_INTR on any message marks the whole dump interrupted", () => {
  const c = new ReplyCollector(REQUEST, 9, "list addresses", false);
  assert.equal(c.take(route(9)), false);
  assert.equal(c.take(datagram(route(9, NLM_F_MULTI | NLM_F_DUMP_INTR))), false);
  assert.equal(c.take(done(9, 0, NLM_F_MULTI | NLM_F_DUMP_INTR)), true);
  assert.equal(c.interrupted, true);
});

Deno.test("reply: messages of an earlier, abandoned request (its data, DONE, error) are skipped", () => {
  const c = new ReplyCollector(REQUEST, 12, "get link", true);
  // The tail of a dump abandoned by request 11, then its DONE, then a late error for 10.
  assert.equal(c.take(datagram(route(11), done(11, 105), ack(10, 2))), false);
  const link = message(RTM_NEWLINK, 0, 12, new Uint8Array(16));
  assert.equal(c.take(datagram(link)), false, "an ACKed request ends at its ACK");
  assert.equal(c.take(ack(12)), true);
  assert.equal(c.messages.length, 1);
  assert.equal(c.messages[0].type, RTM_NEWLINK);
});

Deno.test("reply: NLMSG_ERROR with an extended-ack text becomes a NetlinkError", () => {
  const text = new TextEncoder().encode("Nexthop device is not up\0");
  const attr = datagram(
    new Uint8Array(new Uint16Array([4 + text.length, 1]).buffer),
    text,
    new Uint8Array((4 - ((4 + text.length) % 4)) % 4),
  );
  const c = new ReplyCollector(REQUEST, 3, "add route fd00::1/128", true);
  assert.throws(
    () =>
      c.take(
        message(
          NLMSG_ERROR,
          NLM_F_CAPPED | NLM_F_ACK_TLVS,
          3,
          datagram(i32(-100), new Uint8Array(16), attr),
        ),
      ),
    (e: unknown) =>
      e instanceof NetlinkError && !(e instanceof DumpIncompleteError) && e.errno === 100 &&
      e.kernelMessage === "Nexthop device is not up",
  );
});

Deno.test("reply: a request without ACK ends at its one non-multipart reply", () => {
  const c = new ReplyCollector(REQUEST, 5, "get route", false);
  assert.equal(c.take(route(5, 0)), true);
  assert.equal(c.messages.length, 1);
});
