/**
 * The wire format against bytes real tools produce. Every `IP_*` constant is
 * what iproute2 6.1 sent for the command quoted above it, captured with
 * `strace -f -e trace=sendmsg -xx ip -n NS …` (sequence number zeroed). The
 * library's encoders run against a recording handle that finishes each message
 * exactly as {@link Handle.execute} does (NLM_F_REQUEST|NLM_F_ACK, seq 0, pid 0).
 */

import assert from "node:assert/strict";
import {
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_NET_NS_FD,
  NLA_F_NESTED,
  NLM_F_ACK,
  NLM_F_DUMP_INTR,
  NLM_F_ECHO,
  NLM_F_MULTI,
  NLM_F_REQUEST,
  NLMSG_HDRLEN,
  RT_SCOPE_LINK,
  RTA_DST,
  RTA_MULTIPATH,
  RTA_OIF,
  RTA_TABLE,
  RTM_NEWLINK,
  RTM_NEWROUTE,
  RTN_BLACKHOLE,
  RTN_UNICAST,
  VETH_INFO_PEER,
} from "./consts.ts";
import {
  align4,
  type Attributes,
  ifinfomsg,
  MessageWriter,
  type NetlinkMessage,
  parseAttributes,
  parseMessages,
  readString,
  readU32,
} from "./wire.ts";
import type { Handle } from "./handle.ts";
import { addVeth } from "./link.ts";
import { addAddress } from "./addr.ts";
import {
  addRoute,
  decodeNextHops,
  encodeNextHops,
  listRoutes,
  type NextHop,
  type Route,
} from "./route.ts";
import { AF_INET, AF_INET6, formatIP, formatPrefix, parseIP, parsePrefix } from "./ip.ts";

/** "0a 00 03 00 …" → bytes (whitespace is only for reading; pieces may abut). */
function hex(text: string): Uint8Array {
  const digits = text.replace(/\s+/g, "");
  assert.equal(digits.length % 2, 0, "odd number of hex digits");
  return Uint8Array.from(digits.match(/../g) ?? [], (p) => parseInt(p, 16));
}

/** A netlink header as the kernel lays it out, for reassembling captured messages. */
function header(len: number, type: number, flags: number, seq = 0, pid = 0): string {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, len, true);
  v.setUint16(4, type, true);
  v.setUint16(6, flags, true);
  v.setUint32(8, seq, true);
  v.setUint32(12, pid, true);
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
}

const ZERO16 = "00 ".repeat(16);
/** NLM_F_REQUEST|NLM_F_ACK|NLM_F_EXCL|NLM_F_CREATE, what `ip … add` sends. */
const ADD_FLAGS = 0x605;

// ip -n A link add vethA type veth peer name vethB
const IP_VETH = hex(
  header(92, RTM_NEWLINK, ADD_FLAGS) + ZERO16 +
    "0a 00 03 00 76 65 74 68 41 00 00 00" + // IFLA_IFNAME "vethA"
    "30 00 12 00" + // IFLA_LINKINFO
    "08 00 01 00 76 65 74 68" + //   IFLA_INFO_KIND "veth"
    "24 00 02 00" + //   IFLA_INFO_DATA
    "20 00 01 00" + ZERO16 + //     VETH_INFO_PEER: ifinfomsg
    "0a 00 03 00 76 65 74 68 42 00 00 00", //     IFLA_IFNAME "vethB"
);

// ip -n A link add flockabc type veth peer name eth0 netns B   (ip's fd for B was 4)
const IP_VETH_NETNS = hex(
  header(104, RTM_NEWLINK, ADD_FLAGS) + ZERO16 +
    "0d 00 03 00 66 6c 6f 63 6b 61 62 63 00 00 00 00" +
    "38 00 12 00 08 00 01 00 76 65 74 68 2c 00 02 00 28 00 01 00" + ZERO16 +
    "08 00 1c 00 04 00 00 00" + // IFLA_NET_NS_FD 4
    "09 00 03 00 65 74 68 30 00 00 00 00", // IFLA_IFNAME "eth0"
);

// ip -n A addr add fd00::5/128 dev vethA nodad   (vethA is ifindex 3)
const IP_ADDR6_NODAD = hex(
  header(64, 20, ADD_FLAGS) +
    "0a 80 02 00 03 00 00 00" + // ifaddrmsg: AF_INET6, /128, IFA_F_NODAD, universe, #3
    "14 00 02 00 fd 00 00 00 00 00 00 00 00 00 00 00 00 00 00 05" + // IFA_LOCAL
    "14 00 01 00 fd 00 00 00 00 00 00 00 00 00 00 00 00 00 00 05", // IFA_ADDRESS
);

