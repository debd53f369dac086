import assert from "node:assert/strict";
import { parseIP, parsePrefix } from "../netlink/mod.ts";
import { AddressPool } from "./ipam.ts";
import { Store } from "./store.ts";
import { releaseNoLongerHeld, storeHeldAddresses } from "./store_held.ts";

Deno.test("store_held: what the store no longer holds is released in the pools, nothing else", () => {
  const dir = Deno.makeTempDirSync({ prefix: "flock-held-" });
  const store = Store.open(dir);
  try {
    for (const [id, ip] of [["kept", "fd00:7::2"], ["gone", "fd00:7::3"]]) {
      store.insertPending({
        containerId: id,
        ifname: "eth0",
        netns: "/x",
        hostIface: `h-${id}`,
        ipv6: ip,
        anycast: [],
      });
      store.commit(id, "eth0");
    }
    const pool = new AddressPool(parsePrefix("fd00:7::/64"), { cooldownMs: 0 });
    for (const ip of ["fd00:7::2", "fd00:7::3"]) pool.reserve(parseIP(ip));
    const before = storeHeldAddresses(store);
    assert.deepEqual([...before].sort(), ["fd00:7::2", "fd00:7::3"]);
    store.markReleasing("gone", "eth0", 1);
    store.finishRelease("gone", "eth0", ["fd00:7::3"], 2);
    assert.deepEqual(releaseNoLongerHeld(store, before, [pool, undefined]), ["fd00:7::3"]);
    assert.equal(pool.isAllocated(parseIP("fd00:7::2")), true);
    assert.equal(pool.isAllocated(parseIP("fd00:7::3")), false);
  } finally {
    store.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
