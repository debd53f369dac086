/**
 * The lines of a reconcile report, sorted for the operator. A reconcile says two kinds of thing:
 *
 * - **problems**: something is wrong, or was found broken, and may need an operator: a committed
 *   pod whose datapath had to be repaired (or could not be), a link or host route of a pod flock
 *   has no record of, a record it cannot tear down, summary routes not installed. Counted by
 *   `flock_reconcile_problems`: an alert on it means "look at this node".
 * - **notes**: expected housekeeping, listed so the log and `flock status` say what happened: the
 *   summary route of a CIDR no longer configured removed, the leftovers of ADDs and DELs a crash
 *   cut short finished, records of an old store renamed, the withheld addresses as they were then.
 *
 * The texts of both kinds are made here where the choice is not obvious from the call site, so
 * the choice is tested without a kernel.
 *
 * @module
 */

import {
  formatIP,
  formatPrefix,
  hostPrefix,
  type Link,
  parseIP,
  type Prefix,
} from "../netlink/mod.ts";

/** The two lists a reconcile report keeps. */
export interface ReconcileFindings {
  /** Something wrong or found broken that may need an operator. */
  problems: string[];
  /** Expected housekeeping, for the record. */
  notes: string[];
}

/** One line of a report and which list it belongs in. */
export interface Finding {
  kind: keyof ReconcileFindings;
  text: string;
}

/** Puts a finding into its list. */
export function addFinding(report: ReconcileFindings, finding: Finding): void {
  report[finding.kind].push(finding.text);
}

/**
 * A flock-tagged route the reconcile removed because nothing in force explains it. A host route
 * (/128, /32) was a pod's (or an anycast holder's) that no record names: the store and the kernel
 * disagreed, a problem. A shorter prefix is a summary route of a CIDR the node config no longer
 * has (a reconfigure, or a config changed while the agent was down): removing it is the intent.
 */
export function removedRouteFinding(dst: Prefix): Finding {
  const text = formatPrefix(dst);
  if (dst.len === hostPrefix(dst.ip).len) {
    return { kind: "problems", text: `removed orphan route ${text}: no record holds it` };
  }
  return {
    kind: "notes",
    text: `removed orphan route ${text}: a summary route of a CIDR no longer configured`,
  };
}

/** A flock-named host veth the reconcile deleted: no record names it, no pod uses it. */
export function removedLinkProblem(name: string): string {
  return `removed orphan link ${name}: no record names it`;
}

/**
 * The one note for the leftovers a crash left and the reconcile finished: `pending` records (an
 * ADD cut short) torn down, `releasing` ones (a DEL that answered before its veth was gone)
 * completed. Undefined when there were none.
 */
export function leftoversNote(
  finished: { pending: number; releasing: number },
): string | undefined {
  const parts = [
    finished.pending && `${finished.pending} pending (an ADD cut short) torn down`,
    finished.releasing &&
    `${finished.releasing} releasing (a DEL that answered before its veth was gone) completed`,
  ].filter((p): p is string => typeof p === "string");
  return parts.length ? `leftover attachments released: ${parts.join(", ")}` : undefined;
}

/** What a committed attachment needs of the node's side, as reconcile looks it up. */
export interface HostSide {
  containerId: string;
  hostIface: string;
  ipv6?: string;
  ipv4?: string;
}

/** The key of a host route in the set {@link missingHostState} looks routes up in. */
export function hostRouteKey(ip: string, len: number, oif: number): string {
  return `${ip}/${len}%${oif}`;
}

/**
 * What a committed pod's node side lost that a restart must put back, or undefined when it is
 * whole: its host veth (deleted), the link being up, or a /128 or /32 host route through it (`ip
 * route del`, or a down and up of the veth, which drops its routes). Looked up in the start-up
 * dumps (`links` by name, `routes` keyed by {@link hostRouteKey}), so a node whose pods are whole
 * costs no request per pod.
 *
 * A veth left down counts as lost on purpose: a reconcile (a restart, a reconfigure) converges
 * the node to its records, so its repair sets the veth up, reported as a problem. While the agent
 * runs, host_side_repair.ts leaves a down veth down (docs/operations.md says both).
 */
export function missingHostState(
  rec: HostSide,
  links: ReadonlyMap<string, Link>,
  routes: ReadonlySet<string>,
): string | undefined {
  const link = links.get(rec.hostIface);
  if (!link) return `host veth ${rec.hostIface} missing`;
  if (!link.up) return `host veth ${rec.hostIface} down`;
  const missing = [rec.ipv6, rec.ipv4].filter((text): text is string => text !== undefined)
    .map((text) => hostPrefix(parseIP(text)))
    .filter(({ ip, len }) => !routes.has(hostRouteKey(formatIP(ip), len, link.index)));
  if (missing.length === 0) return undefined;
  const what = missing.map(formatPrefix).join(", ");
  return `host route${missing.length > 1 ? "s" : ""} ${what} via ${rec.hostIface} missing`;
}

/** The problem line of a committed pod whose datapath the reconcile set up again. */
export function repairedProblem(containerId: string, missing: string): string {
  return `${containerId}: datapath repaired (${missing})`;
}
