import assert from "node:assert/strict";
import { ObjectCache, objectKey } from "./object_cache.ts";
import type { KubeObject } from "./api.ts";

function pod(ns: string, name: string, rv: string, note = ""): KubeObject {
  return { metadata: { namespace: ns, name, resourceVersion: rv, annotations: { note } } };
}

const project = (o: KubeObject) => o.metadata?.annotations?.note ?? "";

Deno.test("objectKey: namespace/name, or the name alone for cluster-scoped objects", () => {
  assert.equal(objectKey(pod("ns1", "a", "1")), "ns1/a");
  assert.equal(objectKey({ metadata: { name: "node-1" } }), "node-1");
});

Deno.test("ObjectCache.replace: a relist yields deletes for the missing, adds and updates", () => {
  const cache = new ObjectCache(project);
  assert.deepEqual(
    cache.replace([pod("a", "p1", "1", "x"), pod("a", "p2", "2", "y")]).map((c) => c.type),
    ["upsert", "upsert"],
  );
  const changes = cache.replace([pod("a", "p2", "2", "y"), pod("a", "p3", "5", "z")]);
  assert.deepEqual(changes, [
    { type: "delete", key: "a/p1", previous: "x" },
    { type: "upsert", key: "a/p3", value: "z", previous: undefined },
  ]);
  assert.equal(cache.size, 2);
  // Same resource version: nothing to tell; a new one: an update with the previous value.
  assert.deepEqual(cache.replace([pod("a", "p2", "2", "y"), pod("a", "p3", "6", "w")]), [
    { type: "upsert", key: "a/p3", value: "w", previous: "z" },
  ]);
});

Deno.test("ObjectCache.apply: watch events; an unknown DELETED and a BOOKMARK change nothing", () => {
  const cache = new ObjectCache(project);
  assert.equal(cache.apply("ADDED", pod("a", "p", "1", "v1"))?.type, "upsert");
  assert.equal(cache.apply("MODIFIED", pod("a", "p", "1", "v1")), undefined, "same rv");
  assert.deepEqual(cache.apply("MODIFIED", pod("a", "p", "2", "v2")), {
    type: "upsert",
    key: "a/p",
    value: "v2",
    previous: "v1",
  });
  assert.equal(cache.apply("BOOKMARK", { metadata: { resourceVersion: "9" } }), undefined);
  assert.equal(cache.apply("DELETED", pod("a", "other", "3")), undefined);
  assert.deepEqual(cache.apply("DELETED", pod("a", "p", "3")), {
    type: "delete",
    key: "a/p",
    previous: "v2",
  });
  assert.equal(cache.get("a/p"), undefined);
});