// ip -n A addr add 10.1.0.5/32 dev vethA
const IP_ADDR4 = hex(
  header(40, 20, ADD_FLAGS) +
    "02 20 00 00 03 00 00 00 08 00 02 00 0a 01 00 05 08 00 01 00 0a 01 00 05",
);

// ip -n A route add 10.9.0.7/32 dev vethA proto 201 scope link
const IP_ROUTE4_LINK = hex(
  header(44, RTM_NEWROUTE, ADD_FLAGS) +
    "02 20 00 00 fe c9 fd 01 00 00 00 00" + // rtmsg: /32, main, proto 201, scope link, unicast
    "08 00 01 00 0a 09 00 07" + // RTA_DST
    "08 00 04 00 03 00 00 00", // RTA_OIF 3
);

// ip -n A -6 route add fd00::7/128 dev vethA proto 201 scope link
const IP_ROUTE6_LINK = hex(
  header(56, RTM_NEWROUTE, ADD_FLAGS) +
    "0a 80 00 00 fe c9 fd 01 00 00 00 00" +
    "14 00 01 00 fd 00 00 00 00 00 00 00 00 00 00 00 00 00 00 07" +
    "08 00 04 00 03 00 00 00",
);

// ip -n A route add 10.9.0.0/24 proto 201 nexthop dev vethA nexthop dev vethC  (#3, #6)
const IP_ROUTE4_MULTIPATH = hex(
  header(56, RTM_NEWROUTE, ADD_FLAGS) +
    "02 18 00 00 fe c9 00 01 00 00 00 00 08 00 01 00 0a 09 00 00" +
    "14 00 09 00" + // RTA_MULTIPATH
    "08 00 00 00 03 00 00 00" + //   rtnexthop len 8, flags 0, hops 0, ifindex 3
    "08 00 00 00 06 00 00 00", //   rtnexthop ifindex 6
);

// ip -n A -6 route add fd00:9::/64 proto 201 nexthop via fe80::2 dev vethA nexthop via fe80::3 dev vethC
const IP_ROUTE6_MULTIPATH = hex(
  header(108, RTM_NEWROUTE, ADD_FLAGS) +
    "0a 40 00 00 fe c9 00 01 00 00 00 00" +
    "14 00 01 00 fd 00 00 09 00 00 00 00 00 00 00 00 00 00 00 00" +
    "3c 00 09 00" +
    "1c 00 00 00 03 00 00 00 14 00 05 00 fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 02" +
    "1c 00 00 00 06 00 00 00 14 00 05 00 fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 03",
);

// ip -n A route add blackhole 10.99.0.0/16 proto 201
const IP_BLACKHOLE = hex(
  header(36, RTM_NEWROUTE, ADD_FLAGS) +
    "02 10 00 00 fe c9 00 06 00 00 00 00 08 00 01 00 0a 63 00 00",
);

// What the kernel answered to `ip -n A -4 route show table main` (one datagram, three
// RTM_NEWROUTE with NLM_F_MULTI|NLM_F_DUMP_FILTERED), after the routes above were added.
const KERNEL_ROUTE_DUMP = hex(
  header(64, RTM_NEWROUTE, 0x22, 1795517149, 12506) +
    "02 18 00 00 fe c9 00 01 00 00 00 00 08 00 0f 00 fe 00 00 00 08 00 01 00 0a 09 00 00" +
    "14 00 09 00 08 00 00 00 03 00 00 00 08 00 00 00 06 00 00 00" +
    header(52, RTM_NEWROUTE, 0x22, 1795517149, 12506) +
    "02 20 00 00 fe c9 fd 01 00 00 00 00 08 00 0f 00 fe 00 00 00 08 00 01 00 0a 09 00 07" +
    "08 00 04 00 03 00 00 00" +
    header(44, RTM_NEWROUTE, 0x22, 1795517149, 12506) +
    "02 10 00 00 fe c9 00 06 00 00 00 00 08 00 0f 00 fe 00 00 00 08 00 01 00 0a 63 00 00",
);

