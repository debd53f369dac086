/**
 * The NodeConfig: what one node hands out and announces. Parsed from the cluster's
 * `flock.fritzlab.net/v1alpha1` NodeConfig object or, standalone, from a JSON or YAML file.
 *
 * Validation is strict (unknown fields are errors) so that a typo fails loudly at start instead
 * of silently changing how a node routes.
 */

import {
  AF_INET,
  AF_INET6,
  type Family,
  familyName,
  formatPrefix,
  parsePrefix,
  type Prefix,
  prefixCovers,
  tryParseIP,
} from "../netlink/ip.ts";
import { parseYaml, YamlError } from "./yaml.ts";

/** The API group/version of the NodeConfig kind. */
export const NODECONFIG_API_VERSION = "flock.fritzlab.net/v1alpha1";

/** The kind name. */
export const NODECONFIG_KIND = "NodeConfig";

/** Default pod MTU. */
export const DEFAULT_MTU = 1500;

/** A key of a Secret in the agent's own namespace (cluster mode only). */
export interface SecretKeyRef {
  name: string;
  key: string;
}

/** `name/key`: one entry of the resolved-password map cluster mode hands to the routing. */
export function secretKeyId(ref: SecretKeyRef): string {
  return `${ref.name}/${ref.key}`;
}

/** One BGP neighbour of this node (typically the top-of-rack router). */
export interface BgpPeerSpec {
  address: string;
  asn: number;
  password?: string;
  /** Where the password is, instead of `password` (cluster mode only). */
  passwordSecretRef?: SecretKeyRef;
  multihop?: number;
  bfd?: boolean;
}

/** BGP settings of the node. */
export interface BgpSpec {
  asn?: number;
  routerID?: string;
  nodeMesh?: boolean;
  peers?: BgpPeerSpec[];
  gracefulRestart?: { enabled?: boolean; restartTime?: number };
}

/** The `spec` of a NodeConfig, as written by the operator. */
export interface NodeConfigSpec {
  cidr6?: string;
  cidr4?: string;
  mtu?: number;
  anycastCIDRs?: string[];
  bgp?: BgpSpec;
}

/** A validated NodeConfig with its addresses parsed. */
export interface NodeConfig {
  /** `metadata.name` when the source was a full object. */
  name?: string;
  /** The validated spec (only known fields). */
  spec: NodeConfigSpec;
  cidr6?: Prefix;
  cidr4?: Prefix;
  mtu: number;
  anycast6: Prefix[];
  anycast4: Prefix[];
}

/** An invalid NodeConfig; the message names the source and the field path. */
export class ConfigError extends Error {
  constructor(readonly source: string, readonly field: string, readonly reason: string) {
    super(field ? `${source}: ${field}: ${reason}` : `${source}: ${reason}`);
    this.name = "ConfigError";
  }
}

/**
 * flock's default NodeConfig (standalone mode): `flock demo` runs its node 1 on this spec as it
 * is, plus BGP, and every further node on a copy with the next CIDRs (agent/demo_plan.ts).
 */
export const EMBEDDED_DEFAULT_CONFIG =
  `# flock's default NodeConfig (standalone mode; node 1 of flock demo)
apiVersion: ${NODECONFIG_API_VERSION}
kind: ${NODECONFIG_KIND}
metadata:
  name: demo
spec:
  cidr6: fd00:f10c:0:1::/64
  cidr4: 10.244.1.0/24
  mtu: 1500
  anycastCIDRs:
    - fd00:f10c:ffff::/112
    - 10.244.255.0/24
`;

type Obj = Record<string, unknown>;

/** Walks one object, remembering the path for messages. */
class Fields {
  readonly #seen = new Set<string>();
  constructor(
    readonly source: string,
    readonly path: string,
    readonly obj: Obj,
  ) {}

  error(field: string, reason: string): ConfigError {
    return new ConfigError(this.source, this.at(field), reason);
  }

  at(field: string): string {
    return this.path ? `${this.path}.${field}` : field;
  }

  get(field: string): unknown {
    this.#seen.add(field);
    return this.obj[field];
  }

