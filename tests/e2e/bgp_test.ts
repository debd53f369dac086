/**
 * BGP end to end: three flock nodes (agent + BIRD each, one of them IPv6-only) under a gobgpd
 * ToR, all in namespaces this test creates. What an operator would check: the ToR's RIB, the
 * nodes' kernels, pods pinging across nodes, anycast paths, and that agent kills, BIRD
 * graceful restarts and rejected configs withdraw nothing.
 */

import assert from "node:assert/strict";
import { ROOT_ONLY } from "../helpers/exec.ts";
import { ping, TestNamespace } from "../helpers/flock.ts";
import { type BgpLabNode, type BgpNodePlan, startBgpNode } from "../helpers/bgp_lab.ts";
import { GobgpTor, type RibPath } from "../helpers/gobgp.ts";

const TOR_AS = 65000;
const ANYCAST6 = "fd00:ffff::/112";
const ANYCAST4 = "10.255.255.0/24";

interface NodePlan extends BgpNodePlan {
  asn: number;
}

function plan(i: number, ipv6Only = false): NodePlan {
  const asn = 65000 + i;
  const ipv4 = ipv6Only ? undefined : `10.0.0.1${i}`;
  const ipv6 = `fd00:a::1${i}`;
  return {
    name: `bgp-node-${i}`,
    asn,
    ipv4,
    ipv6,
    spec: {
      cidr6: `fd00:${i}::/64`,
      ...(ipv6Only ? {} : { cidr4: `10.244.${i}.0/24` }),
      anycastCIDRs: ipv6Only ? [ANYCAST6] : [ANYCAST6, ANYCAST4],
      bgp: {
        asn,
        // The IPv6-only node peers over IPv6; the others run IPv6 over their IPv4 session.
        peers: [{ address: ipv6Only ? "fd00:a::1" : "10.0.0.1", asn: TOR_AS }],
        gracefulRestart: { enabled: true, restartTime: 120 },
      },
    },
  };
}

