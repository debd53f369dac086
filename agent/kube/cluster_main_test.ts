import assert from "node:assert/strict";
import { ClusterUsageError, deletedPeerGraceMs } from "./cluster_main.ts";
import { DEFAULT_DELETED_PEER_GRACE_MS } from "./kept_peers.ts";

Deno.test("deletedPeerGraceMs: default 60 s, whole milliseconds up to an hour, else a usage error", () => {
  assert.equal(deletedPeerGraceMs(undefined), DEFAULT_DELETED_PEER_GRACE_MS);
  assert.equal(deletedPeerGraceMs(""), 60_000);
  assert.equal(deletedPeerGraceMs("0"), 0);
  assert.equal(deletedPeerGraceMs("5000"), 5_000);
  assert.equal(deletedPeerGraceMs("3600000"), 3_600_000);
  for (const bad of ["3600001", "-1", "1.5", "60s", "1e3"]) {
    assert.throws(() => deletedPeerGraceMs(bad), ClusterUsageError, bad);
  }
});