  has(field: string): boolean {
    return Object.hasOwn(this.obj, field) && this.obj[field] !== null;
  }

  string(field: string): string | undefined {
    const v = this.get(field);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string") throw this.error(field, `must be a string, not ${describe(v)}`);
    return v;
  }

  boolean(field: string): boolean | undefined {
    const v = this.get(field);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") {
      throw this.error(field, `must be true or false, not ${describe(v)}`);
    }
    return v;
  }

  integer(field: string, min: number, max: number): number | undefined {
    const v = this.get(field);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v)) {
      throw this.error(field, `must be an integer, not ${describe(v)}`);
    }
    if (v < min || v > max) throw this.error(field, `${v} is out of range (${min}..${max})`);
    return v;
  }

  object(field: string): Fields | undefined {
    const v = this.get(field);
    if (v === undefined || v === null) return undefined;
    if (!isObject(v)) throw this.error(field, `must be an object, not ${describe(v)}`);
    return new Fields(this.source, this.at(field), v);
  }

  array(field: string): unknown[] | undefined {
    const v = this.get(field);
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v)) throw this.error(field, `must be a list, not ${describe(v)}`);
    return v;
  }

  /** Rejects every field not read so far. */
  noOthers(): void {
    for (const k of Object.keys(this.obj)) {
      if (!this.#seen.has(k)) throw this.error(k, "unknown field");
    }
  }
}

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "a list";
  if (v === null) return "null";
  if (typeof v === "object") return "an object";
  return `${typeof v} ${JSON.stringify(v)}`;
}

function prefixField(f: Fields, field: string, text: string, family?: Family): Prefix {
  let p: Prefix;
  try {
    p = parsePrefix(text, true);
  } catch (e) {
    throw f.error(field, (e as Error).message);
  }
  if (family !== undefined && p.ip.family !== family) {
    throw f.error(field, `${text} is not an ${familyName(family)} prefix`);
  }
  return p;
}

/** The longest TCP MD5 key the kernel takes (TCP_MD5SIG_MAXKEYLEN). */
export const MAX_BGP_PASSWORD_BYTES = 80;

/** What makes a text unusable as a BGP peer's TCP-MD5 password; see {@link bgpPasswordFault}. */
export type BgpPasswordFault = "empty" | "characters" | "length";

const PASSWORD_FAULT_MESSAGES: Record<BgpPasswordFault, string> = {
  empty: "must not be empty (leave it out instead)",
  characters: "must not contain quotes, backslashes or newlines",
  length: `is longer than the ${MAX_BGP_PASSWORD_BYTES} bytes TCP MD5 allows`,
};

/**
 * Why `password` cannot be a peer's password, wherever it comes from (the NodeConfig or a
 * Secret): bird.conf quotes it (the renderer refuses "\r" too) and BIRD would cut it at a NUL;
 * Linux keeps at most 80 bytes of TCP MD5 key, so BIRD would take a longer one and then shut the
 * session down for good ("Kernel MD5 auth failed").
 */
