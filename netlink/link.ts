/** Links: get, list, veth pairs, up/down, MTU, delete, per-family settings. */

import {
  IFF_UP,
  IFLA_ADDRESS,
  IFLA_AF_SPEC,
  IFLA_EXT_MASK,
  IFLA_IFNAME,
  IFLA_INET6_ADDR_GEN_MODE,
  IFLA_INET6_CONF,
  IFLA_INET_CONF,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINK,
  IFLA_LINK_NETNSID,
  IFLA_LINKINFO,
  IFLA_MTU,
  IFLA_NET_NS_FD,
  IFLA_OPERSTATE,
  NLM_F_CREATE,
  NLM_F_ECHO,
  NLM_F_EXCL,
  RTEXT_FILTER_SKIP_STATS,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  VETH_INFO_PEER,
} from "./consts.ts";
import { AF_INET, AF_INET6 } from "./ip.ts";
import type { Handle, Requester } from "./handle.ts";
import { isNotFound, NetlinkArgumentError } from "./errors.ts";
import {
  formatMac,
  ifinfomsg,
  type NetlinkMessage,
  parseAttributes,
  readI32,
  readString,
  readU32,
  readU8,
} from "./wire.ts";

/** Linux IFNAMSIZ - 1: the longest interface name the kernel accepts. */
export const MAX_IFNAME_BYTES = 15;

/** A network interface as the kernel reports it. */
export interface Link {
  index: number;
  name: string;
  /** IFF_* flags. */
  flags: number;
  up: boolean;
  mtu: number;
  mac: string;
  /** `veth`, `bridge`, … (absent for physical and loopback devices). */
  kind?: string;
  /** IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace). */
  peerIndex?: number;
  /** Set when the peer lives in another namespace. */
  peerNetnsId?: number;
  operstate?: number;
  /** IPv6 address generation mode (IN6_ADDR_GEN_MODE_*), when IPv6 is on. */
  ipv6AddrGenMode?: number;
  /** IPv6 per-device forwarding, when IPv6 is on. */
  ipv6Forwarding?: boolean;
  /** IPv4 devconf values flock cares about. */
  ipv4?: { forwarding: boolean; proxyArp: boolean; rpFilter: number };
}

/** Throws unless `name` is a valid interface name. */
export function validateIfname(name: string, what = "interface name"): void {
  if (typeof name !== "string" || name.length === 0) {
    throw new NetlinkArgumentError(`${what} is empty`);
  }
  const bytes = new TextEncoder().encode(name).length;
  if (bytes > MAX_IFNAME_BYTES) {
    throw new NetlinkArgumentError(
      `${what} ${
        JSON.stringify(name)
      } is ${bytes} bytes; the kernel allows at most ${MAX_IFNAME_BYTES}`,
    );
  }
  if (name === "." || name === ".." || /[\/\s:\0]/.test(name)) {
    throw new NetlinkArgumentError(
      `${what} ${JSON.stringify(name)} contains characters the kernel rejects`,
    );
  }
}

function decodeLink(m: NetlinkMessage): Link {
  const v = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
  const flags = v.getUint32(8, true);
  const attrs = parseAttributes(m.body.subarray(16));
  const link: Link = {
    index: v.getInt32(4, true),
    name: readString(attrs.get(IFLA_IFNAME)) ?? "",
    flags,
    up: (flags & IFF_UP) !== 0,
    mtu: readU32(attrs.get(IFLA_MTU)) ?? 0,
    mac: formatMac(attrs.get(IFLA_ADDRESS)),
    peerIndex: readI32(attrs.get(IFLA_LINK)),
    peerNetnsId: readI32(attrs.get(IFLA_LINK_NETNSID)),
    operstate: readU8(attrs.get(IFLA_OPERSTATE)),
  };
  const info = attrs.get(IFLA_LINKINFO);
  if (info) link.kind = readString(parseAttributes(info).get(IFLA_INFO_KIND));
  const afSpec = attrs.get(IFLA_AF_SPEC);
  if (afSpec) {
    const families = parseAttributes(afSpec);
    const inet6 = families.get(AF_INET6);
    if (inet6) {
      const a6 = parseAttributes(inet6);
      link.ipv6AddrGenMode = readU8(a6.get(IFLA_INET6_ADDR_GEN_MODE));
      const conf6 = a6.get(IFLA_INET6_CONF);
      if (conf6) link.ipv6Forwarding = readI32(conf6) !== 0;
    }
    const inet = families.get(AF_INET);
    if (inet) {
      const conf = parseAttributes(inet).get(IFLA_INET_CONF);
      if (conf && conf.length >= 32) {
        const cv = new DataView(conf.buffer, conf.byteOffset, conf.byteLength);
        const at = (id: number) => cv.getUint32((id - 1) * 4, true);
        link.ipv4 = { forwarding: at(1) !== 0, proxyArp: at(3) !== 0, rpFilter: at(8) };
      }
    }
  }
  return link;
}

