/** Routes: add, replace, delete, list — unicast, blackhole, local, multipath (ECMP). */

import {
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  RT_SCOPE_NOWHERE,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTA_DST,
  RTA_GATEWAY,
  RTA_MULTIPATH,
  RTA_OIF,
  RTA_PREFSRC,
  RTA_PRIORITY,
  RTA_TABLE,
  RTM_DELROUTE,
  RTM_GETROUTE,
  RTM_NEWROUTE,
  RTN_UNICAST,
  RTNEXTHOP_LEN,
  RTPROT_STATIC,
} from "./consts.ts";
import { AF_INET, type Family, formatIP, formatPrefix, type IP, type Prefix } from "./ip.ts";
import { dumpFiltered, type Handle, type Requester } from "./handle.ts";
import { isNotFound, NetlinkArgumentError, NetlinkError } from "./errors.ts";
import { ENOENT } from "./ffi.ts";
import { align4, type NetlinkMessage, parseAttributes, readU32, rtmsg } from "./wire.ts";

/** One path of a multipath route. */
export interface NextHop {
  oif: number;
  gateway?: IP;
  /** RTNH_F_* flags (e.g. ONLINK). */
  flags?: number;
}

/** A route as flock reads and writes it. */
export interface Route {
  dst: Prefix;
  /** RTN_* (default unicast). */
  type?: number;
  /** Routing table (default main). */
  table?: number;
  /** RTPROT_* — flock tags its routes with its own number. */
  protocol?: number;
  /** RT_SCOPE_* (default universe). */
  scope?: number;
  oif?: number;
  gateway?: IP;
  /** Preferred source address for traffic this route carries (RTA_PREFSRC). */
  prefsrc?: IP;
  priority?: number;
  /** ECMP paths; when given, `oif`/`gateway` are not used. */
  multipath?: NextHop[];
}

function describe(r: Route): string {
  return formatPrefix(r.dst) + (r.oif ? ` dev #${r.oif}` : "") +
    (r.multipath ? ` (${r.multipath.length} paths)` : "");
}

function encode(h: Requester, type: number, flags: number, r: Route) {
  const family = r.dst.ip.family;
  if (r.gateway && r.gateway.family !== family) {
    throw new NetlinkArgumentError(`route ${formatPrefix(r.dst)}: gateway of another family`);
  }
  if (r.prefsrc && r.prefsrc.family !== family) {
    throw new NetlinkArgumentError(`route ${formatPrefix(r.dst)}: prefsrc of another family`);
  }
  const table = r.table ?? RT_TABLE_MAIN;
  const msg = h.message(type, flags).raw(rtmsg({
    family,
    dstLen: r.dst.len,
    table,
    protocol: r.protocol ?? RTPROT_STATIC,
    scope: r.scope ?? RT_SCOPE_UNIVERSE,
    type: r.type ?? RTN_UNICAST,
  }));
  msg.u32(RTA_TABLE, table);
  msg.attr(RTA_DST, r.dst.ip.bytes);
  if (r.priority !== undefined) msg.u32(RTA_PRIORITY, r.priority);
  if (r.prefsrc) msg.attr(RTA_PREFSRC, r.prefsrc.bytes);
  if (r.multipath?.length) {
    msg.attr(RTA_MULTIPATH, encodeNextHops(family, r.multipath));
  } else {
    if (r.oif) msg.u32(RTA_OIF, r.oif);
    if (r.gateway) msg.attr(RTA_GATEWAY, r.gateway.bytes);
  }
  return msg;
}