/** A stand-in for Handle that records the bytes each request would send. */
class RecordingHandle {
  sent: Uint8Array[] = [];
  constructor(readonly dumpReplies: NetlinkMessage[] = []) {}
  message(type: number, flags = 0): MessageWriter {
    return new MessageWriter(type, NLM_F_REQUEST | flags);
  }
  execute(msg: MessageWriter): NetlinkMessage[] {
    const bytes = msg.finish(0).slice();
    const v = new DataView(bytes.buffer);
    v.setUint16(6, v.getUint16(6, true) | NLM_F_ACK, true);
    this.sent.push(bytes);
    return [];
  }
  dump(msg: MessageWriter): NetlinkMessage[] {
    this.sent.push(msg.finish(0).slice());
    return this.dumpReplies;
  }
  get handle(): Handle {
    return this as unknown as Handle;
  }
}

function sendOne(fn: (h: Handle) => void): Uint8Array {
  const rec = new RecordingHandle();
  fn(rec.handle);
  assert.equal(rec.sent.length, 1);
  return rec.sent[0];
}

/** The message without its top-level attributes of `type` (nlmsg_len fixed up). */
function withoutAttribute(msg: Uint8Array, familyHeaderLen: number, type: number): Uint8Array {
  const start = NLMSG_HDRLEN + familyHeaderLen;
  const kept: Uint8Array[] = [msg.subarray(0, start)];
  const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  for (let off = start; off < msg.length;) {
    const len = v.getUint16(off, true);
    const next = off + align4(len);
    if ((v.getUint16(off + 2, true) & 0x3fff) !== type) kept.push(msg.subarray(off, next));
    off = next;
  }
  const out = new Uint8Array(kept.reduce((n, k) => n + k.length, 0));
  let at = 0;
  for (const k of kept) {
    out.set(k, at);
    at += k.length;
  }
  new DataView(out.buffer).setUint32(0, out.length, true);
  return out;
}

/** Attributes as sorted "type=hex" strings, for order-insensitive comparison. */
function attributeSet(data: Uint8Array): string[] {
  const out: string[] = [];
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let off = 0; off + 4 <= data.length;) {
    const len = v.getUint16(off, true);
    const type = v.getUint16(off + 2, true) & 0x3fff;
    out.push(`${type}=${[...data.subarray(off + 4, off + len)].join(",")}`);
    off += align4(len);
  }
  return out.sort();
}

const ROUTE_IFINDEX = 3;

/** What the kernel reads out of a veth request: names, kind, peer namespace. */
function vethSummary(msg: Uint8Array) {
  const top = parseAttributes(msg.subarray(32));
  const info = parseAttributes(top.get(IFLA_LINKINFO)!);
  const data = parseAttributes(info.get(IFLA_INFO_DATA)!);
  const peer = parseAttributes(data.get(VETH_INFO_PEER)!.subarray(16));
  return {
    type: new DataView(msg.buffer, msg.byteOffset).getUint16(4, true),
    flags: new DataView(msg.buffer, msg.byteOffset).getUint16(6, true),
    ifinfomsg: [...msg.subarray(16, 32)],
    name: readString(top.get(IFLA_IFNAME)),
    kind: readString(info.get(IFLA_INFO_KIND)),
    peerIfinfomsg: [...data.get(VETH_INFO_PEER)!.subarray(0, 16)],
    peerName: readString(peer.get(IFLA_IFNAME)),
    peerNetnsFd: readU32(peer.get(IFLA_NET_NS_FD)),
    topLevel: attributeSet(msg.subarray(32)).length,
    peerLevel: attributeSet(data.get(VETH_INFO_PEER)!.subarray(16)).map((a) => a.split("=")[0]),
  };
}

Deno.test("MessageWriter reproduces ip's veth request byte for byte", () => {
  const msg = new MessageWriter(RTM_NEWLINK, ADD_FLAGS).raw(ifinfomsg(0, 0)).str(
    IFLA_IFNAME,
    "vethA",
  );
  const info = msg.beginNested(IFLA_LINKINFO, false);
  msg.attr(IFLA_INFO_KIND, new TextEncoder().encode("veth")); // ip sends the kind without NUL
  const data = msg.beginNested(IFLA_INFO_DATA, false);
  const peer = msg.beginNested(VETH_INFO_PEER, false);
  msg.raw(ifinfomsg(0, 0)).str(IFLA_IFNAME, "vethB");
  msg.endNested(peer).endNested(data).endNested(info);
  assert.deepEqual(msg.finish(0), IP_VETH);
});

