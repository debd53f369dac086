/** Addresses: add (optionally without DAD), list, delete — both families. */

import {
  IFA_ADDRESS,
  IFA_F_NODAD,
  IFA_FLAGS,
  IFA_LOCAL,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  RT_SCOPE_UNIVERSE,
  RTM_DELADDR,
  RTM_GETADDR,
  RTM_NEWADDR,
} from "./consts.ts";
import { type Family, formatPrefix, type IP, type Prefix } from "./ip.ts";
import { dumpFiltered, type Handle, type Requester } from "./handle.ts";
import { isNotFound } from "./errors.ts";
import { ENODEV } from "./ffi.ts";
import { ifaddrmsg, parseAttributes, readU32 } from "./wire.ts";

/** An address assigned to a link. */
export interface Address {
  index: number;
  prefix: Prefix;
  /** IFA_F_* flags (the 32-bit IFA_FLAGS value when present). */
  flags: number;
  scope: number;
  /**
   * The other end of a point-to-point address (`ip addr add A peer B`): IFA_ADDRESS when it
   * differs from IFA_LOCAL (then `prefix.ip` is IFA_LOCAL, the node's own). Absent otherwise.
   */
  peer?: IP;
}

/** Options for {@link addAddress}. */
export interface AddAddressOptions {
  index: number;
  prefix: Prefix;
  /** Skip duplicate address detection (the address is usable at once). */
  noDad?: boolean;
  scope?: number;
  /** Extra IFA_F_* flags. */
  flags?: number;
  /** Replace an existing identical address instead of failing with EEXIST. */
  replace?: boolean;
}

/** Adds an address to a link. */
export function addAddress(h: Requester, o: AddAddressOptions): void {
  const flags = (o.flags ?? 0) | (o.noDad ? IFA_F_NODAD : 0);
  const { family, bytes } = o.prefix.ip;
  const msg = h.message(RTM_NEWADDR, NLM_F_CREATE | (o.replace ? NLM_F_REPLACE : NLM_F_EXCL))
    .raw(ifaddrmsg(family, o.prefix.len, flags, o.scope ?? RT_SCOPE_UNIVERSE, o.index))
    .attr(IFA_LOCAL, bytes)
    .attr(IFA_ADDRESS, bytes);
  if (flags > 0xff) msg.u32(IFA_FLAGS, flags);
  h.execute(msg, `add address ${formatPrefix(o.prefix)} to link #${o.index}`);
}

/** Deletes an address; returns false when it was not there. */
export function deleteAddress(h: Handle, index: number, prefix: Prefix): boolean {
  const { family, bytes } = prefix.ip;
  const msg = h.message(RTM_DELADDR).raw(ifaddrmsg(family, prefix.len, 0, 0, index))
    .attr(IFA_LOCAL, bytes)
    .attr(IFA_ADDRESS, bytes);
  try {
    h.execute(msg, `delete address ${formatPrefix(prefix)} from link #${index}`);
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/** Lists addresses, optionally of one family and/or one link (filtered in the kernel). */
export function listAddresses(
  h: Handle,
  filter: { family?: Family; index?: number } = {},
): Address[] {
  const msg = h.message(RTM_GETADDR).raw(ifaddrmsg(filter.family ?? 0, 0, 0, 0, filter.index ?? 0));
  const out: Address[] = [];
  // With a link filter, a link that is gone makes the kernel stop the dump with ENODEV.
  for (const m of dumpFiltered(h, msg, "list addresses", filter.index ? ENODEV : undefined)) {
    if (m.type !== RTM_NEWADDR) continue;
    const v = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
    const family = v.getUint8(0) as Family;
    const index = v.getUint32(4, true);
    if (filter.index && index !== filter.index) continue;
    const attrs = parseAttributes(m.body.subarray(8));
    const local = attrs.get(IFA_LOCAL);
    const address = attrs.get(IFA_ADDRESS);
    const raw = local ?? address;
    if (!raw) continue;
    const ip: IP = { family, bytes: raw.slice() };
    out.push({
      index,
      prefix: { ip, len: v.getUint8(1) },
      flags: readU32(attrs.get(IFA_FLAGS)) ?? v.getUint8(2),
      scope: v.getUint8(3),
      ...(local && address && !sameBytes(local, address)
        ? { peer: { family, bytes: address.slice() } }
        : {}),
    });
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