/** Encodes the RTA_MULTIPATH payload: rtnexthop structs each followed by their attributes. */
export function encodeNextHops(family: Family, hops: NextHop[]): Uint8Array {
  const size = hops.reduce(
    (n, hop) => n + RTNEXTHOP_LEN + (hop.gateway ? align4(4 + hop.gateway.bytes.length) : 0),
    0,
  );
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  let off = 0;
  for (const hop of hops) {
    if (hop.gateway && hop.gateway.family !== family) {
      throw new NetlinkArgumentError("multipath next hop of another family");
    }
    const gwLen = hop.gateway ? align4(4 + hop.gateway.bytes.length) : 0;
    v.setUint16(off, RTNEXTHOP_LEN + gwLen, true);
    v.setUint8(off + 2, hop.flags ?? 0);
    v.setUint8(off + 3, 0);
    v.setInt32(off + 4, hop.oif, true);
    if (hop.gateway) {
      v.setUint16(off + 8, 4 + hop.gateway.bytes.length, true);
      v.setUint16(off + 10, RTA_GATEWAY, true);
      out.set(hop.gateway.bytes, off + 12);
    }
    off += RTNEXTHOP_LEN + gwLen;
  }
  return out;
}

/** Decodes an RTA_MULTIPATH payload. */
export function decodeNextHops(family: Family, data: Uint8Array): NextHop[] {
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const hops: NextHop[] = [];
  let off = 0;
  while (off + RTNEXTHOP_LEN <= data.length) {
    const len = v.getUint16(off, true);
    if (len < RTNEXTHOP_LEN || off + len > data.length) break;
    const hop: NextHop = { oif: v.getInt32(off + 4, true), flags: v.getUint8(off + 2) };
    const gw = parseAttributes(data.subarray(off + RTNEXTHOP_LEN, off + len)).get(RTA_GATEWAY);
    if (gw) hop.gateway = { family, bytes: gw.slice() };
    hops.push(hop);
    off += align4(len);
  }
  return hops;
}

/** Adds a route; fails with EEXIST when the same route exists. */
export function addRoute(h: Requester, r: Route): void {
  h.execute(encode(h, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r), `add route ${describe(r)}`);
}

/** Adds the route or replaces the one with the same destination (idempotent). */
export function replaceRoute(h: Requester, r: Route): void {
  h.execute(
    encode(h, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r),
    `replace route ${describe(r)}`,
  );
}

