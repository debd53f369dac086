/**
 * The store's withheld addresses (schema 5) and their giving back, without a kernel: the
 * `routed` question is answered by the test (tests/e2e/withheld_address_test.ts asks the real
 * one).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { SCHEMA_VERSION, Store } from "./store.ts";
import { AddressPool } from "./ipam.ts";
import { freeUnroutedWithheld, withheldReason } from "./withheld.ts";
import { formatIP, type Handle, type IP, parseIP, parsePrefix } from "../netlink/mod.ts";
import { manyOldRecords, writeSchema2Store } from "../tests/helpers/old_store.ts";

async function withStore(fn: (store: Store, dir: string) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flock-withheld-" });
  const store = Store.open(join(dir, "state"));
  try {
    fn(store, join(dir, "state"));
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function addPod(store: Store, containerId: string, ipv6: string, hostIface: string): void {
  store.insertPending({
    containerId,
    ifname: "eth0",
    netns: `/var/run/netns/${containerId}`,
    hostIface,
    ipv6,
    anycast: [],
  });
  store.commit(containerId, "eth0");
}

/** Never asked: `routed` answers instead (the kernel's question is the e2e test's). */
const NO_NODE = undefined as unknown as Handle;

Deno.test("a release withholds in the same transaction as the record goes; any spelling finds it", () =>
  withStore((store) => {
    addPod(store, "a", "fd00::1", "flockb");
    addPod(store, "b", "fd00::2", "flockb2");
    const withheld = [{ ip: "FD00:0::1", hostIface: "flockb2", owner: "b/eth0" }];
    assert.equal(store.finishRelease("a", "eth0", [], 1_000, withheld), true);
    assert.equal(store.get("a", "eth0"), undefined);
    assert.deepEqual(store.withheld(), [
      { ip: "fd00::1", hostIface: "flockb2", owner: "b/eth0", at: 1_000 },
    ]);
    assert.equal(store.withheldAddress("fd00:0:0::1")?.owner, "b/eth0");
    assert.deepEqual(store.recentReleases(0), [], "withheld is not released");
    assert.match(
      withheldReason(store, parseIP("fd00::1")),
      /withheld: the node still routes it through host veth flockb2, .* b\/eth0's netns/,
    );
    assert.equal(withheldReason(store, parseIP("fd00::2")), "");
  }));

Deno.test("freeUnroutedWithheld gives back only the unrouted ones (of one veth if named), cooling", () =>
  withStore((store) => {
    store.finishRelease("x", "eth0", [], 1, [
      { ip: "fd00::1", hostIface: "flockb", owner: "b/eth0" },
      { ip: "fd00::3", hostIface: "flockc", owner: "c/eth0" },
      { ip: "10.0.0.3", hostIface: "flockc", owner: "c/eth0" },
    ]);
    const now = 50_000;
    const pool6 = new AddressPool(parsePrefix("fd00::/120"), {
      cooldownMs: 10_000,
      now: () => now,
    });
    const pool4 = new AddressPool(parsePrefix("10.0.0.0/29"), {
      cooldownMs: 10_000,
      now: () => now,
    });
    for (const ip of ["fd00::1", "fd00::3"]) pool6.reserve(parseIP(ip));
    pool4.reserve(parseIP("10.0.0.3"));
    const d = {
      store,
      node: NO_NODE,
      pool6,
      pool4,
      now,
      routed: (ip: IP) => formatIP(ip) === "fd00::3",
    };
    // Named veth: only flockb's entry is looked at.
    assert.deepEqual(freeUnroutedWithheld(d, "flockb").map((w) => w.ip), ["fd00::1"]);
    assert.deepEqual(store.withheld().map((w) => w.ip), ["10.0.0.3", "fd00::3"]);
    assert.deepEqual(store.recentReleases(0), [{ ip: "fd00::1", at: now }]);
    assert.equal(pool6.isAllocated(parseIP("fd00::1")), false);
    assert.equal(pool6.cooling, 1, "cooling, not free at once");
    // All: the IPv4 one is not routed any more, the IPv6 one still is.
    assert.deepEqual(freeUnroutedWithheld(d).map((w) => w.ip), ["10.0.0.3"]);
    assert.deepEqual(store.withheld().map((w) => w.ip), ["fd00::3"]);
    assert.equal(pool4.cooling, 1);
    assert.equal(pool6.isAllocated(parseIP("fd00::3")), true, "still withheld");
    assert.deepEqual(freeUnroutedWithheld(d), [], "nothing more to give back");
  }));

Deno.test("freeWithheld of an address no longer withheld records no release", () =>
  withStore((store) => {
    store.freeWithheld(["fd00::9"], 5);
    assert.deepEqual(store.recentReleases(0), []);
  }));

Deno.test("a schema-2 store is upgraded with an empty withheld table", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flock-withheld-" });
  try {
    writeSchema2Store(dir, manyOldRecords(3));
    const store = Store.open(dir);
    try {
      assert.equal(store.pragmas().userVersion, SCHEMA_VERSION);
      assert.equal(SCHEMA_VERSION, 5);
      assert.deepEqual(store.withheld(), []);
      assert.equal(store.count(), 3);
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
