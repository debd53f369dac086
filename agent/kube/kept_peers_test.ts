import assert from "node:assert/strict";
import { parsePrefix } from "../../netlink/ip.ts";
import type { MeshPeer } from "../routing.ts";
import { DEFAULT_DELETED_PEER_GRACE_MS, KeptPeers } from "./kept_peers.ts";

function peer(i: number, address = `fd00:a::${i}`, cidr6 = `fd00:50:${i}::/64`): MeshPeer {
  return { name: `n${i}`, address, asn: 64512, cidrs: [cidr6] };
}

const names = (mesh: MeshPeer[]) => mesh.map((p) => `${p.name}@${p.address}`);

Deno.test("KeptPeers: a peer whose Node is deleted stays for the grace, then goes", () => {
  const kept = new KeptPeers(60_000);
  assert.equal(kept.graceMs, DEFAULT_DELETED_PEER_GRACE_MS);
  const missing = new Map<string, string>();
  const gone = (name: string) => missing.get(name);
  assert.deepEqual(names(kept.apply([peer(2), peer(3)], gone, 0).mesh), [
    "n2@fd00:a::2",
    "n3@fd00:a::3",
  ]);

  missing.set("n2", "Node");
  const r = kept.apply([peer(3)], gone, 1_000);
  assert.deepEqual(names(r.mesh), ["n2@fd00:a::2", "n3@fd00:a::3"]);
  assert.deepEqual(r.events.kept, [{ name: "n2", address: "fd00:a::2", gone: "Node" }]);
  assert.equal(kept.nextExpiry, 61_000);
  assert.deepEqual(kept.names, ["n2"]);

  // Still within the grace: unchanged, nothing to log.
  const r2 = kept.apply([peer(3)], gone, 60_999);
  assert.deepEqual(names(r2.mesh), ["n2@fd00:a::2", "n3@fd00:a::3"]);
  assert.deepEqual(r2.events, { kept: [], returned: [], dropped: [] });

  // The grace is over: dropped, never kept again.
  const r3 = kept.apply([peer(3)], gone, 61_000);
  assert.deepEqual(names(r3.mesh), ["n3@fd00:a::3"]);
  assert.deepEqual(r3.events.dropped.map((d) => d.name), ["n2"]);
  assert.match(r3.events.dropped[0].reason, /stayed deleted for 60 s/);
  assert.equal(kept.nextExpiry, undefined);
  assert.deepEqual(names(kept.apply([peer(3)], gone, 200_000).mesh), ["n3@fd00:a::3"]);
});

Deno.test("KeptPeers: the objects back within the grace: the fresh peer, no trace of the kept one", () => {
  const kept = new KeptPeers(60_000);
  let missing: string | undefined;
  const gone = () => missing;
  kept.apply([peer(2)], gone, 0);
  missing = "NodeConfig";
  assert.deepEqual(names(kept.apply([], gone, 10).mesh), ["n2@fd00:a::2"]);
  missing = undefined;
  const back = kept.apply([peer(2)], gone, 20);
  assert.deepEqual(names(back.mesh), ["n2@fd00:a::2"]);
  assert.deepEqual(back.events.returned, ["n2"]);
  assert.equal(kept.nextExpiry, undefined);
  // Deleted again later: a new grace from then.
  missing = "Node";
  kept.apply([], gone, 100_000);
  assert.equal(kept.nextExpiry, 160_000);
});

Deno.test("KeptPeers: a peer leaving while its objects are there is dropped at once", () => {
  const kept = new KeptPeers(60_000);
  let missing: string | undefined;
  kept.apply([peer(2)], () => missing, 0);
  // Its NodeConfig turned nodeMesh off: that is its spec, not a deletion.
  const r = kept.apply([], () => missing, 1);
  assert.deepEqual(r.mesh, []);
  assert.deepEqual(r.events, { kept: [], returned: [], dropped: [] });
  // Kept, then its objects come back saying it is no mesh peer.
  kept.apply([peer(2)], () => missing, 2);
  missing = "Node";
  assert.equal(kept.apply([], () => missing, 3).mesh.length, 1);
  missing = undefined;
  const r2 = kept.apply([], () => missing, 4);
  assert.deepEqual(r2.mesh, []);
  assert.match(r2.events.dropped[0].reason, /back but make it no mesh peer/);
});

Deno.test("KeptPeers: a replacement node taking the address or the CIDRs ends the grace", () => {
  const kept = new KeptPeers(60_000);
  const gone = (name: string) => (name === "n2" ? "Node" : undefined);
  kept.apply([peer(2)], () => undefined, 0);
  assert.equal(kept.apply([], gone, 1).mesh.length, 1);
  const byAddress = kept.apply([peer(5, "fd00:a::2")], gone, 2);
  assert.deepEqual(names(byAddress.mesh), ["n5@fd00:a::2"]);
  assert.match(byAddress.events.dropped[0].reason, /another node now peers at fd00:a::2/);

  const k2 = new KeptPeers(60_000);
  k2.apply([peer(2)], () => undefined, 0);
  k2.apply([], gone, 1);
  const byCidr = k2.apply([peer(6, "fd00:a::6", "fd00:50:2::/48")], gone, 2);
  assert.deepEqual(names(byCidr.mesh), ["n6@fd00:a::6"]);
  assert.match(byCidr.events.dropped[0].reason, /holds its CIDRs/);

  const k3 = new KeptPeers(60_000);
  k3.apply([peer(2)], () => undefined, 0);
  const own = k3.apply([], gone, 1, [parsePrefix("fd00:50:2::/64")]);
  assert.deepEqual(own.mesh, []);
});

Deno.test("KeptPeers: a grace of 0 keeps nothing", () => {
  const kept = new KeptPeers(0);
  kept.apply([peer(2)], () => undefined, 0);
  assert.deepEqual(kept.apply([], () => "Node", 1).mesh, []);
});
