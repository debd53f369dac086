/**
 * The `flock.fritzlab.net/*` pod annotations: which addresses a pod wants, checked against the
 * node's configuration before anything is allocated.
 */

import {
  AF_INET,
  AF_INET6,
  type Family,
  familyBits,
  familyName,
  formatIP,
  formatPrefix,
  type IP,
  parsePrefix,
  type Prefix,
  prefixContains,
  prefixCovers,
  tryParseIP,
} from "../netlink/ip.ts";
import type { NodeConfig } from "./config.ts";
import { ALGO_NAMES, type AlgoName, unusableReason } from "./ipam.ts";
import { CniCode, CniError } from "./protocol.ts";

export type { AlgoName } from "./ipam.ts";

/** The annotation prefix flock owns. */
export const ANNOTATION_PREFIX = "flock.fritzlab.net/";

/** The annotation keys flock reads (without the prefix). */
export const ANNOTATION_NAMES = ["ipv6", "ipv4", "cidr6", "cidr4", "ip-algo", "anycast"] as const;

/** What a pod wants for one address family. */
export interface FamilyRequest {
  mode: "auto" | "pinned";
  /** The address asked for, when `mode` is `pinned`. */
  pinned?: IP;
  /**
   * Who pinned it, to name in errors found later (address in use): the annotation key, or the
   * runtime's field (`runtimeConfig.ips`, `CNI_ARGS IP`).
   */
  pinnedBy?: string;
  /** Where to allocate from: the node CIDR or the sub-range the pod asked for. */
  range: Prefix;
}

/** Everything a pod's annotations ask for; an absent family means none. */
export interface PodAddressRequest {
  ipv6?: FamilyRequest;
  ipv4?: FamilyRequest;
  algo: AlgoName;
  /** Anycast addresses the pod serves, validated against the node's anycastCIDRs. */
  anycast: IP[];
}

/** A bad pod annotation; a CNI "invalid configuration" error naming the annotation. */
export class AnnotationError extends CniError {
  constructor(readonly annotation: string, reason: string) {
    super(CniCode.invalidConfig, `annotation ${annotation}: ${reason}`);
    this.name = "AnnotationError";
  }
}

/** The field of the network config that carries the CNI `ips` capability (podman `--ip`). */
export const RUNTIME_IPS_FIELD = "runtimeConfig.ips";
/** The CNI_ARGS key podman 4 uses instead when it pins a single address. */
export const CNI_ARGS_IP_FIELD = "CNI_ARGS IP";

/** A bad address request from the runtime; "invalid configuration" naming the field. */
export class RuntimeAddressError extends CniError {
  constructor(readonly field: string, reason: string) {
    super(CniCode.invalidConfig, `${field}: ${reason}`);
    this.name = "RuntimeAddressError";
  }
}

/** Static addresses the runtime asked for, as given, and the field they came in. */
export interface RuntimeAddresses {
  /** {@link RUNTIME_IPS_FIELD} or {@link CNI_ARGS_IP_FIELD}. */
  field: string;
  /** Expected: a list of addresses, each optionally with a prefix length (which flock ignores). */
  entries: unknown;
}

/**
 * The static addresses a runtime passed: `runtimeConfig.ips` (the CNI `ips` capability), else
 * the `IP` key of CNI_ARGS (comma-separated; podman 4's CNI backend passes a single `--ip` or
 * `--ip6` that way and only two or more through the capability); undefined when neither is set.
 */
export function runtimeAddresses(
  config: Record<string, unknown>,
  cniArgs: Record<string, string>,
): RuntimeAddresses | undefined {
  const rc = config.runtimeConfig;
  if (rc && typeof rc === "object" && "ips" in rc) {
    return { field: RUNTIME_IPS_FIELD, entries: (rc as Record<string, unknown>).ips };
  }
  if (cniArgs.IP !== undefined) return { field: CNI_ARGS_IP_FIELD, entries: cniArgs.IP.split(",") };
  return undefined;
}

/** The error for a pinned address found unusable after parsing, naming who pinned it. */
export function pinnedAddressError(request: FamilyRequest, reason: string): CniError {
  const by = request.pinnedBy ?? "";
  return by.startsWith(ANNOTATION_PREFIX)
    ? new AnnotationError(by, reason)
    : new RuntimeAddressError(by, reason);
}

