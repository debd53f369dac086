import assert from "node:assert/strict";
import { ROOT_ONLY } from "./exec.ts";
import {
  addAddress,
  createNode,
  leftoverNamespaces,
  linkVeth,
  liveNamespaces,
  TestNamespace,
  withNamespaces,
} from "./netns.ts";
import type { IpAddr, IpLink, IpRoute } from "./iproute.ts";

Deno.test({
  name: "TestNamespace: unique name, lo up, removed on dispose",
  ...ROOT_ONLY,
  async fn() {
    let path = "";
    {
      await using ns = await TestNamespace.create("flk-hlp");
      await using other = await TestNamespace.create("flk-hlp");
      assert.notEqual(ns.name, other.name);
      assert.match(ns.name, new RegExp(`^flk-hlp-${Deno.pid}-\\d+$`));
      path = ns.path;
      const links = await ns.ipJson<IpLink[]>(["link", "show", "lo"]);
      assert.ok(links[0].flags.includes("UP"));
      assert.ok(liveNamespaces().includes(ns.name));
      assert.ok((await leftoverNamespaces(`flk-hlp-${Deno.pid}-`)).includes(ns.name));
    }
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    assert.deepEqual(await leftoverNamespaces(`flk-hlp-${Deno.pid}-`), []);
  },
});

Deno.test({
  name: "TestNamespace: a prefix without flk- gets it",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("plain");
    assert.ok(ns.name.startsWith("flk-plain-"));
  },
});

Deno.test({
  name: "exec and nsenter run inside the namespace",
  ...ROOT_ONLY,
  async fn() {
    await using ns = await TestNamespace.create("flk-hlp");
    for (
      const result of [await ns.exec(["ip", "-o", "link"]), await ns.nsenter(["ip", "-o", "link"])]
    ) {
      assert.equal(result.code, 0, result.stderr);
      // A fresh namespace holds only lo: proof we are not looking at the host's links.
      assert.deepEqual(result.stdout.trim().split("\n").map((l) => l.split(":")[1].trim()), ["lo"]);
    }
    const failed = await ns.exec(["false"]);
    assert.equal(failed.success, false);
  },
});

Deno.test({
  name: "withNamespaces removes its namespaces when fn throws",
  ...ROOT_ONLY,
  async fn() {
    const prefix = `flk-wn-${Deno.pid}-`;
    await assert.rejects(
      withNamespaces(["flk-wn", "flk-wn"], async ([a, b]) => {
        await linkVeth(a, b, "va", "vb");
        await addAddress(a, "va", "fd00:99::1/64");
        await addAddress(b, "vb", "fd00:99::2/64");
        const ping = await a.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00:99::2"]);
        assert.equal(ping.code, 0, ping.stderr);
        assert.equal((await leftoverNamespaces(prefix)).length, 2);
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.deepEqual(await leftoverNamespaces(prefix), []);
  },
});

Deno.test({
  name: "createNode: eth0 uplink with addresses and default routes; shared uplink",
  ...ROOT_ONLY,
  async fn() {
    await using tor = await TestNamespace.create("flk-tor");
    await using n1 = await createNode({
      prefix: "flk-n1",
      uplink: tor,
      ipv4: { node: "10.0.0.11/24", peer: "10.0.0.1/24" },
      ipv6: { node: "fd00:a::11/64", peer: "fd00:a::1/64" },
      defaultRoute4: true,
      defaultRoute6: true,
    });
    await using n2 = await createNode({
      prefix: "flk-n2",
      uplink: tor,
      ipv6: { node: "fd00:b::12/64", peer: "fd00:b::1/64" },
    });
    assert.equal(n1.uplink, tor);
    assert.notEqual(n1.uplinkIfName, n2.uplinkIfName);

    const addrs = await n1.node.ipJson<IpAddr[]>(["addr", "show", "dev", "eth0"]);
    const locals = addrs[0].addr_info.map((a) => `${a.local}/${a.prefixlen}`);
    assert.ok(locals.includes("10.0.0.11/24"), locals.join());
    assert.ok(locals.includes("fd00:a::11/64"), locals.join());
    const v4 = await n1.node.ipJson<IpRoute[]>(["-4", "route", "show", "default"]);
    assert.equal(v4[0].gateway, "10.0.0.1");
    const v6 = await n1.node.ipJson<IpRoute[]>(["-6", "route", "show", "default"]);
    assert.equal(v6[0].gateway, "fd00:a::1");
    assert.deepEqual(await n2.node.ipJson<IpRoute[]>(["-6", "route", "show", "default"]), []);

    const ping = await n1.node.exec(["ping", "-c", "1", "-W", "2", "10.0.0.1"]);
    assert.equal(ping.code, 0, ping.stderr);

    const torLinks = await tor.ipJson<IpLink[]>(["link", "show"]);
    assert.deepEqual(
      torLinks.map((l) => l.ifname).sort(),
      ["lo", n1.uplinkIfName, n2.uplinkIfName].sort(),
    );
    await n2.remove();
    // Removing a node takes its veth with it, and leaves a shared uplink alone.
    assert.deepEqual(
      (await tor.ipJson<IpLink[]>(["link", "show"])).map((l) => l.ifname).sort(),
      [
        "lo",
        n1.uplinkIfName,
      ].sort(),
    );
  },
});

Deno.test({
  name: "createNode: makes and removes its own uplink namespace",
  ...ROOT_ONLY,
  async fn() {
    const node = await createNode({ prefix: "flk-solo" });
    const names = [node.node.name, node.uplink.name];
    assert.equal((await leftoverNamespaces(`flk-solo-${Deno.pid}-`)).length, 1);
    await node.remove();
    for (const name of names) assert.ok(!liveNamespaces().includes(name));
    assert.deepEqual(await leftoverNamespaces("flk-solo-"), []);
  },
});
