/**
 * The human form of `flock status`: a headline saying ready or why not, then one table per
 * concern (pools, pods, anycast, BGP), so an operator reads the node at a glance.
 *
 * @module
 */

import type { BgpSessionStatus, ReconcileSummary, StatusSnapshot } from "./status_snapshot.ts";

/** Formats seconds as the two largest units: `45s`, `5m12s`, `3h04m`, `2d07h`. */
export function formatDuration(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d${pad(h)}h`;
  if (h > 0) return `${h}h${pad(m)}m`;
  if (m > 0) return `${m}m${pad(s % 60)}s`;
  return `${s}s`;
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function renderTable(headers: string[], rows: string[][], indent = "  "): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    indent + cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i])).join("  ");
  return [line(headers), ...rows.map(line)];
}

/** Share of a pool in use, with enough precision to be non-zero for a huge IPv6 range. */
export function formatUse(allocated: number, capacity: string): string {
  const cap = Number(capacity);
  if (!(cap > 0)) return "-";
  const pct = (allocated / cap) * 100;
  if (pct === 0) return "0%";
  if (pct < 0.01) return "<0.01%";
  return `${pct < 10 ? pct.toFixed(2) : pct.toFixed(1)}%`;
}

function sessionUptime(b: BgpSessionStatus): string {
  if (b.uptimeSeconds !== undefined) return formatDuration(b.uptimeSeconds);
  return b.since ? `since ${b.since}` : "-";
}

/**
 * The withheld addresses (withheld.ts), only when there are any: they are the trace of a store
 * that disagreed with the kernel, and an operator should look at the veth and the pod named.
 */
function renderWithheld(s: StatusSnapshot): string[] {
  const w = s.withheld;
  const total = w ? w.ipv6 + w.ipv4 : 0;
  if (!w || total === 0) return [];
  const out = [
    "",
    `Withheld addresses (${total}): still routed through another pod's host veth, not handed out`,
    ...renderTable(
      ["ADDRESS", "HOST IFACE", "OWNER", "SINCE"],
      w.addresses.map((a) => [a.address, a.hostIface, a.owner, a.since]),
    ),
  ];
  const unlisted = total - w.addresses.length;
  if (unlisted > 0) {
    out.push(`  … and ${unlisted} more (the oldest ${w.addresses.length} are listed)`);
  }
  return out;
}