/** One address per family from the runtime's entries, as canonical text. */
function runtimePins(runtime: RuntimeAddresses): Map<Family, string> {
  const fail = (reason: string) => new RuntimeAddressError(runtime.field, reason);
  const { entries } = runtime;
  if (entries === null || entries === undefined) return new Map();
  if (!Array.isArray(entries)) throw fail("must be a list of IP addresses");
  const pins = new Map<Family, string>();
  for (const entry of entries) {
    if (typeof entry !== "string") throw fail(`${JSON.stringify(entry)} is not a string`);
    const text = entry.trim();
    // `ips` entries may carry a prefix length; a flock pod gets a /128 and a /32 regardless.
    const slash = text.indexOf("/");
    const ip = slash === -1 ? tryParseIP(text) : tryParsePrefixAddress(text);
    if (!ip) throw fail(`${JSON.stringify(entry)} is not an IP address`);
    const previous = pins.get(ip.family);
    if (previous !== undefined) {
      throw fail(
        `two ${familyName(ip.family)} addresses (${previous}, ${formatIP(ip)}); ` +
          "a flock pod has one address per family",
      );
    }
    pins.set(ip.family, formatIP(ip));
  }
  return pins;
}

function tryParsePrefixAddress(text: string): IP | undefined {
  try {
    return parsePrefix(text).ip;
  } catch {
    return undefined;
  }
}

const KNOWN = new Set<string>(ANNOTATION_NAMES);

/** Per-family names and node facts, so both families share one code path. */
interface FamilyView {
  family: Family;
  addrKey: string;
  cidrKey: string;
  nodeCidr?: Prefix;
  nodeField: string;
}

/**
 * Reads the pod's flock annotations and checks them against the node. Other annotations are
 * ignored; unknown `flock.fritzlab.net/` keys are errors (a typo must not go unnoticed).
 * `runtime` addresses pin their families as the `ipv6`/`ipv4` annotations do, with the same
 * checks; an annotation may only agree with them (be absent, "auto" or the same address).
 * Throws {@link AnnotationError} or {@link RuntimeAddressError}.
 */
export function parsePodAnnotations(
  annotations: Record<string, string> | null | undefined,
  node: NodeConfig,
  runtime?: RuntimeAddresses,
): PodAddressRequest {
  const mine = new Map<string, string>();
  for (const [key, value] of Object.entries(annotations ?? {})) {
    if (!key.startsWith(ANNOTATION_PREFIX)) continue;
    const name = key.slice(ANNOTATION_PREFIX.length);
    if (!KNOWN.has(name)) {
      throw new AnnotationError(
        key,
        `unknown flock annotation (known: ${ANNOTATION_NAMES.join(", ")})`,
      );
    }
    if (typeof value !== "string") {
      throw new AnnotationError(key, `the value must be a string, not ${typeof value}`);
    }
    mine.set(name, value.trim());
  }

  const views: FamilyView[] = [
    {
      family: AF_INET6,
      addrKey: "ipv6",
      cidrKey: "cidr6",
      nodeCidr: node.cidr6,
      nodeField: "cidr6",
    },
    {
      family: AF_INET,
      addrKey: "ipv4",
      cidrKey: "cidr4",
      nodeCidr: node.cidr4,
      nodeField: "cidr4",
    },
  ];
  const pins = runtime ? runtimePins(runtime) : new Map<Family, string>();
  const [ipv6, ipv4] = views.map((v) => {
    const pin = pins.get(v.family);
    return familyRequest(v, mine, pin === undefined ? undefined : { field: runtime!.field, pin });
  });

  if (!ipv6 && !ipv4) {
    const explicit = views.find((v) => mine.get(v.addrKey) === "none");
    const key = ANNOTATION_PREFIX + (explicit?.addrKey ?? "ipv6");
    throw new AnnotationError(key, "the pod would get neither an IPv6 nor an IPv4 address");
  }

  const algoText = mine.get("ip-algo");
  let algo: AlgoName = "next";
  if (algoText !== undefined) {
    if (!(ALGO_NAMES as readonly string[]).includes(algoText)) {
      throw new AnnotationError(
        ANNOTATION_PREFIX + "ip-algo",
        `unknown algorithm ${JSON.stringify(algoText)} (known: ${ALGO_NAMES.join(", ")})`,
      );
    }
    algo = algoText as AlgoName;
  }

  const anycastText = mine.get("anycast");
  const anycast = anycastText === undefined
    ? []
    : parseAnycast(anycastText, node, { ipv6: !!ipv6, ipv4: !!ipv4 });

  const out: PodAddressRequest = { algo, anycast };
  if (ipv6) out.ipv6 = ipv6;
  if (ipv4) out.ipv4 = ipv4;
  return out;
}

