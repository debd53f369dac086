/**
 * Renders a BIRD 2 configuration for one flock node from a plain description of it. This module
 * knows nothing of Kubernetes or netlink: addresses and prefixes come in as text and are
 * checked only for shape, so nothing but an address can reach the file.
 *
 * What the rendered config does (each choice is explained next to the line it makes):
 * - `protocol kernel` per family `learn`s only routes tagged with flock's route protocol
 *   (`krt_source`) that are this node's summary CIDRs (exact match) or host routes inside its
 *   anycast CIDRs; per-pod /128 and /32 routes are never imported.
 * - the same kernel protocols install what BGP peers announce, with BIRD's own route protocol
 *   (`proto bird`), so flock never mistakes them for its own.
 * - BGP sessions to explicit peers (a ToR) and, with the node mesh, to every other node.
 *   Exports: only the summaries and live anycast host routes learned from the kernel.
 *   Imports from explicit peers: anything but a default route, martians, and whatever falls into
 *   this node's own summaries or anycast CIDRs (except anycast host routes, which are the other
 *   replicas); imports from a mesh peer: exactly that node's summaries and anycast host routes.
 *
 * The output is stable: the same input (peers in any order) renders byte-identical text, so
 * the agent can skip reloads when nothing changed.
 *
 * @module
 */

/** One BGP neighbour: an explicit peer (ToR) or another node of the mesh. */
export interface BirdPeer {
  /** The neighbour's address (IPv4 or IPv6, no zone). */
  address: string;
  asn: number;
  /** TCP MD5 password (RFC 2385). */
  password?: string;
  /** Run BFD on the session (the peer must run BFD too). */
  bfd?: boolean;
  /** The peer is this many hops away (not on a shared segment). */
  multihop?: number;
  /** A comment in the config (a node name). */
  description?: string;
  /**
   * A single-hop IPv4 peer reached over an interface without a global IPv6 address (an
   * IPv4-only or unnumbered uplink; the node's IPv6 is on its loopback). BIRD would announce `::`
   * as the next hop of IPv6 routes there, so the session gets the node's global IPv6
   * (`nextHop6`) like a multihop one.
   */
  linkWithoutIpv6?: boolean;
  /**
   * The global IPv6 address of the link a single-hop IPv4 session leaves by (the agent reads
   * it). When set, IPv6 routes on the session carry it as next hop, set in the session's export
   * filter: BIRD fixes its own pick of that address when the session comes up (`::` when the
   * link had none then, e.g. SLAAC arriving after boot), and a filter change is applied in place
   * (a channel reload), so the peer gets the link's current address without a session reset.
   */
  linkNextHop6?: string;
}

/** A mesh peer: another flock node, with the prefixes it may announce. */
export interface BirdMeshPeer extends BirdPeer {
  /** The other node's summary CIDRs. */
  cidrs: string[];
  /** The other node's anycast CIDRs (host routes inside them are accepted). */
  anycastCIDRs?: string[];
}

/** Everything {@link renderBirdConfig} needs. */
export interface BirdConfigInput {
  /** Dotted-quad router id; mandatory (BIRD cannot pick one on an IPv6-only node). */
  routerId: string;
  /** This node's summary CIDRs (IPv6 and/or IPv4), announced while the blackhole exists. */
  cidrs: string[];
  /** Ranges this node's anycast host routes come from. */
  anycastCIDRs: string[];
  /** The kernel route protocol number flock tags its routes with. */
  routeProtocol: number;
  /** Local AS; without it no BGP session is rendered (kernel learning only). */
  asn?: number;
  peers?: BirdPeer[];
  meshPeers?: BirdMeshPeer[];
  gracefulRestart?: { enabled: boolean; restartTime: number };
  /**
   * The node's global IPv6 address: the next hop of IPv6 routes on IPv4 **multihop** sessions
   * and on single-hop ones marked {@link BirdPeer.linkWithoutIpv6}. Without it BIRD takes a
   * global IPv6 address of the interface the session leaves by, and announces `::` (the peer
   * drops the routes) when that interface has none, e.g. on a node whose addresses are on its
   * loopback. `null`: the node has no global IPv6 address, so those sessions carry no IPv6
   * routes at all. Other single-hop sessions ignore it: there BIRD's interface address (plus
   * its link-local) is what the peer on the segment can resolve.
   */
  nextHop6?: string | null;
  /** Accept a default route from explicit peers (off: a node must not attract transit). */
  acceptDefault?: boolean;
}

