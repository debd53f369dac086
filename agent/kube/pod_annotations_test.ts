import assert from "node:assert/strict";
import { PodAnnotationIndex, projectPod } from "./pod_annotations.ts";
import { CniError } from "../protocol.ts";

Deno.test("projectPod keeps only the uid and flock's annotations", () => {
  const info = projectPod({
    metadata: {
      uid: "u1",
      annotations: {
        "flock.fritzlab.net/ipv6": "fd00::5",
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
      },
    },
  });
  assert.deepEqual(info, { uid: "u1", annotations: { "flock.fritzlab.net/ipv6": "fd00::5" } });
});

function index(synced = true, waitMs = 2_000) {
  return new PodAnnotationIndex({ synced: () => synced, waitMs });
}

Deno.test("annotationsFor: a known pod answers at once", async () => {
  const idx = index();
  idx.onChange({ type: "upsert", key: "ns/p", value: { uid: "u", annotations: { a: "1" } } });
  assert.deepEqual(await idx.annotationsFor("ns", "p"), { a: "1" });
  assert.deepEqual(await idx.annotationsFor("ns", "p", "u"), { a: "1" });
  assert.equal(idx.waited, 0);
});

Deno.test("annotationsFor: waits for a pod the informer delivers later (the ADD race)", async () => {
  const idx = index();
  const started = performance.now();
  const lookup = idx.annotationsFor("ns", "late");
  setTimeout(() => {
    idx.onChange({ type: "upsert", key: "ns/late", value: { uid: "u", annotations: { b: "2" } } });
  }, 50);
  assert.deepEqual(await lookup, { b: "2" });
  const ms = performance.now() - started;
  assert.ok(ms >= 40 && ms < 1_500, `resolved after ${ms} ms`);
  assert.equal(idx.waited, 1);
});

Deno.test("annotationsFor: an older pod of the same name is not taken for the new UID", async () => {
  const idx = index();
  idx.onChange({ type: "upsert", key: "ns/sts-0", value: { uid: "old", annotations: { v: "1" } } });
  const lookup = idx.annotationsFor("ns", "sts-0", "new");
  setTimeout(() => {
    idx.onChange({
      type: "upsert",
      key: "ns/sts-0",
      value: { uid: "new", annotations: { v: "2" } },
    });
  }, 20);
  assert.deepEqual(await lookup, { v: "2" });
});

Deno.test("annotationsFor: after the bound, code 11 naming the pod and the reason", async () => {
  const idx = index(true, 60);
  await assert.rejects(idx.annotationsFor("ns", "ghost"), (e: unknown) => {
    assert.ok(e instanceof CniError);
    assert.equal(e.code, 11);
    assert.match(e.message, /ns\/ghost/);
    assert.match(e.message, /not \(yet\) known/);
    return true;
  });
  const unsynced = index(false, 30);
  await assert.rejects(unsynced.annotationsFor("ns", "p"), /has not synced/);
});

Deno.test("annotationsFor: a deleted pod is forgotten", async () => {
  const idx = index(true, 30);
  idx.onChange({ type: "upsert", key: "ns/p", value: { uid: "u", annotations: {} } });
  idx.onChange({ type: "delete", key: "ns/p", previous: { uid: "u", annotations: {} } });
  assert.equal(idx.size, 0);
  await assert.rejects(idx.annotationsFor("ns", "p"), CniError);
});