function familyRequest(
  v: FamilyView,
  mine: Map<string, string>,
  runtime?: { field: string; pin: string },
): FamilyRequest | undefined {
  const addrKey = ANNOTATION_PREFIX + v.addrKey;
  const cidrKey = ANNOTATION_PREFIX + v.cidrKey;
  const name = familyName(v.family);
  const annotated = mine.get(v.addrKey);
  if (runtime && annotated !== undefined && annotated !== "auto") {
    const same = tryParseIP(annotated);
    if (!same || formatIP(same) !== runtime.pin) {
      throw new RuntimeAddressError(
        runtime.field,
        `${runtime.pin} conflicts with annotation ${addrKey}=${JSON.stringify(annotated)}`,
      );
    }
  }
  const value = runtime?.pin ?? annotated;
  // Who asked for `value`: the runtime's field, else the annotation.
  const pinnedBy = runtime?.field ?? addrKey;
  const valueError = (reason: string) =>
    runtime ? new RuntimeAddressError(runtime.field, reason) : new AnnotationError(addrKey, reason);
  const cidrText = mine.get(v.cidrKey);
  const noCidr = `the node has no ${name} CIDR (NodeConfig ${v.nodeField})`;

  if (value === "none" || (value === undefined && !v.nodeCidr)) {
    if (cidrText !== undefined) {
      throw new AnnotationError(
        cidrKey,
        value === "none" ? `has no effect because ${addrKey} is "none"` : noCidr,
      );
    }
    return undefined;
  }
  if (value === "") throw new AnnotationError(addrKey, "empty value");
  if (!v.nodeCidr) throw valueError(noCidr);
  const nodeCidr = v.nodeCidr;

  let range = nodeCidr;
  if (cidrText !== undefined) {
    let sub: Prefix;
    try {
      sub = parsePrefix(cidrText, true);
    } catch (e) {
      throw new AnnotationError(cidrKey, (e as Error).message);
    }
    if (sub.ip.family !== v.family) {
      throw new AnnotationError(cidrKey, `${JSON.stringify(cidrText)} is not an ${name} prefix`);
    }
    if (!prefixCovers(nodeCidr, sub)) {
      throw new AnnotationError(
        cidrKey,
        `${formatPrefix(sub)} is not inside the node's ${name} CIDR ${formatPrefix(nodeCidr)}`,
      );
    }
    // A single address that is the node CIDR's network or broadcast address: nothing to hand out.
    const unusable = sub.len === familyBits(v.family) && unusableReason(nodeCidr, sub.ip);
    if (unusable) {
      throw new AnnotationError(cidrKey, `${formatPrefix(sub)} has no usable address: ${unusable}`);
    }
    range = sub;
  }

  if (value === undefined || value === "auto") return { mode: "auto", range };

  const ip = tryParseIP(value);
  if (!ip) {
    throw new AnnotationError(
      addrKey,
      `${JSON.stringify(value)} is not "auto", "none" or an ${name} address`,
    );
  }
  if (ip.family !== v.family) {
    throw new AnnotationError(addrKey, `${JSON.stringify(value)} is not an ${name} address`);
  }
  if (!prefixContains(nodeCidr, ip)) {
    throw valueError(
      `${formatIP(ip)} is outside the node's ${name} CIDR ${formatPrefix(nodeCidr)}`,
    );
  }
  if (range !== nodeCidr && !prefixContains(range, ip)) {
    throw valueError(`${formatIP(ip)} is outside ${cidrKey} ${formatPrefix(range)}`);
  }
  const why = unusableReason(nodeCidr, ip);
  if (why) throw valueError(why);
  return { mode: "pinned", pinned: ip, pinnedBy, range };
}

function parseAnycast(
  text: string,
  node: NodeConfig,
  has: { ipv6: boolean; ipv4: boolean },
): IP[] {
  const key = ANNOTATION_PREFIX + "anycast";
  if (text === "") return [];
  const out: IP[] = [];
  const seen = new Set<string>();
  for (const raw of text.split(",")) {
    const item = raw.trim();
    if (item === "") throw new AnnotationError(key, `empty entry in ${JSON.stringify(text)}`);
    const ip = tryParseIP(item);
    if (!ip) throw new AnnotationError(key, `${JSON.stringify(item)} is not an IP address`);
    const canonical = formatIP(ip);
    if (seen.has(canonical)) throw new AnnotationError(key, `${canonical} is listed twice`);
    seen.add(canonical);
    const name = familyName(ip.family);
    const ranges = ip.family === AF_INET6 ? node.anycast6 : node.anycast4;
    if (ranges.length === 0) {
      throw new AnnotationError(
        key,
        `${canonical}: the node has no ${name} anycastCIDRs`,
      );
    }
    if (!ranges.some((r) => prefixContains(r, ip))) {
      throw new AnnotationError(
        key,
        `${canonical} is not inside the node's ${name} anycastCIDRs (${
          ranges.map(formatPrefix).join(", ")
        })`,
      );
    }
    if (!(ip.family === AF_INET6 ? has.ipv6 : has.ipv4)) {
      // The pod answers anycast traffic over the default route of that family.
      throw new AnnotationError(
        key,
        `${canonical} needs an ${name} pod address, but the pod gets none`,
      );
    }
    out.push(ip);
  }
  return out;
}