/** Every link in the handle's namespace. */
export function listLinks(h: Handle): Link[] {
  const msg = h.message(RTM_GETLINK).raw(ifinfomsg(0, 0)).u32(
    IFLA_EXT_MASK,
    RTEXT_FILTER_SKIP_STATS,
  );
  return h.dump(msg, "list links").filter((m) => m.type === RTM_NEWLINK).map(decodeLink);
}

/** The link called `name`, or `undefined`. */
export function getLinkByName(h: Handle, name: string): Link | undefined {
  validateIfname(name);
  const msg = h.message(RTM_GETLINK).raw(ifinfomsg(0, 0)).str(IFLA_IFNAME, name).u32(
    IFLA_EXT_MASK,
    RTEXT_FILTER_SKIP_STATS,
  );
  try {
    const replies = h.execute(msg, `get link ${name}`);
    return replies.length ? decodeLink(replies[0]) : undefined;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

/** The link with `index`, or `undefined`. */
export function getLinkByIndex(h: Handle, index: number): Link | undefined {
  const msg = h.message(RTM_GETLINK).raw(ifinfomsg(0, index)).u32(
    IFLA_EXT_MASK,
    RTEXT_FILTER_SKIP_STATS,
  );
  try {
    const replies = h.execute(msg, `get link #${index}`);
    return replies.length ? decodeLink(replies[0]) : undefined;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

/** Options for {@link addVeth}. */
export interface VethOptions {
  /** Name of the end created in the handle's namespace. */
  name: string;
  /** Name of the other end. */
  peerName: string;
  /** Namespace fd the peer is created in directly (default: the handle's namespace). */
  peerNetnsFd?: number;
  mtu?: number;
  /** MAC address of the end created in the handle's namespace (default: random, by the kernel). */
  mac?: Uint8Array;
  /** MAC address of the peer (default: a random one, chosen by the kernel). */
  peerMac?: Uint8Array;
}

/**
 * Creates a veth pair in one RTM_NEWLINK, with the peer created straight in
 * its target namespace under its final name — there is never a moment when the
 * peer sits in this namespace, so it cannot collide with a local `eth0`.
 *
 * @returns the new end as the kernel echoes it (its `peerIndex` is the peer's ifindex in the
 *   peer's namespace), or undefined on a kernel that does not echo a new link (before 6.3)
 */
export function addVeth(h: Handle, o: VethOptions): Link | undefined {
  validateIfname(o.name, "host interface name");
  validateIfname(o.peerName, "peer interface name");
  for (const [what, mac] of [["", o.mac], ["peer ", o.peerMac]] as const) {
    if (mac && mac.length !== 6) {
      throw new NetlinkArgumentError(`${what}MAC address has ${mac.length} bytes, not 6`);
    }
  }
  const msg = h.message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO).raw(ifinfomsg(0, 0))
    .str(IFLA_IFNAME, o.name);
  if (o.mtu) msg.u32(IFLA_MTU, o.mtu);
  if (o.mac) msg.attr(IFLA_ADDRESS, o.mac);
  const info = msg.beginNested(IFLA_LINKINFO);
  msg.str(IFLA_INFO_KIND, "veth");
  const data = msg.beginNested(IFLA_INFO_DATA);
  const peer = msg.beginNested(VETH_INFO_PEER);
  msg.raw(ifinfomsg(0, 0)).str(IFLA_IFNAME, o.peerName);
  if (o.mtu) msg.u32(IFLA_MTU, o.mtu);
  if (o.peerMac) msg.attr(IFLA_ADDRESS, o.peerMac);
  if (o.peerNetnsFd !== undefined) msg.u32(IFLA_NET_NS_FD, o.peerNetnsFd);
  msg.endNested(peer).endNested(data).endNested(info);
  const echoed = h.execute(msg, `add veth ${o.name} <-> ${o.peerName}`)
    .filter((m) => m.type === RTM_NEWLINK).map(decodeLink);
  return echoed.find((link) => link.name === o.name);
}

/** Sets the link up or down. */
export function setLinkUp(h: Requester, index: number, up = true): void {
  const msg = h.message(RTM_NEWLINK).raw(ifinfomsg(0, index, up ? IFF_UP : 0, IFF_UP));
  h.execute(msg, `set link #${index} ${up ? "up" : "down"}`);
}

/** Sets the link's MTU. */
export function setLinkMtu(h: Requester, index: number, mtu: number): void {
  const msg = h.message(RTM_NEWLINK).raw(ifinfomsg(0, index)).u32(IFLA_MTU, mtu);
  h.execute(msg, `set link #${index} mtu ${mtu}`);
}

/** Moves the link into another namespace, renaming it on the way when `newName` is given. */
export function setLinkNetns(h: Handle, index: number, netnsFd: number, newName?: string): void {
  const msg = h.message(RTM_NEWLINK).raw(ifinfomsg(0, index)).u32(IFLA_NET_NS_FD, netnsFd);
  if (newName) {
    validateIfname(newName);
    msg.str(IFLA_IFNAME, newName);
  }
  h.execute(msg, `move link #${index} to another namespace`);
}

/** Deletes the link (for a veth, both ends). Missing links are not an error. */
export function deleteLink(h: Handle, index: number): boolean {
  try {
    h.execute(h.message(RTM_DELLINK).raw(ifinfomsg(0, index)), `delete link #${index}`);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/**
 * {@link deleteLink} without blocking the event loop: the kernel's answer to deleting a veth
 * waits for RCU grace periods (~40 ms), so the request runs on a worker thread, on a socket of
 * its own (other requests on `h` may run meanwhile). Resolves once the link is gone.
 */
export async function deleteLinkOffThread(h: Handle, index: number): Promise<boolean> {
  const own = h.another();
  try {
    await own.executeOffThread(
      own.message(RTM_DELLINK).raw(ifinfomsg(0, index)),
      `delete link #${index}`,
    );
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  } finally {
    own.close();
  }
}

/** Per-family device settings carried in IFLA_AF_SPEC. */
export interface LinkFamilySettings {
  /** IN6_ADDR_GEN_MODE_* (NONE stops the kernel from adding an EUI-64 link-local). */
  ipv6AddrGenMode?: number;
  ipv4Forwarding?: boolean;
  ipv4ProxyArp?: boolean;
  ipv4RpFilter?: number;
}

/** Applies IPv6 addr_gen_mode and IPv4 devconf through IFLA_AF_SPEC (no sysctl files). */
export function setLinkFamilySettings(h: Requester, index: number, s: LinkFamilySettings): void {
  const msg = h.message(RTM_NEWLINK).raw(ifinfomsg(0, index));
  const spec = msg.beginNested(IFLA_AF_SPEC);
  const conf: [number, number][] = [];
  if (s.ipv4Forwarding !== undefined) conf.push([1, s.ipv4Forwarding ? 1 : 0]);
  if (s.ipv4ProxyArp !== undefined) conf.push([3, s.ipv4ProxyArp ? 1 : 0]);
  if (s.ipv4RpFilter !== undefined) conf.push([8, s.ipv4RpFilter]);
  if (conf.length) {
    const inet = msg.beginNested(AF_INET);
    const c = msg.beginNested(IFLA_INET_CONF);
    for (const [id, value] of conf) msg.u32(id, value);
    msg.endNested(c).endNested(inet);
  }
  if (s.ipv6AddrGenMode !== undefined) {
    const inet6 = msg.beginNested(AF_INET6);
    msg.u8(IFLA_INET6_ADDR_GEN_MODE, s.ipv6AddrGenMode).endNested(inet6);
  }
  msg.endNested(spec);
  h.execute(msg, `set family settings of link #${index}`);
}
