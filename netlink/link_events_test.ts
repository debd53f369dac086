import assert from "node:assert/strict";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { TestNamespace } from "../tests/helpers/netns.ts";
import { Handle } from "./mod.ts";
import { LinkEvents, type LinkEventsRead } from "./link_events.ts";

/** Reads the subscription until it reports a link up or `ms` pass (notifications are queued). */
async function readWithin(events: LinkEvents, ms: number): Promise<LinkEventsRead> {
  const deadline = Date.now() + ms;
  for (;;) {
    const read = events.read();
    if (read.up.length || read.incomplete || Date.now() > deadline) return read;
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test({
  name: "LinkEvents: a link set up is reported once; down, MTU, carrier and new links are not",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-linkev");
    const handle = Handle.forNetns(ns.path);
    const events = LinkEvents.open(handle);
    try {
      assert.deepEqual(events.read(), { up: [], lost: false, incomplete: false });
      await ns.ip(["link", "add", "lev0", "type", "veth", "peer", "name", "lev1"]);
      await ns.ip(["link", "set", "lev0", "mtu", "1400"]);
      assert.deepEqual(await readWithin(events, 300), { up: [], lost: false, incomplete: false });

      await ns.ip(["link", "set", "lev0", "up"]);
      const index = (await ns.ipJson<{ ifindex: number }[]>(["link", "show", "lev0"]))[0].ifindex;
      assert.deepEqual(await readWithin(events, 1_000), {
        up: [{ index, name: "lev0", times: 1 }],
        lost: false,
        incomplete: false,
      });
      // The peer coming up gives lev0 its carrier (a change of lev0, IFF_UP unchanged): only
      // lev1 is reported. Then an MTU change and a down of an up link: nothing.
      await ns.ip(["link", "set", "lev1", "up"]);
      const up = (await readWithin(events, 1_000)).up.map((l) => l.name);
      assert.deepEqual(up, ["lev1"]);
      await ns.ip(["link", "set", "lev0", "mtu", "1300"]);
      await ns.ip(["link", "set", "lev0", "down"]);
      assert.deepEqual(await readWithin(events, 300), { up: [], lost: false, incomplete: false });

      // Down and up twice between two reads: one report, of two ups.
      await ns.ip(["link", "set", "lev0", "up"]);
      await ns.ip(["link", "set", "lev0", "down"]);
      await ns.ip(["link", "set", "lev0", "up"]);
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(events.read(), {
        up: [{ index, name: "lev0", times: 2 }],
        lost: false,
        incomplete: false,
      });

      events.close();
      await ns.ip(["link", "set", "lev1", "down"]);
      await ns.ip(["link", "set", "lev1", "up"]);
      assert.deepEqual(
        events.read(),
        { up: [], lost: false, incomplete: false },
        "closed: nothing to read",
      );
    } finally {
      events.close();
      handle.close();
    }
  },
});

Deno.test({
  name: "LinkEvents: more queued than one read takes is reported incomplete",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-linkevb");
    const handle = Handle.forNetns(ns.path);
    const events = LinkEvents.open(handle, { maxReadsPerPoll: 2 });
    try {
      await ns.ip(["link", "add", "lev0", "type", "veth", "peer", "name", "lev1"]);
      for (let i = 0; i < 4; i++) {
        await ns.ip(["link", "set", "lev0", "up"]);
        await ns.ip(["link", "set", "lev0", "down"]);
      }
      await new Promise((r) => setTimeout(r, 50));
      const read = events.read();
      assert.equal(read.incomplete, true);
      assert.equal(read.lost, false, "nothing lost: the rest is read next time");
      assert.throws(() => LinkEvents.open(handle, { maxReadsPerPoll: 0 }), RangeError);
    } finally {
      events.close();
      handle.close();
    }
  },
});
