/**
 * The CNI Result flock prints after ADD, in the version the runtime asked for, and a tolerant
 * reader for the `prevResult` the runtime hands back on CHECK and DEL.
 *
 * The shape follows what every runtime accepts (cni-spec notes §0.4): `interfaces[0]` is the
 * host veth (no sandbox), `interfaces[1]` the pod interface with its sandbox, and every IP points
 * at interface 1 with the link-local gateway flock answers on.
 *
 * @module
 */

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
