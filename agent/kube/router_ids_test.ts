import assert from "node:assert/strict";
import {
  publishedRouterId,
  routerIdCondition,
  RouterIdConflictLog,
  routerIdConflicts,
} from "./router_ids.ts";
import type { NodeConfigObject } from "./node_configs.ts";

function obj(name: string, status: unknown): NodeConfigObject {
  return { name, generation: 1, spec: { cidr6: "fd00:1::/64" }, status };
}

Deno.test("routerIdConflicts: other nodes publishing the same id, sorted; self and others not", () => {
  const objects = [
    obj("n3", { bgp: { routerID: "192.0.2.1", routerIDSource: "bgp.routerID" } }),
    obj("n1", { bgp: { routerID: "192.0.2.1" } }),
    obj("self", { bgp: { routerID: "192.0.2.1" } }),
    obj("n2", { bgp: { routerID: "192.0.2.2" } }),
    obj("n4", undefined),
    obj("n5", { bgp: null }),
    obj("n6", { bgp: { routerID: 7 } }),
  ];
  assert.deepEqual(routerIdConflicts("192.0.2.1", "self", objects), ["n1", "n3"]);
  assert.deepEqual(routerIdConflicts("192.0.2.9", "self", objects), []);
  assert.equal(publishedRouterId({ bgp: { routerID: "" } }), undefined);
  assert.equal(publishedRouterId(null), undefined);
});

Deno.test("routerIdCondition: True when unique; False naming the nodes, the id and the fix", () => {
  const unique = routerIdCondition({ id: "10.0.0.1", source: "nodeInternalIP" }, []);
  assert.deepEqual([unique.type, unique.status, unique.reason], [
    "RouterIDUnique",
    "True",
    "RouterIDUnique",
  ]);
  const hashed = routerIdCondition({ id: "1.2.3.4", source: "nodeNameHash" }, ["b", "c"]);
  assert.deepEqual([hashed.status, hashed.reason], ["False", "RouterIDConflict"]);
  assert.match(hashed.message, /1\.2\.3\.4 \(from nodeNameHash\) is also used by node b, c/);
  assert.match(hashed.message, /set a unique spec\.bgp\.routerID/);
  const set = routerIdCondition({ id: "1.2.3.4", source: "bgp.routerID" }, ["b"]);
  assert.match(set.message, /give one of them a different spec\.bgp\.routerID/);
});

Deno.test("RouterIdConflictLog: one error line when a conflict starts, one info line when it ends", () => {
  const lines: Record<string, unknown>[] = [];
  const log = new RouterIdConflictLog((f) => lines.push(f));
  assert.equal(log.update("10.0.0.1", []), false);
  assert.equal(log.update(undefined, []), false);
  assert.equal(log.update("10.0.0.1", ["b"]), true);
  assert.equal(log.update("10.0.0.1", ["b"]), false);
  assert.deepEqual(log.others, ["b"]);
  assert.equal(log.update("10.0.0.1", ["b", "c"]), true, "another node joins the conflict");
  assert.equal(log.update("10.0.0.2", []), true);
  assert.equal(log.update("10.0.0.2", []), false);
  assert.deepEqual(log.others, []);
  assert.deepEqual(lines.map((l) => [l.level, l.nodes ?? l.formerly]), [
    ["error", ["b"]],
    ["error", ["b", "c"]],
    ["info", ["b", "c"]],
  ]);
  assert.equal(lines[0].routerId, "10.0.0.1");
  // Without an id (BIRD not driven) there is nothing to conflict with.
  assert.equal(log.update("10.0.0.2", ["d"]), true);
  assert.equal(log.update(undefined, ["d"]), true);
  assert.deepEqual(log.others, []);
});

Deno.test("routerIdCondition: 1,000 nodes sharing the id still fit the CRD's message limit", () => {
  // Every NodeConfig copied from one template with the same spec.bgp.routerID: the message must
  // stay within deploy/crd.yaml's maxLength (32768), or the API server rejects every status write.
  const others = Array.from(
    { length: 1_000 },
    (_, i) => `ip-10-0-${i >> 8}-${i & 255}.eu-west-1.compute.internal`,
  );
  const c = routerIdCondition({ id: "10.0.0.1", source: "bgp.routerID" }, others);
  assert.equal(c.reason, "RouterIDConflict");
  assert.ok(c.message.length <= 32_768, `message of ${c.message.length} characters`);
  assert.match(c.message, /is also used by node ip-10-0-0-0\.eu-west-1\.compute\.internal, /);
  assert.match(c.message, /and \d+ more \(1000 nodes\)/);
  assert.match(c.message, /give one of them a different spec\.bgp\.routerID/);
});