/** The input is not something a config can be rendered from. */
export class BirdConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BirdConfigError";
  }
}

type Fam = 4 | 6;

const V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const V6 = /^[0-9a-fA-F:.]{2,45}$/;

function familyOf(address: string): Fam | undefined {
  if (V4.test(address)) return 4;
  if (address.includes(":") && V6.test(address)) return 6;
  return undefined;
}

function checkAddress(text: string, what: string): Fam {
  const fam = typeof text === "string" ? familyOf(text) : undefined;
  if (!fam) throw new BirdConfigError(`${what}: not an IP address: ${JSON.stringify(text)}`);
  return fam;
}

function checkPrefix(text: string, what: string): Fam {
  const m = typeof text === "string" ? /^([^/]+)\/(\d{1,3})$/.exec(text) : null;
  if (!m) throw new BirdConfigError(`${what}: not a prefix: ${JSON.stringify(text)}`);
  const fam = checkAddress(m[1], what);
  if (Number(m[2]) > (fam === 4 ? 32 : 128)) {
    throw new BirdConfigError(`${what}: prefix length too long: ${text}`);
  }
  return fam;
}

function checkAsn(asn: number, what: string): void {
  if (!Number.isInteger(asn) || asn < 1 || asn > 4294967295) {
    throw new BirdConfigError(`${what}: AS number out of range: ${asn}`);
  }
}

function byFamily(prefixes: string[], fam: Fam, what: string): string[] {
  return prefixes.filter((p) => checkPrefix(p, what) === fam).map((p) => p.toLowerCase()).sort();
}

function hostLen(fam: Fam): number {
  return fam === 4 ? 32 : 128;
}

/** `[ a, b ]` of exact prefixes. */
function exactSet(prefixes: string[]): string {
  return `[ ${prefixes.join(", ")} ]`;
}

/** `[ a{128,128}, … ]`: host routes inside the prefixes. */
function hostSet(prefixes: string[], fam: Fam): string {
  const len = hostLen(fam);
  return `[ ${prefixes.map((p) => `${p}{${len},${len}}`).join(", ")} ]`;
}

/** `[ a+, … ]`: the prefixes and everything inside them. */
function coverSet(prefixes: string[]): string {
  return `[ ${prefixes.map((p) => `${p}+`).join(", ")} ]`;
}

/** Prefixes no peer may announce into a node's kernel. */
const MARTIANS: Record<Fam, string> = {
  6: "[ ::/8+, fe80::/10+, ff00::/8+, 2001:db8::/32+ ]",
  4: "[ 0.0.0.0/8+, 127.0.0.0/8+, 169.254.0.0/16+, 224.0.0.0/4+, 240.0.0.0/4+ ]",
};

/** A BIRD symbol from free text: `peer_10_0_0_1`. */
function symbol(prefix: string, address: string): string {
  return `${prefix}_${address.toLowerCase().replace(/[^0-9a-z]/g, "_")}`;
}

