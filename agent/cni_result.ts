/**
 * The CNI Result flock prints after ADD, in the version the runtime asked for, and a tolerant
 * reader for the `prevResult` the runtime hands back on CHECK and DEL.
 *
 * The shape follows what every runtime accepts (cni-spec notes §0.4): `interfaces[0]` is the
 * host veth (no sandbox), `interfaces[1]` the pod interface with its sandbox, and every IP points
 * at interface 1 with the link-local gateway flock answers on. When flock is not first in its
 * chain, those entries follow the earlier plugins' ({@link chainResult}).
 *
 * @module
 */

import { parsePrefix } from "../netlink/ip.ts";
import { CniCode, CniError } from "./protocol.ts";

/** The pod's IPv6 gateway: the host veth's link-local address. */
export const GATEWAY6 = "fe80::1";
/** The pod's IPv4 gateway, answered by proxy ARP on the host veth. */
export const GATEWAY4 = "169.254.1.1";

/** What an ADD Result is built from. */
export interface AddResultOptions {
  /** The version to answer in: the request config's `cniVersion`. */
  cniVersion: string;
  hostIface: string;
  hostMac: string;
  /** CNI_IFNAME. */
  ifname: string;
  podMac: string;
  /** CNI_NETNS, reported as the pod interface's sandbox. */
  netns: string;
  /** Reported on the pod interface for 1.1.0 only (older result types have no such field). */
  mtu?: number;
  /** The pod's IPv6 address, bare or with a prefix length (replaced by /128). */
  ipv6?: string | null;
  /** The pod's IPv4 address, bare or with a prefix length (replaced by /32). */
  ipv4?: string | null;
}

/** One `ips[]` entry as read back from a prevResult. */
export interface PrevIp {
  address: string;
  gateway?: string;
  interface?: number;
}

/** One `interfaces[]` entry as read back from a prevResult. */
export interface PrevInterface {
  name: string;
  mac?: string;
  sandbox?: string;
}

/** The parts of a prevResult flock checks. */
export interface PrevResult {
  ips: PrevIp[];
  interfaces: PrevInterface[];
}

/** Whether a result in this version carries `ips[].version` (the 0.3.x/0.4.0 types do). */
function hasIpVersionField(cniVersion: string): boolean {
  return cniVersion.startsWith("0.");
}

/** Builds the ADD Result for one attachment. */
export function buildAddResult(opts: AddResultOptions): Record<string, unknown> {
  const legacy = hasIpVersionField(opts.cniVersion);
  const pod: Record<string, unknown> = { name: opts.ifname, mac: opts.podMac, sandbox: opts.netns };
  if (opts.cniVersion === "1.1.0" && opts.mtu !== undefined && opts.mtu > 0) pod.mtu = opts.mtu;
  const ips: Record<string, unknown>[] = [];
  const routes: Record<string, unknown>[] = [];
  const families = [
    { address: opts.ipv6, bits: 128, gateway: GATEWAY6, version: "6", dst: "::/0" },
    { address: opts.ipv4, bits: 32, gateway: GATEWAY4, version: "4", dst: "0.0.0.0/0" },
  ];
  for (const family of families) {
    if (!family.address) continue;
    const ip: Record<string, unknown> = {
      address: `${family.address.split("/")[0]}/${family.bits}`,
      gateway: family.gateway,
      interface: 1,
    };
    if (legacy) ip.version = family.version;
    ips.push(ip);
    routes.push({ dst: family.dst, gw: family.gateway });
  }
  return {
    cniVersion: opts.cniVersion,
    interfaces: [{ name: opts.hostIface, mac: opts.hostMac }, pod],
    ips,
    routes,
  };
}

/**
 * The result of the plugins before flock in its chain, as ADD gets it (`prevResult`), checked
 * before ADD does any work: flock must print it again, and a runtime fails on a result it cannot
 * parse only after the pod is set up. Unlike {@link parsePrevResult} (CHECK, DEL), it is strict.
 *
 * @returns undefined when there is none (absent or null: flock is first)
 * @throws {CniError} code 7 naming the first entry that is not as the spec's Result has it
 */