// addVeth's own bytes for the same request. Three deliberate differences from ip, all
// accepted by every kernel flock supports: NLM_F_ECHO (6.3+ answers with the new link, older
// kernels ignore it), NLA_F_NESTED on the nested attributes, and a NUL-terminated
// IFLA_INFO_KIND (so IFLA_LINKINFO is 4 bytes longer).
const FLOCK_VETH = hex(
  header(96, RTM_NEWLINK, ADD_FLAGS | NLM_F_ECHO) + ZERO16 +
    "0a 00 03 00 76 65 74 68 41 00 00 00" +
    "34 00 12 80" + // IFLA_LINKINFO | NLA_F_NESTED
    "09 00 01 00 76 65 74 68 00 00 00 00" + // IFLA_INFO_KIND "veth\0"
    "24 00 02 80" + // IFLA_INFO_DATA | NLA_F_NESTED
    "20 00 01 80" + ZERO16 + // VETH_INFO_PEER | NLA_F_NESTED
    "0a 00 03 00 76 65 74 68 42 00 00 00",
);

Deno.test("addVeth: the documented bytes, and what the kernel reads equals ip's request", () => {
  const ours = sendOne((h) => addVeth(h, { name: "vethA", peerName: "vethB" }));
  assert.deepEqual(ours, FLOCK_VETH);
  assert.deepEqual(vethSummary(ours), { ...vethSummary(IP_VETH), flags: ADD_FLAGS | NLM_F_ECHO });
  assert.equal(vethSummary(ours).kind, "veth");
});

Deno.test("addVeth with the peer placed in another netns carries the same attributes as ip", () => {
  const ours = sendOne((h) => addVeth(h, { name: "flockabc", peerName: "eth0", peerNetnsFd: 4 }));
  // ip puts IFLA_NET_NS_FD before IFLA_IFNAME in the peer; the kernel does not care
  // (vethSummary lists attribute types sorted).
  const want = vethSummary(IP_VETH_NETNS);
  assert.deepEqual(vethSummary(ours), { ...want, flags: want.flags | NLM_F_ECHO });
  assert.deepEqual(want.peerLevel, [String(IFLA_NET_NS_FD), String(IFLA_IFNAME)].sort());
  assert.equal(want.peerName, "eth0");
  assert.equal(want.peerNetnsFd, 4);
  // The whole message differs from ip's only by the kind's NUL (4 bytes).
  assert.equal(ours.length, IP_VETH_NETNS.length + 4);
});

Deno.test("addVeth validates names before sending anything", () => {
  const rec = new RecordingHandle();
  assert.throws(
    () => addVeth(rec.handle, { name: "a-very-long-name0", peerName: "eth0" }),
    /is 17 bytes; the kernel allows at most 15/,
  );
  assert.throws(() => addVeth(rec.handle, { name: "ok", peerName: "" }), /is empty/);
  assert.throws(() => addVeth(rec.handle, { name: "a/b", peerName: "eth0" }), /characters/);
  assert.equal(rec.sent.length, 0);
});

Deno.test("RTM_NEWADDR with IFA_F_NODAD matches ip byte for byte", () => {
  const ours = sendOne((h) =>
    addAddress(h, { index: 3, prefix: parsePrefix("fd00::5/128"), noDad: true })
  );
  assert.deepEqual(ours, IP_ADDR6_NODAD);
  const ours4 = sendOne((h) => addAddress(h, { index: 3, prefix: parsePrefix("10.1.0.5/32") }));
  assert.deepEqual(ours4, IP_ADDR4);
});

Deno.test("flags above 0xff travel in IFA_FLAGS (u32), the header keeps the low byte", () => {
  const ours = sendOne((h) =>
    addAddress(h, { index: 3, prefix: parsePrefix("fd00::5/128"), noDad: true, flags: 0x200 })
  );
  assert.equal(ours[16 + 2], 0x02);
  const attrs = parseAttributes(ours.subarray(16 + 8));
  assert.equal(readU32(attrs.get(8 /* IFA_FLAGS */)), 0x202);
});

Deno.test("RTM_NEWROUTE unicast scope link with protocol: ip's bytes plus RTA_TABLE", () => {
  const cases: [string, Uint8Array][] = [["10.9.0.7/32", IP_ROUTE4_LINK], [
    "fd00::7/128",
    IP_ROUTE6_LINK,
  ]];
  for (const [dst, expected] of cases) {
    const ours = sendOne((h) =>
      addRoute(h, {
        dst: parsePrefix(dst),
        oif: ROUTE_IFINDEX,
        scope: RT_SCOPE_LINK,
        protocol: 201,
      })
    );
    // flock always names the table in RTA_TABLE too (ip only does for ids > 255).
    assert.equal(readU32(parseAttributes(ours.subarray(28)).get(RTA_TABLE)), 254);
    assert.deepEqual(withoutAttribute(ours, 12, RTA_TABLE), expected, dst);
  }
});