function quote(text: string, what: string): string {
  if (/["\\\n\r]/.test(text)) {
    throw new BirdConfigError(`${what}: must not contain quotes, backslashes or newlines`);
  }
  return `"${text}"`;
}

function compareAddress(a: BirdPeer, b: BirdPeer): number {
  return a.address.toLowerCase() < b.address.toLowerCase()
    ? -1
    : a.address.toLowerCase() > b.address.toLowerCase()
    ? 1
    : 0;
}

interface Facts {
  fams: Fam[];
  cidrs: Record<Fam, string[]>;
  anycast: Record<Fam, string[]>;
}

function kernelSection(fam: Fam, f: Facts, input: BirdConfigInput, gr: boolean): string[] {
  const c = f.cidrs[fam];
  const a = f.anycast[fam];
  const learn: string[] = [];
  if (c.length) learn.push(`    if net ~ NODE_CIDRS${fam} then accept;  # summary blackhole`);
  if (a.length) learn.push(`    if net ~ ANYCAST_HOSTS${fam} then accept;  # live anycast address`);
  return [
    `# Kernel <-> BIRD, IPv${fam}. \`learn\` picks up flock's routes from netlink events within`,
    `# milliseconds (scan time is only a resync); routes from peers go into the kernel as proto bird.`,
    `protocol kernel kernel${fam} {`,
    `  learn;`,
    `  scan time 10;`,
    `  merge paths on;  # ECMP when several peers announce the same anycast address`,
    ...(gr
      ? [
        `  graceful restart on;  # with \`bird -R\`: keep kernel routes until BGP re-converged`,
        `  persist;  # a stopped BIRD leaves its routes: pods keep forwarding`,
      ]
      : []),
    `  ipv${fam} {`,
    `    preference 200;  # a local anycast replica beats the same address learned over BGP`,
    `    import filter {`,
    `      if krt_source != ${input.routeProtocol} then reject;  # only routes flock made`,
    ...learn.map((l) => "  " + l),
    `      reject;  # per-pod host routes stay local`,
    `    };`,
    `    export filter {`,
    `      if source = RTS_BGP then accept;  # what peers announce (import filters checked it)`,
    `      reject;`,
    `    };`,
    `  };`,
    `}`,
    ``,
  ];
}

function defines(fam: Fam, f: Facts): string[] {
  const out: string[] = [];
  const c = f.cidrs[fam];
  const a = f.anycast[fam];
  if (c.length) {
    out.push(`define NODE_CIDRS${fam} = ${exactSet(c)};`);
    out.push(`define NODE_RANGES${fam} = ${coverSet(c)};`);
  }
  if (a.length) {
    out.push(`define ANYCAST_HOSTS${fam} = ${hostSet(a, fam)};`);
    out.push(`define ANYCAST_RANGES${fam} = ${coverSet(a)};`);
  }
  return out;
}

function exportFilter(fam: Fam, f: Facts): string[] {
  return [
    `# Announce only what this node owns: its summaries and its live anycast host routes, as`,
    `# learned from the kernel (RTS_INHERIT) - never routes learned from other peers.`,
    `filter flock_export${fam} {`,
    ...ownedRoutes(fam, f),
    `}`,
    ``,
  ];
}

/** The body of {@link exportFilter}: accepts what this node owns, rejects the rest. */
function ownedRoutes(fam: Fam, f: Facts): string[] {
  const lines = [`  if source != RTS_INHERIT then reject;`];
  if (f.cidrs[fam].length) lines.push(`  if net ~ NODE_CIDRS${fam} then accept;`);
  if (f.anycast[fam].length) lines.push(`  if net ~ ANYCAST_HOSTS${fam} then accept;`);
  lines.push(`  reject;`);
  return lines;
}

/**
 * The IPv6 export filter of an IPv4 session whose IPv6 next hop flock sets
 * ({@link filterNextHop6}): what {@link exportFilter} announces, with `bgp_next_hop` set to
 * `nextHop6`, or nothing when the node has none (`null`). The next hop lives in a filter, not
 * in the channel (`next hop address`), and the channel is rendered either way, because BIRD
 * (2.0.12, tested) restarts the whole session, IPv4 included, when a channel is added or
 * removed ("Cannot add channel", Cease "other configuration change"), and takes a changed
 * `next hop address` only at the next session start; a changed filter it applies in place
 * (the channel is reloaded: the routes are re-announced with the new next hop, or withdrawn).
 */
function nodeNextHopExportFilter(
  session: string,
  f: Facts,
  nextHop6: string | null,
  onLink: boolean,
): string[] {
  const head = [`filter ${session}_export6 {`];
  if (nextHop6 === null) {
    return [
      `# No IPv6 routes to ${session}: the node has no global IPv6 address to give as their`,
      `# next hop (the peer would get \`::\`). The channel stays: adding it restarts the session.`,
      ...head,
      `  reject;`,
      `}`,
      ``,
    ];
  }
  return [
    ...(onLink
      ? [
        `# IPv6 routes to ${session} carry its link's global IPv6 as next hop: BIRD's own pick`,
        `# is fixed when the session comes up (\`::\` if the link had none yet); set here so that`,
        `# an address change reloads this filter, not the session.`,
      ]
      : [
        `# IPv6 routes to ${session} carry the node's global IPv6 as next hop (BIRD has none of`,
        `# its own there); set here so that an address change reloads this filter, not the session.`,
      ]),
    ...head,
    `  bgp_next_hop = ${nextHop6.toLowerCase()};`,
    ...ownedRoutes(6, f),
    `}`,
    ``,
  ];
}

function peerImportFilter(fam: Fam, f: Facts, acceptDefault: boolean): string[] {
  const lines = [
    `# From explicit peers (a ToR): anything routable, except a default route (a node must not`,
    `# attract transit), martians, and what is this node's own to announce.`,
    `filter flock_peer_import${fam} {`,
    acceptDefault
      ? `  if net.len = 0 then accept;  # default route allowed by configuration`
      : `  if net.len = 0 then reject;`,
    `  if net ~ ${MARTIANS[fam]} then reject;`,
  ];
  if (f.cidrs[fam].length) lines.push(`  if net ~ NODE_RANGES${fam} then reject;`);
  if (f.anycast[fam].length) {
    lines.push(`  if net ~ ANYCAST_HOSTS${fam} then accept;  # the other replicas of an anycast`);
    lines.push(`  if net ~ ANYCAST_RANGES${fam} then reject;`);
  }
  lines.push(`  accept;`, `}`, ``);
  return lines;
}

function meshImportFilter(name: string, fam: Fam, peer: BirdMeshPeer, f: Facts): string[] {
  const theirs = byFamily(peer.cidrs, fam, `mesh peer ${peer.address} cidrs`);
  const anycast = [
    ...new Set([...f.anycast[fam], ...byFamily(peer.anycastCIDRs ?? [], fam, "anycastCIDRs")]),
  ].sort();
  const lines = [`filter ${name}_import${fam} {`];
  if (theirs.length) lines.push(`  if net ~ ${exactSet(theirs)} then accept;`);
  if (anycast.length) lines.push(`  if net ~ ${hostSet(anycast, fam)} then accept;`);
  lines.push(`  reject;  # anything else is not this node's to announce`, `}`, ``);
  return lines;
}

/**
 * Whether IPv6 routes on the session to `peer` need `nextHop6` (BIRD has no global IPv6 of its
 * own to give there): an IPv4 session that is multihop or leaves by a link without one.
 */
function needsNodeNextHop6(peer: BirdPeer): boolean {
  return familyOf(peer.address) === 4 && (peer.multihop !== undefined || !!peer.linkWithoutIpv6);
}

function channel(
  fam: Fam,
  sessionFam: Fam,
  exportFilter: string,
  importFilter: string,
): string[] {
  const lines = [
    `  ipv${fam} {`,
    `    import filter ${importFilter};`,
    `    export filter ${exportFilter};`,
  ];
  // IPv6 over an IPv4 session: no `next hop self`, which would override the `bgp_next_hop` a
  // filter sets (nodeNextHopExportFilter). Without it BIRD still gives its own address for
  // the routes announced (they come from the kernel, with no next hop of their own), and the
  // channel's options stay the same whichever filter the session has.
  if (!(fam === 6 && sessionFam === 4)) lines.push(`    next hop self;`);
  // An IPv4 route over an IPv6 session gets the session's own IPv6 address as next hop
  // (RFC 8950): works on a node without IPv4 underlay addresses too.
  if (fam === 4 && sessionFam === 6) lines.push(`    extended next hop on;`);
  lines.push(`    add paths rx;  # several paths for an anycast address, if the peer sends them`);
  lines.push(`  };`);
  return lines;
}

/**
 * The IPv6 next hop {@link nodeNextHopExportFilter} sets on the session to `peer` (`null`: it
 * rejects every IPv6 route), or undefined when BIRD picks it (no filter of the session's own):
 * the link's global IPv6 of a single-hop IPv4 session ({@link BirdPeer.linkNextHop6}); else the
 * node's global IPv6 where BIRD has none of its own, when the agent knows whether there is one.
 */
function filterNextHop6(
  peer: BirdPeer,
  input: BirdConfigInput,
): { address: string | null; onLink: boolean } | undefined {
  if (familyOf(peer.address) !== 4) return undefined;
  if (peer.multihop === undefined && peer.linkNextHop6 !== undefined) {
    if (checkAddress(peer.linkNextHop6, `peer ${peer.address} linkNextHop6`) !== 6) {
      throw new BirdConfigError(`peer ${peer.address}: linkNextHop6 must be an IPv6 address`);
    }
    return { address: peer.linkNextHop6, onLink: true };
  }
  if (!needsNodeNextHop6(peer) || input.nextHop6 === undefined) return undefined;
  return { address: input.nextHop6, onLink: false };
}

/**
 * Addresses of the explicit peers and mesh peers whose sessions carry no IPv6 routes because
 * the node has no global IPv6 address (`nextHop6: null`) and BIRD has none of its own for them
 * (multihop, or a link without one); `flock status` and the log name them.
 */
export function peersWithoutIpv6(input: BirdConfigInput): string[] {
  if (input.nextHop6 !== null) return [];
  const ipv6Routed = [...input.cidrs, ...input.anycastCIDRs].some((p) => p.includes(":"));
  if (!ipv6Routed) return [];
  return [...(input.peers ?? []), ...(input.meshPeers ?? [])]
    .filter((p) => needsNodeNextHop6(p))
    .map((p) => p.address)
    .sort();
}

function session(
  name: string,
  peer: BirdPeer,
  f: Facts,
  input: BirdConfigInput,
  importFilter: (fam: Fam) => string,
  gr: boolean,
): string[] {
  const sessionFam = checkAddress(peer.address, `peer ${name}`);
  checkAsn(peer.asn, `peer ${peer.address}`);
  const lines = [`protocol bgp ${name} from flock_bgp {`];
  if (peer.description) lines.push(`  description ${quote(peer.description, "description")};`);
  lines.push(`  neighbor ${peer.address.toLowerCase()} as ${peer.asn};`);
  if (peer.multihop !== undefined) {
    if (!Number.isInteger(peer.multihop) || peer.multihop < 1 || peer.multihop > 255) {
      throw new BirdConfigError(`peer ${peer.address}: multihop must be 1..255`);
    }
    lines.push(`  multihop ${peer.multihop};`);
  } else if (peer.asn === input.asn) {
    // A mesh peer in another subnet never comes up (BIRD waits for it as Idle); multihop alone
    // would not do either, learned next hops would not resolve: docs/cluster-mode.md "Limit".
    lines.push(`  direct;  # an iBGP neighbour on the shared segment`);
  }
  if (peer.password !== undefined) {
    lines.push(`  password ${quote(peer.password, `peer ${peer.address} password`)};`);
  }
  if (peer.bfd) {
    lines.push(gr ? `  bfd graceful;  # BFD down does not defeat graceful restart` : `  bfd on;`);
  }
  const nextHop6 = f.fams.includes(6) ? filterNextHop6(peer, input) : undefined;
  const ownExportFilter6 = nextHop6 !== undefined;
  for (const fam of f.fams) {
    const exportFilter = fam === 6 && ownExportFilter6 ? `${name}_export6` : `flock_export${fam}`;
    lines.push(...channel(fam, sessionFam, exportFilter, importFilter(fam)));
  }
  lines.push(`}`, ``);
  return ownExportFilter6
    ? [...nodeNextHopExportFilter(name, f, nextHop6.address, nextHop6.onLink), ...lines]
    : lines;
}

/** Renders bird.conf; throws {@link BirdConfigError} on input it cannot render safely. */
export function renderBirdConfig(input: BirdConfigInput): string {
  if (typeof input.routerId !== "string" || !V4.test(input.routerId)) {
    throw new BirdConfigError(
      `router id must be a dotted quad, not ${JSON.stringify(input.routerId)}`,
    );
  }
  if (
    !Number.isInteger(input.routeProtocol) || input.routeProtocol < 1 || input.routeProtocol > 255
  ) {
    throw new BirdConfigError(`route protocol must be 1..255`);
  }
  if (input.asn !== undefined) checkAsn(input.asn, "local AS");
  if (
    input.nextHop6 !== undefined && input.nextHop6 !== null &&
    checkAddress(input.nextHop6, "nextHop6") !== 6
  ) {
    throw new BirdConfigError(`nextHop6 must be an IPv6 address`);
  }
  const facts: Facts = {
    fams: [],
    cidrs: { 6: byFamily(input.cidrs, 6, "cidrs"), 4: byFamily(input.cidrs, 4, "cidrs") },
    anycast: {
      6: byFamily(input.anycastCIDRs, 6, "anycastCIDRs"),
      4: byFamily(input.anycastCIDRs, 4, "anycastCIDRs"),
    },
  };
  // A family is routed when the node owns something in it; an IPv6-only node has no IPv4 at all.
  for (const fam of [6, 4] as const) {
    if (facts.cidrs[fam].length || facts.anycast[fam].length) facts.fams.push(fam);
  }
  const gr = input.gracefulRestart?.enabled ?? true;
  const restartTime = input.gracefulRestart?.restartTime ?? 120;
  if (!Number.isInteger(restartTime) || restartTime < 1 || restartTime > 4095) {
    throw new BirdConfigError(`graceful restart time must be 1..4095 s`);
  }
  const peers = [...(input.peers ?? [])].sort(compareAddress);
  const mesh = [...(input.meshPeers ?? [])].sort(compareAddress);
  if ((peers.length || mesh.length) && input.asn === undefined) {
    throw new BirdConfigError(`BGP peers need the local AS number`);
  }

  const out: string[] = [
    `# bird.conf rendered by the flock agent - do not edit: it is rewritten on every change.`,
    `log stderr { info, remote, warning, error, auth, fatal, bug };`,
    `router id ${input.routerId};`,
    `timeformat protocol iso long;  # "show protocols" dates that flock can parse`,
    ``,
    `# Interface list: the kernel and BGP protocols need it to resolve next hops.`,
    `protocol device {`,
    `  scan time 10;`,
    `}`,
    ``,
  ];
  for (const fam of facts.fams) out.push(...defines(fam, facts));
  if (facts.fams.length) out.push(``);
  for (const fam of facts.fams) out.push(...kernelSection(fam, facts, input, gr));

  if (input.asn === undefined || (!peers.length && !mesh.length)) {
    return out.join("\n");
  }
  for (const fam of facts.fams) out.push(...exportFilter(fam, facts));
  if (peers.length) {
    for (const fam of facts.fams) out.push(...peerImportFilter(fam, facts, !!input.acceptDefault));
  }
  const names = new Set<string>();
  const unique = (base: string) => {
    let name = base;
    for (let i = 2; names.has(name); i++) name = `${base}_${i}`;
    names.add(name);
    return name;
  };
  const meshNames = mesh.map((p) => unique(symbol("mesh", p.address)));
  mesh.forEach((p, i) => {
    for (const fam of facts.fams) out.push(...meshImportFilter(meshNames[i], fam, p, facts));
  });

  if (peers.some((p) => p.multihop !== undefined) || mesh.some((p) => p.multihop !== undefined)) {
    out.push(
      `# Multihop sessions resolve next hops through the table: connected routes are needed`,
      `# (the kernel protocol cannot learn proto kernel routes). Never exported (see filters).`,
      `protocol direct {`,
      ...facts.fams.map((fam) => `  ipv${fam};`),
      `}`,
      ``,
    );
  }
  if (peers.some((p) => p.bfd) || mesh.some((p) => p.bfd)) {
    out.push(
      `# BFD for sub-second failure detection on the sessions that ask for it.`,
      `protocol bfd {`,
      `  interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };`,
      `  multihop { min rx interval 200 ms; min tx interval 200 ms; multiplier 5; };`,
      `}`,
      ``,
    );
  }
  out.push(
    `# Session parameters are kept constant across renders: changing one restarts the session.`,
    `template bgp flock_bgp {`,
    `  local as ${input.asn};`,
    `  hold time 30;`,
    `  keepalive time 10;`,
    `  connect delay time 1;`,
    `  connect retry time 5;`,
    `  error wait time 1, 30;`,
    ...(gr
      ? [`  graceful restart on;`, `  graceful restart time ${restartTime};`]
      : [`  graceful restart off;`]),
    `}`,
    ``,
  );
  for (const p of peers) {
    const name = unique(symbol("peer", p.address));
    out.push(...session(name, p, facts, input, (fam) => `flock_peer_import${fam}`, gr));
  }
  mesh.forEach((p, i) => {
    const name = meshNames[i];
    out.push(...session(name, p, facts, input, (fam) => `${name}_import${fam}`, gr));
  });
  return out.join("\n");
}
