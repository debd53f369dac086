/**
 * Which withheld addresses the sweep gives back, asked of a real kernel (withheld.ts's
 * withheldRoutedNow): an address stays withheld while its veth routes it, and while that veth is
 * down (a DEL's release takes it down, and its routes with it, before deleting it: giving the
 * address back then would start its cooldown while the veth still exists); it is given back once
 * the veth is gone, or up without the route.
 */

import assert from "node:assert/strict";
import { linkVeth, TestNamespace } from "../tests/helpers/netns.ts";
import { ROOT_ONLY } from "../tests/helpers/exec.ts";
import { Handle, parseIP } from "../netlink/mod.ts";
import { withheldRoutedNow } from "./withheld.ts";

const VETH = "flockwh0";
const ADDRESS = "fd00:99::5";

Deno.test({
  name: "withheld: kept while its veth routes it or is down; given back once gone or unrouted",
  ...ROOT_ONLY,
  async fn() {
    await using node = await TestNamespace.create("flk-whn");
    await using pod = await TestNamespace.create("flk-whp");
    await linkVeth(node, pod, VETH, "eth0");
    const route = [ADDRESS, "dev", VETH, "proto", "201"];
    await node.ip(["-6", "route", "add", ...route]);
    const handle = Handle.forNetns(node.path);
    try {
      const stays = () => withheldRoutedNow(handle)(parseIP(ADDRESS), VETH);
      assert.equal(stays(), true, "routed through its up veth");

      await node.ip(["link", "set", VETH, "down"]);
      assert.equal(await node.ip(["-6", "route", "show", "proto", "201"]), "", "down: no route");
      assert.equal(stays(), true, "its veth is down: a release in progress, not over");

      await node.ip(["link", "set", VETH, "up"]);
      assert.equal(stays(), false, "up without the route: given back");

      await node.ip(["-6", "route", "add", ...route]);
      assert.equal(stays(), true, "routed again");
      await node.ip(["link", "del", VETH]);
      assert.equal(stays(), false, "its veth is gone");
    } finally {
      handle.close();
    }
  },
});

Deno.test({
  name: "withheld: one sweep dumps links and routes once for all its addresses",
  ...ROOT_ONLY,
  async fn() {
    await using node = await TestNamespace.create("flk-whn");
    await using pod = await TestNamespace.create("flk-whp");
    await linkVeth(node, pod, VETH, "eth0");
    const addresses = Array.from({ length: 20 }, (_, i) => `fd00:99::${(i + 1).toString(16)}`);
    for (const a of addresses) {
      await node.ip(["-6", "route", "add", a, "dev", VETH, "proto", "201"]);
    }
    const handle = Handle.forNetns(node.path);
    try {
      const routed = withheldRoutedNow(handle);
      assert.equal(routed(parseIP(addresses[0]), VETH), true);
      // The dumps are taken: what changes in the kernel afterwards is not seen by this sweep.
      await node.ip(["link", "del", VETH]);
      for (const a of addresses) assert.equal(routed(parseIP(a), VETH), true, a);
      assert.equal(withheldRoutedNow(handle)(parseIP(addresses[0]), VETH), false, "next sweep");
    } finally {
      handle.close();
    }
  },
});