Deno.test("blackhole route matches ip byte for byte (apart from RTA_TABLE)", () => {
  const ours = sendOne((h) =>
    addRoute(h, { dst: parsePrefix("10.99.0.0/16"), type: RTN_BLACKHOLE, protocol: 201 })
  );
  assert.deepEqual(withoutAttribute(ours, 12, RTA_TABLE), IP_BLACKHOLE);
});

Deno.test("RTA_MULTIPATH encodes like ip for IPv4 (dev only) and IPv6 (with gateways)", () => {
  const v4 = sendOne((h) =>
    addRoute(h, {
      dst: parsePrefix("10.9.0.0/24"),
      protocol: 201,
      multipath: [{ oif: 3 }, { oif: 6 }],
    })
  );
  assert.deepEqual(withoutAttribute(v4, 12, RTA_TABLE), IP_ROUTE4_MULTIPATH);
  const v6 = sendOne((h) =>
    addRoute(h, {
      dst: parsePrefix("fd00:9::/64"),
      protocol: 201,
      multipath: [{ oif: 3, gateway: parseIP("fe80::2") }, {
        oif: 6,
        gateway: parseIP("fe80::3"),
      }],
    })
  );
  assert.deepEqual(withoutAttribute(v6, 12, RTA_TABLE), IP_ROUTE6_MULTIPATH);
});

Deno.test("RTA_MULTIPATH round trip: decode(encode(hops)) is hops", () => {
  const cases: [typeof AF_INET | typeof AF_INET6, NextHop[]][] = [
    [AF_INET, [{ oif: 3, flags: 0 }, { oif: 6, flags: 0 }]],
    [AF_INET, [{ oif: 7, gateway: parseIP("10.0.0.1"), flags: 4 /* RTNH_F_ONLINK */ }]],
    [AF_INET6, [
      { oif: 3, gateway: parseIP("fe80::2"), flags: 0 },
      { oif: 6, gateway: parseIP("fe80::3"), flags: 0 },
      { oif: 9, flags: 0 },
    ]],
  ];
  for (const [family, hops] of cases) {
    const decoded = decodeNextHops(family, encodeNextHops(family, hops));
    assert.deepEqual(
      decoded.map((h) => ({ ...h, gateway: h.gateway && formatIP(h.gateway) })),
      hops.map((h) => ({ ...h, gateway: h.gateway && formatIP(h.gateway) })),
    );
  }
  // The payload ip sent decodes to its two paths.
  const mp = parseAttributes(IP_ROUTE6_MULTIPATH.subarray(28)).get(RTA_MULTIPATH)!;
  assert.deepEqual(
    decodeNextHops(AF_INET6, mp).map((h) => `${h.oif} via ${formatIP(h.gateway!)}`),
    ["3 via fe80::2", "6 via fe80::3"],
  );
  assert.throws(
    () => encodeNextHops(AF_INET6, [{ oif: 1, gateway: parseIP("10.0.0.1") }]),
    /another family/,
  );
  // A truncated trailing next hop is dropped, not misread.
  const enc = encodeNextHops(AF_INET6, [{ oif: 3, gateway: parseIP("fe80::2") }, {
    oif: 6,
    gateway: parseIP("fe80::3"),
  }]);
  assert.deepEqual(decodeNextHops(AF_INET6, enc.subarray(0, enc.length - 4)).map((h) => h.oif), [
    3,
  ]);
});

Deno.test("parseMessages splits a real kernel dump datagram; listRoutes decodes it", () => {
  const msgs = parseMessages(KERNEL_ROUTE_DUMP);
  assert.equal(msgs.length, 3);
  assert.deepEqual(msgs.map((m) => m.body.length), [48, 36, 28]);
  for (const m of msgs) {
    assert.equal(m.type, RTM_NEWROUTE);
    assert.equal(m.seq, 1795517149);
    assert.equal(m.pid, 12506);
    assert.ok(m.flags & NLM_F_MULTI);
    assert.equal(m.flags & NLM_F_DUMP_INTR, 0);
  }
  const rec = new RecordingHandle(msgs);
  const routes = listRoutes(rec.handle, { family: AF_INET, protocol: 201 });
  const shown = routes.map((r: Route) => ({
    dst: formatPrefix(r.dst),
    type: r.type,
    scope: r.scope,
    oif: r.oif,
    paths: r.multipath?.map((h) => h.oif),
  }));
  assert.deepEqual(shown, [
    { dst: "10.9.0.0/24", type: RTN_UNICAST, scope: 0, oif: undefined, paths: [3, 6] },
    { dst: "10.9.0.7/32", type: RTN_UNICAST, scope: RT_SCOPE_LINK, oif: 3, paths: undefined },
    { dst: "10.99.0.0/16", type: RTN_BLACKHOLE, scope: 0, oif: undefined, paths: undefined },
  ]);
  // The dump request itself: rtmsg with family and protocol, strict-check style.
  const req = rec.sent[0];
  assert.equal(req[16], AF_INET);
  assert.equal(req[16 + 5], 201);
});

