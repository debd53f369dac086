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