async function kernelRoutes(ns: TestNamespace, family: "-4" | "-6", proto: string) {
  return (await ns.ipJson<{ dst: string; gateway?: string }[]>([
    family,
    "route",
    "show",
    "proto",
    proto,
  ])).map((r) => r.dst).sort();
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function podAddresses(json: { ips: { address: string }[] }): string[] {
  return json.ips.map((i) => i.address.split("/")[0]);
}

function annotations(anycast: string) {
  return {
    runtimeConfig: {
      "io.kubernetes.cri.pod-annotations": { "flock.fritzlab.net/anycast": anycast },
    },
  };
}

Deno.test({
  name: "bgp e2e: 3 nodes with BIRD under a gobgpd ToR (dual-stack and IPv6-only)",
  ...ROOT_ONLY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using cleanup = new AsyncDisposableStack();
    const plans = [plan(1), plan(2), plan(3, true)];
    const tor = await GobgpTor.start({
      asn: TOR_AS,
      routerId: "10.0.0.1",
      addresses: ["10.0.0.1/24", "fd00:a::1/64"],
      neighbors: plans.map((p) => ({ address: p.ipv4 ?? p.ipv6, asn: p.asn, addPaths: true })),
    });
    cleanup.use(tor);
    const nodes: (BgpLabNode & { plan: NodePlan })[] = [];
    for (const p of plans) nodes.push({ ...await startBgpNode(tor, p, cleanup), plan: p });
    const [n1, n2, n3] = nodes;
    const pods: Record<string, string[]> = {};
    const podNs: Record<string, TestNamespace> = {};

    try {
      await t.step("every node's summaries are in the ToR's RIB", async () => {
        await tor.waitEstablished();
        await tor.waitRib("ipv6", (rib) =>
          ["fd00:1::/64", "fd00:2::/64", "fd00:3::/64"]
            .every((p) => p in rib));
        const rib4 = await tor.waitRib(
          "ipv4",
          (rib) => "10.244.1.0/24" in rib && "10.244.2.0/24" in rib,
        );
        assert.deepEqual(Object.keys(rib4).sort(), ["10.244.1.0/24", "10.244.2.0/24"]);
        // Only summaries: no per-pod host route, no underlay.
        assert.deepEqual(Object.keys(await tor.rib("ipv6")).sort(), [
          "fd00:1::/64",
          "fd00:2::/64",
          "fd00:3::/64",
        ]);
      });

      await t.step("each node's kernel has the others' summaries (proto bird)", async () => {
        for (const n of nodes) {
          const others6 = nodes.filter((o) => o !== n).map((o) => o.plan.spec.cidr6!).sort();
          await waitFor(`${n.plan.name} IPv6 routes`, async () => {
            const got = await kernelRoutes(n.flock.ns, "-6", "bird");
            return JSON.stringify(got) === JSON.stringify(others6) || undefined;
          });
          const want4 = n.plan.ipv4
            ? nodes.filter((o) => o !== n && o.plan.spec.cidr4).map((o) => o.plan.spec.cidr4!)
            : [];
          await waitFor(`${n.plan.name} IPv4 routes`, async () => {
            const got = await kernelRoutes(n.flock.ns, "-4", "bird");
            return JSON.stringify(got) === JSON.stringify(want4.sort()) || undefined;
          });
          // Its own summary is a flock-tagged blackhole.
          const own = (await n.flock.flockRoutes(true)).filter((r) => r.type === "blackhole");
          assert.deepEqual(
            own.map((r) => r.dst).sort(),
            [n.plan.spec.cidr4, n.plan.spec.cidr6].filter((x): x is string => !!x).sort(),
          );
        }
        // The IPv6-only node has no IPv4 address and no IPv4 route at all.
        const addrs4 = await n3.flock.ns.ipJson<unknown[]>(["-4", "addr", "show", "dev", "eth0"]);
        assert.deepEqual(addrs4, []);
      });

      await t.step("pods on different nodes reach each other over IPv6 and IPv4", async () => {
        for (const n of nodes) {
          const ns = await TestNamespace.create("flk-bgpp");
          cleanup.use(ns);
          podNs[n.plan.name] = ns;
          const r = await n.flock.cni("ADD", { containerId: `pod-${n.plan.name}`, netns: ns.path });
          assert.equal(r.code, 0, r.stdout + r.stderr);
          pods[n.plan.name] = podAddresses(r.json);
        }
        const [a6, a4] = pods[n1.plan.name];
        const [b6, b4] = pods[n2.plan.name];
        const [c6] = pods[n3.plan.name];
        assert.ok(await ping(podNs[n1.plan.name], b6), `n1 pod -> n2 pod ${b6}`);
        assert.ok(await ping(podNs[n1.plan.name], b4), `n1 pod -> n2 pod ${b4}`);
        assert.ok(await ping(podNs[n2.plan.name], a4), `n2 pod -> n1 pod ${a4}`);
        assert.ok(await ping(podNs[n3.plan.name], a6), `IPv6-only n3 pod -> n1 pod ${a6}`);
        assert.ok(await ping(podNs[n2.plan.name], c6), `n2 pod -> IPv6-only n3 pod ${c6}`);
      });

      await t.step(
        "an anycast address on two nodes: two paths at the ToR, gone with the pods",
        async () => {
          const address = "fd00:ffff::5";
          const prefix = `${address}/128`;
          const holders: [BgpLabNode, TestNamespace][] = [];
          for (const n of [n1, n2]) {
            const ns = await TestNamespace.create("flk-bgpa");
            cleanup.use(ns);
            const r = await n.flock.cni("ADD", {
              containerId: `any-${n.plan.name}`,
              netns: ns.path,
              extraConfig: annotations(address),
            });
            assert.equal(r.code, 0, r.stdout + r.stderr);
            holders.push([n, ns]);
          }
          const rib = await tor.waitRib("ipv6", (rib) => (rib[prefix]?.length ?? 0) === 2);
          const from = rib[prefix].map((p: RibPath) => p["neighbor-ip"]).sort();
          assert.deepEqual(from, ["10.0.0.11", "10.0.0.12"]);
          // The third node learns it with both next hops (ECMP).
          const ecmp = await waitFor("ECMP anycast on n3", async () => {
            const r = await n3.flock.ns.ipJson<{ dst: string; nexthops?: unknown[] }[]>([
              "-6",
              "route",
              "show",
              prefix,
            ]);
            return r[0]?.nexthops?.length === 2 ? r[0] : undefined;
          });
          assert.equal(ecmp.nexthops?.length, 2);
          assert.ok(await ping(podNs[n3.plan.name], address), "n3 pod -> anycast");
          for (const [n, ns] of holders) {
            const r = await n.flock.cni("DEL", {
              containerId: `any-${n.plan.name}`,
              netns: ns.path,
            });
            assert.equal(r.code, 0, r.stdout);
          }
          await tor.waitRib("ipv6", (rib) => !(prefix in rib));
        },
      );

      await t.step("kill -9 of an agent: its pods keep forwarding, nothing withdrawn", async () => {
        const before = ageOf(await tor.rib("ipv6"), "fd00:1::/64");
        await n1.flock.kill("SIGKILL");
        const [a6, a4] = pods[n1.plan.name];
        assert.ok(await ping(podNs[n2.plan.name], a6), "n2 -> n1 pod v6 with n1's agent dead");
        assert.ok(await ping(podNs[n2.plan.name], a4), "n2 -> n1 pod v4 with n1's agent dead");
        await n1.flock.startAgent();
        assert.ok(await ping(podNs[n2.plan.name], a6), "after the agent's restart");
        const rib = await tor.rib("ipv6");
        assert.equal(ageOf(rib, "fd00:1::/64"), before, "the summary was never re-announced");
      });

      await t.step("BIRD graceful restart: the ToR withdraws nothing", async () => {
        const watched = ["fd00:2::/64"];
        let missing = 0;
        let stale = 0;
        let watching = true;
        const watcher = (async () => {
          while (watching) {
            const rib = await tor.rib("ipv6");
            for (const p of watched) {
              if (!(p in rib)) missing++;
              else if (rib[p].some((x) => x.stale)) stale++;
            }
            await new Promise((r) => setTimeout(r, 50));
          }
        })();
        try {
          await n2.bird.gracefulStop();
          await new Promise((r) => setTimeout(r, 500));
          assert.ok(await ping(podNs[n1.plan.name], pods[n2.plan.name][0]), "ping while BIRD down");
          await n2.bird.launch({ recover: true });
          await tor.waitEstablished();
          await tor.waitRib("ipv6", (rib) => watched.every((p) => p in rib && !rib[p][0].stale));
        } finally {
          watching = false;
          await watcher;
        }
        assert.equal(missing, 0, "fd00:2::/64 vanished from the ToR during the restart");
        assert.ok(stale > 0, "the ToR held the routes as stale while BIRD was down");
        assert.ok(await ping(podNs[n1.plan.name], pods[n2.plan.name][1]), "ping after restart");
      });

      await t.step(
        "a config flock refuses: the old one keeps running, the error is visible",
        async () => {
          const spec = structuredClone(n1.plan.spec);
          // A link-local neighbour without an interface, which BIRD would refuse as a whole
          // config: flock refuses it first (BIRD's own rejections: bird/control_test.ts).
          spec.bgp!.peers!.push({ address: "fe80::99", asn: 65099 });
          await n1.flock.writeConfig(spec);
          const before = await n1.bird.birdc(["show", "protocols"]);
          n1.flock.agent!.kill("SIGHUP");
          await waitFor("the refusal in the agent log", async () => {
            const log = await n1.flock.agentLog();
            return /config reload failed.*fe80::99 is link-local/.test(log);
          });
          const live = await Deno.readTextFile(n1.bird.configPath);
          assert.doesNotMatch(live, /fe80::99/, "bird.conf on disk is still the good one");
          const after = await n1.bird.birdc(["show", "protocols"]);
          assert.equal(
            after.stdout.replace(/\s+/g, " ").match(/peer_10_0_0_1 BGP --- up/)?.[0],
            "peer_10_0_0_1 BGP --- up",
            after.stdout,
          );
          assert.equal(before.code, 0);
          assert.equal((await tor.neighborStates())["10.0.0.11"], "established");
          assert.ok(await ping(podNs[n2.plan.name], pods[n1.plan.name][0]), "still forwarding");
        },
      );
    } catch (err) {
      for (const n of nodes) {
        console.error(`--- ${n.plan.name} agent log\n${(await n.flock.agentLog()).slice(-3000)}`);
        console.error(`--- ${n.plan.name} bird log\n${(await n.bird.log()).slice(-3000)}`);
      }
      console.error(`--- tor log\n${(await tor.log()).slice(-3000)}`);
      throw err;
    }
  },
});

function ageOf(rib: Record<string, RibPath[]>, prefix: string): number | undefined {
  return (rib[prefix]?.[0] as unknown as { age?: number })?.age;
}