export function bgpPasswordFault(password: string): BgpPasswordFault | undefined {
  if (password === "") return "empty";
  if (/["\\\n\r\0]/.test(password)) return "characters";
  if (new TextEncoder().encode(password).length > MAX_BGP_PASSWORD_BYTES) return "length";
  return undefined;
}

function overlaps(a: Prefix, b: Prefix): boolean {
  return prefixCovers(a, b) || prefixCovers(b, a);
}

/**
 * Ranges no pod or anycast address may come from: the pods' gateways live in the link-local
 * ones (`fe80::1`, `169.254.1.1` on every host veth), and the others are not unicast host
 * addresses. A node CIDR overlapping one would hand a pod the gateway or an unroutable address.
 */
const RESERVED: readonly { prefix: Prefix; what: string }[] = [
  { prefix: parsePrefix("::/128"), what: "the unspecified address" },
  { prefix: parsePrefix("::1/128"), what: "the loopback address" },
  { prefix: parsePrefix("fe80::/10"), what: "link-local addresses (the pods' gateway fe80::1)" },
  { prefix: parsePrefix("ff00::/8"), what: "multicast" },
  { prefix: parsePrefix("0.0.0.0/8"), what: "'this network' (0.0.0.0/8)" },
  { prefix: parsePrefix("127.0.0.0/8"), what: "loopback" },
  {
    prefix: parsePrefix("169.254.0.0/16"),
    what: "link-local addresses (the pods' gateway 169.254.1.1)",
  },
  { prefix: parsePrefix("224.0.0.0/4"), what: "multicast" },
  { prefix: parsePrefix("240.0.0.0/4"), what: "reserved addresses (240.0.0.0/4)" },
];

/** Throws when the prefix `text` of `field` overlaps a {@link RESERVED} range. */
function checkNotReserved(f: Fields, field: string, text: string, p: Prefix): void {
  const hit = RESERVED.find((r) => r.prefix.ip.family === p.ip.family && overlaps(r.prefix, p));
  if (hit) throw f.error(field, `${text} overlaps ${formatPrefix(hit.prefix)}: ${hit.what}`);
}

/** How a NodeConfig is read. */
export interface ParseOptions {
  /**
   * Accept `bgp.peers[].passwordSecretRef` (cluster mode, where the agent can read the Secret);
   * default false: a config file must give `password` itself.
   */
  secretRefs?: boolean;
}

/**
 * Validates a NodeConfig object (`{apiVersion, kind, metadata, spec}`) or a bare spec.
 * `source` names where it came from in error messages (a file name, `NodeConfig node-1`).
 */
export function parseNodeConfig(
  obj: unknown,
  source: string,
  options: ParseOptions = {},
): NodeConfig {
  if (!isObject(obj)) {
    throw new ConfigError(source, "", `expected a NodeConfig object, not ${describe(obj)}`);
  }
  const wrapped = "apiVersion" in obj || "kind" in obj || "spec" in obj || "metadata" in obj;
  let name: string | undefined;
  let specFields: Fields;
  if (wrapped) {
    const top = new Fields(source, "", obj);
    const apiVersion = top.string("apiVersion");
    if (apiVersion !== NODECONFIG_API_VERSION) {
      throw top.error("apiVersion", `must be ${JSON.stringify(NODECONFIG_API_VERSION)}`);
    }
    if (top.string("kind") !== NODECONFIG_KIND) {
      throw top.error("kind", `must be ${JSON.stringify(NODECONFIG_KIND)}`);
    }
    // Metadata is the API server's business (labels, uid, ...); only the name matters here.
    const meta = top.object("metadata");
    if (meta) {
      const n = meta.string("name");
      if (n !== undefined && n === "") throw meta.error("name", "must not be empty");
      name = n;
    }
    top.get("status");
    const spec = top.object("spec");
    if (!spec) throw top.error("spec", "is required");
    top.noOthers();
    specFields = spec;
  } else {
    specFields = new Fields(source, "", obj);
  }
  const config = parseSpec(specFields, options);
  if (name !== undefined) config.name = name;
  return config;
}

function parseSpec(f: Fields, options: ParseOptions): NodeConfig {
  const spec: NodeConfigSpec = {};
  const cidr6Text = f.string("cidr6");
  const cidr4Text = f.string("cidr4");
  const cidr6 = cidr6Text === undefined ? undefined : prefixField(f, "cidr6", cidr6Text, AF_INET6);
  const cidr4 = cidr4Text === undefined ? undefined : prefixField(f, "cidr4", cidr4Text, AF_INET);
  if (cidr6) checkNotReserved(f, "cidr6", cidr6Text!, cidr6);
  if (cidr4) checkNotReserved(f, "cidr4", cidr4Text!, cidr4);
  if (!cidr6 && !cidr4) {
    throw new ConfigError(
      f.source,
      f.path,
      "at least one of cidr6 and cidr4 is required",
    );
  }
  if (cidr6Text !== undefined) spec.cidr6 = cidr6Text;
  if (cidr4Text !== undefined) spec.cidr4 = cidr4Text;

  const mtu = f.integer("mtu", 576, 65535);
  if (mtu !== undefined && cidr6 && mtu < 1280) {
    throw f.error("mtu", `${mtu} is below 1280, the minimum for IPv6`);
  }
  if (mtu !== undefined) spec.mtu = mtu;

  const anycast6: Prefix[] = [];
  const anycast4: Prefix[] = [];
  const anycastList = f.array("anycastCIDRs");
  if (anycastList) {
    spec.anycastCIDRs = [];
    const seen: Prefix[] = [];
    anycastList.forEach((item, i) => {
      const field = `anycastCIDRs[${i}]`;
      if (typeof item !== "string") throw f.error(field, `must be a string, not ${describe(item)}`);
      const p = prefixField(f, field, item);
      checkNotReserved(f, field, item, p);
      for (const [label, own] of [["cidr6", cidr6], ["cidr4", cidr4]] as const) {
        if (own && overlaps(own, p)) {
          throw f.error(field, `${item} overlaps ${label} ${formatPrefix(own)}`);
        }
      }
      const clash = seen.find((q) => overlaps(q, p));
      if (clash) throw f.error(field, `${item} overlaps ${formatPrefix(clash)} listed before it`);
      seen.push(p);
      (p.ip.family === AF_INET6 ? anycast6 : anycast4).push(p);
      spec.anycastCIDRs!.push(item);
    });
  }

  const bgp = f.object("bgp");
  if (bgp) spec.bgp = parseBgp(bgp, options);
  f.noOthers();
  return { spec, cidr6, cidr4, mtu: mtu ?? DEFAULT_MTU, anycast6, anycast4 };
}

const MAX_ASN = 4294967295;

function parseBgp(f: Fields, options: ParseOptions): BgpSpec {
  const out: BgpSpec = {};
  const asn = f.integer("asn", 1, MAX_ASN);
  if (asn !== undefined) out.asn = asn;
  const routerID = f.string("routerID");
  if (routerID !== undefined) {
    const id = tryParseIP(routerID);
    // BIRD reads 0.0.0.0 as "not set": it keeps its old id, or fails to start without IPv4.
    if (id?.family !== AF_INET || id.bytes.every((b) => b === 0)) {
      throw f.error(
        "routerID",
        `must be a dotted-quad (IPv4-style) id, not ${JSON.stringify(routerID)}`,
      );
    }
    out.routerID = routerID;
  }
  const nodeMesh = f.boolean("nodeMesh");
  if (nodeMesh !== undefined) out.nodeMesh = nodeMesh;

  const peers = f.array("peers");
  if (peers) {
    out.peers = [];
    const addresses = new Set<string>();
    peers.forEach((item, i) => {
      const field = `peers[${i}]`;
      if (!isObject(item)) throw f.error(field, `must be an object, not ${describe(item)}`);
      const p = new Fields(f.source, f.at(field), item);
      const address = p.string("address");
      if (address === undefined) throw p.error("address", "is required");
      const ip = tryParseIP(address);
      if (!ip) throw p.error("address", `not an IP address: ${JSON.stringify(address)}`);
      if (ip.bytes.every((b) => b === 0)) {
        throw p.error("address", `${address} is the unspecified address, not a neighbour`);
      }
      if (ip.family === AF_INET6 && ip.bytes[0] === 0xfe && (ip.bytes[1] & 0xc0) === 0x80) {
        // bird.conf would need the interface (`fe80::1%eth0`), which flock cannot name: BIRD
        // rejects the whole config, every session with it.
        throw p.error("address", `${address} is link-local: give the peer's global address`);
      }
      const canonical = `${ip.family}:${ip.bytes.join(".")}`;
      if (addresses.has(canonical)) throw p.error("address", `${address} is listed twice`);
      addresses.add(canonical);
      const peerAsn = p.integer("asn", 1, MAX_ASN);
      if (peerAsn === undefined) throw p.error("asn", "is required");
      const peer: BgpPeerSpec = { address, asn: peerAsn };
      // Checked here, not by p.string: its message quotes the value, and this one is a secret.
      const rawPassword = p.get("password");
      if (rawPassword !== undefined && rawPassword !== null && typeof rawPassword !== "string") {
        throw p.error("password", "must be a string (quote it in YAML; the value is not shown)");
      }
      const password = p.string("password");
      if (password !== undefined) {
        const fault = bgpPasswordFault(password);
        if (fault) throw p.error("password", PASSWORD_FAULT_MESSAGES[fault]);
        peer.password = password;
      }
      const ref = p.object("passwordSecretRef");
      if (ref) peer.passwordSecretRef = parseSecretRef(p, ref, password !== undefined, options);
      const multihop = p.integer("multihop", 1, 255);
      if (multihop !== undefined) peer.multihop = multihop;
      const bfd = p.boolean("bfd");
      if (bfd !== undefined) peer.bfd = bfd;
      if (bfd && multihop !== undefined) {
        // BIRD refuses a multihop session with BFD unless it names the local address, which
        // flock does not render: the whole bird.conf would be rejected, every session with it.
        throw p.error("bfd", "cannot be used with multihop (BIRD needs a local address for it)");
      }
      p.noOthers();
      out.peers!.push(peer);
    });
  }
  if (out.asn === undefined && ((out.peers?.length ?? 0) > 0 || out.nodeMesh)) {
    throw f.error("asn", "is required when peers or nodeMesh are set");
  }

  const gr = f.object("gracefulRestart");
  if (gr) {
    out.gracefulRestart = {};
    const enabled = gr.boolean("enabled");
    if (enabled !== undefined) out.gracefulRestart.enabled = enabled;
    // The BGP graceful restart capability carries the time in 12 bits.
    const restartTime = gr.integer("restartTime", 1, 4095);
    if (restartTime !== undefined) out.gracefulRestart.restartTime = restartTime;
    gr.noOthers();
  }
  f.noOthers();
  return out;
}

/** A Secret name: a DNS subdomain (RFC 1123), as Kubernetes requires. */
const SECRET_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** A key of a Secret's `data`, as Kubernetes allows it. */
const SECRET_KEY = /^[-._a-zA-Z0-9]{1,253}$/;

function parseSecretRef(
  peer: Fields,
  ref: Fields,
  hasPassword: boolean,
  options: ParseOptions,
): SecretKeyRef {
  const field = "passwordSecretRef";
  if (hasPassword) {
    throw peer.error(field, "cannot be set together with password: give one of them");
  }
  if (!options.secretRefs) {
    throw peer.error(
      field,
      "is read only in cluster mode (a NodeConfig from the API server); a config file gives " +
        "password itself",
    );
  }
  const name = ref.string("name");
  if (name === undefined || name === "") throw ref.error("name", "is required");
  if (!SECRET_NAME.test(name)) {
    throw ref.error("name", `${JSON.stringify(name)} is not a valid Secret name`);
  }
  const key = ref.string("key");
  if (key === undefined || key === "") throw ref.error("key", "is required");
  if (!SECRET_KEY.test(key)) {
    throw ref.error("key", `${JSON.stringify(key)} is not a valid Secret key`);
  }
  ref.noOthers();
  return { name, key };
}

/**
 * Parses NodeConfig text: JSON when it starts with `{`, else the YAML subset of `yaml.ts`.
 * `source` names it in errors.
 */
export function parseNodeConfigText(text: string, source: string): NodeConfig {
  let obj: unknown;
  if (text.trimStart().startsWith("{")) {
    try {
      obj = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(source, "", `invalid JSON: ${(e as Error).message}`);
    }
  } else {
    try {
      obj = parseYaml(text);
    } catch (e) {
      if (e instanceof YamlError) throw new ConfigError(source, "", e.message);
      throw e;
    }
  }
  return parseNodeConfig(obj, source);
}

/** Reads and validates a NodeConfig file (JSON or YAML). */
export async function loadNodeConfigFile(path: string): Promise<NodeConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(path, "", `cannot read: ${(e as Error).message}`);
  }
  return parseNodeConfigText(text, path);
}
