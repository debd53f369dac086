/**
 * Which lines of a reconcile report are problems (an operator may need to act; counted by
 * `flock_reconcile_problems`) and which are notes (expected housekeeping). Pure: no kernel.
 */
import assert from "node:assert/strict";
import type { Link } from "../netlink/mod.ts";
import { parsePrefix } from "../netlink/mod.ts";
import {
  addFinding,
  hostRouteKey,
  leftoversNote,
  missingHostState,
  type ReconcileFindings,
  removedLinkProblem,
  removedRouteFinding,
  repairedProblem,
} from "./reconcile_findings.ts";

function link(name: string, index: number, up = true): Link {
  return { index, name, flags: 0, up, mtu: 1500, mac: "02:00:00:00:00:01", kind: "veth" };
}

Deno.test("an old CIDR's summary route removed is a note; a pod's host route without record a problem", () => {
  const summary6 = removedRouteFinding(parsePrefix("fd00:7::/64"));
  assert.equal(summary6.kind, "notes");
  assert.match(summary6.text, /^removed orphan route fd00:7::\/64: a summary route of a CIDR/);
  assert.equal(removedRouteFinding(parsePrefix("10.7.0.0/24")).kind, "notes");

  const host6 = removedRouteFinding(parsePrefix("fd00:7::dead/128"));
  assert.deepEqual(host6, {
    kind: "problems",
    text: "removed orphan route fd00:7::dead/128: no record holds it",
  });
  assert.equal(removedRouteFinding(parsePrefix("10.7.0.250/32")).kind, "problems");
});

Deno.test("addFinding puts each line into its own list", () => {
  const report: ReconcileFindings = { problems: [], notes: [] };
  addFinding(report, removedRouteFinding(parsePrefix("fd00:7::/64")));
  addFinding(report, removedRouteFinding(parsePrefix("fd00:7::5/128")));
  assert.equal(report.notes.length, 1);
  assert.equal(report.problems.length, 1);
  assert.match(report.notes[0], /fd00:7::\/64/);
  assert.match(report.problems[0], /fd00:7::5\/128/);
});

Deno.test("leftovers finished: one note, or none when there were none", () => {
  assert.equal(leftoversNote({ pending: 0, releasing: 0 }), undefined);
  assert.equal(
    leftoversNote({ pending: 2, releasing: 30 }),
    "leftover attachments released: 2 pending (an ADD cut short) torn down, 30 releasing " +
      "(a DEL that answered before its veth was gone) completed",
  );
  assert.match(
    leftoversNote({ pending: 0, releasing: 1 })!,
    /^leftover attachments released: 1 releasing/,
  );
});

Deno.test("missingHostState says what a committed pod's node side lost, or nothing when whole", () => {
  const rec = { containerId: "c1", hostIface: "flock0001", ipv6: "fd00:1::5", ipv4: "10.1.0.5" };
  const links = new Map([["flock0001", link("flock0001", 7)]]);
  const both = new Set([hostRouteKey("fd00:1::5", 128, 7), hostRouteKey("10.1.0.5", 32, 7)]);
  assert.equal(missingHostState(rec, links, both), undefined, "whole");

  assert.equal(missingHostState(rec, new Map(), both), "host veth flock0001 missing");
  const down = new Map([["flock0001", link("flock0001", 7, false)]]);
  assert.equal(missingHostState(rec, down, both), "host veth flock0001 down");
  assert.equal(
    missingHostState(rec, links, new Set([hostRouteKey("fd00:1::5", 128, 7)])),
    "host route 10.1.0.5/32 via flock0001 missing",
  );
  assert.equal(
    missingHostState(rec, links, new Set()),
    "host routes fd00:1::5/128, 10.1.0.5/32 via flock0001 missing",
  );
  // A route through another link (the veth was remade: a new index) does not count.
  const elsewhere = new Set([hostRouteKey("fd00:1::5", 128, 8), hostRouteKey("10.1.0.5", 32, 8)]);
  assert.match(missingHostState(rec, links, elsewhere)!, /^host routes .* missing$/);
  // IPv6 only: no IPv4 route is wanted.
  const v6only = { containerId: "c2", hostIface: "flock0001", ipv6: "fd00:1::5" };
  assert.equal(missingHostState(v6only, links, both), undefined);
});

Deno.test("a repair and a removed orphan link are problems, with what was found", () => {
  assert.equal(
    repairedProblem("c1", "host veth flock0001 down"),
    "c1: datapath repaired (host veth flock0001 down)",
  );
  assert.equal(
    removedLinkProblem("flock0badcafe"),
    "removed orphan link flock0badcafe: no record names it",
  );
});
