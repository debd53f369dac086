import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { AddressEvents, Handle } from "./mod.ts";

/** Reads the subscription until it reports a change or `ms` pass (notifications are queued). */
async function changedWithin(events: AddressEvents, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (events.globalAddressChanged()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test({
  name: "AddressEvents: a global address added or removed is a change; link-local ones are not",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-addrev");
    const handle = Handle.forNetns(ns.path);
    const events = AddressEvents.open(handle);
    try {
      assert.equal(events.globalAddressChanged(), false);
      // A veth pair brought up gets IPv6 link-locals, as every pod's host end does.
      await ns.ip(["link", "add", "ev0", "type", "veth", "peer", "name", "ev1"]);
      await ns.ip(["link", "set", "ev0", "up"]);
      await ns.ip(["link", "set", "ev1", "up"]);
      await ns.ip(["addr", "add", "fe80::99/64", "dev", "ev0"]);
      assert.equal(await changedWithin(events, 300), false);

      await ns.ip(["addr", "add", "fd00:a::11/128", "dev", "lo"]);
      assert.equal(await changedWithin(events, 1_000), true);
      assert.equal(events.globalAddressChanged(), false, "each notification is read once");
      await ns.ip(["addr", "add", "10.0.0.11/24", "dev", "ev0"]);
      assert.equal(await changedWithin(events, 1_000), true);
      await ns.ip(["-6", "addr", "del", "fd00:a::11/128", "dev", "lo"]);
      assert.equal(await changedWithin(events, 1_000), true);

      events.close();
      assert.equal(events.globalAddressChanged(), false, "closed: nothing more to read");
    } finally {
      events.close();
      handle.close();
    }
  },
});

Deno.test({
  name: "AddressEvents: one poll reads a bounded number of notifications, the rest the next; " +
    "reaching the bound counts as a change",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-addrcap");
    const handle = Handle.forNetns(ns.path);
    const events = AddressEvents.open(handle, { maxReadsPerPoll: 8 });
    try {
      await ns.ip(["link", "add", "ev0", "type", "veth", "peer", "name", "ev1"]);
      // 20 link-local addresses (no duplicate address detection: one notification each), as
      // pods' veths make under churn; none is a global change.
      const batch = Array.from(
        { length: 20 },
        (_, i) => `addr add fe80::${(i + 1).toString(16)}/64 dev ev0 nodad`,
      ).join("\n");
      const file = await Deno.makeTempFile({ prefix: "flk-addrcap-" });
      try {
        await Deno.writeTextFile(file, batch + "\n");
        await ns.ip(["-batch", file]);
      } finally {
        await Deno.remove(file);
      }
      // 8 read, 12 left: the bound reached counts as a change (what is unread might be one).
      assert.equal(events.globalAddressChanged(), true, "first poll: bound reached");
      assert.equal(events.globalAddressChanged(), true, "second poll: bound reached again");
      // The last 4 are link-local only: no change, and the queue is empty afterwards.
      assert.equal(events.globalAddressChanged(), false, "third poll: the rest, link-local");
      assert.equal(events.globalAddressChanged(), false, "nothing left");
      assert.throws(() => AddressEvents.open(handle, { maxReadsPerPoll: 0 }), RangeError);
    } finally {
      events.close();
      handle.close();
    }
  },
});
