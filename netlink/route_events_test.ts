import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { Handle } from "./mod.ts";
import { RouteEvents, type RouteEventsRead } from "./route_events.ts";

/** Reads the subscription until it reports a deletion or `ms` pass (notifications are queued). */
async function readWithin(events: RouteEvents, ms: number): Promise<RouteEventsRead> {
  const deadline = Date.now() + ms;
  for (;;) {
    const read = events.read();
    if (read.deleted.length || read.lost || read.bounded || Date.now() > deadline) return read;
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test({
  name: "RouteEvents: a deleted host route of the protocol through one device is reported; " +
    "additions, other protocols, prefixes, types and multipath routes are not",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-routeev");
    for (const dev of ["rev0", "rev1"]) {
      await ns.ip(["link", "add", dev, "type", "veth", "peer", "name", `${dev}p`]);
      for (const end of [dev, `${dev}p`]) await ns.ip(["link", "set", end, "up"]);
    }
    const handle = Handle.forNetns(ns.path);
    const events = RouteEvents.open(handle, 201);
    try {
      const others = [
        ["-6", "route", "add", "fd00:1::/64", "dev", "rev0", "proto", "201"],
        ["-6", "route", "add", "fd00:2::2", "dev", "rev0", "proto", "static"],
        ["-6", "route", "add", "blackhole", "fd00:3::3", "proto", "201"],
        [
          "-4",
          "route",
          "add",
          "10.9.4.4",
          "proto",
          "201",
          "nexthop",
          "dev",
          "rev0",
          "nexthop",
          "dev",
          "rev1",
        ],
        ["-4", "route", "add", "10.9.0.0/24", "dev", "rev0", "proto", "201"],
      ];
      const hosts = [
        ["-6", "route", "add", "fd00:9::1", "dev", "rev0", "proto", "201"],
        ["-4", "route", "add", "10.9.1.1", "dev", "rev0", "proto", "201"],
      ];
      for (const add of [...others, ...hosts]) await ns.ip(add);
      assert.deepEqual(await readWithin(events, 300), { deleted: [], lost: false, bounded: false });

      for (const add of others) await ns.ip([add[0], "route", "del", ...add.slice(3)]);
      assert.deepEqual(await readWithin(events, 300), { deleted: [], lost: false, bounded: false });

      for (const add of hosts) await ns.ip([add[0], "route", "del", ...add.slice(3)]);
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(events.read(), {
        deleted: ["fd00:9::1", "10.9.1.1"],
        lost: false,
        bounded: false,
      });

      // A device going down: IPv6 notifies each route it drops (IPv4 drops them silently, which
      // is why the host side repair watches the links too).
      await ns.ip(["-6", "route", "add", "fd00:9::2", "dev", "rev1", "proto", "201"]);
      await ns.ip(["link", "set", "rev1", "down"]);
      assert.deepEqual((await readWithin(events, 1_000)).deleted, ["fd00:9::2"]);

      events.close();
      await ns.ip(["-6", "route", "add", "fd00:9::1", "dev", "rev0", "proto", "201"]);
      await ns.ip(["-6", "route", "del", "fd00:9::1", "dev", "rev0", "proto", "201"]);
      assert.deepEqual(events.read(), { deleted: [], lost: false, bounded: false }, "closed");
    } finally {
      events.close();
      handle.close();
    }
  },
});

Deno.test({
  name: "RouteEvents: more queued than one read takes is reported bounded, the rest read next",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-routeevb");
    await ns.ip(["link", "add", "rev0", "type", "veth", "peer", "name", "rev0p"]);
    for (const end of ["rev0", "rev0p"]) await ns.ip(["link", "set", end, "up"]);
    const handle = Handle.forNetns(ns.path);
    const events = RouteEvents.open(handle, 201, { maxReadsPerPoll: 2 });
    try {
      const addrs = ["fd00:9::1", "fd00:9::2", "fd00:9::3"];
      for (const a of addrs) await ns.ip(["-6", "route", "add", a, "dev", "rev0", "proto", "201"]);
      for (const a of addrs) await ns.ip(["-6", "route", "del", a, "dev", "rev0", "proto", "201"]);
      await new Promise((r) => setTimeout(r, 50));
      const first = events.read();
      assert.equal(first.bounded, true);
      // The additions' notifications count against the bound too: read on until all is read.
      const deleted = [...first.deleted];
      for (let reads = 0, read = first; read.bounded; reads++) {
        assert.ok(reads < 10, "all read within 10 reads");
        read = events.read();
        deleted.push(...read.deleted);
      }
      assert.deepEqual(deleted, addrs);
    } finally {
      events.close();
      handle.close();
    }
  },
});
