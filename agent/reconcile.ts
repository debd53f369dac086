/**
 * Start-up reconciliation: make the node's kernel state and the store agree
 * before the agent serves a single request (BRIEF §3).
 *
 * - committed records go back into IPAM, and their datapath is repaired when
 *   their namespace still exists;
 * - pending records (an ADD that died half-way) are torn down and released;
 * - releasing records (a DEL that answered but died before the veth was gone) are torn down
 *   and released, their addresses cooling down like any other release;
 * - flock-named links and flock-tagged routes that no record explains are removed;
 * - anycast routes are rebuilt from the committed records (after the orphan links went, since
 *   deleting a link can take a whole IPv4 multipath route with it).
 */

import {
  AF_INET,
  AF_INET6,
  deleteLink,
  deleteRoute,
  formatIP,
  formatPrefix,
  getLinkByName,
  type IP,
  ipEqual,
  listLinks,
  listRoutes,
  parseIP,
} from "../netlink/mod.ts";
import { type Datapath, FLOCK_ROUTE_PROTOCOL, GATEWAY4, isFlockIfaceName } from "./datapath.ts";
import type { Store } from "./store.ts";
import { type AddressPool, unusableReason } from "./ipam.ts";
import type { AnycastRoutes } from "./anycast.ts";

/** What reconciliation did, for logs, metrics and `flock status`. */
export interface ReconcileReport {
  restored: number;
  repaired: number;
  released: number;
  orphanLinks: number;
  orphanRoutes: number;
  /** Anycast routes installed, replaced or removed to match the committed holders. */
  anycastChanged: number;
  problems: string[];
}

/** Inputs of {@link reconcile}. */
export interface ReconcileDeps {
  store: Store;
  datapath: Datapath;
  pool6?: AddressPool;
  pool4?: AddressPool;
  /** Routes flock owns that no pod record explains (summary blackholes, anycast). */
  keepRoute?: (dst: { ip: IP; len: number }) => boolean;
  /** Rebuilds the anycast routes; without it, every anycast route counts as an orphan. */
  anycast?: AnycastRoutes;
  /** The node's pod MTU (NodeConfig `mtu`), which a repaired veth gets as ADD gives it. */
  mtu?: number;
  cooldownMs: number;
  now?: () => number;
}

function poolFor(ip: IP, d: ReconcileDeps): AddressPool | undefined {
  return ip.family === AF_INET6 ? d.pool6 : d.pool4;
}

/** Brings the store, IPAM and the kernel into agreement; see the module doc. */
export function reconcile(d: ReconcileDeps): ReconcileReport {
  const report: ReconcileReport = {
    restored: 0,
    repaired: 0,
    released: 0,
    orphanLinks: 0,
    orphanRoutes: 0,
    anycastChanged: 0,
    problems: [],
  };
  const node = d.datapath.node;
  d.datapath.ensureNode();

  const now = (d.now ?? Date.now)();
  for (const rec of [...d.store.listByState("pending"), ...d.store.listByState("releasing")]) {
    d.datapath.teardown(rec.containerId, {
      ipv6: rec.ipv6 ? parseIP(rec.ipv6) : undefined,
      ipv4: rec.ipv4 ? parseIP(rec.ipv4) : undefined,
      hostIface: rec.hostIface,
    });
    // A pending pod never got its addresses; a releasing one did, so they cool down.
    const used = rec.state === "releasing" ? [rec.ipv6, rec.ipv4] : [];
    d.store.finishRelease(rec.containerId, rec.ifname, used.filter((ip) => ip !== undefined), now);
    report.released++;
  }

  const committed = d.store.listByState("committed");
  /** Addresses of committed pods, canonical text (a set: one lookup per route, not per pod). */
  const held = new Set<string>();
  for (const rec of committed) {
    for (const text of [rec.ipv6, rec.ipv4]) {
      if (!text) continue;
      const ip = parseIP(text);
      held.add(formatIP(ip));
      const pool = poolFor(ip, d);
      try {
        pool?.reserve(ip);
      } catch (e) {
        report.problems.push(`${rec.containerId}: cannot restore ${text}: ${(e as Error).message}`);
      }
    }
    report.restored++;
    if (!getLinkByName(node, rec.hostIface) && netnsExists(rec.netns)) {
      try {
        d.datapath.setup({
          containerId: rec.containerId,
          hostIface: rec.hostIface,
          netns: rec.netns,
          ifname: rec.ifname,
          ipv6: rec.ipv6 ? parseIP(rec.ipv6) : undefined,
          ipv4: rec.ipv4 ? parseIP(rec.ipv4) : undefined,
          anycast: rec.anycast.map(parseIP),
          mtu: d.mtu,
        });
        report.repaired++;
      } catch (e) {
        report.problems.push(`${rec.containerId}: repair failed: ${(e as Error).message}`);
      }
    }
  }

  // Addresses released shortly before the restart stay cooling. After a CIDR change one may be
  // outside the new CIDR or its network or broadcast address: the pool never hands those out.
  for (const r of d.store.recentReleases(now - d.cooldownMs)) {
    const ip = parseIP(r.ip);
    const pool = poolFor(ip, d);
    if (!pool || pool.isAllocated(ip) || unusableReason(pool.cidr, ip)) continue;
    pool.reserve(ip);
    pool.release(ip);
  }
  d.store.pruneReleases(now - d.cooldownMs);

  const known = new Set(committed.map((r) => r.hostIface));
  for (const link of listLinks(node)) {
    if (isFlockIfaceName(link.name) && !known.has(link.name)) {
      deleteLink(node, link.index);
      report.orphanLinks++;
    }
  }
  const anycast = d.anycast?.syncAll();
  if (anycast) {
    report.anycastChanged = anycast.changed.length;
    report.problems.push(...anycast.problems);
  }
  for (const family of [AF_INET6, AF_INET] as const) {
    for (const r of listRoutes(node, { family, protocol: FLOCK_ROUTE_PROTOCOL })) {
      if (r.dst.len === 32 && ipEqual(r.dst.ip, GATEWAY4)) continue;
      if (d.keepRoute?.(r.dst)) continue;
      const full = r.dst.len === (family === AF_INET ? 32 : 128);
      const dstText = formatIP(r.dst.ip);
      if (full && (held.has(dstText) || anycast?.held.has(dstText))) continue;
      deleteRoute(node, r);
      report.orphanRoutes++;
      report.problems.push(`removed orphan route ${formatPrefix(r.dst)}`);
    }
  }
  return report;
}

function netnsExists(path: string): boolean {
  if (!path) return false;
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
