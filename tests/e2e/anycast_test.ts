/**
 * Anycast end to end on one node: pods ask for anycast addresses by annotation through the real
 * exec path; the node keeps one flock route per address over the veths of every holder.
 */

import assert from "node:assert/strict";
import { type CniOutcome, FlockNode, ping, TestNamespace } from "../helpers/flock.ts";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { hostIfaceName } from "../../agent/datapath.ts";
import type { IpRoute } from "../helpers/iproute.ts";

const ANY6 = "fd00:ffff::5";
const ANY4 = "10.255.5.5";
const CONFIG = {
  cidr6: "fd00:5::/64",
  cidr4: "10.5.0.0/24",
  anycastCIDRs: ["fd00:ffff::/64", "10.255.5.0/24"],
};

/** The devices of the flock route to `address` on the node; [] when there is none. */
async function routeDevs(node: FlockNode, address: string): Promise<string[]> {
  const family = address.includes(":") ? "-6" : "-4";
  const routes = (await node.ns.ipJson<IpRoute[]>([family, "route", "show", "proto", "201"]))
    .filter((r) => r.dst === address);
  assert.ok(routes.length <= 1, `one route for ${address}: ${JSON.stringify(routes)}`);
  if (routes.length === 0) return [];
  return (routes[0].nexthops?.map((h) => h.dev) ?? [routes[0].dev!]).sort();
}

/** The anycast routes have exactly the veths of these containers as paths (both families). */
async function assertHolders(node: FlockNode, ids: string[], what: string): Promise<void> {
  const want = ids.map(hostIfaceName).sort();
  for (const a of [ANY6, ANY4]) assert.deepEqual(await routeDevs(node, a), want, `${a}: ${what}`);
}

function annotations(value: string) {
  return {
    runtimeConfig: {
      "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/anycast": value },
    },
  };
}

function ok(r: CniOutcome, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
}

/** Addresses on the pod's eth0 as `addr/len` with the nodad flag. */
async function podAddrs(pod: TestNamespace): Promise<string[]> {
  const links = await pod.ipJson<
    { addr_info: { local: string; prefixlen: number; nodad?: boolean; family: string }[] }[]
  >(["addr", "show", "dev", "eth0"]);
  return links[0].addr_info.map((a) =>
    `${a.local}/${a.prefixlen}${a.family === "inet6" && a.nodad ? " nodad" : ""}`
  );
}

Deno.test({
  name: "anycast e2e: ECMP over holders, ping, CHECK, kill -9 and restart, DEL shrinks the route",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: CONFIG });
    await using a = await TestNamespace.create("flk-any-a");
    await using b = await TestNamespace.create("flk-any-b");
    await using c = await TestNamespace.create("flk-any-c");
    const anyBoth = annotations(`${ANY6}, ${ANY4}`);

    const ra = await node.cni("ADD", { containerId: "any-a", netns: a.path, extraConfig: anyBoth });
    ok(ra, "ADD a");
    const aAddrs = await podAddrs(a);
    assert.ok(aAddrs.includes(`${ANY6}/128 nodad`), aAddrs.join());
    assert.ok(aAddrs.includes(`${ANY4}/32`), aAddrs.join());
    // The CNI result lists the pod's own addresses only: anycast is not the pod's identity.
    assert.equal(ra.json.ips.length, 2);
    await assertHolders(node, ["any-a"], "one holder, a plain route");
    // Traffic the pod starts (even toward another anycast address) leaves from its own address.
    const own: string[] = ra.json.ips.map((i: { address: string }) => i.address.split("/")[0]);
    for (const [family, to] of [["-6", "fd00:ffff::6"], ["-4", "10.255.5.9"]]) {
      const [got] = await a.ipJson<{ prefsrc: string }[]>([family, "route", "get", to]);
      assert.ok(own.includes(got.prefsrc), `source toward ${to}: ${got.prefsrc}`);
    }

    ok(await node.cni("ADD", { containerId: "any-b", netns: b.path, extraConfig: anyBoth }), "b");
    await assertHolders(node, ["any-a", "any-b"], "two holders, ECMP");
    ok(await node.cni("ADD", { containerId: "any-c", netns: c.path }), "ADD c");
    assert.equal(await routeDevs(node, ANY6).then((d) => d.length), 2, "c holds nothing");
    for (const addr of [ANY6, ANY4]) assert.ok(await ping(c, addr), `c pings ${addr}`);

    const check = (id: string, ns: TestNamespace, prev?: unknown) =>
      node.cni("CHECK", {
        containerId: id,
        netns: ns.path,
        extraConfig: { ...anyBoth, prevResult: prev },
      });
    ok(await check("any-a", a, ra.json), "CHECK a");
    // Take a's path out of the IPv4 route: CHECK names it; an ADD retry repairs it.
    await node.ns.ip([
      "route",
      "replace",
      `${ANY4}/32`,
      "dev",
      hostIfaceName("any-b"),
      "proto",
      "201",
    ]);
    const bad = await check("any-a", a, ra.json);
    assert.equal(bad.json?.code, 101, bad.stdout);
    assert.match(bad.stdout, new RegExp(`no path via ${hostIfaceName("any-a")}`));
    await a.ip(["addr", "del", `${ANY6}/128`, "dev", "eth0"]);
    assert.match((await check("any-a", a, ra.json)).stdout, /lacks anycast address fd00:ffff::5/);
    ok(
      await node.cni("ADD", { containerId: "any-a", netns: a.path, extraConfig: anyBoth }),
      "retry",
    );
    ok(await check("any-a", a, ra.json), "CHECK a after the retry");
    await assertHolders(node, ["any-a", "any-b"], "repaired by the ADD retry");

    // kill -9, then damage what a crash between steps could leave: a lost route, a route
    // nobody holds, a path missing. The restart rebuilds from the committed records.
    await node.kill("SIGKILL");
    await node.ns.ip(["-6", "route", "del", `${ANY6}/128`, "proto", "201"]);
    await node.ns.ip([
      "route",
      "replace",
      `${ANY4}/32`,
      "dev",
      hostIfaceName("any-a"),
      "proto",
      "201",
    ]);
    await node.ns.ip([
      "-6",
      "route",
      "add",
      "fd00:ffff::99/128",
      "dev",
      hostIfaceName("any-c"),
      "proto",
      "201",
    ]);
    await node.startAgent();
    await assertHolders(node, ["any-a", "any-b"], "after kill -9 and restart");
    assert.deepEqual(await routeDevs(node, "fd00:ffff::99"), [], "unheld anycast route removed");
    for (const addr of [ANY6, ANY4]) {
      assert.ok(await ping(c, addr), `c pings ${addr} after restart`);
    }
    // A restart with the routes right leaves them alone (no flap toward BIRD).
    await node.restartAgent();
    assert.match(await node.agentLog(), /"anycastChanged":0/);

    ok(await node.cni("DEL", { containerId: "any-a", netns: a.path }), "DEL a");
    await assertHolders(node, ["any-b"], "back to one holder");
    for (const addr of [ANY6, ANY4]) assert.ok(await ping(c, addr), `c pings ${addr} via b`);
    ok(await node.cni("DEL", { containerId: "any-b", netns: b.path }), "DEL b");
    await assertHolders(node, [], "the last holder went");
    ok(await node.cni("DEL", { containerId: "any-b", netns: b.path }), "DEL b again");
    ok(await node.cni("DEL", { containerId: "any-c", netns: c.path }), "DEL c");
    assert.deepEqual((await node.flockRoutes()).filter((r) => !r.dst.startsWith("169.254")), []);
  },
});