export function readChainedResult(
  config: Record<string, unknown>,
): Record<string, unknown> | undefined {
  const prev = config.prevResult;
  if (prev === undefined || prev === null) return undefined;
  const malformed = (why: string) =>
    new CniError(CniCode.invalidConfig, `prevResult is malformed: ${why}`);
  if (!isObject(prev)) throw malformed("expected an object");
  const list = (key: string): Record<string, unknown>[] => {
    const value = prev[key] ?? [];
    if (!Array.isArray(value)) throw malformed(`${key} is not a list`);
    value.forEach((entry, i) => {
      if (!isObject(entry)) throw malformed(`${key}[${i}] is not an object`);
    });
    return value;
  };
  const prefix = (where: string, text: unknown) => {
    try {
      parsePrefix(text as string);
    } catch {
      throw malformed(`${where} ${JSON.stringify(text)} is not an address with a prefix length`);
    }
  };
  const interfaces = list("interfaces");
  interfaces.forEach((iface, i) => {
    if (typeof iface.name !== "string" || iface.name === "") {
      throw malformed(`interfaces[${i}] has no name`);
    }
  });
  list("ips").forEach((ip, i) => {
    prefix(`ips[${i}].address`, ip.address);
    const index = ip.interface;
    const known = index === undefined ||
      (typeof index === "number" && Number.isInteger(index) && index >= 0 &&
        index < interfaces.length);
    if (!known) throw malformed(`ips[${i}].interface ${JSON.stringify(index)} names no interface`);
  });
  list("routes").forEach((route, i) => prefix(`routes[${i}].dst`, route.dst));
  if (prev.dns !== undefined && !isObject(prev.dns)) throw malformed("dns is not an object");
  return prev;
}

/**
 * The ADD Result when flock is not first in its chain: the earlier plugins' result with flock's
 * own entries appended (the spec: a plugin given a prevResult outputs it, with its own changes).
 * flock's `ips[].interface` indexes move past the earlier interfaces, whose own entries keep
 * theirs; the earlier `dns` passes through (flock sets none). Only the Result's keys are kept,
 * as a runtime's typed Result keeps them. `ips[].version` is made to fit the answer's version:
 * 0.x results carry it, 1.x ones have none.
 *
 * @param prev the earlier plugins' result, from {@link readChainedResult}; undefined if none
 * @param own flock's own result, from {@link buildAddResult}
 */
export function chainResult(
  prev: Record<string, unknown> | undefined,
  own: Record<string, unknown>,
): Record<string, unknown> {
  if (!prev) return own;
  const cniVersion = String(own.cniVersion);
  const interfaces = asArray(prev.interfaces);
  const shifted = asArray(own.ips).map((ip) => {
    const entry = ip as Record<string, unknown>;
    return { ...entry, interface: (entry.interface as number) + interfaces.length };
  });
  const merged: Record<string, unknown> = {
    cniVersion,
    interfaces: [...interfaces, ...asArray(own.interfaces)],
    ips: [...asArray(prev.ips).map((ip) => withVersionField(ip, cniVersion)), ...shifted],
    routes: [...asArray(prev.routes), ...asArray(own.routes)],
  };
  if (prev.dns !== undefined) merged.dns = prev.dns;
  return merged;
}

/** One prevResult `ips[]` entry with `version` present exactly when `cniVersion` has it. */
function withVersionField(ip: unknown, cniVersion: string): unknown {
  if (!isObject(ip)) return ip;
  if (!hasIpVersionField(cniVersion)) {
    const { version: _dropped, ...rest } = ip;
    return rest;
  }
  if (ip.version !== undefined || typeof ip.address !== "string") return ip;
  return { ...ip, version: ip.address.includes(":") ? "6" : "4" };
}

/**
 * Reads `prevResult` from a request config. Entries that are not shaped as the spec says are
 * skipped rather than rejected: the cached result may come from an older flock or be partial.
 *
 * @returns undefined when the config has no usable prevResult object
 */
export function parsePrevResult(config: Record<string, unknown>): PrevResult | undefined {
  const prev = config?.prevResult;
  if (!isObject(prev)) return undefined;
  const ips: PrevIp[] = [];
  for (const entry of asArray(prev.ips)) {
    if (!isObject(entry) || typeof entry.address !== "string") continue;
    const ip: PrevIp = { address: entry.address };
    if (typeof entry.gateway === "string") ip.gateway = entry.gateway;
    if (Number.isInteger(entry.interface)) ip.interface = entry.interface as number;
    ips.push(ip);
  }
  const interfaces: PrevInterface[] = [];
  for (const entry of asArray(prev.interfaces)) {
    if (!isObject(entry) || typeof entry.name !== "string") continue;
    const iface: PrevInterface = { name: entry.name };
    if (typeof entry.mac === "string") iface.mac = entry.mac;
    if (typeof entry.sandbox === "string") iface.sandbox = entry.sandbox;
    interfaces.push(iface);
  }
  return { ips, interfaces };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