/** The text `flock status` prints for a snapshot. */
export function renderStatus(s: StatusSnapshot): string {
  const out: string[] = [];
  const headline = s.ready ? "READY" : `NOT READY: ${s.reason ?? "unknown reason"}`;
  out.push(`flock ${s.version} on node ${s.node}: ${headline}`);
  if (s.configProblem) out.push(`  NodeConfig: ${s.configProblem}`);
  out.push(`  agent up ${formatDuration(s.uptimeSeconds)} (since ${s.startedAt})`);

  out.push("", "Address pools");
  if (s.pools.length === 0) out.push("  none (no node configuration yet)");
  else {
    out.push(...renderTable(
      ["FAMILY", "CIDR", "ALLOCATED", "CAPACITY", "USE", "COOLING"],
      s.pools.map((p) => [
        p.family,
        p.cidr,
        String(p.allocated),
        p.capacity,
        formatUse(p.allocated, p.capacity),
        String(p.cooling),
      ]),
    ));
  }

  out.push("", `Pods (${s.attachments.length})`);
  if (s.attachments.length === 0) out.push("  none");
  else {
    // NETWORK comes last, so the columns before it keep their places for whoever reads them by
    // position; an older agent's snapshot has no networks and prints no such column.
    const networks = s.attachments.some((a) => a.network !== undefined);
    out.push(...renderTable(
      [
        "NAMESPACE/POD",
        "CONTAINER",
        "IFNAME",
        "HOST IFACE",
        "IPV6",
        "IPV4",
        "ANYCAST",
        "STATE",
        ...(networks ? ["NETWORK"] : []),
      ],
      s.attachments.map((a) => [
        a.pod ? `${a.namespace ?? ""}/${a.pod}` : "-",
        a.containerId.slice(0, 12),
        a.ifname,
        a.hostIface,
        a.ipv6 ?? "-",
        a.ipv4 ?? "-",
        a.anycast.length ? a.anycast.join(",") : "-",
        a.state,
        ...(networks ? [a.network ?? "-"] : []),
      ]),
    ));
  }

  out.push(...renderWithheld(s));

  out.push("", `Anycast (${s.anycastRoutes} route${s.anycastRoutes === 1 ? "" : "s"})`);
  if (s.anycast.length === 0) out.push("  none");
  else {
    out.push(...renderTable(
      ["ADDRESS", "LOCAL HOLDERS"],
      s.anycast.map((a) => [a.address, String(a.holders)]),
    ));
  }

  out.push("", "BGP sessions");
  if (s.bgp.routerId) {
    out.push(`  router id ${s.bgp.routerId} (from ${s.bgp.routerIdSource ?? "unknown"})`);
  }
  if (s.bgp.routerIdConflicts?.length) {
    out.push(
      `  CONFLICT: node ${s.bgp.routerIdConflicts.join(", ")} uses the same router id; ` +
        `set a unique spec.bgp.routerID`,
    );
  }
  if (s.bgp.peersWithoutIpv6?.length) {
    out.push(
      `  NO IPv6 ROUTES to ${s.bgp.peersWithoutIpv6.join(", ")}: the node has no global IPv6 ` +
        `address to give as their next hop (docs/operations.md)`,
    );
  }
  if (s.bgp.peersWithoutIpv4Link?.length) {
    out.push(
      `  NO IPv4 LINK to ${s.bgp.peersWithoutIpv4Link.join(", ")}: no interface has an IPv4 ` +
        `address in their subnet; BIRD waits for them (address the link, or set multihop)`,
    );
  }
  if (s.bgp.peersWithoutIpv4Address?.length) {
    out.push(
      `  NO IPv4 ADDRESS for ${s.bgp.peersWithoutIpv4Address.join(", ")}: the node has no IPv4 ` +
        `address to reach these multihop peers from (give it one, e.g. a /32 on lo, or peer ` +
        `over IPv6)`,
    );
  }
  if (!s.bgp.available) out.push("  not available (BGP is not wired into this agent)");
  else if (s.bgp.error) out.push(`  cannot read them from BIRD: ${s.bgp.error}`);
  else if (s.bgp.sessions.length === 0) out.push("  none configured");
  else {
    out.push(...renderTable(
      ["NAME", "PEER", "ASN", "STATE", "UPTIME", "INFO"],
      s.bgp.sessions.map((b) => [
        b.name,
        b.peer ?? "-",
        b.asn === undefined ? "-" : String(b.asn),
        b.state,
        sessionUptime(b),
        b.info ?? "",
      ]),
    ));
  }
  const r = s.lastBirdReload;
  out.push(
    "",
    r
      ? `Last BIRD reload: ${r.at} ${r.ok ? "ok" : "FAILED"}${r.message ? ` (${r.message})` : ""}`
      : "Last BIRD reload: none",
  );

  out.push("", `Store: ${s.store.path ?? "not open yet"} (integrity: ${s.store.integrity})`);
  const rc = s.reconcile;
  if (rc) {
    out.push(
      `${reconcileHeading(rc)}: ${rc.restored} restored, ${rc.repaired} repaired, ` +
        `${rc.released} released, ${rc.orphanLinks} orphan links and ` +
        `${rc.orphanRoutes} orphan routes removed`,
    );
    for (const p of rc.problems) out.push(`  problem: ${p}`);
    // Expected housekeeping, after the problems; as it was then (the heading says when).
    for (const n of rc.notes ?? []) out.push(`  note: ${n}`);
  }
  return out.join("\n") + "\n";
}

/** "Start-up reconcile" or "Reconfigure reconcile", with when it ran when the agent said so. */
function reconcileHeading(rc: ReconcileSummary): string {
  const what = rc.trigger === "reconfigure" ? "Reconfigure reconcile" : "Start-up reconcile";
  return rc.at ? `${what} (${rc.at})` : what;
}