Deno.test("parseMessages rejects truncated input", () => {
  // Header claims 64 bytes, only 40 arrived.
  assert.throws(() => parseMessages(KERNEL_ROUTE_DUMP.subarray(0, 40)), /malformed message/);
  // The second message is cut in half.
  assert.throws(() => parseMessages(KERNEL_ROUTE_DUMP.subarray(0, 64 + 30)), /offset 64/);
  // A length below the header size would loop forever if accepted.
  const bad = KERNEL_ROUTE_DUMP.slice(0, 64);
  new DataView(bad.buffer).setUint32(0, 8, true);
  assert.throws(() => parseMessages(bad), /length 8 at offset 0/);
  // A fragment shorter than a header after a good message is truncation too.
  assert.throws(() => parseMessages(KERNEL_ROUTE_DUMP.subarray(0, 64 + 10)), /truncated/);
  assert.deepEqual(parseMessages(new Uint8Array(0)), []);
});

Deno.test("parseAttributes: first occurrence wins, flags are masked, truncation stops cleanly", () => {
  const body = withoutAttribute(IP_ROUTE4_LINK, 12, 0).subarray(28);
  const attrs: Attributes = parseAttributes(body);
  assert.deepEqual([...attrs.keys()], [RTA_DST, RTA_OIF]);
  assert.equal(formatIP({ family: AF_INET, bytes: attrs.get(RTA_DST)! }), "10.9.0.7");
  // Cut inside RTA_OIF: the attribute is dropped, the earlier one survives.
  assert.deepEqual([...parseAttributes(body.subarray(0, 10)).keys()], [RTA_DST]);
  // A header announcing more than there is, or less than its own size, ends the run.
  assert.equal(parseAttributes(hex("20 00 01 00 0a 09 00 07")).size, 0);
  assert.equal(parseAttributes(hex("02 00 01 00 0a 09 00 07")).size, 0);
  assert.equal(parseAttributes(hex("08 00")).size, 0);
  // NLA_F_NESTED is masked off the type; a repeated type keeps the first payload.
  const nested = parseAttributes(hex("08 00 12 80 01 00 00 00 08 00 12 00 02 00 00 00"));
  assert.deepEqual([...nested.keys()], [IFLA_LINKINFO]);
  assert.equal(readU32(nested.get(IFLA_LINKINFO)), 1);
  // Payloads are views, not copies, and an unpadded last attribute is accepted.
  const s = parseAttributes(hex("09 00 03 00 65 74 68 30 00"));
  assert.equal(readString(s.get(IFLA_IFNAME)), "eth0");
});

Deno.test("MessageWriter pads, grows and nests", () => {
  const w = new MessageWriter(RTM_NEWLINK, NLM_F_REQUEST, 16);
  w.raw(Uint8Array.of(1, 2, 3)); // padded to 4
  const outer = w.beginNested(1);
  for (let i = 0; i < 100; i++) w.u8(2, i); // forces several reallocations
  w.endNested(outer).str(3, "x".repeat(300));
  const bytes = w.finish(7, 9);
  const v = new DataView(bytes.buffer, bytes.byteOffset);
  assert.equal(v.getUint32(0, true), bytes.length);
  assert.equal(bytes.length % 4, 0);
  assert.equal(v.getUint32(8, true), 7);
  assert.equal(v.getUint32(12, true), 9);
  assert.deepEqual([...bytes.subarray(16, 20)], [1, 2, 3, 0]);
  const attrs = parseAttributes(bytes.subarray(20));
  assert.equal(v.getUint16(22, true), 1 | NLA_F_NESTED);
  assert.equal(attrs.get(1)!.length, 100 * 8);
  assert.equal(readString(attrs.get(3)), "x".repeat(300));
});