/** Deletes a route; returns false when it was not there. */
export function deleteRoute(h: Handle, r: Route): boolean {
  try {
    h.execute(encode(h, RTM_DELROUTE, 0, r), `delete route ${describe(r)}`);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/** Bound on the routes one {@link deleteRoutesTo} deletes (normally one or none). */
const MAX_ROUTES_TO_ONE_PREFIX = 8;

/**
 * Deletes the routes of `protocol` in the main table to exactly `dst`, whatever their
 * interface, gateway or scope: one request per route, no dump. Returns how many went.
 */
export function deleteRoutesTo(h: Handle, dst: Prefix, protocol: number): number {
  // Scope "nowhere" on a delete matches any scope (IPv4 compares it; IPv6 ignores it).
  const match: Route = { dst, protocol, scope: RT_SCOPE_NOWHERE };
  let deleted = 0;
  while (deleted < MAX_ROUTES_TO_ONE_PREFIX && deleteRoute(h, match)) deleted++;
  return deleted;
}

/** Filter for {@link listRoutes}; table and protocol are filtered by the kernel (strict checking). */
export interface RouteFilter {
  family: Family;
  table?: number;
  protocol?: number;
  oif?: number;
}

function decodeRoute(m: NetlinkMessage): Route & { table: number } {
  const v = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
  const family = v.getUint8(0) as Family;
  const attrs = parseAttributes(m.body.subarray(12));
  const dst = attrs.get(RTA_DST);
  const bytes = new Uint8Array(family === 2 ? 4 : 16);
  if (dst) bytes.set(dst.subarray(0, bytes.length));
  const r: Route & { table: number } = {
    dst: { ip: { family, bytes }, len: v.getUint8(1) },
    table: readU32(attrs.get(RTA_TABLE)) ?? v.getUint8(4),
    protocol: v.getUint8(5),
    scope: v.getUint8(6),
    type: v.getUint8(7),
  };
  const oif = readU32(attrs.get(RTA_OIF));
  if (oif !== undefined) r.oif = oif;
  const gw = attrs.get(RTA_GATEWAY);
  if (gw) r.gateway = { family, bytes: gw.slice() };
  const prefsrc = attrs.get(RTA_PREFSRC);
  if (prefsrc) r.prefsrc = { family, bytes: prefsrc.slice() };
  const prio = readU32(attrs.get(RTA_PRIORITY));
  if (prio !== undefined) r.priority = prio;
  const mp = attrs.get(RTA_MULTIPATH);
  if (mp) r.multipath = decodeNextHops(family, mp);
  return r;
}

/**
 * Lists routes of one family. IPv6 multipath routes come back from the kernel
 * as one message per path; they are merged into one route here. `operation` names the dump in
 * its errors (a caller whose failure must be told apart from the others' names its own).
 */
export function listRoutes(
  h: Handle,
  f: RouteFilter,
  operation = "list routes",
): (Route & { table: number })[] {
  const table = f.table ?? 0;
  const msg = h.message(RTM_GETROUTE).raw(rtmsg({
    family: f.family,
    dstLen: 0,
    table,
    protocol: f.protocol ?? 0,
    scope: 0,
    type: 0,
  }));
  if (table) msg.u32(RTA_TABLE, table);
  if (f.oif) msg.u32(RTA_OIF, f.oif);
  const routes: (Route & { table: number })[] = [];
  // A table filter on a table that does not exist yet (IPv4's main table in a namespace without
  // IPv4 routes) makes the kernel stop the dump with ENOENT.
  for (const m of dumpFiltered(h, msg, operation, table ? ENOENT : undefined)) {
    if (m.type !== RTM_NEWROUTE) continue;
    const r = decodeRoute(m);
    if (f.table && r.table !== f.table) continue;
    if (f.protocol !== undefined && r.protocol !== f.protocol) continue;
    if (f.oif && r.oif !== f.oif && !r.multipath?.some((hop) => hop.oif === f.oif)) continue;
    routes.push(r);
  }
  return routes;
}

/** RTM_F_FIB_MATCH: answer a route query with the FIB entry that matched, not a resolved route. */
const RTM_F_FIB_MATCH = 0x2000;
/** Errors a FIB lookup answers with when the best match is no usable route (no route, blackhole, unreachable, prohibit). */
const NO_ROUTE_ERRNOS = new Set([
  3, // ESRCH
  13, // EACCES: prohibit
  22, // EINVAL: blackhole
  101, // ENETUNREACH: no route, or unreachable
  113, // EHOSTUNREACH
]);

/**
 * The FIB entry the kernel would use for `ip` (`ip route get fibmatch`): one request, not a
 * dump, so its cost does not grow with the number of routes. Undefined when the lookup finds
 * no usable route (no route at all, or a blackhole / unreachable / prohibit one).
 */
export function lookupRoute(h: Handle, ip: IP): (Route & { table: number }) | undefined {
  const msg = h.message(RTM_GETROUTE).raw(rtmsg({
    family: ip.family,
    dstLen: ip.family === AF_INET ? 32 : 128,
    table: 0,
    protocol: 0,
    scope: 0,
    type: 0,
    flags: RTM_F_FIB_MATCH,
  })).attr(RTA_DST, ip.bytes);
  try {
    const reply = h.execute(msg, `look up route to ${formatIP(ip)}`)
      .find((m) => m.type === RTM_NEWROUTE);
    return reply && decodeRoute(reply);
  } catch (e) {
    if (e instanceof NetlinkError && NO_ROUTE_ERRNOS.has(e.errno)) return undefined;
    throw e;
  }
}

/** Whether `dst` of `r` is exactly `p`. */
export function routeMatches(r: Route, p: Prefix): boolean {
  if (r.dst.len !== p.len || r.dst.ip.family !== p.ip.family) return false;
  for (let i = 0; i < p.ip.bytes.length; i++) if (r.dst.ip.bytes[i] !== p.ip.bytes[i]) return false;
  return true;
}