Deno.test({
  name: "anycast e2e: an address outside anycastCIDRs is a code-7 error that leaves nothing",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: CONFIG });
    await using pod = await TestNamespace.create("flk-any-x");
    for (const bad of ["fd00:eeee::1", "10.9.9.9", `${ANY6},10.255.6.1`]) {
      const r = await node.cni("ADD", {
        containerId: "any-x",
        netns: pod.path,
        extraConfig: annotations(bad),
      });
      assert.equal(r.json?.code, 7, r.stdout);
      assert.match(r.json.msg, /flock\.fritzlab\.net\/anycast/);
      assert.match(r.json.msg, /not inside the node's IPv[46] anycastCIDRs/);
      assert.deepEqual(await node.flockLinks(), []);
      assert.deepEqual((await node.flockRoutes()).filter((x) => !x.dst.startsWith("169.254")), []);
      assert.deepEqual(await pod.ipJson(["-6", "addr", "show", "scope", "global"]), []);
    }
    // Nothing was allocated: the pod gets the first addresses of the range.
    const r = await node.cni("ADD", { containerId: "any-x", netns: pod.path });
    assert.equal(r.code, 0, r.stdout);
    ok(await node.cni("DEL", { containerId: "any-x", netns: pod.path }), "DEL");
  },
});

Deno.test({
  name: "anycast e2e: parallel ADDs and DELs of one anycast address end with the committed holders",
  ...ROOT_ONLY,
  async fn() {
    await using node = await FlockNode.start({ config: CONFIG });
    const pods: TestNamespace[] = [];
    try {
      for (let i = 0; i < 8; i++) pods.push(await TestNamespace.create("flk-any-p"));
      const any = annotations(`${ANY6},${ANY4}`);
      const adds = await Promise.all(
        pods.map((p, i) =>
          node.cni("ADD", { containerId: `par-${i}`, netns: p.path, extraConfig: any })
        ),
      );
      adds.forEach((r, i) => ok(r, `ADD par-${i}`));
      const ids = pods.map((_, i) => `par-${i}`);
      await assertHolders(node, ids, "8 parallel ADDs");
      const dels = await Promise.all(
        pods.slice(0, 5).map((p, i) => node.cni("DEL", { containerId: `par-${i}`, netns: p.path })),
      );
      dels.forEach((r, i) => ok(r, `DEL par-${i}`));
      await assertHolders(node, ids.slice(5), "5 parallel DELs");
      // GC keeps only par-5 and par-6: par-7's paths go with it.
      const valid = ["par-5", "par-6"].map((id) => ({ containerID: id, ifname: "eth0" }));
      const gc = await node.cni("GC", {
        ifname: "",
        stdin: await node.netconf({ cniVersion: "1.1.0", "cni.dev/valid-attachments": valid }),
      });
      ok(gc, "GC");
      await assertHolders(node, ["par-5", "par-6"], "GC released par-7");
      const rest = await Promise.all(
        pods.slice(5, 7).map((p, i) =>
          node.cni("DEL", { containerId: `par-${i + 5}`, netns: p.path })
        ),
      );
      rest.forEach((r) => ok(r, "DEL"));
      await assertHolders(node, [], "all gone");
    } finally {
      for (const p of pods) await p.remove();
    }
  },
});
