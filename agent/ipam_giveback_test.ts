import assert from "node:assert/strict";
import { formatIP, parseIP, parsePrefix } from "../netlink/ip.ts";
import { AddressPool } from "./ipam.ts";

/** A pool whose released addresses would cool down for an hour. */
function pool(cidr = "10.0.0.0/24"): AddressPool {
  return new AddressPool(parsePrefix(cidr), { cooldownMs: 3_600_000 });
}

const next = (p: AddressPool) => formatIP(p.allocate({ algo: "next" }));
const lowest = (p: AddressPool) => formatIP(p.allocate({ algo: "lowest" }));

Deno.test("giveBack: the latest `next` allocation is undone, cursor included", () => {
  const p = pool();
  assert.equal(next(p), "10.0.0.1");
  assert.equal(next(p), "10.0.0.2");
  p.giveBack(parseIP("10.0.0.2"));
  assert.equal(p.cooling, 0, "no cooldown for an address no pod ever had");
  assert.equal(next(p), "10.0.0.2");
  assert.equal(next(p), "10.0.0.3");
});

Deno.test("giveBack: a pool's first allocation undone leaves it as if untouched", () => {
  const p = pool("fd00::/120");
  const ip = p.allocate({ algo: "next" });
  p.giveBack(ip);
  assert.equal(p.allocated, 0);
  assert.equal(next(p), "fd00::1");
});

Deno.test("giveBack: an older address is freed at once but does not move the cursor", () => {
  const p = pool();
  assert.deepEqual([next(p), next(p)], ["10.0.0.1", "10.0.0.2"]);
  p.giveBack(parseIP("10.0.0.1"));
  assert.equal(next(p), "10.0.0.3");
  assert.equal(lowest(p), "10.0.0.1", "free without a cooldown");
});

Deno.test("giveBack: `lowest` hands the address out again", () => {
  const p = pool();
  assert.deepEqual([lowest(p), lowest(p), lowest(p)], ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
  p.giveBack(parseIP("10.0.0.2"));
  assert.equal(lowest(p), "10.0.0.2");
  assert.equal(lowest(p), "10.0.0.4");
});

Deno.test("giveBack: a pinned reservation undone; unknown and foreign addresses ignored", () => {
  const p = pool();
  p.reserve(parseIP("10.0.0.9"));
  p.giveBack(parseIP("10.0.0.9"));
  assert.equal(p.isAllocated(parseIP("10.0.0.9")), false);
  assert.equal(p.cooling, 0);
  p.giveBack(parseIP("10.0.0.77"));
  p.giveBack(parseIP("fd00::1"));
  assert.equal(p.allocated, 0);
});

Deno.test("giveBack: a pinned reservation of a cooling address undone keeps it cooling", () => {
  const p = pool();
  assert.deepEqual([lowest(p), lowest(p)], ["10.0.0.1", "10.0.0.2"]);
  p.release(parseIP("10.0.0.1")); // a deleted pod's address, cooling for an hour
  p.reserve(parseIP("10.0.0.1")); // another pod pins it, but its ADD fails
  p.giveBack(parseIP("10.0.0.1"));
  assert.equal(p.cooling, 1, "the deleted pod's cooldown goes on");
  assert.equal(lowest(p), "10.0.0.3");
  assert.equal(next(p), "10.0.0.4");
});
